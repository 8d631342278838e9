"""``glide-jax serve`` in a real browser: headless Chromium (the Debian package) driven by Playwright.

One server on a free loopback port serves every test of this module, as a
visitor would use it: type a prompt, click, wait for the gallery, download the
image the page shows and grade it with the shapes evaluator; paint a mask on
the Inpaint tab; get a readable error and keep going; two sessions at once.
Set ``GLIDE_JAX_DEMO_SCREENSHOT=path.png`` to save the page with its generated
images (docs/images/demo.png is made this way). The server's start-up
(loading, compiling each tab's loops) is most of the time.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

CHROMIUM = "/usr/bin/chromium"
REPO = Path(__file__).resolve().parents[1]


def _missing() -> str:
    import importlib.util

    for module, install in (("gradio", 'pip install -e ".[demo]"'), ("playwright", "pip install playwright")):
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed ({install})"
    if not os.access(CHROMIUM, os.X_OK):
        return f"{CHROMIUM} is missing (apt-get install -y chromium chromium-driver)"
    return ""


# slow: start-up compiles every tab's loops (40-80 s here), and the whole module takes 100-160 s
pytestmark = [pytest.mark.slow, pytest.mark.skipif(bool(_missing()), reason=_missing() or "ready")]

START_UP_LIMIT = 420  # seconds for loading and compiling the embedded models on a busy 2-core machine
REQUEST_LIMIT = 120_000  # milliseconds for one request in the page
ERROR_TOAST = '[data-testid="toast-body"].error'  # the message box of a gr.Error in Gradio 6's page


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Server:
    """``python -m glide_jax serve`` in a subprocess, its output collected for the tests to read."""

    def __init__(self):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.lines: list = []
        self.status_while_warming = ""  # the page's status line when it was first served
        self.process = subprocess.Popen([sys.executable, "-m", "glide_jax", "serve", "--port", str(self.port)],
                                        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        threading.Thread(target=self._collect, daemon=True).start()

    def _collect(self):
        for line in self.process.stdout:
            self.lines.append(line.rstrip())

    def wait_ready(self) -> tuple:
        """Seconds until the page is served, and until the warm-up is done (the page is served first)."""
        started, served = time.perf_counter(), None
        while time.perf_counter() - started < START_UP_LIMIT:
            if self.process.poll() is not None:
                raise AssertionError("the server exited:\n" + "\n".join(self.lines))
            if served is None:
                try:
                    with urllib.request.urlopen(self.url, timeout=2) as response:
                        if response.status == 200:
                            served = time.perf_counter() - started
                            self.status_while_warming = _status_line(self.url)
                except OSError:
                    pass
            if any(line.startswith("ready: compiled in") for line in self.lines):
                assert served is not None, "the page was not served during the warm-up"
                return served, time.perf_counter() - started
            time.sleep(0.5)
        raise AssertionError(f"not ready after {START_UP_LIMIT} s:\n" + "\n".join(self.lines))

    def temp_dir(self) -> Path:
        found = [re.search(r"uploads and outputs go to (\S+)", line) for line in self.lines]
        return Path([match for match in found if match][0].group(1))

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=60)


def _status_line(url: str) -> str:
    """The page's status line as the page's configuration holds it when the page is loaded."""
    with urllib.request.urlopen(url + "/config", timeout=10) as response:
        config = json.load(response)
    return next(component["props"]["value"] for component in config["components"]
                if component.get("props", {}).get("elem_id") == "server-status")


@pytest.fixture(scope="module")
def server():
    running = Server()
    try:
        served, ready = running.wait_ready()
        print(f"\npage served after {served:.1f} s, ready after {ready:.1f} s: " + " | ".join(running.lines[-2:]))
        yield running
    finally:
        if running.process.poll() is None:
            running.stop()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, server):
    context = browser.new_context(viewport={"width": 1200, "height": 1100})
    opened = context.new_page()
    opened.goto(server.url)
    yield opened
    context.close()


def _generate(page, prompt: str, seed: int = 0, click: bool = True):
    page.locator("#gen-prompt textarea").fill(prompt)
    page.locator("#gen-seed input").fill(str(seed))
    if click:
        page.locator("#gen-button").click()


def _gallery(page, prefix: str, count: int = 2) -> list:
    """``(png bytes, caption)`` of each image the gallery shows, fetched as the browser would download it.

    An error the page shows instead fails at once with its text (a refused request is an answer too).
    """
    pictures = page.locator(f"#{prefix}-gallery img")
    errors = page.locator(ERROR_TOAST)
    pictures.nth(count - 1).or_(errors.first).wait_for(timeout=REQUEST_LIMIT)
    assert not errors.count(), f"the page shows an error: {errors.first.inner_text()!r}"
    pictures.nth(count - 1).wait_for(timeout=REQUEST_LIMIT)
    shown = []
    for index in range(pictures.count()):
        response = page.request.get(pictures.nth(index).get_attribute("src"))
        assert response.ok
        shown.append((response.body(), pictures.nth(index).get_attribute("alt")))
    return shown


def _close_errors(page) -> None:
    """Close the error messages the page shows, as a visitor who has read them would."""
    closes = page.locator(f'{ERROR_TOAST} [data-testid="toast-close"]')
    for index in reversed(range(closes.count())):
        closes.nth(index).click()
    page.wait_for_function("selector => !document.querySelector(selector)", arg=ERROR_TOAST)


def _decoded(png: bytes) -> np.ndarray:
    from PIL import Image

    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(io.BytesIO(png)) as image:
        assert image.format == "PNG"
        return np.asarray(image.convert("RGB"))


def _colour_pixels(png: bytes, colour: str) -> int:
    image = _decoded(png).astype(int)
    red, green, blue = image[..., 0], image[..., 1], image[..., 2]
    if colour == "red":
        return int(((red > 150) & (green < 90) & (blue < 90)).sum())
    return int(((green > 110) & (red < 90) & (blue < 110)).sum())


def _grade(png: bytes, caption: str) -> bool:
    from projects.shapes.grading import score

    return bool(score(_decoded(png), caption)["correct"])


def test_the_page_said_it_was_warming_up_and_now_says_it_is_ready(page, server):
    assert server.status_while_warming.startswith("Warming up: compiling the sampling loops")
    status = page.locator("#server-status")
    status.get_by_text("Ready. Start-up: models loaded in").wait_for(timeout=30_000)


def test_generate_shows_graded_images_with_their_seed_and_index(page, server):
    _generate(page, "a red circle above a blue square", seed=5)
    shown = _gallery(page, "gen")
    assert [caption for _, caption in shown] == ["seed 5, index 0", "seed 5, index 1"]
    assert all(_decoded(png).shape == (64, 64, 3) for png, _ in shown)
    assert sum(_grade(png, "a red circle above a blue square") for png, _ in shown) >= 1
    assert re.fullmatch(r"2 images in \d+\.\d s", page.locator("#gen-status").inner_text().strip())
    screenshot = os.environ.get("GLIDE_JAX_DEMO_SCREENSHOT")
    if screenshot:
        page.locator("#gen-gallery img").first.scroll_into_view_if_needed()
        page.screenshot(path=screenshot, full_page=True)


def test_inpaint_fills_the_painted_region(page, tmp_path):
    from PIL import Image

    picture = np.full((64, 64, 3), 200, np.uint8)
    picture[40:58, 23:41] = (20, 50, 220)  # a blue square in the lower half
    Image.fromarray(picture).save(tmp_path / "square.png")
    page.get_by_role("tab", name="Inpaint").click()
    editor = page.locator("#inpaint-editor")
    # Gradio's image editor drops a file chosen before its drawing canvas exists (the tab has just mounted
    # it), so the picture is chosen once the canvas is there and painted on once the editor shows it.
    canvas = editor.locator("canvas").first
    canvas.wait_for()
    editor.locator("input[type=file]").first.set_input_files(str(tmp_path / "square.png"))
    editor.get_by_text("Upload an image").wait_for(state="hidden", timeout=30_000)
    page.locator("#inpaint-prompt textarea").fill("a red circle above a blue square")
    _paint_upper_part(page, canvas)
    page.locator("#inpaint-button").click()
    shown = _gallery(page, "inpaint")
    results = [_decoded(png) for png, _ in shown]
    assert [caption for _, caption in shown] == ["seed 0, index 0", "seed 0, index 1"]
    for result in results:
        red = (result[..., 0] > 150) & (result[..., 1] < 90) & (result[..., 2] < 90)
        assert red[:32].sum() > 30 and red[32:].sum() < 5  # drawn in the painted top half only
        kept = np.abs(result[44:56, 26:38].astype(int) - (20, 50, 220)).max()
        assert kept < 40  # the unpainted blue square is kept
    assert sum(_grade(png, "a red circle above a blue square") for png, _ in shown) >= 1
    assert page.locator("#inpaint-original img").count() == 1


def _paint_upper_part(page, canvas) -> None:
    box = canvas.bounding_box()
    middle_x, middle_y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    # The picture fills the canvas's height, centred: three brush strokes across its upper part (a stroke
    # starts only inside the picture). Few mouse events: each one redraws the canvas.
    page.mouse.move(middle_x - 110, middle_y - 140)
    page.mouse.down()
    for row in (-140, -100, -60):
        page.mouse.move(middle_x - 110, middle_y + row, steps=1)
        page.mouse.move(middle_x + 110, middle_y + row, steps=3)
    page.mouse.up()


def test_edit_redraws_a_sketch_drawn_in_the_page(page):
    page.get_by_role("tab", name="Edit").click()
    canvas = page.locator("#edit-sketch canvas").first
    canvas.wait_for()
    box = canvas.bounding_box()
    middle_x, middle_y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(middle_x - 40, middle_y - 40)
    page.mouse.down()  # a scribble in the middle of the white canvas
    page.mouse.move(middle_x + 40, middle_y + 40, steps=3)
    page.mouse.up()
    page.locator("#edit-prompt textarea").fill("a red circle")
    page.locator("#edit-button").click()
    shown = _gallery(page, "edit")
    assert [caption for _, caption in shown] == ["seed 0, index 0", "seed 0, index 1"]
    assert all(_decoded(png).shape == (64, 64, 3) and _colour_pixels(png, "red") > 50 for png, _ in shown)
    original = page.locator("#edit-original img")
    original.wait_for()
    assert _decoded(page.request.get(original.get_attribute("src")).body()).shape == (256, 256, 3)


def test_bad_input_shows_a_readable_error_and_the_server_keeps_serving(page, server):
    _generate(page, "   ")
    error = page.get_by_text("the prompt is empty: type what to draw")
    error.first.wait_for(timeout=30_000)
    page.get_by_role("tab", name="Inpaint").click()
    page.locator("#inpaint-prompt textarea").fill("a red circle")
    page.locator("#inpaint-button").click()
    page.get_by_text("no image: upload the picture to inpaint first").first.wait_for(timeout=30_000)
    _close_errors(page)  # read: the next request's answer must not be mistaken for them
    page.get_by_role("tab", name="Generate").click()
    _generate(page, "a large green circle zebra", seed=2)  # accepted, with a warning in the page
    page.get_by_text("1 piece the model's vocabulary does not know").first.wait_for(timeout=REQUEST_LIMIT)
    shown = _gallery(page, "gen")
    assert [caption for _, caption in shown] == ["seed 2, index 0", "seed 2, index 1"]
    assert all(_colour_pixels(png, "green") > 100 for png, _ in shown)
    assert server.process.poll() is None


def test_two_sessions_at_once_each_get_their_own_images(browser, server):
    requests = {"a red circle": 21, "a large green circle": 22}
    contexts = [browser.new_context() for _ in requests]
    pages = [context.new_page() for context in contexts]
    for opened in pages:
        opened.goto(server.url)
    for opened, (prompt, seed) in zip(pages, requests.items()):
        _generate(opened, prompt, seed=seed, click=False)
    started = time.perf_counter()
    for opened in pages:
        opened.locator("#gen-button").click()  # both are queued before either finishes
    shown = {prompt: _gallery(opened, "gen") for opened, prompt in zip(pages, requests)}
    both_seconds = time.perf_counter() - started
    for prompt, seed in requests.items():
        assert [caption for _, caption in shown[prompt]] == [f"seed {seed}, index 0", f"seed {seed}, index 1"]
        assert sum(_grade(png, prompt) for png, _ in shown[prompt]) >= 1, prompt
    red, green = (shown[prompt] for prompt in requests)
    for png, _ in red:  # nothing of the other session's: every image is mostly of its own colour
        assert _colour_pixels(png, "red") > 5 * _colour_pixels(png, "green")
    for png, _ in green:
        assert _colour_pixels(png, "green") > 5 * _colour_pixels(png, "red")
    assert {png for png, _ in red}.isdisjoint(png for png, _ in green)
    for context in contexts:
        context.close()
    print(f"two sessions: both galleries after {both_seconds:.1f} s")


def test_stopping_the_server_removes_its_temporary_directory(server):
    folder = server.temp_dir()
    assert folder.is_dir() and any(folder.rglob("*.png"))  # uploads and served images live here
    assert server.stop() == 0
    assert not folder.exists()
    shutil.rmtree(folder, ignore_errors=True)
