"""The torch-free ``.pt`` reader on hostile input: out-of-bounds views, crashing strides, zip and pickle bombs.

Loads that could crash the interpreter, or whose memory use is the point, run in a
subprocess, so a regression fails the test instead of killing pytest.
"""

import json
import os
import re
import subprocess
import sys
import textwrap
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from pt_files import RawMember, TensorRef, deflated_zeros, raw_zip, sample_file, simple_file

from glide_jax.hub.torch_zip import CheckpointFormatError, RefusedGlobalError, load_state_dict

REPO = Path(__file__).resolve().parents[1]


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def assert_same(loaded, expected):
    assert list(loaded) == list(expected)
    for name, array in expected.items():
        got = loaded[name]
        assert (got.dtype, got.shape) == (array.dtype, array.shape), name
        assert got.tobytes() == array.tobytes(), name


def run_isolated(script: str, timeout: float = 120) -> dict:
    """Run ``script`` in a fresh interpreter; it prints one JSON line. A crash fails here, not in pytest."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "tests")]))
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True,
                          timeout=timeout, env=env)
    assert done.returncode == 0, f"subprocess exited with {done.returncode}: {done.stderr[-2000:]}"
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("variant", ["stored", "deflated", "big-endian", "byteorder-little", "other-root", "raw-zip"])
def test_valid_file_loads_bit_exactly(tmp_path, variant):
    pt = sample_file()
    changed = {"stored": pt, "deflated": pt.replace(compression=zipfile.ZIP_DEFLATED),
               "big-endian": pt.replace(byteorder="big"), "byteorder-little": pt.replace(byteorder="little"),
               "other-root": pt.replace(root="upsample"), "raw-zip": pt}[variant]
    data = raw_zip(changed.raw_members()) if variant == "raw-zip" else changed.zip_bytes()
    loaded = load_state_dict(write(tmp_path / "m.pt", data))
    # written arrays, not the reader's own arithmetic: the views are spelled out here
    storages = pt.storages
    assert_same(loaded, {
        "block.weight": storages["0"].reshape(3, 4), "block.weight_t": storages["0"].reshape(3, 4).T,
        "shared.first": storages["1"][:10].reshape(2, 5), "shared.second": storages["1"][10:],
        "half": storages["2"], "half.every_other": storages["2"][[1, 3]].reshape(2, 1),
        "steps": storages["3"], "scalar": storages["3"][2].reshape(()), "bf16": storages["4"],
        "flags": storages["5"], "empty": np.zeros((0, 3), np.float32),
    })
    assert int(loaded["steps"][3]) == -(2 ** 62) and loaded["flags"].tolist() == [True, False, True]


def test_valid_file_matches_torch_load(tmp_path):
    torch = pytest.importorskip("torch")
    path = write(tmp_path / "m.pt", sample_file().zip_bytes())
    ours = load_state_dict(path)
    theirs = torch.load(path, map_location="cpu", weights_only=True)
    for name, array in ours.items():
        reference = theirs[name]
        reference = reference.view(torch.int16).numpy().view(array.dtype) if reference.dtype == torch.bfloat16 \
            else reference.numpy()
        assert reference.shape == array.shape and reference.tobytes() == array.tobytes(), name


def test_elements_beyond_the_storage_are_refused_naming_the_tensor(tmp_path):
    pt = simple_file(4).replace(tensors=[TensorRef("encoder.weight", "0", 0, (4096,), (1,))])
    path = write(tmp_path / "overread.pt", pt.zip_bytes())
    with pytest.raises(CheckpointFormatError, match=r"overread\.pt: tensor 'encoder\.weight' \(storage '0'\).*"
                                                    r"element 4095 of a storage of 4 elements"):
        load_state_dict(path)


@pytest.mark.parametrize("offset, size, stride, problem", [
    (0, (2, 2), (10 ** 12, 1), "element 1000000000001 of a storage of 4"),
    (2 ** 63 - 1, (1,), (1,), "of a storage of 4"),
    (-1, (1,), (1,), "offset -1 is not a non-negative integer"),
    (0, (2,), (-1,), "negative step"),
    (0, (-1, 4), (4, 1), "negative dimension"),
    (0, (2, 2), (1,), "stride has 1"),
    (0, (1,) * 33, (0,) * 33, "33 dimensions"),
    (1.5, (1,), (1,), "offset 1.5"),
])
def test_hostile_views_are_refused(tmp_path, offset, size, stride, problem):
    pt = simple_file(4).replace(tensors=[TensorRef("w", "0", offset, size, stride)])
    with pytest.raises(CheckpointFormatError, match=r"tensor 'w' \(storage '0'\): .*" + problem):
        load_state_dict(write(tmp_path / "bad.pt", pt.zip_bytes()))


def test_huge_stride_is_refused_without_crashing(tmp_path):
    crash = write(tmp_path / "stride.pt", simple_file(4).replace(
        tensors=[TensorRef("w", "0", 0, (2, 2), (10 ** 12, 1))]).zip_bytes())
    # a huge stride on a dimension of length 1 never steps: that view is valid and reads element 3
    harmless = write(tmp_path / "unit.pt", simple_file(4).replace(
        tensors=[TensorRef("w", "0", 3, (1, 1), (10 ** 12, 2 ** 62))]).zip_bytes())
    result = run_isolated(f"""
        import json
        from glide_jax.hub.torch_zip import CheckpointFormatError, load_state_dict
        try:
            load_state_dict({str(crash)!r})
            outcome = "loaded"
        except CheckpointFormatError as e:
            outcome = str(e)
        print(json.dumps({{"crash": outcome, "harmless": load_state_dict({str(harmless)!r})["w"].tolist()}}))
    """)
    assert "tensor 'w'" in result["crash"] and "1000000000001" in result["crash"]
    assert result["harmless"] == [[4.0]]


def test_a_1_mb_zip_bomb_is_refused_before_allocating(tmp_path):
    """1 GiB of zeros deflated to about 1 MB, declared honestly in the headers: refused by the ratio guard,
    by the member limit, and, when the header lies about the size, by reading no further than declared."""
    stream, crc = deflated_zeros(1 << 30)
    numel = (1 << 30) // 4
    pt = simple_file(4)
    members = [RawMember.of(name, data) for name, data in pt.replace(numels={"0": numel}).members()
               if not name.endswith("/data/0")]
    bomb = RawMember("archive/data/0", stream, zipfile.ZIP_DEFLATED, crc, 1 << 30, len(stream))
    honest = write(tmp_path / "bomb.pt", raw_zip(members + [bomb]))
    # a header declaring 16 bytes over the same stream: the reader takes those 16 bytes and stops
    lying = write(tmp_path / "lying.pt", raw_zip(
        [RawMember.of(name, data) for name, data in pt.members() if not name.endswith("/data/0")]
        + [bomb.replace(file_size=16, crc=zlib.crc32(bytes(16)))]))
    assert honest.stat().st_size < 1_100_000
    result = run_isolated(f"""
        import json
        from glide_jax.hub.torch_zip import CheckpointFormatError, load_state_dict
        from pt_files import peak_rss_mb
        before = peak_rss_mb()
        outcomes = []
        for path, limits in [({str(honest)!r}, {{}}),
                             ({str(honest)!r}, {{"max_compression_ratio": 10 ** 6, "max_member_bytes": 64 << 20}}),
                             ({str(honest)!r}, {{"max_compression_ratio": 10 ** 6, "max_total_bytes": 256 << 20}}),
                             ({str(lying)!r}, {{}})]:
            try:
                outcomes.append(load_state_dict(path, **limits)["weight"].tolist())
            except CheckpointFormatError as e:
                outcomes.append(str(e))
        print(json.dumps({{"outcomes": outcomes, "growth_mb": peak_rss_mb() - before}}))
    """)
    ratio, member, total, lie = result["outcomes"]
    assert re.search(r"bomb\.pt: member 'archive/data/0' declares 1\.00 GiB from 10\d\d\.\d\d KiB compressed "
                     r"\(ratio 10\d\d > max_compression_ratio=100\)", ratio), ratio
    assert "storage '0': member 'archive/data/0' declares 1.00 GiB, over the 64.00 MiB limit" in member
    assert "would bring the total to 1.00 GiB, over the 256.00 MiB budget" in total
    assert lie == [0.0, 0.0, 0.0, 0.0]
    assert result["growth_mb"] < 200, result


def test_many_views_of_one_storage_count_against_the_budget(tmp_path):
    storage = np.arange(1 << 16, dtype=np.float32)  # 256 KiB
    pt = simple_file().replace(storages={"0": storage}, tensors=[
        TensorRef(f"copy.{index}", "0", 0, (1 << 16,), (1,)) for index in range(200)])
    path = write(tmp_path / "views.pt", pt.zip_bytes())
    with pytest.raises(CheckpointFormatError, match=r"views\.pt: its tensors add up to 50\.00 MiB, over the"):
        load_state_dict(path)
    loaded = load_state_dict(path, max_compression_ratio=1000)
    assert len(loaded) == 200 and np.array_equal(loaded["copy.199"], storage)


def test_a_huge_memo_index_is_refused_before_unpickling(tmp_path):
    pt = simple_file(4)
    bomb = b"\x80\x02Nr\x00\x00\x00\x080" + pt.pickle_bytes()[2:]  # LONG_BINPUT 2**27 would cost 2 GiB
    members = [(name, bomb if name.endswith("data.pkl") else data) for name, data in pt.members()]
    with pytest.raises(CheckpointFormatError, match=r"memo\.pt: the pickle stores memo index 134217728 after only 3 "
                                                    r"opcodes \(LONG_BINPUT at byte 3\)"):
        load_state_dict(write(tmp_path / "memo.pt", pt.zip_bytes(members)))


def test_deeply_nested_tuples_are_refused_before_unpickling(tmp_path):
    """Hashing a dict key of a million nested tuples overflows CPython's C stack: a 1 MB pickle would segfault."""
    pt = simple_file(4)
    bomb = b"\x80\x02}" + b")" + b"\x85" * 1_000_000 + b"Ns."
    members = [(name, bomb if name.endswith("data.pkl") else data) for name, data in pt.members()]
    with pytest.raises(CheckpointFormatError, match=r"the pickle nests objects more than 100 deep \(TUPLE1 at byte"):
        load_state_dict(write(tmp_path / "nested.pt", pt.zip_bytes(members)))


