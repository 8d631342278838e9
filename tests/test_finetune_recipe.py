"""The fine-tuning recipe of docs/finetune.md end to end on micro shapes, and the memory table's analysis.

The recipe's run starts from ``train.init_from=base`` exactly as a user's does: the
released name is converted from a ``.pt`` file in the download cache. Here that file
holds random weights of the micro network in the released (PyTorch) layout, written
without torch, and the released name is pointed at the micro architecture. The run
uses the recipe's settings (bfloat16, remat, two microbatches, caption dropout, the
GPT-2 BPE) on a folder dataset prepared with ``tools.prepare_dataset``, and its
workdir then samples through the pipeline loader.
"""

import dataclasses
import json
from pathlib import Path

import jax
import numpy as np
import pytest
from conftest import require_fixture
from PIL import Image
from pt_files import PtFile, TensorRef

from glide_jax import config as config_lib
from glide_jax.hub import released
from glide_jax.hub.download import CHECKPOINTS
from glide_jax.hub.model_dir import flatten_tree
from glide_jax.hub.torch_layout import to_torch_state
from glide_jax.family import abstract_params
from glide_jax.train.experiment import apply_overrides, load_config_file

REPO = Path(__file__).resolve().parents[1]
CAPTIONS = ["a red square", "a blue circle", "a green triangle", "a yellow square on the left",
            "a red circle above a blue square", "a purple triangle", "a small orange circle", "a white square"]


def _write_pt(path: Path, params) -> None:
    """``params`` as a ``torch.save``d state dict in the released layout, one storage per tensor."""
    state = to_torch_state(params)
    storages, tensors = {}, []
    for i, (name, array) in enumerate(state.items()):
        array = np.ascontiguousarray(array, np.float32)
        storages[str(i)] = array.reshape(-1)
        strides = tuple(s // array.itemsize for s in array.strides)
        tensors.append(TensorRef(name, str(i), 0, array.shape, strides))
    path.write_bytes(PtFile(storages, tensors).zip_bytes())


def _image_folder(folder: Path) -> Path:
    """Eight 24x24 pictures of coloured blocks with a ``captions.jsonl``."""
    folder.mkdir()
    rng = np.random.default_rng(0)
    with open(folder / "captions.jsonl", "w") as f:
        for i, caption in enumerate(CAPTIONS):
            pixels = np.full((24, 24, 3), 255, np.uint8)
            top, left = rng.integers(0, 12, 2)
            pixels[top:top + 12, left:left + 12] = rng.integers(0, 256, 3)
            Image.fromarray(pixels).save(folder / f"{i}.png")
            f.write(json.dumps({"file": f"{i}.png", "caption": caption}) + "\n")
    return folder


def _prepare(src: Path, data_dir: Path, size: int) -> Path:
    from tools.prepare_dataset import main

    assert main(["folder", "--src", str(src), "--size", str(size), "--data-dir", str(data_dir)]) == 0
    (info,) = data_dir.glob("**/dataset_info.json")
    return info.parent


@pytest.fixture
def released_micro_base(tmp_path, monkeypatch):
    """A download cache whose ``base`` is random micro weights (and the GPT-2 BPE vocabulary)."""
    cfg = load_config_file(f"{REPO}/experiments/configs/base.py:finetune_micro")
    stored = dataclasses.replace(cfg.model, unet=dataclasses.replace(cfg.model.unet, dtype="float32", remat=False))
    monkeypatch.setitem(config_lib.PRESETS, "finetune-micro-base", stored)
    monkeypatch.setitem(released.RELEASED_PRESETS, "base", "finetune-micro-base")
    cache = tmp_path / "cache"
    cache.mkdir()
    vocab = require_fixture("tokenizer")
    for name in ("encoder.json.gz", "vocab.bpe.gz"):
        (cache / name).symlink_to(vocab / name)
    monkeypatch.setenv("GLIDE_JAX_CACHE", str(cache))
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda a: rng.normal(0, 0.05, a.shape).astype(np.float32), abstract_params(stored))
    _write_pt(cache / CHECKPOINTS["base"].filename, params)
    return cfg, params, cache


