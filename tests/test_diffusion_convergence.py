"""Each sampler's error on Gaussian data shrinks at its order as the steps double.

For data x_0 ~ N(MU, SD^2) the ideal noise prediction is closed form, every
sampler step is affine in the sample and the noise, and so is a whole loop:
its final sample is ``c + a x_T + sum_k g_k z_k``. Running the loop on a few
rows (x_T = 0; x_T = 1; one unit noise at step k) gives c, a and every g_k,
hence the exact mean and standard deviation of the sampler's output when x_T
comes from the true marginal at the first timestep -- no Monte Carlo error.
The exact answer of every sampler as the steps grow is the posterior mean
E[x_0 | x] at the last kept timestep t_0 (the last step of each returns its
x_0 prediction there): mean MU and std SD^2 alpha_0 / sqrt(alpha_0^2 SD^2 +
sigma_0^2).

The steps run from t=900 to t=20, uniform in log-SNR, so the step sizes in
log-SNR halve when the steps double. That leaves out t=999, where the capped
last beta of the cosine schedule makes one enormous log-SNR step (and float32
rounding of x_0 = (x - sigma eps) / alpha, alpha = 5e-5, dominates small
errors), and the low-noise end, where 32 targets would share timesteps.

Measured std errors at 10, 20 and 40 steps, and their ratios:

* DDIM 2.43e-2, 1.19e-2, 5.88e-3 (2.04, 2.02): first order;
* Euler-ancestral 4.20e-2, 2.21e-2, 1.14e-2 (1.90, 1.95): first order;
* UniPC-2 2.75e-3, 3.39e-4, 4.08e-5 (8.11, 8.31): third order, the corrector
  adds one to the predictor's;
* UniPC-3 4.22e-3, 1.86e-4, 1.81e-5 (22.7, 10.3): still short of its
  asymptotic rate at these step counts.

(DPM-Solver++(2M)'s std error changes sign between 10 and 20 steps, so its
ratio says nothing there; tests/test_diffusion_samplers.py checks it.) The
mean is exact for all (error < 1e-7): the path x = alpha MU solves the ODE
and every sampler keeps it.
"""

import jax.numpy as jnp
import numpy as np
import pytest
from jax.tree_util import Partial

from glide_jax.diffusion import RecordedNoise, beta_schedule, respace_betas, sample_loop, schedule_from_betas

MU, SD = 0.3, 0.2
BETAS = beta_schedule("squaredcos_cap_v2", 1000)
ALPHA_BAR = np.cumprod(1 - BETAS)
LOG_SIGMA = 0.5 * np.log((1 - ALPHA_BAR) / ALPHA_BAR)
ALPHA_BAR_TABLE = jnp.asarray(ALPHA_BAR, jnp.float32)


def gaussian_eps(x, t_model):
    """The exact eps prediction for N(MU, SD^2) data; the variance channels are unused by these samplers."""
    ab = jnp.take(ALPHA_BAR_TABLE, t_model).reshape(-1, 1, 1, 1)
    eps = jnp.sqrt(1 - ab) * (x - jnp.sqrt(ab) * MU) / (ab * SD**2 + 1 - ab)
    return jnp.concatenate([eps, jnp.zeros_like(x)], -1)


def log_snr_schedule(steps, top=900, bottom=20):
    targets = np.linspace(LOG_SIGMA[top], LOG_SIGMA[bottom], steps)
    kept = np.abs(targets[:, None] - LOG_SIGMA[None, :]).argmin(axis=1)
    assert len(set(kept.tolist())) == steps
    return schedule_from_betas(*respace_betas(BETAS, kept)), int(kept.max()), int(kept.min())


def moment_errors(sampler, steps):
    """(|mean - exact|, |std - exact|) of the sampler's output distribution, computed exactly."""
    s, top, bottom = log_snr_schedule(steps)
    rows = steps + 2
    x_T = jnp.zeros((rows, 1, 1, 1)).at[1].set(1.0)
    noises = jnp.zeros((steps, rows, 1, 1, 1)).at[jnp.arange(steps), jnp.arange(2, rows)].set(1.0)
    out = sample_loop(s, Partial(gaussian_eps), sampler=sampler, x_T=x_T, noise=RecordedNoise(noises),
                      clip_denoised=False)
    out = np.asarray(out, np.float64).reshape(-1)
    c, a, g = out[0], out[1] - out[0], out[2:] - out[0]
    ab_top, ab_0 = ALPHA_BAR[top], ALPHA_BAR[bottom]
    mean = c + a * np.sqrt(ab_top) * MU
    std = np.sqrt(a**2 * (ab_top * SD**2 + 1 - ab_top) + (g**2).sum())
    exact_std = SD**2 * np.sqrt(ab_0) / np.sqrt(ab_0 * SD**2 + 1 - ab_0)
    return abs(mean - MU), abs(std - exact_std)


# (sampler, bounds on the ratio of std errors from 10 to 20 steps, bound on the 20-step std error)
ORDERS = [
    ("ddim", (1.8, 2.3), 1.5e-2),
    ("euler_a", (1.7, 2.2), 3e-2),
    ("unipc", (6.5, 10.0), 5e-4),
    ("unipc3", (15.0, 32.0), 3e-4),
]


@pytest.mark.parametrize("sampler, ratio_bounds, max_error", ORDERS)
def test_error_shrinks_at_the_samplers_order(sampler, ratio_bounds, max_error):
    mean10, std10 = moment_errors(sampler, 10)
    mean20, std20 = moment_errors(sampler, 20)
    print(f"{sampler}: std error {std10:.3e} -> {std20:.3e} (ratio {std10 / std20:.2f}), mean {mean10:.1e} {mean20:.1e}")
    assert max(mean10, mean20) < 1e-6
    assert ratio_bounds[0] < std10 / std20 < ratio_bounds[1]
    assert std20 < max_error
