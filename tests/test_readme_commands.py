"""Every command the README shows is run by a test or by CI, and the ones no other test ran are run here.

``RUN_BY`` names, for each command line of the README's bash blocks, the test
(``tests/file.py::name``) or the line of ``.ci/run`` that runs it; a fast test
checks that the table and the README list the same commands and that every
test and CI line it names exists, so neither can drift. Two slow tests run
README commands exactly as written: the four training commands (each started
in an empty folder and stopped by SIGTERM after its first step, which saves a
checkpoint and exits 0; a whole ``tiny`` run takes about 12 minutes), and the
OpenAI-weights commands plus the README's Python example for them, against
``file://`` copies of the released files with the released networks swapped
for tiny ones of the same kind (the real ones take 1.5 GB each to download).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from conftest import require_fixture
from test_checkpoints import write_torch_zip

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()
CI = ".ci/run"

QUICK_START = 'glide-jax generate "a red circle above a blue square" --n 4 --out out/'
TRAIN = "python -m experiments.train --config experiments/configs/"
TRAINING_TEST = "tests/test_readme_commands.py::test_the_readme_s_training_commands_train_and_save"
OPENAI_TEST = "tests/test_readme_commands.py::test_the_readme_s_openai_commands_and_example_run"

# README command (whitespace collapsed, comments dropped) -> where it runs: "tests/<file>::<test>"
# or "<.ci/run>: <a line of .ci/run>" (every part of a command CI runs as several lines).
RUN_BY = {
    "python3 -m venv .venv && . .venv/bin/activate && pip install -r requirements.txt && pip install --no-deps -e .": [
        f"{CI}: python3 -m venv .venv-ci", f"{CI}: . .venv-ci/bin/activate",
        f"{CI}: python -m pip install -q -r requirements.txt", f"{CI}: python -m pip install -q --no-deps -e ."],
    "python -m pytest -q": [f"{CI}: python -m pytest -q"],
    QUICK_START: ["tests/test_embedded.py::test_the_readme_s_generate_command_draws_the_quick_start_picture"],
    'glide-jax generate "a red circle above a blue square" --model embedded-fast --n 4 --out out/': [
        "tests/test_embedded.py::test_the_fast_set_samples_its_base_in_a_few_self_guided_steps"],
    # CI installs the same extra together with the TensorBoard one and Playwright for the browser tests.
    'pip install -e ".[demo]"': [f'{CI}: python -m pip install -q -e ".[demo,tensorboard]" playwright'],
    # The browser tests' server is this command on a free port (``python -m glide_jax serve --port N``).
    "glide-jax serve": ["tests/test_demo_browser.py::test_the_page_said_it_was_warming_up_and_now_says_it_is_ready"],
    "glide-jax download base upsample tokenizers": [OPENAI_TEST],
    'glide-jax generate "an oil painting of a corgi" --model openai --n 4 --out out/': [OPENAI_TEST],
    f"{TRAIN}base.py:tiny --workdir runs/base_tiny": [TRAINING_TEST],
    f"{TRAIN}upsample.py:tiny --workdir runs/up_tiny": [TRAINING_TEST],
    f"{TRAIN}inpaint.py:tiny --workdir runs/inpaint_tiny --set train.init_from=runs/base_tiny": [TRAINING_TEST],
    f"{TRAIN}clip.py:tiny --workdir runs/clip_tiny": [TRAINING_TEST],
}
# The README's Python blocks, in order -> the test that executes each.
PYTHON_RUN_BY = ["tests/test_first_run.py::test_the_readme_s_first_python_example_runs_offline", OPENAI_TEST]


def readme_commands(text: str = README) -> list:
    """The command lines of a page's bash blocks: continuations joined, comments and extra spaces dropped."""
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            command = " ".join(line.split(" #")[0].split())
            if command:
                lines.append(command)
    return lines


def _section(heading: str) -> str:
    return README.split(f"\n## {heading}\n")[1].split("\n## ")[0]


# ----------------------------------------------------------------------------- the table (fast)


