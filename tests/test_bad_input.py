"""What bad input gets, end to end: the CLI, the training entry point and the library, one case per row.

Every case runs once (module fixture); each is then checked for its exit status
and message, and ``docs/errors.md`` must equal the table rendered from what the
cases actually printed, so the documented messages cannot drift from the code.
Rewrite that file after changing a message with
``GLIDE_JAX_WRITE_ERROR_TABLE=1 python -m pytest tests/test_bad_input.py``.
"""

from __future__ import annotations

import dataclasses
import http.server
import io
import os
import pickle
import struct
import threading
import warnings
import zlib
from pathlib import Path
from typing import Callable, List

import numpy as np
import pytest
from PIL import Image

from glide_jax.cli import main as cli_main
from glide_jax.errors import user_warnings

TABLE = Path(__file__).resolve().parents[1] / "docs" / "errors.md"
FAST = ["--steps", "2", "--sampler", "ddim", "--no-progress"]  # sampling cases only need to get through


@dataclasses.dataclass
class Outcome:
    status: str  # the exit status of a command, or the exception a library call raised ("-" for none)
    message: str  # the first error or warning line, with the test's temporary folder shown as <tmp>


@dataclasses.dataclass
class Case:
    where: str  # "glide-jax", "training" or "library"
    given: str  # the input, as the table shows it
    run: Callable[[Path], Outcome]
    status: str  # expected status
    says: str  # a fragment the message must contain


# ----------------------------------------------------------------------------- inputs


def _png(path: Path, array: np.ndarray, mode=None) -> Path:
    Image.fromarray(array, mode=mode).save(path)
    return path


