"""UniPC (Zhao et al. 2023), B(h) = e^h - 1 ("bh2"), in data-prediction form.

A multistep solver of the probability-flow ODE written, like DPM-Solver++,
in log-SNR lambda = log(alpha / sigma) with alpha = sqrt(alpha_bar) and
sigma = sqrt(1 - alpha_bar). Each step of size h = lambda' - lambda moves the
sample with the x_0 prediction m0 held fixed,

    x' = (sigma' / sigma) x - alpha' (e^{-h} - 1) m0,

and adds a correction ``- alpha' B(h) sum_k rho_k D_k`` built from the
differences D_k = (m_k - m0) / r_k between earlier x_0 predictions m_k and
m0, where r_k = (lambda_k - lambda) / h. The weights rho solve a small
Vandermonde system in the r_k whose right-hand side holds phi-function
values of h (order 2 of the predictor uses rho = 1/2). The predictor (UniP)
extrapolates from the earlier predictions; the corrector (UniC) then,
when the model has been evaluated at the new point, redoes the last step
with that evaluation included (no extra model call) before the next
predictor starts from the corrected sample.

Orders follow diffusers' UniPCMultistepScheduler(solver_type="bh2",
predict_x0=True, lower_order_final=True): the first step is first order, each
later step raises the order by one up to ``order``, and the last steps fall
back so that a step never uses more history than there are steps left; the
final step lands on sigma' = 0 and returns m0. The corrector uses the order
of the predictor step it corrects. ``tools/compare_diffusers_samplers.py``
checks whole trajectories against that scheduler.

The state keeps, per row, the last ``order`` x_0 predictions and their
log-SNRs, so it rides in the carry of the compiled ``lax.scan`` loop.
"""

from __future__ import annotations

from typing import NamedTuple, Optional, Tuple

import jax.numpy as jnp

from glide_jax.diffusion.prediction import CondFn, DenoisedFn, ModelFn, guided_prediction
from glide_jax.diffusion.schedule import Schedule
from glide_jax.errors import InputError

UNIPC_ORDERS = (1, 2, 3)


class UniPCState(NamedTuple):
    """UniPC's memory: the last few x_0 predictions (most recent first) and where they were made."""

    x0_history: jnp.ndarray  # [order, B, ...] x_0 predictions of the last `order` points
    lambda_history: jnp.ndarray  # [order, B] the log-SNR of each of those points
    last_sample: jnp.ndarray  # [B, ...] the (corrected) sample at the most recent point
    last_alpha: jnp.ndarray  # [B] alpha of the most recent point
    last_sigma: jnp.ndarray  # [B] sigma of the most recent point
    last_order: jnp.ndarray  # [B] int32 order of the predictor step taken from that point
    count: jnp.ndarray  # [B] int32 number of points held (0 before the first step, at most `order`)

    @classmethod
    def init(cls, x: jnp.ndarray, order: int) -> "UniPCState":
        if order not in UNIPC_ORDERS:
            raise InputError(f"UniPC order must be one of {UNIPC_ORDERS}, got {order}")
        b = x.shape[0]
        zeros_b = jnp.zeros((b,), jnp.float32)
        ints_b = jnp.zeros((b,), jnp.int32)
        return cls(jnp.zeros((order,) + x.shape, x.dtype), jnp.zeros((order, b), jnp.float32), jnp.zeros_like(x),
                   zeros_b + 1, zeros_b + 1, ints_b, ints_b)


def _phi_weights(h: jnp.ndarray, order: int) -> Tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
    """For step sizes h [B]: ``(e^{-h} - 1, B(h), [B, order] right-hand sides b_1..b_order)``."""
    hh = -h
    h_phi_1 = jnp.expm1(hh)
    b_h = h_phi_1
    h_phi_k = h_phi_1 / hh - 1
    factorial = 1.0
    rhs = []
    for i in range(1, order + 1):
        rhs.append(h_phi_k * factorial / b_h)
        factorial *= i + 1
        h_phi_k = h_phi_k / hh - 1 / factorial
    return h_phi_1, b_h, jnp.stack(rhs, axis=-1)


def _vandermonde_solve(nodes: jnp.ndarray, rhs: jnp.ndarray) -> jnp.ndarray:
    """Solve sum_j nodes_j^i rho_j = rhs_i (i = 0..n-1) per row; nodes, rhs: [B, n] with n <= 3.

    Closed form through the Lagrange basis: rho_j = sum_i l_{j,i} rhs_i, where
    l_{j,i} are the coefficients of prod_{k != j} (x - x_k) / (x_j - x_k).
    Elementwise arithmetic, so the per-step solves compile to a few fused
    operations instead of a batched LU factorisation.
    """
    n = nodes.shape[-1]
    out = []
    for j in range(n):
        coeffs = [jnp.ones_like(nodes[:, 0])]  # polynomial coefficients, lowest degree first
        denominator = jnp.ones_like(nodes[:, 0])
        for k in range(n):
            if k == j:
                continue
            shifted = [jnp.zeros_like(coeffs[0])] + coeffs  # x * poly
            scaled = [-nodes[:, k] * c for c in coeffs] + [jnp.zeros_like(coeffs[0])]  # -x_k * poly
            coeffs = [a + b for a, b in zip(shifted, scaled)]
            denominator = denominator * (nodes[:, j] - nodes[:, k])
        out.append(sum(c * rhs[:, i] for i, c in enumerate(coeffs)) / denominator)
    return jnp.stack(out, axis=-1)


