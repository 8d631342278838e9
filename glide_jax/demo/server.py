"""Start the demo: the address checked, a private temporary directory, the models loaded, the page served
while the models compile (it says so), then until interrupted.

Gradio writes every upload and every image it serves under ``GRADIO_TEMP_DIR``;
the server points that at a fresh temporary directory, made before Gradio is
imported and removed when the process exits (normally, by Ctrl-C or by
SIGTERM), so nothing a visitor sends outlives the server or lands elsewhere.
"""

from __future__ import annotations

import atexit
import errno
import importlib.util
import ipaddress
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
import warnings
from typing import Optional

from glide_jax.demo import progress
from glide_jax.demo.app import build_app
from glide_jax.demo.models import load_models
from glide_jax.demo.warmup import Readiness, warm_up
from glide_jax.errors import InputError, InputWarning

DEMO_EXTRA = 'the demo needs the demo extra: pip install -e ".[demo]"'


def require_gradio() -> None:
    """Raise a ``ValueError`` saying how to install Gradio when it is missing."""
    if importlib.util.find_spec("gradio") is None:
        raise InputError(DEMO_EXTRA)


def is_loopback(host: str) -> bool:
    """True when ``host`` is reachable only from this machine (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        try:
            return all(ipaddress.ip_address(info[4][0]).is_loopback
                       for info in socket.getaddrinfo(host, None))
        except (socket.gaierror, ValueError):
            return False


def exposure_warnings(host: str, share: bool) -> list:
    """What to tell the operator before the page becomes reachable from other machines."""
    notes = []
    if not is_loopback(host):
        notes.append(f"the demo listens on {host}, a non-loopback address: anyone who can reach this machine can use "
                     "it and its CPU/accelerator time, with no login; use --host 127.0.0.1 to keep it private")
    if share:
        notes.append("--share opens a public gradio.live link through Gradio's relay: anyone with the link can use "
                     "the demo for the next 72 hours")
    return notes


def private_temp_dir() -> str:
    """A fresh directory for Gradio's uploads and outputs, removed when the process exits."""
    folder = tempfile.mkdtemp(prefix="glide-jax-demo-")
    os.environ["GRADIO_TEMP_DIR"] = folder
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    # SIGTERM ends the process without running atexit unless it becomes an ordinary exit.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    return folder


def refuse_busy_port(host: str, port: int) -> None:
    """Raise an ``InputError`` at once when ``host:port`` cannot be listened on, before anything loads."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as error:
        raise InputError(f"--host {host} is not an address this machine can listen on ({error.strerror})") from None
    with socket.socket(family, kind, proto) as probe:
        # As the web server binds: a connection of an earlier run still closing (TIME_WAIT) does not count.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                raise InputError(f"port {port} on {host} is already in use (another glide-jax serve?); stop that "
                                 "server or choose another port with --port") from None
            raise InputError(f"cannot listen on {host}:{port} ({error.strerror})") from None


def serve(model: str = "embedded", upsampler: Optional[str] = None, clip: Optional[str] = None,
          host: str = "127.0.0.1", port: int = 7860, share: bool = False, log=print) -> None:
    """Load the models, serve the page, warm up (compile) while it says so, then serve until interrupted."""
    if not 0 < port < 65536:
        raise InputError(f"--port must be in [1, 65535], got {port}")
    require_gradio()
    refuse_busy_port(host, port)
    for note in exposure_warnings(host, share):
        warnings.warn(note, InputWarning)
    folder = private_temp_dir()
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

    progress.install()  # before anything compiles: the loops keep the callback they were compiled with
    models = load_models(model, upsampler, clip)
    readiness = Readiness()
    page = build_app(models, readiness)
    page.queue(default_concurrency_limit=1)
    page.launch(server_name=host, server_port=port, share=share, ssr_mode=False, show_error=True,
                max_file_size="20mb", prevent_thread_lock=True)
    log(f"loaded the models in {models.load_seconds:.1f} s; serving http://{host}:{port} and compiling "
        "(one request per tab)...")
    started = time.perf_counter()
    try:
        timings = warm_up(models)
    except BaseException as error:
        readiness.fail(f"{type(error).__name__}: {error}")
        page.close()
        raise
    warm = time.perf_counter() - started
    per_tab = ", ".join(f"{tab} {seconds:.1f} s" for tab, seconds in timings.items())
    readiness.finish(f"Start-up: models loaded in {models.load_seconds:.1f} s, compiled in {warm:.1f} s.")
    log(f"ready: compiled in {warm:.1f} s ({per_tab}); uploads and outputs go to {folder}")
    page.block_thread()
