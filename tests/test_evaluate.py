"""``glide-jax evaluate`` and ``glide_jax.evaluation.runner``: captions, streaming, shards, resuming, the CLI.

The default run samples the embedded base model (32x32, DDPM on 4 steps, batches of 4) and scores
the samples with the CLIP-score fixture's small CLIP, the shapes grader and, in place of the
Inception, a cheap 48-dimensional feature (4x4 average-pooled pixels): FID's statistics, shards and
merging do not depend on which network made the features, and a 2048-dimensional FID costs two
eigendecompositions of about 14 s each on this machine. The Inception runs in
``test_evaluate_slow.py`` (``-m slow``), with two processes against one and training's periodic
evaluation.
"""

import json
import os
import subprocess
import sys
import tarfile
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import require_clipscore_fixture
from PIL import Image

from glide_jax import cli
from glide_jax.data import shapes
from glide_jax.errors import InputError
from glide_jax.evaluation import eval_dir
from glide_jax.evaluation.captions import read_captions
from glide_jax.evaluation.clip_score import ClipScorer
from glide_jax.evaluation.frechet import SmallSampleWarning, frechet_distance, load_statistics
from glide_jax.evaluation.reference import reference_statistics
from glide_jax.evaluation.runner import evaluate
from glide_jax.sampling.loading import pipeline_for
from glide_jax.sampling.options import BASE_DEFAULT, stage_with
from glide_jax.train.experiment import EvalConfig
from projects.shapes import grading

REPO = Path(__file__).resolve().parents[1]
NUM_SAMPLES, BATCH, SHARD = 8, 4, 4


