"""Every training entry point (``experiments.train`` and its per-task aliases), end to end in subprocesses,
on the micro configs.

Checks that each entry point trains and writes checkpoints, metrics and
sample grids; that killing a run with SIGKILL at an arbitrary moment and
rerunning the same command ends at exactly (bit for bit) the parameters of an
uninterrupted run, also when the newest checkpoint was damaged meanwhile; that
a workdir loads straight into sampling; and that the inpainting fine-tune
starts from the base model's function.

Speed: the subprocesses share a persistent compilation cache and compile with
``--xla_backend_optimization_level=0`` (2-3x faster compilation on CPU); the
equality claims hold for any fixed flags. The base, upsampler and CLIP runs
start together when the module starts.
"""

import json
import os
import signal
import shutil
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from glide_jax.config import ClipConfig, ModelConfig
from glide_jax.hub.workdir import load_workdir
from glide_jax.train.experiment import load_config_file

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "experiments" / "configs"


def _command(task, config, workdir, *overrides):
    """The training command: ``experiments.train`` when ``task`` is None, else its alias ``train_<task>``."""
    module = "experiments.train" + (f"_{task}" if task else "")
    cmd = [sys.executable, "-m", module, "--config", f"{CONFIGS}/{config}", "--workdir", str(workdir)]
    return cmd + (["--set", *overrides] if overrides else [])


class Run:
    """A training subprocess with its output in ``<workdir>.log``."""

    def __init__(self, env, task, config, workdir, *overrides):
        self.workdir = Path(workdir)
        self.log = self.workdir.with_suffix(".log")
        self._out = open(self.log, "a")
        self.proc = subprocess.Popen(_command(task, config, workdir, *overrides), cwd=REPO, env=env,
                                     stdout=self._out, stderr=subprocess.STDOUT)

    def wait(self, expect_ok=True, timeout=900):
        rc = self.proc.wait(timeout=timeout)
        self._out.close()
        if expect_ok:
            assert rc == 0, self.output()[-4000:]
        return rc

    def output(self):
        return self.log.read_text()


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    e = dict(os.environ)
    e.update(
        JAX_COMPILATION_CACHE_DIR=str(tmp_path_factory.mktemp("jax_cache")),
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
        JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0",
        XLA_FLAGS="--xla_backend_optimization_level=0",
        JAX_PLATFORMS="cpu",
    )
    return e


@pytest.fixture(scope="module")
def runs(tmp_path_factory, env):
    root = tmp_path_factory.mktemp("runs")
    started = {
        "base": Run(env, "base", "base.py:micro", root / "base"),
        "upsample": Run(env, None, "upsample.py:micro", root / "upsample"),  # the task from the config
        "clip": Run(env, None, "clip.py:micro", root / "clip"),
    }
    yield root, started
    for run in started.values():
        if run.proc.poll() is None:
            run.proc.kill()


@pytest.fixture(scope="module")
def base_run(runs):
    root, started = runs
    started["base"].wait()
    return started["base"].workdir


def _checkpoint(workdir, step):
    options = ocp.CheckpointManagerOptions(read_only=True)
    with ocp.CheckpointManager(Path(workdir) / "checkpoints", options=options) as m:
        out = m.restore(step, args=ocp.args.Composite(train=ocp.args.StandardRestore(),
                                                      ema_params=ocp.args.StandardRestore()))
        return {"train": out["train"], "ema_params": out["ema_params"]}


def _ema_model(workdir):
    """``(model config, {"params": ema_params})`` of a workdir's newest checkpoint, as sampling reads it."""
    config, params, _ = load_workdir(workdir)
    return config, params


def _steps(workdir):
    return sorted(int(p.name) for p in (Path(workdir) / "checkpoints").iterdir() if p.name.isdigit())


def _assert_bit_identical(a, b):
    leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(leaves_a) == len(leaves_b) > 0
    for x, y in zip(leaves_a, leaves_b):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_base_entry_point_writes_checkpoints_metrics_and_samples(base_run):
    cfg = load_config_file(f"{CONFIGS}/base.py:micro")
    assert _steps(base_run) == [8, 12]  # keep_last=2 of the saves at 4, 8, 12
    lines = [json.loads(l) for l in (base_run / "metrics.jsonl").read_text().splitlines()]
    assert [l["step"] for l in lines] == list(range(2, 13, 2))
    for line in lines:
        assert np.isfinite(line["loss"]) and line["skipped"] == 0
        assert {"mse_q0", "vb_q3", "loss_q2", "grad_norm", "lr", "images_per_s"} <= set(line)
    assert lines[-1]["loss"] < lines[0]["loss"]
    assert list((base_run / "tensorboard").glob("events.out.tfevents.*"))
    from PIL import Image

    grid = Image.open(base_run / "samples" / "step_0000012.png")
    n, size = cfg.sample.num_images, cfg.model.unet.image_size
    assert grid.size == (n * (size + 2) + 2, size + 4)
    assert (base_run / "tokenizer.model").exists()
    saved = json.loads((base_run / "experiment.json").read_text())
    assert saved["name"] == "base_micro" and saved["train"]["steps"] == 12


