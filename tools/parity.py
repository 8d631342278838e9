"""Check glide_jax against a PyTorch-reference fixture: ``python -m tools.parity FIXTURE.npz [...]``.

Prints the max abs / max relative error per output and exits non-zero when any
error exceeds ``--atol`` (default 1e-4), scaled for outputs on a larger scale
(CLIP scores, 100 * cos, are held to 10 * atol). Outputs named ``...:rel`` (values whose
scale is arbitrary, such as a Fréchet distance) are judged by their relative
error against ``--rtol`` (default 1e-6) instead; outputs named ``...:info`` are
printed for information and never fail.
"""

from __future__ import annotations

import argparse
import sys

from glide_jax.parity import check_fixture
from glide_jax.parity.check import atol_factor


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("fixtures", nargs="+", help="fixture .npz files (each with its .json beside it)")
    ap.add_argument("--atol", type=float, default=1e-4, help="max abs error allowed (default 1e-4)")
    ap.add_argument("--loop-atol", type=float, default=None,
                    help="max abs error for whole multi-step sampling loops (default: same as --atol)")
    ap.add_argument("--rtol", type=float, default=1e-6,
                    help="max relative error for outputs named ...:rel (default 1e-6)")
    args = ap.parse_args(argv)
    failed = False
    for path in args.fixtures:
        errors = check_fixture(path)
        print(f"{path}")
        for name, (abs_err, rel_err) in errors.items():
            if name.endswith(":info"):
                print(f"  info {name:40s} max_abs={abs_err:.3e} max_rel={rel_err:.3e}")
                continue
            if name.endswith(":rel"):
                ok = rel_err <= args.rtol
            else:
                tol = args.loop_atol if (args.loop_atol is not None and name.startswith("loop/")) else args.atol
                ok = abs_err <= tol * atol_factor(name)
            failed |= not ok
            print(f"  {'ok  ' if ok else 'FAIL'} {name:40s} max_abs={abs_err:.3e} max_rel={rel_err:.3e}")
    print("parity: " + ("FAILED" if failed else "passed"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
