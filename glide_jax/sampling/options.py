"""How one stage samples (``StageOptions``), the package defaults, and "the model's recommendation".

A model may recommend its own settings (its directory's ``sampling.json``, see
:mod:`glide_jax.sampling.advice`); callers that pass ``DEFAULT`` get that
recommendation, else the package defaults below.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Optional, Tuple, Union

from glide_jax.diffusion.sampler_registry import sampler_names
from glide_jax.errors import InputError


@dataclasses.dataclass(frozen=True)
class StageOptions:
    """How one stage samples: sampler name, step count (or respacing spec) and noise temperature.

    ``start`` < 1 truncates text-to-image sampling of the base stage: instead of
    pure noise at the last timestep, the chain starts ``start`` of the way along
    from the plain ``canvas`` colour (RGB 0-255) noised to that point, exactly as
    an edit of a blank canvas would. It is for small models whose noise
    prediction at near-zero signal is too imprecise to be trusted: there the
    implied image estimate is amplified by ``1/sqrt(alpha_bar)`` (about 2e4 at
    the cosine schedule's last step), and an error of a few percent becomes a
    saturated colour cast that later steps keep. Starting where the model is
    accurate, from the data's own background, removes that cast. Editing
    (``init_image``) and inpainting start as usual.

    For the upsampler, ``start`` < 1 starts from its own low-resolution input,
    enlarged (bilinear) and noised to that point -- the super-resolution
    analogue: the colours and layout are already known, so an under-trained
    upsampler need not rediscover them from noise. It needs no canvas.

    ``guidance_interval`` ``(low, high)`` applies classifier-free guidance only
    on that part of the base chain (fractions, 1 = pure noise) and runs the
    conditional half alone elsewhere, so those steps cost half; None guides
    every step. It is part of the stage because what it buys was measured per
    sampler and step count (docs/benchmarks.md, "Time to a correct image").
    """

    sampler: str = "ddpm"
    steps: Union[int, str] = 100
    temperature: float = 1.0
    eta: float = 0.0
    start: float = 1.0
    canvas: Optional[Tuple[int, int, int]] = None
    guidance_interval: Optional[Tuple[float, float]] = None

    def __post_init__(self):
        if self.canvas is not None:
            object.__setattr__(self, "canvas", tuple(self.canvas))  # JSON gives a list
        if self.guidance_interval is not None:
            object.__setattr__(self, "guidance_interval", check_interval(self.guidance_interval))

    def validate(self, stage: str):
        if self.sampler not in sampler_names():
            raise InputError(f"{stage}: unknown sampler {self.sampler!r}; choose one of {', '.join(sampler_names())}")
        if isinstance(self.steps, int) and self.steps < 1:
            raise InputError(f"{stage}: steps must be >= 1, got {self.steps}")
        if not 0.0 < self.temperature <= 2.0:
            raise InputError(f"{stage}: temperature must be in (0, 2], got {self.temperature}")
        if not 0.0 < self.start <= 1.0:
            raise InputError(f"{stage}: start must be in (0, 1], got {self.start}")
        if self.canvas is not None and (len(self.canvas) != 3 or not all(
                isinstance(v, int) and 0 <= v <= 255 for v in self.canvas)):
            raise InputError(f"{stage}: canvas must be three integers in [0, 255] (RGB), got {self.canvas!r}")
        if stage == "upsample" and self.canvas is not None:
            raise InputError("upsample: canvas is for the base stage; the upsampler starts from its low-res input")
        if stage == "upsample" and self.guidance_interval is not None:
            raise InputError("upsample: guidance_interval is for the base stage; the upsampler is not guided")
        if stage != "upsample" and self.start < 1.0 and self.canvas is None:
            raise InputError(f"{stage}: start={self.start} needs a canvas colour to start from")

    @property
    def respacing(self) -> str:
        return str(self.steps)

    @classmethod
    def from_dict(cls, d: dict) -> "StageOptions":
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise InputError(f"unknown sampling settings {sorted(unknown)}")
        return cls(**d)


# The base default is the reference's ancestral sampler on 20 of its 100 steps: on GLIDE's
# architecture (learned variances) it was the most accurate sampler at 20 steps, ahead of
# DPM-Solver++(2M), UniPC and DDIM at every step count up to 50, from pure noise as well as from a
# truncated chain (docs/benchmarks.md, "Time to a correct image"). The upsampler keeps DPM-Solver++(2M) on 6
# steps at temperature 0.997. The reference notebooks' settings remain one argument away:
# StageOptions("ddpm", 100) and StageOptions("ddpm", "fast27", 0.997).
BASE_DEFAULT = StageOptions("ddpm", 20)
UPSAMPLE_DEFAULT = StageOptions("dpm++2m", 6, 0.997)
GUIDANCE_DEFAULT = 3.0
# Stage options meaning "what this model recommends" (LoadedModel.sampling), else the defaults above.
DEFAULT = "default"


def guided_part(interval, stage: StageOptions) -> Optional[Tuple[float, float]]:
    """The interval guidance runs on: ``interval`` if given, else the stage's; None (or all of 0-1) = every step."""
    interval = stage.guidance_interval if interval is None else check_interval(interval)
    return None if interval == (0.0, 1.0) else interval


def check_interval(interval) -> Tuple[float, float]:
    """A guidance interval as ``(low, high)`` floats with 0 <= low < high <= 1, or ValueError naming it."""
    try:
        low, high = (float(v) for v in interval)
    except (TypeError, ValueError):
        raise InputError(f"guidance_interval must be two fractions (low, high), got {interval!r}") from None
    if not 0.0 <= low < high <= 1.0:
        raise InputError(f"guidance_interval must satisfy 0 <= low < high <= 1 (fractions of the chain, "
                         f"1 = pure noise), got ({low}, {high})")
    return low, high


_NAMED_SPACING = re.compile(r"(ddim|trailing|logsnr|karras)(\d+)(:\d+)?")


def steps_value(steps):
    """A ``steps`` setting as written (``"20"``, ``20``, ``"trailing4:875"``): whole numbers as ints, any other
    text stripped, as a respacing spec that is checked when its schedule is made."""
    if isinstance(steps, str):
        text = steps.strip()
        return int(text) if re.fullmatch(r"[+-]?\d+", text) else text
    return steps


def step_count(steps) -> Optional[int]:
    """The number of steps of ``steps`` (a count, or a named spacing such as ``"trailing4:875"``), else None."""
    if isinstance(steps, int):
        return steps
    match = _NAMED_SPACING.fullmatch(str(steps).strip())
    return int(match.group(2)) if match else None


def with_count(recommended, count: int):
    """``count`` steps on the recommended spacing: a model that recommends a named spacing (a distilled
    student's ``"trailing4:875"``, the grid it was trained on) keeps it, with ``count`` steps."""
    match = _NAMED_SPACING.fullmatch(str(recommended).strip()) if isinstance(recommended, str) else None
    return f"{match.group(1)}{count}{match.group(3) or ''}" if match else count


def stage_with(model, fallback: StageOptions, *, sampler: Optional[str] = None, steps=None,
               temperature: Optional[float] = None, start: Optional[float] = None):
    """The model's recommended options (else ``fallback``) with the given settings put in; ``DEFAULT`` when
    nothing is given. What the CLI's flags and the demo's controls both make of a sampler or step count.
    ``steps`` may be text (``"20"``, ``"trailing20"``): whole numbers become ints, and a whole number on a
    model that recommends a named spacing keeps that spacing (:func:`with_count`)."""
    if sampler in (None, "") and steps in (None, "") and temperature is None and start is None:
        return DEFAULT
    base = model.sampling if model is not None and model.sampling is not None else fallback
    steps = steps_value(steps)
    if isinstance(steps, int):
        steps = with_count(base.steps, steps)
    return dataclasses.replace(base, sampler=sampler or base.sampler, steps=base.steps if steps in (None, "") else steps,
                               temperature=base.temperature if temperature is None else temperature,
                               start=base.start if start is None else start)


def resolve_stage(opts, model, fallback: StageOptions) -> StageOptions:
    """``opts`` itself, or for ``DEFAULT`` the ``model``'s recommended options (else ``fallback``)."""
    if isinstance(opts, str) and opts == DEFAULT:
        return model.sampling if model is not None and model.sampling is not None else fallback
    if not isinstance(opts, StageOptions):
        raise InputError(f"stage options must be StageOptions or {DEFAULT!r}, got {opts!r}")
    return opts