@pytest.mark.slow  # a third training run, killed and resumed (~60 s)
def test_kill_and_rerun_equals_the_uninterrupted_run(base_run, runs, env):
    root, _ = runs
    workdir = root / "killed"
    run = Run(env, "base", "base.py:micro", workdir)
    deadline = time.time() + 600
    while not (workdir / "checkpoints" / "4").exists():
        assert run.proc.poll() is None, run.output()[-3000:]
        assert time.time() < deadline
        time.sleep(0.01)
    run.proc.send_signal(signal.SIGKILL)
    assert run.wait(expect_ok=False) == -signal.SIGKILL
    assert 12 not in _steps(workdir), "the run finished before it could be killed"
    resumed = Run(env, "base", "base.py:micro", workdir)
    resumed.wait()
    assert "resumed from step" in resumed.output()
    _assert_bit_identical(_checkpoint(base_run, 12), _checkpoint(workdir, 12))
    # The metrics log describes one run: no step is logged twice.
    steps = [json.loads(l)["step"] for l in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)) and steps[-1] == 12

    # Damage the newest checkpoint and rerun: it falls back to step 8, redoes 9..12, same result.
    files = list((workdir / "checkpoints" / "12" / "train").rglob("ocdbt.process_0/d/*"))
    victim = max(files, key=lambda f: f.stat().st_size)
    with open(victim, "r+b") as f:
        f.truncate(victim.stat().st_size // 3)
    again = Run(env, "base", "base.py:micro", workdir)
    again.wait()
    out = again.output()
    assert "CorruptCheckpointWarning" in out and "step 12" in out and "resumed from step 8" in out
    _assert_bit_identical(_checkpoint(base_run, 12), _checkpoint(workdir, 12))


def test_training_workdir_loads_for_sampling(base_run):
    from glide_jax.hub.registry import load_model
    from glide_jax.models.unet import GlideUNet

    cfg = load_config_file(f"{CONFIGS}/base.py:micro")
    model_cfg, params = _ema_model(base_run)
    assert isinstance(model_cfg, ModelConfig) and model_cfg == cfg.model
    _assert_bit_identical(params["params"], _checkpoint(base_run, 12)["ema_params"])
    same_cfg, same = load_model(str(base_run))  # the sampling pipeline's loader takes a workdir too
    assert same_cfg == model_cfg
    _assert_bit_identical(same, params)
    u = model_cfg.unet
    x = jnp.zeros((1, u.image_size, u.image_size, 3))
    apply = jax.jit(GlideUNet(u).apply)
    out = apply(params, x, jnp.array([500]), jnp.zeros((1, u.text.text_ctx), jnp.int32),
                jnp.zeros((1, u.text.text_ctx), bool))
    assert out.shape == (1, u.image_size, u.image_size, 6) and bool(jnp.isfinite(out).all())


def test_upsample_entry_point(runs):
    _, started = runs
    started["upsample"].wait()
    workdir = started["upsample"].workdir
    assert _steps(workdir) == [3, 6]
    assert (workdir / "samples" / "step_0000006.png").exists()
    model_cfg, params = _ema_model(workdir)
    assert model_cfg.unet.super_res and model_cfg.low_res_size == 8
    kernel = params["params"]["unet"]["input_blocks_0_0"]["kernel"]
    assert kernel.shape[2] == 6  # [x, low_res upsampled]


@pytest.mark.slow  # a warm-started training run (~18 s)
def test_an_upsampler_warm_started_from_the_upsampler_run_trains(runs, env, tmp_path):
    from glide_jax.train import loop
    from glide_jax.train.experiment import apply_overrides

    root, started = runs
    started["upsample"].wait()
    source = started["upsample"].workdir
    run = Run(env, "upsample", "upsample.py:micro", root / "upsample_warm", f"train.init_from={source}",
              "train.steps=2", "train.sample_every=-1")
    # Meanwhile: such a run's step 0 holds exactly the source's EMA weights, as parameters and as average.
    cfg = apply_overrides(load_config_file(f"{CONFIGS}/upsample.py:micro"), [f"train.init_from={source}"])
    prepared = loop.prepare(cfg, tmp_path / "probe")
    state, _ = loop.restore_or_initialise(prepared)
    prepared.checkpointer.close()
    _, ema = _ema_model(source)
    assert int(state.step) == 0
    _assert_bit_identical(state.params, ema["params"])
    _assert_bit_identical(state.ema_params, ema["params"])

    run.wait()
    out = run.output()
    assert "resumed" not in out and _steps(root / "upsample_warm") == [2]
    lines = [json.loads(l) for l in (root / "upsample_warm" / "metrics.jsonl").read_text().splitlines()]
    assert [l["step"] for l in lines] == [2] and np.isfinite(lines[0]["loss"]) and lines[0]["skipped"] == 0
    # It kept the source's vocabulary rather than learning a new one.
    assert (root / "upsample_warm" / "tokenizer.model").read_bytes() == (source / "tokenizer.model").read_bytes()


def test_clip_entry_point(runs):
    _, started = runs
    started["clip"].wait()
    workdir = started["clip"].workdir
    assert _steps(workdir) == [3, 6]
    lines = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert all(np.isfinite(l["loss"]) and 0 <= l["accuracy"] <= 1 and l["logit_scale"] > 0 for l in lines)
    model_cfg, params = _ema_model(workdir)
    assert isinstance(model_cfg, ClipConfig) and "logit_scale" in params["params"]


@pytest.mark.slow  # a fine-tuning run (~30 s)
def test_inpaint_entry_point_fine_tunes_the_base_run(base_run, runs, env):
    from glide_jax.models.unet import GlideUNet
    from glide_jax.train.warm_start import initial_params, inpaint_params

    root, _ = runs
    run = Run(env, "inpaint", "inpaint.py:micro", root / "inpaint", f"train.init_from={base_run}")
    # Meanwhile: the widened start computes exactly what the base model computes.
    cfg = load_config_file(f"{CONFIGS}/inpaint.py:micro")
    _, base = _ema_model(base_run)
    init = initial_params(inpaint_params, str(base_run), cfg.model)
    u = cfg.model.unet
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(2, u.image_size, u.image_size, 3)), jnp.float32)
    t, tokens = jnp.array([10, 900]), jnp.asarray(rng.integers(1, 50, (2, u.text.text_ctx)), jnp.int32)
    mask = jnp.ones((2, u.text.text_ctx), bool)
    image = jnp.asarray(rng.uniform(-1, 1, x.shape), jnp.float32)
    keep = jnp.asarray(rng.integers(0, 2, x.shape[:3] + (1,)), jnp.float32)
    base_unet = GlideUNet(load_config_file(f"{CONFIGS}/base.py:micro").model.unet)
    want = jax.jit(base_unet.apply)(base, x, t, tokens, mask)
    got = jax.jit(lambda p: GlideUNet(u).apply(p, x, t, tokens, mask, inpaint_image=image, inpaint_mask=keep))(
        {"params": init})
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5)

    run.wait()
    assert _steps(root / "inpaint") == [2, 4]
    assert (root / "inpaint" / "samples" / "step_0000004.png").exists()
    # The fine-tune inherits the base run's vocabulary.
    assert (root / "inpaint" / "tokenizer.model").read_bytes() == (base_run / "tokenizer.model").read_bytes()


