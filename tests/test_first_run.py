"""What a new user meets first: the CLI's help and version, the names of the files it writes, the
README's examples and the docs' text they lead to, the extras that install what the docs run, and the
dataset build's messages.

Each test is fast except the two that sample with the embedded models: inpainting at 32x32 with 4
steps (about 15 s, mostly compiling) and the README's example at its defaults (slow-marked).
"""

from __future__ import annotations

import argparse
import configparser
import importlib
import importlib.metadata
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
from packaging.requirements import Requirement
from PIL import Image

from glide_jax import cli
from glide_jax.sampling.images import save_images
from glide_jax.sampling.options import BASE_DEFAULT

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()
SAMPLING_DOC = (REPO / "docs" / "sampling.md").read_text()  # the README's "every control" page
BENCHMARKS_DOC = (REPO / "docs" / "benchmarks.md").read_text()  # where the sampling defaults were chosen
TRAINING_DOC = (REPO / "docs" / "training.md").read_text()  # the configs and their variants
# Every page whose bash blocks show glide-jax commands to a reader.
COMMAND_DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), REPO / "projects" / "shapes" / "README.md"]
SAMPLING = ("generate", "inpaint", "edit", "upsample")


def _subparsers() -> dict:
    parser = cli.build_parser()
    commands = next(action for action in parser._actions if isinstance(action, argparse._SubParsersAction))
    return dict(commands.choices)


def _options(command: str) -> list:
    """The option actions of one command (not -h, not positionals)."""
    return [action for action in _subparsers()[command]._actions
            if action.option_strings and not isinstance(action, argparse._HelpAction)]


def _flags(command: str) -> set:
    return {max(action.option_strings, key=len) for action in _options(command)}


# ----------------------------------------------------------------------------- the CLI's help and version


@pytest.mark.parametrize("command", [None, "generate", "inpaint", "edit", "upsample", "convert", "download", "serve"])
def test_help_is_plain_text_with_every_option_and_its_default(command, capsys):
    with pytest.raises(SystemExit) as done:
        cli.main(([command] if command else []) + ["--help"])
    assert done.value.code == 0
    shown = capsys.readouterr().out
    for markup in ("``", ":func:", ":mod:", ":class:", "glide_jax.errors", "run_command", "glide_jax.hub"):
        assert markup not in shown, f"{command or 'glide-jax'} --help shows {markup!r}"
    if command is None:
        return
    for action in _options(command):
        assert action.help, f"{command} {action.option_strings} has no help"
        assert "(default" in action.help or "(required)" in action.help, (command, action.option_strings)


def test_version_is_the_package_s(capsys):
    with pytest.raises(SystemExit) as done:
        cli.main(["--version"])
    assert done.value.code == 0
    setup = configparser.ConfigParser()
    setup.read(REPO / "setup.cfg")
    assert capsys.readouterr().out.strip() == f"glide-jax {setup['metadata']['version']}"


def test_version_falls_back_to_setup_cfg_when_not_installed(monkeypatch):
    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", missing)
    setup = configparser.ConfigParser()
    setup.read(REPO / "setup.cfg")
    assert cli.package_version() == setup["metadata"]["version"]


@pytest.mark.parametrize("command", SAMPLING)
def test_the_prompt_is_positional_everywhere_and_prompt_still_works(command):
    extra = {"inpaint": ["--image", "i.png", "--mask", "m.png"], "edit": ["--image", "i.png"],
             "upsample": ["--image", "i.png"]}.get(command, [])
    parser = cli.build_parser()
    positional = parser.parse_args([command, "a red circle", *extra])
    option = parser.parse_args([command, *extra, "--prompt", "a red circle"])
    assert cli.command_prompts(positional) == cli.command_prompts(option) == ["a red circle"]


