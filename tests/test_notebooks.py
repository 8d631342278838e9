"""The Colab notebooks, executed in their embedded-model mode (no network, no GPU).

Each notebook's code cells run in order in one namespace, as a kernel would run
them; a notebook may not use IPython magics (the install cell uses pip through
``subprocess``, skipped when glide_jax is importable), so plain ``exec`` is a
faithful executor and CI needs no Jupyter kernel. The checks then read the
namespace the notebook left behind.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def run_notebook(path: Path) -> dict:
    nb = json.loads(path.read_text())
    assert nb["nbformat"] == 4
    namespace = {"__name__": "__main__"}
    cells = [c for c in nb["cells"] if c["cell_type"] == "code"]
    for i, cell in enumerate(cells):
        source = "".join(cell["source"])
        magics = [line for line in source.splitlines() if line.lstrip().startswith(("!", "%"))]
        assert not magics, f"{path.name} cell {i} uses IPython magics, which plain Python cannot run: {magics}"
        assert not cell.get("outputs"), f"{path.name} cell {i} is committed with outputs; clear them"
        exec(compile(source, f"{path.name}[code cell {i}]", "exec"), namespace)
    return namespace


@pytest.fixture(autouse=True)
def embedded_mode(monkeypatch):
    monkeypatch.setenv("GLIDE_JAX_MODEL", "embedded")
    monkeypatch.chdir(NOTEBOOKS)


@pytest.mark.slow  # executes the whole notebook (~70 s)
def test_text2im_notebook():
    ns = run_notebook(NOTEBOOKS / "text2im.ipynb")
    assert ns["MODEL"] == "embedded"
    images, prompts = ns["images"], ns["prompts"]
    assert images.shape == (len(prompts), 64, 64, 3) and images.dtype == np.uint8
    assert [r.shape for r in ns["rows"]] == [(4, 32, 32, 3)] * 3
    assert ns["edits"].shape == (3, 64, 64, 3)


@pytest.mark.slow  # executes the whole notebook (~25 s)
def test_inpaint_notebook():
    ns = run_notebook(NOTEBOOKS / "inpaint.ipynb")
    filled, image, mask = ns["filled"], ns["image"], ns["mask"]
    assert filled.shape == (4, 64, 64, 3)
    keep = mask >= 0.5
    # The known half is pasted into every x0 at both resolutions, so it comes back as given.
    assert np.abs(filled.astype(int) - image.astype(int))[:, keep].max() <= 1
    assert np.abs(filled.astype(int) - image.astype(int))[:, ~keep].mean() > 5  # and the hole was redrawn


@pytest.mark.slow  # executes the whole notebook (~40 s)
def test_clip_guided_notebook():
    ns = run_notebook(NOTEBOOKS / "clip_guided.ipynb")
    assert ns["clip_guided"].shape == ns["cfg_guided"].shape == (4, 32, 32, 3)
    assert not np.array_equal(ns["clip_guided"], ns["cfg_guided"])
    assert ns["full"].shape == (4, 64, 64, 3)
