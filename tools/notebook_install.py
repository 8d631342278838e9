"""Install glide_jax into a notebook runtime (Colab) without replacing a jax it already supports.

The notebooks' first cell clones the repository and calls :func:`install` from
this file of the checkout. A Colab runtime comes with its own jax; setup.cfg
allows only the minor release CI tests (``jax>=0.10.2,<0.11``), and a plain
``pip install`` would replace any jax outside that range, under a runtime that
may already have imported the old one. So:

* jax and jaxlib installed and inside the range: they are kept, pinned by a
  constraints file while pip installs the package and whatever else is missing;
* jax not installed: pip installs the tested release;
* jax installed outside the range: pip installs the tested release in its
  place, after a message saying so and that the runtime must be restarted.

Run by hand: ``python tools/notebook_install.py CHECKOUT [--dry-run]``.
"""

from __future__ import annotations

import argparse
import configparser
import dataclasses
import importlib.metadata
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence

try:
    from packaging.requirements import Requirement
    from packaging.version import InvalidVersion, Version
except ImportError:  # a bare environment: the copy inside pip, which installing needs anyway
    from pip._vendor.packaging.requirements import Requirement
    from pip._vendor.packaging.version import InvalidVersion, Version

KEPT = ("jax", "jaxlib")  # what a runtime brings that the install must not replace when it is supported


@dataclasses.dataclass(frozen=True)
class InstallPlan:
    """What :func:`install` runs: pip's arguments, the pins that keep the runtime's jax, and why."""

    pip_args: List[str]
    constraints: Dict[str, str]  # distribution name -> version kept; empty when nothing is kept
    message: str
    restart_needed: bool


def declared_requirements(checkout) -> List[Requirement]:
    """The ``install_requires`` of the checkout's setup.cfg."""
    setup = configparser.ConfigParser()
    if not setup.read(Path(checkout) / "setup.cfg"):
        raise FileNotFoundError(f"{checkout} has no setup.cfg: it is not a glide_jax checkout")
    lines = setup.get("options", "install_requires", fallback="").splitlines()
    return [Requirement(line.strip()) for line in lines if line.strip() and not line.strip().startswith("#")]


def installed_versions(names: Sequence[str]) -> Dict[str, Optional[str]]:
    """``{name: installed version or None}`` of the runtime's distributions."""
    found = {}
    for name in names:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return found


def _supported(requirement: Requirement, version: Optional[str]) -> bool:
    if version is None:
        return False
    try:
        return requirement.specifier.contains(Version(version), prereleases=True)
    except InvalidVersion:
        return False


def _lower_bound_first(requirement: Requirement) -> str:
    """``>=0.10.2,<0.11`` as setup.cfg writes it (packaging sorts the bounds the other way round)."""
    return ",".join(sorted(map(str, requirement.specifier), key=lambda bound: not bound.startswith(">")))


def plan(checkout, requirements: Sequence[Requirement], installed: Mapping[str, Optional[str]]) -> InstallPlan:
    """How to install the checkout given the runtime's jax and jaxlib versions (``installed``)."""
    wanted = {requirement.name.lower(): requirement for requirement in requirements}
    kept = {name: installed.get(name) for name in KEPT if name in wanted}
    ranges = " and ".join(f"{name}{_lower_bound_first(wanted[name])}" for name in kept)
    pip_args = [sys.executable, "-m", "pip", "install", "-q", str(checkout)]
    present = {name: version for name, version in kept.items() if version is not None}
    if not present:
        return InstallPlan(pip_args, {}, f"installing glide_jax with the tested {ranges}", False)
    versions = ", ".join(f"{name} {version}" for name, version in present.items())
    if all(_supported(wanted[name], version) for name, version in present.items()):
        return InstallPlan(pip_args, present, f"keeping this runtime's {versions} (supported: {ranges}); "
                                              "installing glide_jax and the packages it still needs", False)
    return InstallPlan(pip_args, {}, f"this runtime has {versions}, outside the range glide_jax is tested with "
                                     f"({ranges}): pip replaces it with the tested release. Restart the runtime "
                                     "when this cell is done (Colab: Runtime > Restart session) so that the new "
                                     "jax is the one imported, then run the notebook again.", True)


def install(checkout, dry_run: bool = False) -> InstallPlan:
    """Install the checkout as :func:`plan` says, printing the plan first."""
    requirements = declared_requirements(checkout)
    chosen = plan(checkout, requirements, installed_versions(KEPT))
    print(chosen.message)
    if dry_run:
        return chosen
    with tempfile.TemporaryDirectory() as folder:
        args = list(chosen.pip_args)
        if chosen.constraints:
            pins = Path(folder) / "keep-runtime.txt"
            pins.write_text("".join(f"{name}=={version}\n" for name, version in chosen.constraints.items()))
            args += ["-c", str(pins)]
        subprocess.check_call(args)
    return chosen


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python tools/notebook_install.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("checkout", help="the glide_jax checkout to install")
    parser.add_argument("--dry-run", action="store_true", help="print the plan, install nothing (default: install)")
    args = parser.parse_args(argv)
    install(args.checkout, args.dry_run)
    return 0


if __name__ == "__main__":
    sys.exit(main())
