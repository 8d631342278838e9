"""The sampling pipeline and CLI on tiny random models: shapes, determinism, compile-once, editing, errors."""

import jax
import numpy as np
import pytest
from conftest import require_fixture
from flax.core import meta

from glide_jax.config import get_preset
from glide_jax.diffusion import samplers
from glide_jax.hub.model_dir import save_model_dir
from glide_jax.family import init_params
from glide_jax.sampling.loaded_model import LoadedModel
from glide_jax.sampling.options import StageOptions
from glide_jax.sampling.pipeline import Pipeline
from glide_jax.sampling.rewrites import PromptRewrites
from model_files import rewrites_to_json

FAST = StageOptions("ddim", 4)
UP = StageOptions("ddpm", "3", 0.997)


@pytest.fixture(scope="module")
def bpe():
    from glide_jax.tokenizers.glide_bpe import GlideBPETokenizer

    return GlideBPETokenizer.load(require_fixture("tokenizer"))


def _random(name, tokenizer, seed=1):
    cfg = get_preset(name)
    return LoadedModel(cfg, {"params": meta.unbox(init_params(cfg, jax.random.key(seed)))}, tokenizer)


@pytest.fixture(scope="module")
def pipe(bpe):
    return Pipeline(_random("tiny-base", bpe), _random("tiny-upsample", bpe))


def test_generate_shapes_determinism_and_single_compile(pipe):
    a = pipe.generate(["a red circle", "a blue square"], seed=0, base=FAST, upsample=UP)
    assert a.shape == (2, 64, 64, 3) and a.dtype == np.uint8
    size = samplers._run_loop._cache_size()
    b = pipe.generate(["a green triangle", "a"], seed=5, base=FAST, upsample=UP)
    assert samplers._run_loop._cache_size() == size, "other prompts and seed must reuse the compiled loops"
    c = pipe.generate(["a red circle", "a blue square"], seed=0, base=FAST, upsample=UP)
    np.testing.assert_array_equal(a, c)
    assert np.abs(a.astype(int) - b.astype(int)).mean() > 1.0


def test_batches_are_padded_to_one_shape(pipe):
    out = pipe.generate(["a", "b", "c"], seed=0, base=FAST, upsample=None, batch_size=2)
    assert out.shape == (3, 32, 32, 3)
    # the first two rows are the same as a batch of exactly those two prompts
    two = pipe.generate(["a", "b"], seed=0, base=FAST, upsample=None, batch_size=2)
    np.testing.assert_array_equal(out[:2], two)


@pytest.mark.slow  # several edits (~9 s)
def test_edit_strength_controls_distance_to_init(pipe):
    rng = np.random.default_rng(0)
    init = (rng.random((32, 32, 3)) * 255).astype(np.uint8)
    near = pipe.generate("a red circle", seed=0, base=StageOptions("ddim", 20), upsample=None,
                         init_image=init, strength=0.05)
    far = pipe.generate("a red circle", seed=0, base=StageOptions("ddim", 20), upsample=None,
                        init_image=init, strength=1.0)
    d_near = np.abs(near[0].astype(int) - init).mean()
    d_far = np.abs(far[0].astype(int) - init).mean()
    assert d_near < 12 and d_far > 3 * d_near, (d_near, d_far)


@pytest.mark.slow  # compiles the edit path (~14 s)
def test_truncated_start_is_an_edit_of_the_canvas(pipe):
    grey = (200, 200, 200)
    opts = StageOptions("ddim", 20, start=0.5, canvas=grey)
    out = pipe.generate("a red circle", seed=3, base=opts, upsample=None)
    canvas = np.full((32, 32, 3), 200, np.uint8)
    edit = pipe.generate("a red circle", seed=3, base=StageOptions("ddim", 20), upsample=None,
                         init_image=canvas, strength=0.5)
    np.testing.assert_array_equal(out, edit)
    near = pipe.generate("a red circle", seed=3, base=StageOptions("ddim", 20, start=0.05, canvas=grey), upsample=None)
    full = pipe.generate("a red circle", seed=3, base=StageOptions("ddim", 20, canvas=grey), upsample=None)
    assert np.abs(near.astype(int) - 200).mean() < 12 < np.abs(full.astype(int) - 200).mean()


