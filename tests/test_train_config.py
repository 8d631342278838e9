"""Training configuration: overrides, JSON round trip, shipped config files, mesh and layout rules, optimiser."""

import dataclasses
from pathlib import Path

import pytest

from glide_jax.train.tasks import task_named
from jax.sharding import AbstractMesh, PartitionSpec

from glide_jax.config import config_from_dict, config_to_dict
from glide_jax.models import partitioning
from glide_jax.train import experiment
from glide_jax.train import sharding, state

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "experiments" / "configs").glob("[!_]*.py"))


def _tiny():
    return experiment.load_config_file(f"{REPO}/experiments/configs/base.py:tiny")


def test_overrides_are_typed_by_the_field_they_replace():
    cfg = experiment.apply_overrides(
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
        ("data.shapes.pair_layout=diagonal", "data.shapes.pair_layout must be one of"),
        ("data.shapes.relations=above,on top of", "data.shapes.relations must be distinct items"),
        ("data.relations=above,on top of", "data.shapes.relations must be distinct items"),  # its old name
        ("data.source=folders", "data.source must be one of 'shapes', 'tfds'"),
    ],
)
def test_bad_overrides_fail_before_anything_runs(override, message):
    cfg = experiment.apply_overrides(_tiny(), ["train.microbatches=4"]) if "batch_size" in override else _tiny()
    with pytest.raises(ValueError, match=message):
        experiment.apply_overrides(cfg, [override])


def test_json_round_trip_is_exact():
    cfg = experiment.apply_overrides(_tiny(), ["sample.prompts=a,b", "model.unet.attention_resolutions=8",
                                      "data.shapes.relations=above,to the left of"])
    assert cfg.data.shapes.relations == ("above", "to the left of")
    assert config_from_dict(config_to_dict(cfg), experiment.ExperimentConfig) == cfg


def test_every_preset_round_trips_through_json():
    import json

    from glide_jax.config import PRESETS

    for name, model in PRESETS.items():
        text = json.dumps(config_to_dict(model))
        assert config_from_dict(json.loads(text)) == model, name
        assert config_from_dict(json.loads(text), type(model)) == model, name


# experiment.json as training workdirs hold it: untagged parts, the model tagged at every level, and keys of
# options this version no longer has, at their "off" values.
SAVED_EXPERIMENT = {
    "task": "base", "name": "base_micro",
    "model": {"__type__": "ModelConfig",
              "unet": {"__type__": "UNetConfig", "image_size": 16, "num_channels": 32, "num_res_blocks": 1,
                       "channel_mult": [1, 2], "attention_resolutions": [8], "num_head_channels": 16,
                       "coord_channels": False,
                       "text": {"__type__": "TextConfig", "text_ctx": 12, "width": 32, "layers": 1, "heads": 2,
                                "n_vocab": 128}},
              "diffusion": {"__type__": "DiffusionConfig", "steps": 1000, "noise_schedule": "squaredcos_cap_v2"},
              "low_res_size": None},
    "data": {"source": "shapes", "num_examples": 256, "placement_fraction": 0.0, "pair_layout": "halves",
             "relations": ["above", "to the left of"]},
    "train": {"steps": 12, "batch_size": 4, "lr": 0.001},
    "mesh": {"data": -1, "fsdp": 1, "tensor": 1},
    "sample": {"num_images": 2, "prompts": []},
}


def test_saved_experiments_and_model_files_still_load():
    import json

    cfg = config_from_dict(SAVED_EXPERIMENT, experiment.ExperimentConfig)
    assert cfg.model.unet.channel_mult == (1, 2) and cfg.model.unet.text.n_vocab == 128
    # the shapes settings saved flat (before data.shapes existed) land in their section
    assert cfg.data.shapes.relations == ("above", "to the left of") and cfg.data.shapes.pair_layout == "halves"
    assert cfg.data.shapes.num_examples == 256 and cfg.data.shapes.two_object_fraction == 0.5
    assert cfg.train.steps == 12 and cfg.sample.prompts == ()
    again = config_to_dict(cfg)
    assert again["__type__"] == "ExperimentConfig" and again["model"]["__type__"] == "ModelConfig"
    assert "__type__" not in again["data"] and "__type__" not in again["model"]["unet"]  # declared: no tag needed
    assert config_from_dict(json.loads(json.dumps(again)), experiment.ExperimentConfig) == cfg
    for config_json in sorted((REPO / "glide_jax" / "assets" / "embedded").glob("*/config.json")):
        model = config_from_dict(json.loads(config_json.read_text()))
        assert config_from_dict(config_to_dict(model)) == model