@pytest.mark.slow  # about 3 minutes on a loaded 2-core CPU: the bf16 remat step with two microbatches compiles slowly
def test_finetuning_the_released_base_recipe_on_micro_shapes(tmp_path, released_micro_base, monkeypatch):
    from glide_jax.sampling.loading import load_pipeline
    from glide_jax.sampling import images
    from glide_jax.sampling.options import StageOptions
    from glide_jax.train import loop

    cfg, initial, cache = released_micro_base
    assert cfg.train.init_from == "" and cfg.model.unet.dtype == "bfloat16" and cfg.model.unet.remat
    assert cfg.train.microbatches == 2 and cfg.data.caption_dropout == 0.2 and cfg.data.tokenizer == "glide-bpe"
    data = _prepare(_image_folder(tmp_path / "photos"), tmp_path / "tfds", cfg.model.unet.image_size)
    cfg = apply_overrides(cfg, [f"data.path={data}", "train.init_from=base"])  # the recipe's own init_from
    summary = loop.train(cfg, tmp_path / "run")

    assert summary["step"] == 4 and summary["skipped"] == 0 and np.isfinite(summary["metrics"]["loss"])
    assert (cache / "converted" / "base" / "config.json").exists()  # converted from the .pt on first use
    saved = json.loads((tmp_path / "run" / "experiment.json").read_text())
    assert saved["train"]["microbatches"] == 2 and saved["model"]["unet"]["dtype"] == "bfloat16"

    pipe = load_pipeline(str(tmp_path / "run"), None)
    assert pipe.base.config == cfg.model and type(pipe.base.tokenizer).__name__ == "GlideBPETokenizer"
    start, tuned = flatten_tree(initial), flatten_tree(pipe.base.params["params"])
    assert start.keys() == tuned.keys()
    moved = [k for k in start if not np.array_equal(start[k], tuned[k])]
    assert len(moved) == len(start)  # every parameter array of the EMA has left its released value
    shift = max(float(np.max(np.abs(start[k] - tuned[k]))) for k in start)
    assert 0 < shift < 1e-3  # a 0.999 average of four small steps: close to the start

    to_uint8, floats = images.to_uint8, []

    def recording(x):  # the pipeline's float samples, before they become uint8
        floats.append(np.asarray(x, np.float32))
        return to_uint8(x)

    monkeypatch.setattr(images, "to_uint8", recording)
    sample = pipe.generate(["a red square"], seed=0, base=StageOptions("ddim", 3), upsample=None)
    assert sample.shape == (1, 16, 16, 3) and sample.dtype == np.uint8
    assert len(floats) == 1 and floats[0].shape == (1, 16, 16, 3) and np.isfinite(floats[0]).all()


# The micro base cut to one 8x8 level without text: its step compiles in seconds.
NANO = ["model.unet.channel_mult=1", "model.unet.attention_resolutions=", "model.unet.image_size=8",
        "model.unet.text.width=0"]


def _nano_memory(batch_size: int):
    from tools import memory_table

    cfg = memory_table.configure(memory_table.load("base:micro", NANO), dtype="float32", remat=False,
                                 batch_size=batch_size)
    return memory_table.step_memory(cfg)


@pytest.mark.slow  # compiles a train step (~11 s)
def test_the_memory_table_reads_the_compiled_steps_memory_analysis():
    from tools import memory_table

    row = _nano_memory(2)
    assert all(row[k] > 0 for k in memory_table.MEMORY_FIELDS)
    assert row["peak_bytes"] == (row["argument_size_in_bytes"] + row["output_size_in_bytes"]
                                 + row["temp_size_in_bytes"] - row["alias_size_in_bytes"])
    # Parameters, their average and Adam's two moments in float32, plus a few scalars (step, key, counts).
    assert row["params"] == 184_838 and 0 <= row["state_bytes"] - 16 * row["params"] < 1024
    assert row["alias_size_in_bytes"] == row["state_bytes"]  # the donated state is updated in place
    assert memory_table.fits(row["peak_bytes"]) == list(memory_table.DEVICES_GIB)
    assert memory_table.fits(int(80 * memory_table.GIB)) == []  # nothing holds a full 80 GiB after the margin
    table = memory_table.markdown([dict(row, config="base:micro", batch_size=2, microbatches=1, dtype="float32",
                                        remat=False)])
    assert "| `base:micro` | float32 | off | 2 | 0.00 |" in table and "| GPU 16 GB | TPU v5e |" in table


@pytest.mark.slow  # a second compilation
def test_the_memory_tables_activation_memory_grows_with_the_batch():
    small, large = _nano_memory(2), _nano_memory(8)
    assert large["state_bytes"] == small["state_bytes"]
    assert large["temp_size_in_bytes"] > 2.5 * small["temp_size_in_bytes"]  # measured: 7.13 MB vs 2.34 MB
