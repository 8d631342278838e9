"""Read PyTorch ``.pt`` state dicts without torch, without running pickled code, and without trusting the file.

:func:`load_state_dict` reads both of torch's formats, told apart by the
file's first bytes: the zip archive ``torch.save`` writes since torch 1.6
(``PK\\x03\\x04``), read here, and the older stream of pickles (a pickle's
``\\x80`` protocol opcode), read by :mod:`glide_jax.hub.torch_legacy`.

In the zip format, ``<root>/data.pkl`` pickles the structure (an ``OrderedDict``
of tensors rebuilt by ``torch._utils._rebuild_tensor_v2``) and each tensor
storage is a raw blob ``<root>/data/<key>`` (little-endian unless
``<root>/byteorder`` says ``big``). The unpickler (:mod:`glide_jax.hub.torch_pickle`)
resolves only the handful of globals a state dict needs; anything else
(arbitrary callables a malicious file could name) is refused, so loading a
checkpoint cannot execute code.

A checkpoint is untrusted input, so every number in it is checked before it is
used: member sizes before anything is decompressed (``checkpoint_zip``), the
pickle's memo indices, nesting and object count before it is unpickled
(``pickle_check``), and each tensor's offset, sizes and strides against its
storage before a single element is read. Storages are decompressed one at a
time, after every tensor has been checked, and only those the state dict uses.
"""

from __future__ import annotations

import contextlib
import zipfile
from pathlib import Path
from typing import Dict, Iterator, List, Tuple

import numpy as np

from glide_jax.hub import torch_legacy
from glide_jax.hub.checkpoint_zip import (DEFAULT_MAX_COMPRESSION_RATIO, DEFAULT_MAX_MEMBER_BYTES,
                                          DEFAULT_MAX_PICKLE_BYTES, DEFAULT_MAX_TOTAL_BYTES, CheckpointFormatError,
                                          CheckpointZip, check_limits, clip, describe)
from glide_jax.hub.pickle_check import check_pickle
from glide_jax.hub.torch_pickle import (MAX_STORAGE_KEY_CHARS, RefusedGlobalError, StateDictUnpickler, StorageRef,
                                        TensorPlan, TensorRecord, build_tensor, check_tensor_budget, is_storage_type,
                                        plan_tensor, select_state_dict, unpickle)
from glide_jax.regular_files import check_regular_file

__all__ = ["CheckpointFormatError", "RefusedGlobalError", "checkpoint_format", "load_state_dict",
           "load_state_dict_with_torch", "read_manifest"]

ZIP_MAGIC = b"PK\x03\x04"
PICKLE_PROTO = 0x80  # the first byte of any pickle of protocol 2 or later, as torch's legacy format writes


class _ZipUnpickler(StateDictUnpickler):
    """Storages are ``('storage', type, key, location, numel)``, their bytes the member ``<root>data/<key>``."""

    def __init__(self, data: bytes, archive: CheckpointZip, root: str):
        super().__init__(data, archive)
        self._archive = archive
        self._root = root
        self._storages: Dict[str, StorageRef] = {}

    def persistent_load(self, pid):
        archive = self._archive
        if not (type(pid) is tuple and len(pid) == 5 and isinstance(pid[0], str) and pid[0] == "storage"):
            raise archive.error(f"unsupported persistent id ({describe(pid)}); expected "
                                "('storage', type, key, location, numel)")
        _, storage_type, key, _location, numel = pid
        if not (isinstance(key, str) and 0 < len(key) <= MAX_STORAGE_KEY_CHARS):
            raise archive.error(f"storage key {describe(key)} is not a short string")
        if not is_storage_type(storage_type):
            raise archive.error(f"storage {key!r} has unknown storage type {describe(storage_type)}")
        if type(numel) is not int or numel < 0:
            raise archive.error(f"storage {key!r} declares {describe(numel)} elements")
        cached = self._storages.get(key)
        if cached is not None:
            if cached.dtype != storage_type.dtype or cached.numel != numel:
                raise archive.error(f"storage {key!r} is declared twice with different types or sizes")
            return cached
        member = archive.check(f"{self._root}data/{key}", f"storage {key!r}", archive.limits["max_member_bytes"],
                               expected_bytes=numel * storage_type.dtype.itemsize)
        storage = self._storages[key] = StorageRef(key, storage_type.dtype, numel, member)
        return storage


def _build_tensors(plans: Dict[str, TensorPlan], archive: CheckpointZip, byteorder: str) -> Dict[str, np.ndarray]:
    """Decompress one storage at a time and build its tensors, so only one storage is in memory beside them."""
    by_storage: Dict[str, List[str]] = {}
    for name, plan in plans.items():
        by_storage.setdefault(plan.storage.key, []).append(name)
    tensors: Dict[str, np.ndarray] = dict.fromkeys(plans)
    order = "<" if byteorder == "little" else ">"
    for key, names in by_storage.items():
        storage = plans[names[0]].storage
        raw = np.frombuffer(archive.read(storage.location, f"storage {key!r}"),
                            dtype=np.dtype(f"{order}u{storage.dtype.itemsize}"))
        for name in names:
            tensors[name] = build_tensor(plans[name], raw)
    return tensors


def _find_root(archive: CheckpointZip) -> str:
    pickles = [name for name in archive.members if name == "data.pkl" or name.endswith("/data.pkl")]
    if len(pickles) != 1:
        raise archive.error(f"expected one data.pkl in the archive, found {clip(str(pickles[:5]))}")
    return pickles[0][: -len("data.pkl")]