@pytest.mark.parametrize("change, message", [
    (lambda d: d["model"]["unet"].update(coord_channels=True), "coord_channels=True is not supported"),
    (lambda d: d["data"].update(placement_fraction=0.5), "placement_fraction=0.5 is not supported"),
    (lambda d: d["train"].update(no_such_field=1), r"TrainConfig: unknown config fields \['no_such_field'\]"),
    (lambda d: d["model"].pop("__type__"), "__type__ is None, expected one of"),
    (lambda d: d["model"].update(__type__="TextConfig"), "__type__ is 'TextConfig'"),
    (lambda d: d.update(data=[1, 2]), "JSON object"),
    (lambda d: d.update(task="dance"), "task must be one of"),
    (lambda d: d["data"].update(shapes={"num_examples": 9}), r"num_examples \(its old place\) and shapes.num_examples"),
    (lambda d: d["data"].update(shapes=3), "DataConfig.shapes: expected a JSON object"),
])
def test_bad_saved_configs_are_refused_by_name(change, message):
    import copy

    saved = copy.deepcopy(SAVED_EXPERIMENT)
    change(saved)
    with pytest.raises((ValueError, TypeError), match=message):
        config_from_dict(saved, experiment.ExperimentConfig)


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_every_shipped_config_is_valid(path):
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"family_{path.stem}", path)
    family = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(family)
    for variant in family.VARIANTS:
        cfg = experiment.load_config_file(f"{path}:{variant}")
        assert cfg.name == f"{path.stem}_{variant}"
        assert config_from_dict(config_to_dict(cfg), experiment.ExperimentConfig) == cfg
        assert task_named(cfg.task).name == cfg.task  # experiments.train runs every registered task
        if cfg.task in ("base", "upsample", "inpaint", "clip"):  # the documented per-task aliases
            assert (REPO / "experiments" / f"train_{cfg.task}.py").exists()


def test_old_flat_shapes_fields_load_and_override_into_their_section():
    """Workdirs written before ``data.shapes`` keep their shapes settings flat in ``data``; they load, and the
    old names work in ``--set`` too. A new save writes the section and no flat names."""
    import copy
    import json

    old = copy.deepcopy(SAVED_EXPERIMENT)
    old["data"].update(num_examples=1_000_000, two_object_fraction=0.75)
    before = json.dumps(old, sort_keys=True)
    cfg = config_from_dict(old, experiment.ExperimentConfig)
    assert json.dumps(old, sort_keys=True) == before  # the saved dict is not modified
    assert cfg.data.shapes == experiment.ShapesDataConfig(num_examples=1_000_000, two_object_fraction=0.75,
                                                         pair_layout="halves", relations=("above", "to the left of"))
    saved = config_to_dict(cfg)["data"]
    assert saved["shapes"]["num_examples"] == 1_000_000 and "num_examples" not in saved
    both = experiment.apply_overrides(cfg, ["data.num_examples=64", "data.shapes.two_object_fraction=1.0",
                                            "data.pair_layout=free"])
    assert (both.data.shapes.num_examples, both.data.shapes.two_object_fraction, both.data.shapes.pair_layout) == (
        64, 1.0, "free")


def test_task_and_model_must_agree():
    cfg = _tiny()
    with pytest.raises(ValueError, match="cannot train"):
        dataclasses.replace(cfg, task="upsample")
    with pytest.raises(ValueError, match="does not match"):
        dataclasses.replace(cfg, task="clip")


def test_mesh_shape_resolves_the_free_axis():
    assert sharding.mesh_shape(experiment.MeshConfig(data=-1, fsdp=1, tensor=1), 8) == (8, 1, 1)
    assert sharding.mesh_shape(experiment.MeshConfig(data=1, fsdp=-1, tensor=2), 8) == (1, 4, 2)
    assert sharding.mesh_shape(experiment.MeshConfig(data=2, fsdp=2, tensor=2), 8) == (2, 2, 2)
    with pytest.raises(ValueError, match="at most one"):
        sharding.mesh_shape(experiment.MeshConfig(data=-1, fsdp=-1), 8)
    with pytest.raises(ValueError, match="needs 6 devices"):
        sharding.mesh_shape(experiment.MeshConfig(data=3, fsdp=2), 8)
    with pytest.raises(ValueError, match="do not split"):
        sharding.mesh_shape(experiment.MeshConfig(data=-1, fsdp=3), 8)


