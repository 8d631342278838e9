"""Tokenizers against the reference ids (tokens.json from glide-text2im), truncation
warnings, vocabulary lookup, and SentencePiece training."""

import gzip
import itertools
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, require_fixture

from glide_jax.tokenizers import (
    ClipTokenizer,
    GlideBPETokenizer,
    SentencePieceTokenizer,
    TokenTruncationWarning,
    get_tokenizer,
    train_sentencepiece,
)

BPE_CTX = 128
CLIP_CTX = 77


@pytest.fixture(scope="module")
def vocab_dir() -> Path:
    return require_fixture("tokenizer")


@pytest.fixture(scope="module")
def reference() -> dict:
    return json.loads(require_fixture("tokenizer/tokens.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def entries(reference) -> list:
    return reference["entries"]


@pytest.fixture(scope="module")
def bpe(vocab_dir) -> GlideBPETokenizer:
    return GlideBPETokenizer.load(vocab_dir)


@pytest.fixture(scope="module")
def clip(vocab_dir) -> ClipTokenizer:
    return ClipTokenizer.load(vocab_dir)


# ---------------------------------------------------------------- GLIDE GPT-2 BPE


def test_bpe_vocabulary_constants(bpe, reference):
    assert reference["vocab"]["gpt2_n_vocab"] == bpe.n_vocab == 50257
    assert reference["vocab"]["gpt2_end_token"] == bpe.end_token == bpe.pad_token == 50256


def test_bpe_ids_match_reference(bpe, entries):
    assert len(entries) == 31
    for entry in entries:
        assert bpe.encode(entry["text"]) == entry["bpe"], entry["text"]


@pytest.mark.filterwarnings("ignore::glide_jax.tokenizers.TokenTruncationWarning")
def test_bpe_padding_and_mask_match_reference(bpe, entries):
    for entry in entries:
        tokens, mask = bpe.padded_tokens_and_mask(entry["bpe"], BPE_CTX)
        assert tokens == entry["bpe_padded_128"], entry["text"]
        assert mask == entry["bpe_mask_128"], entry["text"]


def test_bpe_encode_batch_matches_reference(bpe, entries):
    texts = [e["text"] for e in entries]
    with pytest.warns(TokenTruncationWarning) as record:
        tokens, mask = bpe.encode_batch(texts, BPE_CTX)
    assert tokens.dtype == np.int32 and tokens.shape == (31, BPE_CTX)
    assert mask.dtype == np.bool_ and mask.shape == (31, BPE_CTX)
    np.testing.assert_array_equal(tokens, [e["bpe_padded_128"] for e in entries])
    np.testing.assert_array_equal(mask, [e["bpe_mask_128"] for e in entries])
    too_long = [e for e in entries if len(e["bpe"]) > BPE_CTX]
    assert len(record) == len(too_long) == 2


def test_bpe_truncation_warns_and_keeps_reference_ids(bpe, entries):
    entry = next(e for e in entries if len(e["bpe"]) == 225)
    with pytest.warns(TokenTruncationWarning, match=r"'a very long prompt .*' has 225 tokens but only 128 fit"):
        tokens, mask = bpe.encode_batch([entry["text"]], BPE_CTX)
    assert tokens[0].tolist() == entry["bpe_padded_128"] == entry["bpe"][:BPE_CTX]
    assert mask[0].all()


def test_bpe_exactly_full_context_does_not_warn(bpe, entries):
    entry = next(e for e in entries if len(e["bpe"]) == 132)
    with warnings.catch_warnings():
        warnings.simplefilter("error", TokenTruncationWarning)
        tokens, mask = bpe.padded_tokens_and_mask(entry["bpe"][:BPE_CTX], BPE_CTX)
    assert tokens == entry["bpe_padded_128"] and all(mask)


def test_bpe_decode_inverts_encode_up_to_lower_case(bpe, entries):
    for entry in entries:
        assert bpe.decode(entry["bpe"]) == entry["text"].lower()


def test_bpe_lower_cases_and_treats_endoftext_as_text(bpe):
    assert bpe.encode("A CORGI") == bpe.encode("a corgi")
    assert bpe.end_token not in bpe.encode("<|endoftext|>")


def test_encode_batch_rejects_a_single_string(bpe, clip):
    with pytest.raises(TypeError):
        bpe.encode_batch("a corgi", BPE_CTX)
    with pytest.raises(TypeError):
        clip.encode_batch("a corgi")


# ---------------------------------------------------------------- CLIP SimpleTokenizer


def test_clip_vocabulary_constants(clip, reference):
    vocab = reference["vocab"]
    assert vocab["clip_n_vocab"] == clip.n_vocab == 49408
    assert vocab["clip_start_token"] == clip.start_token == 49406
    assert vocab["clip_end_token"] == clip.end_token == 49407


def test_clip_ids_match_reference(clip, entries):
    for entry in entries:
        assert clip.encode(entry["text"]) == entry["clip"], entry["text"]


@pytest.mark.filterwarnings("ignore::glide_jax.tokenizers.TokenTruncationWarning")
def test_clip_padding_and_length_match_reference(clip, entries):
    for entry in entries:
        tokens, length = clip.padded_tokens_and_len(entry["clip"], CLIP_CTX)
        assert tokens == entry["clip_padded_77"], entry["text"]
        assert length == entry["clip_len_77"], entry["text"]


def test_clip_encode_batch_matches_reference(clip, entries):
    with pytest.warns(TokenTruncationWarning) as record:
        tokens, lens = clip.encode_batch([e["text"] for e in entries])
    assert tokens.dtype == np.int32 and tokens.shape == (31, CLIP_CTX)
    assert lens.dtype == np.int32 and lens.shape == (31,)
    np.testing.assert_array_equal(tokens, [e["clip_padded_77"] for e in entries])
    np.testing.assert_array_equal(lens, [e["clip_len_77"] for e in entries])
    assert len(record) == sum(len(e["clip"]) > CLIP_CTX - 2 for e in entries) == 2


def test_clip_truncation_warns_and_keeps_reference_ids(clip, entries):
    entry = next(e for e in entries if e["text"].startswith("supercalifragilistic"))
    with pytest.warns(TokenTruncationWarning, match=r"has 108 tokens but only 75 fit"):
        tokens, lens = clip.encode_batch([entry["text"]], CLIP_CTX)
    assert tokens[0].tolist() == entry["clip_padded_77"]
    assert tokens[0, 1:-1].tolist() == entry["clip"][:75]
    assert lens.tolist() == [77]


def test_clip_special_tokens_in_text(clip):
    assert clip.encode("<|startoftext|> a <|ENDOFTEXT|>") == [49406, clip.encode("a")[0], 49407]
    assert clip.padded_tokens_and_len([], CLIP_CTX) == ([49406, 49407] + [0] * 75, 2)


def test_clip_decode_marks_word_ends(clip):
    assert clip.decode(clip.encode("Hello,   World! 42")) == "hello , world ! 4 2 "


# ---------------------------------------------------------------- vocabulary lookup


def test_plain_uncompressed_vocab_files_are_accepted(tmp_path, vocab_dir, entries):
    for name in ("encoder.json.gz", "vocab.bpe.gz", "bpe_simple_vocab_16e6.txt.gz"):
        plain = gzip.decompress((vocab_dir / name).read_bytes())
        (tmp_path / name[: -len(".gz")]).write_bytes(plain)
    entry = next(e for e in entries if e["text"].startswith("html entities"))
    assert GlideBPETokenizer.load(tmp_path).encode(entry["text"]) == entry["bpe"]
    assert ClipTokenizer.load(tmp_path / "bpe_simple_vocab_16e6.txt").encode(entry["text"]) == entry["clip"]


def test_get_tokenizer_reads_the_cache_named_by_the_environment(monkeypatch, vocab_dir, entries):
    monkeypatch.setenv("GLIDE_JAX_CACHE", str(vocab_dir))
    entry = entries[0]
    assert get_tokenizer("clip").encode(entry["text"]) == entry["clip"]
    assert get_tokenizer("glide-bpe").encode(entry["text"]) == entry["bpe"]


def test_missing_vocabulary_error_says_where_and_how_to_download(monkeypatch, tmp_path):
    monkeypatch.setenv("GLIDE_JAX_CACHE", str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError) as err:
        get_tokenizer("glide-bpe")
    message = str(err.value)
    assert str(tmp_path / "empty" / "encoder.json.gz") in message
    assert str(tmp_path / "empty" / "encoder.json") in message
    assert "glide-jax download tokenizers" in message
    assert "download('tokenizers')" in message
    with pytest.raises(FileNotFoundError, match="bpe_simple_vocab_16e6"):
        get_tokenizer("clip", tmp_path)


def test_unknown_tokenizer_kind():
    with pytest.raises(ValueError, match="glide-bpe.*clip.*sentencepiece"):
        get_tokenizer("gpt-4")


def test_importing_reads_and_creates_nothing(tmp_path):
    env = dict(os.environ, HOME=str(tmp_path / "home"), GLIDE_JAX_CACHE=str(tmp_path / "cache"))
    code = "import glide_jax.tokenizers, glide_jax.hub.download"
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=60)
    assert list(tmp_path.iterdir()) == []


def test_tokenizer_modules_import_only_the_layer_below():
    # Helpers and files import no tokenizer module; each tokenizer imports only helpers and files,
    # but hf_clip, CLIP's tokenizer with a Hugging Face checkpoint's ids, which builds on clip_bpe;
    # the factory (the package's __init__) sits on top: no module of the package imports it.
    import ast

    folder = REPO / "glide_jax" / "tokenizers"
    imports = {}
    for path in folder.glob("*.py"):
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            names = [node.module] if isinstance(node, ast.ImportFrom) and node.module else \
                [a.name for a in node.names] if isinstance(node, ast.Import) else []
            found |= {n.rsplit(".", 1)[-1] if n != "glide_jax.tokenizers" else "__init__"
                      for n in names if n.startswith("glide_jax.tokenizers")}
        imports[path.stem] = found
    assert set(imports) == {"__init__", "byte_bpe", "padding", "files", "glide_bpe", "clip_bpe", "spm", "hf_clip"}
    assert imports["byte_bpe"] == imports["padding"] == imports["files"] == set()
    assert imports["glide_bpe"] == {"byte_bpe", "files", "padding"}
    assert imports["clip_bpe"] == {"byte_bpe", "files", "padding"}
    assert imports["spm"] == {"padding"}
    assert imports["hf_clip"] == {"byte_bpe", "clip_bpe", "padding"}
    assert imports["__init__"] == {"glide_bpe", "clip_bpe", "spm", "files", "padding"}


# ---------------------------------------------------------------- SentencePiece


def _write_captions(path: Path) -> list:
    styles = ["an oil painting of", "a photo of", "a watercolor of", "a sketch of"]
    colours = ["red", "small", "fluffy", "old", "happy", "blue"]
    things = ["fox", "corgi", "cat", "robot", "teapot", "castle"]
    places = ["in the snow", "on a beach", "in a forest", "on the moon"]
    captions = [f"{s} a {c} {t} {p}" for s, c, t, p in itertools.product(styles, colours, things, places)]
    path.write_text("\n".join(captions) + "\n", encoding="utf-8")
    return captions


@pytest.fixture(scope="module")
def spm_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("spm")
    captions = _write_captions(folder / "captions.txt")
    model_file = train_sentencepiece(folder / "captions.txt", folder / "out" / "tok", 40, num_threads=1)
    return model_file, captions


def test_sentencepiece_training_writes_a_usable_model(spm_model):
    model_file, captions = spm_model
    assert model_file.name == "tok.model" and model_file.is_file()
    assert model_file.with_suffix(".vocab").is_file()
    tok = get_tokenizer(f"sentencepiece:{model_file}")
    assert isinstance(tok, SentencePieceTokenizer)
    assert tok.n_vocab == 40 and tok.pad_token == 0
    for caption in captions[::37]:
        ids = tok.encode(caption)
        assert ids and all(2 <= i < 40 for i in ids)  # never pad (0) or unknown (1)
        assert tok.decode(ids) == caption
    assert tok.encode("A Red FOX on the Moon") == tok.encode("a red fox on the moon")


def test_sentencepiece_batch_padding_and_truncation(spm_model):
    model_file, captions = spm_model
    tok = SentencePieceTokenizer(model_file)
    short, long = "a cat", " ".join(captions[:3])
    ids_short, ids_long = tok.encode(short), tok.encode(long)
    assert len(ids_short) < 16 < len(ids_long)
    with pytest.warns(TokenTruncationWarning, match=f"has {len(ids_long)} tokens but only 16 fit"):
        tokens, mask = tok.encode_batch([short, long], 16)
    assert tokens.dtype == np.int32 and mask.dtype == np.bool_
    assert tokens[0].tolist() == ids_short + [0] * (16 - len(ids_short))
    assert mask[0].tolist() == [True] * len(ids_short) + [False] * (16 - len(ids_short))
    assert tokens[1].tolist() == ids_long[:16] and mask[1].all()


def test_train_tokenizer_command(tmp_path):
    _write_captions(tmp_path / "captions.txt")
    command = [
        sys.executable, "-m", "tools.train_tokenizer",
        "--captions", str(tmp_path / "captions.txt"),
        "--out", str(tmp_path / "cli"),
        "--vocab-size", "36",
        "--model-type", "bpe",
    ]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "36 pieces, pad id 0" in result.stdout
    tok = SentencePieceTokenizer(tmp_path / "cli.model")
    assert tok.decode(tok.encode("a red fox in the snow")) == "a red fox in the snow"
