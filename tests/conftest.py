"""Shared test setup: where the reference fixtures live, and how their absence is handled.

The fixtures produced from OpenAI's PyTorch code are read from
``$GLIDE_FIXTURES`` (default ``../shared/fixtures/glide`` beside the repository).
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


def _missing(msg: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(msg)
    pytest.skip(msg)


def require_fixture(relative: str) -> Path:
    path = FIXTURES / relative
    if not path.exists():
        _missing(
            f"reference fixture {path} is missing; set GLIDE_FIXTURES to the folder holding "
            "the glide fixtures (models/, clip/, diffusion/, tokenizer/, manifests/)"
        )
    return path


def require_clipscore_fixture(relative: str = ".") -> Path:
    path = CLIPSCORE_FIXTURES / relative
    if not path.exists():
        _missing(f"CLIP-score fixture {path} is missing; set GLIDE_CLIPSCORE_FIXTURES to the folder holding "
                 "clipscore.npz, clipscore.json and clip_model/")
    return path


@pytest.fixture
def fixtures_dir() -> Path:
    return require_fixture(".")