def test_a_flood_of_objects_is_refused_before_unpickling(tmp_path):
    """200,000 EMPTY_SET opcodes (200 KB) would make 43 MB of sets; the pickle is charged per opcode instead."""
    pt = simple_file(4)
    flood = b"\x80\x02(" + b"\x8f" * 200_000 + b"1" + pt.pickle_bytes()[2:]  # MARK, sets, POP_MARK, state dict
    members = [(name, flood if name.endswith("data.pkl") else data) for name, data in pt.members()]
    path = write(tmp_path / "flood.pt", pt.zip_bytes(members))
    result = run_isolated(f"""
        import json
        from glide_jax.hub.torch_zip import CheckpointFormatError, load_state_dict
        from pt_files import peak_rss_mb
        before = peak_rss_mb()
        try:
            outcome = load_state_dict({str(path)!r})["weight"].tolist()
        except CheckpointFormatError as e:
            outcome = str(e)
        print(json.dumps({{"outcome": outcome, "growth_mb": peak_rss_mb() - before}}))
    """)
    # the budget is 100 times the 200 KB file
    assert re.search(r"flood\.pt: the pickle's 7\d{4} opcodes could build 19\.\d\d MiB of objects, over the "
                     r"19\.\d\d MiB budget", result["outcome"]), result
    assert result["growth_mb"] < 20, result
    # the same flood is fine when the budget allows it: nothing else is wrong with the file
    assert load_state_dict(path, max_compression_ratio=1000)["weight"].tolist() == [1, 2, 3, 4]


