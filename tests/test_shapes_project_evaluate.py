"""The shapes project's grader and evaluation: accuracy on clean and degraded renders, negatives,
inpainting checks, the evaluation loop and the eval_shapes tool."""

import dataclasses
import json

import numpy as np
import pytest
from conftest import require_fixture

from glide_jax.data import shapes
from glide_jax.data.shapes import ObjectSpec, format_caption, parse_caption
from glide_jax.sampling.rewrites import PromptRewrites
from projects.shapes import evaluate, grading
from projects.shapes.restate import rewrite_rules


def _renders(size, n, seed):
    rng = np.random.default_rng(seed)
    return [shapes.render_example(rng, size, "heldout" if i % 4 == 3 else "train") for i in range(n)]


def _degrade(img, rng, sigma=8.0):
    """3x3 box blur (a small Gaussian-like blur) plus Gaussian noise of ``sigma`` 8-bit levels."""
    p = np.pad(img.astype(np.float32), ((1, 1), (1, 1), (0, 0)), mode="edge")
    h, w = img.shape[:2]
    x = sum(p[dy:dy + h, dx:dx + w] for dy in range(3) for dx in range(3)) / 9
    return np.clip(np.round(x + rng.normal(0, sigma, img.shape)), 0, 255).astype(np.uint8)


N = {32: 300, 64: 300, 256: 60}


@pytest.fixture(scope="module", params=[32, 64, 256])
def renders(request):
    return request.param, _renders(request.param, N[request.param], seed=request.param)


def _check(summary, bar):
    assert summary["accuracy"] >= bar, summary
    assert all(v >= bar for v in summary["per_attribute"].values()), summary
    assert set(summary["per_attribute"]) == {"count", "color", "shape", "size", "position"}


def test_clean_renders_are_graded_correct(renders):
    size, data = renders
    summary = grading.aggregate([grading.score(img, cap) for img, cap, _ in data])
    _check(summary, 0.99)
    # the detections' geometry agrees with the renderer's metadata
    for img, _, meta in data[:40]:
        found = grading.analyse(img)
        assert len(found) == len(meta["objects"])
        for o in meta["objects"]:
            d = next(d for d in found if d.color == o["color"])
            assert np.allclose(d.bbox, o["bbox"], atol=1.5 / size)
            assert abs(d.extent - o["extent"]) <= 1.5 / size


def test_degraded_renders_are_graded_correct(renders):
    size, data = renders
    rng = np.random.default_rng(1)
    summary = grading.aggregate([grading.score(_degrade(img, rng), cap) for img, cap, _ in data])
    _check(summary, 0.95)


def test_colour_cast_and_noise_are_tolerated():
    rng = np.random.default_rng(2)
    scores = []
    for img, cap, _ in _renders(64, 100, seed=11):
        cast = img.astype(float) + rng.uniform(-15, 15, 3) + rng.normal(0, 8, img.shape)
        scores.append(grading.score(np.clip(np.round(cast), 0, 255).astype(np.uint8), cap))
    _check(grading.aggregate(scores), 0.95)


def _other(value, options, avoid):
    return next(v for v in options if v != value and v not in avoid)


def test_wrong_captions_fail_on_the_right_attribute():
    checked = {"color": 0, "shape": 0, "size": 0, "position": 0, "count": 0}
    for img, cap, _ in _renders(64, 60, seed=7):
        objs, rel = parse_caption(cap)
        colors = [o.color for o in objs]
        for attr in checked:
            new, new_rel = list(objs), rel
            if attr == "color":
                new[0] = ObjectSpec(_other(objs[0].color, shapes.COLORS, colors), objs[0].shape, objs[0].size)
            elif attr == "shape":
                new[0] = ObjectSpec(objs[0].color, _other(objs[0].shape, shapes.SHAPES, ()), objs[0].size)
            elif attr == "size":
                if rel is not None:
                    continue
                new[0] = ObjectSpec(objs[0].color, objs[0].shape, "large" if objs[0].size == "small" else "small")
            elif attr == "position":
                if rel is None:
                    continue
                mirror = {"to the left of": "to the right of", "to the right of": "to the left of",
                          "above": "below", "below": "above"}
                perpendicular = {"to the left of": "below", "below": "to the right of",
                                 "to the right of": "above", "above": "to the left of"}
                for r in (mirror[rel], perpendicular[rel]):
                    s = grading.score(img, format_caption(new, r))
                    assert s["position"] is False and not s["correct"], (cap, r)
                checked[attr] += 1
                continue
            else:  # count: drop an object from a two-object caption, or add one to a one-object caption
                if rel is not None:
                    new, new_rel = new[:1], None
                else:
                    extra = ObjectSpec(_other(objs[0].color, shapes.COLORS, colors), "square")
                    new, new_rel = [ObjectSpec(objs[0].color, objs[0].shape), extra], "above"
            s = grading.score(img, format_caption(new, new_rel))
            assert s[attr] is False and not s["correct"], (cap, attr, s)
            checked[attr] += 1
        assert grading.score(img, cap)["correct"], cap
    assert min(checked.values()) >= 10, checked


