"""The training loop shared by every entry point: build, resume, step, log, preview, checkpoint.

``train(cfg, workdir)`` is idempotent with respect to interruption: it always
starts by restoring the newest readable checkpoint of ``workdir`` (parameters,
EMA, optimiser, step, data-iterator position), so rerunning the same command
after a crash or ``kill -9`` continues the run, and because every step's
randomness is ``fold_in(key(seed), step)`` and the batches come back in the
same order, the result equals that of an uninterrupted run.

Workdir layout: ``experiment.json`` (the config, for humans), ``checkpoints/``,
``tokenizer.model`` (when the vocabulary is learned), ``metrics.jsonl``,
``tensorboard/`` and ``samples/step_*.png``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Union

import flax.linen as nn
import jax
import numpy as np

from glide_jax.config import ClipConfig, config_from_dict
from glide_jax.data.input_pipeline import global_batch
from glide_jax.train import experiment as config_lib
from glide_jax.train import inputs as data_lib
from glide_jax.train import sharding as sh
from glide_jax.train import state as state_lib
from glide_jax.train.checkpointing import Checkpointer
from glide_jax.train.experiment import ExperimentConfig
from glide_jax.train.metrics import MetricsWriter, Throughput
from glide_jax.train.step import make_clip_step, make_diffusion_step

log = logging.getLogger(__name__)

EXPERIMENT_FILE = "experiment.json"
_BATCH_KEYS = ("image", "tokens", "mask", "lens", "low_res", "inpaint_mask")


def boxed_param_init(cfg: ExperimentConfig) -> Callable[[jax.Array], Any]:
    """``key -> boxed parameter tree`` (logical axis names attached) of the experiment's model."""
    if isinstance(cfg.model, ClipConfig):
        from glide_jax.models.clip import ClipModel, init_params

        model = ClipModel(cfg.model)
        return lambda key: init_params(model, key)
    from glide_jax.models.unet import GlideUNet, example_inputs

    model_cfg = cfg.model
    model = GlideUNet(model_cfg.unet)
    inputs = example_inputs(model_cfg.unet, 1, model_cfg.low_res_size)
    return lambda key: model.init(key, *inputs, **inputs.kwargs)["params"]


def make_step_fn(cfg: ExperimentConfig, tx, mesh=None):
    if isinstance(cfg.model, ClipConfig):
        return make_clip_step(cfg.model, cfg.train, tx)
    return make_diffusion_step(cfg.model, cfg.train, tx, mesh=mesh)


def build_state(cfg: ExperimentConfig, mesh, tx):
    """``(init_fn, shardings, abstract)``: a jitted, born-sharded state initialiser and the layouts."""
    param_init = boxed_param_init(cfg)

    def init_boxed(key):
        return state_lib.create_state(param_init(key), tx, cfg.train.seed)

    key = jax.random.key(cfg.train.seed)
    abstract_boxed = jax.eval_shape(init_boxed, key)
    shardings = sh.tree_shardings(abstract_boxed, mesh)
    abstract = sh.abstract_with_shardings(nn.unbox(abstract_boxed), shardings)
    init = jax.jit(lambda k: nn.unbox(init_boxed(k)), out_shardings=shardings)
    return (lambda: init(key)), shardings, abstract


def state_from_params(params, cfg: ExperimentConfig, tx, shardings):
    """A fresh state around given (host) parameters, created directly in the sharded layout."""
    params = jax.device_put(params, shardings.params)
    create = jax.jit(lambda p: state_lib.create_state(p, tx, cfg.train.seed), out_shardings=shardings)
    return create(params)


def _inherited_tokenizer(cfg: ExperimentConfig) -> Optional[str]:
    """A fine-tune or warm start keeps the vocabulary of the model it starts from."""
    if cfg.task == "clip" or not cfg.train.init_from or cfg.data.tokenizer != "sentencepiece":
        return None
    from glide_jax.hub import embedded

    init = cfg.train.init_from
    source = embedded.embedded_dir(init) if embedded.is_embedded(init) else Path(init).expanduser()
    candidate = source / data_lib.TOKENIZER_FILE
    return f"sentencepiece:{candidate}" if candidate.exists() else None


def check_resumable(workdir: Path, cfg: ExperimentConfig) -> None:
    """Refuse, before anything is read or moved, to continue a workdir's run with an incompatible config.

    A different model, or switching weight decay or clipping on or off (which
    changes the optimiser state's structure), cannot restore the checkpoints.
    """
    path = workdir / EXPERIMENT_FILE
    if not path.exists():
        return
    saved, new = json.loads(path.read_text()), config_lib.to_dict(cfg)
    problems = ["task"] if saved.get("task") != new["task"] else []
    try:  # parsed, so that a field added since the run was saved compares as its default
        same_model = config_from_dict(saved["model"]) == cfg.model
    except (KeyError, TypeError, ValueError):
        same_model = False
    problems += [] if same_model else ["model"]
    problems += [f"train.{k} on/off" for k in ("weight_decay", "grad_clip")
                 if bool(saved.get("train", {}).get(k)) != bool(new["train"][k])]
    if problems:
        raise ValueError(f"{workdir} holds a run with a different {', '.join(problems)} than this config; "
                         "use a new workdir or the run's own config (see its experiment.json)")


