"""UniPC and Euler-ancestral against diffusers (``tools/compare_diffusers_samplers.py``).

diffusers is not a dependency: this runs only where a separate interpreter
with torch and diffusers is configured (``GLIDE_JAX_DIFFUSERS_PYTHON``, or
``.venv-diffusers`` in the repository), and it takes a minute and a half, so it is in the
slow set. The tool's docstring quotes the measured differences for machines
without that interpreter.
"""

import pytest

from tools import compare_diffusers_samplers as tool

PYTHON = tool.diffusers_python()


@pytest.mark.slow
@pytest.mark.skipif(PYTHON is None, reason="no diffusers interpreter: set GLIDE_JAX_DIFFUSERS_PYTHON or create "
                                            f"{tool.DEFAULT_PYTHON} with torch and diffusers")
def test_samplers_match_diffusers():
    result = tool.compare(PYTHON)
    print({k: v for k, v in result.items() if k != "cases"})
    assert result["max"]["float64"] < 1e-8  # measured 2.7e-11: the same solver
    assert result["max"]["float32"] < 5e-3  # measured 2.1e-3: float32 rounding at t=999 ...
    assert result["diffusers_unipc_float32_vs_float64"] > 5e-4  # ... which moves diffusers itself by 1.5e-3
    assert result["euler_a_from_second_step"] < 1e-5  # measured 2.3e-6 without t=999
    assert result["trailing_mismatch"] == []
