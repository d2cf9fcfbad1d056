"""The reference tier of the LAM multi-task link: a BART checkpoint from a local directory (a
tiny random BartConfig here; BART-base in use) as the LAM, through training, ONNX export, the
runtime codec and the GNU Radio link."""
import os

import numpy as np
import pytest


@pytest.fixture(scope="module")
def reference_models(tmp_path_factory):
    import torch
    from transformers import BartConfig, BartForConditionalGeneration

    from gnuradio.semcom.train import export_mtsc, mtsc

    root = tmp_path_factory.mktemp("mtsc_reference")
    torch.manual_seed(0)
    bart = BartForConditionalGeneration(BartConfig(vocab_size=300, d_model=32, encoder_layers=1, decoder_layers=1,
                                                   encoder_attention_heads=2, decoder_attention_heads=2,
                                                   encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=128))
    bart.save_pretrained(root / "bart")
    cache = root / "train_8.npz"
    mtsc.build_cache("train", 8, cache, workers=1)
    cwd = os.getcwd()
    os.chdir(root)  # the trainer's validation items go to ./out/mtsc_data
    try:
        mtsc.main(["pretrain", "--lam", str(root / "bart"), "--out", str(root / "run"), "--steps", "2", "--batch", "2",
                   "--n-train", "8", "--cache", str(cache), "--eval-every", "2"])
        model, ck = export_mtsc.load_checkpoint(root / "run" / "ckpt.pt")
        val = mtsc.load_cache("val", 64)
    finally:
        os.chdir(cwd)
    export_mtsc.export(model, ck, root / "models", "mtsc", {"notes": "tiny reference test"}, val)
    return root, model


def test_the_lam_is_the_bart_checkpoint(reference_models):
    import torch
    from transformers import BartForConditionalGeneration

    from gnuradio.semcom.runtime.manifest import load_manifest

    root, model = reference_models
    cfg = model.cfg
    assert (cfg.d_model, cfg.encoder_layers, cfg.lam_path) == (32, 1, str(root / "bart"))
    assert isinstance(model.lam, BartForConditionalGeneration) and model.lam.config.vocab_size == cfg.vocab_size
    src = BartForConditionalGeneration.from_pretrained(root / "bart")
    a = src.model.encoder.layers[0].fc1.weight
    b = model.lam.model.encoder.layers[0].fc1.weight
    assert a.shape == b.shape and float((a - b).abs().max()) < 0.05  # started there, two steps of training
    assert not torch.equal(a, b)
    x = load_manifest(root / "models").entry("mtsc_enc").extra
    assert x["config"]["lam_path"] == str(root / "bart") and x["config"]["lam_config"]["d_model"] == 32


def test_reference_export_runs_through_gnu_radio(reference_models):
    from gnuradio.semcom.blocks.mtsc_link import MtscLinkConfig, run_mtsc_link
    from gnuradio.semcom.codecs.mtsc import TASKS

    root, _ = reference_models
    cfg = MtscLinkConfig(items="multitask:test:2", snr_db=20.0, channel="awgn", models=str(root / "models"))
    rows = run_mtsc_link(cfg, timeout_s=300)["rows"]
    assert all(r[f"{t}_status"] == "ok" for r in rows for t in TASKS), rows
    assert all(isinstance(r["reconstruction"], np.ndarray) for r in rows)
