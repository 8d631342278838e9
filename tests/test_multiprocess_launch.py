"""``experiments.launch``: the environment of each process, prefixed output, worst status, stopping on failure,
passing SIGTERM on. The processes here are small Python one-liners, not training runs."""

import io
import signal
import subprocess
import sys
import time

from experiments import launch

SHOW_ENV = ("import os; print(os.environ['GLIDE_JAX_PROCESS_ID'], os.environ['GLIDE_JAX_NUM_PROCESSES'], "
            "os.environ['GLIDE_JAX_COORDINATOR'], os.environ['JAX_NUM_CPU_DEVICES'], "
            "os.environ['JAX_CPU_COLLECTIVES_IMPLEMENTATION'])")


def test_each_process_gets_its_environment_and_a_prefix():
    out = io.StringIO()
    assert launch.launch([sys.executable, "-c", SHOW_ENV], 3, devices_per_process=2, port=12345, out=out) == 0
    lines = sorted(line for line in out.getvalue().splitlines() if line.startswith("[p"))
    assert lines == [f"[p{i}] {i} 3 127.0.0.1:12345 2 gloo" for i in range(3)]


def test_worst_status_and_the_others_stopped_after_a_failure():
    # process 1 fails at once; process 0 would sleep for a minute but is killed after the grace period
    body = "import os, sys, time; i = int(os.environ['GLIDE_JAX_PROCESS_ID']); time.sleep(60 if i == 0 else 0); sys.exit(5)"
    t0 = time.monotonic()
    assert launch.launch([sys.executable, "-c", body], 2, grace=0.5, out=io.StringIO()) == 5  # errors before signals
    assert time.monotonic() - t0 < 30


def test_sigterm_reaches_every_process():
    body = ("import signal, sys, time; signal.signal(signal.SIGTERM, lambda *a: sys.exit(0)); "
            "print('ready', flush=True); time.sleep(60); sys.exit(3)")
    proc = subprocess.Popen([sys.executable, "-m", "experiments.launch", "--processes", "2", "--",
                             sys.executable, "-c", body], stdout=subprocess.PIPE, text=True)
    ready = 0
    while ready < 2:
        ready += proc.stdout.readline().endswith("ready\n")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0  # both children exited 0 on the forwarded signal


def test_usage_errors():
    assert launch.main(["--processes", "2"]) == 2  # no command after --
    assert launch.exit_status(-9) == 137 and launch.exit_status(2) == 2