def test_logical_rules_drop_axes_that_do_not_divide():
    mesh = AbstractMesh((2, 4, 2), partitioning.MESH_AXES)
    conv = PartitionSpec(partitioning.KERNEL, partitioning.KERNEL, partitioning.EMBED, partitioning.MLP)
    assert sharding.logical_to_mesh_spec(conv, (3, 3, 64, 128), mesh) == PartitionSpec(None, None, "fsdp", "tensor")
    # 7 input channels (inpainting's first conv): fsdp cannot split them, tensor still splits the output.
    assert sharding.logical_to_mesh_spec(conv, (3, 3, 7, 128), mesh) == PartitionSpec(None, None, None, "tensor")
    assert sharding.logical_to_mesh_spec(PartitionSpec(partitioning.NORM), (64,), mesh) == PartitionSpec()
    # The batch takes data and fsdp together, or only data when 8 does not divide it.
    assert sharding.logical_to_mesh_spec(PartitionSpec(partitioning.BATCH), (16,), mesh) == PartitionSpec(("data", "fsdp"))
    assert sharding.logical_to_mesh_spec(PartitionSpec(partitioning.BATCH), (6,), mesh) == PartitionSpec("data")
    # A mesh axis is used once per array.
    twice = PartitionSpec(partitioning.HEADS, partitioning.MLP)
    assert sharding.logical_to_mesh_spec(twice, (8, 8), mesh) == PartitionSpec("tensor")
    with pytest.raises(KeyError, match="no rule"):
        sharding.logical_to_mesh_spec(PartitionSpec("nonsense"), (8,), mesh)


def test_the_batch_is_split_over_the_data_parallel_axes_larger_than_one():
    specs = {shape: sharding.batch_sharding(AbstractMesh(shape, partitioning.MESH_AXES)).spec
             for shape in ((2, 4, 2), (1, 4, 2), (2, 1, 4), (1, 1, 8))}
    assert specs == {(2, 4, 2): PartitionSpec(("data", "fsdp")), (1, 4, 2): PartitionSpec("fsdp"),
                     (2, 1, 4): PartitionSpec("data"), (1, 1, 8): PartitionSpec(None)}
    assert [sharding.data_parallel_size(AbstractMesh(s, partitioning.MESH_AXES)) for s in specs] == [8, 4, 2, 1]


def test_warmup_then_constant_or_cosine():
    sched = state.lr_schedule(experiment.TrainConfig(lr=1e-3, warmup_steps=10, steps=110))
    assert [float(sched(s)) for s in (0, 5, 10, 100)] == pytest.approx([0.0, 5e-4, 1e-3, 1e-3])
    cos = state.lr_schedule(experiment.TrainConfig(lr=1e-3, warmup_steps=10, steps=110, lr_schedule="cosine"))
    assert float(cos(10)) == pytest.approx(1e-3) and float(cos(60)) == pytest.approx(5e-4)
    assert float(cos(110)) == pytest.approx(0.0, abs=1e-9)


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


def test_resuming_checks_the_saved_model_and_optimiser_structure(tmp_path):
    import json

    from glide_jax.train.loop import EXPERIMENT_FILE, check_resumable

    cfg = experiment.load_config_file(f"{REPO}/experiments/configs/base.py:micro")
    saved = config_to_dict(cfg)
    del saved["model"]["unet"]["remat"]  # a field missing from saved JSON compares as its default
    (tmp_path / EXPERIMENT_FILE).write_text(json.dumps(saved))
    check_resumable(tmp_path, cfg)
    check_resumable(tmp_path, experiment.apply_overrides(cfg, ["train.lr=0.5", "data.caption_dropout=0.1"]))
    with pytest.raises(ValueError, match="different model"):
        check_resumable(tmp_path, experiment.apply_overrides(cfg, ["model.unet.num_channels=64"]))
    with pytest.raises(ValueError, match="train.weight_decay on/off"):
        check_resumable(tmp_path, experiment.apply_overrides(cfg, ["train.weight_decay=0.01"]))
    saved["model"]["unet"]["no_such_field"] = 1
    (tmp_path / EXPERIMENT_FILE).write_text(json.dumps(saved))
    with pytest.raises(ValueError, match="different model"):
        check_resumable(tmp_path, cfg)
