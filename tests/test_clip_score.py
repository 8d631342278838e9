"""CLIP score against torchmetrics' CLIPScore over a small random Hugging Face CLIP (the ``clipscore`` fixture).

The fixture holds the images, captions, Hugging Face's processor outputs, both embeddings, the
per-pair scores and torchmetrics' aggregate over all pairs but the last (see the fixture's README.md). Also
here: the tokenizer's truncation, the preprocessing's size arithmetic, the accumulator, strict
conversion, and a patch-16-like layout with exact GELU written to disk and loaded back.
"""

import json
import re

import jax
import numpy as np
import pytest

from glide_jax.evaluation.clip_inputs import ClipImageConfig, centre_crop, preprocess_images, resize_target
from glide_jax.evaluation.clip_score import (ClipScoreAccumulator, ClipScorer, aggregate_clip_score, clip_score,
                                             pair_scores)
from glide_jax.hub.convert_hf_clip import (HFClipMismatchError, convert_hf_clip, export_hf_clip, hf_shapes,
                                           load_hf_clip, read_hf_state)
from glide_jax.models import clip_vit
from glide_jax.parity.check import atol_factor, fixture_kind
from glide_jax.parity.clip_score import fixture_images
from glide_jax.parity.fixtures import load_fixture, nhwc
from glide_jax.tokenizers.padding import TokenTruncationWarning
from conftest import require_clipscore_fixture
from safetensors_files import write_safetensors
from tools import parity

EMBED_ATOL = 1e-4
SCORE_ATOL = 1e-3


@pytest.fixture(scope="module")
def ref():
    meta, arrays = load_fixture(require_clipscore_fixture("clipscore.npz"))
    return meta, arrays


@pytest.fixture(scope="module")
def scorer():
    return ClipScorer.from_directory(require_clipscore_fixture("clip_model"), batch_size=3)


def test_token_ids_match_hugging_face(ref, scorer):
    meta, arrays = ref
    ids, mask = scorer.tokenizer.encode_batch(meta["captions"], padding="longest")
    fits = arrays["attention_mask"].sum(1) < scorer.tokenizer.context  # the rows no truncation touched
    assert fits.all()  # the fixture's "long" caption is 72 tokens: none of its rows reach 77
    np.testing.assert_array_equal(ids, arrays["input_ids"])
    np.testing.assert_array_equal(mask, arrays["attention_mask"])
    ids77, mask77 = scorer.tokenizer.encode_batch(meta["captions"])
    assert ids77.shape == (8, 77)
    np.testing.assert_array_equal(ids77[:, :72], arrays["input_ids"])
    assert (ids77[:, 72:] == scorer.tokenizer.end_token).all() and (mask77[:, 72:] == 0).all()


def test_overlong_caption_keeps_its_end_token(ref, scorer):
    tok = scorer.tokenizer
    caption = ref[0]["captions"][-1] + " and on" * 20
    ids = tok.encode(caption)
    assert len(ids) > 75
    with pytest.warns(TokenTruncationWarning):
        rows, mask = tok.encode_batch([caption])
    # OpenAI's tokenize(truncate=True): the first 77 of [start] + ids + [end], the last replaced by end.
    want = ([tok.start_token] + ids + [tok.end_token])[:77]
    want[-1] = tok.end_token
    assert rows[0].tolist() == want and mask.sum() == 77


def test_preprocessing_matches_clip_image_processor(ref, scorer):
    _, arrays = ref
    pixels = preprocess_images(fixture_images(arrays), scorer.image_config)
    np.testing.assert_allclose(pixels, nhwc(arrays["pixel_values"]), rtol=0, atol=1e-6)


def test_resize_and_crop_arithmetic():
    config = ClipImageConfig()
    assert resize_target(300, 200, config) == (336, 224)  # long side int(224 * 300 / 200)
    assert resize_target(199, 301, config) == (224, 338)  # 338.8 truncated, not rounded
    assert resize_target(32, 32, config) == (224, 224)
    image = np.arange(5 * 6).reshape(5, 6, 1)
    assert centre_crop(image, (2, 3))[:, :, 0].tolist() == [[7, 8, 9], [13, 14, 15]]  # top 1, left 1
    padded = centre_crop(np.ones((1, 2, 1)), (4, 3))[:, :, 0]  # zeros before: 2 rows (ceil 1.5), 1 column (ceil 0.5)
    assert padded.tolist() == [[0, 0, 0], [0, 0, 0], [0, 1, 1], [0, 0, 0]]
    assert ClipImageConfig.from_dict({"size": 224, "crop_size": 224}) == config  # older int-sized configs
    with pytest.raises(ValueError, match="CHW"):
        preprocess_images([np.zeros((3, 8, 9), np.uint8)], config)