class PixelFeatures:
    """4x4 average-pooled RGB pixels (48 dimensions): a stand-in for the Inception with its interface."""

    dims = 48

    def describe(self):
        return {"name": "pixels-4x4", "dims": self.dims}

    def __call__(self, images):
        x = np.asarray(images, np.float32) / 255
        n, h, w, c = x.shape
        return x.reshape(n, 4, h // 4, 4, w // 4, c).mean((2, 4)).reshape(n, -1)


def render_scenes(folder: Path, count: int, size: int = 32, seed: int = 0) -> Path:
    """``count`` rendered held-out scenes with their captions, as a captions.jsonl folder."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(count):
        image, caption, _ = shapes.render_example(rng, size, split="heldout")
        Image.fromarray(image).save(folder / f"{i:03d}.png")
        rows.append(json.dumps({"file": f"{i:03d}.png", "caption": caption}))
    (folder / "captions.jsonl").write_text("\n".join(rows) + "\n")
    return folder


@pytest.fixture(scope="module")
def pipe():
    return pipeline_for("embedded", upsampler="none")


@pytest.fixture(scope="module")
def request_fields(pipe):
    # the CLI's --sampler ddpm --steps 4: the model's recommended start and canvas, 4 steps
    return dict(seed=0, base=stage_with(pipe.base, BASE_DEFAULT, sampler="ddpm", steps=4), upsample=None)


@pytest.fixture(scope="module")
def clip():
    return ClipScorer.from_directory(require_clipscore_fixture("clip_model"))


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    return render_scenes(tmp_path_factory.mktemp("scenes"), 16)


@pytest.fixture(scope="module")
def full_run(pipe, request_fields, clip, scenes, tmp_path_factory):
    """One uninterrupted evaluation: 8 samples in 2 shards, FID against the rendered scenes."""
    out = tmp_path_factory.mktemp("full")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        results = evaluate(pipe, read_captions("shapes:heldout", NUM_SAMPLES), out_dir=out, num_samples=NUM_SAMPLES,
                           request=request_fields, features=PixelFeatures(), clip=clip, reference=scenes,
                           extra_scorers={"shapes": grading.score}, batch_size=BATCH, shard_size=SHARD,
                           progress=False, cache_dir=tmp_path_factory.mktemp("cache"))
    return results, out, [w.category for w in caught]


# ----------------------------------------------------------------------------- captions


def test_read_captions_from_every_source(tmp_path):
    (tmp_path / "c.txt").write_text("a red circle\n\n  a blue square \n")
    assert read_captions(str(tmp_path / "c.txt")) == ["a red circle", "a blue square"]
    (tmp_path / "c.jsonl").write_text('{"caption": "one"}\n"two"\n{"text": "three"}\n')
    assert read_captions(str(tmp_path / "c.jsonl"), 2) == ["one", "two"]
    folder = render_scenes(tmp_path / "folder", 3)
    expected = [json.loads(line)["caption"] for line in (folder / "captions.jsonl").read_text().splitlines()]
    assert read_captions(str(folder)) == expected
    with tarfile.open(tmp_path / "00000.tar", "w") as tar:
        for i, caption in enumerate(expected):
            tar.add(folder / f"{i:03d}.png", f"{i:05d}.png")
            (tmp_path / "cap.txt").write_text(caption)
            tar.add(tmp_path / "cap.txt", f"{i:05d}.txt")
    assert read_captions(str(tmp_path / "00000.tar"), 2) == expected[:2]
    assert read_captions("shapes:heldout:3") == shapes.heldout_prompts(3)
    assert read_captions("shapes:heldout", 5) == shapes.heldout_prompts(5)
    assert len(read_captions("shapes:heldout")) == 688 and read_captions("shapes:single:2") == shapes.single_prompts(2)


@pytest.mark.parametrize("spec, message", [("shapes:nope", "unknown shapes captions"),
                                           ("shapes:heldout:x", "not a number"),
                                           ("shapes:heldout:999", "only 688"),
                                           ("", "no caption source")])
def test_bad_caption_specs_are_refused(spec, message):
    with pytest.raises(InputError, match=message):
        read_captions(spec)


def test_bad_caption_files_are_refused(tmp_path):
    (tmp_path / "bad.jsonl").write_text('{"caption": "fine"}\n{"file": "x.png"}\n')
    with pytest.raises(InputError, match=r"bad.jsonl:2"):
        read_captions(str(tmp_path / "bad.jsonl"))
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(InputError, match="holds no captions"):
        read_captions(str(tmp_path / "empty.txt"))
    with pytest.raises(FileNotFoundError):
        read_captions(str(tmp_path / "missing.txt"))


# ----------------------------------------------------------------------------- one evaluation


def test_end_to_end_figures(full_run, scenes, tmp_path):
    results, out, warned = full_run
    assert results["complete"] and results["num_samples"] == NUM_SAMPLES
    assert SmallSampleWarning in warned  # 8 samples and 16 reference images
    saved = json.loads((out / "results.json").read_text())
    assert saved["fid"] == results["fid"] and saved["settings"]["request"]["base"]["steps"] == 4
    assert saved["settings"]["models"]["base"]["source"] == "embedded-base"
    assert set(saved["versions"]) == {"glide_jax", "jax", "flax", "numpy"}
    # the FID is the Fréchet distance between the stacked features' np.mean / np.cov and the reference's
    features = np.concatenate([eval_dir.read_shard(out, k, SHARD)["features"] for k in range(2)]).astype(np.float64)
    mu, sigma = load_statistics(out / "statistics.npz")
    np.testing.assert_allclose(mu, features.mean(0), rtol=0, atol=1e-15)
    np.testing.assert_allclose(sigma, np.cov(features, rowvar=False), rtol=0, atol=1e-15)
    reference = PixelFeatures()(np.stack([np.asarray(Image.open(scenes / f"{i:03d}.png"))
                                          for i in range(16)])).astype(np.float64)
    expected = frechet_distance(mu, sigma, reference.mean(0), np.cov(reference, rowvar=False))
    # rank-deficient covariances (8 samples, 48 dimensions): rounding-level eigenvalues, about 1e-17, add their
    # square roots (3e-9) to the trace; measured 4e-9 relative between the streamed and the stacked statistics
    assert results["fid"] == pytest.approx(expected, rel=1e-7) and results["fid"] > 0
    # CLIP score: torchmetrics' max(mean, 0) of the per-pair scores; the grader's answers averaged
    scores = np.concatenate([eval_dir.read_shard(out, k, SHARD)["clip"] for k in range(2)])
    assert results["clip_score"] == pytest.approx(max(scores.mean(), 0), rel=1e-12) and 0 < results["clip_score"] < 100
    correct = np.concatenate([eval_dir.read_shard(out, k, SHARD)["extra/shapes/correct"] for k in range(2)])
    assert results["scores"]["shapes"]["correct"] == pytest.approx(correct.mean())
    assert set(results["scores"]["shapes"]) >= {"correct", "color", "shape", "count", "position"}
    print(f"embedded base, DDPM 4 steps, {NUM_SAMPLES} samples: pixel-feature FID {results['fid']:.4f}, CLIP score "
          f"{results['clip_score']:.3f}, grader accuracy {results['scores']['shapes']['correct']:.3f}, "
          f"{results['timing']['images_per_s']:.3g} images/s (compilation included)")


def test_samples_are_the_pipelines_images_of_their_indices(pipe, request_fields, full_run):
    """Sample i is Pipeline.generate's image with first_index=i, whatever batch it was drawn in."""
    _, out, _ = full_run
    caption = read_captions("shapes:heldout", NUM_SAMPLES)[5]
    image = pipe.generate([caption], first_index=5, batch_size=BATCH, **request_fields)
    features = eval_dir.read_shard(out, 1, SHARD)["features"][1]
    np.testing.assert_array_equal(PixelFeatures()(image)[0], features)


@pytest.mark.filterwarnings("ignore::glide_jax.evaluation.frechet.SmallSampleWarning")
def test_an_interrupted_evaluation_resumes_to_the_same_figures(pipe, request_fields, clip, scenes, full_run, tmp_path):
    results, full_out, _ = full_run
    kwargs = dict(num_samples=NUM_SAMPLES, request=request_fields, features=PixelFeatures(), clip=clip,
                  reference=scenes, extra_scorers={"shapes": grading.score}, batch_size=BATCH, shard_size=SHARD,
                  progress=False, cache_dir=tmp_path / "cache")
    captions = read_captions("shapes:heldout", NUM_SAMPLES)
    first = evaluate(pipe, captions, out_dir=tmp_path / "run", max_shards=1, **kwargs)
    assert first == {"complete": False, "finished_shards": 1, "shards": 2, "out_dir": str(tmp_path / "run")}
    assert not (tmp_path / "run" / "results.json").exists()
    resumed = evaluate(pipe, captions, out_dir=tmp_path / "run", **kwargs)
    for key in ("fid", "clip_score", "scores", "settings"):
        assert resumed[key] == results[key], key
    for k in range(2):
        a, b = eval_dir.read_shard(full_out, k, SHARD), eval_dir.read_shard(tmp_path / "run", k, SHARD)
        assert {n: v.tobytes() for n, v in a.items() if n != "seconds"} == \
               {n: v.tobytes() for n, v in b.items() if n != "seconds"}

    # the same folder with other settings is refused before anything is sampled ...
    with pytest.raises(InputError, match=r"other settings \(request.seed\)"):
        evaluate(pipe, captions, out_dir=tmp_path / "run", **{**kwargs, "request": {**request_fields, "seed": 1}})
    with pytest.raises(InputError, match="features"):
        evaluate(pipe, captions, out_dir=tmp_path / "run", **{**kwargs, "features": None, "reference": None})
    # ... or, on request, cleared (what training's periodic evaluation does when the weights changed)
    cleared = evaluate(pipe, captions, out_dir=tmp_path / "run", replace_changed=True,
                       **{**kwargs, "max_shards": 0, "request": {**request_fields, "seed": 1}})
    assert cleared["finished_shards"] == 0 and not list((tmp_path / "run" / "shards").iterdir())


def test_bad_arguments_are_refused(pipe, tmp_path):
    captions = ["a red circle"]
    with pytest.raises(InputError, match="num_samples"):
        evaluate(pipe, captions, out_dir=tmp_path, num_samples=0, features=PixelFeatures())
    with pytest.raises(InputError, match="needs a feature extractor"):
        evaluate(pipe, captions, out_dir=tmp_path, num_samples=2, reference=tmp_path)
    with pytest.raises(InputError, match="init_image"):
        evaluate(pipe, captions, out_dir=tmp_path, num_samples=2, features=PixelFeatures(),
                 request={"init_image": np.zeros((8, 8, 3), np.uint8)})
    with pytest.raises(InputError, match="extra scorer"):
        evaluate(pipe, captions, out_dir=tmp_path, num_samples=2, extra_scorers={"a/b": grading.score})


@pytest.mark.filterwarnings("ignore::glide_jax.evaluation.frechet.SmallSampleWarning")
def test_reference_statistics_are_cached_by_content_and_extractor(scenes, tmp_path):
    features = PixelFeatures()
    mu, sigma, info = reference_statistics(scenes, features, batch_size=5, cache_dir=tmp_path)
    again = reference_statistics(scenes, features, batch_size=5, cache_dir=tmp_path)
    assert (info["cached"], again[2]["cached"], info["count"]) == (False, True, 16)
    np.testing.assert_array_equal(again[0], mu)
    np.testing.assert_array_equal(again[1], sigma)

    class Other(PixelFeatures):
        def describe(self):
            return {"name": "other"}

    assert reference_statistics(scenes, Other(), cache_dir=tmp_path)[2]["cached"] is False
    with pytest.raises(FileNotFoundError, match="does not exist"):
        reference_statistics(tmp_path / "nothing", features, cache_dir=tmp_path)


# ----------------------------------------------------------------------------- the command line


def test_cli_evaluate_writes_results(full_run, tmp_path, capsys):
    clip_dir = str(require_clipscore_fixture("clip_model"))
    out = tmp_path / "cli"
    argv = ["evaluate", "--captions", "shapes:heldout", "--num-samples", "4", "--clip-model", clip_dir,
            "--upsampler", "none", "--sampler", "ddpm", "--steps", "4", "--batch-size", "4", "--out", str(out),
            "--no-progress"]
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    saved = json.loads((out / "results.json").read_text())
    assert f"CLIP score {saved['clip_score']:.4f}" in printed and "results.json" in printed
    assert saved["record"]["captions"] == "shapes:heldout" and saved["num_samples"] == 4
    assert saved["fid"] is None and saved["settings"]["request"]["seed"] == 0
    # the library run's first shard holds the same 4 samples: the same CLIP scores
    library = eval_dir.read_shard(full_run[1], 0, SHARD)["clip"]
    np.testing.assert_array_equal(eval_dir.read_shard(out, 0, 4)["clip"], library)


@pytest.mark.parametrize("extra, message", [
    (["--reference", "ref.npz"], "needs --inception"),
    ([], "nothing to measure"),
])
def test_cli_evaluate_refuses_bad_combinations(extra, message, tmp_path, capsys):
    argv = ["evaluate", "--captions", "shapes:heldout", "--num-samples", "4", "--out", str(tmp_path)] + extra
    assert cli.main(argv) == 2
    assert message in capsys.readouterr().err


def test_eval_config_checks_its_fields():
    assert EvalConfig().every == 0
    with pytest.raises(InputError, match="eval.sampler"):
        EvalConfig(sampler="nope")
    with pytest.raises(InputError, match="eval.resize"):
        EvalConfig(resize="bicubic")
    with pytest.raises(InputError, match="module:function"):
        EvalConfig(scorers=("projects.shapes.grading",))


# ----------------------------------------------------------------------------- devices

_SPLIT_CHECK = """
import numpy as np, jax
from glide_jax.evaluation.clip_score import ClipScorer
from glide_jax.evaluation.scorers import ClipScoring
assert len(jax.local_devices()) == 2
scorer = ClipScorer.from_directory({clip!r})
split = ClipScoring(scorer, batch_size=3)
images = np.random.default_rng(0).integers(0, 256, (5, 40, 40, 3), dtype=np.uint8)
captions = ["a red circle", "a blue square above a green circle", "x", "", "two dogs"]
pixels = np.zeros((split.rows, 224, 224, 3), np.float32)
out = split._image(split.params, pixels)
assert len(out.sharding.device_set) == 2 and split.rows == 4
np.testing.assert_allclose(split.score_pairs(images, captions), scorer.score_pairs(images, captions), atol=1e-4)
print("split ok")
"""


def test_scoring_splits_each_batch_over_the_local_devices():
    clip_dir = str(require_clipscore_fixture("clip_model"))
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu",
               PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    env.pop("JAX_NUM_CPU_DEVICES", None)
    out = subprocess.run([sys.executable, "-c", _SPLIT_CHECK.format(clip=clip_dir)], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0 and "split ok" in out.stdout, out.stderr[-3000:]