def test_every_refusal_is_a_checkpoint_format_error_naming_the_file(tmp_path):
    pt = simple_file(4)
    members = pt.members()
    cases = {
        "duplicate": members + [members[-1]],
        "missing storage": [m for m in members if not m[0].endswith("/data/0")],
        "short storage": [(n, d[:-1] if n.endswith("/data/0") else d) for n, d in members],
        "two pickles": members + [("other/data.pkl", members[0][1])],
        "bad pickle": [(n, d[:-5] if n.endswith("data.pkl") else d) for n, d in members],
        "evil global": [(n, d.replace(b"torch._utils\n_rebuild_tensor_v2", b"os\nsystem") if n.endswith("data.pkl")
                         else d) for n, d in members],
    }
    messages = {}
    for case, case_members in cases.items():
        path = write(tmp_path / f"{case.replace(' ', '_')}.pt", pt.zip_bytes(case_members))
        with pytest.raises(CheckpointFormatError) as raised:
            load_state_dict(path)
        assert str(path) in str(raised.value), case
        messages[case] = str(raised.value)
    assert "duplicate member names ['archive/version']" in messages["duplicate"]
    assert "storage '0': the archive has no member 'archive/data/0'" in messages["missing storage"]
    assert "member 'archive/data/0' holds 15 bytes, the pickle declares 16" in messages["short storage"]
    assert "expected one data.pkl" in messages["two pickles"]
    assert "refusing to load os.system" in messages["evil global"]
    with pytest.raises(RefusedGlobalError):
        load_state_dict(tmp_path / "evil_global.pt")
    crc = bytearray(pt.zip_bytes())
    crc[crc.index(b"archive/data/0") + len(b"archive/data/0")] ^= 0xFF  # first byte of the storage
    with pytest.raises(CheckpointFormatError, match="Bad CRC-32"):
        load_state_dict(write(tmp_path / "crc.pt", bytes(crc)))
    # the CLI and tools catch ValueError and print `error: ...` with exit status 2
    assert issubclass(CheckpointFormatError, ValueError)


def test_conversion_reports_the_refusal(tmp_path):
    from glide_jax.hub.convert import read_state

    path = write(tmp_path / "base.pt", simple_file(4).replace(
        tensors=[TensorRef("out.2.weight", "0", 0, (4096,), (1,))]).zip_bytes())
    with pytest.raises(ValueError, match=r"base\.pt: tensor 'out\.2\.weight'"):
        read_state(path)


def test_limits_must_be_positive_integers(tmp_path):
    path = write(tmp_path / "m.pt", simple_file(4).zip_bytes())
    with pytest.raises(ValueError, match="max_total_bytes must be a positive integer"):
        load_state_dict(path, max_total_bytes=0)
    assert load_state_dict(path, max_member_bytes=16, max_pickle_bytes=4096)["weight"].tolist() == [1, 2, 3, 4]
    with pytest.raises(CheckpointFormatError, match="member 'archive/data/0' declares 16 B, over the 15 B limit"):
        load_state_dict(path, max_member_bytes=15)
