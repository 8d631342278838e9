"""Fuzz the torch-free ``.pt`` reader: every mutated file either loads correctly or raises CheckpointFormatError.

The loop runs in a subprocess (this file run as a script) under an address-space
limit, so a segfault or a runaway allocation fails the test instead of killing
pytest or the machine. Each case knows what it expects: ``load`` (the arrays must
equal the reference built by index arithmetic, bit for bit), ``refuse``, or
``either`` (random damage whose effect is unknowable); any exception other than
CheckpointFormatError is a failure whatever the expectation.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import resource
import struct
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Callable, Dict, List, NamedTuple, Optional

import numpy as np
import pytest
from pt_files import (STORAGE_TYPES, PtFile, RawMember, TensorRef, deflated_zeros, peak_rss_mb, raw_zip,
                      reference_nbytes, sample_file, simple_file)

from glide_jax.hub.checkpoint_zip import RATIO_EXEMPT_BYTES

REPO = Path(__file__).resolve().parents[1]
SMALL_BYTES = 1 << 20  # a view this small must load, and is compared element for element
BUDGET_FLOOR = RATIO_EXEMPT_BYTES  # a tiny file's tensors may not add up to more

HOSTILE_INTS = [0, 1, 2, 3, 4, 5, 6, 10, 11, 12, 19, 20, 21, -1, -2, -(2 ** 31), 2 ** 31 - 1, 2 ** 31, 2 ** 32 + 1,
                2 ** 48, 2 ** 62, 2 ** 63 - 1, 2 ** 63, 2 ** 64 + 3, 10 ** 12, 10 ** 30, -(10 ** 30), -(2 ** 63)]
HOSTILE_OTHERS = [1.5, None, "3", True, (), (1,), [2]]


class Case(NamedTuple):
    family: str
    data: bytes
    expect: str  # "load", "refuse" or "either"
    expected: Optional[Dict[str, np.ndarray]] = None


def replace_pickle(pt: PtFile, pickle_bytes: bytes) -> bytes:
    return pt.zip_bytes([(n, pickle_bytes if n.endswith("data.pkl") else d) for n, d in pt.members()])


def any_int(rng: random.Random) -> int:
    return rng.choice(HOSTILE_INTS) if rng.random() < 0.6 else rng.randrange(0, 24)


def any_value(rng: random.Random):
    return rng.choice(HOSTILE_OTHERS) if rng.random() < 0.15 else any_int(rng)


def hostile_shape(rng: random.Random, shape):
    if not isinstance(shape, tuple) or rng.random() < 0.1:
        return rng.choice([any_value(rng), tuple(any_int(rng) for _ in range(rng.randrange(0, 5)))])
    roll = rng.random()
    if roll < 0.5 and shape:
        index = rng.randrange(len(shape))
        return shape[:index] + (any_value(rng),) + shape[index + 1:]
    if roll < 0.65:
        return shape + (any_int(rng),)
    if roll < 0.75:
        return shape[:-1]
    if roll < 0.85:
        return list(shape)
    return tuple(rng.choice([1, 0, 2]) for _ in range(rng.choice([31, 32, 33, 40])))


def expectation(pt: PtFile) -> Case:
    """What the reader must do with ``pt``, from the reference arithmetic alone."""
    total = 0
    for tensor in pt.tensors:
        storage = pt.storages[tensor.key]
        nbytes = reference_nbytes(storage, tensor.offset, tensor.size, tensor.stride)
        size = tuple(tensor.size) if isinstance(tensor.size, (tuple, list)) else ()
        if nbytes is None or len(size) > 32 or any(dim > 2 ** 48 for dim in size):
            return Case("", b"", "refuse")
        total += nbytes
    if total > BUDGET_FLOOR:
        return Case("", b"", "refuse")
    if total > SMALL_BYTES:
        return Case("", b"", "either")
    return Case("", b"", "load", pt.expected())


def views(rng: random.Random, base: PtFile) -> Case:
    """Offsets, sizes and strides re-pickled with hostile values (huge, negative, wrong types, too many dims)."""
    tensors = list(base.tensors)
    for _ in range(rng.choice([1, 1, 2])):
        index = rng.randrange(len(tensors))
        tensor = tensors[index]
        field = rng.choice(["offset", "size", "stride", "size", "stride", "both"])
        if field == "offset":
            tensor = dataclasses.replace(tensor, offset=any_value(rng))
        elif field == "both":
            dims = rng.randrange(0, 4)
            tensor = dataclasses.replace(tensor, offset=any_int(rng), size=tuple(any_int(rng) for _ in range(dims)),
                                         stride=tuple(rng.choice([0, 1, 2, 3, 10 ** 12]) for _ in range(dims)))
        else:
            tensor = dataclasses.replace(tensor, **{field: hostile_shape(rng, getattr(tensor, field))})
        tensors[index] = tensor
    pt = base.replace(tensors=tensors)
    return expectation(pt)._replace(family="views", data=pt.zip_bytes())


def variants(rng: random.Random, base: PtFile) -> Case:
    """The same content written differently: compression, byte order, root name, member order."""
    pt = base.replace(compression=rng.choice([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED]),
                      byteorder=rng.choice([None, "little", "big"]), root=rng.choice(["archive", "base", "x"]))
    members = pt.raw_members()
    rng.shuffle(members)
    return Case("variants", raw_zip(members), "load", base.expected())


def storage_declarations(rng: random.Random, base: PtFile) -> Case:
    """The persistent id lies: wrong numel, unknown or reinterpreting storage type, missing or non-string key."""
    key = rng.choice(sorted(base.storages))
    storage = base.storages[key]
    roll = rng.random()
    if roll < 0.45:
        numel = rng.choice([storage.size + 1, storage.size - 1, 0, -1, 2 ** 40, 2 ** 62, 2 ** 64, 1.0, None, "4"])
        return Case("storage declarations", base.replace(numels={key: numel}).zip_bytes(), "refuse")
    if roll < 0.7:
        name = rng.choice(["ComplexFloatStorage", "Tensor", "UntypedStorage", "QInt8Storage", "_TypedStorage"])
        return Case("storage declarations", base.replace(type_names={key: name}).zip_bytes(), "refuse")
    if roll < 0.9:
        same_size = [dtype for dtype in STORAGE_TYPES if dtype.itemsize == storage.dtype.itemsize]
        dtype = rng.choice(same_size)
        # the bytes reinterpreted: the reader must return exactly the reinterpretation
        reinterpreted = storage.view(np.uint8) != 0 if dtype == np.bool_ else storage.view(dtype)
        pt = base.replace(type_names={key: STORAGE_TYPES[dtype]})
        expected = base.replace(storages={**base.storages, key: reinterpreted})
        return expectation(expected)._replace(family="storage declarations", data=pt.zip_bytes())
    tensors = list(base.tensors)
    tensors[0] = TensorRef(tensors[0].name, rng.choice(["99", "", "../0", 0]), 0, (1,), (1,))
    return Case("storage declarations", base.replace(tensors=tensors).zip_bytes(), "refuse")


def members(rng: random.Random, base: PtFile) -> Case:
    """Storages shorter or longer than declared, duplicate names, missing members, a second pickle."""
    listed = base.members()
    storage_names = [n for n, _ in listed if "/data/" in n]
    roll = rng.random()
    if roll < 0.35:
        target = rng.choice(storage_names)
        cut = rng.choice([1, 2, 7, 8])
        changed = [(n, (d[:-cut] if rng.random() < 0.6 else d + bytes(cut)) if n == target else d) for n, d in listed]
        return Case("members", base.zip_bytes(changed), "refuse")
    if roll < 0.6:
        name, data = rng.choice(listed)
        duplicate = (name, data if rng.random() < 0.5 else data[::-1])
        changed = list(listed)
        changed.insert(rng.randrange(len(changed) + 1), duplicate)
        return Case("members", base.zip_bytes(changed), "refuse")
    if roll < 0.85:
        dropped = rng.choice(storage_names + [listed[0][0]])
        return Case("members", base.zip_bytes([m for m in listed if m[0] != dropped]), "refuse")
    if roll < 0.93:
        return Case("members", base.zip_bytes(listed + [("other/data.pkl", listed[0][1])]), "refuse")
    return Case("members", base.zip_bytes([m for m in listed if not m[0].endswith("/version")]), "load",
                base.expected())


def pickle_bytes(rng: random.Random, base: PtFile) -> Case:
    """Random bytes in the pickle: flips, insertions, deletions, repeats and cuts, in a valid zip."""
    data = bytearray(base.pickle_bytes())
    for _ in range(rng.choice([1, 1, 2, 3, 8])):
        if not data:
            data = bytearray(b"\x80")
        position = rng.randrange(len(data))
        roll = rng.random()
        if roll < 0.45:
            data[position] = rng.randrange(256)
        elif roll < 0.6:
            data[position:position] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 6)))
        elif roll < 0.75:
            del data[position:position + rng.randrange(1, 6)]
        elif roll < 0.9:
            end = min(len(data), position + rng.randrange(1, 40))
            data[end:end] = data[position:end]
        else:
            del data[position:]
    return Case("pickle bytes", replace_pickle(base, bytes(data)), "either")


def nested_key(kind: str, depth: int) -> bytes:
    """Pickle opcodes that build ``{key: None}`` with ``key`` nested ``depth`` levels deep, then drop it."""
    if kind == "tuples":
        key = b")" + b"\x85" * depth
    elif kind == "memo":
        key = b")q\x000" + b"h\x00\x85q\x000" * depth + b"h\x00"  # each level reads the last back from the memo
    else:
        key = b"(" * depth + b")" + b"\x91" * depth  # frozensets
    return b"}" + key + b"Ns0"


def pickle_bombs(rng: random.Random, base: PtFile) -> Case:
    """Globals a state dict does not need, memo indices that would size the memo table by gigabytes, floods
    of objects, and nesting that would overflow the C stack when hashed (kept small, the file must still load)."""
    data = base.pickle_bytes()
    roll = rng.random()
    if roll < 0.4:
        old = rng.choice([b"torch._utils\n_rebuild_tensor_v2", b"collections\nOrderedDict", b"torch\nFloatStorage"])
        new = rng.choice([b"os\nsystem", b"builtins\neval", b"numpy\nfrombuffer", b"collections\ndefaultdict",
                          b"torch\nTensor", b"torch._utils\n_rebuild_qtensor", b"__builtin__\ngetattr"])
        return Case("pickle bombs", replace_pickle(base, data.replace(old, new)), "refuse")
    if roll < 0.6:
        index = rng.choice([2 ** 20, 2 ** 27, 2 ** 32 - 1, 10 ** 6])
        bomb = data[:2] + b"N" + b"r" + struct.pack("<I", index) + b"0" + data[2:]
        return Case("pickle bombs", replace_pickle(base, bomb), "refuse")
    if roll < 0.7:
        count = rng.choice([10, 1000, 300_000])  # empty sets between MARK and POP_MARK: 256 bytes each to the reader
        flood = data[:2] + b"(" + b"\x8f" * count + b"1" + data[2:]
        return Case("pickle bombs", replace_pickle(base, flood), "load" if count <= 1000 else "refuse",
                    base.expected() if count <= 1000 else None)
    depth = rng.choice([3, 60, 98, 99, 1000, 300_000])
    bomb = data[:2] + nested_key(rng.choice(["tuples", "memo", "frozensets"]), depth) + data[2:]
    if depth <= 98:  # the reader's limit is 100 levels, and the dict holding the key adds two
        return Case("pickle bombs", replace_pickle(base, bomb), "load", base.expected())
    return Case("pickle bombs", replace_pickle(base, bomb), "refuse")


def zip_damage(rng: random.Random, base: PtFile) -> Case:
    """The zip itself: random flips anywhere, truncation, headers declaring sizes and CRCs the data lacks."""
    roll = rng.random()
    if roll < 0.4:
        data = bytearray(base.replace(compression=rng.choice([0, zipfile.ZIP_DEFLATED])).zip_bytes())
        for _ in range(rng.choice([1, 2, 4, 8])):
            data[rng.randrange(len(data))] = rng.randrange(256)
        return Case("zip damage", bytes(data), "either")
    if roll < 0.6:
        data = base.zip_bytes()
        return Case("zip damage", data[:rng.randrange(len(data))], "refuse")
    raw = base.replace(compression=rng.choice([0, zipfile.ZIP_DEFLATED])).raw_members()
    read = [i for i, member in enumerate(raw) if not member.name.endswith("/version")]
    index = rng.choice(read)
    member = raw[index]
    field = rng.choice(["file_size", "compress_size", "crc"])
    # a deflate stream carries its own end, so a deflated member whose compressed size is overstated still reads
    expect = "either" if field == "compress_size" and member.method == zipfile.ZIP_DEFLATED else "refuse"
    if field == "crc":
        raw[index] = member.replace(crc=member.crc ^ (1 << rng.randrange(32)))
    else:
        value = getattr(member, field)
        raw[index] = member.replace(**{field: rng.choice([value + 1, value - 1, 2 * value + 100, 0, 2 ** 31,
                                                          2 ** 32 - 2, 2 ** 32 - 1])})
    return Case("zip damage", raw_zip(raw), expect)


class Bombs:
    """Members and views that would expand a small file into gigabytes; built once, they are reused."""

    def __init__(self):
        self.stream, self.crc = deflated_zeros(64 << 20)
        storage = np.arange(1 << 16, dtype=np.float32)
        self.views = simple_file().replace(storages={"0": storage}, tensors=[
            TensorRef(f"copy.{index}", "0", 0, (1 << 16,), (1,)) for index in range(200)]).zip_bytes()

    def __call__(self, rng: random.Random, base: PtFile) -> Case:
        if rng.random() < 0.3:
            return Case("bombs", self.views, "refuse")
        pt = simple_file(4)
        numel = (64 << 20) // 4
        declared = rng.choice([64 << 20, 1 << 40, (1 << 32) - 1])
        bomb = RawMember("archive/data/0", self.stream, zipfile.ZIP_DEFLATED, self.crc, declared & 0xFFFFFFFF,
                         len(self.stream))
        others = [RawMember.of(n, d) for n, d in pt.replace(numels={"0": numel}).members()
                  if not n.endswith("/data/0")]
        return Case("bombs", raw_zip(others + [bomb]), "refuse")


def compare(loaded, expected: Dict[str, np.ndarray]) -> Optional[str]:
    if list(loaded) != list(expected):
        return f"keys {list(loaded)[:4]} != {list(expected)[:4]}"
    for name, array in expected.items():
        got = loaded[name]
        if (got.dtype, got.shape) != (array.dtype, array.shape) or got.tobytes() != array.tobytes():
            return f"{name}: got {got.dtype}{got.shape}, expected {array.dtype}{array.shape} or different values"
    return None


def run(seconds: float, max_cases: int, seed: int) -> dict:
    from glide_jax.hub.torch_zip import CheckpointFormatError, load_state_dict

    rng = random.Random(seed)
    bases = [sample_file(), simple_file(4)]
    families: List[Callable[[random.Random, PtFile], Case]] = [
        views, views, views, variants, storage_declarations, members, pickle_bytes, pickle_bytes, pickle_bombs,
        zip_damage, zip_damage, Bombs()]
    counts = {"loaded": 0, "refused": 0, "other": 0}
    by_family: Dict[str, Dict[str, int]] = {}
    failures: List[str] = []
    start = time.perf_counter()
    cases = 0
    with tempfile.TemporaryDirectory() as folder:
        while cases < max_cases and time.perf_counter() - start < seconds:
            case = families[cases % len(families)](rng, rng.choice(bases))
            path = Path(folder) / f"case{cases}.pt"
            path.write_bytes(case.data)
            cases += 1
            try:
                loaded = load_state_dict(path)
                outcome = "loaded"
            except CheckpointFormatError:
                outcome = "refused"
            except Exception as e:  # the reader must never let anything else out
                outcome = "other"
                failures.append(f"case {cases} ({case.family}): {type(e).__name__}: {str(e)[:200]}")
            path.unlink()
            counts[outcome] += 1
            family = by_family.setdefault(case.family, {"loaded": 0, "refused": 0, "other": 0})
            family[outcome] += 1
            if outcome == "loaded":
                problem = None
                if case.expect == "refuse":
                    problem = "loaded a file it must refuse"
                elif case.expected is not None:
                    problem = compare(loaded, case.expected)
                elif not all(isinstance(k, str) and isinstance(v, np.ndarray) for k, v in loaded.items()):
                    problem = "loaded something other than {str: ndarray}"
                if problem:
                    failures.append(f"case {cases} ({case.family}): {problem}")
            elif outcome == "refused" and case.expect == "load":
                failures.append(f"case {cases} ({case.family}): refused a valid file")
    return {"cases": cases, "seconds": round(time.perf_counter() - start, 1), **counts, "by_family": by_family,
            "failures": failures[:20], "failure_count": len(failures), "peak_rss_mb": round(peak_rss_mb())}


@pytest.mark.slow  # a subprocess fuzzing run (~13 s)
def test_fuzzed_files_load_exactly_or_are_refused():
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "tests")]))
    done = subprocess.run([sys.executable, __file__, "--seconds", "12", "--max-cases", "6000", "--seed", "0"],
                          capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, f"the fuzz loop died with status {done.returncode}: {done.stderr[-3000:]}"
    report = json.loads(done.stdout.strip().splitlines()[-1])
    print(json.dumps(report, indent=1))
    assert report["failures"] == [] and report["other"] == 0, report["failures"]
    assert report["cases"] >= 1000, report
    by_family = report["by_family"]
    assert set(by_family) == {"views", "variants", "storage declarations", "members", "pickle bytes", "pickle bombs",
                              "zip damage", "bombs"}, by_family
    assert {family for family, outcomes in by_family.items() if outcomes["refused"]} == set(by_family) - {"variants"}
    loaded_families = {family for family, outcomes in by_family.items() if outcomes["loaded"]}
    assert {"views", "variants", "storage declarations", "members", "pickle bombs"} <= loaded_families, by_family
    assert report["peak_rss_mb"] < 500, report


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="fuzz the .pt reader; prints one JSON report")
    parser.add_argument("--seconds", type=float, default=22)
    parser.add_argument("--max-cases", type=int, default=6000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    # a reader that allocates what a hostile header declares fails with MemoryError instead of swapping the machine
    resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))
    print(json.dumps(run(args.seconds, args.max_cases, args.seed)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