@pytest.mark.parametrize("argv, message", [
    (["inpaint", "--image", "i.png", "--mask", "m.png"], 'inpaint needs a prompt: glide-jax inpaint "PROMPT"'),
    (["edit", "a", "red", "circle", "--image", "i.png"], 'quote a prompt of several words: glide-jax edit "a red '
                                                         'circle"'),
    (["upsample", "a red circle", "--prompt", "a blue square", "--image", "i.png"], "upsample takes one prompt, got 2"),
])
def test_a_missing_or_split_prompt_is_one_error_line(argv, message, capsys):
    assert cli.main(argv) == 2
    assert message in capsys.readouterr().err


def test_inpaint_with_a_positional_prompt_writes_its_images(tmp_path, capsys):
    scene = np.full((32, 32, 3), 200, np.uint8)
    scene[20:28, 10:18] = (20, 50, 220)
    mask = np.full((32, 32), 255, np.uint8)
    mask[:16] = 0
    Image.fromarray(scene).save(tmp_path / "scene.png")
    Image.fromarray(mask).save(tmp_path / "mask.png")
    assert cli.main(["inpaint", "a red circle", "--image", str(tmp_path / "scene.png"), "--mask",
                     str(tmp_path / "mask.png"), "--upsampler", "none", "--sampler", "ddim", "--steps", "4",
                     "--out", str(tmp_path / "out"), "--no-progress"]) == 0
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == ["inpaint_000.png"]
    assert capsys.readouterr().out.split("\t")[1].strip() == "seed 0 index 0"


# ----------------------------------------------------------------------------- file names


def test_the_library_and_the_cli_name_generated_files_alike(tmp_path):
    images = np.zeros((2, 8, 8, 3), np.uint8)
    written = [path.name for path in save_images(images, tmp_path)]
    assert written == ["generate_000.png", "generate_001.png", "generate_grid.png"]
    assert "`out/generate_000.png`" in README  # what the README's command says it writes


# ----------------------------------------------------------------------------- the README


def _python_blocks() -> list:
    return re.findall(r"```python\n(.*?)```", README, flags=re.S)


def test_the_embedded_set_loads_by_name_and_by_default():
    from glide_jax import load_pipeline

    named, default = load_pipeline("embedded"), load_pipeline()
    for pipe in (named, default):
        assert (pipe.base.image_size, pipe.upsampler.image_size) == (32, 64) and pipe.clip is None
    assert "embedded-base" in named.base.source and "embedded-upsample" in named.upsampler.source


