"""Training configuration: overrides, JSON round trip, shipped config files, mesh and layout rules, optimiser."""

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from jax.sharding import AbstractMesh, PartitionSpec

from glide_jax.models import partitioning as P
from glide_jax.train import experiment as C
from glide_jax.train import finetune, sharding, state

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "experiments" / "configs").glob("[!_]*.py"))


def _tiny():
    return C.load_config_file(f"{REPO}/experiments/configs/base.py:tiny")


def test_overrides_are_typed_by_the_field_they_replace():
    cfg = C.apply_overrides(
        _tiny(),
        ["train.lr=2e-4", "train.steps=7", "train.async_checkpoint=false", "model.unet.channel_mult=1,2",
         "model.unet.dtype=bfloat16", "model.unet.text.n_vocab=64", "sample.prompts=a red circle,a blue square"],
    )
    assert cfg.train.lr == 2e-4 and isinstance(cfg.train.lr, float)
    assert cfg.train.steps == 7 and cfg.train.async_checkpoint is False
    assert cfg.model.unet.channel_mult == (1, 2) and cfg.model.unet.dtype == "bfloat16"
    assert cfg.model.unet.text.n_vocab == 64
    assert cfg.sample.prompts == ("a red circle", "a blue square")
    assert _tiny().train.lr == 1e-3  # the original is untouched


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.lrr=1", "no field 'lrr'"),
        ("train.steps=ten", "cannot parse"),
        ("model.unet=3", "set its own fields"),
        ("train.lr", "key=value"),
        ("model.unet.dtype=float64", "dtype must be"),  # the dataclass' own validation still runs
        ("train.batch_size=30", "not divisible by microbatches"),
        ("data.pair_layout=diagonal", "pair_layout must be one of"),
        ("data.relations=above,on top of", "data.relations must be distinct items"),
    ],
)
def test_bad_overrides_fail_before_anything_runs(override, message):
    cfg = C.apply_overrides(_tiny(), ["train.microbatches=4"]) if "batch_size" in override else _tiny()
    with pytest.raises(ValueError, match=message):
        C.apply_overrides(cfg, [override])


def test_json_round_trip_is_exact():
    cfg = C.apply_overrides(_tiny(), ["sample.prompts=a,b", "model.unet.attention_resolutions=8",
                                      "data.relations=above,to the left of"])
    assert cfg.data.relations == ("above", "to the left of")
    assert C.from_dict(C.to_dict(cfg)) == cfg


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_every_shipped_config_is_valid(path):
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"family_{path.stem}", path)
    family = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(family)
    for variant in family.VARIANTS:
        cfg = C.load_config_file(f"{path}:{variant}")
        assert cfg.name == f"{path.stem}_{variant}"
        assert C.from_dict(C.to_dict(cfg)) == cfg
        assert (REPO / "experiments" / f"train_{cfg.task}.py").exists()


def test_task_and_model_must_agree():
    cfg = _tiny()
    with pytest.raises(ValueError, match="cannot train"):
        dataclasses.replace(cfg, task="upsample")
    with pytest.raises(ValueError, match="does not match"):
        dataclasses.replace(cfg, task="clip")


def test_mesh_shape_resolves_the_free_axis():
    assert sharding.mesh_shape(C.MeshConfig(data=-1, fsdp=1, tensor=1), 8) == (8, 1, 1)
    assert sharding.mesh_shape(C.MeshConfig(data=1, fsdp=-1, tensor=2), 8) == (1, 4, 2)
    assert sharding.mesh_shape(C.MeshConfig(data=2, fsdp=2, tensor=2), 8) == (2, 2, 2)
    with pytest.raises(ValueError, match="at most one"):
        sharding.mesh_shape(C.MeshConfig(data=-1, fsdp=-1), 8)
    with pytest.raises(ValueError, match="needs 6 devices"):
        sharding.mesh_shape(C.MeshConfig(data=3, fsdp=2), 8)
    with pytest.raises(ValueError, match="do not split"):
        sharding.mesh_shape(C.MeshConfig(data=-1, fsdp=3), 8)


