"""GNU Radio's own log lines (``pdu_to_tagged_stream :info: set_min_output_buffer …``,
``log :info: …``) in the apps: quiet by default, so progress bars and result lines stay readable.

Every app calls ``gr_log_option(parser)`` once: GNU Radio's default log level is set to
``$SEMCOM_GR_LOG`` (default "warn") right away, and ``--gr-log LEVEL`` (trace, debug, info,
warn, error, critical, off) sets another when the options are parsed. The level is also put
in ``$SEMCOM_GR_LOG``, so the processes an app starts (``run_all.py``) log alike.
"""
from __future__ import annotations

import argparse
import os

from gnuradio import gr

__all__ = ["ENV", "LEVELS", "quiet_gr_log", "gr_log_option"]

ENV = "SEMCOM_GR_LOG"
LEVELS = ("trace", "debug", "info", "warn", "error", "critical", "off")
_ALIASES = {"warning": "warn", "err": "error"}


def _level(name: str) -> str:
    level = _ALIASES.get(str(name).strip().lower(), str(name).strip().lower())
    if level not in LEVELS:
        raise ValueError(f"GNU Radio log level must be one of {', '.join(LEVELS)}, got {name!r}")
    return level


def quiet_gr_log(level: str | None = None) -> str:
    """Set GNU Radio's default log level (every logger, also those already made) to ``level``,
    or ``$SEMCOM_GR_LOG``, or "warn"; returns the level set. An unknown ``$SEMCOM_GR_LOG``
    falls back to "warn"; an unknown ``level`` is a ValueError."""
    if level is None:
        try:
            level = _level(os.environ.get(ENV) or "warn")
        except ValueError:
            level = "warn"
    else:
        level = _level(level)
    gr.logging().set_default_level(getattr(gr.log_levels, level))
    os.environ[ENV] = level
    return level


class _GrLogAction(argparse.Action):
    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, quiet_gr_log(values))


def gr_log_option(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Quiet GNU Radio's log now (``quiet_gr_log()``) and add ``--gr-log LEVEL`` to ``parser``."""
    default = quiet_gr_log()
    parser.add_argument("--gr-log", default=default, choices=LEVELS, action=_GrLogAction, metavar="LEVEL",
                        help=f"GNU Radio's own log level: {', '.join(LEVELS)} (default: ${ENV} or warn; "
                             f"info shows GNU Radio's buffer and scheduler messages)")
    return parser
