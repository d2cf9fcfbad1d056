"""pytest configuration: test the source tree, or the installed module.

By default the tests import ``gnuradio.semcom`` from this checkout's ``python/semcom`` (no
install needed). Set ``SEMCOM_TEST_INSTALLED=1`` to test the installed copy instead
(``make test`` does, after installing into the venv).
"""
import os
import pathlib
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SRC = ROOT / "python"

if os.environ.get("SEMCOM_TEST_INSTALLED") != "1":
    import gnuradio

    # gnuradio is a namespace-style package (pkgutil.extend_path): put python/ first so
    # that gnuradio.semcom resolves to python/semcom.
    gnuradio.__path__.insert(0, str(SRC))
    sys.modules.pop("gnuradio.semcom", None)


@pytest.fixture(scope="session")
def repo_root():
    return ROOT


@pytest.fixture
def rng():
    import numpy as np

    return np.random.default_rng(12345)


@pytest.fixture(scope="session")
def mtsc_models(tmp_path_factory):
    """Models directory of the multi-task tests ("" = the shipped models; see mtsc_backend.py)."""
    sys.path.insert(0, str(ROOT / "tests"))
    import mtsc_backend

    return mtsc_backend.models(tmp_path_factory)


@pytest.fixture(scope="session")
def mtsc_tiny(tmp_path_factory):
    """A tiny random export of both multi-task systems (always built: the export's own test)."""
    sys.path.insert(0, str(ROOT / "tests"))
    import mtsc_backend

    return mtsc_backend.build_tiny(tmp_path_factory.mktemp("mtsc_tiny_export"))