def test_logical_rules_drop_axes_that_do_not_divide():
    mesh = AbstractMesh((2, 4, 2), P.MESH_AXES)
    conv = PartitionSpec(P.KERNEL, P.KERNEL, P.EMBED, P.MLP)
    assert sharding.logical_to_mesh_spec(conv, (3, 3, 64, 128), mesh) == PartitionSpec(None, None, "fsdp", "tensor")
    # 7 input channels (inpainting's first conv): fsdp cannot split them, tensor still splits the output.
    assert sharding.logical_to_mesh_spec(conv, (3, 3, 7, 128), mesh) == PartitionSpec(None, None, None, "tensor")
    assert sharding.logical_to_mesh_spec(PartitionSpec(P.NORM), (64,), mesh) == PartitionSpec()
    # The batch takes data and fsdp together, or only data when 8 does not divide it.
    assert sharding.logical_to_mesh_spec(PartitionSpec(P.BATCH), (16,), mesh) == PartitionSpec(("data", "fsdp"))
    assert sharding.logical_to_mesh_spec(PartitionSpec(P.BATCH), (6,), mesh) == PartitionSpec("data")
    # A mesh axis is used once per array.
    twice = PartitionSpec(P.HEADS, P.MLP)
    assert sharding.logical_to_mesh_spec(twice, (8, 8), mesh) == PartitionSpec("tensor")
    with pytest.raises(KeyError, match="no rule"):
        sharding.logical_to_mesh_spec(PartitionSpec("nonsense"), (8,), mesh)


def test_warmup_then_constant_or_cosine():
    sched = state.lr_schedule(C.TrainConfig(lr=1e-3, warmup_steps=10, steps=110))
    assert [float(sched(s)) for s in (0, 5, 10, 100)] == pytest.approx([0.0, 5e-4, 1e-3, 1e-3])
    cos = state.lr_schedule(C.TrainConfig(lr=1e-3, warmup_steps=10, steps=110, lr_schedule="cosine"))
    assert float(cos(10)) == pytest.approx(1e-3) and float(cos(60)) == pytest.approx(5e-4)
    assert float(cos(110)) == pytest.approx(0.0, abs=1e-9)


def test_widened_first_conv_keeps_old_channels_and_zeroes_new_ones():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(3, 3, 3, 8)).astype(np.float32)
    wide = finetune.widen_first_conv(base, 3, super_res=False)
    assert wide.shape == (3, 3, 7, 8)
    np.testing.assert_array_equal(wide[:, :, :3], base)
    assert not wide[:, :, 3:].any()
    up = rng.normal(size=(3, 3, 6, 8)).astype(np.float32)
    wide = finetune.widen_first_conv(up, 3, super_res=True)  # [x, image*mask, mask, low_res]
    assert wide.shape == (3, 3, 10, 8)
    np.testing.assert_array_equal(wide[:, :, :3], up[:, :, :3])
    np.testing.assert_array_equal(wide[:, :, 7:], up[:, :, 3:])
    assert not wide[:, :, 3:7].any()
    with pytest.raises(ValueError, match="input channels"):
        finetune.widen_first_conv(base, 3, super_res=True)


def test_mse_weighting_is_checked():
    from glide_jax.train.experiment import TrainConfig

    assert TrainConfig(mse_weighting="truncated_snr", mse_weight_clip=20.0).mse_weight_clip == 20.0
    with pytest.raises(ValueError, match="mse_weighting"):
        TrainConfig(mse_weighting="snr")
    with pytest.raises(ValueError, match="mse_weight_clip"):
        TrainConfig(mse_weighting="min_snr", mse_weight_clip=0.0)
    assert TrainConfig(high_noise_fraction=0.75, high_noise_from=0.5).high_noise_fraction == 0.75
    with pytest.raises(ValueError, match="high_noise_fraction"):
        TrainConfig(high_noise_fraction=1.2)
    with pytest.raises(ValueError, match="high_noise_from"):
        TrainConfig(high_noise_fraction=0.5, high_noise_from=1.0)
    from experiments.configs import clip as clip_family

    clip = clip_family.get_config("micro")
    with pytest.raises(ValueError, match="CLIP step"):
        dataclasses.replace(clip, train=dataclasses.replace(clip.train, high_noise_fraction=0.5))


def test_resuming_a_run_saved_before_a_config_field_existed(tmp_path):
    import json

    from glide_jax.train.loop import EXPERIMENT_FILE, check_resumable

    cfg = C.load_config_file(f"{REPO}/experiments/configs/base.py:micro")
    saved = C.to_dict(cfg)
    del saved["model"]["unet"]["coord_channels"]  # experiment.json written before the field was added
    (tmp_path / EXPERIMENT_FILE).write_text(json.dumps(saved))
    check_resumable(tmp_path, cfg)
    with pytest.raises(ValueError, match="different model"):
        check_resumable(tmp_path, C.apply_overrides(cfg, ["model.unet.coord_channels=true"]))
    saved["model"]["unet"]["no_such_field"] = 1
    (tmp_path / EXPERIMENT_FILE).write_text(json.dumps(saved))
    with pytest.raises(ValueError, match="different model"):
        check_resumable(tmp_path, cfg)
