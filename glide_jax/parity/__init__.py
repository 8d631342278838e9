"""Numerical parity with OpenAI's PyTorch reference, checked against recorded fixtures.

Used by ``python -m tools.parity`` and the tests; not part of the library's
public surface. One idea per module, each importing only those listed before it:

* ``fixtures``  - reading a fixture (npz + json), NCHW/NHWC layout, the comparisons;
* ``schedules`` - the diffusion schedule a fixture group was recorded with;
* ``networks``  - the reference U-Net / CLIP stored in a fixture, converted;
* ``models``    - parity of a U-Net or CLIP fixture;
* ``diffusion`` - parity of schedules, single steps and losses (stub model);
* ``loops``     - parity of whole sampling loops and a CLIP-guided step;
* ``clip_score``- parity of the CLIP score with torchmetrics over a Hugging Face CLIP;
* ``fid``       - parity of the FID Inception features and the Fréchet distance;
* ``check``     - the kind of a fixture and ``check_fixture(path) -> errors``.
"""

from glide_jax.parity.check import FIXTURE_KINDS, check_fixture, fixture_kind
from glide_jax.parity.fixtures import Errors, load_fixture