def test_embeddings_scores_and_aggregate_match_torchmetrics(ref, scorer):
    meta, arrays = ref
    images = fixture_images(arrays)
    image_embeds = scorer.image_embeddings(images)
    text_embeds = scorer.text_embeddings(meta["captions"])
    np.testing.assert_allclose(image_embeds, arrays["image_embeds"], rtol=0, atol=EMBED_ATOL)
    np.testing.assert_allclose(text_embeds, arrays["text_embeds"], rtol=0, atol=EMBED_ATOL)
    scores = pair_scores(image_embeds, text_embeds)
    np.testing.assert_allclose(scores, arrays["scores"], rtol=0, atol=SCORE_ATOL)
    np.testing.assert_allclose(scores, meta["scores"], rtol=0, atol=SCORE_ATOL)
    # torchmetrics' aggregate covers all pairs but the last (the fixture's README.md says why).
    assert abs(aggregate_clip_score(scores[:7]) - meta["clip_score"]) < SCORE_ATOL
    # Streamed in uneven batches through the scorer, merged as two hosts would be.
    first, second = ClipScoreAccumulator(), ClipScoreAccumulator()
    np.testing.assert_allclose(scorer.update(first, images[:2], meta["captions"][:2]), arrays["scores"][:2],
                               atol=SCORE_ATOL)
    total = clip_score(scorer, [(images[2:7], meta["captions"][2:7])], second)
    assert abs(total - aggregate_clip_score(scores[2:7])) < 1e-9
    merged = ClipScoreAccumulator.from_array(first.to_array() + second.to_array())
    assert merged.count == 7 and abs(merged.result() - meta["clip_score"]) < SCORE_ATOL
    assert first.merge(second) == merged
    # One compiled shape per tower whatever the number of pairs (batches padded to batch_size=3).
    assert scorer._image_fn._cache_size() == 1 and scorer._text_fn._cache_size() == 1


def test_aggregate_is_clamped_and_needs_pairs():
    assert aggregate_clip_score([-30.0, 10.0]) == 0.0
    assert ClipScoreAccumulator().update([-5.0, 1.0]).result() == 0.0
    assert ClipScoreAccumulator().update([-5.0, 1.0]).mean() == -2.0
    with pytest.raises(ValueError, match="no pairs"):
        ClipScoreAccumulator().result()
    with pytest.raises(ValueError, match="no pairs"):
        aggregate_clip_score([])
    with pytest.raises(ValueError, match="finite"):
        ClipScoreAccumulator().update([np.nan])


def test_parity_tool_recognises_the_fixture_and_fails_above_tolerance(ref, capsys):
    path = require_clipscore_fixture("clipscore.npz")
    assert fixture_kind(ref[0]) == "clip_score"
    assert parity.main([str(path), "--atol", "1e-12"]) == 1  # float32 embeddings cannot meet 1e-12
    out = capsys.readouterr().out
    rows = {name: float(err) for name, err in re.findall(r"^  (?:ok  |FAIL) (\S+) +max_abs=(\S+)", out, flags=re.M)}
    assert set(rows) == {f"clipscore/{n}" for n in ("pixel_values", "input_ids", "attention_mask", "image_embeds",
                                                     "text_embeds", "scores", "clip_score")}
    assert rows["clipscore/pixel_values"] == rows["clipscore/input_ids"] == 0.0
    for name, abs_err in rows.items():  # the default run's tolerances: 1e-4, and 1e-3 for scores
        assert abs_err <= EMBED_ATOL * atol_factor(name), (name, abs_err)
    assert atol_factor("clipscore/scores") * EMBED_ATOL == pytest.approx(SCORE_ATOL)


def test_strict_conversion_summarises_problems():
    state = read_hf_state(require_clipscore_fixture("clip_model"))
    config = load_hf_clip(require_clipscore_fixture("clip_model"))[0]
    broken = dict(state)
    for key in sorted(k for k in state if ".layers.1." in k)[:7]:
        del broken[key]
    broken["vision_model.extra.weight"] = np.zeros(3)
    broken["text_projection.weight"] = np.zeros((32, 65), np.float32)
    broken["text_model.embeddings.position_ids"] = np.arange(77)[None]  # a buffer, skipped
    with pytest.raises(HFClipMismatchError) as info:
        convert_hf_clip(config, broken)
    message = str(info.value)
    assert "7 missing" in message and "(2 more)" in message
    assert "1 unexpected: vision_model.extra.weight" in message
    assert "1 mis-shaped: text_projection.weight (32, 65) (expected (32, 64))" in message
    assert info.value.missing == sorted(k for k in state if ".layers.1." in k)[:7]


def test_model_rejects_nchw_pixels(scorer):
    with pytest.raises(ValueError, match="NCHW"):
        scorer.pixel_embeddings(np.zeros((1, 3, 224, 224), np.float32))


# A tiny patch-16-like layout: smaller image, patch 16, exact GELU, pre-fix end-token id (argmax pooling).
TINY_CONFIG = {
    "model_type": "clip", "projection_dim": 16, "logit_scale_init_value": 2.6592,
    "text_config": {"hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 1, "num_attention_heads": 2,
                    "max_position_embeddings": 20, "vocab_size": 300, "hidden_act": "gelu", "eos_token_id": 2,
                    "layer_norm_eps": 1e-6},
    "vision_config": {"hidden_size": 24, "intermediate_size": 40, "num_hidden_layers": 2, "num_attention_heads": 3,
                      "image_size": 48, "patch_size": 16, "hidden_act": "gelu", "layer_norm_eps": 1e-6},
}


