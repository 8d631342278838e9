"""What a new user runs into in the first ten minutes: inputs that are not files, interrupted downloads, bad
``--set`` values, a dying launcher worker, key mismatches, a full disk and prompts the model cannot read.

Every test here is fast and needs no model compile.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- inputs that are not regular files

# Each reader runs in a child process under an alarm and a memory cap: before the check a FIFO made the readers
# block forever and /dev/zero made them read until memory ran out.
_READERS = textwrap.dedent("""
    import json, resource, signal, sys
    from pathlib import Path
    resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))

    class Hung(Exception):
        pass

    def alarm(*_):
        raise Hung("still reading after 5 s")

    signal.signal(signal.SIGALRM, alarm)
    from glide_jax.hub import model_dir, torch_zip, verify
    from glide_jax.tokenizers import SentencePieceTokenizer
    from glide_jax.tokenizers.files import find_vocab_file, read_vocab_text
    from glide_jax.train.warm_start import load_source
    from glide_jax.config import get_preset

    special, folder = Path(sys.argv[1]), Path(sys.argv[2])
    readers = {
        "load_state_dict": lambda: torch_zip.load_state_dict(special),
        "read_manifest": lambda: torch_zip.read_manifest(special),
        "verify_checkpoint": lambda: verify.verify_checkpoint(special, "base"),
        "read_vocab_text": lambda: read_vocab_text(special),
        "find_vocab_file": lambda: find_vocab_file(special.name, special.parent),
        "sentencepiece": lambda: SentencePieceTokenizer(special),
        "model_dir.load_model_dir": lambda: model_dir.load_model_dir(folder),
        "model_dir.read_params": lambda: model_dir.read_params(folder),
        "model_dir.read_sampling_file": lambda: model_dir.read_sampling_file(folder),
        "warm_start.load_source": lambda: load_source(str(folder / "state.npz"), get_preset("tiny-base")),
    }
    results = {}
    for name, reader in readers.items():
        signal.alarm(5)
        try:
            reader()
            results[name] = ["returned", ""]
        except BaseException as e:
            results[name] = [type(e).__name__, str(e)]
        finally:
            signal.alarm(0)
    print(json.dumps(results))
