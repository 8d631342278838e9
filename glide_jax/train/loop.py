"""The training loop shared by every entry point: prepare, restore or initialise, step, finish.

``train(cfg, workdir)`` is idempotent with respect to interruption: it always
starts from the newest readable checkpoint of ``workdir``, so rerunning the
same command after a crash or ``kill -9`` continues the run, and because every
step's randomness is ``fold_in(key(seed), step)`` and the batches come back in
the same order, the result equals that of an uninterrupted run.

Resume order (:func:`prepare` then :func:`restore_or_initialise`):

1. ``experiment.json`` of the workdir is compared with this config
   (:func:`check_resumable`); a different model or optimiser structure is
   refused before anything is read or moved. The config itself always comes
   from the command line, never from the checkpoint.
2. The tokenizer spec is resolved: the workdir's ``tokenizer.model`` (learnt
   on the first run, or copied from the warm-start source) is reused as is.
3. The state's layout is computed abstractly (shapes and shardings from
   ``jax.eval_shape``; nothing is allocated).
4. The checkpoints are tried from the newest step down. From each one, in
   this order: the ``train`` item (step, parameters, optimiser state, base
   PRNG key, skipped-update count) and ``ema_params``, read straight into the
   sharded layout; then the grain iterator state, applied to the iterator
   only after the whole checkpoint has been read. The first checkpoint that
   reads completely is used; unreadable newer ones are moved to
   ``checkpoints.corrupt/``. If there are checkpoints and none reads, the run
   stops with an error and moves nothing (``train.restart_if_corrupt`` sets
   them aside and goes on to step 5 instead).
5. Without a usable checkpoint the run starts at step 0 from a fresh
   iterator and the parameters of ``train.init_from`` (through
   the start its task names, ``glide_jax.train.tasks``), else from a
   born-sharded random init seeded by ``train.seed``.

Recomputed on every (re)start, never restored: the mesh and shardings, the
optimiser and its learning-rate schedule (a function of ``state.step``), the
per-step keys, the jitted step, the metric writers (which drop what a killed
run logged after its checkpoint) and the previewer.

Several processes (``sharding.maybe_initialize_distributed``) run the same
loop in lockstep: each reads its own rows of every global batch (the rows its
devices hold, so the global batch and all its randomness are those of one
process), all of them write the checkpoints together (Orbax), and process 0
alone writes ``experiment.json``, the metrics, the sample grids and the
console lines. SIGTERM (a preemption notice) makes every process save a
checkpoint at the same step and return normally (:mod:`glide_jax.train.preemption`);
rerunning the command continues from there.

Workdir layout: ``experiment.json`` (the config, for humans), ``checkpoints/``,
``tokenizer.model`` (when the vocabulary is learned), ``metrics.jsonl``,
``tensorboard/``, ``samples/step_*.png`` and, with periodic evaluation, ``eval/step_*/``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
import time
from typing import Any, Callable, Dict, Optional, Tuple, Union

from PIL import Image
import flax.linen as nn
import jax
import numpy as np

from glide_jax.config import config_from_dict, config_to_dict
from glide_jax.data.input_pipeline import global_batch, host_rows
from glide_jax.errors import InputError
from glide_jax.family import family_of, init_params
from glide_jax.train import inputs as data_lib
from glide_jax.train import sharding as sh
from glide_jax.train import state as state_lib
from glide_jax.train import warm_start
from glide_jax.train.checkpointing import Checkpointer
from glide_jax.train.experiment import ExperimentConfig
from glide_jax.train.metrics import MetricsWriter, Throughput
from glide_jax.train.preemption import PreemptionWatch
from glide_jax.train.tasks import task_named

log = logging.getLogger(__name__)
# At DEBUG level: one line per step and process with the example ids it fed (``--log-example-ids``).
example_log = logging.getLogger("glide_jax.train.examples")

EXPERIMENT_FILE = "experiment.json"
Evaluator = Callable[[Any, int], Dict[str, float]]  # (EMA parameters, step) -> eval/... metrics
_BATCH_KEYS = ("image", "tokens", "mask", "lens", "low_res", "inpaint_mask")


def say(message: str) -> None:
    """A console line, from process 0 only (the others run the same loop and would repeat it)."""
    if jax.process_index() == 0:
        print(message, flush=True)


# ----------------------------------------------------------------------------- state


def build_state(cfg: ExperimentConfig, mesh, tx) -> Tuple[Callable[[], state_lib.TrainState], Any, Any]:
    """``(init_fn, shardings, abstract)``: a jitted, born-sharded random-init state and the layouts."""

    teacher = task_named(cfg.task).teacher

    def init_boxed(key):
        return state_lib.create_state(init_params(cfg.model, key), tx, cfg.train.seed, teacher)

    key = jax.random.key(cfg.train.seed)
    abstract_boxed = jax.eval_shape(init_boxed, key)
    shardings = sh.tree_shardings(abstract_boxed, mesh)
    abstract = sh.abstract_with_shardings(nn.unbox(abstract_boxed), shardings)
    init = jax.jit(lambda k: nn.unbox(init_boxed(k)), out_shardings=shardings)
    return (lambda: init(key)), shardings, abstract


def state_from_params(params, cfg: ExperimentConfig, tx, shardings) -> state_lib.TrainState:
    """A fresh state around given (host) parameters, created directly in the sharded layout."""
    params = jax.device_put(params, shardings.params)
    teacher = task_named(cfg.task).teacher
    create = jax.jit(lambda p: state_lib.create_state(p, tx, cfg.train.seed, teacher), out_shardings=shardings)
    return create(params)


# ----------------------------------------------------------------------------- 1-3: prepare


def check_workdir(workdir: Union[str, Path]) -> Path:
    """``workdir`` as an absolute path, created; refused if it or a parent is a file."""
    workdir = Path(workdir).absolute()
    for path in (workdir, *workdir.parents):
        if path.exists() and not path.is_dir():
            where = "is a file" if path == workdir else f"lies under a file ({path})"
            raise InputError(f"workdir {workdir} {where}; give a directory (new or a run's) as --workdir")
    workdir.mkdir(parents=True, exist_ok=True)
    return workdir


def check_resumable(workdir: Path, cfg: ExperimentConfig) -> None:
    """Refuse, before anything is read or moved, to continue a workdir's run with an incompatible config.

    A different model, or switching weight decay or clipping on or off (which
    changes the optimiser state's structure), cannot restore the checkpoints.
    """
    path = workdir / EXPERIMENT_FILE
    if not path.exists():
        return
    saved = json.loads(path.read_text())
    problems = ["task"] if saved.get("task") != cfg.task else []
    try:  # parsed, so that a field added since the run was saved compares as its default
        same_model = config_from_dict(saved["model"]) == cfg.model
    except (KeyError, TypeError, ValueError):
        same_model = False
    problems += [] if same_model else ["model"]
    problems += [f"train.{k} on/off" for k in ("weight_decay", "grad_clip")
                 if bool(saved.get("train", {}).get(k)) != bool(getattr(cfg.train, k))]
    if problems:
        raise InputError(f"{workdir} holds a run with a different {', '.join(problems)} than this config; "
                         "use a new workdir or the run's own config (see its experiment.json)")


@dataclasses.dataclass
class Run:
    """Everything a run computes before its state exists (see the resume order above)."""

    cfg: ExperimentConfig  # with data.tokenizer resolved to the warm-start source's vocabulary, if any
    workdir: Path
    mesh: Any
    tx: Any  # the optimiser
    init_random: Callable[[], state_lib.TrainState]  # born-sharded random init
    shardings: Any  # of the TrainState
    abstract: Any  # TrainState of ShapeDtypeStructs with shardings: the restore target
    source: Any  # the random-access data source
    tokenize: data_lib.Tokenize
    checkpointer: Checkpointer


def prepare(cfg: ExperimentConfig, workdir: Union[str, Path]) -> Run:
    """Steps 1-3 of the resume order: check the workdir, resolve the tokenizer, lay out the state."""
    task_named(cfg.task).check_start(cfg)
    workdir = check_workdir(workdir)
    check_resumable(workdir, cfg)
    tc = cfg.train
    mesh = sh.make_mesh(cfg.mesh)
    if tc.batch_size % sh.data_parallel_size(mesh):
        raise InputError(f"batch_size {tc.batch_size} is not divisible by the "
                         f"{sh.data_parallel_size(mesh)} data shards")
    source = data_lib.open_source(cfg)
    inherited = warm_start.inherited_tokenizer(tc.init_from, cfg.data.tokenizer)
    if inherited:
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, tokenizer=inherited))
    tokenize = data_lib.make_tokenize(cfg, data_lib.prepare_tokenizer(cfg, workdir, source))
    tx = state_lib.make_optimizer(tc)
    init_random, shardings, abstract = build_state(cfg, mesh, tx)
    checkpointer = Checkpointer(workdir, keep_last=tc.keep_last, keep_every=tc.keep_every,
                                async_save=tc.async_checkpoint)
    return Run(cfg, workdir, mesh, tx, init_random, shardings, abstract, source, tokenize, checkpointer)


# ----------------------------------------------------------------------------- 4-5: restore or initialise


def initialise(run: Run) -> state_lib.TrainState:
    """Step 5: the step-0 state, from ``train.init_from`` (the task's ``start``) or at random."""
    cfg = run.cfg
    if not cfg.train.init_from:
        return run.init_random()
    params = warm_start.initial_params(task_named(cfg.task).start, cfg.train.init_from, cfg.model)
    return state_from_params(params, cfg, run.tx, run.shardings)


def host_iterator(run: Run):
    """This process's data iterator: the rows of every global batch that its devices hold."""
    rows = host_rows(sh.batch_sharding(run.mesh), run.cfg.train.batch_size)
    return data_lib.make_iterator(run.cfg, run.source, run.tokenize, rows=rows)


def restore_or_initialise(run: Run) -> Tuple[state_lib.TrainState, Any]:
    """Steps 4-5: ``(state, data iterator)`` from the newest readable checkpoint, or fresh ones."""
    iterator = host_iterator(run)
    restored = run.checkpointer.restore(run.abstract, iterator, restart_if_corrupt=run.cfg.train.restart_if_corrupt)
    if restored is not None:
        state, _ = restored
        say(f"resumed from step {int(state.step)} in {run.checkpointer.directory}")
        return state, iterator
    # The failed restore attempts may have moved the iterator: start from a new one.
    return initialise(run), host_iterator(run)


# ----------------------------------------------------------------------------- the step loop


def _previewer(run: Run):
    if run.cfg.train.sample_every < 0:
        return None
    return family_of(run.cfg.model).previewer(run.cfg, run.workdir, run.source, run.tokenize)


def _preview(previewer, writer: MetricsWriter, state, step: int) -> None:
    t0 = time.perf_counter()
    path = previewer({"params": state.ema_params}, step)
    if path is not None:
        writer.image("samples", np.asarray(Image.open(path)), step)
        say(f"wrote {path} ({time.perf_counter() - t0:.1f}s)")


def _evaluate(evaluator: Evaluator, writer: MetricsWriter, state, step: int) -> None:
    t0 = time.perf_counter()
    metrics = evaluator(state.ema_params, step)
    writer.write(step, metrics)
    say(f"evaluation at step {step}: " + ", ".join(f"{k[len('eval/'):]} {v:.4g}" for k, v in metrics.items())
        + f" ({time.perf_counter() - t0:.1f}s)")


def run_steps(run: Run, state, iterator, experiment: Dict[str, Any],
              preemption: Optional[PreemptionWatch] = None, evaluator: Optional[Evaluator] = None) -> Dict[str, Any]:
    """Steps from ``state.step`` to ``train.steps``: log, checkpoint, preview and evaluate (``evaluator``,
    every ``eval.every`` steps) on their schedules, then save the last step and draw the final preview
    and evaluation. After a preemption notice (``preemption``) the loop saves the step it reached and
    returns early. Returns the run's summary."""
    cfg, tc = run.cfg, run.cfg.train
    preemption = preemption or PreemptionWatch()
    start = int(jax.device_get(state.step))
    say(f"{cfg.name or cfg.task}: {state_lib.param_count(state.params):,} parameters, mesh {dict(run.mesh.shape)}, "
        f"{jax.process_count()} process(es), global batch {tc.batch_size}, steps {start} -> {tc.steps}")
    log.info("largest arrays:\n%s", sh.describe(run.shardings.params, run.abstract.params))
    step_fn = sh.jit_step(task_named(cfg.task).train_step(cfg, run.tx, mesh=run.mesh), run.shardings, run.mesh)
    writer = MetricsWriter(run.workdir, resume_step=start, total_steps=tc.steps)
    previewer = _previewer(run)
    batch_sharding = sh.batch_sharding(run.mesh)
    throughput = Throughput(tc.batch_size, tc.steps)
    last: Dict[str, float] = {}
    done = start
    t_start = time.perf_counter()

    def save():
        run.checkpointer.save(state, iterator.get_state(), experiment)

    try:
        preempted = False
        for step in range(start, tc.steps):
            local = next(iterator)
            if example_log.isEnabledFor(logging.DEBUG):
                example_log.debug("step %d process %d example_id %s", step, jax.process_index(),
                                  " ".join(map(str, np.asarray(local["example_id"]).tolist())))
            batch = global_batch({k: v for k, v in local.items() if k in _BATCH_KEYS}, batch_sharding, tc.batch_size)
            if step == start:  # compile on every process, then start the collectives together
                step_fn = step_fn.lower(state, batch).compile()
                sh.wait_for_all_processes(f"first_step_{start}")
            state, metrics = step_fn(state, batch)
            done = step + 1
            if step == start:
                jax.block_until_ready(metrics)
                throughput.start(done)
                say(f"first step (including compilation) took {time.perf_counter() - t_start:.1f}s")
            if done % tc.log_every == 0 or done == tc.steps:
                last = {k: float(v) for k, v in jax.device_get(metrics).items()}
                last.update(throughput.report(done))
                writer.write(done, last)
                writer.console(done, last)
            if tc.checkpoint_every and done % tc.checkpoint_every == 0:
                save()
            if done < tc.steps and preemption.reached(done):
                preempted = True
                break
            if previewer is not None and tc.sample_every > 0 and done % tc.sample_every == 0:
                _preview(previewer, writer, state, done)
            if evaluator is not None and done % cfg.eval.every == 0:
                _evaluate(evaluator, writer, state, done)
                throughput.start(done)  # the evaluation's time is not training's

        save()
        if preempted:
            say(f"preempted: saved step {done} in {run.checkpointer.directory}; rerun the same command to continue")
        elif previewer is not None and (tc.sample_every == 0 or done % max(tc.sample_every, 1)) and done > start:
            _preview(previewer, writer, state, done)
        if not preempted and evaluator is not None and done % cfg.eval.every and done > start:
            _evaluate(evaluator, writer, state, done)
        writer.close()
    except BaseException:
        writer.abandon()  # the run's failure is reported, not a second one from closing the logs
        raise
    return {"step": done, "metrics": last, "skipped": int(jax.device_get(state.skipped)),
            "seconds": time.perf_counter() - t_start, "preempted": preempted}


# ----------------------------------------------------------------------------- the whole run


def train(cfg: ExperimentConfig, workdir: Union[str, Path],
          evaluator_factory: Optional[Callable[[Run], Optional[Evaluator]]] = None) -> Dict[str, Any]:
    """Train (or continue training) ``cfg`` in ``workdir``; returns a summary of the run.

    ``evaluator_factory(run)`` makes the periodic evaluation ``cfg.eval`` asks for (``experiments.train``
    passes ``glide_jax.evaluation.in_training.periodic_evaluator``; the training package cannot import
    the sampling pipeline an evaluation needs, so it is given from above)."""
    if cfg.eval.every and evaluator_factory is None:
        raise InputError("eval.every is set, but no evaluator was given to train(): pass "
                         "evaluator_factory=glide_jax.evaluation.in_training.periodic_evaluator "
                         "(experiments.train does)")
    sh.maybe_initialize_distributed()
    run = prepare(cfg, workdir)
    evaluator = evaluator_factory(run) if evaluator_factory is not None else None
    state, iterator = restore_or_initialise(run)
    experiment = config_to_dict(run.cfg)
    if jax.process_index() == 0:
        (run.workdir / EXPERIMENT_FILE).write_text(json.dumps(experiment, indent=2))
    try:
        with PreemptionWatch() as preemption:
            summary = run_steps(run, state, iterator, experiment, preemption, evaluator)
    except BaseException:
        run.checkpointer.abandon()  # the run's failure is the one reported, not the pending save's
        raise
    run.checkpointer.close()  # waits for the last asynchronous save
    return summary
