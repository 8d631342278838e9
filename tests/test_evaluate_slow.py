"""The evaluation with the real FID Inception (random weights, the FID fixture), across processes and in training.

All ``slow``: each compiles the 299x299 Inception, and a 2048-dimensional FID takes two
eigendecompositions of about 14 s each on this 2-core machine.

* the embedded models (base and upsampler, DDPM on 4 steps each) against rendered shapes scenes,
  the reference made by ``python -m tools.evaluate stats``; the Inception split over 2 devices
  gives the unsplit features;
* ``python -m projects.shapes.evaluate_fid`` as 2 processes (``experiments.launch``, jax.distributed
  over loopback with gloo) writes the same figures, to the bit, as 1 process;
* periodic evaluation in a micro training run writes ``eval/...`` metrics at its steps.
"""

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import require_clipscore_fixture, require_fid_fixture
from test_evaluate import render_scenes

from glide_jax.errors import InputError
from glide_jax.evaluation.captions import read_captions
from glide_jax.evaluation.frechet import SmallSampleWarning, load_statistics
from glide_jax.evaluation.in_training import periodic_evaluator
from glide_jax.evaluation.runner import evaluate
from glide_jax.evaluation.scorers import InceptionFeatures
from glide_jax.sampling.loading import pipeline_for
from glide_jax.sampling.options import StageOptions
from glide_jax.train.experiment import apply_overrides, load_config_file
from glide_jax.train.loop import train
from tools import evaluate as evaluate_tool

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _env(tmp_path, **extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GLIDE_JAX_", "JAX_NUM_CPU", "XLA_FLAGS"))}
    env.update(JAX_COMPILATION_CACHE_DIR=str(tmp_path / "jax_cache"), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
               JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0", JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1",
               GLIDE_JAX_CACHE=str(tmp_path / "cache"),
               PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]), **extra)
    return env


def test_embedded_models_against_rendered_scenes(tmp_path, capsys):
    weights = require_fid_fixture("pt_inception-random.pth")
    scenes = render_scenes(tmp_path / "scenes", 16, size=64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SmallSampleWarning)
        assert evaluate_tool.main(["stats", "--images", str(scenes), "--inception", str(weights),
                                   "--out", str(tmp_path / "ref.npz"), "--batch-size", "8"]) == 0
        features = InceptionFeatures.from_file(weights, batch_size=4)
        pipe = pipeline_for("embedded")
        request = dict(seed=0, base=StageOptions("ddpm", 4, start=0.85, canvas=(200, 200, 200)),
                       upsample=StageOptions("ddpm", 4, start=0.4))
        results = evaluate(pipe, read_captions("shapes:heldout", 8), out_dir=tmp_path / "eval", num_samples=8,
                           request=request, features=features, reference=tmp_path / "ref.npz", batch_size=4,
                           shard_size=4, progress=False)
    capsys.readouterr()
    assert evaluate_tool.main(["fid", str(tmp_path / "ref.npz"), str(tmp_path / "eval" / "statistics.npz")]) == 0
    assert float(capsys.readouterr().out) == pytest.approx(results["fid"], rel=1e-6)
    mu, _ = load_statistics(tmp_path / "eval" / "statistics.npz")
    assert mu.shape == (2048,) and results["fid"] > 0 and results["reference"]["kind"] == "npz"
    print(f"random-weight Inception FID, embedded 64x64 (DDPM 4+4 steps) vs 16 rendered scenes, 8 samples: "
          f"{results['fid']:.4f}; {results['timing']['images_per_s']:.3g} images/s (compilation included)")


_SPLIT_INCEPTION = """
import numpy as np, jax
from glide_jax.evaluation.features import inception_features
from glide_jax.evaluation.scorers import InceptionFeatures
from glide_jax.hub.convert_inception import load_inception
assert len(jax.local_devices()) == 2
variables = load_inception({weights!r})
images = np.random.default_rng(0).integers(0, 256, (5, 64, 64, 3), dtype=np.uint8)
for resize in ("pytorch-fid", "clean"):
    split = InceptionFeatures(variables, resize=resize, batch_size=3)
    np.testing.assert_allclose(split(images), inception_features(variables, images, resize, batch_size=4), atol=1e-4)
print("split ok")
"""