def test_every_readme_command_is_run_by_a_named_test_or_ci_step():
    commands = readme_commands()
    assert len(commands) == len(set(commands)), "a command appears twice in the README"
    unlisted = [command for command in commands if command not in RUN_BY]
    assert not unlisted, f"README commands that no test or CI step is named for: {unlisted}"
    stale = [command for command in RUN_BY if command not in commands]
    assert not stale, f"RUN_BY names commands the README no longer shows: {stale}"
    assert QUICK_START in commands and len(commands) >= 10


def _check_runner(where: str) -> None:
    if where.startswith(f"{CI}: "):
        script = [line.strip() for line in (REPO / CI).read_text().splitlines()]
        assert where[len(CI) + 2:] in script, f"{CI} has no line {where[len(CI) + 2:]!r}"
        return
    path, name = where.split("::")
    source = (REPO / path).read_text()
    assert re.search(rf"^def {re.escape(name)}\(", source, flags=re.M), f"{path} has no test {name}"


@pytest.mark.parametrize("where", sorted({w for ws in RUN_BY.values() for w in ws} | set(PYTHON_RUN_BY)))
def test_every_named_test_and_ci_step_exists(where):
    _check_runner(where)


def test_the_tests_that_make_the_docs_pictures_exist():
    named = re.findall(r"`(tests/\w+\.py::\w+)`", (REPO / "docs" / "images" / "README.md").read_text())
    assert len(named) == 2
    for where in named:
        _check_runner(where)


def test_each_python_block_of_the_readme_has_its_test():
    blocks = re.findall(r"```python\n(.*?)```", README, flags=re.S)
    assert len(blocks) == len(PYTHON_RUN_BY)
    assert "load_pipeline()" in blocks[0] and 'load_pipeline("openai")' in blocks[1]


def test_the_ci_script_runs_the_readme_s_test_command_and_the_slow_ones():
    script = [line.strip() for line in (REPO / CI).read_text().splitlines()]
    assert "python -m pytest -q" in script
    assert any(line.startswith("python -m pytest -q -m slow") for line in script)  # the slow tests named above


# ----------------------------------------------------------------------------- training (slow)


def _training_env() -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu")
    env.update(XLA_FLAGS="--xla_backend_optimization_level=0")  # 2-3x faster compiling; the run is stopped early
    return env


@pytest.mark.slow  # four training runs, each compiled and stopped after its first step (~3 min)
def test_the_readme_s_training_commands_train_and_save(tmp_path):
    """The README's training commands, exactly as written, in an empty folder: each trains, saves a
    checkpoint when stopped (SIGTERM, as a preempted job), and exits 0; the inpainting run warm-starts
    from the base run's checkpoint, as its ``--set train.init_from`` says."""
    commands = [command for command in readme_commands(_section("Training")) if command.startswith("python ")]
    assert commands == [command for command in RUN_BY if command.startswith(TRAIN)]
    (tmp_path / "experiments").symlink_to(REPO / "experiments")  # the configs' relative paths, as in a checkout
    for command in commands:
        argv = shlex.split(command)
        workdir = tmp_path / argv[argv.index("--workdir") + 1]
        log = workdir.with_suffix(".log")
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "w") as out:
            process = subprocess.Popen([sys.executable, *argv[1:]], cwd=tmp_path, env=_training_env(),
                                       stdout=out, stderr=subprocess.STDOUT)
            started = time.monotonic()
            while "first step (including compilation) took" not in log.read_text():
                assert process.poll() is None, f"{command} exited:\n{log.read_text()[-3000:]}"
                assert time.monotonic() - started < 600, f"{command} did not finish a step in 600 s"
                time.sleep(0.5)
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=300) == 0, log.read_text()[-3000:]
        said = log.read_text()
        saved = re.search(r"preempted: saved step (\d+) in (\S+); rerun the same command to continue", said)
        assert saved, said[-3000:]
        assert Path(saved.group(2)) == workdir / "checkpoints"
        assert (workdir / "checkpoints" / saved.group(1)).is_dir() and (workdir / "experiment.json").is_file()
        if "init_from" in command:  # an inpainting run refuses to start without a model to start from
            recorded = json.loads((workdir / "experiment.json").read_text())
            assert recorded["train"]["init_from"] == "runs/base_tiny"


