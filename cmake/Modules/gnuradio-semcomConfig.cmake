# Copyright gr-semcom authors
# SPDX-License-Identifier: GPL-3.0-or-later
#
# find_package(gnuradio-semcom) for modules that build on gr-semcom. gr-semcom is
# Python-only (no C++ library): this locates the installed Python package and the GRC block
# definitions and sets gnuradio-semcom_FOUND, GR_SEMCOM_PYTHON_DIR and GR_SEMCOM_GRC_DIR.

get_filename_component(_semcom_prefix "${CMAKE_CURRENT_LIST_DIR}/../../.." ABSOLUTE)

find_path(
    GR_SEMCOM_PYTHON_DIR
    NAMES gnuradio/semcom/__init__.py
    HINTS $ENV{SEMCOM_DIR}
    PATHS ${_semcom_prefix}/lib/python3/dist-packages
          ${_semcom_prefix}/lib/python3/site-packages
          ${CMAKE_INSTALL_PREFIX}/lib/python3/dist-packages
    PATH_SUFFIXES ""
)
file(GLOB _semcom_py_dirs "${_semcom_prefix}/lib/python3*/site-packages"
                          "${_semcom_prefix}/lib/python3*/dist-packages")
if(NOT GR_SEMCOM_PYTHON_DIR)
  find_path(GR_SEMCOM_PYTHON_DIR NAMES gnuradio/semcom/__init__.py PATHS ${_semcom_py_dirs})
endif()

find_path(
    GR_SEMCOM_GRC_DIR
    NAMES semcom_ofdm_tx.block.yml
    PATHS ${_semcom_prefix}/share/gnuradio/grc/blocks
          ${CMAKE_INSTALL_PREFIX}/share/gnuradio/grc/blocks
)

include(FindPackageHandleStandardArgs)
find_package_handle_standard_args(gnuradio-semcom DEFAULT_MSG GR_SEMCOM_PYTHON_DIR GR_SEMCOM_GRC_DIR)
mark_as_advanced(GR_SEMCOM_PYTHON_DIR GR_SEMCOM_GRC_DIR)
