"""Shared helpers of the ZMQ loopback link scripts (tx.py, channel.py, rx.py, run_all.py).

Only loopback addresses are used: every socket is tcp://127.0.0.1:PORT. The TX and the
channel *bind* their PUSH sockets; the channel and the RX *connect* their PULL sockets, so
the three processes can be started in any order (ZMQ PUSH blocks while no peer is connected:
nothing is lost, the flowgraph just waits).
"""
from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time

HOST = "127.0.0.1"
DEFAULT_TX_PORT = 5601       # tx.py PUSH (bind)  -> channel.py PULL (connect)
DEFAULT_RX_PORT = 5602       # channel.py PUSH (bind) -> rx.py PULL (connect)


def address(port: int) -> str:
    return f"tcp://{HOST}:{int(port)}"


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def add_common_args(p, ports=("tx",)):
    p.add_argument("--profile", default="wifi64", choices=["wifi64", "wide256", "wide512"],
                   help="OFDM profile (TX and RX must match)")
    p.add_argument("--header-modulation", default="bpsk", choices=["bpsk", "qpsk"])
    if "tx" in ports:
        p.add_argument("--tx-port", type=int, default=DEFAULT_TX_PORT,
                       help="port of the TX -> channel hop on 127.0.0.1 (default %(default)s)")
    if "rx" in ports:
        p.add_argument("--rx-port", type=int, default=DEFAULT_RX_PORT,
                       help="port of the channel -> RX hop on 127.0.0.1 (default %(default)s)")
    p.add_argument("--timeout", type=float, default=60.0,
                   help="stop after this many seconds in any case (default %(default)s)")


class StopFlag:
    """Set by SIGINT/SIGTERM so that the polling loops stop the flowgraph cleanly."""

    def __init__(self):
        self.event = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: self.event.set())

    def wait(self, seconds: float) -> bool:
        return self.event.wait(seconds)

    def is_set(self) -> bool:
        return self.event.is_set()


def run_until(tb, done, timeout: float, stop: StopFlag, poll: float = 0.05) -> bool:
    """Start ``tb``, poll ``done()`` until true, ``timeout`` or a signal; then stop it.

    Message-driven flowgraphs never finish on their own, hence the polling. Returns done().
    """
    tb.start()
    t_end = time.monotonic() + float(timeout)
    try:
        while not done() and time.monotonic() < t_end and not stop.is_set():
            stop.wait(poll)
    finally:
        tb.stop()
        tb.wait()
    return bool(done())


def supervise(cmds, timeout: float, label: str, first: str = "first process") -> int:
    """Start ``cmds`` in order, wait up to ``timeout`` s for the first one (the one whose exit
    status decides), then stop the others with SIGINT (their StopFlag: clean stop and summary),
    kill what is still running 10 s later. A SIGTERM to this process runs the same clean-up.
    Returns the first process's exit status (2 if it did not exit in time)."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    procs, rc = [], 2
    try:
        for cmd in cmds:
            procs.append(subprocess.Popen(cmd))
        try:
            rc = procs[0].wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            print(f"[{label}] the {first} did not exit in time", flush=True)
    finally:
        for pr in procs:
            if pr.poll() is None:
                pr.send_signal(signal.SIGINT)
        for pr in reversed(procs):
            try:
                pr.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pr.kill()
                pr.wait()
    print(f"[{label}] {'OK' if rc == 0 else 'FAILED'} ({first} exit status {rc})", flush=True)
    return rc
