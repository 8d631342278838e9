"""Time to a correct image: ``python -m tools.benchmark quality``.

Sampling settings are chosen by what they cost and what they buy. For each
sampler at each step count, with and without a guidance interval, this
measures on the embedded models the share of held-out captions drawn
correctly (``projects.shapes.evaluate``: every image graded against its
caption), and the cost of one image three ways: model evaluations (one network
row per step, two where classifier-free guidance runs), seconds per image on
the embedded base (a warm batch of 16) and seconds per 64×64 image on the
full-size ``base`` with random weights (one image, warm loop).

Each measurement is one line of a JSON-lines file (``--out``), keyed by what
it measured, so a long run can be stopped and resumed (lines already there are
skipped, never rewritten) and the three kinds can be run at different times:
accuracy does not depend on a quiet machine, the timings do.
``--table`` prints the Markdown table of a results file instead.

The noise of an accuracy figure is measured, not assumed: ``--seeds 0 1``
grades the same setting on two independent draws.

``--model`` measures another base than the shipped one (a model directory, a
workdir, ``embedded-fast``), and ``--steps`` takes respacing specs as well as
counts (``trailing4``: the grid a progressively distilled student was trained
on). A guidance-distilled student (``unet.guidance_embed``) guides itself: it
costs one evaluation per step, guided or not.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import sys
import time
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

KINDS = ("accuracy", "embedded_time", "full_size_time")
DEFAULT_MODEL = "embedded-base"  # the base measured unless --model names another
TIMING_BATCH = 16  # images of the warm batch timed on the embedded base


@dataclasses.dataclass(frozen=True)
class Setting:
    """One row of the table: a sampler, its step count and the guidance interval (None = everywhere)."""

    sampler: str
    steps: Union[int, str]  # a step count or a respacing spec ("trailing4")
    interval: Optional[Tuple[float, float]]
    model: str = DEFAULT_MODEL  # the base sampled

    @property
    def name(self) -> str:
        where = "" if self.interval is None else f", guidance on {self.interval[0]:g}-{self.interval[1]:g}"
        model = "" if self.model == DEFAULT_MODEL else f"{self.model}: "
        return f"{model}{self.sampler} {self.steps}{where}"

    def key(self, kind: str, seed: int = 0) -> str:
        fields = [kind, self.sampler, self.steps, self.interval and list(self.interval), seed]
        return json.dumps(fields if self.model == DEFAULT_MODEL else fields + [self.model])


def grid(samplers: Sequence[str], steps: Sequence[Union[int, str]], interval: Optional[Tuple[float, float]],
         models: Sequence[str] = (DEFAULT_MODEL,)) -> List[Setting]:
    """Every model, sampler and step count, guidance everywhere first, then (if given) within ``interval``."""
    intervals = [None] if interval is None else [None, tuple(interval)]
    return [Setting(s, n, i, m) for m, i, s, n in itertools.product(models, intervals, samplers, steps)]


def evaluations_per_image(diffusion, setting: Setting, start: float, self_guided: bool = False) -> int:
    """Network rows one image costs: every step run counts 1, and 1 more where guidance runs its unconditional half
    (never for a ``self_guided`` student, which takes the guidance weight as an input).

    ``diffusion`` is the model's ``DiffusionConfig``; ``start`` < 1 is the truncated chain of a base with
    a canvas (the steps before it never run).
    """
    import numpy as np

    from glide_jax.diffusion.guidance import sdedit_start_index
    from glide_jax.diffusion.schedule import make_schedule
    from glide_jax.sampling.stages import guided_timesteps

    schedule = make_schedule(diffusion, respacing=str(setting.steps))
    n = schedule.num_timesteps
    first = n - 1 if start >= 1.0 else sdedit_start_index(n, start)
    timesteps = np.asarray(schedule.timestep_map)[: first + 1]
    if self_guided:
        return len(timesteps)
    if setting.interval is None:
        return 2 * len(timesteps)
    low, high = guided_timesteps(setting.interval, diffusion.steps)
    return len(timesteps) + int(np.sum((timesteps >= low) & (timesteps <= high)))


def _stage(pipe, setting: Setting):
    from glide_jax.sampling.options import BASE_DEFAULT, DEFAULT, resolve_stage

    recommended = resolve_stage(DEFAULT, pipe.base, BASE_DEFAULT)
    return dataclasses.replace(recommended, sampler=setting.sampler, steps=setting.steps,
                               guidance_interval=setting.interval)


def measure_accuracy(pipe, prompts: Sequence[str], setting: Setting, seed: int) -> Dict:
    from projects.shapes.evaluate import evaluate

    stage = _stage(pipe, setting)
    started = time.perf_counter()
    result = evaluate(pipe, prompts, seed=seed, base=stage, guidance_interval=setting.interval)
    summary = result["summary"]
    return {"correct": summary["accuracy"], "n": summary["n"], "attributes": summary["per_attribute"],
            "evaluations": evaluations_per_image(pipe.base.config.diffusion, setting, stage.start,
                                                 pipe.base.family.takes_guidance_weight(pipe.base.config)),
            "wall_s": round(time.perf_counter() - started, 1)}


def _timed_generate(pipe, prompts: Sequence[str], setting: Setting, stage) -> float:
    """Seconds per image of a warm call (the first call compiles the loop and is not counted)."""
    kwargs = dict(base=stage, upsample=None, guidance_interval=setting.interval, batch_size=len(prompts))
    pipe.generate(prompts, seed=1, **kwargs)
    started = time.perf_counter()
    pipe.generate(prompts, seed=2, **kwargs)
    return (time.perf_counter() - started) / len(prompts)


def measure_embedded_time(pipe, prompts: Sequence[str], setting: Setting) -> Dict:
    seconds = _timed_generate(pipe, list(prompts[:TIMING_BATCH]), setting, _stage(pipe, setting))
    return {"seconds_per_image": round(seconds, 4), "batch": TIMING_BATCH}


def full_size_pipeline():
    """The released ``base`` architecture with random weights and fixed tokens (cost only, not quality)."""
    from glide_jax.sampling.pipeline import LoadedModel, Pipeline
    from tools.benchmark_sample import FixedTokens, random_model

    config, params = random_model("base")
    return Pipeline(LoadedModel(config, params, FixedTokens()), None)


def measure_full_size_time(pipe, setting: Setting) -> Dict:
    from glide_jax.sampling.options import StageOptions

    stage = StageOptions(setting.sampler, setting.steps)
    seconds = _timed_generate(pipe, ["a corgi"], setting, stage)
    return {"seconds_per_image": round(seconds, 2),
            "evaluations": evaluations_per_image(pipe.base.config.diffusion, setting, 1.0)}


def read_results(path: Path) -> Dict[str, Dict]:
    results = {}
    if path.exists():
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if line.strip():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}:{number} is not a JSON line ({e.msg})") from None
                results[record["key"]] = record
    return results


def run(settings: Iterable[Setting], kinds: Sequence[str], seeds: Sequence[int], prompts_spec: str,
        out: Path, full_size_max_steps: int = 10) -> Dict[str, Dict]:
    """Measure every (kind, setting, seed) missing from ``out``, appending one line each as it finishes.

    The full-size base is timed only up to ``full_size_max_steps`` steps (a 50-step image takes minutes
    there); :func:`table` scales the others from the measured seconds per model evaluation.
    """
    from projects.shapes.evaluate import prompts_from

    settings = list(settings)
    results = read_results(out)
    prompts = prompts_from(prompts_spec)
    pipes = {}

    def pipe_for(kind, model):
        which = "full size" if kind == "full_size_time" else model
        if which not in pipes:
            if kind == "full_size_time":
                pipes[which] = full_size_pipeline()
            else:
                from glide_jax.sampling.loading import load_pipeline

                pipes[which] = load_pipeline(model, None)
        return pipes[which]

    for kind in kinds:
        for setting in settings:
            if kind == "full_size_time" and (setting.model != DEFAULT_MODEL or not isinstance(setting.steps, int)
                                              or setting.steps > full_size_max_steps):
                continue
            for seed in (seeds if kind == "accuracy" else [0]):
                key = setting.key(kind, seed)
                if key in results:
                    continue
                if kind == "accuracy":
                    record = measure_accuracy(pipe_for(kind, setting.model), prompts, setting, seed)
                    record["prompts"] = prompts_spec
                elif kind == "embedded_time":
                    record = measure_embedded_time(pipe_for(kind, setting.model), prompts, setting)
                else:
                    record = measure_full_size_time(pipe_for(kind, setting.model), setting)
                record = {"key": key, "kind": kind, "setting": setting.name, "seed": seed, **record}
                results[key] = record
                with out.open("a") as f:
                    f.write(json.dumps(record) + "\n")
                print(json.dumps(record), file=sys.stderr, flush=True)
    return results


def table(results: Dict[str, Dict], settings: Sequence[Setting], seeds: Sequence[int]) -> str:
    """The Markdown table: one row per setting, the accuracy per seed and the three costs."""
    from glide_jax.config import get_preset

    full_size_diffusion = get_preset("base").diffusion

    def value(kind, setting, field, seed=0, fmt="{}"):
        record = results.get(setting.key(kind, seed))
        return fmt.format(record[field]) if record else "–"

    def full_size(setting):
        """Measured seconds, else "≈" the same sampler and interval's measured seconds per evaluation, scaled."""
        record = results.get(setting.key("full_size_time"))
        if record:
            return f"{record['seconds_per_image']:.1f}"
        measured = [r for key, r in results.items() if r["kind"] == "full_size_time"
                    and json.loads(key)[1] == setting.sampler and json.loads(key)[3] == (
                        setting.interval and list(setting.interval))]
        if not measured:
            return "–"
        longest = max(measured, key=lambda r: r["evaluations"])
        evaluations = evaluations_per_image(full_size_diffusion, setting, 1.0)
        return f"≈{longest['seconds_per_image'] / longest['evaluations'] * evaluations:.0f}"

    head = (["setting", "model evaluations"] + [f"correct, seed {s}" for s in seeds]
            + [f"s/image, embedded (batch {TIMING_BATCH})", "s/image, full-size base"])
    lines = ["| " + " | ".join(head) + " |", "| --- |" + " ---: |" * (len(head) - 1)]
    for setting in settings:
        evaluations = next((results[setting.key(kind, seed)]["evaluations"] for kind in ("accuracy", "full_size_time")
                            for seed in seeds if setting.key(kind, seed) in results), "–")
        row = [setting.name, str(evaluations)]
        row += [value("accuracy", setting, "correct", seed, "{:.1%}") for seed in seeds]
        row += [value("embedded_time", setting, "seconds_per_image", fmt="{:.3f}"), full_size(setting)]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def add_arguments(parser) -> None:
    from glide_jax.diffusion.samplers import sampler_names
    from glide_jax.sampling.options import steps_value

    parser.add_argument("--samplers", nargs="+", default=["ddpm", "ddim", "dpm++2m", "unipc", "euler_a"],
                        choices=sampler_names(), help="samplers to measure")
    parser.add_argument("--steps", nargs="+", type=steps_value, default=[5, 10, 20, 50],
                        help="step counts (or respacing specs such as trailing4) to measure")
    parser.add_argument("--models", nargs="+", default=[DEFAULT_MODEL],
                        help="base models measured: names, model directories or workdirs (default: embedded-base)")
    parser.add_argument("--interval", nargs=2, type=float, default=[0.5, 1.0], metavar=("LOW", "HIGH"),
                        help="the guidance interval measured beside guidance everywhere (fractions, 1 = pure noise)")
    parser.add_argument("--no-interval", action="store_true", help="measure guidance everywhere only")
    parser.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS, help="what to measure")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0], help="accuracy draws per setting")
    parser.add_argument("--prompts", default="heldout:128", help="captions graded (projects.shapes.eval_shapes')")
    parser.add_argument("--full-size-max-steps", type=int, default=10,
                        help="time the full-size base only up to this many steps; the table scales the rest")
    parser.add_argument("--out", default="quality.jsonl", help="JSON-lines results file (appended, resumed)")
    parser.add_argument("--table", action="store_true", help="print the Markdown table of --out and stop")


def main(args) -> Dict:
    for steps in args.steps:
        if isinstance(steps, int) and steps < 1:
            raise ValueError(f"--steps must be >= 1, got {steps}")
    low, high = args.interval
    if not 0.0 <= low < high <= 1.0:
        raise ValueError(f"--interval must satisfy 0 <= LOW < HIGH <= 1, got {low:g} {high:g}")
    settings = grid(args.samplers, args.steps, None if args.no_interval else (low, high), args.models)
    out = Path(args.out)
    results = read_results(out) if args.table else run(settings, args.kinds, args.seeds, args.prompts, out,
                                                                args.full_size_max_steps)
    print(table(results, settings, args.seeds))
    return {"results": str(out), "measured": len(results)}