def test_entry_points_refuse_wrong_configs(base_run, env):
    def run(*args):
        return subprocess.run(_command(*args), cwd=REPO, env=env, capture_output=True, text=True, timeout=300)

    proc = run("upsample", "base.py:micro", "unused")
    assert proc.returncode == 2 and "use experiments.train (or experiments.train_base)" in proc.stderr
    for task in ("inpaint", None):  # the alias and the entry point that takes the task from the config
        proc = run(task, "inpaint.py:micro", "unused")
        assert proc.returncode == 2 and "train.init_from" in proc.stderr
    # Another model in an existing workdir: refused before any checkpoint is read or moved.
    before = _steps(base_run)
    proc = run("base", "base.py:micro", base_run, "model.unet.num_channels=64")
    assert proc.returncode != 0 and "with a different model" in proc.stderr
    assert _steps(base_run) == before and not (base_run / "checkpoints.corrupt").exists()


def test_a_run_whose_every_checkpoint_is_damaged_stops_instead_of_starting_over(base_run, env, tmp_path):
    workdir = tmp_path / "run"
    shutil.copytree(base_run, workdir)
    steps = _steps(workdir)
    for step in steps:
        shutil.rmtree(workdir / "checkpoints" / str(step) / "ema_params")
    proc = subprocess.run(_command("base", "base.py:micro", workdir), cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert f"error: none of the {len(steps)} checkpoints in {workdir / 'checkpoints'} can be read" in proc.stderr
    assert "restart_if_corrupt=true" in proc.stderr and "Traceback" not in proc.stderr
    assert _steps(workdir) == steps and not (workdir / "checkpoints.corrupt").exists()