def test_sampling_json_carries_the_truncated_start():
    from glide_jax.sampling.advice import SamplingAdvice

    advice = SamplingAdvice.from_json(
        {"sampler": "ddpm", "steps": 50, "start": 0.9, "canvas": [200, 200, 200], "guidance_scale": 2.0})
    assert advice.stage == StageOptions("ddpm", 50, start=0.9, canvas=(200, 200, 200))
    assert advice.guidance_scale == 2.0 and not advice.prompt_rewrites
    advice.stage.validate("base")


def test_cli_flags_keep_the_models_truncated_start():
    from glide_jax.sampling.options import stage_with

    rec = StageOptions("ddpm", 50, start=0.85, canvas=(200, 200, 200))
    m = LoadedModel(None, None, None, sampling=rec)
    assert stage_with(m, FAST, sampler="ddim", steps="20") == StageOptions("ddim", 20, start=0.85, canvas=(200, 200, 200))
    assert stage_with(m, FAST, start=1.0) == StageOptions("ddpm", 50, start=1.0, canvas=(200, 200, 200))


def test_a_step_count_keeps_a_students_spacing():
    """A distilled student recommends the grid it was trained on; a bare count (the CLI's ``--steps 2``, the
    demo's slider) keeps that grid with the new count, an explicit spacing replaces it."""
    from glide_jax.sampling.options import stage_with, step_count

    rec = StageOptions("stochastic_fewstep", "trailing4:875", start=0.99, canvas=(200, 200, 200))
    m = LoadedModel(None, None, None, sampling=rec)
    assert stage_with(m, FAST, steps="2").steps == "trailing2:875"
    assert stage_with(m, FAST, steps=8).steps == "trailing8:875"
    assert stage_with(m, FAST, steps="logsnr6").steps == "logsnr6"
    assert stage_with(LoadedModel(None, None, None, sampling=StageOptions("ddim", "trailing10")), FAST,
                      steps=5).steps == "trailing5"
    assert [step_count(s) for s in (20, "trailing4:875", "karras12", "fast27", "10,10")] == [20, 4, 12, None, None]


def test_inpainting_keeps_the_known_region(bpe):
    pipe = Pipeline(_random("tiny-inpaint", bpe))
    rng = np.random.default_rng(1)
    image = (rng.random((32, 32, 3)) * 255).astype(np.uint8)
    mask = np.ones((32, 32), bool)
    mask[8:24, 8:24] = False  # fill in the centre
    out = pipe.generate("a red circle", seed=0, base=StageOptions("ddpm", 5), upsample=None,
                        inpaint_image=image, inpaint_mask=mask)[0]
    keep = mask[..., None].repeat(3, -1)
    assert np.abs(out[keep].astype(int) - image[keep]).max() <= 1
    assert np.abs(out[~keep].astype(int) - image[~keep]).mean() > 10


