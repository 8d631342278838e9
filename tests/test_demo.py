"""The web demo's request handlers, page helpers and server checks, without a browser.

The sampling tests run the embedded base model alone (no upsampler) with few
steps, so they compile one small loop; the browser tests
(tests/test_demo_browser.py) cover the full models through the page.
"""

from __future__ import annotations

import importlib.util
import io
import socket
import struct
import threading
import time
import warnings
import zlib

import numpy as np
import pytest
from PIL import Image

from glide_jax.demo import handlers
from glide_jax.demo.app import WAITING, painted_mask, wait_until_ready
from glide_jax.demo.models import DemoModels, load_models
from glide_jax.demo.progress import ForwardingProgress, install
from glide_jax.demo.server import DEMO_EXTRA, exposure_warnings, is_loopback
from glide_jax.demo.warmup import WARMING_UP, Readiness
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
    (dict(candidates=9), r"candidates must be in \[1, 8\]"),
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


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_serve_warns_before_listening_on_a_public_interface(monkeypatch, capsys):
    from glide_jax import cli
    from glide_jax.demo import server

    monkeypatch.setattr(server, "require_gradio", lambda: None)
    monkeypatch.setattr(server, "private_temp_dir", lambda: (_ for _ in ()).throw(InputError("stopped here")))
    with warnings.catch_warnings():
        assert cli.main(["serve", "--host", "0.0.0.0", "--port", str(_free_port())]) == 2
    err = capsys.readouterr().err
    assert "warning: the demo listens on 0.0.0.0, a non-loopback address" in err and "error: stopped here" in err


def test_a_port_in_use_is_refused_before_anything_loads(monkeypatch, capsys):
    from glide_jax import cli
    from glide_jax.demo import server

    monkeypatch.setattr(server, "require_gradio", lambda: None)
    monkeypatch.setattr(server, "load_models", lambda *args: pytest.fail("the models were loaded"))
    monkeypatch.setattr(server, "private_temp_dir", lambda: pytest.fail("the server went on"))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert cli.main(["serve", "--port", str(port)]) == 2
    assert capsys.readouterr().err.strip() == (f"error: port {port} on 127.0.0.1 is already in use (another "
                                               "glide-jax serve?); stop that server or choose another port with --port")


class _Page:
    """What ``serve`` does with the page, recorded in order."""

    def __init__(self, events, readiness):
        self.events, self.readiness = events, readiness

    def queue(self, **kwargs):
        self.events.append("queue")

    def launch(self, **kwargs):
        assert kwargs["prevent_thread_lock"] is True  # serving goes on in the background while the loops compile
        self.events.append("listening")

    def block_thread(self):
        self.events.append(f"serving until interrupted, {self.readiness.status_line()}")


def test_the_page_is_served_while_the_models_warm_up_and_says_so(monkeypatch, tmp_path):
    from glide_jax.demo import server

    events, pages = [], []

    def build_app(models, readiness):
        pages.append(_Page(events, readiness))
        return pages[0]

    def warm_up(models):
        readiness = pages[0].readiness
        events.append(f"warming up, ready={readiness.ready}: {readiness.status_line()}")
        models.warmup_seconds["generate"] = 1.25
        return models.warmup_seconds

    monkeypatch.setattr(server, "require_gradio", lambda: None)
    monkeypatch.setattr(server, "private_temp_dir", lambda: str(tmp_path))
    monkeypatch.setattr(server, "load_models", lambda *args: DemoModels(None, None, "embedded", load_seconds=0.5))
    monkeypatch.setattr(server, "build_app", build_app)
    monkeypatch.setattr(server, "warm_up", warm_up)
    monkeypatch.setattr(server.progress, "install", lambda: None)
    lines = []
    server.serve(port=_free_port(), log=lines.append)
    assert events[:3] == ["queue", "listening", f"warming up, ready=False: {WARMING_UP}"]
    assert events[3].startswith("serving until interrupted, Ready. Start-up: models loaded in 0.5 s, compiled in ")
    assert lines[0].startswith("loaded the models in 0.5 s; serving http://127.0.0.1:")
    assert lines[1].startswith("ready: compiled in ") and "(generate 1.2 s)" in lines[1]


