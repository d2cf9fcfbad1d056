"""gr-semcom: GNU Radio blocks for over-the-air semantic communication links.

``from gnuradio import semcom`` gives the GNU Radio blocks (``semcom.ofdm_tx``,
``semcom.ofdm_rx``, channel blocks, …). The cores (``semcom.phy``, ``semcom.channels``)
never import GNU Radio and can be used from plain numpy code; the blocks are loaded
lazily on first attribute access so that importing a core stays GNU-Radio-free.
"""
import importlib

__version__ = "0.1.0"

_SUBPACKAGES = ("blocks", "channels", "phy", "metrics", "iq", "codecs", "runtime", "images", "report", "guidance", "datasets")


def __getattr__(name):
    if name.startswith("_"):
        raise AttributeError(name)
    if name in _SUBPACKAGES:  # cores stay importable without GNU Radio's runtime
        return importlib.import_module(f"{__name__}.{name}")
    blocks = importlib.import_module(__name__ + ".blocks")
    try:
        return getattr(blocks, name)
    except AttributeError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None


def __dir__():
    blocks = importlib.import_module(__name__ + ".blocks")
    return sorted(set(globals()) | set(getattr(blocks, "__all__", ())))