@pytest.mark.slow  # inpainting at two resolutions (~9 s)
def test_inpainting_through_a_plain_upsampler_keeps_the_known_region(bpe):
    """Without an inpainting upsampler the known pixels are still pasted into every upsampler x0."""
    up = _random("tiny-upsample", bpe)
    pipe = Pipeline(_random("tiny-inpaint", bpe), up)
    size = up.config.unet.image_size
    rng = np.random.default_rng(2)
    image = (rng.random((size, size, 3)) * 255).astype(np.uint8)
    mask = np.ones((size, size), bool)
    mask[:, size // 2:] = False
    out = pipe.generate("a red circle", seed=0, base=StageOptions("ddpm", 3), upsample=UP,
                        inpaint_image=image, inpaint_mask=mask)[0]
    assert out.shape == (size, size, 3)
    keep = mask[..., None].repeat(3, -1)
    assert np.abs(out[keep].astype(int) - image[keep]).max() <= 1
    assert np.abs(out[~keep].astype(int) - image[~keep]).mean() > 10


@pytest.mark.slow  # compiles a CLIP-guided loop (~16 s)
def test_clip_guidance_changes_samples(bpe):
    from glide_jax.tokenizers.clip_bpe import ClipTokenizer

    cfg = get_preset("tiny-clip")
    clip = LoadedModel(cfg, {"params": meta.unbox(init_params(cfg, jax.random.key(3)))},
                       ClipTokenizer.load(require_fixture("tokenizer")))
    pipe = Pipeline(_random("tiny-base", bpe), clip=clip)
    opts = StageOptions("ddpm", 4)
    weak = pipe.generate("a red circle", seed=0, base=opts, upsample=None, clip_guidance_scale=0.001)
    strong = pipe.generate("a red circle", seed=0, base=opts, upsample=None, clip_guidance_scale=500.0)
    assert strong.shape == (1, 32, 32, 3)
    assert np.abs(strong.astype(int) - weak.astype(int)).mean() > 0.5


RIGHT_OF = PromptRewrites.from_json([{"pattern": "(?P<a>an? .+?) to the right of (?P<b>an? .+)",
                                     "replacement": r"\g<b> to the left of \g<a>", "note": "trained on left only"}])


def test_prompts_are_rewritten_by_the_base_models_rules_or_the_callers(pipe, monkeypatch):
    import dataclasses

    base = pipe.base  # the module's model: its sampling loop is already compiled for this batch shape
    ruled = Pipeline(dataclasses.replace(base, prompt_rewrites=RIGHT_OF))
    prompts = ["a red circle to the right of a blue square", "a red circle above a blue square"]
    said = ["a blue square to the left of a red circle", "a red circle above a blue square"]
    assert ruled.rewrite(prompts) == said and Pipeline(base).rewrite(prompts) == prompts
    shouted = Pipeline(dataclasses.replace(base, prompt_rewrites=RIGHT_OF), prompt_rewriter=str.upper)
    assert shouted.rewrite(prompts) == [p.upper() for p in prompts]  # the caller's rewriter replaces the rules
    encoded = []
    real = ruled.base.tokens
    monkeypatch.setattr(ruled.base, "tokens", lambda p: encoded.append(list(p)) or real(p))
    out = ruled.generate(prompts, seed=0, base=FAST, upsample=None)
    assert encoded[-1] == said + ["", ""]  # the conditional half of the guidance batch, then the unconditional
    np.testing.assert_array_equal(out, ruled.generate(said, seed=0, base=FAST, upsample=None, rewrite_prompts=False))
    ruled.generate(prompts, seed=0, base=FAST, upsample=None, rewrite_prompts=False)
    assert encoded[-1][:2] == prompts
    with pytest.raises(ValueError, match="must return strings"):
        Pipeline(base, prompt_rewriter=lambda p: None).rewrite(["a"])
    with pytest.raises(ValueError, match="prompt_rewriter must be a callable"):
        Pipeline(base, prompt_rewriter="upper")


def test_upsample_images(pipe):
    img = np.full((16, 16, 3), 128, np.uint8)
    out = pipe.upsample_images(["a grey square", "a"], img, seed=0, options=UP)
    assert out.shape == (2, 64, 64, 3)
    with pytest.raises(ValueError, match="canvas is for the base stage"):
        pipe.upsample_images(["a"], img, options=StageOptions("ddpm", 3, start=0.5, canvas=(0, 0, 0)))


@pytest.mark.slow  # one more upsampler compilation (~12 s)
def test_upsampler_truncated_start_begins_from_the_enlarged_input(pipe):
    """start < 1 for the upsampler: the chain starts from the bilinear enlargement of its input, noised."""
    rng = np.random.default_rng(2)
    img = (rng.random((16, 16, 3)) * 255).astype(np.uint8)
    enlarged = np.asarray(jax.image.resize(img.astype(np.float32), (64, 64, 3), "linear"))
    opts = lambda start: StageOptions("ddim", 20, start=start)
    near = pipe.upsample_images(["a"], img, seed=0, options=opts(0.05))
    full = pipe.upsample_images(["a"], img, seed=0, options=opts(1.0))
    d_near, d_full = (np.abs(x[0].astype(float) - enlarged).mean() for x in (near, full))
    assert d_near < 6 and d_full > 4 * d_near, (d_near, d_full)
    size = samplers._run_loop._cache_size()
    pipe.upsample_images(["b"], img, seed=1, options=opts(0.05))
    assert samplers._run_loop._cache_size() == size


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(prompts=[]), "prompts is empty"),
        (dict(guidance_scale=-1.0), "guidance_scale"),
        (dict(strength=0.0, init_image=np.zeros((32, 32, 3), np.uint8)), "strength"),
        (dict(base=StageOptions("euler", 4)), "unknown sampler 'euler'"),
        (dict(base=StageOptions("ddim", 4, start=0.0, canvas=(0, 0, 0))), r"start must be in \(0, 1\]"),
        (dict(base=StageOptions("ddim", 4, start=0.5)), "needs a canvas colour"),
        (dict(base=StageOptions("ddim", 4, canvas=(0, 300, 0))), "canvas must be three integers"),
        (dict(init_image=np.zeros((32, 32, 4), np.uint8)), r"RGB array of shape \[H, W, 3\]"),
        (dict(init_image=np.zeros((32, 40, 3), np.uint8)), "must be square"),
        (dict(inpaint_image=np.zeros((32, 32, 3), np.uint8), inpaint_mask=np.ones((16, 16))), "does not match the image"),
        (dict(inpaint_image=np.zeros((32, 32, 3), np.uint8), inpaint_mask=np.full((32, 32), 0.5)), "mask values"),
        (dict(inpaint_image=np.zeros((32, 32, 3), np.uint8), inpaint_mask=np.ones((32, 32))), "not an inpainting model"),
        (dict(inpaint_image=np.zeros((32, 32, 3), np.uint8)), "both inpaint_image and inpaint_mask"),
        (dict(clip_guidance_scale=3.0), "needs a CLIP model"),
    ],
)
def test_bad_input_is_named(pipe, kwargs, match):
    kwargs = dict(kwargs)
    prompts = kwargs.pop("prompts", ["a"])
    kwargs.setdefault("base", FAST)
    with pytest.raises(ValueError, match=match):
        pipe.generate(prompts, upsample=None, **kwargs)


def test_cli_generate_writes_pngs_notes_rewrites_and_rejects_bad_input(tmp_path, monkeypatch, capsys, bpe):
    from glide_jax.cli import main

    monkeypatch.setenv("GLIDE_JAX_CACHE", str(require_fixture("tokenizer")))
    m = _random("tiny-base", bpe)
    save_model_dir(tmp_path / "model", m.config, m.params, sampling={"prompt_rewrites": rewrites_to_json(RIGHT_OF)})
    out = tmp_path / "out"
    code = main(["generate", "a red circle to the right of a blue square", "a blue square", "--model",
                 str(tmp_path / "model"), "--upsampler", "none", "--steps", "3", "--sampler", "ddim", "--out", str(out),
                 "--no-progress"])
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == ["generate_000.png", "generate_001.png", "generate_grid.png"]
    assert capsys.readouterr().err.splitlines() == [
        "note: drawing 'a red circle to the right of a blue square' as 'a blue square to the left of a red circle' "
        "(trained on left only)"]
    assert main(["generate", "x", "--model", str(tmp_path / "model"), "--upsampler", "none", "--guidance", "-3",
                 "--out", str(out)]) == 2
    assert main(["generate", "x", "--model", str(tmp_path / "missing")]) == 2
