"""The web demo's request handlers, page helpers and server checks, without a browser.

The sampling tests run the embedded base model alone (no upsampler) with few
steps, so they compile one small loop; the browser tests
(tests/test_demo_browser.py) cover the full models through the page.
"""

from __future__ import annotations

import importlib.util
import warnings

import numpy as np
import pytest

from glide_jax.demo import handlers
from glide_jax.demo.app import painted_mask
from glide_jax.demo.models import load_models
from glide_jax.demo.progress import ForwardingProgress, install
from glide_jax.demo.server import DEMO_EXTRA, exposure_warnings, is_loopback
from glide_jax.errors import InputError
from glide_jax.sampling.progress import ProgressBar

FAST = dict(upsample=False, steps=6, sampler="ddim")  # base size, few steps: one small compilation


@pytest.fixture(scope="module")
def models():
    """The embedded models, with the demo's progress callback installed for this module only."""
    previous = ProgressBar._instance
    install()
    yield load_models("embedded")
    ProgressBar._instance = previous


def test_square_rgb_crops_to_the_centre_and_flattens_transparency():
    image = np.zeros((10, 16, 4), np.uint8)
    image[:, 4:12, :3] = 40
    image[:, 4:12, 3] = 255  # opaque centre, transparent sides
    square, notes = handlers.square_rgb(image, "sketch")
    assert square.shape == (10, 10, 3) and square.dtype == np.uint8
    assert (square[:, [0, -1]] == 255).all() and (square[:, 1:-1] == 40).all()
    assert len(notes) == 1 and "16x10" in notes[0] and "10x10" in notes[0]
    grey, notes = handlers.square_rgb(np.full((12, 12), 7, np.uint8), "image")
    assert grey.shape == (12, 12, 3) and notes == []


@pytest.mark.parametrize("image, words", [
    (None, "no image"),
    (np.zeros((4, 4, 3), np.uint8), "at least 8 pixels"),
    (np.zeros((16, 16, 3), np.float32), "8-bit RGB"),
    (np.zeros((16, 16, 2), np.uint8), "8-bit RGB"),
])
def test_square_rgb_refuses_what_is_not_a_usable_picture(image, words):
    with pytest.raises(ValueError, match=words):
        handlers.square_rgb(image, "image")


def test_painted_mask_keeps_everything_the_brush_did_not_touch():
    background = np.full((20, 20, 4), 255, np.uint8)
    layer = np.zeros((20, 20, 4), np.uint8)
    layer[5:9, 2:6, 3] = 255
    image, keep = painted_mask({"background": background, "layers": [layer], "composite": background})
    assert image.shape == (20, 20, 4) and keep.dtype == bool
    assert int((~keep).sum()) == 16 and not keep[5:9, 2:6].any()
    half = np.zeros((10, 10, 4), np.uint8)  # a layer at another size is scaled onto the picture
    half[:5, :, 3] = 255
    _, keep = painted_mask({"background": background, "layers": [half], "composite": background})
    assert int((~keep).sum()) == 200
    with pytest.raises(ValueError, match="no image"):
        painted_mask({"background": None, "layers": [], "composite": None})


@pytest.mark.parametrize("change, words", [
    (dict(prompt="   "), "prompt is empty"),
    (dict(n=0), r"number of images must be in \[1, 8\]"),
    (dict(n=2.5), "whole number"),
    (dict(seed=-1), r"seed must be in \[0, 4294967295\]"),
    (dict(steps=0), r"steps must be in \[1, 1000\]"),
    (dict(sampler="heun"), "unknown sampler 'heun'"),
    (dict(negative_prompt="a blue square", guidance=1.0), "negative prompt"),
    (dict(candidates=2), "needs a CLIP model"),
])
def test_generate_refuses_bad_forms_with_a_sentence(models, change, words):
    form = dict(prompt="a red circle", **FAST)
    form.update(change)
    with pytest.raises(ValueError, match=words):
        handlers.generate(models, handlers.GenerateForm(**form))


def test_inpaint_refuses_a_mask_that_covers_nothing_and_a_foreign_mask(models):
    image = np.full((32, 32, 3), 200, np.uint8)
    with pytest.raises(ValueError, match="covers nothing"):
        handlers.inpaint(models, handlers.InpaintForm("a red circle", image, np.ones((32, 32), bool)))
    with pytest.raises(ValueError, match="mask is 16x16 but the image is 32x32"):
        handlers.inpaint(models, handlers.InpaintForm("a red circle", image, np.zeros((16, 16), bool)))
    with pytest.raises(ValueError, match="prompt is empty"):
        handlers.inpaint(models, handlers.InpaintForm("", image, np.zeros((32, 32), bool)))


