"""The config files: every variant of every model family loads and builds the model it names, a
variant is asked for by ``path.py:variant`` with clear errors, and the shapes project's configs of the
shipped models load, flat and with explicit warm starts."""

import dataclasses
import importlib.util
from pathlib import Path

import jax
import pytest

from glide_jax.family import abstract_params
from glide_jax.train.experiment import ExperimentConfig, load_config_file

REPO = Path(__file__).resolve().parents[1]
FAMILIES = REPO / "experiments" / "configs"
PROJECT = REPO / "projects" / "shapes" / "configs"

# Parameters of the model each variant builds. The tiny ones equal the shipped embedded models of the
# same architecture (their training.json num_params); the released ones are OpenAI's checkpoints.
PARAMS = {
    "base:micro": 867_110, "base:tiny": 1_599_174,
    "base:released": 385_030_726, "base:paper": 3_554_414_086,
    "base:finetune": 385_030_726, "base:finetune_micro": 2_471_238,
    "upsample:micro": 867_974, "upsample:tiny": 1_631_942,
    "upsample:released": 398_361_286, "upsample:paper": 1_641_702_790,
    "upsample:finetune": 398_361_286, "upsample:finetune_micro": 2_472_102,
    "inpaint:micro": 868_262, "inpaint:tiny": 1_600_326, "inpaint:released": 385_037_638,
    "upsample_inpaint:released": 398_368_198,
    "base:distill_guidance_micro": 887_846, "base:distill_progressive_micro": 887_846,
    "base:distill_guidance": 385_769_542,
    **{f"base:distill_progressive_{n}": 385_769_542 for n in (32, 16, 8, 4, 2, 1)},
    "clip:micro": 66_145, "clip:tiny": 288_705, "clip:released": 158_123_265,
}
SMALL = [k for k in PARAMS if k.split(":")[1] in ("micro", "tiny", "finetune_micro", "distill_guidance_micro",
                                                  "distill_progressive_micro")]
NO_ALIAS = ("distill-guidance", "distill-progressive")  # trained by experiments/train.py only
LARGE = [k for k in PARAMS if k not in SMALL]


