"""One compiled sampling loop per sampler and image size, whatever the step count, respacing or start index.

Compilations are counted with ``jax.monitoring``'s backend-compile events (one
per program XLA compiles, or loads from the persistent cache), by function name.
"""

import collections
import contextlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import monitoring
from jax.tree_util import Partial

import glide_jax
from glide_jax.diffusion import guidance, samplers
from glide_jax.diffusion.noise import PRNGNoise
from glide_jax.diffusion.samplers import sample_loop
from glide_jax.diffusion.schedule import TABLE_BLOCK, make_schedule, pad_schedule
from glide_jax.families.unet import unet_model_fn
from glide_jax.sampling.options import StageOptions

COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
LOOP = "jit(_run_loop)"


@contextlib.contextmanager
def compiles():
    """Count the programs compiled inside the block, by name."""
    counts = collections.Counter()

    def listen(event, duration, **kwargs):
        del duration
        if event == COMPILE_EVENT:
            counts[kwargs.get("fun_name")] += 1

    monitoring.register_event_duration_secs_listener(listen)
    try:
        yield counts
    finally:
        monitoring.unregister_event_duration_listener(listen)


@pytest.fixture(scope="module")
def base():
    return glide_jax.load_pipeline("embedded-base", None)


def test_step_counts_spacings_and_start_indices_share_one_loop(base):
    model = base.base
    unet, diffusion = model.config.unet, model.config.diffusion
    rows = 3  # a batch no other test samples, so the first call below compiles for certain
    model_fn = unet_model_fn(unet, model.params, *model.tokens(["a red circle"] * rows))
    shape = (rows, unet.image_size, unet.image_size, 3)
    key = jax.random.key(0)
    steps_seen = []
    before = samplers._run_loop._cache_size()
    with compiles() as first:
        three = make_schedule(diffusion, respacing="3")
        out3 = sample_loop(three, model_fn, shape, key=key)
        start, x_t = guidance.sdedit_start(three, out3, 0.5, key=key)  # its noising compiles for this shape
        sample_loop(three, model_fn, x_T=x_t, noise=PRNGNoise(key), start_index=start)
    with compiles() as later:
        out5 = sample_loop(make_schedule(diffusion, respacing="5"), model_fn, shape, key=key)
        sample_loop(make_schedule(diffusion, respacing="trailing8"), model_fn, shape, key=key,
                    progress=lambda step, total: steps_seen.append((step, total)))
        eight = make_schedule(diffusion, respacing="8")
        for strength in (0.5, 0.75):
            start, x_t = guidance.sdedit_start(eight, out3, strength, key=key)
            sample_loop(eight, model_fn, x_T=x_t, noise=PRNGNoise(key), start_index=start)
    assert first[LOOP] == 1
    assert samplers._run_loop._cache_size() == before + 1
    assert dict(later) == {}, f"new step counts or start indices compiled {dict(later)}"
    assert steps_seen == [(k, 8) for k in range(8)]
    assert float(jnp.abs(out3 - out5).max()) > 0.05  # the step count reached the loop


def _counting_model(x, t_model):
    jax.debug.callback(lambda: CALLS.__setitem__("n", CALLS["n"] + 1))
    return jnp.concatenate([0.5 * x, jnp.zeros_like(x)], -1) + 0.0 * t_model.reshape(-1, 1, 1, 1)


CALLS = {"n": 0}


@pytest.mark.parametrize("sampler", ["ddpm", "unipc3"])
def test_only_the_real_steps_run(sampler):
    # The tables are padded to TABLE_BLOCK entries, but a loop of n steps evaluates the model n times.
    s = make_schedule("squaredcos_cap_v2", 1000, "4")
    assert pad_schedule(s).num_timesteps == TABLE_BLOCK
    model = Partial(_counting_model)
    for steps, start in ((4, None), (3, 2)):
        CALLS["n"] = 0
        out = sample_loop(s, model, (1, 2, 2, 3), sampler=sampler, key=jax.random.key(1), start_index=start)
        out.block_until_ready()
        jax.effects_barrier()
        assert CALLS["n"] == steps


def test_padding_keeps_every_table_entry():
    s = make_schedule("squaredcos_cap_v2", 1000, "trailing7")
    padded = pad_schedule(s)
    for name, table in vars(s).items():
        full = np.asarray(getattr(padded, name))
        assert full.shape == (TABLE_BLOCK,) and full.dtype == np.asarray(table).dtype
        np.testing.assert_array_equal(full[:7], np.asarray(table))
        np.testing.assert_array_equal(full[7:], np.asarray(table)[-1])
    assert pad_schedule(s, 7) is s
    with pytest.raises(ValueError, match="cannot pad a 7-step schedule to 5 entries"):
        pad_schedule(s, 5)


def test_the_pipeline_compiles_nothing_for_a_new_step_count_or_strength(base):
    init = np.zeros((32, 32, 3), np.uint8)
    init[8:20, 8:20] = (255, 0, 0)
    base.generate(["a red circle"], seed=0, base=StageOptions("ddpm", 3))
    base.generate(["a red square"], seed=0, init_image=init, strength=0.5, base=StageOptions("ddpm", 3))
    with compiles() as later:
        base.generate(["a blue circle"], seed=1, base=StageOptions("ddpm", 6), progress=True)
        base.generate(["a blue square"], seed=1, init_image=init, strength=0.8, base=StageOptions("ddpm", 4))
    assert dict(later) == {}


@pytest.mark.slow  # two CLI processes (25-70 s)
def test_a_second_cli_process_loads_every_program_and_draws_the_same_image(tmp_path):
    import os
    import subprocess
    import sys

    from glide_jax.runtime import COMPILATION_CACHE_ENV

    cache = tmp_path / "xla"
    env = {**os.environ, COMPILATION_CACHE_ENV: str(cache)}
    images = []
    entries = []
    for run in range(2):
        out = tmp_path / f"out{run}"
        done = subprocess.run([sys.executable, "-m", "glide_jax", "generate", "a red circle above a blue square",
                               "--out", str(out), "--no-progress"], env=env, capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        images.append((out / "generate_000.png").read_bytes())
        entries.append(sorted(p.name for p in cache.iterdir() if p.name.endswith("-cache")))
    assert len(entries[0]) > 10
    assert entries[1] == entries[0]  # the second process compiled (and stored) nothing new
    assert images[1] == images[0]
