"""Sampling controls: negative prompts, per-image seeds, the guidance interval, dynamic thresholding, re-ranking."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from glide_jax.diffusion import guidance
from glide_jax.diffusion.samplers import sample_loop
from glide_jax.diffusion.schedule import make_schedule
from glide_jax.sampling.loading import load_pipeline
from glide_jax.sampling.images import to_model
from glide_jax.sampling.options import StageOptions
from glide_jax.sampling.ranking import clip_scores

FAST = StageOptions("ddim", 4)
PROMPTS = ["a red circle", "a blue square", "a green triangle", "a small yellow circle"]


@pytest.fixture(scope="module")
def pipe():
    return load_pipeline("embedded-base", None, "embedded-clip")


def _generate(pipe, prompts, **kwargs):
    kwargs.setdefault("base", FAST)
    return pipe.generate(prompts, seed=7, upsample=None, **kwargs)


def test_a_negative_prompt_replaces_only_the_unconditional_captions(pipe, monkeypatch):
    seen = []
    tokens = type(pipe.base).tokens

    def spy(self, rows):
        seen.append(list(rows))
        return tokens(self, rows)

    monkeypatch.setattr(type(pipe.base), "tokens", spy)
    plain = _generate(pipe, PROMPTS[:2])
    empty = _generate(pipe, PROMPTS[:2], negative_prompt="")
    steered = _generate(pipe, PROMPTS[:2], negative_prompt=["a red square", "a blue circle"])
    assert seen == [PROMPTS[:2] + ["", ""]] * 2 + [PROMPTS[:2] + ["a red square", "a blue circle"]]
    np.testing.assert_array_equal(plain, empty)  # the default is today's behaviour, bit for bit
    assert np.abs(plain.astype(int) - steered).mean() > 3
    with pytest.raises(ValueError, match="one per prompt"):
        _generate(pipe, PROMPTS[:2], negative_prompt=["only one"])
    with pytest.raises(ValueError, match="guidance_scale other than 1"):
        _generate(pipe, PROMPTS[:2], negative_prompt="x", guidance_scale=1.0)


@pytest.mark.slow  # five sampling runs in three batch shapes (~15 s)
def test_each_image_depends_on_its_seed_and_index_not_on_the_batch(pipe):
    everything = _generate(pipe, PROMPTS, batch_size=2)
    # The same batch size: bit-identical whatever the chunking, the count or the other prompts.
    np.testing.assert_array_equal(_generate(pipe, PROMPTS[1:3], first_index=1, batch_size=2), everything[1:3])
    np.testing.assert_array_equal(_generate(pipe, [PROMPTS[3], "a large green square"], first_index=3,
                                            batch_size=2)[0], everything[3])
    # Another batch size compiles another program: equal to float rounding (at most one level of 255).
    alone = _generate(pipe, PROMPTS[2:3], first_index=2, batch_size=1)
    assert np.abs(alone[0].astype(int) - everything[2]).max() <= 1
    together = _generate(pipe, PROMPTS)
    assert np.abs(together.astype(int) - everything).max() <= 1 and (together != everything).mean() < 0.01
    assert np.abs(everything[0].astype(int) - _generate(pipe, PROMPTS[:1], first_index=1)[0]).mean() > 3


def _counting_model(counter):
    def model_fn(x, t):
        jax.debug.callback(lambda rows: counter.append(int(rows)), x.shape[0])
        eps = 0.1 * x
        return jnp.concatenate([eps, jnp.zeros_like(x)], axis=-1)

    return model_fn


def test_the_guidance_interval_runs_the_unconditional_half_only_inside_it():
    schedule = make_schedule("squaredcos_cap_v2", 1000, respacing="10")
    x_T = jax.random.normal(jax.random.key(0), (4, 8, 8, 3))  # 2 conditional + 2 unconditional rows
    low, high = 300, 600
    inside = int(np.sum((np.asarray(schedule.timestep_map) >= low) & (np.asarray(schedule.timestep_map) <= high)))
    counted = []
    model = _counting_model(counted)
    wrapped = guidance.interval_guidance(model, model, 3.0, low, high)
    sample_loop(schedule, wrapped, x_T=x_T, sampler="ddim")
    assert 0 < inside < 10
    assert sorted(counted) == [2] * (10 - inside) + [4] * inside  # half the rows outside the interval
    # Over the whole chain it is plain classifier-free guidance.
    full = sample_loop(schedule, guidance.classifier_free_guidance(model, 3.0), x_T=x_T, sampler="ddim")
    everywhere = sample_loop(schedule, guidance.interval_guidance(model, model, 3.0, 0, 999), x_T=x_T,
                             sampler="ddim")
    np.testing.assert_allclose(everywhere, full, atol=1e-6)


@pytest.mark.slow  # four sampling runs (~8 s)
def test_a_stage_s_guidance_interval_is_the_default_and_0_1_guides_every_step(pipe):
    recommended = StageOptions("ddim", 4, guidance_interval=[0.5, 1])  # as sampling.json gives it
    assert recommended.guidance_interval == (0.5, 1.0)
    np.testing.assert_array_equal(_generate(pipe, PROMPTS[:2], base=recommended),
                                  _generate(pipe, PROMPTS[:2], guidance_interval=(0.5, 1.0)))
    np.testing.assert_array_equal(_generate(pipe, PROMPTS[:2], base=recommended, guidance_interval=(0, 1)),
                                  _generate(pipe, PROMPTS[:2]))
    with pytest.raises(ValueError, match="0 <= low < high <= 1"):
        StageOptions.from_dict({"sampler": "ddpm", "guidance_interval": [0.7, 0.2]})
    with pytest.raises(ValueError, match="upsample: guidance_interval is for the base stage"):
        StageOptions("ddpm", 10, guidance_interval=(0.5, 1.0)).validate("upsample")


@pytest.mark.slow  # three more sampling compilations
def test_the_pipeline_guidance_interval_changes_samples_and_checks_its_bounds(pipe):
    plain = _generate(pipe, PROMPTS[:2])
    limited = _generate(pipe, PROMPTS[:2], guidance_interval=(0.2, 0.7))
    assert np.abs(plain.astype(int) - limited).mean() > 1
    np.testing.assert_array_equal(_generate(pipe, PROMPTS[:2], guidance_interval=(0.0, 1.0)), plain)
    with pytest.raises(ValueError, match="0 <= low < high <= 1"):
        _generate(pipe, PROMPTS[:2], guidance_interval=(0.8, 0.2))


def test_dynamic_thresholding_rescales_by_the_quantile_and_leaves_small_values_alone():
    x0 = jnp.asarray(np.linspace(-3.0, 3.0, 2 * 100).reshape(2, 10, 10, 1), jnp.float32)
    out = np.asarray(guidance.dynamic_threshold_fn(0.9)(x0))
    s = np.quantile(np.abs(np.asarray(x0).reshape(2, -1)), 0.9, axis=1)
    np.testing.assert_allclose(out, np.clip(np.asarray(x0), -s[:, None, None, None], s[:, None, None, None])
                               / s[:, None, None, None], rtol=1e-5, atol=1e-6)
    assert np.abs(out).max() <= 1.0 + 1e-6
    small = jnp.full((1, 4, 4, 3), 0.5)
    np.testing.assert_array_equal(guidance.dynamic_threshold_fn(0.995)(small), small)
    with pytest.raises(ValueError, match="quantile"):
        guidance.dynamic_threshold_fn(1.5)


@pytest.mark.slow  # a CLIP scorer and two sampling compilations
def test_re_ranking_keeps_the_highest_scoring_candidates_best_first(pipe):
    candidates = _generate(pipe, [PROMPTS[0]] * 4)
    scores = clip_scores(pipe.clip, to_model(candidates), [PROMPTS[0]] * 4)
    best = _generate(pipe, PROMPTS[0], candidates=4, keep=2)
    order = np.argsort(-scores)
    np.testing.assert_array_equal(best, candidates[order[:2]])
    assert scores[order[0]] > scores[order[1]] > scores[order[3]]
    with pytest.raises(ValueError, match="keep"):
        _generate(pipe, PROMPTS[0], candidates=2, keep=3)
    with pytest.raises(ValueError, match="needs a CLIP model"):
        load_pipeline("embedded-base", None).generate(PROMPTS[0], candidates=2, upsample=None)


@pytest.mark.slow  # the CLI with every control compiles its own loop
def test_the_cli_takes_every_control_and_prints_each_images_seed_and_index(tmp_path, capsys):
    from glide_jax.cli import main

    assert main(["generate", "a red circle", "--n", "2", "--first-index", "3", "--seed", "5", "--steps", "4",
                 "--sampler", "ddim", "--upsampler", "none", "--negative-prompt", "a blue square",
                 "--guidance-interval", "0.2", "0.8", "--dynamic-threshold", "0.995", "--candidates", "2",
                 "--out", str(tmp_path), "--no-progress"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == [f"{tmp_path / 'generate_000.png'}\tseed 5 index 3", f"{tmp_path / 'generate_001.png'}\tseed 5 index 4",
                     str(tmp_path / "generate_grid.png")]
    assert main(["generate", "a red circle", "--guidance-interval", "0.9", "0.1", "--out", str(tmp_path)]) == 2
    assert "0 <= low < high <= 1" in capsys.readouterr().err
