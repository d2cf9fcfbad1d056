"""GNU Radio blocks of gr-semcom (thin wrappers around the numpy cores)."""
from .ofdm import *  # noqa: F401,F403
from .channels import *  # noqa: F401,F403
from .iq import *  # noqa: F401,F403
from .link import *  # noqa: F401,F403
from .image import *  # noqa: F401,F403
from .image_link import *  # noqa: F401,F403
from .guidance import *  # noqa: F401,F403
from .mllm_sc import *  # noqa: F401,F403
from . import fec_ldpc  # noqa: F401  (registers gr-fec LDPC as the separation baseline's decoder)
from . import ofdm as _ofdm, channels as _channels, iq as _iq, link as _link, image as _image, image_link as _image_link
from . import guidance as _guidance, mllm_sc as _mllm_sc

__all__ = (list(_ofdm.__all__) + list(_channels.__all__) + list(_iq.__all__) + list(_link.__all__)
           + list(_image.__all__) + list(_image_link.__all__) + list(_guidance.__all__) + list(_mllm_sc.__all__))
