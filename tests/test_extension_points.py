"""The seams are real: a new model family, training task and sampler, each registered in this file only,
train through ``experiments.train``'s code path, checkpoint, load through the resolver and sample through
``Pipeline`` without any library file knowing about them.

The toy family is a two-layer convolutional denoiser conditioned on the timestep and on the mean of its
caption's token embeddings; it predicts the noise and (as GLIDE's U-Nets do) a variance channel per colour.
The toy sampler is a deterministic DDIM step. Nothing here asks for image quality: two training steps.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Dict, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.tree_util import Partial
import numpy as np
import pytest

from experiments.common import main as train_main
from glide_jax.config import DiffusionConfig
from glide_jax.diffusion import samplers
from glide_jax.diffusion.gaussian import extract, predict_xstart_from_eps, q_sample
from glide_jax.diffusion.losses import sample_timesteps
from glide_jax.diffusion.schedule import make_schedule
from glide_jax.family import ModelFamily, family_of, register_family
from glide_jax.sampling.loading import resolve
from glide_jax.sampling.options import StageOptions
from glide_jax.sampling.pipeline import Pipeline
from glide_jax.train import state as state_lib
from glide_jax.train.experiment import DataConfig, ExperimentConfig, MeshConfig, TrainConfig
from glide_jax.train.tasks import Task, register_task


@dataclasses.dataclass(frozen=True)
class ToyDenoiserConfig:
    """A denoiser small enough to train in a test."""

    image_size: int = 16  # side of the images, pixels
    width: int = 16  # channels of the hidden convolution
    text_ctx: int = 8  # caption tokens
    n_vocab: int = 96  # token embeddings (the sentencepiece vocabulary learnt from the captions)
    diffusion: DiffusionConfig = DiffusionConfig(steps=50, noise_schedule="squaredcos_cap_v2")  # its noise schedule
    dtype: str = "float32"  # compute dtype


def _timestep_features(t, dim: int):
    freqs = jnp.exp(-math.log(1000.0) * jnp.arange(dim // 2) / (dim // 2))
    args = t.astype(jnp.float32)[:, None] * freqs[None]
    return jnp.concatenate([jnp.sin(args), jnp.cos(args)], axis=-1)


class ToyDenoiser(nn.Module):
    config: ToyDenoiserConfig

    @nn.compact
    def __call__(self, x, t, tokens, mask):
        c = self.config
        words = nn.Embed(c.n_vocab, c.width)(tokens) * mask[..., None]
        caption = words.sum(1) / jnp.maximum(mask.sum(1, keepdims=True), 1)
        condition = nn.Dense(c.width)(_timestep_features(t, c.width)) + caption
        h = nn.Conv(c.width, (3, 3))(x) + condition[:, None, None, :]
        return nn.Conv(2 * x.shape[-1], (3, 3))(nn.silu(h))


def _toy_apply(config, params, tokens, mask, x, t):
    return ToyDenoiser(config).apply(params, x, t, tokens, mask)


class ToyFamily(ModelFamily):
    name = "toy-denoiser"
    config_type = ToyDenoiserConfig
    default_tokenizer = "sentencepiece"
    text_keys = ("tokens", "mask")
    samples_images = True

    def module(self, config):
        return ToyDenoiser(config)

    def image_size(self, config):
        return config.image_size

    def text_length(self, config):
        return config.text_ctx

    def vocab_size(self, config):
        return config.n_vocab

    def example_inputs(self, config, batch=1):
        s = config.image_size
        return (jnp.zeros((batch, s, s, 3)), jnp.zeros((batch,), jnp.int32),
                jnp.zeros((batch, config.text_ctx), jnp.int32), jnp.ones((batch, config.text_ctx), bool)), {}

    def encode_prompts(self, tokenizer, config, prompts: Sequence[str]) -> Tuple[np.ndarray, np.ndarray]:
        tokens, mask = tokenizer.encode_batch(list(prompts), config.text_ctx)
        return np.asarray(tokens, np.int32), np.asarray(mask, bool)

    def diffusion_config(self, config):
        return config.diffusion

    def model_fn(self, config, params, tokens, mask, **cond):
        return Partial(functools_partial_apply(config), params, jnp.asarray(tokens), jnp.asarray(mask))

    def make_train_step(self, model_config, train_config, tx, *, mesh=None):
        model, schedule = ToyDenoiser(model_config), make_schedule(model_config.diffusion)

        def loss_fn(params, batch, t, noise):
            x_t = q_sample(schedule, batch["image"], t, noise)
            out = model.apply({"params": params}, x_t, t, batch["tokens"], batch["mask"])
            return jnp.mean((out[..., :3] - noise) ** 2)

        def step(state, batch):
            k_t, k_noise = jax.random.split(state_lib.step_key(state))
            t, _ = sample_timesteps(k_t, batch["image"].shape[0], schedule.num_timesteps)
            noise = jax.random.normal(k_noise, batch["image"].shape)
            loss, grads = jax.value_and_grad(loss_fn)(state.params, batch, t, noise)
            state, info = state_lib.apply_gradients(state, grads, loss, tx,
                                                    state_lib.ema_decay(train_config, state.step))
            return state, dict(info, loss=loss, skipped=state.skipped)

        return step


_APPLY_CACHE: Dict[Any, Any] = {}


def functools_partial_apply(config):
    """One stable apply function per config, so the sampling loop compiles once per config."""
    if config not in _APPLY_CACHE:
        _APPLY_CACHE[config] = lambda params, tokens, mask, x, t: _toy_apply(config, params, tokens, mask, x, t)
    return _APPLY_CACHE[config]


def _toy_ddim_step(s, model_fn, x, t, state, noise, eta, options):
    """Deterministic DDIM from the raw noise prediction (no thresholding): x_{t-1} from x_t."""
    eps = model_fn(x, jnp.take(s.timestep_map, t))[..., :3]
    x0 = jnp.clip(predict_xstart_from_eps(s, x, t, eps), -1, 1)
    ab_prev = extract(s.alphas_cumprod_prev, t, x.ndim)
    return x0 * jnp.sqrt(ab_prev) + jnp.sqrt(1 - ab_prev) * eps, state


TOY = register_family(ToyFamily())
register_task(Task("toy-denoise", TOY.name, description="the toy denoiser of the extension-point test"))
TOY_SAMPLER = samplers.register_sampler(samplers.Sampler("toy-ddim", _toy_ddim_step, noise="none",
                                                         description="deterministic DDIM without thresholding"))


def toy_experiment() -> ExperimentConfig:
    return ExperimentConfig(
        task="toy-denoise",
        name="toy",
        model=ToyDenoiserConfig(),
        data=DataConfig(source="shapes", caption_dropout=0.0, tokenizer="sentencepiece", tokenizer_captions=64),
        train=TrainConfig(steps=2, batch_size=4, lr=1e-3, checkpoint_every=1, async_checkpoint=False,
                          sample_every=-1, log_every=1),
        mesh=MeshConfig(data=1),
    )


def test_a_toy_family_task_and_sampler_train_save_load_and_sample(tmp_path, capsys):
    config_file = tmp_path / "toy_config.py"
    config_file.write_text("from test_extension_points import toy_experiment\n\n\n"
                           "def get_config():\n    return toy_experiment()\n")
    workdir = tmp_path / "run"
    status = train_main(None, "toy", ["--config", str(config_file), "--workdir", str(workdir),
                                      "--set", "data.shapes.num_examples=32"])
    assert status == 0, capsys.readouterr().err
    assert "done: step 2" in capsys.readouterr().out

    loaded = resolve(str(workdir))
    assert family_of(loaded.config) is TOY and loaded.config == ToyDenoiserConfig()
    assert loaded.tokenizer.n_vocab <= loaded.config.n_vocab

    pipe = Pipeline(loaded)
    options = StageOptions("toy-ddim", 5)
    first = pipe.generate(["a red circle", "a blue square"], seed=3, base=options, upsample=None)
    again = pipe.generate(["a blue square"], seed=3, first_index=1, base=options, upsample=None)
    assert first.shape == (2, 16, 16, 3) and first.dtype == np.uint8
    np.testing.assert_array_equal(first[1], again[0])  # per-image seeds hold for a new family and sampler too
    assert first.std() > 0


def test_registered_sampler_is_offered_and_checked():
    assert "toy-ddim" in samplers.sampler_names()
    StageOptions("toy-ddim", 3).validate("base")
    with pytest.raises(ValueError, match="unknown sampler 'toy-dim'"):
        StageOptions("toy-dim", 3).validate("base")
    with pytest.raises(ValueError, match="registered already"):
        register_family(ToyFamily())