""")


def _special_file_results(special: Path, folder: Path) -> dict:
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", JAX_PLATFORMS="cpu")
    done = subprocess.run([sys.executable, "-c", _READERS, str(special), str(folder)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("kind", ["fifo", "dev-zero-link"])
def test_every_reader_of_user_files_refuses_what_is_not_a_regular_file(tmp_path, kind):
    def make(path: Path) -> None:
        if kind == "fifo":
            os.mkfifo(path)
        else:
            path.symlink_to("/dev/zero")

    special = tmp_path / "base.pt"
    make(special)
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    for name in ("params.zip", "sampling.json", "state.npz"):
        make(folder / name)
    results = _special_file_results(special, folder)
    words = "a named pipe (FIFO)" if kind == "fifo" else "a character device (it leads to /dev/zero)"
    assert {name: kind for name, (kind, _) in results.items()} == dict.fromkeys(results, "NotARegularFileError")
    for name, (_, message) in results.items():
        assert f"is {words}, not a regular file" in message, (name, message)


def test_a_regular_file_behind_a_symlink_is_read(tmp_path):
    from glide_jax.regular_files import check_regular_file, read_regular_bytes

    (tmp_path / "real.txt").write_bytes(b"vocabulary")
    (tmp_path / "link.txt").symlink_to(tmp_path / "real.txt")
    assert read_regular_bytes(tmp_path / "link.txt") == b"vocabulary"
    assert check_regular_file(tmp_path / "link.txt") == tmp_path / "link.txt"
    with pytest.raises(FileNotFoundError):
        check_regular_file(tmp_path / "absent.txt")


# ----------------------------------------------------------------------------- config values that cannot work

BASE_CONFIG = str(REPO / "experiments" / "configs" / "base.py") + ":micro"


@pytest.mark.parametrize("override, message", [
    ("train.steps=-5", "train.steps must be an integer >= 1, got -5"),
    ("train.batch_size=0", "train.batch_size must be an integer >= 1, got 0"),
    ("train.microbatches=0", "train.microbatches must be an integer >= 1, got 0"),
    ("train.log_every=0", "train.log_every must be an integer >= 1, got 0"),
    ("model.unet.num_channels=0", "unet.num_channels must be an integer >= 1, got 0"),
    ("model.unet.image_size=-32", "unet.image_size must be an integer >= 1, got -32"),
    ("model.unet.num_head_channels=0", "unet.num_head_channels must be an integer >= 1 (or -1), got 0"),
    ("model.unet.channel_mult=1,0,2", "unet.channel_mult[1] must be an integer >= 1, got 0"),
    ("model.unet.text.heads=0", "text.heads must be an integer >= 1, got 0"),
    ("model.unet.text.text_ctx=0", "text.text_ctx must be an integer >= 1, got 0"),
    ("model.diffusion.steps=0", "diffusion.steps must be an integer >= 1, got 0"),
    ("sample.num_images=0", "sample.num_images must be an integer >= 1, got 0"),
    ("data.caption_dropout=1.5", "data.caption_dropout must be a number in [0, 1], got 1.5"),
    ("mesh.data=0", "mesh.data must be an integer >= 1 (or -1), got 0"),
])
def test_a_count_that_cannot_work_is_one_error_naming_the_override(tmp_path, capsys, override, message):
    from experiments import common

    status = common.main("base", "test", ["--config", BASE_CONFIG, "--workdir", str(tmp_path / "run"),
                                          "--set", override])
    err = capsys.readouterr().err
    assert status == 2
    assert err.strip().splitlines() == [f"error: --set {override}: {message}"]
    assert not (tmp_path / "run").exists()


def test_clip_counts_are_checked_before_they_divide():
    import dataclasses

    from glide_jax.config import get_preset

    with pytest.raises(ValueError, match=r"^clip.patch_size must be an integer >= 1, got 0$"):
        dataclasses.replace(get_preset("tiny-clip"), patch_size=0)


# ----------------------------------------------------------------------------- state dicts of another model


def _renamed(shapes: dict, prefix: str) -> dict:
    """Every tensor of a layout under a wrong name (zero-cost arrays: only their shapes are read)."""
    import numpy as np

    return {prefix + key: np.broadcast_to(np.float32(0), shape) for key, shape in shapes.items()}


def test_a_state_dict_with_the_wrong_keys_is_summarised_not_listed():
    from glide_jax.config import get_preset
    from glide_jax.hub.convert_unet import torch_shapes, unet_from_torch
    from glide_jax.hub.torch_layout import CheckpointMismatchError

    config = get_preset("base").unet
    shapes = torch_shapes(config)
    state = _renamed(shapes, "module.")
    state["out.2.bias"] = state.pop("module.out.2.bias")[:1]  # one key right, with the wrong shape
    with pytest.raises(CheckpointMismatchError) as info:
        unet_from_torch(state, config)
    message = str(info.value)
    assert len(shapes) == 783 and len(info.value.missing) == 782 and len(info.value.unexpected) == 782
    lines = message.splitlines()
    assert lines[0] == "GLIDE U-Net: state dict does not match the model"
    assert lines[1].startswith("  missing keys (782): ") and lines[1].endswith(" and 777 more")
    assert lines[2].startswith("  unexpected keys (782): module.") and lines[2].endswith(" and 777 more")
    assert lines[3] == "  shape mismatches (1): out.2.bias: checkpoint (1,) vs model (6,)"
    assert len(lines) == 4 and len(message) < 1000


def test_clip_and_warm_start_mismatches_are_summarised_too():
    import jax

    from glide_jax.config import get_preset
    from glide_jax.hub.convert_clip import convert_clip, torch_shapes
    from glide_jax.family import abstract_params
    from glide_jax.train.warm_start import check_fits

    config = get_preset("tiny-clip")
    image, text = (_renamed(torch_shapes(config, tower), "x.") for tower in ("image", "text"))
    with pytest.raises(ValueError) as info:
        convert_clip(config, image, text)
    lines = str(info.value).splitlines()
    assert lines[0].startswith("CLIP checkpoint does not match the configuration (")
    assert [line.split(":")[0] for line in lines[1:]] == [
        f"  missing keys ({len(image) + len(text)})", f"  unexpected keys ({len(image) + len(text)})"]
    assert all(line.endswith(f" and {len(image) + len(text) - 5} more") for line in lines[1:])

    small, large = get_preset("tiny-base"), get_preset("base")
    params = jax.tree_util.tree_map(lambda leaf: leaf, abstract_params(small))
    with pytest.raises(ValueError) as info:
        check_fits(params, large, "the source")
    lines = str(info.value).splitlines()
    assert len(lines) <= 4 and all(len(line) < 1000 for line in lines)
    assert lines[0] == "the source: state dict does not match the model"


# ----------------------------------------------------------------------------- a launcher worker that dies

# Worker 1 dies at once (here: SIGKILL, as the kernel's OOM killer would); worker 0 stands for a survivor whose
# collective then fails: on SIGTERM it prints a peer's traceback, then exits 1.
_WORKERS = textwrap.dedent("""
    import os, signal, sys, time
    if os.environ["GLIDE_JAX_PROCESS_ID"] == "1":
        time.sleep(0.3)
        os.kill(os.getpid(), signal.SIGKILL)
    def peer_gone(*_):
        print("Traceback (most recent call last):", flush=True)
        print("RuntimeError: Gloo connectFullMesh failed: Connection reset by peer", flush=True)
        sys.exit(1)
    signal.signal(signal.SIGTERM, peer_gone)
    print("ready", flush=True)
    time.sleep(60)