def _weights(r: jnp.ndarray, rhs: jnp.ndarray, order: jnp.ndarray, max_order: int, corrector: bool) -> jnp.ndarray:
    """Weights [B, max_order] for the differences D_1..D_{max_order-1} and (corrector only) the new point's D_t.

    ``order`` [B] selects, per row, the rule of that order; the rules of every
    order up to ``max_order`` are computed and the right one picked, so the
    order can vary inside the compiled loop.
    """
    b = r.shape[0]
    out = jnp.zeros((b, max_order), r.dtype)
    for o in range(1, max_order + 1):
        w = jnp.zeros((b, max_order), r.dtype)
        if corrector:
            if o == 1:
                w = w.at[:, -1].set(0.5)
            else:
                rho = _vandermonde_solve(jnp.concatenate([r[:, : o - 1], jnp.ones((b, 1), r.dtype)], -1), rhs[:, :o])
                w = w.at[:, : o - 1].set(rho[:, :-1]).at[:, -1].set(rho[:, -1])
        elif o == 2:
            w = w.at[:, 0].set(0.5)
        elif o >= 3:
            w = w.at[:, : o - 1].set(_vandermonde_solve(r[:, : o - 1], rhs[:, : o - 1]))
        out = jnp.where((order == o)[:, None], w, out)
    return out


def _uni_update(x, alpha_0, sigma_0, lambda_0, alpha_t, sigma_t, lambda_t, m0, older, lambda_older, order,
                model_t=None):
    """One UniP (``model_t`` None) or UniC step from the point (alpha_0, sigma_0, lambda_0), sample x, prediction m0.

    ``older`` [max_order-1, B, ...] are earlier x_0 predictions (most recent
    first) at log-SNRs ``lambda_older``; rows use the first ``order - 1`` of them.
    """
    max_order = older.shape[0] + 1
    bshape = (-1,) + (1,) * (x.ndim - 1)
    h = lambda_t - lambda_0
    k = jnp.arange(1, max_order)[:, None]
    used = k < order[None, :]  # [max_order-1, B]
    # Unused entries get stand-in nodes -1, -2, ... so every Vandermonde system stays regular.
    r = jnp.where(used, (lambda_older - lambda_0[None]) / h[None], -k.astype(jnp.float32))
    h_phi_1, b_h, rhs = _phi_weights(h, max_order)
    w = _weights(r.T, rhs, order, max_order, corrector=model_t is not None)
    x_new = (sigma_t / sigma_0).reshape(bshape) * x - (alpha_t * h_phi_1).reshape(bshape) * m0
    residual = jnp.zeros_like(x)
    for i in range(max_order - 1):
        diff = (older[i] - m0) / r[i].reshape(bshape)
        residual = residual + jnp.where(used[i].reshape(bshape), w[:, i].reshape(bshape) * diff, 0.0)
    if model_t is not None:
        residual = residual + w[:, -1].reshape(bshape) * (model_t - m0)
    return x_new - (alpha_t * b_h).reshape(bshape) * residual


def unipc_step(
    s: Schedule,
    model_fn: ModelFn,
    x: jnp.ndarray,
    t: jnp.ndarray,
    state: UniPCState,
    *,
    clip_denoised: bool = True,
    denoised_fn: Optional[DenoisedFn] = None,
    cond_fn: Optional[CondFn] = None,
) -> Tuple[jnp.ndarray, jnp.ndarray, UniPCState]:
    """One UniPC step at index t: correct x with the new model evaluation, then predict the previous index.

    The solver order is the length of ``state.x0_history`` (see
    ``UniPCState.init``). Returns ``(x_next, pred_xstart, new_state)``.
    """
    max_order = state.x0_history.shape[0]
    x0 = guided_prediction(s, model_fn, x, t, clip_denoised, denoised_fn, cond_fn).pred_xstart
    alpha = jnp.take(s.sqrt_alphas_cumprod, t)
    sigma = jnp.take(s.sqrt_one_minus_alphas_cumprod, t)
    lam = jnp.log(alpha) - jnp.log(sigma)
    bshape = (-1,) + (1,) * (x.ndim - 1)

    corrected = _uni_update(state.last_sample, state.last_alpha, state.last_sigma, state.lambda_history[0], alpha,
                            sigma, lam, state.x0_history[0], state.x0_history[1:], state.lambda_history[1:],
                            state.last_order, model_t=x0)
    x = jnp.where((state.count > 0).reshape(bshape), corrected, x)

    history = jnp.concatenate([x0[None], state.x0_history[:-1]], axis=0)
    lambdas = jnp.concatenate([lam[None], state.lambda_history[:-1]], axis=0)
    order = jnp.minimum(jnp.minimum(max_order, t + 1), state.count + 1).astype(jnp.int32)

    ab_next = jnp.take(s.alphas_cumprod_prev, t)
    alpha_n, sigma_n = jnp.sqrt(ab_next), jnp.sqrt(1 - ab_next)
    final = sigma_n <= 0
    # The final step lands on sigma' = 0 (lambda' = inf), where the update is m0 itself.
    lam_n = jnp.where(final, lam + 1, jnp.log(alpha_n) - jnp.log(jnp.where(final, 1.0, sigma_n)))
    predicted = _uni_update(x, alpha, sigma, lam, alpha_n, sigma_n, lam_n, x0, history[1:], lambdas[1:], order)
    x_next = jnp.where(final.reshape(bshape), x0, predicted)
    new_state = UniPCState(history, lambdas, x, alpha, sigma, order, jnp.minimum(state.count + 1, max_order))
    return x_next, x0, new_state
