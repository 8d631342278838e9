"""projects.shapes.fid_table end to end on a few images: Fréchet distances and CLIP scores of every set.

The random-weight Inception and CLIP of the FID and CLIP-score fixtures stand in for the real ones, so
the numbers are distances between random features; what is checked is that each set is measured, the
two draws of the data are closer to each other than noise is, and the few-step model set samples.
"""

import math

import pytest

from conftest import require_clipscore_fixture, require_fid_fixture
from projects.shapes import fid_table


@pytest.mark.slow  # samples the embedded set twice and runs Inception and CLIP on 4 sets (~60 s)
def test_every_set_gets_a_distance_and_a_clip_score():
    inception = require_fid_fixture("pt_inception-random.pth")
    clip = require_clipscore_fixture("clip_model")
    result = fid_table.table(str(inception), 8, [2, "trailing2"], sampler="ddim", clip_model=str(clip))
    names = ["rendered (another draw)", "embedded, ddim 2 steps", "embedded, ddim trailing2 steps", "uniform noise"]
    assert list(result["distances"]) == names and list(result["clip_scores"]) == names
    assert all(math.isfinite(value) for value in result["distances"].values())
    assert result["distances"]["rendered (another draw)"] < result["distances"]["uniform noise"]
    assert all(0.0 <= value <= 100.0 for value in result["clip_scores"].values())
    assert set(result["sampling_seconds"]) == {"ddim 2", "ddim trailing2"}