""")


def test_the_launcher_names_the_worker_that_died_and_stops_the_others():
    import io
    import time

    from experiments import launch

    out = io.StringIO()
    started = time.monotonic()
    status = launch.launch([sys.executable, "-c", _WORKERS], 2, grace=30, out=out)
    elapsed = time.monotonic() - started
    lines = out.getvalue().splitlines()
    pid = lines[0].split("pids ")[1].split()[1]
    named = f"[launch] p1 (pid {pid}) failed first: killed by signal 9 (SIGKILL)"
    assert status == 128 + 9
    assert elapsed < 15  # the survivor was stopped at once, not after the 30 s grace
    assert lines[-1] == f"{named} (then: p0 exit status 1)"
    said = [i for i, line in enumerate(lines) if line.startswith(named)]
    gloo = [i for i, line in enumerate(lines) if "Connection reset by peer" in line]
    assert len(said) == 2 and gloo and said[0] < gloo[0]  # named before the survivor's noise, and last


# ----------------------------------------------------------------------------- a full disk during training

_TENSORSTORE_WORDS = ('RESOURCE_EXHAUSTED: Error writing "params.unet.out_2.bias/0" in OCDBT database at local file '
                      '"{run}/checkpoints/5.orbax-checkpoint-tmp/": Failed writing: "{run}/checkpoints/5.orbax-'
                      'checkpoint-tmp/d/4800": Failed to write 4878336 bytes to file 8: No space left on device '
                      "[os_error_code='28']")


@pytest.fixture
def restored_hooks(monkeypatch):
    """The boundary stays quiet for the rest of the process after a full disk: undo that after the test."""
    import logging
    import threading

    monkeypatch.setattr(threading, "excepthook", threading.excepthook)
    monkeypatch.setattr(sys, "unraisablehook", sys.unraisablehook)
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)
    monkeypatch.delenv("GLIDE_JAX_TRACEBACK", raising=False)
    yield
    for handler in [logging.lastResort, *logging.getLogger().handlers]:
        for item in list(getattr(handler, "filters", [])):
            if type(item).__name__ == "BackgroundErrors":
                handler.removeFilter(item)


def test_a_full_disk_ends_in_one_error_line_without_tracebacks(tmp_path, capsys, restored_hooks):
    """The main thread's metrics write fails on a full disk while Orbax-like threads and loggers fail too, and
    more background errors follow the failure (TensorBoard's exit hook, asyncio's unretrieved futures)."""
    import errno
    import io
    import logging
    import threading

    from glide_jax.errors import run_command
    from glide_jax.train.metrics import MetricsWriter

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)
    run = tmp_path / "run"
    run.mkdir()

    def failing_writer():
        raise ValueError(_TENSORSTORE_WORDS.format(run=run))

    def command() -> int:
        for _ in range(3):  # TensorStore's callbacks into the event loop Orbax closed when its writer failed
            try:
                raise RuntimeError("Event loop is closed")
            except RuntimeError as e:
                sys.excepthook(type(e), e, e.__traceback__)
        for _ in range(3):  # Orbax's save threads: each logs a traceback, then dies with one
            try:
                failing_writer()
            except ValueError:
                logging.getLogger("absl").exception("_SignalingThread.run() raised an exception")
            thread = threading.Thread(target=failing_writer)
            thread.start()
            thread.join()
        writer = MetricsWriter(run, enabled=True, total_steps=10)
        full = OSError(errno.ENOSPC, "No space left on device")

        def no_space(*_):
            raise full

        writer._jsonl.write = no_space
        writer.write(1, {"loss": 1.0})
        return 0

    try:
        status = run_command(command, stream)
        # what follows the failure in the real run: a closed writer's thread, an exit hook, a collected future
        late = threading.Thread(target=lambda: (_ for _ in ()).throw(OSError("handle is closed")))
        late.start()
        late.join()
        logging.getLogger("asyncio").error("_GatheringFuture exception was never retrieved",
                                           exc_info=ValueError(_TENSORSTORE_WORDS.format(run=run)))
        sys.unraisablehook(type("Unraisable", (), dict(exc_type=OSError, exc_value=OSError(errno.ENOSPC, "x"),
                                                       exc_traceback=None, err_msg="atexit", object=None))())
    finally:
        logging.getLogger().removeHandler(handler)
    captured = capsys.readouterr()
    text = stream.getvalue() + captured.err + captured.out
    lines = [line for line in text.splitlines() if line.strip()]
    assert status == 2
    assert "Traceback" not in text
    assert [line for line in lines if line.startswith("error:")] == [
        f"error: no space left on the device ({run / 'metrics.jsonl'})"]
    assert lines == [f"warning: a background writer failed: no space left on the device "
                     f"({run}/checkpoints/5.orbax-checkpoint-tmp/d/4800); the command stops when it next waits "
                     "for it",
                     f"error: no space left on the device ({run / 'metrics.jsonl'})"]


def test_other_background_errors_are_still_shown(monkeypatch, restored_hooks):
    import threading

    from glide_jax.errors import run_command

    shown = []
    monkeypatch.setattr(threading, "excepthook", lambda args: shown.append(args.exc_value))

    def command() -> int:
        thread = threading.Thread(target=lambda: (_ for _ in ()).throw(RuntimeError("a real bug")))
        thread.start()
        thread.join()
        return 0

    assert run_command(command) == 0
    assert [str(e) for e in shown] == ["a real bug"]
    assert threading.excepthook is not None and threading.excepthook.__name__ == "<lambda>"  # put back


def test_metrics_stop_with_an_error_when_tensorboards_writer_thread_died(tmp_path, monkeypatch):
    """tensorboardX's writer thread dies on a write error (a full disk); queueing more events for it then
    blocked training forever once its queue was full, and so did closing it."""
    import errno
    import threading

    from glide_jax.train.metrics import MetricsWriter

    monkeypatch.setattr(threading, "excepthook", lambda args: None)  # the thread's death is what is simulated
    writer = MetricsWriter(tmp_path, enabled=True, total_steps=100)

    def full(*_):
        raise OSError(errno.ENOSPC, "No space left on device")

    writer._tb.file_writer.event_writer._ev_writer.write_event = full
    outcome = []

    def log_steps():
        try:
            for step in range(1, 60):
                writer.write(step, {"loss": 1.0, "mse": 1.0})
                threading.Event().wait(0.01)
            outcome.append("never stopped")
        except OSError as e:
            outcome.append(str(e))
        writer.abandon()
        outcome.append("closed")

    worker = threading.Thread(target=log_steps, daemon=True)
    worker.start()
    worker.join(timeout=30)
    assert not worker.is_alive(), "writing metrics blocked on the dead writer thread"
    assert outcome == [f"[Errno {errno.EIO}] TensorBoard's event writer stopped (a write failed; is the disk full?): "
                       f"'{tmp_path / 'tensorboard'}'", "closed"]


# ----------------------------------------------------------------------------- prompts the model cannot read

EMBEDDED_BASE = REPO / "glide_jax" / "assets" / "embedded" / "base"


@pytest.fixture
def embedded_base():
    """The embedded base model's config and tokenizer, without its parameters (nothing is compiled)."""
    from glide_jax.hub.model_dir import read_config
    from glide_jax.sampling.loaded_model import LoadedModel
    from glide_jax.tokenizers import SentencePieceTokenizer

    return LoadedModel(read_config(EMBEDDED_BASE), None, SentencePieceTokenizer(EMBEDDED_BASE / "tokenizer.model"))


