"""Training as several JAX processes over loopback (jax.distributed + gloo), on the micro base config.

Two processes with two CPU devices each (``python -m experiments.launch``) form
the same 4-device mesh as one process with four devices. The runs agree:

* losses to a relative ``LOSS_RTOL`` and parameters to ``PARAM_ATOL``. They are
  not bit-identical because gradients are summed across processes by gloo's
  all-reduce and within a process by XLA, in another order (float32 rounding);
  Adam turns a rounding-level gradient of a parameter that barely matters (a
  bias right before a one-channel group norm) into a step of up to ``lr``, so
  parameters get an absolute, not a relative, tolerance. Before the hosts read
  rows of one global stream, 2 processes differed from 1 by 1.6e-3 in the loss;
* each process reads its own half of every global batch (example ids, logged
  with ``--log-example-ids``), and the halves are the single process's batch;
* process 0 alone prints, logs metrics, writes TensorBoard and sample grids;
  every process writes its part of each checkpoint;
* ``kill -9`` of one process, then rerunning the command, and SIGTERM to a
  2-process or a 1-process run (a checkpoint at the step both processes agree
  on, exit 0), then rerunning, end bit for bit where the uninterrupted run of
  the same process count ends;
* a mesh with fsdp over both processes (parameters split across them) trains,
  is preempted, restores and ends close to the data-parallel run.

Only the first comparison (4 steps, no preview) is in the default run.
The processes share a persistent compilation cache and compile with
``--xla_backend_optimization_level=0``, as in ``test_train_entrypoints``.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

REPO = Path(__file__).resolve().parents[1]
CONFIG = f"{REPO}/experiments/configs/base.py:micro"
LOSS_RTOL = 1e-5  # measured up to 1.7e-7 over 12 steps
PARAM_ATOL = 1e-3  # = lr; measured up to 1.1e-4 over 12 steps
# The default-run comparison: 4 steps, no preview grid, and the micro U-Net cut to one level without
# attention (a third of the compilation time; the slow tests run the micro config as it is).
SHORT = ("train.steps=4", "train.sample_every=-1", "model.unet.channel_mult=[1]", "model.unet.attention_resolutions=[]")
EXAMPLES = re.compile(r"^(?:\[p(\d)\] )?DEBUG glide_jax\.train\.examples: step (\d+) process (\d+) example_id ([\d ]+)$")


def _train_command(workdir, overrides):
    cmd = [sys.executable, "-m", "experiments.train_base", "--config", CONFIG, "--workdir", str(workdir),
           "--log-example-ids"]
    return cmd + (["--set", *overrides] if overrides else [])


class Job:
    """A training command (one process, or two through the launcher) with its output in ``<workdir>.log``."""

    def __init__(self, env, workdir, *overrides, processes=1):
        self.workdir = Path(workdir)
        self.log = self.workdir.with_suffix(".log")
        self._out = open(self.log, "a")
        cmd = _train_command(workdir, overrides)
        env = dict(env)
        if processes > 1:
            cmd = [sys.executable, "-m", "experiments.launch", "--processes", str(processes),
                   "--devices-per-process", "2", "--grace", "3", "--"] + cmd
        else:
            env["JAX_NUM_CPU_DEVICES"] = "4"
        self.proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=self._out, stderr=subprocess.STDOUT)

    def wait(self, expect_ok=True, timeout=900):
        rc = self.proc.wait(timeout=timeout)
        self._out.close()
        if expect_ok:
            assert rc == 0, self.output()[-5000:]
        return rc

    def output(self):
        return self.log.read_text()

    def wait_for_checkpoint(self, step, timeout=600):
        deadline = time.time() + timeout
        while not (self.workdir / "checkpoints" / str(step)).exists():
            assert self.proc.poll() is None, self.output()[-5000:]
            assert time.time() < deadline
            time.sleep(0.01)

    def worker_pids(self):
        line = next(l for l in self.output().splitlines() if l.startswith("[launch]"))
        return [int(p) for p in line.split("pids ")[1].split()]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    e = {k: v for k, v in os.environ.items() if not k.startswith(("GLIDE_JAX_", "JAX_NUM_CPU"))}
    e.update(
        JAX_COMPILATION_CACHE_DIR=str(tmp_path_factory.mktemp("jax_cache")),
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
        JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0",
        XLA_FLAGS="--xla_backend_optimization_level=0",
        JAX_PLATFORMS="cpu",
        PYTHONUNBUFFERED="1",
    )
    return e


# ----------------------------------------------------------------------------- reading runs


def _checkpoint(workdir, step):
    """``{"train": ..., "ema_params": ...}`` of a checkpoint, on this process's first device whatever mesh wrote it."""
    one = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    out = {}
    with ocp.StandardCheckpointer() as checkpointer:
        for item in ("train", "ema_params"):
            path = Path(workdir) / "checkpoints" / str(step) / item
            meta = checkpointer.metadata(path).item_metadata
            target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=one), meta)
            out[item] = checkpointer.restore(path, target)
    return out