def test_generate_labels_each_image_and_index_does_not_depend_on_n(models):
    steps = []
    progress = ProgressBar.get()
    assert isinstance(progress, ForwardingProgress)
    with progress.reporting_to(lambda fraction, desc: steps.append((fraction, desc))):
        three = handlers.generate(models, handlers.GenerateForm("a red circle", n=3, seed=11, **FAST))
    one = handlers.generate(models, handlers.GenerateForm("a red circle", n=1, seed=11, **FAST))
    other = handlers.generate(models, handlers.GenerateForm("a red circle", n=1, seed=12, **FAST))
    assert [caption for _, caption in three.images] == ["seed 11, index 0", "seed 11, index 1", "seed 11, index 2"]
    assert three.images[0][0].shape == (32, 32, 3) and three.images[0][0].dtype == np.uint8
    np.testing.assert_array_equal(one.images[0][0], three.images[0][0])
    assert np.abs(three.images[0][0].astype(int) - three.images[1][0]).max() > 0
    assert np.abs(other.images[0][0].astype(int) - one.images[0][0]).max() > 0
    # the embedded base starts 0.85 of the way along its chain (its sampling.json): 5 of the 6 steps run
    assert len(steps) == 3 * 5 and steps[-1] == (1.0, "base 3-3/3: step 5/5")
    assert [fraction for fraction, _ in steps[:5]] == [0.2, 0.4, 0.6, 0.8, 1.0]
    assert three.warnings == [] and three.seconds > 0


def test_the_page_s_seed_and_index_re_make_the_image_with_the_cli(models, tmp_path):
    from PIL import Image

    from glide_jax import cli

    outcome = handlers.generate(models, handlers.GenerateForm("a red circle", n=2, seed=11, **FAST))
    # the command the page quotes, with the same settings (progress on: the loop compiled above is reused)
    assert cli.main(["generate", "a red circle", "--seed", "11", "--first-index", "1", "--upsampler", "none",
                     "--sampler", "ddim", "--steps", "6", "--out", str(tmp_path)]) == 0
    with Image.open(tmp_path / "generate_000.png") as written:
        np.testing.assert_array_equal(np.asarray(written.convert("RGB")), outcome.images[1][0])


def test_input_warnings_and_crops_come_back_with_the_images(models):
    outcome = handlers.generate(models, handlers.GenerateForm("a zebra circle", **FAST))
    assert len(outcome.warnings) == 1 and "does not know" in outcome.warnings[0]
    sketch = np.full((32, 48, 3), 200, np.uint8)
    edited = handlers.edit(models, handlers.EditForm("a red circle", sketch, strength=0.5, upsample=False))
    assert edited.original.shape == (32, 32, 3) and "48x32" in edited.warnings[0]
    assert edited.images[0][0].shape == (32, 32, 3)


def test_loopback_hosts_and_the_warnings_for_public_ones():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.10")
    assert exposure_warnings("127.0.0.1", share=False) == []
    public = exposure_warnings("0.0.0.0", share=True)
    assert len(public) == 2 and "non-loopback" in public[0] and "gradio.live" in public[1]


def test_serve_without_gradio_says_how_to_install_it(monkeypatch, capsys):
    from glide_jax import cli

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gradio" else real(name, *a))
    assert cli.main(["serve", "--port", "7999"]) == 2
    assert capsys.readouterr().err.strip() == f"error: {DEMO_EXTRA}"


def test_serve_warns_before_listening_on_a_public_interface(monkeypatch, capsys):
    from glide_jax import cli
    from glide_jax.demo import server

    monkeypatch.setattr(server, "require_gradio", lambda: None)
    monkeypatch.setattr(server, "private_temp_dir", lambda: (_ for _ in ()).throw(InputError("stopped here")))
    with warnings.catch_warnings():
        assert cli.main(["serve", "--host", "0.0.0.0"]) == 2
    err = capsys.readouterr().err
    assert "warning: the demo listens on 0.0.0.0, a non-loopback address" in err and "error: stopped here" in err