def test_a_request_sent_during_the_warm_up_waits_for_it_and_says_so():
    readiness, said = Readiness(), []
    threading.Timer(0.3, readiness.finish, ["Start-up: 1 s."]).start()
    started = time.perf_counter()
    wait_until_ready(readiness, lambda fraction, desc: said.append((fraction, desc)))
    assert time.perf_counter() - started >= 0.25 and said == [(0.0, WAITING)]
    assert readiness.status_line() == "Ready. Start-up: 1 s."
    said.clear()
    wait_until_ready(readiness, lambda fraction, desc: said.append(desc))  # ready: no wait, nothing said
    assert said == []
    failed = Readiness()
    failed.fail("RuntimeError: out of memory")
    with pytest.raises(ValueError, match="the server failed to start, so it cannot sample: RuntimeError: out of"):
        wait_until_ready(failed, lambda *args, **kwargs: None)


def _bomb_png(width: int, height: int) -> bytes:
    """A PNG header declaring ``width`` x ``height`` pixels with almost no data behind it."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + chunk(b"IEND", b""))


@pytest.mark.parametrize("content, words", [
    (b"these are notes, not a picture", "the sketch 'notes.png' is not a picture this page can read; upload a PNG"),
    (_bomb_png(30000, 30000), "the sketch 'notes.png' declares more pixels than can be decoded safely"),
    (_bomb_png(5000, 5000), "the sketch 'notes.png' is 5000x5000 pixels; the page takes pictures of at most "
                            "16,777,216 pixels"),
])
def test_an_upload_that_is_not_a_usable_picture_is_named_without_the_server_s_path(tmp_path, content, words):
    upload = tmp_path / "gradio" / "0123abcd" / "notes.png"
    upload.parent.mkdir(parents=True)
    upload.write_bytes(content)
    for source in (str(upload), content):
        with pytest.raises(ValueError) as refused:
            handlers.check_upload(source, "sketch", "notes.png")
        assert words in str(refused.value) and str(tmp_path) not in str(refused.value)
    picture = io.BytesIO()
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(picture, format="PNG")
    handlers.check_upload(picture.getvalue(), "sketch")  # a picture passes


def test_the_page_s_editors_refuse_such_uploads_in_words(tmp_path):
    gr = pytest.importorskip("gradio", reason='gradio is not installed (pip install -e ".[demo]")')
    from gradio.data_classes import FileData

    from glide_jax.demo.app import editor_value

    editor = gr.ImageEditor(type="numpy", image_mode="RGB", render=False)
    upload = tmp_path / "notes.png"
    upload.write_bytes(b"these are notes, not a picture")
    file = FileData(path=str(upload), orig_name="notes.png").model_dump()
    with pytest.raises(ValueError) as refused:
        editor_value(editor, {"background": file, "layers": [], "composite": file}, "sketch")
    assert str(refused.value) == ("the sketch 'notes.png' is not a picture this page can read; upload a PNG, JPEG, "
                                  "WebP or BMP picture")
    Image.fromarray(np.full((12, 12, 3), 9, np.uint8)).save(upload, format="PNG")
    value = editor_value(editor, {"background": file, "layers": [], "composite": file}, "sketch")
    assert value["composite"].shape == (12, 12, 3) and editor_value(editor, None, "sketch") is None
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(upload, format="PNG")
    upload.write_bytes(upload.read_bytes()[:6000])  # a readable header, most pixels cut off
    with pytest.raises(ValueError, match="the sketch could not be decoded"):
        editor_value(editor, {"background": file, "layers": [], "composite": file}, "sketch")


def test_steps_compile_nothing_new(models):
    """Five step counts through the handler: the number of compiled sampling loops stays what the first made."""
    from glide_jax.diffusion import samplers

    handlers.generate(models, handlers.GenerateForm("a red circle", **FAST))
    compiled = samplers._run_loop._cache_size()
    for steps in (2, 3, 9, 13, 23):
        handlers.generate(models, handlers.GenerateForm("a red circle", **{**FAST, "steps": steps}))
    assert samplers._run_loop._cache_size() == compiled