def _read_byteorder(archive: CheckpointZip, root: str) -> str:
    name = f"{root}byteorder"
    if name not in archive.members:
        return "little"
    value = bytes(archive.read(archive.check(name, "byteorder record", 16), "byteorder record"))
    if value not in (b"little", b"big"):
        raise archive.error(f"byteorder record is {describe(value.decode('latin-1'))}, not 'little' or 'big'")
    return value.decode()


def _load_records(archive: CheckpointZip, root: str) -> Dict[str, TensorRecord]:
    name = f"{root}data.pkl"
    data = bytes(archive.read(archive.check(name, "the pickle", archive.limits["max_pickle_bytes"]), "the pickle"))
    check_pickle(data, archive)
    return select_state_dict(unpickle(_ZipUnpickler(data, archive, root), "the pickle"), archive)


def checkpoint_format(path) -> str:
    """``"zip"`` or ``"legacy"``: which of torch's formats ``path`` is in, from its first bytes."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    check_regular_file(path, "checkpoint")  # before anything opens it: a FIFO would hang, /dev/zero never ends
    with open(path, "rb") as f:
        head = f.read(4)
    if head == ZIP_MAGIC:
        return "zip"
    if head[:1] == bytes([PICKLE_PROTO]):
        return "legacy"
    if zipfile.is_zipfile(path):  # a zip with something prepended: not what torch.save writes, but well-formed
        return "zip"
    raise CheckpointFormatError(
        f"{path} is not a PyTorch checkpoint: it starts with {describe(head.decode('latin-1'))}, neither a zip "
        "archive (torch >= 1.6) nor a pickle (the legacy format): a damaged or incomplete download")


def _limits(max_member_bytes, max_total_bytes, max_pickle_bytes, max_compression_ratio) -> Dict[str, int]:
    limits = dict(max_member_bytes=max_member_bytes, max_total_bytes=max_total_bytes,
                  max_pickle_bytes=max_pickle_bytes, max_compression_ratio=max_compression_ratio)
    check_limits(limits)
    return limits


def load_state_dict(path, *, max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES,
                    max_total_bytes: int = DEFAULT_MAX_TOTAL_BYTES, max_pickle_bytes: int = DEFAULT_MAX_PICKLE_BYTES,
                    max_compression_ratio: int = DEFAULT_MAX_COMPRESSION_RATIO) -> Dict[str, np.ndarray]:
    """Load a ``torch.save``-d state dict (zip or legacy format) as ``{name: numpy array}``, never executing code.

    ``max_member_bytes`` bounds any one decompressed member (one storage in the
    legacy format), ``max_pickle_bytes`` the pickle (all the pickles at the start of a
    legacy file), and ``max_total_bytes`` both everything decompressed and the arrays
    built from it (views of one storage each cost a copy). Beyond 16 MiB, neither a
    member nor the file as a whole may expand more than ``max_compression_ratio``
    times (see :mod:`glide_jax.hub.checkpoint_zip`). Refusals raise
    :class:`CheckpointFormatError` (a ``ValueError``) naming the file and the tensor
    or member at fault.
    """
    limits = _limits(max_member_bytes, max_total_bytes, max_pickle_bytes, max_compression_ratio)
    if checkpoint_format(path) == "legacy":
        return torch_legacy.load_legacy_state_dict(path, limits)
    with _planned(path, limits) as (archive, plans, byteorder):
        check_tensor_budget(plans, archive, archive.budget)
        return _build_tensors(plans, archive, byteorder)


def read_manifest(path) -> Dict[str, Tuple[Tuple[int, ...], np.dtype]]:
    """``{name: (shape, dtype)}`` of a ``.pt`` state dict, every tensor checked against its storage, no data read.

    The same checks as :func:`load_state_dict` (with its default limits) short of
    decompressing the storages: what a downloaded checkpoint is verified with before
    it takes its final name.
    """
    limits = _limits(DEFAULT_MAX_MEMBER_BYTES, DEFAULT_MAX_TOTAL_BYTES, DEFAULT_MAX_PICKLE_BYTES,
                     DEFAULT_MAX_COMPRESSION_RATIO)
    if checkpoint_format(path) == "legacy":
        return torch_legacy.read_legacy_manifest(path, limits)
    with _planned(path, limits) as (_, plans, _):
        return {name: (plan.size, np.dtype(plan.storage.dtype)) for name, plan in plans.items()}


@contextlib.contextmanager
def _planned(path, limits: Dict[str, int]) -> Iterator[Tuple[CheckpointZip, Dict[str, TensorPlan], str]]:
    """The open archive, every tensor's checked plan and the byte order; nothing decompressed but the pickle."""
    path = Path(path)
    if not zipfile.is_zipfile(path):
        raise CheckpointFormatError(
            f"{path} is not a readable zip-format PyTorch checkpoint: it starts like a zip archive but has no "
            "central directory (a damaged or incomplete download?)"
        )
    with CheckpointZip.open(path, limits) as archive:
        root = _find_root(archive)
        records = _load_records(archive, root)
        byteorder = _read_byteorder(archive, root)
        yield archive, {name: plan_tensor(record, name, archive) for name, record in records.items()}, byteorder


def load_state_dict_with_torch(path) -> Dict[str, np.ndarray]:
    """The same through torch itself (optional extra), with ``weights_only=True``."""
    try:
        import torch  # deferred: torch is the optional [torch] extra
    except ImportError as e:
        raise ImportError("torch is not installed: `pip install glide-jax[torch]`, or use load_state_dict") from e
    state = torch.load(path, map_location="cpu", weights_only=True)
    return {k: v.float().numpy() if v.dtype == torch.bfloat16 else v.numpy() for k, v in state.items()}
