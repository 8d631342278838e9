"""The torch-free reader on torch's legacy (pre-1.6) format: the same arrays as the zip format, hostile files refused.

The files are written without torch by ``pt_files.PtFile.legacy_bytes``; the
format is chosen by the reader from the first bytes, so every load here goes
through ``load_state_dict`` as a user's would.
"""

import pickle
import struct

import numpy as np
import pytest
from pt_files import LEGACY_MAGIC, LEGACY_SYS_INFO, TensorRef, sample_file, simple_file

from glide_jax.hub.torch_zip import (CheckpointFormatError, RefusedGlobalError, checkpoint_format, load_state_dict,
                                     read_manifest)


def write(path, data: bytes):
    path.write_bytes(data)
    return path


def assert_same(loaded, expected):
    assert list(loaded) == list(expected)
    for name, array in expected.items():
        got = loaded[name]
        assert (got.dtype, got.shape) == (array.dtype, array.shape), name
        assert got.tobytes() == array.tobytes(), name


def test_both_formats_read_the_same_arrays(tmp_path):
    pt = sample_file()
    legacy = write(tmp_path / "legacy.pt", pt.legacy_bytes())
    modern = write(tmp_path / "modern.pt", pt.zip_bytes())
    assert (checkpoint_format(legacy), checkpoint_format(modern)) == ("legacy", "zip")
    from_legacy = load_state_dict(legacy)
    assert_same(from_legacy, load_state_dict(modern))
    # and the arrays written, spelled out (transposed view, shared storage at two offsets, 0-d and empty tensors)
    storages = pt.storages
    assert_same(from_legacy, {
        "block.weight": storages["0"].reshape(3, 4), "block.weight_t": storages["0"].reshape(3, 4).T,
        "shared.first": storages["1"][:10].reshape(2, 5), "shared.second": storages["1"][10:],
        "half": storages["2"], "half.every_other": storages["2"][[1, 3]].reshape(2, 1),
        "steps": storages["3"], "scalar": storages["3"][2].reshape(()), "bf16": storages["4"],
        "flags": storages["5"], "empty": np.zeros((0, 3), np.float32),
    })
    assert read_manifest(legacy) == read_manifest(modern)


def test_storage_views_of_old_writers_are_read(tmp_path):
    pt = sample_file().replace(tensors=[TensorRef("tail", "1", 2, (3,), (1,))],
                               legacy_views={"tail": ("view7", 10, 10)})
    loaded = load_state_dict(write(tmp_path / "views.pt", pt.legacy_bytes()))
    np.testing.assert_array_equal(loaded["tail"], pt.storages["1"][12:15])


def test_a_view_past_its_storage_is_refused(tmp_path):
    pt = sample_file().replace(tensors=[TensorRef("tail", "1", 0, (3,), (1,))],
                               legacy_views={"tail": ("view7", 15, 10)})
    with pytest.raises(CheckpointFormatError, match=r"view 'view7' of storage '1': 10 elements from 15 do not lie "
                                                    r"within its 20 elements"):
        load_state_dict(write(tmp_path / "views.pt", pt.legacy_bytes()))


def test_a_tensor_past_its_view_is_refused(tmp_path):
    pt = sample_file().replace(tensors=[TensorRef("tail", "1", 8, (3,), (1,))],
                               legacy_views={"tail": ("view7", 10, 10)})
    with pytest.raises(CheckpointFormatError, match=r"tensor 'tail' \(storage 'view7'\): .* reach element 10 of a "
                                                    r"storage of 10 elements"):
        load_state_dict(write(tmp_path / "views.pt", pt.legacy_bytes()))


def _data_start(pt) -> int:
    """Where the first storage's element count lies: after the five pickles."""
    return len(pt.legacy_bytes()) - sum(8 + s.nbytes for s in pt.storages.values())


