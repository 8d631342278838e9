"""Run one command as several JAX processes on this machine, as a pod slice or a cluster would.

    python -m experiments.launch --processes 2 --devices-per-process 2 -- \\
        python -m experiments.train --config experiments/configs/base.py:micro --workdir runs/micro2

Each process gets the environment ``glide_jax.train.sharding.maybe_initialize_distributed``
reads (``GLIDE_JAX_COORDINATOR=127.0.0.1:<port>``, ``GLIDE_JAX_NUM_PROCESSES``,
``GLIDE_JAX_PROCESS_ID``), ``JAX_NUM_CPU_DEVICES`` (CPU devices per process) and
``JAX_CPU_COLLECTIVES_IMPLEMENTATION=gloo`` (cross-process collectives on CPU)
unless already set. Their output is streamed line by line, prefixed with
``[p<i>]``. SIGTERM and SIGINT are passed on to every process (a training run
then saves a checkpoint and exits 0). When a process fails, the others cannot
go on (every step is collective), and what they print next (a peer's
"Connection reset by peer") hides the cause; so the launcher says at once, and
again as its last line, which process failed first (index, pid, exit status or
signal), sends the others SIGTERM and, after ``--grace`` seconds, SIGKILL.
The launcher exits with 0 if all succeeded, else
with the status of the process that failed first (a process killed by signal
``N`` counts as ``128 + N``, as a shell reports it).

This is a local stand-in for what a scheduler does; on real hosts start one
process per host yourself (docs/multihost.md).
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import List, Optional, Sequence

PREFIX = "[p{index}] "


def free_port() -> int:
    """A TCP port on the loopback interface that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def process_env(base: dict, index: int, processes: int, port: int, devices_per_process: int) -> dict:
    """The environment of process ``index``."""
    env = dict(base)
    env.update(GLIDE_JAX_COORDINATOR=f"127.0.0.1:{port}", GLIDE_JAX_NUM_PROCESSES=str(processes),
               GLIDE_JAX_PROCESS_ID=str(index), JAX_NUM_CPU_DEVICES=str(devices_per_process))
    env.setdefault("JAX_CPU_COLLECTIVES_IMPLEMENTATION", "gloo")
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def exit_status(returncode: int) -> int:
    """A ``Popen.returncode`` as a shell status (signal ``N`` -> ``128 + N``)."""
    return 128 - returncode if returncode < 0 else returncode


def describe_exit(returncode: int) -> str:
    """A ``Popen.returncode`` in words: ``exit status 3`` or ``killed by signal 9 (SIGKILL)``."""
    if returncode >= 0:
        return f"exit status {returncode}"
    try:
        name = f" ({signal.Signals(-returncode).name})"
    except ValueError:
        name = ""
    return f"killed by signal {-returncode}{name}"


def _stream(proc: subprocess.Popen, index: int, out, lock: threading.Lock) -> None:
    prefix = PREFIX.format(index=index)
    for line in iter(proc.stdout.readline, b""):
        text = line.decode("utf-8", errors="replace")
        with lock:
            out.write(prefix + text if text.endswith("\n") else prefix + text + "\n")
            out.flush()
    proc.stdout.close()


def launch(command: Sequence[str], processes: int, devices_per_process: int = 1, port: Optional[int] = None,
           grace: float = 10.0, out=None) -> int:
    """Start ``processes`` copies of ``command``, stream their output; return 0, or the status of the first to fail."""
    out = sys.stdout if out is None else out
    port = port or free_port()
    lock = threading.Lock()
    procs: List[subprocess.Popen] = []
    for index in range(processes):
        env = process_env(os.environ, index, processes, port, devices_per_process)
        procs.append(subprocess.Popen(list(command), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      start_new_session=True))  # signals reach them through forward() only
    with lock:
        out.write(f"[launch] {processes} processes, coordinator 127.0.0.1:{port}, pids "
                  f"{' '.join(str(p.pid) for p in procs)}\n")
        out.flush()
    readers = [threading.Thread(target=_stream, args=(p, i, out, lock), daemon=True) for i, p in enumerate(procs)]
    for reader in readers:
        reader.start()

    def forward(signum, frame):
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signum)

    def say(text: str) -> None:
        with lock:
            out.write(f"[launch] {text}\n")
            out.flush()

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    first = None  # index of the process that failed first
    try:
        failed_at = None
        while [p.poll() for p in procs].count(None):  # poll every process: a status is only seen through poll
            failed = [i for i, p in enumerate(procs) if p.returncode not in (None, 0)]
            if failed_at is None and failed:
                failed_at = time.monotonic()
                first = failed[0]
                say(f"{_failure(procs, first)}; stopping the others (SIGTERM, then SIGKILL after {grace:g}s)")
                for proc in procs:
                    if proc.poll() is None:
                        proc.terminate()
            if failed_at is not None and time.monotonic() - failed_at > grace:
                for proc in procs:
                    if proc.poll() is None:
                        proc.kill()
            time.sleep(0.1)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    for reader in readers:
        reader.join()
    if first is None:  # all ended within one poll: the first failure in index order
        first = next((i for i, p in enumerate(procs) if p.returncode != 0), None)
    if first is None:
        return 0
    others = ", ".join(f"p{i} {describe_exit(p.returncode)}" for i, p in enumerate(procs) if i != first)
    say(_failure(procs, first) + (f" (then: {others})" if others else ""))
    return exit_status(procs[first].returncode)


def _failure(procs: Sequence[subprocess.Popen], index: int) -> str:
    return f"p{index} (pid {procs[index].pid}) failed first: {describe_exit(procs[index].returncode)}"


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--" not in argv:
        print("error: give the command after --, e.g. python -m experiments.launch --processes 2 -- "
              "python -m experiments.train --config experiments/configs/base.py:micro --workdir runs/m",
              file=sys.stderr)
        return 2
    split = argv.index("--")
    parser = argparse.ArgumentParser(prog="python -m experiments.launch",
                                     description="Run a command as several local JAX processes (CPU, gloo).")
    parser.add_argument("--processes", type=int, required=True, help="number of processes")
    parser.add_argument("--devices-per-process", type=int, default=1, help="CPU devices of each process")
    parser.add_argument("--port", type=int, default=0, help="coordinator port on 127.0.0.1 (default: a free one)")
    parser.add_argument("--grace", type=float, default=10.0,
                        help="seconds the others get to end after one process failed, before SIGKILL")
    args = parser.parse_args(argv[:split])
    command = argv[split + 1:]
    if not command:
        parser.error("no command after --")
    if args.processes < 1 or args.devices_per_process < 1:
        parser.error("--processes and --devices-per-process must be at least 1")
    if not 0 <= args.port < 65536:
        parser.error(f"--port must be in [0, 65535], got {args.port}")
    return launch(command, args.processes, args.devices_per_process, args.port or None, args.grace)


if __name__ == "__main__":
    sys.exit(main())
