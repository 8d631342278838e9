"""Distillation to a few steps (glide_jax.train.distill): the guidance-weight input, the targets, gradient
accumulation, the stochastic few-step sampler, sampling a student through the pipeline, and (slow) the
training rounds chained workdir to workdir down to one step, with a kill -9 in the middle of one."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
import signal
import subprocess
import sys
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

from conftest import require_fixture
from experiments.common import main as train_main
from experiments.configs import _common as common
from glide_jax.config import GLIDE_VOCAB, DiffusionConfig, ModelConfig
from glide_jax.diffusion.samplers import ddim_sample, sample_loop
from glide_jax.diffusion.schedule import make_schedule
from glide_jax.errors import InputError
from glide_jax.family import family_of, init_params
from glide_jax.hub.workdir import load_workdir
from glide_jax.sampling.advice import SamplingAdvice
from glide_jax.sampling.loaded_model import LoadedModel
from glide_jax.sampling.pipeline import Pipeline
from glide_jax.train import distill, warm_start
from glide_jax.train import state as state_lib
from glide_jax.train.experiment import DistillConfig, TrainConfig

REPO = Path(__file__).resolve().parents[1]
CONFIG = f"{REPO}/experiments/configs/base.py"
TEACHER = ModelConfig(common.MICRO_UNET, common.COSINE)
STUDENT = common.guidance_student(TEACHER)


def _random_teacher(config=TEACHER, seed=1):
    """Random parameters, the zero-initialised layers (output convolutions) drawn too, so outputs are not 0."""
    params = nn.unbox(init_params(config, jax.random.key(seed)))
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(seed + 1), len(leaves))
    leaves = [np.asarray(a if np.any(a) else 0.05 * jax.random.normal(k, a.shape)) for a, k in zip(leaves, keys)]
    return jax.tree.unflatten(tree, leaves)


_JITTED = {}


def _apply(config, params, x, t, tokens, mask, w=None):
    """The model's output, compiled once per config (w is an argument, not a constant)."""
    if (config, w is None) not in _JITTED:
        family = family_of(config)

        def run(p, x, t, tokens, mask, w):
            cond = {} if w is None else {"guidance_weight": w}
            return family.model_fn(config, {"params": p}, tokens, mask, **cond)(x, t)

        _JITTED[config, w is None] = jax.jit(run)
    weights = None if w is None else np.full(x.shape[0], w, np.float32)
    return np.asarray(_JITTED[config, w is None](params, x, t, tokens, mask, weights))


def _inputs(b=2):
    x = jax.random.normal(jax.random.key(2), (b, 16, 16, 3))
    tokens = jax.random.randint(jax.random.key(3), (b, 12), 0, 128)
    return x, jnp.array([10, 900][:b]), tokens, jnp.arange(12)[None].repeat(b, 0) < 7


@pytest.mark.slow  # compiles the micro teacher and its student at two batch sizes (~40 s quiet, 120 s loaded)
def test_a_zero_initialised_student_computes_its_teacher_bit_for_bit():
    teacher = _random_teacher()
    student = warm_start.guidance_embed_params({"params": teacher}, TEACHER, STUDENT)
    family = family_of(STUDENT)
    x, t, tokens, mask = _inputs()
    want = _apply(TEACHER, teacher, x, t, tokens, mask)
    assert np.abs(want).max() > 0.1
    for w in (1.0, 4.0):
        np.testing.assert_array_equal(_apply(STUDENT, student, x, t, tokens, mask, w), want)
    # Copied, not re-drawn; the MLP's first layer is drawn, its last is zero.
    np.testing.assert_array_equal(student["unet"]["time_embed_0"]["kernel"], teacher["unet"]["time_embed_0"]["kernel"])
    assert np.abs(student["unet"]["guidance_embed_0"]["kernel"]).max() > 0.1
    assert not np.any(student["unet"]["guidance_embed_2"]["kernel"])
    # Once the last layer moves, w is read: two weights give two outputs.
    moved = jax.tree.map(lambda a: a, student)
    moved["unet"]["guidance_embed_2"] = {"kernel": np.full_like(student["unet"]["guidance_embed_2"]["kernel"], 0.01),
                                         "bias": student["unet"]["guidance_embed_2"]["bias"]}
    outs = [_apply(STUDENT, moved, x, t, tokens, mask, w) for w in (1.0, 4.0)]
    assert np.abs(outs[0] - outs[1]).max() > 1e-4
    # A student with the embedding starts as is from another one; one that differs otherwise is refused.
    again = warm_start.guidance_embed_params({"params": student}, STUDENT, STUDENT)
    np.testing.assert_array_equal(again["unet"]["guidance_embed_0"]["kernel"], student["unet"]["guidance_embed_0"]["kernel"])
    wider = dataclasses.replace(STUDENT, unet=dataclasses.replace(STUDENT.unet, num_channels=64))
    with pytest.raises(InputError, match="num_channels"):
        warm_start.guidance_embed_params({"params": teacher}, TEACHER, wider)
    with pytest.raises(InputError, match="guidance_weight"):
        _apply(STUDENT, student, x, t, tokens, mask)


