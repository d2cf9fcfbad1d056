"""OFDM PHY core: frame format, header code, frame-level receiver, numpy reference modem.

Never imports GNU Radio; the blocks in ``semcom.blocks`` wrap these functions.
"""
from .params import OfdmParams, profile, PROFILES, as_carriers  # noqa: F401
from .header import Header  # noqa: F401
from .modem import (  # noqa: F401
    ReferenceModem, build_frame, preamble, detect_preamble, rx_header_block, rx_payload_block,
    frame_len_symbols, estimate_cfo, symbols_fft, frame_grid, grid_to_time, decode_header, demod_payload,
    n_header_symbols, n_side_symbols, n_payload_symbols, HeaderRx, PayloadRx, TxFrame, FrameReceiver,
)
