"""FID as pytorch-fid computes it: Inception features, resizes, statistics, the Fréchet distance, .npz files.

The reference is the FID fixture (pytorch-fid 0.3.0 on random Inception
weights, ``GLIDE_FID_FIXTURES``). The default run checks the features of three
of its images from a legacy-format copy of the weights (compile and forward:
about 10 s here) and everything else on small inputs. The fixture's full check
(three image groups through the 299x299 network and two 2048-d distances,
``-m slow``: 70-85 s on this loaded 2-core machine, most of it the 2048-d
eigendecompositions) runs once through ``glide_jax.parity.check_fixture``,
memoised, and the slow tests read its rows.
"""

import re
import warnings

import numpy as np
import pytest
from conftest import require_fid_fixture
from PIL import Image
from pt_files import PtFile, TensorRef

from glide_jax.evaluation.features import inception_features
from glide_jax.evaluation.frechet import (MIN_SAMPLES, FeatureStatistics, SmallSampleWarning, frechet_distance,
                                          load_statistics, save_statistics)
from glide_jax.evaluation.preprocess import bilinear_matrix, clean_resize
from glide_jax.hub.convert_inception import inception_from_torch, key_table, load_inception
from glide_jax.hub.torch_zip import load_state_dict
from tools import parity


@pytest.fixture(scope="module")
def fid_rows():
    from glide_jax.parity import check_fixture

    return check_fixture(require_fid_fixture("fid.npz"))


@pytest.fixture(scope="module")
def fid_arrays():
    with np.load(require_fid_fixture("fid.npz")) as archive:
        return {name: archive[name] for name in archive.files}


@pytest.mark.slow
@pytest.mark.parametrize("group", ["64", "256", "odd"])
def test_features_match_pytorch_fid(fid_rows, group):
    max_abs, _ = fid_rows[f"features/{group}"]
    assert max_abs < 1e-4  # measured 5e-5 .. 8e-5: torch's own float32 error against float64 is 4.9e-5


@pytest.mark.slow
def test_frechet_distance_matches_pytorch_fid(fid_rows):
    assert fid_rows["frechet/stats:rel"][1] < 1e-6  # against scipy's sqrtm; measured 1.4e-15
    assert fid_rows["frechet/stats_eigh:rel"][1] < 1e-12
    assert fid_rows["frechet/images:info"][1] < 1e-4  # rank-deficient statistics amplify the features' noise


@pytest.mark.slow
def test_parity_tool_on_the_fid_fixture(fid_rows, capsys):
    path = require_fid_fixture("fid.npz")
    assert parity.main([str(path)]) == 0
    out = capsys.readouterr().out
    rows = dict((name, status) for status, name in re.findall(r"^  (ok  |FAIL|info) (\S+)", out, flags=re.M))
    assert rows == {"features/64": "ok  ", "features/256": "ok  ", "features/odd": "ok  ",
                    "frechet/stats:rel": "ok  ", "frechet/stats_eigh:rel": "ok  ", "frechet/images:info": "info"}
    assert "parity: passed" in out
    assert parity.main([str(path), "--atol", "1e-7"]) == 1  # the features' float32 noise is above that