def _bomb_png(path: Path) -> Path:
    """A valid PNG header declaring 30000 x 30000 pixels: PIL refuses it before decoding anything."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 30000, 30000, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


def _refused_pickle_pt(path: Path) -> Path:
    class Payload:
        def __reduce__(self):
            return os.system, ("echo this must never run",)

    import zipfile

    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", pickle.dumps({"w": Payload()}, protocol=2))
    return path


def _model_dir(tmp: Path, damage: Callable[[Path], None]) -> Path:
    from glide_jax.hub.model_dir import save_model_dir
    from glide_jax.sampling.loading import resolve

    model = resolve("embedded-base")
    target = tmp / "model"
    save_model_dir(target, model.config, model.params)
    damage(target)
    return target


def _mask(tmp: Path, values: np.ndarray, mode=None) -> Path:
    return _png(tmp / "mask.png", values, mode)


def _half_white(dtype=np.uint8, top=255, grey=None) -> np.ndarray:
    mask = np.full((32, 32), top, dtype)
    mask[8:24, 8:24] = 0
    if grey is not None:
        mask[0, :4] = grey
    return mask


class _Server:
    """A loopback HTTP server answering every path with one body and content type."""

    def __init__(self, body: bytes, content_type: str):
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


# ----------------------------------------------------------------------------- runners


def _first_line(text: str, tmp: Path) -> str:
    lines = [line for line in text.splitlines() if line.startswith(("error:", "warning:"))]
    line = lines[0] if lines else (text.strip().splitlines() or [""])[-1]
    return line.replace(str(tmp), "<tmp>")


def _command(function, argv: List[str], tmp: Path) -> Outcome:
    err = io.StringIO()
    import contextlib

    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            status = function(argv)
        except SystemExit as e:  # argparse
            status = e.code
    return Outcome(str(status), _first_line(err.getvalue(), tmp))


def cli(*argv: str, out: bool = True) -> Callable[[Path], Outcome]:
    def run(tmp: Path) -> Outcome:
        args = [a.replace("<tmp>", str(tmp)) for a in argv]
        if out and "--out" not in args:
            args += ["--out", str(tmp / "out")]
        return _command(cli_main, args, tmp)

    return run


def prepared(setup: Callable[[Path], None], then: Callable[[Path], Outcome]) -> Callable[[Path], Outcome]:
    def run(tmp: Path) -> Outcome:
        setup(tmp)
        return then(tmp)

    return run


def train(*argv: str) -> Callable[[Path], Outcome]:
    def run(tmp: Path) -> Outcome:
        from experiments.common import main

        args = [a.replace("<tmp>", str(tmp)) for a in argv]
        return _command(lambda a: main("base", "test", a), args, tmp)

    return run


def library(call: Callable[[Path], object]) -> Callable[[Path], Outcome]:
    def run(tmp: Path) -> Outcome:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                call(tmp)
            except Exception as e:  # the outcome is the exception's type and message
                return Outcome(type(e).__name__, str(e).replace(str(tmp), "<tmp>"))
        said = [str(w.message) for w in caught if "InputWarning" in type(w.message).__name__ or
                w.category.__name__ == "InputWarning"]
        return Outcome("-", ("warning: " + said[0]).replace(str(tmp), "<tmp>") if said else "")

    return run


def _pipeline():
    from glide_jax.sampling.loading import load_pipeline

    return load_pipeline("embedded-base", None)


def _with_download_server(body: bytes, content_type: str, argv: List[str]) -> Callable[[Path], Outcome]:
    def run(tmp: Path) -> Outcome:
        from glide_jax.hub import download

        server = _Server(body, content_type)
        saved = dict(download.CHECKPOINTS)
        try:
            download.CHECKPOINTS["base"] = dataclasses.replace(saved["base"], url=server.url + "base.pt")
            outcome = cli(*argv, "--cache-dir", "<tmp>/cache", out=False)(tmp)
        finally:
            download.CHECKPOINTS.update(saved)
            server.close()
        outcome.message = outcome.message.replace(server.url, "http://<server>/")
        left = sorted(p.name for p in (tmp / "cache").iterdir() if not p.name.endswith(".lock"))
        assert left == [], f"a failed download left {left}"
        return outcome

    return run


def _unreachable_download(tmp: Path) -> Outcome:
    from glide_jax.hub import download

    saved = dict(download.CHECKPOINTS)
    try:
        download.CHECKPOINTS["base"] = dataclasses.replace(saved["base"], url="http://127.0.0.1:9/base.pt")
        outcome = cli("download", "base", "--cache-dir", "<tmp>/cache", out=False)(tmp)
    finally:
        download.CHECKPOINTS.update(saved)
    outcome.message = outcome.message.split(" failed: ")[0] + " failed: <connection refused>; " + \
        outcome.message.split("; ", 1)[-1]
    return outcome


def _corrupt_checkpoints(tmp: Path) -> None:
    from glide_jax.train.checkpointing import Checkpointer

    workdir = tmp / "run"
    _tiny_checkpoints(workdir)
    for data in (workdir / "checkpoints").rglob("*"):
        if data.is_file() and data.stat().st_size > 64 and "train" in data.parts:
            data.write_bytes(b"\0" * 8)
    assert Checkpointer(workdir).all_steps()


def _tiny_checkpoints(workdir: Path) -> None:
    """Two saved steps of a tiny state (params, EMA and optimiser of a few floats), as a run writes them."""
    import jax.numpy as jnp
    import optax

    from glide_jax.train.checkpointing import Checkpointer
    from glide_jax.train.state import create_state

    tx = optax.adam(1e-3)
    state = create_state({"params": {"w": jnp.ones((4,))}}, tx, 0)
    saver = Checkpointer(workdir, async_save=False)
    for step in (1, 2):
        saver.save(state.replace(step=jnp.asarray(step, state.step.dtype)))
    saver.close()


def _restore_corrupt(tmp: Path):
    import jax
    import jax.numpy as jnp
    import optax

    from glide_jax.train.checkpointing import Checkpointer
    from glide_jax.train.state import create_state

    abstract = jax.eval_shape(lambda: create_state({"params": {"w": jnp.ones((4,))}}, optax.adam(1e-3), 0))
    Checkpointer(tmp / "run").restore(abstract)


CASES = {
    # --- images and masks
    "not-an-image": Case("glide-jax", "`edit --image notes.png` (a text file)",
                         prepared(lambda t: (t / "notes.png").write_text("hello"),
                                  cli("edit", "--image", "<tmp>/notes.png", "--prompt", "a red circle", *FAST)),
                         "2", "is not a readable image"),
    "truncated-png": Case("glide-jax", "`edit --image cut.png` (a PNG cut in half)",
                          prepared(lambda t: (t / "cut.png").write_bytes(
                              _png(t / "full.png", np.random.default_rng(0).integers(0, 255, (32, 32, 3), np.uint8))
                              .read_bytes()[:1500]),
                              cli("edit", "--image", "<tmp>/cut.png", "--prompt", "a red circle", *FAST)),
                          "2", "is not a readable image"),
    "bomb-png": Case("glide-jax", "`edit --image bomb.png` (declares 30000 x 30000 pixels)",
                     prepared(lambda t: _bomb_png(t / "bomb.png"),
                              cli("edit", "--image", "<tmp>/bomb.png", "--prompt", "a red circle", *FAST)),
                     "2", "too large to decode safely"),
    "missing-image": Case("glide-jax", "`edit --image missing.png` (no such file)",
                          cli("edit", "--image", "<tmp>/missing.png", "--prompt", "a red circle", *FAST),
                          "2", "does not exist"),
    "grey-mask": Case("glide-jax", "`inpaint --mask` with grey levels (8-bit)",
                      prepared(lambda t: (_png(t / "image.png", np.zeros((32, 32, 3), np.uint8)),
                                          _mask(t, _half_white(grey=100))),
                               cli("inpaint", "--image", "<tmp>/image.png", "--mask", "<tmp>/mask.png", "--prompt",
                                   "a red circle", "--upsampler", "none", *FAST)),
                      "0", "grey pixels"),
    "16-bit-mask": Case("glide-jax", "`inpaint --mask` saved as a 16-bit PNG with grey levels",
                        prepared(lambda t: (_png(t / "image.png", np.zeros((32, 32, 3), np.uint8)),
                                            _mask(t, _half_white(np.uint16, 65535, 30000))),
                                 cli("inpaint", "--image", "<tmp>/image.png", "--mask", "<tmp>/mask.png", "--prompt",
                                     "a red circle", "--upsampler", "none", *FAST)),
                        "0", "at or above half of white (32768)"),
    "white-mask": Case("glide-jax", "`inpaint --mask` all white (nothing to fill)",
                       prepared(lambda t: (_png(t / "image.png", np.zeros((32, 32, 3), np.uint8)),
                                           _mask(t, np.full((32, 32), 255, np.uint8))),
                                cli("inpaint", "--image", "<tmp>/image.png", "--mask", "<tmp>/mask.png", "--prompt",
                                    "a red circle", "--upsampler", "none", *FAST)),
                       "2", "nothing to fill in"),
    # --- prompts
    "empty-prompt": Case("glide-jax", '`generate ""`', cli("generate", "", "--upsampler", "none", *FAST),
                         "0", "is empty"),
    "unknown-prompt": Case("glide-jax", "`generate \"🙂🙂\"` (nothing the shapes vocabulary knows)",
                           cli("generate", "🙂🙂", "--upsampler", "none", *FAST), "0", "no word the model's vocabulary"),
    "split-prompt": Case("glide-jax", "`generate a red circle` (unquoted)",
                         cli("generate", "a", "red", "circle", "--upsampler", "none", *FAST), "0",
                         "3 prompts of one word each"),
    # --- numbers and flags
    "batch-size-0": Case("glide-jax", "`generate ... --batch-size 0`",
                         cli("generate", "a red circle", "--batch-size", "0", *FAST), "2", "--batch-size must be >= 1"),
    "n-0": Case("glide-jax", "`generate ... --n 0`", cli("generate", "a red circle", "--n", "0", *FAST),
                "2", "--n must be >= 1"),
    "seed-overflow": Case("glide-jax", "`generate ... --seed 99999999999999999999`",
                          cli("generate", "a red circle", "--seed", "99999999999999999999", *FAST), "2",
                          "seed must be an integer in [0, 4294967295]"),
    "steps-negative": Case("glide-jax", "`generate ... --steps -1`",
                           cli("generate", "a red circle", "--steps", "-1", "--no-progress"), "2",
                           "steps must be >= 1, got -1"),
    "upsample-guidance": Case("glide-jax", "`upsample ... --guidance 3` (the upsampler is not guided)",
                              cli("upsample", "--image", "x.png", "--prompt", "a", "--guidance", "3"), "2",
                              "unrecognized arguments: --guidance"),
    # --- output folder
    "out-is-file": Case("glide-jax", "`generate ... --out taken.txt` (a file)",
                        prepared(lambda t: (t / "taken.txt").write_text("keep me"),
                                 cli("generate", "a red circle", "--out", "<tmp>/taken.txt", *FAST)),
                        "2", "is a file"),
    "out-under-file": Case("glide-jax", "`generate ... --out taken.txt/images`",
                           prepared(lambda t: (t / "taken.txt").write_text("keep me"),
                                    cli("generate", "a red circle", "--out", "<tmp>/taken.txt/images", *FAST)),
                           "2", "lies under a file"),
    # --- models and checkpoints
    "missing-model": Case("glide-jax", "`--model missing/`", cli("generate", "x", "--model", "<tmp>/missing", *FAST),
                          "2", "missing"),
    "random-params": Case("glide-jax", "`--model dir` whose params.zip is random bytes",
                          lambda t: cli("generate", "x", "--model", str(_model_dir(t, lambda d: (d / "params.zip")
                                        .write_bytes(np.random.default_rng(0).bytes(4096)))), "--upsampler", "none",
                                        *FAST)(t),
                          "2", "params.zip is not a zip archive"),
    "truncated-params": Case("glide-jax", "`--model dir` whose params.zip is cut short",
                             lambda t: cli("generate", "x", "--model", str(_model_dir(t, lambda d: (d / "params.zip")
                                           .write_bytes((d / "params.zip").read_bytes()[:50_000]))), "--upsampler",
                                           "none", *FAST)(t),
                             "2", "params.zip is not a zip archive"),
    "bad-config-json": Case("glide-jax", "`--model dir` whose config.json is not JSON",
                            lambda t: cli("generate", "x", "--model", str(_model_dir(t, lambda d: (d / "config.json")
                                          .write_text("{not json"))), "--upsampler", "none", *FAST)(t),
                            "2", "config.json is not valid JSON"),
    "pickled-code": Case("glide-jax", "`--model evil.pt` (its pickle calls os.system)",
                         prepared(lambda t: _refused_pickle_pt(t / "evil.pt"),
                                  cli("generate", "x", "--model", "<tmp>/evil.pt", *FAST)),
                         "2", "refusing to load"),
    "convert-not-downloaded": Case("glide-jax", "`convert base` before `download base`",
                                   lambda t: _in_cache(t, lambda: cli("convert", "base", out=False)(t)),
                                   "2", "is not downloaded"),
    "convert-damaged": Case("glide-jax", "`convert base` with a web page cached as base.pt",
                            lambda t: _in_cache(t, lambda: cli("convert", "base", out=False)(t),
                                                {"base.pt": b"<!DOCTYPE html><html>503</html>"}),
                            "2", "run `glide-jax download base` again"),
    "download-unreachable": Case("glide-jax", "`download base`, server unreachable", _unreachable_download,
                                 "2", "nothing was saved"),
    "download-html": Case("glide-jax", "`download base`, the server answers with a web page",
                          _with_download_server(b"<html>Service unavailable</html>", "text/html",
                                                ["download", "base"]),
                          "2", "sent a web page"),
    "download-not-checkpoint": Case("glide-jax", "`download base`, the server sends other bytes",
                                    _with_download_server(b"PK\x03\x04 not really a zip" * 10,
                                                          "application/octet-stream", ["download", "base"]),
                                    "2", "is not an intact released 'base' checkpoint"),
    # --- training
    "workdir-file": Case("training", "`--workdir run.txt` (a file)",
                         prepared(lambda t: (t / "run.txt").write_text("keep me"),
                                  train("--config", "experiments/configs/base.py:micro", "--workdir",
                                        "<tmp>/run.txt")),
                         "2", "is a file"),
    "workdir-under-file": Case("training", "`--workdir run.txt/base`",
                               prepared(lambda t: (t / "run.txt").write_text("keep me"),
                                        train("--config", "experiments/configs/base.py:micro", "--workdir",
                                              "<tmp>/run.txt/base")),
                               "2", "lies under a file"),
    "config-missing": Case("training", "`--config missing.py`",
                           train("--config", "<tmp>/missing.py", "--workdir", "<tmp>/run"), "2", "missing.py"),
    "config-field": Case("training", "`--set train.nope=1`",
                         train("--config", "experiments/configs/base.py:micro", "--workdir", "<tmp>/run", "--set",
                               "train.nope=1"), "2", "nope"),
    "config-task": Case("training", "`train_base --config experiments/configs/clip.py:micro`",
                        train("--config", "experiments/configs/clip.py:micro", "--workdir", "<tmp>/run"), "2",
                        "use experiments.train (or experiments.train_clip)"),
    "all-checkpoints-corrupt": Case("library", "`Checkpointer.restore` when every checkpoint is damaged "
                                    "(training stops the same way, exit 2)",
                                    library(lambda t: (_corrupt_checkpoints(t), _restore_corrupt(t))),
                                    "AllCheckpointsCorruptError", "restart_if_corrupt=true"),
    # --- library calls
    "nan-init-image": Case("library", "`Pipeline.generate(init_image=...)` holding NaN",
                           library(lambda t: _pipeline().generate(
                               "a red circle", init_image=np.full((32, 32, 3), np.nan, np.float32), upsample=None)),
                           "InputError", "NaN or infinite values"),
    "seed-2-32": Case("library", "`Pipeline.generate(seed=2**32)`",
                      library(lambda t: _pipeline().generate("a red circle", seed=2 ** 32, upsample=None)),
                      "InputError", "would repeat a smaller one"),
    "whitespace-prompt": Case("library", "`Pipeline.generate(\"   \")`",
                              library(lambda t: _pipeline().generate(
                                  "   ", upsample=None, base=_fast_options())),
                              "-", "is empty"),
}


def _fast_options():
    from glide_jax.sampling.options import StageOptions

    return StageOptions("ddim", 2)


def _in_cache(tmp: Path, then: Callable[[], Outcome], files=None) -> Outcome:
    cache = tmp / "cache"
    cache.mkdir(exist_ok=True)
    for name, data in (files or {}).items():
        (cache / name).write_bytes(data)
    saved = os.environ.get("GLIDE_JAX_CACHE")
    os.environ["GLIDE_JAX_CACHE"] = str(cache)
    try:
        return then()
    finally:
        if saved is None:
            del os.environ["GLIDE_JAX_CACHE"]
        else:
            os.environ["GLIDE_JAX_CACHE"] = saved


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    results = {}
    with user_warnings():
        for name, case in CASES.items():
            tmp = tmp_path_factory.mktemp(name)
            results[name] = case.run(tmp)
            if name in ("out-is-file", "out-under-file", "workdir-file", "workdir-under-file"):
                assert (tmp / "taken.txt" if "out" in name else tmp / "run.txt").read_text() == "keep me"
    return results


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_gets_its_message_and_status(outcomes, name):
    case, outcome = CASES[name], outcomes[name]
    assert outcome.status == case.status, outcome
    assert case.says in outcome.message, outcome
    if case.where != "library":
        assert outcome.message.startswith("warning: " if case.status == "0" else ("error: ", "usage: ",
                                                                                   "glide-jax: error: ")), outcome
    assert "Traceback" not in outcome.message


def render_table(outcomes) -> str:
    lines = ["# What bad input gets", "",
             "Generated by `tests/test_bad_input.py` from what each case printed (it fails when this file",
             "differs). `glide-jax` and the training entry points (`python -m experiments.train_*`) print",
             "`error: ...` and exit with status 2 for input or files they cannot use; a bug prints its",
             "traceback and exits 1 (`GLIDE_JAX_TRACEBACK=1` shows tracebacks for the errors too). Input",
             "that is used but probably not as meant prints `warning: ...` and the command goes on (status 0).",
             "Library calls raise the exception named, or warn with `glide_jax.errors.InputWarning`.", "",
             "| where | input | message | status |", "| --- | --- | --- | --- |"]
    for name, case in CASES.items():
        message = outcomes[name].message.replace("|", "\\|")
        lines.append(f"| {case.where} | {case.given} | {message} | {outcomes[name].status} |")
    return "\n".join(lines) + "\n"


def test_the_documented_table_is_what_the_cases_print(outcomes):
    table = render_table(outcomes)
    if os.environ.get("GLIDE_JAX_WRITE_ERROR_TABLE"):
        TABLE.write_text(table)
    assert TABLE.read_text() == table, "docs/errors.md is out of date: rerun with GLIDE_JAX_WRITE_ERROR_TABLE=1"


def test_the_error_boundary_names_files_of_os_errors_and_keeps_tracebacks_of_bugs(capsys):
    import errno

    from glide_jax.errors import run_command

    def full_disk():
        raise OSError(errno.ENOSPC, "No space left on device", "/data/out/generate_000.png")

    assert run_command(full_disk) == 2
    assert capsys.readouterr().err == "error: no space left on the device (/data/out/generate_000.png)\n"

    def bug():
        return {}["missing"]

    assert run_command(bug) == 1
    err = capsys.readouterr().err
    assert err.startswith("Traceback") and "KeyError: 'missing'" in err