def _steps(workdir):
    return sorted(int(p.name) for p in (Path(workdir) / "checkpoints").iterdir() if p.name.isdigit())


def _metrics(workdir):
    return [json.loads(line) for line in (Path(workdir) / "metrics.jsonl").read_text().splitlines()]


def _max_param_difference(a, b):
    leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(leaves_a) == len(leaves_b) > 0
    worst = 0.0
    for x, y in zip(leaves_a, leaves_b):
        x, y = np.asarray(x), np.asarray(y)
        assert x.shape == y.shape and x.dtype == y.dtype
        if x.dtype.kind == "f":
            worst = max(worst, float(np.max(np.abs(x.astype(np.float64) - y.astype(np.float64)), initial=0.0)))
        else:
            np.testing.assert_array_equal(x, y)  # step, PRNG key, skipped count
    return worst


def _assert_bit_identical(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _assert_runs_agree(one, two, step):
    """One process vs two: losses and final state within the float32 reduction-order tolerances."""
    m1, m2 = _metrics(one), _metrics(two)
    assert [m["step"] for m in m1] == [m["step"] for m in m2] and m1
    loss_rel = max(abs(a["loss"] - b["loss"]) / abs(a["loss"]) for a, b in zip(m1, m2))
    assert loss_rel <= LOSS_RTOL, loss_rel
    param_abs = _max_param_difference(_checkpoint(one, step), _checkpoint(two, step))
    assert param_abs <= PARAM_ATOL, param_abs
    print(f"1 vs 2 processes after {step} steps: loss max rel diff {loss_rel:.3g}, state max abs diff {param_abs:.3g}")


def _example_ids(output):
    """``{step: {process: [ids]}}`` from ``--log-example-ids`` lines (the launcher's ``[p<i>]`` must match)."""
    out = {}
    for line in output.splitlines():
        match = EXAMPLES.match(line)
        if match:
            prefix, step, process, ids = match.groups()
            assert prefix is None or prefix == process
            out.setdefault(int(step), {})[int(process)] = [int(i) for i in ids.split()]
    return out


# ----------------------------------------------------------------------------- default run


@pytest.mark.slow  # 2 x 2 devices against 1 x 4 (~70 s under load): a CI step of its own
def test_two_processes_compute_what_one_process_computes(env, tmp_path):
    one = Job(env, tmp_path / "one", *SHORT)
    two = Job(env, tmp_path / "two", *SHORT, processes=2)
    one.wait()
    two.wait()
    _assert_runs_agree(one.workdir, two.workdir, 4)

    # Each process reads its own half of every global batch; together they are the single process's batch.
    ids_one, ids_two = _example_ids(one.output()), _example_ids(two.output())
    assert sorted(ids_one) == sorted(ids_two) == [0, 1, 2, 3]
    for step, by_process in ids_two.items():
        assert sorted(by_process) == [0, 1] and len(by_process[0]) == len(by_process[1]) == 2
        assert not set(by_process[0]) & set(by_process[1])
        assert by_process[0] + by_process[1] == ids_one[step][0]

    # Process 0 alone prints, logs and writes; every process writes its part of a checkpoint.
    out = two.output()
    assert "[p0] done: step 4" in out and "[p1] done" not in out
    assert "[p0] step 4/4" in out and "[p1] step" not in out
    assert "2 process(es)" in out
    assert [m["step"] for m in _metrics(two.workdir)] == [2, 4]
    assert len(list((two.workdir / "tensorboard").glob("events.out.tfevents.*"))) == 1
    checkpoint = two.workdir / "checkpoints" / "4"
    assert sorted(p.name for p in (checkpoint / "data").glob("process_*.json")) == ["process_0-of-2.json",
                                                                                    "process_1-of-2.json"]
    assert (checkpoint / "train" / "ocdbt.process_0").is_dir() and (checkpoint / "train" / "ocdbt.process_1").is_dir()


# ----------------------------------------------------------------------------- slow: full runs, interruptions


@pytest.fixture(scope="module")
def full_runs(env, tmp_path_factory):
    """Uninterrupted 12-step runs (with the final preview grid): ``(one process dir, two processes dir)``."""
    root = tmp_path_factory.mktemp("full")
    one, two = Job(env, root / "one"), Job(env, root / "two", processes=2)
    one.wait()
    two.wait()
    return one.workdir, two.workdir, two.output()


@pytest.mark.slow  # two 12-step runs (~2-3 min)
def test_full_runs_agree_and_process_0_draws_the_preview(full_runs):
    one, two, output = full_runs
    _assert_runs_agree(one, two, 12)
    assert [p.name for p in (two / "samples").glob("*.png")] == ["step_0000012.png"]
    assert "[p0] wrote" in output and "[p1] wrote" not in output
    assert _steps(two) == [8, 12]


@pytest.mark.slow  # a 2-process run killed with SIGKILL and rerun (~2 min)
def test_kill_one_process_then_rerun_ends_as_the_uninterrupted_run(full_runs, env, tmp_path):
    _, reference, _ = full_runs
    job = Job(env, tmp_path / "killed", processes=2)
    job.wait_for_checkpoint(4)
    os.kill(job.worker_pids()[1], signal.SIGKILL)
    assert job.wait(expect_ok=False) != 0  # the launcher reports the failure (and stops process 0)
    assert 12 not in _steps(job.workdir), "the run finished before it could be killed"
    rerun = Job(env, job.workdir, processes=2)
    rerun.wait()
    resumed = re.search(r"\[p0\] resumed from step (\d+)", rerun.output())
    assert resumed and int(resumed.group(1)) in (4, 8)
    _assert_bit_identical(_checkpoint(reference, 12), _checkpoint(job.workdir, 12))
    steps = [m["step"] for m in _metrics(job.workdir)]
    assert steps == sorted(set(steps)) and steps[-1] == 12


def _preempt_and_rerun(env, workdir, processes, *overrides):
    """SIGTERM after the step-4 checkpoint: exit 0 with a checkpoint at the agreed step; then rerun to the end."""
    job = Job(env, workdir, *overrides, processes=processes)
    job.wait_for_checkpoint(4)
    job.proc.send_signal(signal.SIGTERM)  # the launcher passes it on to both processes
    assert job.wait(expect_ok=False) == 0, job.output()[-5000:]
    saved = re.search(r"preempted: saved step (\d+)", job.output())
    assert saved, job.output()[-5000:]
    step = int(saved.group(1))
    assert 4 <= step < 12 and step in _steps(workdir)
    if processes > 1:  # both processes acted on the notice at the same step
        for process in range(processes):
            assert f"[process={process}][thread=MainThread] Reached preemption sync point, step={step}" in job.output()
    rerun = Job(env, workdir, *overrides, processes=processes)
    rerun.wait()
    assert f"resumed from step {step}" in rerun.output()
    return step


@pytest.mark.slow  # a 2-process run preempted and rerun (~2 min)
def test_sigterm_to_two_processes_saves_at_an_agreed_step_and_resumes_exactly(full_runs, env, tmp_path):
    _, reference, _ = full_runs
    _preempt_and_rerun(env, tmp_path / "preempted2", 2)
    _assert_bit_identical(_checkpoint(reference, 12), _checkpoint(tmp_path / "preempted2", 12))


@pytest.mark.slow  # a 1-process run preempted and rerun (~1.5 min)
def test_sigterm_to_one_process_saves_and_resumes_exactly(full_runs, env, tmp_path):
    reference, _, _ = full_runs
    _preempt_and_rerun(env, tmp_path / "preempted1", 1)
    _assert_bit_identical(_checkpoint(reference, 12), _checkpoint(tmp_path / "preempted1", 12))


@pytest.mark.slow  # a 2-process fsdp run preempted and rerun (~2 min)
def test_parameters_sharded_across_processes_train_and_restore(full_runs, env, tmp_path):
    _, reference, _ = full_runs
    workdir = tmp_path / "fsdp"
    _preempt_and_rerun(env, workdir, 2, "mesh.data=1", "mesh.fsdp=4")
    assert "mesh {'data': 1, 'fsdp': 4, 'tensor': 1}" in workdir.with_suffix(".log").read_text()
    _assert_runs_agree(reference, workdir, 12)  # another reduction order than data parallelism: tolerances
