"""What each tab does with one request: form values in, images with their seed and index out.

Plain functions over :class:`~glide_jax.demo.models.DemoModels`, so they are
tested without a browser; the page (:mod:`.app`) only converts Gradio's values
and shows what these return. Bad input raises ``ValueError`` with a sentence the
page shows as it is; input that is accepted but probably not meant comes back
as ``warnings`` (the library's ``InputWarning`` messages).

Every request samples its images one per batch, so one compiled loop serves
every number of images, and image ``index`` of a request with ``seed`` is
bit for bit the image ``glide-jax generate PROMPT --seed SEED --first-index
INDEX`` writes with the same settings (an image depends only on its seed and
index; ``--n 1`` is one image per batch too).
"""

from __future__ import annotations

import dataclasses
import io
import time
import warnings
from typing import List, Optional, Tuple

import numpy as np
from PIL import Image

from glide_jax.demo.models import DemoModels
from glide_jax.errors import InputError, InputWarning
from glide_jax.sampling.options import BASE_DEFAULT, DEFAULT, stage_with
from glide_jax.sampling.pipeline import Pipeline, make_key
from glide_jax.sampling.request import GenerateRequest
from glide_jax.sampling.rewrites import explain_all

MAX_IMAGES = 8  # per request: the queue serves one request at a time, so one visitor cannot hold it for long
# Steps cost time, not programs: the sampling loop compiles once per sampler and image size whatever the step
# count (diffusion.samplers). What still makes a program is bounded: the samplers of the menu, the tabs' image
# sizes, upsampling on or off, guidance on or off, and the candidates per image (each count its own batch).
MAX_STEPS = 1000  # the diffusion schedules have 1000 timesteps
MAX_CANDIDATES = 8  # the slider's range; each count compiles its own batch of candidates
MAX_UPLOAD_PIXELS = 4096 * 4096  # larger pictures are refused from their header, before anything is decoded
UPLOAD_HINT = "upload a PNG, JPEG, WebP or BMP picture"


@dataclasses.dataclass(frozen=True)
class GenerateForm:
    """The Generate tab's form (what the page sends; ``generate`` turns it into a ``GenerateRequest``)."""

    prompt: str
    negative_prompt: str = ""  # "" = GLIDE's empty caption as the unconditional half
    n: int = 1  # images
    seed: int = 0  # image i is drawn from fold_in(key(seed), i)
    guidance: Optional[float] = None  # classifier-free guidance scale; None = the model's recommendation
    sampler: Optional[str] = None  # None = the model's recommendation
    steps: Optional[int] = None  # None = the model's recommendation
    upsample: bool = True  # run the upsampler (if the server has one)
    candidates: int = 1  # > 1: draw this many per image and keep the CLIP-best (needs --clip-model)


@dataclasses.dataclass(frozen=True)
class EditForm:
    """The Edit tab's form: a sketch or photo re-drawn as the prompt (SDEdit)."""

    prompt: str
    image: np.ndarray  # uint8 [H, W, 3 or 4]
    strength: float = 0.7  # fraction of the chain re-run: 1 ignores the sketch, near 0 keeps it
    n: int = 1
    seed: int = 0
    guidance: Optional[float] = None
    upsample: bool = True


@dataclasses.dataclass(frozen=True)
class InpaintForm:
    """The Inpaint tab's form."""

    prompt: str
    image: np.ndarray  # uint8 [H, W, 3 or 4]
    mask: np.ndarray  # bool [H, W]: True = keep, False = paint anew
    n: int = 1
    seed: int = 0
    guidance: Optional[float] = None
    upsample: bool = True


@dataclasses.dataclass
class Outcome:
    """One request's answer."""

    images: List[Tuple[np.ndarray, str]]  # (uint8 image, "seed S, index I") in order
    warnings: List[str]  # InputWarning messages raised while sampling
    notes: List[str]  # prompt rewrites the model applied
    seconds: float  # wall time of the request
    original: Optional[np.ndarray] = None  # the edited or inpainted image as the model saw it (cropped, square)


def _prompt(text) -> str:
    text = "" if text is None else str(text)
    if not text.strip():
        raise InputError("the prompt is empty: type what to draw, e.g. 'a red circle'")
    return text.strip()


def _integer(value, name: str, low: int, high: int) -> int:
    if value is None or isinstance(value, bool) or float(value) != int(float(value)):
        raise InputError(f"{name} must be a whole number in [{low}, {high}], got {value!r}")
    value = int(float(value))
    if not low <= value <= high:
        raise InputError(f"{name} must be in [{low}, {high}], got {value}")
    return value


def _seed(value) -> int:
    seed = _integer(value, "seed", 0, 2 ** 32 - 1)
    make_key(seed)
    return seed


def square_rgb(image, what: str) -> Tuple[np.ndarray, List[str]]:
    """``image`` as uint8 RGB cropped to its centre square (with a warning saying so)."""
    if image is None:
        raise InputError(f"no {what}: upload or draw one first")
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=-1)
    if arr.ndim != 3 or arr.shape[-1] not in (3, 4) or arr.dtype != np.uint8:
        raise InputError(f"the {what} must be an 8-bit RGB or RGBA picture, got an array of shape {arr.shape} "
                         f"and type {arr.dtype}")
    if arr.shape[-1] == 4:  # transparent pixels become white, as on the page
        alpha = arr[..., 3:].astype(np.float32) / 255.0
        arr = np.round(arr[..., :3] * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)
    height, width = arr.shape[:2]
    if min(height, width) < 8:
        raise InputError(f"the {what} is {width}x{height} pixels; give one at least 8 pixels on each side")
    notes = []
    if height != width:
        side = min(height, width)
        top, left = (height - side) // 2, (width - side) // 2
        arr = arr[top: top + side, left: left + side]
        notes.append(f"the {what} is {width}x{height}; the model draws squares, so its centre {side}x{side} "
                     "was used")
    return np.ascontiguousarray(arr), notes


