"""The embedded default models: packaging, loading, and that the default command obeys its prompt."""

from __future__ import annotations

import dataclasses
from pathlib import Path
import shlex

import numpy as np
import pytest

from glide_jax.config import ClipConfig, ModelConfig
from glide_jax.hub import embedded, model_dir, registry
from glide_jax.sampling import loading
from model_files import read_card

REPO = Path(__file__).resolve().parents[1]


FAST_COMMAND = 'glide-jax generate "a red circle above a blue square" --model embedded-fast --n 4 --out out/'


def test_unknown_names_are_named():
    with pytest.raises(ValueError, match="unknown embedded model 'embedded-foo'"):
        embedded.embedded_dir("embedded-foo")
    with pytest.raises(FileNotFoundError, match="no model 'no-such-model'.*embedded-base.*base-inpaint.*workdir"):
        loading.resolve("no-such-model")


def test_an_embedded_model_can_start_a_training_run():
    # train.init_from=embedded-base (or the export folder's path) warm-starts from the shipped weights
    # and keeps their vocabulary; learning a new one would scramble the token embeddings.
    from glide_jax.train.experiment import load_config_file
    from glide_jax.train.warm_start import inherited_tokenizer

    cfg = load_config_file(f"{REPO}/projects/shapes/configs/base_three_relations.py:to_1250")
    assert inherited_tokenizer("embedded-base", "sentencepiece") == (
        f"sentencepiece:{embedded.embedded_dir('base') / 'tokenizer.model'}")
    by_name = registry.load_model("embedded-base")
    by_path = registry.load_model(str(embedded.embedded_dir("base")))
    assert by_name[0] == by_path[0] == cfg.model
    flat_a, flat_b = model_dir.flatten_tree(by_name[1]), model_dir.flatten_tree(by_path[1])
    assert flat_a.keys() == flat_b.keys() and all(np.array_equal(flat_a[k], flat_b[k]) for k in flat_a)


def test_shipped_models_are_complete_small_and_documented():
    total = sum(f.stat().st_size for f in embedded.ASSET_DIR.rglob("*") if f.is_file())
    assert total <= 30 * 2**20, f"embedded assets take {total / 2**20:.1f} MB"
    kinds = {}
    for name in embedded.NAMES:
        loaded = loading.resolve(name)
        config, params = loaded.config, loaded.params
        info = read_card(embedded.embedded_dir(name))
        assert info["steps"] > 0 and info["logged_wall_hours"] > 0 and info["num_params"] > 0
        assert (embedded.embedded_dir(name) / "tokenizer.model").exists()
        leaves = [np.asarray(x) for x in __import__("jax").tree.leaves(params)]
        assert all(x.dtype == np.float32 and np.isfinite(x).all() for x in leaves)
        assert sum(x.size for x in leaves) == info["num_params"]
        kinds[name] = config
    assert isinstance(kinds["embedded-clip"], ClipConfig)
    base, up, inp = kinds["embedded-base"], kinds["embedded-upsample"], kinds["embedded-inpaint"]
    assert all(isinstance(c, ModelConfig) for c in (base, up, inp))
    assert not base.unet.inpaint and inp.unet.inpaint and up.unet.super_res
    assert up.low_res_size == base.unet.image_size == inp.unet.image_size == kinds["embedded-clip"].image_size
    fast = kinds["embedded-fast"]  # the base distilled: the same network plus the guidance-weight input
    assert fast.unet.guidance_embed and not base.unet.guidance_embed
    assert dataclasses.replace(fast.unet, guidance_embed=False) == base.unet and fast.diffusion == base.diffusion


