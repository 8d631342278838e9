"""Every variant of every config file resolves to pinned values, field for field.

The shipped embedded models and the documented runs are reproduced by their
commands (``--config <file>.py:<variant>``); this test makes sure a change to how
the config files are written (shared bases, helpers, moved sections) leaves every
resolved field as it was. For each variant it pins the SHA-256 (first 16 hex
digits) of the canonical JSON (``config_to_dict``, sorted keys) of each section
of the config, so a failure names the section that changed, plus a few fields
spelled out for the reader.

Field moves since the pins were recorded: the procedural shapes' settings
(``data.num_examples``, ``data.two_object_fraction``, ``data.pair_layout``,
``data.relations``) live in ``data.shapes``; :func:`_as_recorded` maps them back
to the flat names they had before hashing. Fields added since with a default that
changes nothing (``model.unet.guidance_embed`` off, the default ``train.distill``
section or its ``chain`` at 0, the periodic-evaluation section ``eval`` unless a variant sets it) are left out of
the hash when they hold that default. A config change that is meant to
change a variant updates its row here (``PYTHONPATH=. python
tests/test_config_variants_pinned.py`` prints the current table).
"""

import hashlib
import importlib.util
import json
from pathlib import Path

import pytest

from glide_jax.config import config_to_dict
from glide_jax.train.experiment import DistillConfig, EvalConfig, load_config_file

REPO = Path(__file__).resolve().parents[1]
CONFIG_DIRS = (REPO / "experiments" / "configs", REPO / "projects" / "shapes" / "configs")
SECTIONS = ("model", "data", "train", "mesh", "sample")
# data.<new path> -> the flat data.<name> the pins were recorded with
MOVED_DATA_FIELDS = {("shapes", "num_examples"): "num_examples",
                     ("shapes", "two_object_fraction"): "two_object_fraction",
                     ("shapes", "pair_layout"): "pair_layout",
                     ("shapes", "relations"): "relations"}


DEFAULT_DISTILL = config_to_dict(DistillConfig(), tagged=False)


