"""Whole sampling loops with the small reference U-Net and CLIP: classifier-free
guided DDIM and ancestral sampling, guided inpainting, and one CLIP-guided step.

The computation lives in ``glide_jax.parity.loops`` (the code behind
``python -m tools.parity``); its results are memoised per fixture, so these
tests and ``test_parity_tool.py`` share one run. Every loop is checked
twice: teacher-forced (each step started from the reference's previous sample,
with its recorded noise), which isolates the step maths from drift, and as a
whole compiled loop, which may drift more (the glide fixtures' README.md measured up to 5e-5
between two PyTorch kernel choices).
"""

import jax.numpy as jnp
import numpy as np
import pytest
from conftest import require_fixture

from glide_jax.parity import check_fixture, load_fixture
from glide_jax.parity import loops as parity_loops

STEP_TOL = 1e-4  # teacher-forced single steps
LOOP_TOL = 2e-4  # whole 10-step loops (fp32 drift through t=999 amplification)
GROUPS = ["ddim_cfg", "p_cfg", "inpaint_ddim"]


@pytest.fixture(scope="module")
def path():
    return require_fixture("diffusion/diffusion.npz")


@pytest.fixture(scope="module")
def errors(path):
    return check_fixture(path)


@pytest.mark.parametrize("group", GROUPS)
def test_schedule_of_loop(errors, group):
    assert errors[f"loop/{group}_timestep_map"][0] == 0
    assert errors[f"loop/{group}_t_model"][0] == 0


@pytest.mark.parametrize("group", GROUPS)
def test_teacher_forced_steps(errors, group):
    print(group, "teacher-forced", errors[f"loop/{group}_steps_tf"], errors[f"steps_tf/{group}:cond"])
    assert errors[f"loop/{group}_steps_tf"][0] < STEP_TOL
    assert errors[f"steps_tf/{group}:cond"][0] < STEP_TOL


@pytest.mark.parametrize("group", GROUPS)
def test_whole_loop(errors, group):
    print(group, "whole loop", errors[f"loop/{group}"], errors[f"loop/{group}_steps"])
    assert errors[f"loop/{group}"][0] < LOOP_TOL
    assert errors[f"loop/{group}_steps"][0] < LOOP_TOL


def test_inpaint_last_step_ends_on_the_source(path):
    # The known region is pasted into x_0 at every step and the last DDIM step returns x_0,
    # so the sample ends exactly on the source there (one step; reuses the compiled step).
    meta, arrays = load_fixture(path)
    s, model_fn, denoised_fn, _, noises, opts = parity_loops.loop_inputs(
        arrays, meta["settings"], path.resolve().parent.parent, "inpaint_ddim")
    x_prev = jnp.asarray(np.moveaxis(arrays["loop/inpaint_ddim_steps"][-2], 1, -1))
    t = jnp.zeros((x_prev.shape[0],), jnp.int32)
    final = np.asarray(parity_loops.sample_step(s, model_fn, denoised_fn, x_prev, t, noises[-1],
                                          jnp.float32(opts.get("eta", 0.0)), opts["sampler"], True))
    keep = np.moveaxis(arrays["loop/inpaint_mask"], 1, -1) > 0.5
    src = np.moveaxis(arrays["loop/inpaint_image"], 1, -1)
    k3 = np.broadcast_to(keep, src.shape)
    assert k3.any()
    assert np.abs(final[k3] - src[k3]).max() < 1e-6


def test_clip_guided_step(errors):
    for key in ("grad", "variance", "pred_xstart:cond", "mean_unguided:cond", "sample:cond"):
        print(f"clipguide/{key}: {errors[f'clipguide/{key}']}")
        assert errors[f"clipguide/{key}"][0] < STEP_TOL, key
    for key in ("t_model", "t_clip", "timestep_map"):
        assert errors[f"clipguide/{key}"][0] == 0, key