def test_patch16_like_layout_round_trips_through_safetensors(tmp_path):
    config = clip_vit.ClipVitConfig.from_hf_dict(TINY_CONFIG)
    assert config.vision.patch_size == 16 and config.text.hidden_act == "gelu" and config.text.eos_token_id == 2
    rng = np.random.default_rng(1)  # random values in the model's own shapes (faster than compiling its init)
    params = jax.tree_util.tree_map(lambda leaf: (0.2 * rng.normal(size=leaf.shape)).astype(np.float32),
                                    clip_vit.abstract_params(config))
    state = export_hf_clip(params)
    assert {k: v.shape for k, v in state.items()} == hf_shapes(config)
    assert state["vision_model.embeddings.patch_embedding.weight"].shape == (24, 3, 16, 16)
    assert state["vision_model.embeddings.position_embedding.weight"].shape == (10, 24)  # 3x3 patches + class
    assert state["vision_model.pre_layrnorm.weight"].shape == (24,)
    assert state["text_model.encoder.layers.0.self_attn.k_proj.bias"].shape == (32,)
    assert state["visual_projection.weight"].shape == (16, 24) and state["text_projection.weight"].shape == (16, 32)
    assert len(state) == 16 * (2 + 1) + 7 + 4 + 2 + 1  # layers; vision, text extras; projections; scale
    (tmp_path / "config.json").write_text(json.dumps(TINY_CONFIG))
    write_safetensors(tmp_path / "model.safetensors", state, metadata={"format": "pt"})
    loaded_config, loaded = load_hf_clip(tmp_path)
    assert loaded_config == config
    flat = jax.tree_util.tree_leaves_with_path(params)
    for path, value in flat:
        got = loaded
        for part in path:
            got = got[part.key]
        np.testing.assert_array_equal(got, value)  # conversion is lossless both ways
    apply = jax.jit(clip_vit.ClipVitModel(config).apply)
    pixels = np.random.default_rng(0).normal(size=(2, 48, 48, 3)).astype(np.float32)
    # Legacy pooling reads the largest id (299 at position 2), not the first id 2 (position 3), so
    # what follows position 2 cannot change the first row's output.
    ids = np.array([[1, 7, 299, 2, 0, 0], [1, 7, 299, 5, 5, 5]], np.int32)
    image, text = apply({"params": loaded}, pixels, ids)
    assert image.shape == (2, 16) and text.shape == (2, 16) and np.isfinite(image).all()
    np.testing.assert_allclose(text[0], text[1], rtol=1e-6, atol=1e-6)
    assert np.abs(image[0] - image[1]).max() > 1e-3


def test_end_token_positions():
    ids = np.array([[49406, 320, 49407, 49407], [49406, 49407, 0, 0], [5, 9, 7, 7]])
    assert clip_vit.eos_positions(ids, 49407).tolist() == [2, 1, 0]
    assert clip_vit.eos_positions(ids[2:], 7).tolist() == [2]
    assert clip_vit.eos_positions(ids[2:], clip_vit.LEGACY_EOS_TOKEN_ID).tolist() == [1]


@pytest.mark.parametrize("name, vision, text, projection, positions", [
    ("base-patch32", (768, 12, 12, 3072, 32), (512, 12, 8, 2048), 512, 50),
    ("base-patch16", (768, 12, 12, 3072, 16), (512, 12, 8, 2048), 512, 197),
    ("large-patch14", (1024, 24, 16, 4096, 14), (768, 12, 12, 3072), 768, 257),
])
def test_openai_layouts(name, vision, text, projection, positions):
    """The shapes of OpenAI's three released layouts, computed without allocating a parameter."""
    hf = {"projection_dim": projection, "text_config": dict(zip(
        ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size"), text), eos_token_id=2),
        "vision_config": dict(zip(("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                                   "patch_size"), vision))}
    shapes = hf_shapes(clip_vit.ClipVitConfig.from_hf_dict(hf))
    width, layers = vision[0], vision[1]
    assert shapes["vision_model.embeddings.position_embedding.weight"] == (positions, width)
    assert shapes["vision_model.embeddings.patch_embedding.weight"] == (width, 3, vision[4], vision[4])
    assert shapes[f"vision_model.encoder.layers.{layers - 1}.mlp.fc1.weight"] == (vision[3], width)
    assert shapes["text_model.embeddings.token_embedding.weight"] == (49408, text[0])
    assert shapes["text_model.embeddings.position_embedding.weight"] == (77, text[0])
    assert shapes["visual_projection.weight"] == (projection, width)
    assert shapes["text_projection.weight"] == (projection, text[0])
    assert shapes["logit_scale"] == ()
    assert len(shapes) == 16 * (vision[1] + text[1]) + 7 + 4 + 2 + 1  # layers; vision, text extras; projections; scale
