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