def test_background_and_noise_score_incorrect():
    rng = np.random.default_rng(0)
    for size in (32, 64, 256):
        images = [np.full((size, size, 3), shapes.BACKGROUND, np.uint8),
                  rng.integers(0, 256, (size, size, 3), dtype=np.uint8),
                  _degrade(np.full((size, size, 3), shapes.BACKGROUND, np.uint8), rng, sigma=20)]
        for img in images:
            found = grading.analyse(img)
            assert found == []
            for cap in ("a red circle", "a large white square", "a black triangle above a yellow circle"):
                s = grading.score(img, cap, found)
                assert s["count"] is False and s["color"] is False and s["correct"] is False


def test_relation_uses_the_dominant_axis():
    assert grading.relation_holds((0.2, 0.5), (0.7, 0.55), "to the left of")
    assert not grading.relation_holds((0.2, 0.5), (0.7, 0.55), "to the right of")
    assert not grading.relation_holds((0.45, 0.2), (0.55, 0.8), "to the left of")  # mostly above, not left
    assert grading.relation_holds((0.45, 0.2), (0.55, 0.8), "above")
    assert grading.relation_holds((0.5, 0.9), (0.5, 0.3), "below")


def test_building_blocks():
    m = np.zeros((8, 8), bool)
    m[1:3, 1:3] = True
    m[3, 3] = True  # touches the first blob diagonally: same component
    m[5:7, 5:8] = True
    m[0, 7] = True
    labels, n = grading.label_components(m)
    assert n == 3 and labels[1, 1] == labels[3, 3] != labels[5, 5] and (labels > 0).sum() == m.sum()
    ring = np.zeros((7, 7), bool)
    ring[1:6, 1:6] = True
    ring[2:5, 2:5] = False
    assert grading.fill_holes(ring)[1:6, 1:6].all() and grading.fill_holes(ring).sum() == 25
    assert grading.erode(ring).sum() == 0 and grading.dilate(m)[0, 0]
    # moment features of large ideal renders match the closed forms in shape_features' docstring
    expected = {"triangle": (-2 * np.sqrt(2) / 5, None), "square": (0.0, 0.5), "circle": (0.0, 1.0)}
    for shape, (skew, ratio) in expected.items():
        mask = shapes.shape_mask(shapes.PlacedObject("red", shape, None, 0.5, 0.5, 0.6), 256)
        s, r = grading.shape_features(mask.astype(float))
        assert abs(s - skew) < 0.01 and (ratio is None or abs(r - ratio) < 0.02), (shape, s, r)
    assert [grading.size_word(x) for x in (0.2, 0.28, 0.3, 0.44, 0.5)] == ["small", "small", None, None, "large"]
    with pytest.raises(ValueError, match="H, W >= 32"):
        grading.analyse(np.zeros((16, 16, 3), np.uint8))
    with pytest.raises(ValueError, match="outside the shapes grammar"):
        grading.score(np.zeros((32, 32, 3), np.uint8), "a red dog")