@pytest.mark.parametrize("make, problem", [
    (lambda pt: pt.legacy_bytes(magic=12345),
     r"is not a legacy-format PyTorch checkpoint: its first pickle holds 12345, not torch's magic number"),
    (lambda pt: pt.legacy_bytes(magic="hello"), r"its first pickle holds 'hello'"),
    (lambda pt: pickle.dumps({"weights": [1, 2]}, protocol=2), r"its first pickle holds a dict"),
    (lambda pt: pt.legacy_bytes(version=1000), r"legacy format protocol version 1000; only 1001 is read"),
    (lambda pt: pt.legacy_bytes(sys_info=[1, 2]), r"the system-info pickle does not hold a dict"),
    (lambda pt: pt.legacy_bytes()[:60], r"the (main|system-info) pickle \(from byte \d+\) is malformed, or does not "
                                         r"end within the whole file"),
    (lambda pt: pt.legacy_bytes()[:-3], r"storage '0': its 16 bytes from byte \d+ run past the end of the "
                                        r"\d+-byte file \(truncated\)"),
    (lambda pt: pt.legacy_bytes()[:_data_start(pt) + 5], r"storage '0': the file ends at byte \d+, before its "
                                                         r"element count at byte \d+ \(truncated\)"),
    (lambda pt: pt.legacy_bytes(counts={"0": 2 ** 40}), r"storage '0': the file records 1099511627776 elements, "
                                                        r"the main pickle declares 4"),
    (lambda pt: pt.legacy_bytes(counts={"0": -1}), r"the file records -1 elements"),
    (lambda pt: pt.replace(numels={"0": 1000}).legacy_bytes(counts={"0": 1000}),
     r"storage '0': its 4000 bytes from byte \d+ run past the end"),
    (lambda pt: pt.replace(numels={"0": 2 ** 40}).legacy_bytes(),
     r"storage '0' declares 4096.00 GiB, over the 4.00 GiB limit \(max_member_bytes\)"),
    (lambda pt: pt.replace(numels={"0": -4}).legacy_bytes(), r"storage '0' declares -4 elements"),
    (lambda pt: pt.legacy_bytes(keys=["0", "0"]), r"storage-key list does not match the main pickle: it lists 1 "
                                                  r"key\(s\) twice"),
    (lambda pt: pt.legacy_bytes(keys=[]), r"1 storage\(s\) declared by the main pickle but not listed \(0\)"),
    (lambda pt: pt.legacy_bytes(keys=["0", "x9"]), r"1 storage\(s\) listed but never declared .* \(x9\)"),
    (lambda pt: pt.legacy_bytes(keys="0"), r"the storage-key pickle holds '0', not a list of strings"),
    (lambda pt: pt.legacy_bytes() + b"extra", r"5 unexpected bytes follow the last storage"),
])
def test_hostile_legacy_files_are_refused(tmp_path, make, problem):
    path = write(tmp_path / "bad.pt", make(simple_file(4)))
    with pytest.raises(CheckpointFormatError, match=r"bad\.pt: .*" + problem):
        load_state_dict(path)


def test_globals_are_refused_in_every_pickle(tmp_path):
    pt = simple_file(4)
    evil = b"\x80\x02cos\nsystem\nX\x0a\x00\x00\x00echo pwnedq\x00\x85R."
    header = b"".join(pickle.dumps(v, protocol=2) for v in (LEGACY_MAGIC, 1001, LEGACY_SYS_INFO))
    with pytest.raises(RefusedGlobalError, match=r"refusing to load os\.system: not part of a plain tensor state"):
        load_state_dict(write(tmp_path / "main.pt", header + evil))
    with pytest.raises(RefusedGlobalError, match=r"refusing to load os\.system: this pickle holds plain values"):
        load_state_dict(write(tmp_path / "first.pt", evil + pt.legacy_bytes()))
    with pytest.raises(RefusedGlobalError, match=r"refusing to load torch\.EvilStorage"):
        load_state_dict(write(tmp_path / "type.pt", pt.replace(type_names={"0": "EvilStorage"}).legacy_bytes()))
    with pytest.raises(RefusedGlobalError, match=r"refusing to load collections\.OrderedDict: this pickle holds plain"):
        import collections

        load_state_dict(write(tmp_path / "info.pt", pt.legacy_bytes(sys_info=collections.OrderedDict())))


def test_the_pickles_are_dry_run_and_bounded(tmp_path):
    pt = simple_file(4)
    header = b"".join(pickle.dumps(v, protocol=2) for v in (LEGACY_MAGIC, 1001, LEGACY_SYS_INFO))
    memo_bomb = b"\x80\x02K\x01r" + struct.pack("<I", 2 ** 27) + b"."
    with pytest.raises(CheckpointFormatError, match=r"the pickle stores memo index 134217728 after only 3 opcodes"):
        load_state_dict(write(tmp_path / "memo.pt", header + memo_bomb))
    with pytest.raises(CheckpointFormatError, match=r"does not end within max_pickle_bytes=100"):
        load_state_dict(write(tmp_path / "small.pt", pt.legacy_bytes()), max_pickle_bytes=100)


def test_copies_of_views_count_against_the_budget(tmp_path):
    storage = np.arange(100_000, dtype=np.float32)
    pt = simple_file(4).replace(storages={"0": storage},
                                tensors=[TensorRef(f"v{i}", "0", 0, (100_000,), (1,)) for i in range(5)])
    path = write(tmp_path / "views.pt", pt.legacy_bytes())
    assert len(load_state_dict(path, max_total_bytes=3_000_000)) == 5
    with pytest.raises(CheckpointFormatError, match=r"its tensors add up to 1\.91 MiB, over the 1\.43 MiB budget"):
        load_state_dict(path, max_total_bytes=1_500_000)
    with pytest.raises(CheckpointFormatError, match=r"its storages add up to more than the 292\.97 KiB budget"):
        load_state_dict(path, max_total_bytes=300_000)