def _variants():
    """``(key, spec)`` of every config file's variants; ``key`` is ``<folder>/<file>:<variant>``."""
    out = []
    for folder in CONFIG_DIRS:
        for path in sorted(folder.glob("[!_]*.py")):
            spec = importlib.util.spec_from_file_location(f"pinned_{folder.parent.name}_{path.stem}", path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            rel = path.relative_to(REPO).as_posix()
            for variant in getattr(module, "VARIANTS", (None,)):
                out.append((f"{rel}:{variant}" if variant else rel, str(path) + (f":{variant}" if variant else "")))
    return out


def _as_recorded(d: dict) -> dict:
    """The config dict with moved fields back under the names they had when the pins were recorded, and
    without the ``eval`` section (added since) while it holds its defaults."""
    if d.get("eval") == config_to_dict(EvalConfig(), tagged=False):
        d = {k: v for k, v in d.items() if k != "eval"}
    data = dict(d["data"])
    for (section, name), old in MOVED_DATA_FIELDS.items():
        if section in data:
            data[old] = data[section][name]
    for section, _ in MOVED_DATA_FIELDS:
        data.pop(section, None)
    out = {**d, "data": data}
    unet = d.get("model", {}).get("unet")
    if isinstance(unet, dict) and unet.get("guidance_embed") is False:
        out["model"] = {**d["model"], "unet": {k: v for k, v in unet.items() if k != "guidance_embed"}}
    distill = d["train"].get("distill")
    if distill == DEFAULT_DISTILL:
        out["train"] = {k: v for k, v in d["train"].items() if k != "distill"}
    elif isinstance(distill, dict) and distill.get("chain") == 0:  # train.distill.chain, added since, at its default
        out["train"] = {**d["train"], "distill": {k: v for k, v in distill.items() if k != "chain"}}
    return out


def _digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


def fingerprint(cfg) -> dict:
    d = _as_recorded(config_to_dict(cfg))
    rest = {k: v for k, v in d.items() if k not in SECTIONS}
    return {"top": _digest(rest), **{s: _digest(d[s]) for s in SECTIONS},
            "task": cfg.task, "name": cfg.name, "steps": cfg.train.steps, "batch": cfg.train.batch_size,
            "lr": cfg.train.lr, "source": cfg.data.source}


# <file>:<variant> -> fingerprint, recorded from the config files as they were written flat, one
# ExperimentConfig(...) per variant.
PINNED = {
    "experiments/configs/base.py:micro": dict(
        top="017fd90eb6dd30f3", model="c736a30637a56020", data="d9369229e087c830",
        train="8212ff717f158dba", mesh="9fc21789499868ef", sample="a5f14d8b301cc683",
        task="base", name="base_micro", steps=12, batch=4, lr=0.001, source="shapes"),
    "experiments/configs/base.py:tiny": dict(
        top="28c06d341eea9eea", model="98bce2087f4c1c36", data="e12c6b4870520ded",
        train="e2342d74762ab301", mesh="9fc21789499868ef", sample="31b1dabafdba5031",
        task="base", name="base_tiny", steps=1000, batch=16, lr=0.001, source="shapes"),
    "experiments/configs/base.py:released": dict(
        top="cb910b252bf49db3", model="b25ea5fb106764e0", data="1ceb7c8c78cfa8e2",
        train="06d91a4a2f4fe728", mesh="9fc21789499868ef", sample="d10fb52ed85e4201",
        task="base", name="base_released", steps=2500000, batch=256, lr=0.0001, source="tfds"),
    "experiments/configs/base.py:paper": dict(
        top="1e6b77b705932b59", model="77b0a359ee664f9f", data="1ceb7c8c78cfa8e2",
        train="6b531bf6e3540f88", mesh="5f28b23e3cf830c5", sample="d10fb52ed85e4201",
        task="base", name="base_paper", steps=2500000, batch=2048, lr=0.0001, source="tfds"),
    "experiments/configs/base.py:finetune": dict(
        top="492d8dd7489ac09c", model="978676cd462ce970", data="1ceb7c8c78cfa8e2",
        train="518cf3cf8861d17b", mesh="5f28b23e3cf830c5", sample="d10fb52ed85e4201",
        task="base", name="base_finetune", steps=10000, batch=32, lr=1e-05, source="tfds"),
    "experiments/configs/base.py:finetune_micro": dict(
        top="f9e1dca6b5ebda76", model="c4daf4df88f0bf5a", data="1ceb7c8c78cfa8e2",
        train="a0a42c447a9e66c6", mesh="5f28b23e3cf830c5", sample="f67cfe9f92c569d1",
        task="base", name="base_finetune_micro", steps=4, batch=4, lr=0.0001, source="tfds"),
    "experiments/configs/base.py:distill_guidance_micro": dict(
        top="af7aab638ea802d1", model="aae957239643e16a", data="2896121998a407cc",
        train="e3857ff38b860d11", mesh="9fc21789499868ef", sample="a5f14d8b301cc683",
        task="distill-guidance", name="base_distill_guidance_micro", steps=4, batch=4, lr=0.0001, source="shapes"),
    "experiments/configs/base.py:distill_progressive_micro": dict(
        top="1bddc634204cfab1", model="aae957239643e16a", data="2896121998a407cc",
        train="e3857ff38b860d11", mesh="9fc21789499868ef", sample="a5f14d8b301cc683",
        task="distill-progressive", name="base_distill_progressive_micro", steps=4, batch=4, lr=0.0001,
        source="shapes"),
    "experiments/configs/base.py:distill_guidance": dict(
        top="b5182d9455562b3e", model="c9608a64d961ad3a", data="67162d11d2f91556",
        train="db141e2e6847e481", mesh="5f28b23e3cf830c5", sample="d10fb52ed85e4201",
        task="distill-guidance", name="base_distill_guidance", steps=20000, batch=32, lr=2e-05, source="tfds"),
    "experiments/configs/base.py:distill_progressive_32": dict(
        top="2511926afd602764", model="c9608a64d961ad3a", data="67162d11d2f91556",
        train="4ff382e0eb5f79c8", mesh="5f28b23e3cf830c5", sample="d10fb52ed85e4201",
        task="distill-progressive", name="base_distill_progressive_32", steps=20000, batch=32, lr=2e-05,
        source="tfds"),
    "experiments/configs/base.py:distill_progressive_16": dict(
        top="86650b29162f69ab", model="c9608a64d961ad3a", data="67162d11d2f91556",
        train="7ceb6aa450f85ffe", mesh="5f28b23e3cf830c5", sample="d10fb52ed85e4201",
        task="distill-progressive", name="base_distill_progressive_16", steps=20000, batch=32, lr=2e-05,
        source="tfds"),
    "experiments/configs/base.py:distill_progressive_8": dict(
        top="3a2b19d98b5d025d", model="c9608a64d961ad3a", data="67162d11d2f91556",
        train="5b38f228a68386af", mesh="5f28b23e3cf830c5", sample="d10fb52ed85e4201",
        task="distill-progressive", name="base_distill_progressive_8", steps=20000, batch=32, lr=2e-05,
        source="tfds"),
    "experiments/configs/base.py:distill_progressive_4": dict(
        top="529afec4c5544df9", model="c9608a64d961ad3a", data="67162d11d2f91556",
        train="c903a65a76059f5a", mesh="5f28b23e3cf830c5", sample="d10fb52ed85e4201",
        task="distill-progressive", name="base_distill_progressive_4", steps=20000, batch=32, lr=2e-05,
        source="tfds"),
    "experiments/configs/base.py:distill_progressive_2": dict(
        top="89a3bddcbfa091f5", model="c9608a64d961ad3a", data="67162d11d2f91556",
        train="d0c88d977395f883", mesh="5f28b23e3cf830c5", sample="d10fb52ed85e4201",
        task="distill-progressive", name="base_distill_progressive_2", steps=20000, batch=32, lr=2e-05,
        source="tfds"),
    "experiments/configs/base.py:distill_progressive_1": dict(
        top="1a2732f6889800e2", model="c9608a64d961ad3a", data="67162d11d2f91556",
        train="1f1ed0bf87780930", mesh="5f28b23e3cf830c5", sample="d10fb52ed85e4201",
        task="distill-progressive", name="base_distill_progressive_1", steps=20000, batch=32, lr=2e-05,
        source="tfds"),
    "experiments/configs/clip.py:micro": dict(
        top="d5219f36d2684d86", model="8f81a1c56c547dd3", data="2896121998a407cc",
        train="ec2e1a8fe9937dca", mesh="9fc21789499868ef", sample="f9e0b0d80dc1215b",
        task="clip", name="clip_micro", steps=6, batch=8, lr=0.0005, source="shapes"),
    "experiments/configs/clip.py:tiny": dict(
        top="82e95d58ea8e5967", model="ad6a94875dcdf2cf", data="c25face3557c0e80",
        train="0996e5080aeca9d2", mesh="9fc21789499868ef", sample="f9e0b0d80dc1215b",
        task="clip", name="clip_tiny", steps=1000, batch=64, lr=0.0005, source="shapes"),
    "experiments/configs/clip.py:released": dict(
        top="fe090b1d46ea12e5", model="73940f1f29ba3194", data="c438137d42ff3c21",
        train="a14049ac5c8f27c0", mesh="9fc21789499868ef", sample="f9e0b0d80dc1215b",
        task="clip", name="clip_released", steps=500000, batch=1024, lr=0.0005, source="tfds"),
    "experiments/configs/inpaint.py:micro": dict(
        top="b22596ff212ba3c4", model="1e8bbc67c95e68a2", data="d9369229e087c830",
        train="6a09e2901c71f648", mesh="9fc21789499868ef", sample="a5f14d8b301cc683",
        task="inpaint", name="inpaint_micro", steps=4, batch=4, lr=0.001, source="shapes"),
    "experiments/configs/inpaint.py:tiny": dict(
        top="3496cca782d1192e", model="846eb1beb6fcdb37", data="e12c6b4870520ded",
        train="0e93f511e846b433", mesh="9fc21789499868ef", sample="31b1dabafdba5031",
        task="inpaint", name="inpaint_tiny", steps=500, batch=16, lr=0.0003, source="shapes"),
    "experiments/configs/inpaint.py:released": dict(
        top="f2d9044dd9982d4e", model="5c3052ee4d2d7510", data="1ceb7c8c78cfa8e2",
        train="baa1e05dcb57ce59", mesh="9fc21789499868ef", sample="d10fb52ed85e4201",
        task="inpaint", name="inpaint_released", steps=100000, batch=256, lr=5e-05, source="tfds"),
    "experiments/configs/upsample.py:micro": dict(
        top="0e49d3e79aedbfc8", model="6b4dd39296193dab", data="d9369229e087c830",
        train="4ed1259cd22670cf", mesh="9fc21789499868ef", sample="7cbcc4583d947dc8",
        task="upsample", name="upsample_micro", steps=6, batch=4, lr=0.001, source="shapes"),
    "experiments/configs/upsample.py:tiny": dict(
        top="b52700159b1cc7fe", model="6c454f107e59fc98", data="e12c6b4870520ded",
        train="e2342d74762ab301", mesh="9fc21789499868ef", sample="748f2f989862bf10",
        task="upsample", name="upsample_tiny", steps=1000, batch=16, lr=0.001, source="shapes"),
    "experiments/configs/upsample.py:released": dict(
        top="be77907a4c10c692", model="c81d2921030efbbc", data="1ceb7c8c78cfa8e2",
        train="667c82839bf8c464", mesh="9fc21789499868ef", sample="20e8250e69eabd8a",
        task="upsample", name="upsample_released", steps=1600000, batch=64, lr=0.0001, source="tfds"),
    "experiments/configs/upsample.py:paper": dict(
        top="50df7f5494710595", model="f7de0fa1ca7949ad", data="1ceb7c8c78cfa8e2",
        train="bdf06bdc1ab61c4f", mesh="5f28b23e3cf830c5", sample="20e8250e69eabd8a",
        task="upsample", name="upsample_paper", steps=1600000, batch=512, lr=0.0001, source="tfds"),
    "experiments/configs/upsample.py:finetune": dict(
        top="3561492835759908", model="f41752bd6912c42c", data="1ceb7c8c78cfa8e2",
        train="9b0775f5fa82a884", mesh="5f28b23e3cf830c5", sample="20e8250e69eabd8a",
        task="upsample", name="upsample_finetune", steps=10000, batch=16, lr=1e-05, source="tfds"),
    "experiments/configs/upsample.py:finetune_micro": dict(
        top="d398fef0c070f77d", model="1ba4b3decea8cad2", data="1ceb7c8c78cfa8e2",
        train="a0a42c447a9e66c6", mesh="5f28b23e3cf830c5", sample="12da5e8218be3054",
        task="upsample", name="upsample_finetune_micro", steps=4, batch=4, lr=0.0001, source="tfds"),
    "experiments/configs/upsample_inpaint.py:released": dict(
        top="5c8b6fbdcc2b00ad", model="33f88750e195db88", data="1ceb7c8c78cfa8e2",
        train="85efdc2dbaaf2e55", mesh="9fc21789499868ef", sample="20e8250e69eabd8a",
        task="inpaint", name="upsample_inpaint_released", steps=100000, batch=64, lr=5e-05, source="tfds"),
    "projects/shapes/configs/base_forward.py:to_1500": dict(
        top="332c2bdad0661d36", model="98bce2087f4c1c36", data="550cff21e848601c",
        train="7dba742901456f4a", mesh="9fc21789499868ef", sample="3b3f2a9537bc39cf",
        task="base", name="base_forward:to_1500", steps=1500, batch=32, lr=0.001, source="shapes"),
    "projects/shapes/configs/base_forward.py:to_3000": dict(
        top="7121f53d180098d2", model="98bce2087f4c1c36", data="c343cfbaf734d9d1",
        train="3748b69951e200be", mesh="9fc21789499868ef", sample="3b3f2a9537bc39cf",
        task="base", name="base_forward:to_3000", steps=3000, batch=32, lr=0.001, source="shapes"),
    "projects/shapes/configs/base_forward.py:to_3500": dict(
        top="d433e7475ba6bd78", model="98bce2087f4c1c36", data="550cff21e848601c",
        train="5ce639f8be7b17d7", mesh="9fc21789499868ef", sample="3b3f2a9537bc39cf",
        task="base", name="base_forward:to_3500", steps=3500, batch=32, lr=0.001, source="shapes"),
    "projects/shapes/configs/base_four_relations.py:to_2250": dict(
        top="7da1fbb8b08ac844", model="98bce2087f4c1c36", data="08af0112debb0d7a",
        train="9c5790d6a55e6778", mesh="9fc21789499868ef", sample="3b3f2a9537bc39cf",
        task="base", name="base_four_relations:to_2250", steps=2250, batch=32, lr=0.001, source="shapes"),
    "projects/shapes/configs/base_four_relations.py:to_2750": dict(
        top="04f459f91283dcb3", model="98bce2087f4c1c36", data="29289031b50f3f72",
        train="94dc7d4f0237df5d", mesh="9fc21789499868ef", sample="3b3f2a9537bc39cf",
        task="base", name="base_four_relations:to_2750", steps=2750, batch=32, lr=0.001, source="shapes"),
    "projects/shapes/configs/base_pretrain.py:to_1250": dict(
        top="aad08022716072ab", model="98bce2087f4c1c36", data="6934f191475e8468",
        train="b5f0bf2c125d953e", mesh="9fc21789499868ef", sample="3b3f2a9537bc39cf",
        task="base", name="base_pretrain:to_1250", steps=1250, batch=32, lr=0.001, source="shapes"),
    "projects/shapes/configs/base_pretrain.py:to_10000": dict(
        top="c9782aef4761ae3e", model="98bce2087f4c1c36", data="9f245cf098c3a175",
        train="41bbbd308c95e6d4", mesh="9fc21789499868ef", sample="3b3f2a9537bc39cf",
        task="base", name="base_pretrain:to_10000", steps=10000, batch=32, lr=0.001, source="shapes"),
    "projects/shapes/configs/base_three_relations.py:to_750": dict(
        top="2e16a906b5f414fd", model="98bce2087f4c1c36", data="3c7b6e6eb85d964c",
        train="5de92b110bc9d072", mesh="9fc21789499868ef", sample="3b3f2a9537bc39cf",
        task="base", name="base_three_relations:to_750", steps=750, batch=32, lr=0.001, source="shapes"),
    "projects/shapes/configs/base_three_relations.py:to_1250": dict(
        top="e5621ee6ac812d37", model="98bce2087f4c1c36", data="39c5ff47c3f9e9fb",
        train="84bc06a55a46d08f", mesh="9fc21789499868ef", sample="3b3f2a9537bc39cf",
        task="base", name="base_three_relations:to_1250", steps=1250, batch=32, lr=0.001, source="shapes"),
    "projects/shapes/configs/clip.py": dict(
        top="214078c8e63ab0af", model="ad6a94875dcdf2cf", data="8bf8861e4d447cb4",
        train="85b1caf252140bec", mesh="9fc21789499868ef", sample="f9e0b0d80dc1215b",
        task="clip", name="clip", steps=1500, batch=64, lr=0.0005, source="shapes"),
    "projects/shapes/configs/distill.py:guidance": dict(
        top="81783e2816948e40", model="52eb727028791293", data="885e9477e133c17d",
        train="f0226880da191bdd", mesh="9fc21789499868ef", sample="3b3f2a9537bc39cf",
        task="distill-guidance", name="distill:guidance", steps=1000, batch=32, lr=0.0002, source="shapes"),
    "projects/shapes/configs/distill.py:to_8": dict(
        top="867eb67605680f3e", model="52eb727028791293", data="885e9477e133c17d",
        train="058354a2e2b31eb0", mesh="9fc21789499868ef", sample="3b3f2a9537bc39cf",
        task="distill-progressive", name="distill:to_8", steps=400, batch=32, lr=0.0002, source="shapes"),
    "projects/shapes/configs/distill.py:to_4": dict(
        top="603b1acd6e59e4c8", model="52eb727028791293", data="885e9477e133c17d",
        train="de3352da257e8e34", mesh="9fc21789499868ef", sample="3b3f2a9537bc39cf",
        task="distill-progressive", name="distill:to_4", steps=400, batch=32, lr=0.0002, source="shapes"),
    "projects/shapes/configs/distill.py:to_2": dict(
        top="b5a2f5079db030e9", model="52eb727028791293", data="885e9477e133c17d",
        train="71ad514d342f815a", mesh="9fc21789499868ef", sample="3b3f2a9537bc39cf",
        task="distill-progressive", name="distill:to_2", steps=400, batch=32, lr=0.0002, source="shapes"),
    "projects/shapes/configs/distill.py:to_1": dict(
        top="7578a9749d166fd8", model="52eb727028791293", data="885e9477e133c17d",
        train="bed5a5d5f5af6d2f", mesh="9fc21789499868ef", sample="3b3f2a9537bc39cf",
        task="distill-progressive", name="distill:to_1", steps=400, batch=32, lr=0.0002, source="shapes"),
    "projects/shapes/configs/inpaint.py": dict(
        top="ebc212c997d7c233", model="846eb1beb6fcdb37", data="f03ec70ac797687f",
        train="e681ecadaee967c4", mesh="9fc21789499868ef", sample="3b3f2a9537bc39cf",
        task="inpaint", name="inpaint", steps=800, batch=32, lr=0.0003, source="shapes"),
    "projects/shapes/configs/upsample.py:to_750": dict(
        top="20b2fa53d2660928", model="77cb8d474ec06763", data="6934f191475e8468",
        train="11f568eda40d3e34", mesh="9fc21789499868ef", sample="748f2f989862bf10",
        task="upsample", name="upsample:to_750", steps=750, batch=16, lr=0.001, source="shapes"),
    "projects/shapes/configs/upsample.py:to_1000": dict(
        top="78dca8f4d19eef01", model="77cb8d474ec06763", data="6934f191475e8468",
        train="62021e5d7a50f997", mesh="9fc21789499868ef", sample="748f2f989862bf10",
        task="upsample", name="upsample:to_1000", steps=1000, batch=16, lr=0.001, source="shapes"),
}


def test_every_variant_is_pinned():
    assert sorted(key for key, _ in _variants()) == sorted(PINNED)


@pytest.mark.parametrize("key, spec", _variants(), ids=[key for key, _ in _variants()])
def test_variant_resolves_to_the_pinned_fields(key, spec):
    got, want = fingerprint(load_config_file(spec)), PINNED[key]
    changed = [k for k in want if got[k] != want[k]]
    assert not changed, f"{key}: {', '.join(changed)} changed ({ {k: got[k] for k in changed} })"


def _row(key: str, spec: str) -> str:
    fp = fingerprint(load_config_file(spec))
    lines = [("top", "model", "data"), ("train", "mesh", "sample"), [k for k in fp if k not in ("top", *SECTIONS)]]
    body = ",\n        ".join(", ".join(f"{k}={fp[k]!r}" for k in names) for names in lines)
    return f"    {key!r}: dict(\n        {body}),"


if __name__ == "__main__":
    print("\n".join(_row(key, spec) for key, spec in _variants()))