def _legacy_copy(state, path):
    arrays = {name: np.array(array, order="C") for name, array in state.items()}
    storages = {str(i): array.reshape(-1) for i, array in enumerate(arrays.values())}
    tensors = [TensorRef(name, str(i), 0, array.shape, tuple(step // array.itemsize for step in array.strides))
               for i, (name, array) in enumerate(arrays.items())]
    path.write_bytes(PtFile(storages, tensors).legacy_bytes())
    return path


def test_weights_in_the_legacy_format_give_the_same_features(fid_arrays, tmp_path):
    weights = require_fid_fixture("pt_inception-random.pth")
    legacy = _legacy_copy(load_state_dict(weights), tmp_path / "pt_inception-legacy.pth")
    variables = load_inception(legacy)
    # three images in a batch of 8: padded (the fixture check's batch size, so a slow run compiles once)
    features = inception_features(variables, fid_arrays["images_odd"][:3], batch_size=8)
    assert features.shape == (3, 2048) and features.dtype == np.float32
    assert np.abs(features - fid_arrays["feats_odd"][:3]).max() < 1e-4


def _state_dict(table):
    state = {}
    for entry in table.values():
        shape = tuple(entry.shape[i] for i in (3, 2, 0, 1)) if entry.is_kernel else entry.shape
        state[entry.key] = np.zeros(shape, np.float32)
    return state


def test_converter_names_missing_unexpected_and_misshaped_keys():
    table = key_table()
    assert len(table) == 94 * 5  # 94 convolutions, each with a kernel and four batch-norm arrays
    source = table[("params", "Mixed_6b", "branch7x7_2", "conv", "kernel")]
    assert source.key == "Mixed_6b.branch7x7_2.conv.weight" and source.shape == (1, 7, 128, 128)
    assert table[("batch_stats", "Mixed_7c", "branch_pool", "bn", "var")].key == "Mixed_7c.branch_pool.bn.running_var"
    state = _state_dict(table)
    state["Conv2d_1a_3x3.conv.weight"] = np.arange(32 * 3 * 3 * 3, dtype=np.float32).reshape(32, 3, 3, 3)
    # pytorch-fid's file also holds the classifier and batch-norm counters: accepted and dropped
    extras = {"fc.weight": np.zeros((1008, 2048), np.float32), "fc.bias": np.zeros(1008, np.float32),
              "Conv2d_1a_3x3.bn.num_batches_tracked": np.zeros((), np.int64)}
    variables = inception_from_torch({**state, **extras})
    kernel = variables["params"]["Conv2d_1a_3x3"]["conv"]["kernel"]
    np.testing.assert_array_equal(kernel, state["Conv2d_1a_3x3.conv.weight"].transpose(2, 3, 1, 0))
    assert set(variables) == {"params", "batch_stats"}

    broken = dict(state)
    for key in list(broken)[:7]:
        del broken[key]
    broken["aux.weight"] = np.zeros(3, np.float32)
    broken["Mixed_5b.branch1x1.bn.weight"] = np.zeros(65, np.float32)
    with pytest.raises(ValueError, match=r"inception\.pth is not pytorch-fid's FID Inception state dict: 7 missing "
                                         r"\(Conv2d_1a_3x3\.bn\.running_mean, [^;]*, \.\.\.\); "
                                         r"1 unexpected \(aux\.weight\); "
                                         r"1 mis-shaped \(Mixed_5b\.branch1x1\.bn\.weight \(65,\) != \(64,\)\)"):
        inception_from_torch(broken, source="inception.pth")


def test_bilinear_weights_follow_torch():
    np.testing.assert_array_equal(bilinear_matrix(2, 4), [[1, 0], [0.75, 0.25], [0.25, 0.75], [0, 1]])
    np.testing.assert_array_equal(bilinear_matrix(4, 2), [[0.5, 0.5, 0, 0], [0, 0, 0.5, 0.5]])
    np.testing.assert_array_equal(bilinear_matrix(299, 299), np.eye(299))
    for size in (37, 53, 64, 256, 480, 1000):
        np.testing.assert_allclose(bilinear_matrix(size, 299).sum(axis=1), 1, rtol=1e-6)
    # torch 2.13's F.interpolate weights for 480 -> 299, row 159 (one rounding of the source position)
    row = bilinear_matrix(480, 299)[159]
    assert row.nonzero()[0].tolist() == [255, 256]
    assert row[255] == np.float32(0.44648743) and row[256] == np.float32(0.5535126)


def test_clean_resize_is_pil_bicubic_per_channel_in_float():
    rng = np.random.default_rng(0)
    noise = clean_resize(rng.integers(0, 256, (2, 37, 53, 3), dtype=np.uint8), size=64)
    assert noise.shape == (2, 64, 64, 3) and noise.dtype == np.float32
    assert noise.min() == 0 and noise.max() == 255  # bicubic overshoots on noise: clipped, as clean-fid does
    # On smooth images PIL's uint8 RGB path gives the same bicubic result but rounds (and clips) to integers after
    # each of its two passes; on noise those intermediate clips differ by far more, which is why clean-fid
    # resizes in float.
    yy, xx = np.mgrid[0:37, 0:53]
    smooth = np.stack([100 + 60 * np.sin(xx / 9 + c) * np.cos(yy / 7) for c in range(3)], -1).astype(np.uint8)
    ours = clean_resize(smooth[None], size=64)[0]
    rounded = np.asarray(Image.fromarray(smooth).resize((64, 64), resample=Image.Resampling.BICUBIC), np.float32)
    assert np.abs(ours - rounded).max() <= 1.25 and np.abs(ours - rounded).mean() < 0.4  # measured 1.02, 0.30
    flat = clean_resize(np.full((1, 20, 30, 3), 77, np.uint8), size=40)
    np.testing.assert_allclose(flat, 77, atol=1e-4)


def test_feature_input_is_checked():
    variables = {}
    with pytest.raises(TypeError, match="uint8 images"):
        inception_features(variables, np.zeros((2, 8, 8, 3), np.float32))
    with pytest.raises(ValueError, match=r"RGB images \[N, H, W, 3\], got shape \(2, 8, 8\)"):
        inception_features(variables, np.zeros((2, 8, 8), np.uint8))
    with pytest.raises(ValueError, match="unknown FID resize 'lanczos'"):
        inception_features(variables, np.zeros((2, 8, 8, 3), np.uint8), resize="lanczos")
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 0"):
        inception_features(variables, np.zeros((2, 8, 8, 3), np.uint8), batch_size=0)
    assert inception_features(variables, np.zeros((0, 8, 8, 3), np.uint8)).shape == (0, 2048)


def test_streaming_statistics_equal_numpy_and_merge_across_hosts():
    rng = np.random.default_rng(1)
    features = (rng.standard_normal((3000, 16)) * rng.uniform(0.1, 2, 16) + 1e4).astype(np.float32)
    reference = features.astype(np.float64)
    host_a = FeatureStatistics(16).add(features[:1000]).add(features[1000:1700])
    host_b = FeatureStatistics(16).add(features[1700:2999]).add(features[2999:]).add(features[:0])
    mu, sigma = host_a.merge(host_b).mean_cov()
    # a mean 1e4 times the spread costs no precision (centred accumulation)
    np.testing.assert_allclose(mu, reference.mean(axis=0), rtol=1e-13)
    np.testing.assert_allclose(sigma, np.cov(reference, rowvar=False), rtol=1e-9, atol=1e-9)
    assert host_a.count == 3000 and host_b.count == 1300
    with pytest.raises(ValueError, match="features have 8 dimensions, these statistics 16"):
        host_a.add(np.zeros((2, 8), np.float32))
    with pytest.raises(ValueError, match="NaN or infinite"):
        host_a.add(np.full((1, 16), np.nan, np.float32))
    with pytest.raises(ValueError, match="cannot merge statistics of 4 dimensions into 16"):
        host_a.merge(FeatureStatistics(4))


def test_fewer_than_2048_samples_warn():
    rng = np.random.default_rng(2)
    with pytest.warns(SmallSampleWarning, match=r"FID statistics from 10 samples, fewer than 2048"):
        FeatureStatistics(4).add(rng.standard_normal((10, 4))).mean_cov()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        FeatureStatistics(4).add(rng.standard_normal((MIN_SAMPLES, 4))).mean_cov()
    with pytest.raises(ValueError, match="at least 2 samples, these statistics have 1"):
        FeatureStatistics(4).add(np.zeros((1, 4))).mean_cov()


def test_frechet_distance_small_cases():
    rng = np.random.default_rng(3)
    basis = rng.standard_normal((6, 6))
    sigma = basis @ basis.T + np.eye(6)
    mu = rng.standard_normal(6)
    assert abs(frechet_distance(mu, sigma, mu, sigma)) < 1e-10
    # one dimension: (m1 - m2)^2 + s1 + s2 - 2 sqrt(s1 s2)
    assert frechet_distance([1.0], [[4.0]], [3.0], [[9.0]]) == pytest.approx(4 + 4 + 9 - 2 * 6, rel=1e-14)
    # commuting (diagonal) covariances: sum of (sqrt(a) - sqrt(b))^2
    a, b = rng.uniform(0.1, 3, 6), rng.uniform(0.1, 3, 6)
    expected = ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
    assert frechet_distance(np.zeros(6), np.diag(a), np.zeros(6), np.diag(b)) == pytest.approx(expected, rel=1e-12)
    with pytest.raises(ValueError, match="the statistics have 6 and 5 dimensions"):
        frechet_distance(mu, sigma, mu[:5], sigma[:5, :5])
    with pytest.raises(ValueError, match=r"sigma must be \[6, 6\] to match mu, got \(6, 5\)"):
        frechet_distance(mu, sigma[:, :5], mu, sigma)


def test_statistics_npz_round_trip_and_bad_files(tmp_path):
    rng = np.random.default_rng(4)
    mu, basis = rng.standard_normal(5), rng.standard_normal((5, 5))
    sigma = basis @ basis.T
    path = save_statistics(tmp_path / "stats.npz", mu, sigma)
    with np.load(path) as archive:  # what pytorch-fid's compute_statistics_of_path reads
        np.testing.assert_array_equal(archive["mu"][:], mu)
        np.testing.assert_array_equal(archive["sigma"][:], sigma)
    loaded_mu, loaded_sigma = load_statistics(path)
    np.testing.assert_array_equal(loaded_mu, mu)
    np.testing.assert_array_equal(loaded_sigma, sigma)

    cases = {
        "nosigma.npz": (dict(mu=mu), r"nosigma\.npz has no sigma array \(it holds mu\)"),
        "matrix_mu.npz": (dict(mu=sigma, sigma=sigma), r"mu must be a vector \[D\], got shape \(5, 5\)"),
        "short.npz": (dict(mu=mu, sigma=sigma[:4, :4]), r"sigma must be \[5, 5\] to match mu, got \(4, 4\)"),
        "nan.npz": (dict(mu=np.full(5, np.nan), sigma=sigma), "NaN or infinite"),
        "text.npz": (dict(mu=np.array(["a"] * 5), sigma=sigma), "mu has dtype <U1, not real numbers"),
    }
    for name, (arrays, problem) in cases.items():
        np.savez(tmp_path / name, **arrays)
        with pytest.raises(ValueError, match=problem):
            load_statistics(tmp_path / name)
    np.save(tmp_path / "single.npy", mu)
    with pytest.raises(ValueError, match="holds one array, not pytorch-fid's .npz of mu and sigma"):
        load_statistics(tmp_path / "single.npy")
    (tmp_path / "junk.npz").write_bytes(b"not numpy at all")
    with pytest.raises(ValueError, match=r"junk\.npz is not a readable \.npz file"):
        load_statistics(tmp_path / "junk.npz")
    with pytest.raises(FileNotFoundError, match="do not exist"):
        load_statistics(tmp_path / "absent.npz")
    with pytest.raises(ValueError, match="written as .npz files"):
        save_statistics(tmp_path / "stats.txt", mu, sigma)