def check_upload(source, what: str, name: Optional[str] = None) -> None:
    """Refuse an uploaded file that is not a picture, or that declares too many pixels, from its header.

    ``source`` is the file's bytes or its path on the server; the message names the file by ``name``
    (what the visitor called it), never by the server's temporary path, and nothing is decoded yet.
    """
    called = f"the {what}" + (f" {name!r}" if name else "")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the pixel count is checked below
            opened = Image.open(io.BytesIO(source) if isinstance(source, (bytes, bytearray, memoryview)) else source)
            with opened:
                width, height = opened.size
    except Image.DecompressionBombError:
        raise InputError(f"{called} declares more pixels than can be decoded safely; {UPLOAD_HINT} of at most "
                         f"{MAX_UPLOAD_PIXELS:,} pixels") from None
    except (OSError, SyntaxError, ValueError):
        raise InputError(f"{called} is not a picture this page can read; {UPLOAD_HINT}") from None
    if width * height > MAX_UPLOAD_PIXELS:
        raise InputError(f"{called} is {width}x{height} pixels; the page takes pictures of at most "
                         f"{MAX_UPLOAD_PIXELS:,} pixels (4096x4096): make it smaller first")


def _crop_like(mask: np.ndarray, shape) -> np.ndarray:
    height, width = mask.shape
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    cropped = mask[top: top + side, left: left + side]
    if cropped.shape != tuple(shape[:2]):
        raise InputError(f"the mask is {width}x{height} but the image is {shape[1]}x{shape[0]}; paint on the image "
                         "itself")
    return cropped


def base_options(pipe: Pipeline, sampler: Optional[str], steps: Optional[int]):
    """The base stage's options: the model's recommendation with the form's sampler and steps put in."""
    if steps is not None:
        steps = _integer(steps, "steps", 1, MAX_STEPS)
    options = stage_with(pipe.base, BASE_DEFAULT, sampler=sampler, steps=steps)
    if options != DEFAULT:
        options.validate("base")
    return options


def _run(pipe: Pipeline, prompt: str, n, seed, extra_notes: List[str], original=None, **kwargs) -> Outcome:
    """``pipe.generate`` on ``n`` copies of the prompt, one per batch, its warnings and rewrites collected."""
    started = time.perf_counter()
    n = _integer(n, "the number of images", 1, MAX_IMAGES)
    seed = _seed(seed)
    notes = [f"drawn as {said!r}" + "".join(f" ({why})" for why in reasons)
             for _, said, reasons in explain_all(pipe.prompt_rewriter, [prompt])]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", InputWarning)
        samples = pipe.generate(GenerateRequest((prompt,) * n, seed=seed, batch_size=1, **kwargs), progress=True)
    said = extra_notes + [str(w.message) for w in caught if issubclass(w.category, InputWarning)]
    images = [(samples[index], f"seed {seed}, index {index}") for index in range(n)]
    return Outcome(images, said, notes, time.perf_counter() - started, original)


def _guidance(value) -> Optional[float]:
    return None if value is None else float(value)


def _upsample(pipe: Pipeline, wanted: bool):
    return DEFAULT if wanted and pipe.upsampler is not None else None


def generate(models: DemoModels, request: GenerateForm) -> Outcome:
    """Text to images."""
    pipe = models.generate
    prompt = _prompt(request.prompt)
    candidates = _integer(request.candidates, "candidates", 1, MAX_CANDIDATES)
    return _run(pipe, prompt, request.n, request.seed, [], guidance_scale=_guidance(request.guidance),
                base=base_options(pipe, request.sampler, request.steps),
                upsample=_upsample(pipe, request.upsample), negative_prompt=(request.negative_prompt or "").strip()
                or None, candidates=candidates)


def edit(models: DemoModels, request: EditForm) -> Outcome:
    """A sketch or photo re-drawn as the prompt."""
    prompt = _prompt(request.prompt)
    image, notes = square_rgb(request.image, "sketch")
    return _run(models.generate, prompt, request.n, request.seed, notes, original=image,
                guidance_scale=_guidance(request.guidance), upsample=_upsample(models.generate, request.upsample),
                init_image=image, strength=float(request.strength))


def inpaint(models: DemoModels, request: InpaintForm) -> Outcome:
    """The unmasked region of an image painted anew from the prompt."""
    if models.inpaint is None:
        raise InputError("this server has no inpainting model: start it with --model embedded or --model openai")
    prompt = _prompt(request.prompt)
    image, notes = square_rgb(request.image, "image")
    if request.mask is None:
        raise InputError("no mask: paint over the region to replace")
    keep = _crop_like(np.asarray(request.mask, bool), image.shape)
    if keep.all():
        raise InputError("the mask covers nothing: paint over the part of the image to replace with the brush")
    if not keep.any():
        notes.append("the mask covers the whole image, so nothing of it is kept: this is plain generation")
    pipe = models.inpaint
    return _run(pipe, prompt, request.n, request.seed, notes, original=image,
                guidance_scale=_guidance(request.guidance), upsample=_upsample(pipe, request.upsample),
                inpaint_image=image, inpaint_mask=keep)
