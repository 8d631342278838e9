"""Input shards of an image-caption collection and the raw records read from them.

Two shard kinds, the formats such collections come in:

* a **folder** holding images and a ``captions.jsonl`` of ``{"file": ..., "caption": ...}``
  lines (``file`` relative to the folder);
* a **tar shard** in the WebDataset layout (``NNNNN.tar``, as written by img2dataset for
  LAION-like collections): the files of one sample share a key, the member name up to the
  first dot of its last path component, and sit next to each other in the archive --
  ``key.jpg``/``key.jpeg``/``key.png``/``key.webp`` holds the image, ``key.txt`` the
  caption (or ``key.json`` with a ``"caption"`` or ``"text"`` field; the ``.txt`` wins when
  both exist). Other members (``.json`` metadata fields, ``.parquet``...) are ignored.

Readers never raise on a defective sample: they yield a :class:`RawRecord` that carries
what was found, or the name of the problem, and :mod:`glide_jax.data.image_examples`
turns it into an example or a skip count. A shard that cannot be read at all (a truncated
or garbled tar, an unreadable ``captions.jsonl``) yields one record with the problem
``unreadable_shard`` after the samples read before the damage. Paths go through
``etils.epath``, so shards may live on any file system it reaches (``gs://`` on Dataflow).
"""

from __future__ import annotations

import dataclasses
import json
import tarfile
from typing import Iterator, List, Optional, Sequence

from etils import epath

from glide_jax.errors import InputError

CAPTIONS_FILE = "captions.jsonl"
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")  # tar members and folder files taken as images
FOLDER = "folder"
TAR = "tar"


class ShardError(InputError):
    """A ``--src`` entry that is no shard (nor a folder of tar shards)."""


@dataclasses.dataclass(frozen=True)
class Shard:
    """One input shard: its position among all shards (part of every example key), kind and path."""

    index: int
    kind: str  # FOLDER or TAR
    path: str


@dataclasses.dataclass(frozen=True)
class RawRecord:
    """What a shard holds for one sample key, before decoding."""

    key: str  # unique over the whole collection: "<shard index>:<key within the shard>"
    image: Optional[bytes]  # encoded image file, None if the sample has none
    caption: Optional[str]  # None if the sample has none
    problem: Optional[str] = None  # set when the reader already knows the sample is unusable


def find_shards(sources: Sequence[str]) -> List[Shard]:
    """Shards named by ``sources``, in order: a ``.tar`` file, a folder with ``captions.jsonl``,
    a folder of ``*.tar`` files (taken in name order), or a glob pattern of those."""
    paths: List[epath.Path] = []
    for source in sources:
        if any(ch in str(source) for ch in "*?["):
            parent, pattern = _split_glob(str(source))
            matched = sorted(parent.glob(pattern))
            if not matched:
                raise ShardError(f"{source}: the pattern matches nothing")
            paths.extend(matched)
        else:
            paths.append(epath.Path(source))
    shards: List[Shard] = []
    for path in paths:
        if path.is_file() and path.name.endswith(".tar"):
            shards.append(Shard(len(shards), TAR, str(path)))
        elif path.is_dir() and (path / CAPTIONS_FILE).exists():
            shards.append(Shard(len(shards), FOLDER, str(path)))
        elif path.is_dir() and any(path.glob("*.tar")):
            for tar in sorted(path.glob("*.tar")):
                shards.append(Shard(len(shards), TAR, str(tar)))
        else:
            raise ShardError(f"{path} is neither a .tar shard, a folder with {CAPTIONS_FILE}, "
                             "nor a folder of .tar shards")
    if not shards:
        raise ShardError("need at least one source shard")
    return shards


def _split_glob(pattern: str):
    """(fixed parent folder, relative pattern) of a glob: the parent is the part before the first wildcard."""
    parts = pattern.split("/")
    for i, part in enumerate(parts):
        if any(ch in part for ch in "*?["):
            return epath.Path("/".join(parts[:i]) or "."), "/".join(parts[i:])
    return epath.Path(pattern).parent, epath.Path(pattern).name


