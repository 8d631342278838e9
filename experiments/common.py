"""Command line shared by the training entry points.

``python -m experiments.train --config experiments/configs/<kind>.py:<variant>
--workdir DIR [--set key=value ...]`` loads the config (``get_config("<variant>")``
of the file; a file without variants is given as just its path), applies the
overrides (typed by the fields they replace) and runs ``glide_jax.train.loop.train``
for the config's task. ``python -m experiments.train_<task>`` (base, upsample,
inpaint, clip) is the same command that also checks the config is for that task. Rerunning the same command
resumes the run, also after a preemption (SIGTERM saves a checkpoint and exits 0).
Several processes (``python -m experiments.launch``, a TPU pod slice, SLURM) run
the same command each; only process 0 prints. Everything runs inside :func:`glide_jax.errors.run_command`:
a bad config, workdir or checkpoint ends in ``error: ...`` and exit status 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import List, Optional

from glide_jax.errors import InputError
from glide_jax.errors import run_command
from glide_jax.evaluation.in_training import periodic_evaluator
from glide_jax.runtime import enable_compilation_cache
from glide_jax.train.experiment import apply_overrides, load_config_file
from glide_jax.train.tasks import task_named


def build_parser(task: Optional[str], description: str) -> argparse.ArgumentParser:
    """The command line of ``experiments.train`` (``task`` None) or of its alias ``experiments.train_<task>``."""
    prog = "python -m experiments.train" + (f"_{task}" if task else "")
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--config", required=True,
                        help="config file and variant, e.g. experiments/configs/base.py:tiny")
    parser.add_argument("--workdir", required=True, help="run directory; rerunning with the same one resumes")
    parser.add_argument("--set", dest="overrides", action="append", nargs="+", default=[], metavar="KEY=VALUE",
                        help="override config fields, e.g. --set train.lr=1e-4 model.unet.dtype=bfloat16")
    parser.add_argument("--log-level", default="WARNING", type=str.upper,
                        choices=["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"], help="Python logging level")
    parser.add_argument("--log-example-ids", action="store_true",
                        help="log, per step and process, the ids of the examples it reads (to check data sharding)")
    return parser


class CurrentStderrHandler(logging.StreamHandler):
    """Writes each record to ``sys.stderr`` as it is when the record is emitted, so a caller that swaps the
    stream (a test capturing output, a notebook) never leaves the handler writing to a closed one."""

    def __init__(self):
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler assigns it; the current sys.stderr is always used
        pass


def main(task: Optional[str], description: str, argv: Optional[List[str]] = None) -> int:
    """Train the config given on the command line; ``task``: the task the config must have (None: any)."""
    args = build_parser(task, description).parse_args(argv)
    # One handler of ours, replacing any a library imported above (absl, through the data readers) put on the
    # root logger, which would make basicConfig a no-op and these lines come out in another format.
    handler = CurrentStderrHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=getattr(logging, args.log_level.upper()), handlers=[handler], force=True)
    try:
        from absl import logging as absl_logging  # Orbax logs every save at INFO through absl

        absl_logging.set_verbosity(args.log_level.lower())
    except ImportError:
        pass
    if args.log_example_ids:
        logging.getLogger("glide_jax.train.examples").setLevel(logging.DEBUG)
    enable_compilation_cache()
    return run_command(lambda: _train(task, args))


def _train(task: Optional[str], args) -> int:
    """Load and check the config, then train; anticipated failures end in ``error: ...`` (``run_command``)."""
    try:
        cfg = apply_overrides(load_config_file(args.config), [o for group in args.overrides for o in group])
    except TypeError as e:  # a value of the wrong type for its field
        raise InputError(f"{args.config}: {e}") from None
    if task is not None and cfg.task != task:
        raise InputError(f"{args.config} configures task {cfg.task!r}; use experiments.train "
                         f"(or experiments.train_{cfg.task})")
    task_named(cfg.task).check_start(cfg)  # e.g. inpainting refuses to start without train.init_from
    from glide_jax.train.loop import train

    summary = train(cfg, args.workdir, evaluator_factory=periodic_evaluator)
    import jax

    if jax.process_index() == 0:
        print(f"{'preempted' if summary['preempted'] else 'done'}: step {summary['step']}", flush=True)
    return 0