def _warning_lines(callback) -> list:
    """What the command line prints for the warnings ``callback`` raises (the error boundary's formatting)."""
    import contextlib
    import io

    from glide_jax.errors import user_warnings

    stream = io.StringIO()
    with contextlib.redirect_stderr(stream), user_warnings():
        callback()
    return stream.getvalue().splitlines()


def test_words_the_embedded_model_does_not_know_are_one_warning_line(embedded_base):
    from glide_jax.sampling.pipeline import warn_about_prompts

    lines = _warning_lines(lambda: warn_about_prompts(["an oil painting of a corgi"], embedded_base))
    assert lines == [
        "warning: the model does not know the words 'oil', 'painting', 'corgi' of prompt 'an oil painting of a "
        "corgi' (its vocabulary, learnt from its training captions, does not have them); it reads them as letter "
        "fragments it was not trained on, so they are ignored at best and drawn as noise at worst; its 19 tokens "
        "are cut to the first 16"]
    # the encoding the sampler then does adds no second (raw Python) warning
    assert _warning_lines(lambda: embedded_base.tokens(["an oil painting of a corgi"])) == []


def test_prompts_in_the_shapes_grammar_get_no_warning_and_long_ones_one(embedded_base):
    from glide_jax.sampling.pipeline import warn_about_prompts

    ok = ["a red circle above a blue square", "a small red triangle to the left of a yellow square"]
    assert _warning_lines(lambda: warn_about_prompts(ok, embedded_base)) == []
    long = "a red circle above a blue square " * 3
    assert _warning_lines(lambda: warn_about_prompts([long], embedded_base)) == [
        f"warning: prompt {long[:77] + '...'!r} is too long for the model: its 21 tokens are cut to the first 16 "
        "(the rest of the prompt is ignored)"]
    zebra = _warning_lines(lambda: warn_about_prompts(["a large green circle zebra"], embedded_base))
    assert len(zebra) == 1 and zebra[0].startswith("warning: the model does not know the word 'zebra' of prompt")
    assert zebra[0].endswith("(1 piece the model's vocabulary does not know)")


def test_a_tokenizer_used_directly_still_warns_in_python(embedded_base):
    from glide_jax.errors import InputWarning
    from glide_jax.tokenizers import TokenTruncationWarning

    with pytest.warns(TokenTruncationWarning, match=r"has 19 tokens but only 16 fit in the text context"):
        embedded_base.tokenizer.encode_batch(["an oil painting of a corgi"], 16)
    assert issubclass(TokenTruncationWarning, InputWarning)  # the CLI prints it as a `warning:` line
    lines = _warning_lines(lambda: embedded_base.tokenizer.encode_batch(["an oil painting of a corgi"], 16))
    assert lines == ["warning: prompt 'an oil painting of a corgi' has 19 tokens but only 16 fit in the text "
                     "context; keeping the first 16"]
