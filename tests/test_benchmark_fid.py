"""tools.benchmark_fid: its options, and its glide_jax side on two images (the torch side needs a side venv)."""

import json

import numpy as np
import pytest

from tools import benchmark_fid


def test_help_and_option_checks(capsys):
    with pytest.raises(SystemExit) as done:
        benchmark_fid.main(["--help"])
    assert done.value.code == 0
    assert "--torch-python" in capsys.readouterr().out
    with pytest.raises(SystemExit) as done:
        benchmark_fid.main(["--torch-python", "python3"])
    assert done.value.code == 2
    assert "--torch-python needs --weights" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        benchmark_fid.main(["--images", "0"])
    assert "--images must be at least 1" in capsys.readouterr().err


def test_the_images_are_varied_and_fixed_by_the_seed():
    images = benchmark_fid.make_images(3)
    assert images.shape == (3, 299, 299, 3) and images.dtype == np.uint8
    assert np.array_equal(images, benchmark_fid.make_images(3))
    assert images.std() > 30 and not np.array_equal(images[0], images[1])


def test_the_glide_jax_side_times_two_images(tmp_path):
    path = tmp_path / "images.npy"
    np.save(path, benchmark_fid.make_images(2))
    out = benchmark_fid.jax_side(str(path), weights=None, batch_size=2, repeats=1)
    assert out["side"] == "glide_jax" and out["weights"] == "random"
    assert len(out["seconds"]) == 1 and out["images_per_s"][0] == pytest.approx(2 / out["seconds"][0], rel=0.01)
    # XLA's count for one 299x299 image through the FID Inception (multiply-adds counted as two)
    assert out["gflop_per_image"] == pytest.approx(10.99, abs=0.01)


@pytest.mark.slow  # a fresh interpreter compiles the network (~10 s on 2 cores)
def test_without_a_torch_python_only_the_glide_jax_side_runs(capsys):
    assert benchmark_fid.main(["--images", "2", "--batch-size", "2", "--rounds", "1", "--repeats", "1"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert list(report["summary"]) == ["glide_jax"] and report["summary"]["glide_jax"]["passes_timed"] == 1
    assert report["rounds"][0]["glide_jax"]["images_per_s"][0] > 0