def test_the_fast_set_samples_its_base_in_a_few_self_guided_steps(tmp_path, monkeypatch):
    """``--model embedded-fast``: the distilled base recommends a few-step sampler, one evaluation per step
    (no unconditional half); the README's command for it writes four 64x64 images that pass the grader."""
    from PIL import Image
    from projects.shapes.grading import score

    from glide_jax.cli import main
    from glide_jax.sampling.options import step_count

    fast = loading.resolve("embedded-fast")
    card = read_card(embedded.embedded_dir("fast"))
    assert card["task"] == "distill-progressive" and card["config_file"].startswith("projects/shapes/configs/distill.py")
    stage = fast.sampling
    assert stage.sampler == "stochastic_fewstep" and step_count(stage.steps) <= 8 and fast.guidance_scale == 3.0
    rounds = card["config_file"].split(":")[-1]  # the round that made it: to_<its steps>
    assert stage.steps == f"trailing{rounds.removeprefix('to_')}:875" and stage.canvas == (200, 200, 200)
    assert loading.MODEL_SETS["embedded-fast"].base == "embedded-fast"
    prompt = "a red circle above a blue square"
    assert FAST_COMMAND in (Path(__file__).resolve().parents[1] / "README.md").read_text()
    monkeypatch.chdir(tmp_path)
    assert main(shlex.split(FAST_COMMAND)[1:]) == 0
    for index in range(4):
        image = np.asarray(Image.open(tmp_path / "out" / f"generate_00{index}.png").convert("RGB"))
        assert image.shape == (64, 64, 3)
        graded = score(image, prompt)
        assert graded["correct"], (index, {k: graded[k] for k in ("count", "color", "shape", "position")})


@pytest.mark.slow  # the whole default CLI run, base and upsampler (~19 s)
def test_default_generate_command_writes_pngs_and_the_prompt_reaches_the_model(tmp_path):
    """The generate command with the embedded default: 64x64 PNGs plus a grid, deterministic per seed,
    a different caption changes its own image only (the text path is wired, row by row), and the
    README prompt's image passes the shapes evaluator.

    How often images obey their captions is measured by ``projects.shapes.eval_shapes`` (its README);
    this checks the one image the README's command shows first.
    """
    from projects.shapes.grading import score
    from PIL import Image

    from glide_jax.cli import main

    def run(out, *prompts):
        assert main(["generate", *prompts, "--out", str(out), "--no-progress"]) == 0
        paths = sorted(out.glob("generate_0*.png"))
        assert len(paths) == len(prompts) and (out / "generate_grid.png").exists()
        return [np.asarray(Image.open(p).convert("RGB")) for p in paths]

    a = run(tmp_path / "a", "a red circle above a blue square", "a large green circle")
    b = run(tmp_path / "b", "a red circle above a blue square", "a small yellow triangle")
    assert all(im.shape == (64, 64, 3) and im.dtype == np.uint8 for im in a + b)
    np.testing.assert_array_equal(a[0], b[0])
    graded = score(a[0], "a red circle above a blue square")
    assert graded["correct"], {k: graded[k] for k in ("count", "color", "shape", "position")}
    assert np.abs(a[1].astype(int) - b[1].astype(int)).mean() > 5


# The README's quick-start command, exactly as written there, and the picture it shows.
QUICK_START = 'glide-jax generate "a red circle above a blue square" --n 4 --out out/'
QUICK_START_PICTURE = REPO / "docs" / "images" / "embedded_generate.png"
PICTURE_SCALE = 4  # the grid is enlarged by repeating each pixel 4x4
# Levels of 255 a fresh run may differ from the committed picture. The same compiled program on the
# same machine repeats the picture bit for bit; another program (another batch size) was measured to
# move pixels by at most one level (tests/test_sampling_controls.py), which another CPU's kernels may
# do too. A changed model or sampling default moves most pixels by far more.
PICTURE_TOLERANCE = 2


