"""The Colab notebooks, executed in their embedded-model mode (no network, no GPU), and their install cell.

Each notebook's code cells run in order in one namespace, as a kernel would run
them; a notebook may not use IPython magics (the install cell uses pip through
``subprocess``, skipped when glide_jax is importable), so plain ``exec`` is a
faithful executor and CI needs no Jupyter kernel. The checks then read the
namespace the notebook left behind.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tools import notebook_install

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"


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


# ----------------------------------------------------------------------------- the install cell (fast)


def _install_cells() -> dict:
    cells = {}
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        code = [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]
        cells[path.name] = "".join(code[0]["source"])
    return cells


def test_every_notebook_installs_with_the_same_cell_naming_the_repository_once():
    cells = _install_cells()
    assert len(cells) == 3 and len(set(cells.values())) == 1
    cell = next(iter(cells.values()))
    assert cell.count("REPOSITORY_URL = ") == 1 and "GLIDE_JAX_SOURCE" not in cell


def test_outside_a_checkout_an_unset_repository_url_says_what_to_set(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # like /content on Colab: no checkout above
    monkeypatch.setattr(subprocess, "check_call", lambda *args, **kwargs: pytest.fail("cloned a placeholder"))
    with pytest.raises(RuntimeError, match="REPOSITORY_URL is not set"):
        exec(compile(next(iter(_install_cells().values())), "install cell", "exec"), {"__name__": "__main__"})
    assert "set it, in the first line of this cell, to the git URL" in capsys.readouterr().out


REQUIREMENTS = notebook_install.declared_requirements(REPO)


def test_a_supported_jax_is_kept_by_a_constraint():
    plan = notebook_install.plan("/content/glide_jax_checkout", REQUIREMENTS, {"jax": "0.10.2", "jaxlib": "0.10.3"})
    assert plan.constraints == {"jax": "0.10.2", "jaxlib": "0.10.3"} and not plan.restart_needed
    assert plan.message.startswith("keeping this runtime's jax 0.10.2, jaxlib 0.10.3 (supported: jax>=0.10.2,<0.11")
    assert plan.pip_args[-4:] == ["pip", "install", "-q", "/content/glide_jax_checkout"]


def test_no_jax_gets_the_tested_one_and_another_jax_gets_replaced_with_a_restart_notice():
    fresh = notebook_install.plan("repo", REQUIREMENTS, {"jax": None, "jaxlib": None})
    assert fresh.constraints == {} and not fresh.restart_needed and "tested jax>=0.10.2,<0.11" in fresh.message
    newer = notebook_install.plan("repo", REQUIREMENTS, {"jax": "0.11.1", "jaxlib": "0.11.1"})
    assert newer.constraints == {} and newer.restart_needed
    assert newer.message.startswith("this runtime has jax 0.11.1, jaxlib 0.11.1, outside the range")
    assert "Restart the runtime" in newer.message
    older = notebook_install.plan("repo", REQUIREMENTS, {"jax": "0.10.2", "jaxlib": "0.9.0"})
    assert older.restart_needed  # one of the two outside the range replaces both


def test_install_passes_the_constraint_to_pip(monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(notebook_install, "installed_versions", lambda names: {"jax": "0.10.2", "jaxlib": "0.10.2"})
    monkeypatch.setattr(subprocess, "check_call",
                        lambda args: calls.append((args, Path(args[args.index("-c") + 1]).read_text())))
    notebook_install.install(REPO)
    (args, pins), = calls
    assert args[:-2][-1] == str(REPO) and pins == "jax==0.10.2\njaxlib==0.10.2\n"
    assert capsys.readouterr().out.startswith("keeping this runtime's jax 0.10.2, jaxlib 0.10.2")