def test_inception_split_over_two_devices_gives_the_same_features(tmp_path):
    weights = str(require_fid_fixture("pt_inception-random.pth"))
    out = subprocess.run([sys.executable, "-c", _SPLIT_INCEPTION.format(weights=weights)], cwd=REPO,
                         env=_env(tmp_path, XLA_FLAGS="--xla_force_host_platform_device_count=2"),
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0 and "split ok" in out.stdout, out.stderr[-3000:]


def test_two_processes_give_the_figures_of_one(tmp_path):
    weights = require_fid_fixture("pt_inception-random.pth")
    scenes = render_scenes(tmp_path / "scenes", 16)
    command = ["-m", "projects.shapes.evaluate_fid", "--num-samples", "8", "--upsampler", "none",
               "--sampler", "ddpm", "--steps", "4", "--batch-size", "2", "--shard-size", "2",
               "--inception", str(weights), "--reference", str(scenes),
               "--clip-model", str(require_clipscore_fixture("clip_model")), "--no-progress"]
    env = _env(tmp_path)
    one = subprocess.run([sys.executable, *command, "--out", str(tmp_path / "one")], cwd=REPO,
                         env=dict(env, JAX_NUM_CPU_DEVICES="1"), capture_output=True, text=True, timeout=1800)
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run([sys.executable, "-m", "experiments.launch", "--processes", "2", "--devices-per-process",
                          "1", "--", sys.executable, *command, "--out", str(tmp_path / "two")], cwd=REPO,
                         env=env, capture_output=True, text=True, timeout=1800)
    assert two.returncode == 0, (two.stdout + two.stderr)[-3000:]
    a, b = (json.loads((tmp_path / name / "results.json").read_text()) for name in ("one", "two"))
    for key in ("fid", "clip_score", "scores", "settings"):
        assert a[key] == b[key], key
    assert a["fid"] > 0 and "correct" in a["scores"]["shapes"]
    for name in ("mu", "sigma"):
        with np.load(tmp_path / "one" / "statistics.npz") as x, np.load(tmp_path / "two" / "statistics.npz") as y:
            np.testing.assert_array_equal(x[name], y[name])
    assert "[p0] FID" in two.stdout and "[p1] FID" not in two.stdout
    print(f"1 and 2 processes: FID {a['fid']:.6f}, CLIP score {a['clip_score']:.4f}, "
          f"grader accuracy {a['scores']['shapes']['correct']:.3f}")


def test_periodic_evaluation_in_training(tmp_path):
    cfg = apply_overrides(load_config_file(REPO / "experiments" / "configs" / "base.py:micro"), [
        "train.steps=4", "train.sample_every=-1", "train.checkpoint_every=0", "eval.every=2", "eval.num_samples=4",
        "eval.steps=2", "eval.batch_size=4", f"eval.clip_model={require_clipscore_fixture('clip_model')}"])
    with pytest.raises(InputError, match="no evaluator"):
        train(cfg, tmp_path / "refused")
    summary = train(cfg, tmp_path / "run", evaluator_factory=periodic_evaluator)
    assert summary["step"] == 4
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    evaluated = {line["step"]: line for line in lines if "eval/clip_score" in line}
    assert sorted(evaluated) == [2, 4]
    for step, line in evaluated.items():
        saved = json.loads((tmp_path / "run" / "eval" / f"step_{step:07d}" / "results.json").read_text())
        assert saved["clip_score"] == line["eval/clip_score"] and saved["record"]["step"] == step
        assert saved["settings"]["request"]["base"]["sampler"] == "ddim"
    # the same noise at every evaluation: the figures differ only through the weights
    assert evaluated[2]["eval/clip_score"] != evaluated[4]["eval/clip_score"]
    assert list((tmp_path / "run" / "tensorboard").iterdir())
