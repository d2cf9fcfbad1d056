# gr-semcom: the two commands a new user types.
#   make demo   -> set everything up (once) and run the main job (apps/image_link.py)
#   make test   -> set everything up (once) and run the test suite
# Everything is idempotent; the second run skips what is already done.

VENV    ?= .venv
PY      := $(VENV)/bin/python
PREFIX  := $(abspath $(VENV))
BUILD   ?= build
SUDO    := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
export GRC_BLOCKS_PATH := $(PREFIX)/share/gnuradio/grc/blocks
export SEMCOM_PREFIX := $(PREFIX)
# GNU Radio Companion's Gtk 3 introspection, which `--no-install-recommends` leaves out
GRC_APT := gir1.2-gtk-3.0 python3-gi-cairo
BASE_APT := gnuradio gnuradio-dev cmake g++ make python3-venv python3-pip pkg-config espeak-ng

# apt-get install the packages of $(1) unless all are installed
define apt_install
	@if ! dpkg -s $(1) >/dev/null 2>&1; then \
	  $(SUDO) apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends $(1); \
	fi
endef

.PHONY: demo test setup install apt venv clean bench grc grc-deps

demo: install
	$(PY) apps/image_link.py

test: install $(VENV)/.test-apt-stamp
	SEMCOM_TEST_INSTALLED=1 $(PY) -m pytest -q tests

# The tests also load the flowgraphs in GRC's canvas (Gtk 3) on a virtual X display.
TEST_APT := xvfb xauth $(GRC_APT)
$(VENV)/.test-apt-stamp: $(VENV)/.apt-stamp
	$(call apt_install,$(TEST_APT))
	@touch $@

bench: install
	$(PY) apps/bench_phy.py
	$(PY) apps/bench_rx.py
	$(PY) apps/bench_codec.py
	$(PY) apps/bench_link.py
	$(PY) apps/bench_guidance.py
	$(PY) apps/bench_soak.py
	$(PY) apps/bench_vlf.py --reps 3
	$(PY) apps/bench_mtsc.py --reps 3

setup: install

# GNU Radio Companion with this module: the venv's interpreter runs GRC, so Run (F6) executes
# flowgraphs with it too (GRC runs them with its own interpreter) and they import gnuradio.semcom.
# `make grc FLOWGRAPH=apps/loopback_qt.grc` opens a flowgraph directly.
FLOWGRAPH ?=
grc: install grc-deps
	$(PY) $$(command -v gnuradio-companion) $(FLOWGRAPH)

# Gtk 3 introspection: GRC needs it and `--no-install-recommends` leaves it out.
grc-deps:
	$(call apt_install,$(GRC_APT))

# 1. Debian packages (GNU Radio is only packaged by Debian for /usr/bin/python3).
$(VENV)/.apt-stamp:
	$(call apt_install,$(BASE_APT))
	@mkdir -p $(VENV) && touch $@

# 2. venv that sees Debian's gnuradio; torch pinned first (CPU wheel), numpy<2 always.
$(VENV)/.pip-stamp: $(VENV)/.apt-stamp requirements.txt constraints.txt
	[ -x $(PY) ] || /usr/bin/python3 -m venv --system-site-packages $(VENV)
	$(PY) -m pip install -q -c constraints.txt torch==2.13.0
	$(PY) -m pip install -q -c constraints.txt -r requirements.txt
	$(PY) -c "from gnuradio import gr, digital; import numpy; assert numpy.__version__ < '2'"
	touch $@

# 3. CMake build + install of the module into the venv prefix.
install: $(VENV)/.pip-stamp
	cmake -S . -B $(BUILD) -DCMAKE_INSTALL_PREFIX=$(PREFIX) -DPYTHON_EXECUTABLE=$(abspath $(PY)) >/dev/null
	cmake --build $(BUILD) >/dev/null
	cmake --install $(BUILD) >/dev/null

clean:
	rm -rf $(BUILD)