@pytest.mark.slow  # the README's command at its defaults, base and upsampler (~20 s)
def test_the_readme_s_generate_command_draws_the_quick_start_picture(tmp_path, monkeypatch):
    """The quick start's command writes four images and a grid, all four pass the shapes grader (as the
    README says), and its grid enlarged x4 is ``docs/images/embedded_generate.png``.

    ``GLIDE_JAX_WRITE_DOC_IMAGES=1`` writes the picture from this run instead (docs/images/README.md).
    """
    import os
    import shlex

    from PIL import Image
    from projects.shapes.grading import score

    from glide_jax.cli import main

    assert QUICK_START in (REPO / "README.md").read_text()
    argv = shlex.split(QUICK_START)
    monkeypatch.chdir(tmp_path)  # out/ is relative, as for a user
    assert main(argv[1:]) == 0
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == [f"generate_00{i}.png" for i in range(4)] + ["generate_grid.png"]
    prompt = argv[2]
    for i in range(4):
        graded = score(np.asarray(Image.open(out / f"generate_00{i}.png").convert("RGB")), prompt)
        assert graded["correct"], (i, {k: graded[k] for k in ("count", "color", "shape", "position")})

    grid = np.asarray(Image.open(out / "generate_grid.png").convert("RGB"))
    assert grid.shape == (134, 134, 3)  # 2 x 2 images of 64 pixels, 2 white pixels around each
    enlarged = grid.repeat(PICTURE_SCALE, axis=0).repeat(PICTURE_SCALE, axis=1)
    if os.environ.get("GLIDE_JAX_WRITE_DOC_IMAGES"):
        Image.fromarray(enlarged).save(QUICK_START_PICTURE)
    committed = np.asarray(Image.open(QUICK_START_PICTURE).convert("RGB"))
    assert committed.shape == enlarged.shape == (536, 536, 3)
    difference = np.abs(committed.astype(int) - enlarged.astype(int)).max()
    assert difference <= PICTURE_TOLERANCE, (
        f"docs/images/embedded_generate.png differs from what the README's command draws now by up to {difference} "
        "levels: rerun this test with GLIDE_JAX_WRITE_DOC_IMAGES=1 and look at the picture")


def test_exported_settings_carry_no_machine_paths():
    from projects.shapes.export_embedded import _portable

    assert _portable("sentencepiece:/home/me/runs/base/tokenizer.model") == "sentencepiece:tokenizer.model"
    assert _portable("sentencepiece:runs/base_embedded_fwd/tokenizer.model") == "sentencepiece:tokenizer.model"
    assert _portable("/data/tfds/shapes/default/1.0.0") == "1.0.0"
    assert _portable("sentencepiece") == "sentencepiece" and _portable("runs/base") == "runs/base"
    assert _portable(0.75) == 0.75


def test_the_shipped_bases_say_to_the_right_of_as_to_the_left_of_and_the_cli_notes_it():
    """The shipped base and inpainting models were trained on 'above', 'below' and 'to the left of' only
    (their training.json); their sampling.json rewrites 'A to the right of B' as 'B to the left of A'."""
    from glide_jax.cli import rewrite_notes
    from glide_jax.sampling.pipeline import Pipeline

    base = loading.resolve("embedded-base")
    trained = read_card(embedded.embedded_dir("base"))["data"]["relations"]
    assert trained == ["above", "below", "to the left of"]
    prompts = ["a red circle below a blue square", "a green square to the right of a red circle",
               "an oil painting of a corgi", "a red circle to the right of a large blue square"]
    said = ["a red circle below a blue square", "a red circle to the left of a green square",
            "an oil painting of a corgi", "a large blue square to the left of a red circle"]
    assert Pipeline(base).rewrite(prompts) == said
    notes = rewrite_notes(Pipeline(base), prompts)
    assert notes == [f"note: drawing {prompts[i]!r} as {said[i]!r} (the same scene in the relations the model was "
                     "trained on: 'above', 'below', 'to the left of')" for i in (1, 3)]
    assert rewrite_notes(Pipeline(base, prompt_rewriter=lambda p: p), prompts) == []
    inpaint = loading.resolve("embedded-inpaint")
    assert inpaint.prompt_rewrites == base.prompt_rewrites
    assert read_card(embedded.embedded_dir("inpaint"))["data"]["relations"] == trained
    assert not loading.resolve("embedded-upsample").prompt_rewrites
