"""Torch training and ONNX export for the embedded models (the only place torch is imported).

``python -m semcom.train.jscc`` trains the SNR-adaptive deep JSCC image codec,
``python -m semcom.train.export_jscc`` exports it to ONNX and registers it in ``models/``.
The shipped runtime (``semcom.codecs``, ``semcom.runtime``) never needs this package.
"""