def _module(path: Path):
    spec = importlib.util.spec_from_file_location(f"config_under_test_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_family_file_lists_exactly_the_variants_measured_here():
    listed = {f"{path.stem}:{v}" for path in FAMILIES.glob("[!_]*.py") for v in _module(path).VARIANTS}
    assert listed == set(PARAMS)


def _check_builds(key):
    family, variant = key.split(":")
    cfg = load_config_file(f"{FAMILIES / family}.py:{variant}")
    assert isinstance(cfg, ExperimentConfig) and cfg.name == f"{family}_{variant}"
    assert cfg.task in NO_ALIAS or (REPO / "experiments" / f"train_{cfg.task}.py").exists()
    assert sum(leaf.size for leaf in jax.tree.leaves(abstract_params(cfg.model))) == PARAMS[key]


@pytest.mark.parametrize("key", SMALL)
def test_small_variants_load_and_build(key):
    _check_builds(key)


@pytest.mark.slow  # tracing the released and paper-size models takes 2-8 s each
@pytest.mark.parametrize("key", LARGE)
def test_large_variants_load_and_build(key):
    _check_builds(key)


def test_an_inpainting_variant_is_its_base_variant_with_the_mask_inputs():
    for variant in ("micro", "tiny"):
        base = load_config_file(f"{FAMILIES}/base.py:{variant}").model
        inpaint = load_config_file(f"{FAMILIES}/inpaint.py:{variant}").model
        assert inpaint == dataclasses.replace(base, unet=dataclasses.replace(base.unet, inpaint=True))


def test_a_finetune_variant_is_the_released_model_with_the_single_device_settings():
    from glide_jax.config import get_preset
    from glide_jax.train.warm_start import differences

    for family in ("base", "upsample"):
        recipe = load_config_file(f"{FAMILIES}/{family}.py:finetune")
        assert differences(get_preset(family), recipe.model) == []  # the released weights load as they are
        assert (recipe.model.unet.dtype, recipe.model.unet.remat) == ("bfloat16", True)
        assert recipe.train.init_from == family and recipe.train.microbatches > 1 and recipe.train.lr <= 1e-5
        assert recipe.data.caption_dropout > 0 and recipe.data.tokenizer == "glide-bpe"
        assert (recipe.mesh.data, recipe.mesh.fsdp) == (1, -1)
        micro = load_config_file(f"{FAMILIES}/{family}.py:finetune_micro")
        assert differences(load_config_file(f"{FAMILIES}/{family}.py:micro").model, micro.model) == [
            "unet.text.n_vocab: 128 vs 50257"]  # the micro network with the released tokenizer's ids
        assert (micro.model.unet.dtype, micro.model.unet.remat, micro.train.microbatches) == ("bfloat16", True, 2)
        assert (micro.data, micro.mesh) == (recipe.data, recipe.mesh)


def test_the_distillation_recipe_is_the_released_model_with_the_guidance_input_in_halving_rounds():
    from glide_jax.config import get_preset
    from glide_jax.train.warm_start import differences

    guided = load_config_file(f"{FAMILIES}/base.py:distill_guidance")
    finetune = load_config_file(f"{FAMILIES}/base.py:finetune")
    assert differences(get_preset("base"), guided.model) == ["unet.guidance_embed: False vs True"]
    assert guided.model == dataclasses.replace(finetune.model, unet=dataclasses.replace(finetune.model.unet,
                                                                                        guidance_embed=True))
    assert (guided.task, guided.train.init_from, guided.data.caption_dropout) == ("distill-guidance", "base", 0.0)
    assert (guided.train.batch_size, guided.train.microbatches, guided.mesh) == (32, 8, finetune.mesh)
    teachers = []
    for n in (32, 16, 8, 4, 2, 1):
        round_ = load_config_file(f"{FAMILIES}/base.py:distill_progressive_{n}")
        assert (round_.task, round_.model, round_.data) == ("distill-progressive", guided.model, guided.data)
        assert round_.train.init_from == ""  # the previous round's workdir, given on the command line
        teachers.append((round_.train.distill.teacher_steps, round_.train.distill.student_steps))
    assert teachers == [(64, 32), (32, 16), (16, 8), (8, 4), (4, 2), (2, 1)]


def test_variant_errors_name_the_problem_and_the_choices(tmp_path):
    with pytest.raises(ValueError, match=r"has no variant 'huge'; its variants are micro, tiny, released, paper"):
        load_config_file(f"{FAMILIES}/base.py:huge")
    with pytest.raises(ValueError, match=r"needs a variant: one of micro, tiny, released \(write clip.py:<variant>\)"):
        load_config_file(FAMILIES / "clip.py")
    with pytest.raises(ValueError, match="no variant after ':'"):
        load_config_file(f"{FAMILIES}/base.py:")
    with pytest.raises(ValueError, match=r"has no variants \(its get_config\(\) takes no argument\)"):
        load_config_file(f"{PROJECT}/clip.py:tiny")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_config_file(f"{FAMILIES}/no_such_family.py:tiny")
    # A family file without VARIANTS still gets the variant; its own get_config says what is wrong.
    plain = tmp_path / "plain.py"
    plain.write_text("def get_config(variant):\n    raise ValueError(f'plain has no {variant}')\n")
    with pytest.raises(ValueError, match="plain has no big"):
        load_config_file(f"{plain}:big")
    with pytest.raises(ValueError, match=r"needs a variant \(write path.py:<variant>\)"):
        load_config_file(plain)


# Each shipped model's configs, in the order they run (one workdir per file, one phase per variant).
SHIPPED = {
    "base_pretrain": ("to_1250", "to_10000"),
    "base_forward": ("to_1500", "to_3000", "to_3500"),
    "base_four_relations": ("to_2250", "to_2750"),
    "base_three_relations": ("to_750", "to_1250"),
    "upsample": ("to_750", "to_1000"),
    "inpaint": (None,),
    "clip": (None,),
}


def test_the_project_configs_of_the_shipped_models_load():
    assert {p.stem for p in PROJECT.glob("[!_]*.py")} == set(SHIPPED) | {"distill"}
    for stem, variants in SHIPPED.items():
        assert tuple(getattr(_module(PROJECT / f"{stem}.py"), "VARIANTS", (None,))) == variants
        steps = []
        for variant in variants:
            cfg = load_config_file(f"{PROJECT / stem}.py" + (f":{variant}" if variant else ""))
            assert cfg.name == stem + (f":{variant}" if variant else "")
            # Each phase of a workdir keeps the model and the warm start; its steps only grow.
            steps.append(cfg.train.steps)
            if variant:
                first = load_config_file(f"{PROJECT / stem}.py:{variants[0]}")
                assert (cfg.model, cfg.train.init_from, cfg.task) == (first.model, first.train.init_from, first.task)
            assert not cfg.train.init_from.startswith("embedded"), (stem, cfg.train.init_from)
            assert cfg.train.init_from in ("", f"runs/shapes/{_source(stem)}"), (stem, cfg.train.init_from)
        assert steps == sorted(steps) and len(set(steps)) == len(steps)
    # The last phase of the last base stage is what the package ships, with the relations it was trained on.
    shipped = load_config_file(f"{PROJECT}/base_three_relations.py:to_1250")
    assert shipped.data.shapes.relations == ("above", "below", "to the left of") and shipped.train.steps == 1250


def test_the_distillation_runs_chain_from_the_shipped_base_round_by_round():
    """distill.py's variants are separate workdirs: guided distillation of the shipped base (the package's
    model itself), then each progressive round from the previous run's workdir, halving the steps."""
    module = _module(PROJECT / "distill.py")
    configs = [load_config_file(f"{PROJECT}/distill.py:{variant}") for variant in module.VARIANTS]
    guided, rounds = configs[0], configs[1:]
    shipped = load_config_file(f"{PROJECT}/base_three_relations.py:to_1250")
    assert guided.task == "distill-guidance" and guided.train.init_from == "embedded-base"
    assert guided.model.unet == dataclasses.replace(shipped.model.unet, guidance_embed=True)
    previous, steps = "runs/shapes/distill_guidance", 16
    for cfg in rounds:
        d = cfg.train.distill
        assert cfg.task == "distill-progressive" and cfg.train.init_from == previous and cfg.model == guided.model
        assert (d.teacher_steps, d.student_steps) == (steps, steps // 2) and d.chain == 875
        previous, steps = f"runs/shapes/distill_{d.student_steps}", d.student_steps
    assert steps == 1


def _source(stem):
    """Where each stage starts from: a workdir, or the float16 export of one (see projects/shapes/README.md)."""
    return {"base_forward": "base_pretrain_export/base", "base_four_relations": "base_forward",
            "base_three_relations": "base_four_relations_export/base", "inpaint": "base_three_relations"}.get(stem)


def test_project_configs_depend_only_on_the_library_and_their_shared_base():
    """The shipped models' configs reproduce them whatever experiments/ becomes: they import the library
    and their own ``_common`` only."""
    for path in PROJECT.glob("*.py"):
        imports = [line for line in path.read_text().splitlines() if line.startswith(("import ", "from "))]
        allowed = ("from glide_jax", "import dataclasses", "from typing", "from projects.shapes.configs import _common")
        assert all(line.startswith(allowed) for line in imports), (path, imports)