def test_aggregate_math():
    def s(correct, **attrs):
        base = {"count": True, "color": True, "shape": True, "size": None, "position": None}
        return {**base, **attrs, "correct": correct}

    scores = [s(True), s(False, shape=False), s(False, size=False, color=False), s(True, position=True),
              s(False, position=False, count=False)]
    agg = grading.aggregate(scores)
    assert agg["n"] == 5 and agg["accuracy"] == pytest.approx(2 / 5)
    assert agg["per_attribute"] == pytest.approx({"count": 4 / 5, "color": 4 / 5, "shape": 4 / 5, "size": 0.0,
                                                  "position": 1 / 2})
    agg = grading.aggregate([{**s(True), "keep": True, "fill": True, "keep_mad": 1.0},
                       {**s(False), "keep": False, "fill": True, "keep_mad": 9.0}])
    assert agg["per_attribute"]["keep"] == 0.5 and agg["per_attribute"]["fill"] == 1.0
    assert agg["mean_keep_mad"] == 5.0
    with pytest.raises(ValueError):
        grading.aggregate([])


def test_inpaint_case_and_scoring():
    rng = np.random.default_rng(0)
    captions = ["a small red circle", "a blue square above a white triangle", "an orange triangle to the left of a "
                "black circle", "a yellow square below a green circle", "a green triangle",
                "a small white square"]
    for cap in captions * 3:
        source, mask, erased = evaluate.inpaint_case(cap, 64, rng)
        assert grading.score(source, cap)["correct"]
        hole = mask == 0
        for d, pix in grading._detect(source):
            inside = (pix & hole).sum() / pix.sum()
            assert inside == (1.0 if d.color == parse_caption(cap).objects[erased].color else 0.0)
        good = grading.score_inpaint(source, source, mask, cap)
        assert good["keep"] and good["fill"] and good["correct"] and good["keep_mad"] == 0.0
        empty = source.copy()
        empty[hole] = shapes.BACKGROUND
        bad = grading.score_inpaint(empty, source, mask, cap)
        assert bad["keep"] and not bad["fill"] and not bad["correct"]
        wrong = source.copy()
        wrong[hole & (source != shapes.BACKGROUND).any(-1)] = shapes.COLORS["purple"]
        assert not grading.score_inpaint(wrong, source, mask, cap)["fill"]
        drift = np.clip(source.astype(int) + 12, 0, 255).astype(np.uint8)
        assert not grading.score_inpaint(drift, source, mask, cap)["keep"]


def test_prompts_from(tmp_path):
    assert evaluate.prompts_from("heldout:5") == shapes.heldout_prompts(5)
    single = evaluate.prompts_from("single:72")
    assert single == shapes.single_prompts(72) and len(set(single)) == 72 and single[:5] == shapes.single_prompts(5)
    parsed = [parse_caption(p) for p in single]
    assert all(len(p.objects) == 1 and p.relation is None for p in parsed)
    assert {(o.color, o.shape, o.size) for p in parsed for o in p.objects} == {
        (c, s, z) for c in shapes.COLORS for s in shapes.SHAPES for z in shapes.SIZES}
    with pytest.raises(ValueError, match="only 72"):
        shapes.single_prompts(73)
    f = tmp_path / "p.txt"
    f.write_text("a red circle\n\n  a large blue square \n")
    assert evaluate.prompts_from(str(f)) == ["a red circle", "a large blue square"]
    f.write_text("a red circle\na red dog\n")
    with pytest.raises(ValueError, match="a red dog"):
        evaluate.prompts_from(str(f))


class _PerfectPipe:
    """Stands in for a Pipeline: draws each caption's scene (or returns the inpainting source unchanged).
    Its base was "trained" without "to the left of", so its prompt rewrites say those captions as their
    converse, which must grade as right against the caption as written."""

    class base:
        sampling, guidance_scale = None, None

        class config:
            class unet:
                image_size = 64

    upsampler = None
    rules = PromptRewrites.from_json(rewrite_rules(("above", "below", "to the right of")))

    def rewrite(self, prompts):
        return [self.rules(p) for p in prompts]

    def generate(self, request, *, progress=False, **fields):
        request = dataclasses.replace(request, **fields)
        rng = np.random.default_rng(request.seed)
        prompts = self.rewrite(request.prompts) if request.rewrite_prompts else request.prompts
        if request.inpaint_image is not None:
            return np.stack([request.inpaint_image] * len(prompts))
        return np.stack([evaluate.inpaint_case(p, 64, rng)[0] for p in prompts])


