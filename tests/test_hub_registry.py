"""The model registry: every kind of source resolves to a LoadedModel, and bad sources say what is accepted."""

import json

import jax
import numpy as np
import optax
import pytest
from conftest import require_fixture
from test_checkpoints import write_torch_zip

from glide_jax.config import config_to_dict, get_preset
from glide_jax.hub import embedded, model_dir, registry, released
from glide_jax.sampling import loading
from glide_jax.family import abstract_params
from glide_jax.sampling.options import StageOptions
from model_files import read_card, unet_to_torch


def _variables(name: str, seed: int = 0):
    """Random parameters of the preset's shapes (cheaper than initialising the network)."""
    rng = np.random.default_rng(seed)
    shapes = abstract_params(get_preset(name))
    return {"params": jax.tree.map(lambda a: rng.normal(0, 0.1, a.shape).astype(np.float32), shapes)}


def _assert_same(a, b):
    flat_a, flat_b = model_dir.flatten_tree(a), model_dir.flatten_tree(b)
    assert flat_a.keys() == flat_b.keys()
    for key in flat_a:
        np.testing.assert_array_equal(flat_a[key], flat_b[key], err_msg=key)


def _write_pt(path, variables):
    state = {k: np.ascontiguousarray(v) for k, v in unet_to_torch(variables).items()}
    write_torch_zip(path, {k: (v, (v.shape, tuple(s // v.itemsize for s in v.strides))) for k, v in state.items()})


def test_an_embedded_name_carries_its_tokenizer_and_recommendations():
    base = loading.resolve("embedded-base")
    assert base.family.name == "unet" and base.source == "embedded-base"
    assert base.sampling == StageOptions("ddpm", 20, start=0.85, canvas=(200, 200, 200), guidance_interval=(0.5, 1.0))
    assert base.guidance_scale == 3.0
    assert type(base.tokenizer).__name__ == "SentencePieceTokenizer"
    tokens, mask = base.tokens(["a red circle", ""])
    assert tokens.shape == mask.shape == (2, base.config.unet.text.text_ctx) and mask[0].sum() > mask[1].sum()
    clip = loading.resolve("embedded-clip")
    tokens, lengths = clip.tokens(["a red circle", ""])
    assert clip.family.name == "clip" and lengths.tolist()[1] == 1 and lengths[0] > 1


def test_a_model_directory_resolves_with_its_own_files(tmp_path):
    rng = np.random.default_rng(0)  # the registry reads what the folder holds; any tree will do
    variables = {"params": {"a": {"kernel": rng.normal(size=(4, 3)).astype(np.float32)},
                            "b": rng.normal(size=(3,)).astype(np.float32)}}
    sampling = {"sampler": "ddim", "steps": 11, "guidance_scale": 1.5,
                "prompt_rewrites": [{"pattern": "(.*) please", "replacement": r"\1", "note": "polite"}]}
    tokenizer = embedded.embedded_dir("base") / "tokenizer.model"  # any sentencepiece model will do
    model_dir.save_model_dir(tmp_path / "m", get_preset("tiny-base"), variables, dtype="float16",
                             tokenizer_file=tokenizer, sampling=sampling)
    model = loading.resolve(tmp_path / "m")
    assert model.config == get_preset("tiny-base") and model.source == str(tmp_path / "m")
    assert model.sampling == StageOptions("ddim", 11) and model.guidance_scale == 1.5
    assert model.prompt_rewrites("a square please") == "a square"
    assert type(model.tokenizer).__name__ == "SentencePieceTokenizer"
    widened = jax.tree.map(lambda a: np.asarray(a, np.float16).astype(np.float32), variables)
    _assert_same(model.params, widened)


def test_a_training_workdir_resolves_to_its_newest_ema_weights(tmp_path):
    from glide_jax.train.checkpointing import Checkpointer
    from glide_jax.train.state import create_state

    config = get_preset("tiny-clip")
    experiment = {"task": "clip", "model": config_to_dict(config)}
    params = _variables("tiny-clip", seed=1)["params"]
    checkpointer = Checkpointer(tmp_path / "run", async_save=False)
    for step in (1, 2):
        state = create_state(params, optax.sgd(0.1), seed=0)
        state = state.replace(step=np.int32(step), ema_params=jax.tree.map(lambda a: a * 0.5 * step, params))
        checkpointer.save(state, None, experiment)
    checkpointer.close()
    (tmp_path / "run" / "tokenizer.model").write_bytes(
        (embedded.embedded_dir("clip") / "tokenizer.model").read_bytes())
    model = loading.resolve(str(tmp_path / "run"))
    assert model.config == config and model.family.name == "clip" and "newest EMA" in model.source
    want = {"params": jax.tree.map(lambda a: np.asarray(a * 0.5 * 2), params)}
    _assert_same(model.params, want)
    assert type(model.tokenizer).__name__ == "SentencePieceTokenizer"
    config_again, params_again = registry.load_model(tmp_path / "run" / "checkpoints")
    assert config_again == config
    _assert_same(params_again, want)


@pytest.fixture
def tiny_releases(monkeypatch):
    """The released names build tiny networks, so fake tiny .pt files stand in for the downloads."""
    monkeypatch.setitem(released.RELEASED_PRESETS, "base", "tiny-base")
    monkeypatch.setitem(released.RELEASED_PRESETS, "base-inpaint", "tiny-inpaint")
    monkeypatch.setitem(released.RELEASED_PRESETS, "upsample", "tiny-upsample")
    monkeypatch.setitem(released.RELEASED_PRESETS, "upsample-inpaint", "tiny-upsample-inpaint")


def test_a_released_name_is_converted_into_the_cache_once(tmp_path, tiny_releases, monkeypatch):
    variables = _variables("tiny-base", seed=4)
    _write_pt(tmp_path / "base.pt", variables)
    model = loading.resolve("base", cache_dir=tmp_path, vocab_dir=require_fixture("tokenizer"))
    converted = tmp_path / "converted" / "base"
    assert model_dir.is_model_dir(converted) and model.config == get_preset("tiny-base")
    assert type(model.tokenizer).__name__ == "GlideBPETokenizer"  # no tokenizer.model: the family's default
    _assert_same(model.params, variables)
    assert read_card(converted)["converted_from"] == ["base.pt"]

    def no_conversion(*args, **kwargs):
        raise AssertionError("converted twice")

    monkeypatch.setattr(released, "convert_released", no_conversion)
    _assert_same(registry.load_model("base", cache_dir=tmp_path)[1], variables)


def test_a_cached_conversion_in_the_old_orbax_format_is_converted_again(tmp_path, tiny_releases):
    variables = _variables("tiny-base", seed=5)
    _write_pt(tmp_path / "base.pt", variables)
    old = tmp_path / "converted" / "base"
    (old / "params").mkdir(parents=True)
    (old / "config.json").write_text(json.dumps(config_to_dict(get_preset("tiny-base"))))
    _, params = registry.load_model("base", cache_dir=tmp_path)
    _assert_same(params, variables)
    assert model_dir.is_model_dir(old) and not (old / "params").exists()


def test_a_pt_file_is_identified_by_its_weights_or_named(tmp_path, tiny_releases):
    base, inpaint = _variables("tiny-base", seed=6), _variables("tiny-inpaint", seed=7)
    _write_pt(tmp_path / "mystery.pt", inpaint)
    model = loading.resolve(tmp_path / "mystery.pt", vocab_dir=require_fixture("tokenizer"))
    assert model.config == get_preset("tiny-inpaint") and "base-inpaint, identified from its weights" in model.source
    _assert_same(model.params, inpaint)
    _write_pt(tmp_path / "named.pt", base)
    config, params = registry.load_model(tmp_path / "named.pt", preset="tiny-base")
    assert config == get_preset("tiny-base")
    _assert_same(params, base)
    with pytest.raises(ValueError, match=r"cannot tell which model.*\[32, 4, 3, 3\].*none of the released U-Nets"):
        released.identify_preset({released.FIRST_CONV: np.zeros((32, 4, 3, 3))})
    with pytest.raises(ValueError, match="not a GLIDE U-Net checkpoint"):
        released.identify_preset({"visual.conv1.weight": np.zeros(1)})
    with pytest.raises(ValueError, match="preset= is for .pt files"):
        loading.resolve("embedded-base", preset="base")


def test_bad_sources_list_what_is_accepted(tmp_path):
    with pytest.raises(FileNotFoundError, match="released name .*base-inpaint.*training workdir.*pt file"):
        loading.resolve("embedded-bass")
    with pytest.raises(FileNotFoundError, match="neither a model directory .* nor a training workdir"):
        loading.resolve(tmp_path)
    with pytest.raises(FileNotFoundError, match="glide-jax download base"):
        loading.resolve("base", cache_dir=tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="glide-jax download clip/image-enc clip/text-enc"):
        registry.load_model("clip", cache_dir=tmp_path / "empty")
    old = tmp_path / "old"
    (old / "params").mkdir(parents=True)
    (old / "config.json").write_text("{}")
    with pytest.raises(model_dir.OutdatedModelDirError, match="glide-jax convert NAME"):
        loading.resolve(old)


def test_model_sets_name_each_role():
    shipped, openai = loading.MODEL_SETS["embedded"], loading.MODEL_SETS["openai"]
    assert (shipped.base, shipped.inpaint, shipped.upsample_inpaint) == (
        "embedded-base", "embedded-inpaint", "embedded-upsample")
    assert (openai.base, openai.upsample, openai.inpaint, openai.upsample_inpaint, openai.clip) == released.RELEASED
    pipe = loading.load_pipeline("embedded")  # a set's name, as the CLI's --model takes it
    assert pipe.base.source == "embedded-base" and pipe.upsampler.source == "embedded-upsample"