def train(cfg: ExperimentConfig, workdir: Union[str, Path]) -> Dict[str, Any]:
    """Train (or continue training) ``cfg`` in ``workdir``; returns a summary of the run."""
    sh.maybe_initialize_distributed()
    workdir = Path(workdir).absolute()
    workdir.mkdir(parents=True, exist_ok=True)
    check_resumable(workdir, cfg)
    tc = cfg.train
    mesh = sh.make_mesh(cfg.mesh)
    if tc.batch_size % sh.data_parallel_size(mesh):
        raise ValueError(f"batch_size {tc.batch_size} is not divisible by the {sh.data_parallel_size(mesh)} data shards")

    source = data_lib.open_source(cfg)
    inherited = _inherited_tokenizer(cfg)
    if inherited:
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, tokenizer=inherited))
    tokenize = data_lib.make_tokenize(cfg, data_lib.prepare_tokenizer(cfg, workdir, source))
    tx = state_lib.make_optimizer(tc)
    init_state, shardings, abstract = build_state(cfg, mesh, tx)
    experiment = config_lib.to_dict(cfg)

    checkpointer = Checkpointer(workdir, keep_last=tc.keep_last, keep_every=tc.keep_every, async_save=tc.async_checkpoint)
    iterator = data_lib.make_iterator(cfg, source, tokenize)
    restored = checkpointer.restore(abstract, iterator)
    if restored is not None:
        state, _ = restored
        print(f"resumed from step {int(state.step)} in {checkpointer.directory}", flush=True)
    else:
        iterator = data_lib.make_iterator(cfg, source, tokenize)
        if cfg.task == "inpaint" and tc.init_from:
            from glide_jax.train.finetune import load_inpaint_init

            state = state_from_params(load_inpaint_init(tc.init_from, cfg.model), cfg, tx, shardings)
        elif cfg.task in ("base", "upsample") and tc.init_from:
            from glide_jax.train.deepen import load_warm_start

            state = state_from_params(load_warm_start(tc.init_from, cfg.model), cfg, tx, shardings)
        else:
            state = init_state()
    if jax.process_index() == 0:
        (workdir / EXPERIMENT_FILE).write_text(json.dumps(experiment, indent=2))

    start = int(jax.device_get(state.step))
    print(f"{cfg.name or cfg.task}: {state_lib.param_count(state.params):,} parameters, mesh {dict(mesh.shape)}, "
          f"global batch {tc.batch_size}, steps {start} -> {tc.steps}", flush=True)
    log.info("largest arrays:\n%s", sh.describe(shardings.params, abstract.params))

    step_fn = sh.jit_step(make_step_fn(cfg, tx, mesh), shardings, mesh)
    writer = MetricsWriter(workdir, resume_step=start, total_steps=tc.steps)
    previewer = None
    if not isinstance(cfg.model, ClipConfig) and tc.sample_every >= 0:
        from glide_jax.train.preview import Previewer

        previewer = Previewer(cfg, workdir, source, tokenize)
    batch_sharding = sh.batch_sharding(mesh)
    throughput = Throughput(tc.batch_size, tc.steps)
    metrics, last = None, {}
    done = start
    t_start = time.perf_counter()

    def save():
        checkpointer.save(state, iterator.get_state(), experiment)

    for step in range(start, tc.steps):
        local = next(iterator)
        batch = global_batch({k: v for k, v in local.items() if k in _BATCH_KEYS}, batch_sharding)
        state, metrics = step_fn(state, batch)
        done = step + 1
        if step == start:
            jax.block_until_ready(metrics)
            throughput.start(done)
            print(f"first step (including compilation) took {time.perf_counter() - t_start:.1f}s", flush=True)
        if done % tc.log_every == 0 or done == tc.steps:
            last = {k: float(v) for k, v in jax.device_get(metrics).items()}
            last.update(throughput.report(done))
            writer.write(done, last)
            writer.console(done, last)
        if tc.checkpoint_every and done % tc.checkpoint_every == 0:
            save()
        if previewer is not None and tc.sample_every > 0 and done % tc.sample_every == 0:
            _preview(previewer, writer, state, done)

    save()
    if previewer is not None and (tc.sample_every == 0 or done % max(tc.sample_every, 1)) and done > start:
        _preview(previewer, writer, state, done)
    checkpointer.close()
    writer.close()
    return {"step": done, "metrics": last, "skipped": int(jax.device_get(state.skipped)),
            "seconds": time.perf_counter() - t_start}


def _preview(previewer, writer: MetricsWriter, state, step: int) -> None:
    t0 = time.perf_counter()
    path = previewer({"params": state.ema_params}, step)
    if path is not None:
        from PIL import Image

        writer.image("samples", np.asarray(Image.open(path)), step)
        print(f"wrote {path} ({time.perf_counter() - t0:.1f}s)", flush=True)
