"""The embedded default models: packaging, loading, and that the default command obeys its prompt."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from glide_jax.hub import embedded
from glide_jax.config import ClipConfig, ModelConfig
from glide_jax.data import shapes


def test_save_and_load_round_trip_in_float16(tmp_path):
    from glide_jax.config import get_preset

    config = get_preset("tiny-base")
    rng = np.random.default_rng(0)
    params = {"params": {"a": {"kernel": rng.normal(size=(3, 4)).astype(np.float32)},
                         "b": rng.normal(size=(5,)).astype(np.float32)}}
    tok = tmp_path / "tok.model"
    tok.write_bytes(b"not a real tokenizer")
    stats = embedded.save_embedded(tmp_path / "m", config, params, tok, {"steps": 7})
    assert stats["num_params"] == 17
    assert 0 < stats["float16_max_abs_rounding"] < 2e-3
    info = json.loads((tmp_path / "m" / "training.json").read_text())
    assert info["steps"] == 7 and info["num_params"] == 17
    with pytest.raises(FileExistsError, match="already exists"):
        embedded.save_embedded(tmp_path / "m", config, params, tok)
    with pytest.raises(ValueError, match="float16 range.*params/b"):
        embedded.save_embedded(tmp_path / "n", config, {"params": {"b": np.array([1e6], np.float32)}}, tok)
    assert not (tmp_path / "n").exists()


def test_unknown_name_is_named():
    with pytest.raises(ValueError, match="unknown embedded model 'embedded-foo'"):
        embedded.embedded_dir("embedded-foo")
    from glide_jax.hub.model_dir import load_model

    with pytest.raises(FileNotFoundError, match="embedded-base"):
        load_model("no-such-model")


def test_an_embedded_model_can_start_a_training_run():
    # train.init_from=embedded-base (or the export folder's path) warm-starts from the shipped weights
    # and keeps their vocabulary; learning a new one would scramble the token embeddings.
    import dataclasses

    from glide_jax.hub.model_dir import load_model
    from glide_jax.train.experiment import load_config_file
    from glide_jax.train.loop import _inherited_tokenizer

    repo = Path(__file__).resolve().parents[1]
    cfg = load_config_file(f"{repo}/projects/shapes/configs/base_three_relations.py:to_1250")
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, init_from="embedded-base"))
    assert _inherited_tokenizer(cfg) == f"sentencepiece:{embedded.embedded_dir('base') / 'tokenizer.model'}"
    by_name, by_path = load_model("embedded-base"), load_model(str(embedded.embedded_dir("base")))
    assert by_name[0] == by_path[0] == cfg.model
    flat_a, flat_b = embedded._flatten(by_name[1]), embedded._flatten(by_path[1])
    assert flat_a.keys() == flat_b.keys() and all(np.array_equal(flat_a[k], flat_b[k]) for k in flat_a)


def test_shipped_models_are_complete_small_and_documented():
    total = sum(f.stat().st_size for f in embedded.ASSET_DIR.rglob("*") if f.is_file())
    assert total <= 30 * 2**20, f"embedded assets take {total / 2**20:.1f} MB"
    kinds = {}
    for name in embedded.NAMES:
        config, params = embedded.load_embedded(name)
        info = embedded.training_info(name)
        assert info["steps"] > 0 and info["logged_wall_hours"] > 0 and info["num_params"] > 0
        assert (embedded.embedded_dir(name) / "tokenizer.model").exists()
        leaves = [np.asarray(x) for x in __import__("jax").tree.leaves(params)]
        assert all(x.dtype == np.float32 and np.isfinite(x).all() for x in leaves)
        assert sum(x.size for x in leaves) == info["num_params"]
        kinds[name] = config
    assert isinstance(kinds["embedded-clip"], ClipConfig)
    base, up, inp = kinds["embedded-base"], kinds["embedded-upsample"], kinds["embedded-inpaint"]
    assert all(isinstance(c, ModelConfig) for c in (base, up, inp))
    assert not base.unet.inpaint and inp.unet.inpaint and up.unet.super_res
    assert up.low_res_size == base.unet.image_size == inp.unet.image_size == kinds["embedded-clip"].image_size


def test_default_generate_command_writes_pngs_and_the_prompt_reaches_the_model(tmp_path):
    """The README's command with the embedded default: 64x64 PNGs plus a grid, deterministic per seed,
    a different caption changes its own image only (the text path is wired, row by row), and the
    README prompt's image passes the shapes evaluator.

    How often images obey their captions is measured by ``projects.shapes.eval_shapes`` (its README);
    this checks the one image the README's command shows first.
    """
    from projects.shapes.grading import score
    from PIL import Image

    from glide_jax.cli import main

    def run(out, *prompts):
        assert main(["generate", *prompts, "--out", str(out), "--no-progress"]) == 0
        paths = sorted(out.glob("generate_0*.png"))
        assert len(paths) == len(prompts) and (out / "generate_grid.png").exists()
        return [np.asarray(Image.open(p).convert("RGB")) for p in paths]

    a = run(tmp_path / "a", "a red circle above a blue square", "a large green circle")
    b = run(tmp_path / "b", "a red circle above a blue square", "a small yellow triangle")
    assert all(im.shape == (64, 64, 3) and im.dtype == np.uint8 for im in a + b)
    np.testing.assert_array_equal(a[0], b[0])
    graded = score(a[0], "a red circle above a blue square")
    assert graded["correct"], {k: graded[k] for k in ("count", "color", "shape", "position")}
    assert np.abs(a[1].astype(int) - b[1].astype(int)).mean() > 5


def test_exported_settings_carry_no_machine_paths():
    from projects.shapes.export_embedded import _portable

    assert _portable("sentencepiece:/home/me/runs/base/tokenizer.model") == "sentencepiece:tokenizer.model"
    assert _portable("sentencepiece:runs/base_embedded_fwd/tokenizer.model") == "sentencepiece:tokenizer.model"
    assert _portable("/data/tfds/shapes/default/1.0.0") == "1.0.0"
    assert _portable("sentencepiece") == "sentencepiece" and _portable("runs/base") == "runs/base"
    assert _portable(0.75) == 0.75


def test_prompts_in_a_relation_the_base_never_saw_are_restated_and_noted():
    import dataclasses

    from glide_jax.cli import relation_notes
    from glide_jax.hub.loading import load
    from glide_jax.sampling.pipeline import Pipeline

    # The shipped base never saw "to the right of" in training (docs/training.md, session 12).
    base = load("embedded-base")
    assert base.relations == ("above", "below", "to the left of")
    assert tuple(embedded.training_info("embedded-base")["data"]["relations"]) == base.relations
    prompts = ["a red circle below a blue square", "a green square to the right of a red circle",
               "an oil painting of a corgi", "a green square to the right of a red circle"]
    notes = relation_notes(Pipeline(base), prompts)
    assert len(notes) == 2 and all("as 'a red circle to the left of a green square'" in n for n in notes)
    # A relation that cannot be restated is warned about once; a model trained on all four gets no note.
    only_above = Pipeline(dataclasses.replace(base, relations=("above",)))
    notes = relation_notes(only_above, prompts + ["a blue square to the left of a red circle"])
    assert notes[0].startswith("note: drawing 'a red circle below a blue square' as 'a blue square above a red circle'")
    assert [n for n in notes if n.startswith("warning")] == [
        "warning: the model was trained on the relations 'above' only and may draw 'to the right of' wrongly",
        "warning: the model was trained on the relations 'above' only and may draw 'to the left of' wrongly"]
    assert relation_notes(Pipeline(dataclasses.replace(base, relations=None)), prompts) == []
    # The inpainting model was fine-tuned from this base with the same relations, so it restates alike.
    assert load("embedded-inpaint").relations == base.relations


def test_trained_relations_come_from_training_json_or_a_workdirs_experiment_json(tmp_path):
    from glide_jax.hub.loading import trained_relations

    assert trained_relations(tmp_path) is None and trained_relations(None) is None
    (tmp_path / "experiment.json").write_text(json.dumps({"data": {"relations": ["above", "to the left of"]}}))
    assert trained_relations(tmp_path) == ("above", "to the left of")
    (tmp_path / "training.json").write_text(json.dumps({"data": {}}))
    assert trained_relations(tmp_path) is None