@pytest.mark.parametrize("inpaint", [False, True])
def test_evaluate_with_a_perfect_model(tmp_path, inpaint):
    prompts = shapes.heldout_prompts(4) + ["a small red circle", "a large white triangle"]
    result = evaluate.evaluate(_PerfectPipe(), prompts, n_per_prompt=2, inpaint=inpaint, save_dir=tmp_path)
    summary = result["summary"]
    assert summary["n"] == 12 and summary["accuracy"] == 1.0
    assert set(summary["per_attribute"]) == {"count", "color", "shape", "size", "position"} | (
        {"keep", "fill"} if inpaint else set())
    assert [r["caption"] for r in result["samples"]] == [p for p in prompts for _ in range(2)]
    assert len((tmp_path / "scores.jsonl").read_text().splitlines()) == 12
    assert "correct" in evaluate.format_table(summary)
    assert result["settings"] == {"sampler": "ddpm", "steps": 20, "start": None, "guidance": 3.0,
                                  "clip_guidance": None, "guidance_interval": None, "restated": 2, "upsample": None}


def _random_model_dir(path, preset):
    """A tiny random model directory (no sampling.json); parameters drawn in numpy (no init compile)."""
    import jax

    from glide_jax.config import get_preset
    from glide_jax.hub.model_dir import save_model_dir
    from glide_jax.family import abstract_params

    cfg = get_preset(preset)
    rng = np.random.default_rng(0)
    params = jax.tree_util.tree_map(lambda a: rng.normal(0, 0.05, a.shape).astype(a.dtype), abstract_params(cfg))
    save_model_dir(path, cfg, {"params": params})
    return str(path)


def test_tool_runs_end_to_end(tmp_path, monkeypatch, capsys):
    """The inpainting route (the plain one differs only in not passing the source; one compile is enough)."""
    from projects.shapes.eval_shapes import main

    monkeypatch.setenv("GLIDE_JAX_CACHE", str(require_fixture("tokenizer")))
    model = _random_model_dir(tmp_path / "model", "tiny-inpaint")
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red circle\na blue square above a white triangle\n")
    code = main(["--prompts", str(prompts), "--model", model, "--sampler", "ddim", "--steps", "2",
                 "--n-per-prompt", "2", "--inpaint", "--json", "--save-dir", str(tmp_path / "out")])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n"] == 4 and 0.0 <= out["accuracy"] <= 1.0 and out["settings"]["steps"] == 2
    assert out["settings"]["sampler"] == "ddim"
    assert {"count", "color", "shape", "position"} <= set(out["per_attribute"])
    # the pipeline pastes the known pixels, so the keep region survives even random weights
    assert {"keep", "fill"} <= set(out["per_attribute"]) and out["per_attribute"]["keep"] == 1.0
    records = [json.loads(line) for line in (tmp_path / "out" / "scores.jsonl").read_text().splitlines()]
    assert len(records) == 4 and len(list((tmp_path / "out").glob("000[0-3].png"))) == 4
    assert main(["--prompts", "heldout:1", "--model", str(tmp_path / "missing")]) == 2
    assert "error:" in capsys.readouterr().err


@pytest.mark.slow  # a second end-to-end run of the tool (~8 s)
def test_tool_starts_a_model_without_a_canvas_from_the_shapes_background(tmp_path, monkeypatch, capsys):
    from projects.shapes.eval_shapes import main

    monkeypatch.setenv("GLIDE_JAX_CACHE", str(require_fixture("tokenizer")))
    model = _random_model_dir(tmp_path / "model", "tiny-base")
    code = main(["--prompts", "heldout:1", "--model", model, "--sampler", "ddim", "--steps", "4", "--start", "0.5",
                 "--n-per-prompt", "1", "--json"])
    assert code == 0, capsys.readouterr().err
    out = json.loads(capsys.readouterr().out)
    assert out["n"] == 1 and out["settings"]["start"] == {"fraction": 0.5, "canvas": list(shapes.BACKGROUND)}
    assert out["per_attribute"]["position"] is not None  # a two-object caption has its position scored