# ----------------------------------------------------------------------------- OpenAI's weights (slow)


def _tiny_released(monkeypatch) -> dict:
    """Make the released ``base`` and ``upsample`` tiny networks of the same kinds (the base's size is
    the upsampler's input, as for the real pair); their random weights as state dicts, by name."""
    from glide_jax import config
    from glide_jax.family import abstract_params
    from glide_jax.hub import verify
    from model_files import unet_to_torch

    base = config.PRESETS["tiny-base"]
    upsample = dataclasses.replace(config.PRESETS["tiny-upsample"], low_res_size=base.unet.image_size)
    states = {}
    for seed, (name, preset) in enumerate((("base", base), ("upsample", upsample))):
        monkeypatch.setitem(config.PRESETS, name, preset)
        rng = np.random.default_rng(seed)
        variables = {"params": jax.tree.map(lambda a: rng.normal(0, 0.05, a.shape).astype(np.float32),
                                            abstract_params(preset))}
        state = {k: np.ascontiguousarray(v) for k, v in unet_to_torch(variables).items()}
        monkeypatch.setitem(verify.RELEASED_PARAMETERS, name, (len(state), sum(v.size for v in state.values())))
        states[name] = state
    return states


@pytest.mark.slow  # tiny stand-ins for the released networks, sampled at the released defaults (~50 s)
def test_the_readme_s_openai_commands_and_example_run(tmp_path, monkeypatch, capsys):
    """``glide-jax download base upsample tokenizers``, ``glide-jax generate ... --model openai`` and the
    README's Python example for OpenAI's weights, as written: the files are fetched and verified into the
    cache, converted on first use, and sampled with the released models' default settings."""
    from glide_jax.cli import main
    from glide_jax.hub import download as dl

    section = _section("Sampling with OpenAI's weights")
    commands = readme_commands(section)
    assert commands == [command for command in RUN_BY if RUN_BY[command] == [OPENAI_TEST]]
    vocabularies = require_fixture("tokenizer")
    source = tmp_path / "published"
    source.mkdir()
    for name, state in _tiny_released(monkeypatch).items():
        remote = dl.CHECKPOINTS[name]
        write_torch_zip(source / remote.filename,
                        {k: (v, (v.shape, tuple(s // v.itemsize for s in v.strides))) for k, v in state.items()})
        monkeypatch.setitem(dl.CHECKPOINTS, name, dataclasses.replace(remote, url=(source / remote.filename).as_uri()))
    for name, remote in dl.TOKENIZER_FILES.items():  # the pinned digests are still checked
        monkeypatch.setitem(dl.TOKENIZER_FILES, name, dl.RemoteFile((vocabularies / name).as_uri(), remote.sha256))
    cache = tmp_path / "cache"
    monkeypatch.setenv("GLIDE_JAX_CACHE", str(cache))
    monkeypatch.chdir(tmp_path)

    download, generate = (shlex.split(command)[1:] for command in commands)
    assert main(download) == 0
    for name in ("base", "upsample"):
        filename = dl.CHECKPOINTS[name].filename
        assert (cache / filename).read_bytes() == (source / filename).read_bytes()
    assert all((cache / name).is_file() for name in dl.TOKENIZER_FILES)
    assert main(generate) == 0
    written = sorted(path.name for path in (tmp_path / "out").iterdir())
    assert written == [f"generate_00{i}.png" for i in range(4)] + ["generate_grid.png"]
    assert all((cache / "converted" / name / "config.json").is_file() for name in ("base", "upsample"))
    assert "out/generate_003.png\tseed 0 index 3" in capsys.readouterr().out

    example = re.findall(r"```python\n(.*?)```", section, flags=re.S)[0]
    namespace = {"__name__": "__main__"}
    exec(compile(example, "README.md (OpenAI's weights)", "exec"), namespace)
    images = namespace["images"]
    assert images.shape == (2, 64, 64, 3) and images.dtype == np.uint8  # [2, 256, 256, 3] with the real networks
    again = sorted(path.name for path in (tmp_path / "out").iterdir() if path.name not in written)
    assert again == ["generate_000-1.png", "generate_001-1.png", "generate_grid-1.png"]  # nothing overwritten