def test_the_progressive_target_is_one_ddim_step_onto_the_teachers_two():
    s, student_s = distill.trailing_schedules(TEACHER, 8, 4)
    np.testing.assert_array_equal(np.asarray(s.timestep_map), [124, 249, 374, 499, 624, 749, 874, 999])
    np.testing.assert_array_equal(np.asarray(student_s.timestep_map), [249, 499, 749, 999])
    z = jax.random.normal(jax.random.key(0), (4, 4, 4, 3))
    z_end = 0.5 * jax.random.normal(jax.random.key(1), z.shape)
    i = jnp.array([1, 3, 5, 7])
    eps = distill.one_step_eps(s, z, i, z_end)
    # One unclipped DDIM step of the student's (twice as long) schedule with that eps lands on z_end; at the
    # last index alpha is 5e-5, so float32 rounding is amplified there.
    out = jnp.concatenate([eps, jnp.zeros_like(eps)], -1)
    landed = ddim_sample(student_s, lambda *_: out, z, (i - 1) // 2, jnp.zeros_like(z), clip_denoised=False)[0]
    np.testing.assert_allclose(np.asarray(landed[:3]), np.asarray(z_end[:3]), atol=2e-5)
    np.testing.assert_allclose(np.asarray(landed[3]), np.asarray(z_end[3]), atol=5e-3)
    with pytest.raises(InputError, match="twice"):
        distill.trailing_schedules(TEACHER, 8, 3)
    short_teacher, short_student = distill.trailing_schedules(TEACHER, 8, 4, chain=875)
    np.testing.assert_array_equal(np.asarray(short_student.timestep_map), [218, 437, 655, 874])
    np.testing.assert_array_equal(np.asarray(short_teacher.timestep_map)[1::2], [218, 437, 655, 874])
    with pytest.raises(InputError, match="chain"):
        DistillConfig(chain=-1)


def test_stochastic_fewstep_reaches_a_point_mass_from_any_start():
    """With the exact noise prediction of data that is one constant image, every step's x_0 is that image."""
    full = make_schedule(DiffusionConfig())
    c = 0.3

    def exact(x, t):
        ab = jnp.take(full.alphas_cumprod, t)[:, None, None, None]
        eps = (x - jnp.sqrt(ab) * c) / jnp.sqrt(1 - ab)
        return jnp.concatenate([eps, jnp.zeros_like(eps)], -1)

    for spacing in ("trailing2", "trailing4", "3"):
        s = make_schedule(DiffusionConfig(), respacing=spacing)
        out = sample_loop(s, exact, (2, 4, 4, 3), sampler="stochastic_fewstep", key=jax.random.key(0))
        assert float(jnp.abs(out - c).max()) < 1e-5, spacing
    with pytest.raises(InputError, match="needs a key"):
        sample_loop(s, exact, x_T=jnp.zeros((1, 4, 4, 3)), sampler="stochastic_fewstep")


@pytest.mark.slow
def test_a_guidance_distillation_step_at_w_1_has_nothing_to_learn_at_its_start():
    """At step 0 the student is its teacher and at w = 1 the guided target is the conditional output: loss ~0."""
    tc = TrainConfig(batch_size=2, lr=1e-3, distill=DistillConfig(guidance_min=1.0, guidance_max=1.0))
    tx = state_lib.make_optimizer(tc)
    params = warm_start.guidance_embed_params({"params": _random_teacher()}, TEACHER, STUDENT)
    state = state_lib.create_state(jax.tree.map(jnp.asarray, params), tx, 0, teacher=True)
    x, _, tokens, mask = _inputs()
    step = jax.jit(distill.make_guidance_distill_step(STUDENT, tc, tx))
    new, metrics = step(state, {"image": jnp.clip(x, -1, 1), "tokens": tokens, "mask": mask})
    # Zero up to rounding: eps_u + 1 * (eps_c - eps_u) is eps_c to float32 precision (measured 2e-13).
    assert float(metrics["eps_mse"]) < 1e-10 and float(metrics["var_mse"]) < 1e-10
    assert float(metrics["guidance"]) == 1.0
    for a, b in zip(jax.tree.leaves(new.teacher_params), jax.tree.leaves(params)):
        np.testing.assert_array_equal(np.asarray(a), b)


@pytest.mark.slow  # four compilations of the micro step (~25 s each on a quiet 2-core CPU)
@pytest.mark.parametrize("make_step", [distill.make_guidance_distill_step, distill.make_progressive_distill_step])
def test_gradient_accumulation_gives_the_whole_batch_update(make_step):
    """Two microbatches of 2 and one batch of 4 draw the same timesteps, noise and w and give the same
    gradient up to summation order; plain SGD at rate 1 makes the update that gradient itself."""
    params = jax.tree.map(jnp.asarray, _random_teacher(STUDENT))  # a w-reading student: w matters
    x, _, tokens, mask = _inputs(4)
    batch = {"image": jnp.clip(x, -1, 1), "tokens": tokens, "mask": mask}
    tx = optax.sgd(1.0)
    out = {}
    for m in (1, 2):
        tc = TrainConfig(batch_size=4, microbatches=m, distill=common.DISTILL_MICRO)
        state = state_lib.create_state(params, tx, 0, teacher=True)
        out[m] = jax.jit(make_step(STUDENT, tc, tx))(state, batch)
    (whole, whole_metrics), (sliced, sliced_metrics) = out[1], out[2]
    assert float(whole_metrics["loss"]) > 1e-3
    for name in ("loss", "eps_mse", "var_mse", "guidance", "loss_q0", "loss_q3"):
        np.testing.assert_allclose(float(sliced_metrics[name]), float(whole_metrics[name]), rtol=1e-5, atol=1e-10,
                                   err_msg=name)
    moved = [np.abs(np.asarray(a) - np.asarray(b)).max() for a, b in
             zip(jax.tree.leaves(whole.params), jax.tree.leaves(params))]
    assert max(moved) > 1e-3
    for a, b in zip(jax.tree.leaves(sliced.params), jax.tree.leaves(whole.params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)


def test_a_students_guidance_interval_is_w_inside_and_the_conditional_model_outside():
    """Interval guidance of a w-conditioned student: w at the interval's timesteps, 1 (plain conditional) elsewhere,
    in one evaluation per step; t = 10 lies outside [500, 999], t = 900 inside."""
    params = _random_teacher(STUDENT)
    x, t, tokens, mask = _inputs()
    family = family_of(STUDENT)
    cond = {"guidance_weight": np.full(2, 3.0, np.float32), "guidance_interval": np.array([500, 999], np.int32)}
    banded = np.asarray(jax.jit(lambda p: family.model_fn(STUDENT, {"params": p}, tokens, mask, **cond)(x, t))(params))
    at_one, at_three = (_apply(STUDENT, params, x, t, tokens, mask, w) for w in (1.0, 3.0))
    assert np.abs(at_three - at_one).max() > 1e-3  # w matters for these weights
    np.testing.assert_allclose(banded[0], at_one[0], atol=1e-6)
    np.testing.assert_allclose(banded[1], at_three[1], atol=1e-6)


def _glide_vocab(config):
    unet = config.unet
    return dataclasses.replace(config, unet=dataclasses.replace(unet, text=dataclasses.replace(unet.text,
                                                                                              n_vocab=GLIDE_VOCAB)))


def test_a_student_samples_through_the_pipeline_with_its_sampling_json():
    """Two stochastic few-step steps at the sampling.json's guidance weight: one conditional evaluation per step,
    so the zero-initialised student draws exactly what its teacher draws unguided."""
    from glide_jax.tokenizers.glide_bpe import GlideBPETokenizer  # the fixture's tokenizer, present only with it
    tokenizer = GlideBPETokenizer.load(require_fixture("tokenizer"))
    teacher_cfg, student_cfg = _glide_vocab(TEACHER), _glide_vocab(STUDENT)
    teacher = _random_teacher(teacher_cfg)
    student = warm_start.guidance_embed_params({"params": teacher}, teacher_cfg, student_cfg)
    advice = SamplingAdvice.from_json({"sampler": "stochastic_fewstep", "steps": "trailing2", "guidance_weight": 3.0})
    assert advice.guidance_scale == 3.0 and advice.stage.steps == "trailing2"
    model = LoadedModel(student_cfg, {"params": student}, tokenizer, sampling=advice.stage,
                        guidance_scale=advice.guidance_scale)
    prompts = ["a red circle", "a blue square"]
    images = Pipeline(model).generate(prompts, seed=5, upsample=None)
    assert images.shape == (2, 16, 16, 3) and images.std() > 0
    plain = Pipeline(LoadedModel(teacher_cfg, {"params": teacher}, tokenizer)).generate(
        prompts, seed=5, upsample=None, guidance_scale=1.0, base=advice.stage)
    np.testing.assert_array_equal(images, plain)
    with pytest.raises(InputError, match="not both"):
        SamplingAdvice.from_json({"guidance_weight": 3.0, "guidance_scale": 3.0})
    with pytest.raises(InputError, match="negative prompts"):
        Pipeline(model).generate(prompts, seed=5, upsample=None, negative_prompt="blurry")


# ----------------------------------------------------------------------------- training rounds (slow)


def _train(workdir, variant, *overrides):
    status = train_main(None, "distillation test", ["--config", f"{CONFIG}:{variant}", "--workdir", str(workdir),
                                                   "--set", *overrides])
    assert status == 0


@pytest.fixture(scope="module")
def rounds(tmp_path_factory):
    """A micro base trained 4 steps, its guided student, and three progressive rounds (8 -> 4 -> 2 -> 1 steps):
    the released base's recipe (docs/distillation.md) on the micro network, each round 4 steps."""
    root = tmp_path_factory.mktemp("distill")
    _train(root / "teacher", "micro", "train.steps=4", "train.sample_every=-1", "train.checkpoint_every=0")
    _train(root / "guided", "distill_guidance_micro", f"train.init_from={root / 'teacher'}")
    _train(root / "p1", "distill_progressive_micro", f"train.init_from={root / 'guided'}")
    _train(root / "p2", "distill_progressive_micro", f"train.init_from={root / 'p1'}",
           "train.distill.teacher_steps=4", "train.distill.student_steps=2")
    _train(root / "p3", "distill_progressive_micro", f"train.init_from={root / 'p2'}",
           "train.distill.teacher_steps=2", "train.distill.student_steps=1")
    return root


def _train_item(workdir, step):
    with ocp.CheckpointManager(Path(workdir) / "checkpoints", options=ocp.CheckpointManagerOptions(read_only=True)) as m:
        return m.restore(step, args=ocp.args.Composite(train=ocp.args.StandardRestore()))["train"]


@pytest.mark.slow
def test_each_round_starts_from_the_previous_workdir_and_keeps_it_frozen(rounds):
    teacher_cfg, teacher, _ = load_workdir(rounds / "teacher")
    for name, previous in (("guided", "teacher"), ("p1", "guided"), ("p2", "p1"), ("p3", "p2")):
        item = _train_item(rounds / name, 4)
        _, before, _ = load_workdir(rounds / previous)
        frozen = item["teacher_params"]["unet"]
        assert "guidance_embed_2" in frozen
        np.testing.assert_array_equal(frozen["out_2"]["kernel"], before["params"]["unet"]["out_2"]["kernel"])
        assert not np.array_equal(item["params"]["unet"]["out_2"]["kernel"], frozen["out_2"]["kernel"]), name
        metrics = [json.loads(line) for line in (rounds / name / "metrics.jsonl").read_text().splitlines()]
        assert all(np.isfinite(m["loss"]) for m in metrics) and metrics[-1]["step"] == 4
    assert not np.any(_train_item(rounds / "guided", 4)["teacher_params"]["unet"]["guidance_embed_2"]["kernel"])
    for name, steps in (("p2", 2), ("p3", 1)):
        experiment = json.loads((rounds / name / "experiment.json").read_text())
        assert experiment["train"]["distill"]["student_steps"] == steps


@pytest.mark.slow
def test_the_one_step_student_samples_from_its_workdir_with_its_sampling_json(rounds):
    """The last round's workdir is a model source: its sampling.json (one DDIM step on the trailing grid, w = 3)
    is what the pipeline samples with when nothing else is asked for."""
    from glide_jax.sampling.loading import load_pipeline
    from glide_jax.sampling.options import StageOptions

    (rounds / "p3" / "sampling.json").write_text(json.dumps(
        {"sampler": "ddim", "steps": "trailing1", "guidance_weight": 3.0}))
    pipeline = load_pipeline(str(rounds / "p3"), None)
    assert pipeline.base.guidance_scale == 3.0
    prompts = ["a red circle", "a blue square"]
    images = pipeline.generate(prompts, seed=3, upsample=None)
    assert images.shape == (2, 16, 16, 3) and images.dtype == np.uint8 and images.std() > 0
    asked = pipeline.generate(prompts, seed=3, upsample=None, base=StageOptions("ddim", "trailing1"),
                              guidance_scale=3.0)
    np.testing.assert_array_equal(images, asked)


@pytest.mark.slow
def test_a_killed_distillation_run_resumes_to_the_uninterrupted_result(rounds, tmp_path):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    workdir = tmp_path / "killed"
    cmd = [sys.executable, "-m", "experiments.train", "--config", f"{CONFIG}:distill_progressive_micro",
           "--workdir", str(workdir), "--set", f"train.init_from={rounds / 'guided'}"]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while not (workdir / "checkpoints" / "2").exists():
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (workdir / "checkpoints" / "4").exists(), "the run finished before it could be killed"
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    assert done.returncode == 0 and "resumed from step 2" in done.stdout, done.stderr[-3000:]
    a, b = _train_item(rounds / "p1", 4), _train_item(workdir, 4)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.slow  # compiles the micro guidance-distillation step cut to one 8x8 level (~20 s)
def test_the_memory_table_compiles_a_distillation_step_with_its_teacher_in_the_state():
    from tools import memory_table

    nano = ["model.unet.channel_mult=1", "model.unet.attention_resolutions=", "model.unet.image_size=8"]
    cfg = memory_table.configure(memory_table.load("base:distill_guidance_micro", nano), dtype="float32",
                                 remat=False, batch_size=2)
    row = memory_table.step_memory(cfg)
    # Parameters, their average, Adam's two moments and the frozen teacher in float32, plus a few scalars.
    assert 0 <= row["state_bytes"] - 20 * row["params"] < 1024
    assert row["alias_size_in_bytes"] == row["state_bytes"]  # the donated state, teacher included, in place
    assert row["flops"] > 0