def read_shard(shard: Shard) -> Iterator[RawRecord]:
    """The raw records of ``shard`` (see the module docstring)."""
    reader = _read_folder if shard.kind == FOLDER else _read_tar
    yield from reader(shard)


def _extension(name: str) -> str:
    base = name.rsplit("/", 1)[-1]
    return base.split(".", 1)[1].lower() if "." in base else ""


# ----------------------------------------------------------------------------- folders


def _read_folder(shard: Shard) -> Iterator[RawRecord]:
    folder = epath.Path(shard.path)
    try:
        lines = (folder / CAPTIONS_FILE).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        yield RawRecord(f"{shard.index}:{CAPTIONS_FILE}", None, None, "unreadable_shard")
        return
    listed = set()
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            file, caption = row["file"], row.get("caption")
            if not isinstance(file, str):
                raise TypeError(file)
        except (ValueError, KeyError, TypeError, AttributeError):
            yield RawRecord(f"{shard.index}:{CAPTIONS_FILE}:{lineno}", None, None, "malformed_caption_row")
            continue
        key = f"{shard.index}:{file}"
        if file in listed:
            yield RawRecord(f"{key}:{lineno}", None, None, "duplicate_key")
            continue
        listed.add(file)
        caption = None if caption is None else str(caption)
        try:
            image = (folder / file).read_bytes()
        except OSError:  # listed but absent (or unreadable as a file)
            image = None
        yield RawRecord(key, image, caption)
    # Images in the folder that no row describes have no caption.
    for path in sorted(folder.iterdir()):
        if path.name not in listed and _extension(path.name) in IMAGE_EXTENSIONS and path.is_file():
            yield RawRecord(f"{shard.index}:{path.name}", None, None, "missing_caption")


# ----------------------------------------------------------------------------- tar shards


@dataclasses.dataclass
class _Sample:
    key: str
    image: Optional[bytes] = None
    text: Optional[bytes] = None
    json_text: Optional[bytes] = None
    duplicate: bool = False


def _sample_record(shard: Shard, sample: _Sample) -> RawRecord:
    key = f"{shard.index}:{sample.key}"
    if sample.duplicate:
        return RawRecord(key, None, None, "duplicate_key")
    caption: Optional[str] = None
    if sample.text is not None:
        caption = sample.text.decode("utf-8", errors="replace")
    elif sample.json_text is not None:
        try:
            row = json.loads(sample.json_text)
            value = row.get("caption", row.get("text"))
            caption = None if value is None else str(value)
        except (ValueError, AttributeError):
            caption = None  # unparseable metadata: no caption
    return RawRecord(key, sample.image, caption)


def _read_tar(shard: Shard) -> Iterator[RawRecord]:
    seen = set()
    current: Optional[_Sample] = None
    try:
        with epath.Path(shard.path).open("rb") as stream, tarfile.open(fileobj=stream, mode="r|*") as archive:
            for member in archive:
                if not member.isfile():
                    continue
                name = member.name
                base = name.rsplit("/", 1)[-1]
                key = name[: len(name) - len(base)] + base.split(".", 1)[0]
                ext = _extension(name)
                if current is None or key != current.key:
                    if current is not None:
                        yield _sample_record(shard, current)
                    current = _Sample(key, duplicate=key in seen)
                    seen.add(key)
                is_caption = ext in ("txt", "json")
                if ext not in IMAGE_EXTENSIONS and not is_caption:
                    continue
                data = archive.extractfile(member).read()
                if ext in IMAGE_EXTENSIONS:
                    if current.image is not None:
                        current.duplicate = True  # two images under one key: which one is captioned?
                    current.image = data
                elif ext == "txt":
                    current.text = data
                else:
                    current.json_text = data
    except (tarfile.TarError, OSError, EOFError):
        # The sample being read when the archive broke is dropped with the rest of the shard.
        yield RawRecord(f"{shard.index}:{epath.Path(shard.path).name}", None, None, "unreadable_shard")
        return
    if current is not None:
        yield _sample_record(shard, current)