@pytest.mark.slow  # compiles the embedded base and upsampler loops at their defaults (35-45 s on a busy 2-core CPU)
def test_the_readme_s_first_python_example_runs_offline(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GLIDE_JAX_CACHE", str(tmp_path / "no-cache"))  # nothing downloaded or converted is used
    first = _python_blocks()[0]
    assert "load_pipeline()" in first
    exec(compile(first, "README.md (first python block)", "exec"), {"__name__": "__main__"})
    assert capsys.readouterr().out.strip() == "(2, 64, 64, 3) uint8"
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == [
        "generate_000.png", "generate_001.png", "generate_grid.png"]


def _readme_commands(text: str = README) -> list:
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    lines = [line.split("#")[0].strip() for block in blocks for line in block.replace("\\\n", " ").splitlines()]
    return [shlex.split(line)[1:] for line in lines if line.startswith("glide-jax ")]


def test_every_glide_jax_command_of_the_readme_and_the_docs_parses():
    parser = cli.build_parser()
    assert len(_readme_commands()) >= 4
    commands = [argv for doc in COMMAND_DOCS for argv in _readme_commands(doc.read_text())]
    assert len(commands) >= 6
    for argv in commands:
        parser.parse_args(argv)


@pytest.mark.parametrize("text", [README, SAMPLING_DOC], ids=["README.md", "docs/sampling.md"])
def test_the_openai_commands_ask_for_openai_s_models(text):
    section = text.split("## Sampling with OpenAI's weights")[1].split("\n## ")[0]
    block = re.search(r"```bash\n(.*?)```", section, flags=re.S).group(1)
    generate = [line for line in block.splitlines() if line.startswith("glide-jax generate")]
    assert generate and all("--model openai" in line for line in generate)


def test_the_sampling_doc_lists_each_command_s_flags():
    """docs/sampling.md's sentence on the sampling commands' flags names exactly the flags each one takes."""
    start = SAMPLING_DOC.index("Every sampling command takes")
    sentence = SAMPLING_DOC[start: SAMPLING_DOC.index("Image i of a request", start)]
    common, base, rest = sentence.split(";", 2)
    listed = lambda text: set(re.findall(r"`(--[a-z-]+)", text))  # noqa: E731
    shared, base_flags = listed(common), listed(base)
    own = {"generate": {"--start"}, "inpaint": {"--image", "--mask"}, "edit": {"--image", "--strength"},
           "upsample": {"--image"}}
    for command in SAMPLING:
        expected = shared | own[command] | (base_flags if command != "upsample" else set())
        assert _flags(command) - {"--prompt"} == expected, command
    assert all(f"`{flag}`" in rest for flags in own.values() for flag in flags)


def test_the_docs_state_the_base_default_and_each_config_s_variants():
    for text in (README, BENCHMARKS_DOC, SAMPLING_DOC):
        assert "DPM-Solver++ 20 base" not in text
    assert f"the base default, {BASE_DEFAULT.sampler.upper()} {BASE_DEFAULT.steps}" in BENCHMARKS_DOC

    paragraph = TRAINING_DOC[TRAINING_DOC.index("One config file per kind of model"):]
    paragraph = " ".join(paragraph[: paragraph.index("\n\n")].split())
    for path in sorted((REPO / "experiments" / "configs").glob("[!_]*.py")):
        module = importlib.import_module(f"experiments.configs.{path.stem}")
        listed = re.search(rf"`{re.escape(path.name)}`[^;]*?(?:has|have) ((?:`\w+`(?:, )?)+)", paragraph)
        assert listed, f"docs/training.md does not list {path.name}'s variants"
        assert re.findall(r"`(\w+)`", listed.group(1)) == list(module.VARIANTS), path.name


# ----------------------------------------------------------------------------- extras and pins


def _extras() -> dict:
    setup = configparser.ConfigParser()
    setup.read(REPO / "setup.cfg")
    return {name: [Requirement(line) for line in value.strip().splitlines() if line.strip()]
            for name, value in setup["options.extras_require"].items()}


def _pins() -> dict:
    pins = {}
    for line in (REPO / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, version = line.split("==")
            pins[name.lower()] = version
    return pins


def test_the_tensorboard_command_the_docs_give_has_an_extra_that_installs_it():
    assert [requirement.name for requirement in _extras()["tensorboard"]] == ["tensorboard"]
    for doc in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        text = doc.read_text()
        if "tensorboard --logdir" in text:
            assert '".[tensorboard]"' in text, f"{doc.name} runs tensorboard without saying how to install it"


def test_the_pins_satisfy_what_the_demo_extra_declares():
    """``pip install -r requirements.txt`` then ``pip install -e ".[demo]"`` must leave ``pip check`` clean."""
    try:
        declared = importlib.metadata.requires("gradio") or []
    except importlib.metadata.PackageNotFoundError:
        pytest.skip('gradio is not installed (pip install -e ".[demo]")')
    pins = _pins()
    assert pins and _extras()["demo"]
    for text in declared:
        requirement = Requirement(text)
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
            continue
        pinned = pins.get(requirement.name.lower())
        if pinned is not None:
            assert requirement.specifier.contains(pinned), f"gradio needs {requirement}; requirements.txt pins {pinned}"


def test_ci_installs_the_extras_as_users_do_and_checks_them():
    script = (REPO / ".ci" / "run").read_text()
    demo = script.index('pip install -q -e ".[demo')
    assert "python -m pip check" in script[demo:]
    after_demo = script[demo: script.index("apache-beam")]
    assert "-r requirements.txt" not in after_demo, "CI must test the environment the demo extra leaves"
