"""Part files of interrupted downloads: how they are named and when one may be removed.

A download writes ``<name>.<pid>.<hex>.part`` beside its destination and renames it once verified
(:mod:`glide_jax.hub.download`). A process killed before the rename leaves its part file behind;
the next download of the same file removes those whose process is gone.
"""

from __future__ import annotations

import contextlib
import glob
import os
import uuid
from pathlib import Path
from typing import List, Optional

PART_SUFFIX = ".part"


def part_name(dest: Path) -> Path:
    """A fresh part file for ``dest``, named by this process and a random suffix."""
    return dest.with_name(f"{dest.name}.{os.getpid()}.{uuid.uuid4().hex}{PART_SUFFIX}")


def _part_owner(part: Path, dest: Path) -> Optional[int]:
    """The pid in ``<dest>.<pid>.<hex>.part``, or None if ``part`` is not named so."""
    middle = part.name[len(dest.name) + 1: -len(PART_SUFFIX)].split(".")
    if not part.name.startswith(dest.name + ".") or len(middle) != 2 or not middle[0].isdigit():
        return None
    return int(middle[0])


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except OSError:  # it exists but belongs to someone else (EPERM)
        return True
    return True


def remove_stale_parts(dest: Path) -> List[Path]:
    """Remove the part files of ``dest`` whose writing process no longer exists; return them.

    Called under ``dest``'s lock, which every writer holds while its part file exists, so a part
    file found here was left by a killed process; the pid check keeps the part file of any process
    still alive regardless (one that shares the cache without the lock, or a pid reused since).
    Does nothing where ``os.kill(pid, 0)`` cannot ask about a process (Windows).
    """
    if os.name != "posix":
        return []
    removed = []
    for part in dest.parent.glob(glob.escape(dest.name) + ".*" + PART_SUFFIX):
        pid = _part_owner(part, dest)
        if pid is None or pid == os.getpid() or _process_exists(pid):
            continue
        with contextlib.suppress(FileNotFoundError):
            part.unlink()
            removed.append(part)
    return removed
