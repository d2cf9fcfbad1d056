"""GNU Radio blocks of gr-semcom (thin wrappers around the numpy cores)."""
from .ofdm import *  # noqa: F401,F403
from .channels import *  # noqa: F401,F403
from .iq import *  # noqa: F401,F403
from .link import *  # noqa: F401,F403
from .image import *  # noqa: F401,F403
from .image_link import *  # noqa: F401,F403
from .guidance import *  # noqa: F401,F403
from .mllm_sc import *  # noqa: F401,F403
from .vlf import *  # noqa: F401,F403
from .vlf_link import *  # noqa: F401,F403
from .mtsc import *  # noqa: F401,F403
from .mtsc_link import *  # noqa: F401,F403
from . import fec_ldpc  # noqa: F401  (registers gr-fec LDPC as the separation baseline's decoder)
from . import ofdm as _ofdm, channels as _channels, iq as _iq, link as _link, image as _image, image_link as _image_link
from . import guidance as _guidance, mllm_sc as _mllm_sc, vlf as _vlf, vlf_link as _vlf_link, mtsc as _mtsc
from . import mtsc_link as _mtsc_link

__all__ = (list(_ofdm.__all__) + list(_channels.__all__) + list(_iq.__all__) + list(_link.__all__)
           + list(_image.__all__) + list(_image_link.__all__) + list(_guidance.__all__) + list(_mllm_sc.__all__) + list(_vlf.__all__) + list(_vlf_link.__all__)
           + list(_mtsc.__all__) + list(_mtsc_link.__all__))

# QT GUI blocks: imported on first use, so that non-GUI users never load PyQt5 (nor need a display)
_QT_NAMES = ("qt_image_view", "qt_rx_readout", "rgb_qimage")


def __getattr__(name):
    if name in _QT_NAMES or name == "qt_views":
        import importlib

        mod = importlib.import_module(__name__ + ".qt_views")
        return mod if name == "qt_views" else getattr(mod, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_QT_NAMES))
