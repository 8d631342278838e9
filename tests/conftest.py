"""Shared test setup: where the reference fixtures live, and how their absence is handled.

The fixtures produced from OpenAI's PyTorch code are read from
``$GLIDE_FIXTURES`` (default ``../shared/fixtures/glide`` beside the repository),
the FID ones (pytorch-fid) from ``$GLIDE_FID_FIXTURES`` (default ``../shared/fixtures/fid``) and the
CLIP-score ones from ``$GLIDE_CLIPSCORE_FIXTURES`` (default ``../shared/fixtures/clipscore``).
In a user's clone they may be missing: those tests then skip and say how to get
them. Under CI (``CI`` set) a missing fixture is a failure, never a skip.
"""

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(os.environ.get("GLIDE_FIXTURES", REPO.parent / "shared" / "fixtures" / "glide"))
# torchmetrics' CLIPScore over a small Hugging Face CLIP (clipscore.npz/.json and the checkpoint clip_model/).
CLIPSCORE_FIXTURES = Path(os.environ.get("GLIDE_CLIPSCORE_FIXTURES",
                                         REPO.parent / "shared" / "fixtures" / "clipscore"))
# pytorch-fid's Inception on random weights, its features and distances (fid.npz, fid.json, pt_inception-*.pth)
FID_FIXTURES = Path(os.environ.get("GLIDE_FID_FIXTURES", REPO.parent / "shared" / "fixtures" / "fid"))


def _require(path: Path, hint: str) -> Path:
    if not path.exists():
        msg = f"reference fixture {path} is missing; {hint}"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return path


def require_fixture(relative: str) -> Path:
    return _require(FIXTURES / relative, "set GLIDE_FIXTURES to the folder holding the glide fixtures "
                                         "(models/, clip/, diffusion/, tokenizer/, manifests/)")


def require_clipscore_fixture(relative: str = ".") -> Path:
    return _require(CLIPSCORE_FIXTURES / relative, "set GLIDE_CLIPSCORE_FIXTURES to the folder holding "
                                                   "clipscore.npz, clipscore.json and clip_model/")


def require_fid_fixture(relative: str) -> Path:
    return _require(FID_FIXTURES / relative, "set GLIDE_FID_FIXTURES to the folder holding fid.npz, fid.json and "
                                             "pt_inception-random.pth")


@pytest.fixture
def fixtures_dir() -> Path:
    return require_fixture(".")


@pytest.fixture(scope="session", autouse=True)
def compilation_cache_of_the_run(tmp_path_factory):
    """The commands under test that turn on JAX's persistent compilation cache (the CLI, the training entry
    points, the notebooks; ``glide_jax.runtime.enable_compilation_cache``) share one cache for the test run,
    in pytest's temporary folder, never the user's ``~/.cache``; subprocesses inherit it. A cache folder set
    in the environment beforehand (or ``0`` to test without one) is kept."""
    from glide_jax.runtime import COMPILATION_CACHE_ENV

    os.environ.setdefault(COMPILATION_CACHE_ENV, str(tmp_path_factory.mktemp("compilation_cache")))
    yield
