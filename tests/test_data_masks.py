"""Random inpainting masks: convention, erased fraction, determinism."""

import numpy as np
import pytest

from glide_jax.data import masks


@pytest.mark.parametrize("size", [16, 32, 64])
def test_mask_values_and_erased_fraction(size):
    fractions = []
    for seed in range(150):
        m = masks.random_inpaint_mask(np.random.default_rng(seed), size)
        assert m.shape == (size, size, 1) and m.dtype == np.float32
        assert set(np.unique(m)) <= {0.0, 1.0}
        fractions.append(1 - m.mean())
    fractions = np.array(fractions)
    assert fractions.min() >= masks.MIN_ERASE and fractions.max() <= masks.MAX_ERASE
    # The target is uniform in [0.1, 0.6]: the spread is used, not just one end.
    assert fractions.min() < 0.2 and fractions.max() > 0.5 and 0.3 < fractions.mean() < 0.45


def test_custom_range_and_extremes():
    for seed in range(40):
        f = 1 - masks.random_inpaint_mask(np.random.default_rng(seed), 32, 0.3, 0.35).mean()
        assert 0.3 <= f <= 0.35
    assert masks.random_inpaint_mask(np.random.default_rng(0), 16, 0.0, 0.0).min() == 1.0
    assert masks.random_inpaint_mask(np.random.default_rng(0), 16, 1.0, 1.0).max() == 0.0
    with pytest.raises(ValueError):
        masks.random_inpaint_mask(np.random.default_rng(0), 16, 0.5, 0.4)


def test_deterministic_and_varied():
    a = masks.random_inpaint_mask(np.random.default_rng(123), 32)
    np.testing.assert_array_equal(a, masks.random_inpaint_mask(np.random.default_rng(123), 32))
    assert not np.array_equal(a, masks.random_inpaint_mask(np.random.default_rng(124), 32))


def test_primitives_have_requested_area():
    rng = np.random.default_rng(0)
    for prim in (masks._rectangle, masks._ellipse):
        areas = [prim(rng, 128, 2000.0).sum() for _ in range(20)]
        # Ellipses may be clipped by the frame; rectangles are placed inside it.
        assert 0.5 * 2000 < np.median(areas) < 1.2 * 2000
    stroke = masks._stroke(rng, 64, 600.0)
    assert stroke.any() and stroke.mean() < 0.5
