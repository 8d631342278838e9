"""Text → 64 → 256 sampling, inpainting, sketch editing and CLIP guidance in one call.

``Pipeline`` holds the loaded models (base, optional upsampler, optional
noise-aware CLIP) and their tokenizers; ``Pipeline.generate`` is what the CLI,
the notebooks and ``glide_jax.sample`` call. It validates every input up front,
encodes the captions once, runs each stage as one compiled sampling loop
(``glide_jax.diffusion.samplers``) and returns uint8 images.

Conventions: masks are 1 where the given image is kept and 0 where the model
fills in (GLIDE's convention); classifier-free guidance uses the batch layout
``[cond..., uncond...]`` with the empty caption as unconditional input.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional, Sequence, Tuple, Union

import jax
import jax.numpy as jnp
import numpy as np

from glide_jax.sampling import images as I
from glide_jax.config import ClipConfig, ModelConfig
from glide_jax.diffusion import guidance as G
from glide_jax.diffusion.samplers import SAMPLERS, sample_loop
from glide_jax.diffusion.schedule import make_schedule
from glide_jax.sampling.networks import clip_grad_fn, unet_model_fn
from glide_jax.sampling.progress import ProgressBar


@dataclasses.dataclass
class LoadedModel:
    """A diffusion model (or CLIP) ready to sample: config, parameters and its tokenizer.

    ``sampling`` and ``guidance_scale`` are the settings recommended for this model
    (a model directory's ``sampling.json``), used wherever a caller asks for the
    defaults; None falls back to the package's defaults. ``relations`` lists the
    relations of the shapes grammar the model was trained on, when that was a subset
    (its ``training.json`` or a workdir's ``experiment.json``); ``Pipeline.generate``
    restates captions into them.
    """

    config: Union[ModelConfig, ClipConfig]
    params: Any
    tokenizer: Any
    sampling: Optional["StageOptions"] = None
    guidance_scale: Optional[float] = None
    relations: Optional[Tuple[str, ...]] = None  # shapes relations it was trained on (None: all, or not a shapes model)

    def tokens(self, prompts: Sequence[str]):
        if isinstance(self.config, ClipConfig):
            from glide_jax.tokenizers import clip_lengths

            tokens, extra = self.tokenizer.encode_batch(list(prompts), self.config.max_text_len)
            return tokens, clip_lengths(extra)
        return self.tokenizer.encode_batch(list(prompts), self.config.unet.text.text_ctx)


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
    """

    sampler: str = "ddpm"
    steps: Union[int, str] = 100
    temperature: float = 1.0
    eta: float = 0.0
    start: float = 1.0
    canvas: Optional[Tuple[int, int, int]] = None

    def __post_init__(self):
        if self.canvas is not None:
            object.__setattr__(self, "canvas", tuple(self.canvas))  # JSON gives a list

    def validate(self, stage: str):
        if self.sampler not in SAMPLERS:
            raise ValueError(f"{stage}: unknown sampler {self.sampler!r}; choose one of {', '.join(SAMPLERS)}")
        if isinstance(self.steps, int) and self.steps < 1:
            raise ValueError(f"{stage}: steps must be >= 1, got {self.steps}")
        if not 0.0 < self.temperature <= 2.0:
            raise ValueError(f"{stage}: temperature must be in (0, 2], got {self.temperature}")
        if not 0.0 < self.start <= 1.0:
            raise ValueError(f"{stage}: start must be in (0, 1], got {self.start}")
        if self.canvas is not None and (len(self.canvas) != 3 or not all(
                isinstance(v, int) and 0 <= v <= 255 for v in self.canvas)):
            raise ValueError(f"{stage}: canvas must be three integers in [0, 255] (RGB), got {self.canvas!r}")
        if stage == "upsample" and self.canvas is not None:
            raise ValueError("upsample: canvas is for the base stage; the upsampler starts from its low-res input")
        if stage != "upsample" and self.start < 1.0 and self.canvas is None:
            raise ValueError(f"{stage}: start={self.start} needs a canvas colour to start from")

    @property
    def respacing(self) -> str:
        return str(self.steps)

    @classmethod
    def from_dict(cls, d: dict) -> "StageOptions":
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown sampling settings {sorted(unknown)}")
        return cls(**d)


# Defaults trade the reference notebooks' settings (100 ancestral steps for the base model, the
# upsampler's fast27 schedule at temperature 0.997) for DPM-Solver++(2M), a second-order solver that
# reaches comparable samples in ~20 guided steps; the strongly conditioned upsampler needs fewer.
# On a 2-core CPU this brings one 256x256 image from ~6 minutes to under two. The reference settings
# remain one argument away: StageOptions("ddpm", 100) and StageOptions("ddpm", "fast27", 0.997).
BASE_DEFAULT = StageOptions("dpm++2m", 20)
UPSAMPLE_DEFAULT = StageOptions("dpm++2m", 6, 0.997)
GUIDANCE_DEFAULT = 3.0
# Stage options meaning "what this model recommends" (LoadedModel.sampling), else the defaults above.
DEFAULT = "default"


def read_sampling(directory) -> tuple:
    """``(StageOptions or None, guidance scale or None)`` from a model directory's ``sampling.json``."""
    import json
    from pathlib import Path

    path = Path(directory) / "sampling.json"
    if not path.exists():
        return None, None
    d = dict(json.loads(path.read_text()))
    guidance = d.pop("guidance_scale", None)
    return StageOptions.from_dict(d), guidance


def resolve_stage(opts, model: Optional[LoadedModel], fallback: StageOptions) -> StageOptions:
    if isinstance(opts, str) and opts == DEFAULT:
        return (model.sampling if model is not None and model.sampling is not None else fallback)
    if not isinstance(opts, StageOptions):
        raise ValueError(f"stage options must be StageOptions or {DEFAULT!r}, got {opts!r}")
    return opts


def _check_prompts(prompts) -> list:
    if isinstance(prompts, str):
        prompts = [prompts]
    prompts = list(prompts)
    if not prompts:
        raise ValueError("prompts is empty: give at least one caption")
    bad = [p for p in prompts if not isinstance(p, str)]
    if bad:
        raise ValueError(f"prompts must be strings, got {type(bad[0]).__name__}")
    return prompts


def _batched(image: Optional[np.ndarray], n: int) -> Optional[np.ndarray]:
    if image is None:
        return None
    return np.broadcast_to(image, (n,) + image.shape[-3:]) if image.ndim == 3 else image


class Pipeline:
    """GLIDE's sampling pipeline over loaded models; see ``generate``."""

    def __init__(self, base: LoadedModel, upsampler: Optional[LoadedModel] = None, clip: Optional[LoadedModel] = None):
        if base.config.unet.super_res:
            raise ValueError("the base model must not be a super-resolution model")
        if upsampler is not None and not upsampler.config.unet.super_res:
            raise ValueError("the upsampler must be a super-resolution model")
        self.base, self.upsampler, self.clip = base, upsampler, clip

    def restated(self, prompts: Sequence[str]) -> list:
        """``prompts`` as ``generate`` samples them: a shapes caption whose relation the base never
        saw but whose converse it did is said the other way round ("A to the right of B" as "B to the
        left of A"; ``shapes.restate``), the same scene in words the model was trained on."""
        from glide_jax.data import shapes

        relations = self.base.relations
        return [shapes.restate(p, relations) for p in prompts] if relations else list(prompts)

    # ------------------------------------------------------------------ stages
    def _base_stage(self, prompts, key, scale, opts: StageOptions, init=None, strength=None, inpaint=None,
                    clip_scale=None, progress=None):
        m = self.base
        cfg = m.config.unet
        b = len(prompts)
        use_cfg = scale != 1.0 and clip_scale is None
        rows = prompts + [""] * b if use_cfg else prompts
        tokens, mask = m.tokens(rows)
        cond = {}
        denoised_fn = None
        if cfg.inpaint or inpaint is not None:
            if inpaint is None:
                raise ValueError("this is an inpainting model: give inpaint_image and inpaint_mask")
            if not cfg.inpaint:
                raise ValueError("the base model is not an inpainting model; load base-inpaint for inpainting")
            image, msk = inpaint
            reps = 2 if use_cfg else 1
            cond = {"inpaint_image": np.concatenate([image] * reps), "inpaint_mask": np.concatenate([msk] * reps)}
            denoised_fn = G.inpaint_denoised_fn(cond["inpaint_image"], cond["inpaint_mask"])
        model_fn = unet_model_fn(cfg, m.params, tokens, mask, **cond)
        if use_cfg:
            model_fn = G.classifier_free_guidance(model_fn, scale)
        cond_fn = None
        if clip_scale is not None:
            if self.clip is None:
                raise ValueError("CLIP guidance needs a CLIP model: load the pipeline with clip=...")
            ctoks, clens = self.clip.tokens(prompts)
            cond_fn = G.clip_guidance(clip_grad_fn(self.clip.config, self.clip.params, ctoks, clens, cfg.image_size),
                                      clip_scale)
        schedule = make_schedule(m.config.diffusion, respacing=opts.respacing)
        shape = (len(rows), cfg.image_size, cfg.image_size, 3)
        x_T, start = None, None
        key_init, key_loop = jax.random.split(key)
        if init is not None:
            init_rows = np.concatenate([init] * (2 if use_cfg else 1))
            start, x_T = G.sdedit_start(schedule, init_rows, strength, key=key_init)
        out = sample_loop(schedule, model_fn, None if x_T is not None else shape, sampler=opts.sampler, key=key_loop,
                          x_T=x_T, start_index=start, eta=opts.eta, temperature=opts.temperature,
                          denoised_fn=denoised_fn, cond_fn=cond_fn, progress=progress)
        return out[:b]

    def _upsample_stage(self, prompts, low_res, key, opts: StageOptions, inpaint=None, progress=None):
        m = self.upsampler
        cfg = m.config.unet
        tokens, mask = m.tokens(prompts)
        low_res = np.asarray(I.to_model(I.to_uint8(low_res)))  # quantise to 8 bits like the reference
        cond = {"low_res": low_res}
        denoised_fn = None
        if cfg.inpaint and inpaint is None:
            raise ValueError("the upsampler is an inpainting model: give inpaint_image and inpaint_mask")
        if inpaint is not None:
            # The known pixels are pasted into every x0 prediction with any upsampler; an inpainting
            # upsampler also sees them (and the mask) as input channels.
            if cfg.inpaint:
                cond.update(inpaint_image=inpaint[0], inpaint_mask=inpaint[1])
            denoised_fn = G.inpaint_denoised_fn(*inpaint)
        model_fn = unet_model_fn(cfg, m.params, tokens, mask, **cond)
        schedule = make_schedule(m.config.diffusion, respacing=opts.respacing)
        shape = (len(prompts), cfg.image_size, cfg.image_size, 3)
        x_T = start = None
        if opts.start < 1.0:
            key_init, key = jax.random.split(key)
            enlarged = jax.image.resize(jnp.asarray(low_res), shape, "linear")
            start, x_T = G.sdedit_start(schedule, enlarged, opts.start, key=key_init)
        return sample_loop(schedule, model_fn, None if x_T is not None else shape, sampler=opts.sampler, key=key,
                           x_T=x_T, start_index=start, eta=opts.eta, temperature=opts.temperature,
                           denoised_fn=denoised_fn, progress=progress)

    # ------------------------------------------------------------------ public
    def generate(
        self,
        prompts: Union[str, Sequence[str]],
        *,
        seed: Union[int, jax.Array] = 0,
        guidance_scale: Optional[float] = None,
        base: Union[StageOptions, str] = DEFAULT,
        upsample: Union[StageOptions, str, None] = DEFAULT,
        batch_size: Optional[int] = None,
        init_image: Optional[I.ImageLike] = None,
        strength: float = 0.7,
        inpaint_image: Optional[I.ImageLike] = None,
        inpaint_mask: Optional[I.ImageLike] = None,
        clip_guidance_scale: Optional[float] = None,
        progress: bool = False,
        restate: bool = True,
    ) -> np.ndarray:
        """Sample one image per prompt; returns uint8 ``[N, S, S, 3]`` (S = upsampler size, or base size).

        ``guidance_scale`` is the classifier-free guidance scale (1 = plain conditional);
        None takes the base model's recommendation, else 3. ``base`` / ``upsample``
        default to each model's recommended ``StageOptions`` (else ``BASE_DEFAULT`` /
        ``UPSAMPLE_DEFAULT``).
        ``init_image`` + ``strength`` edit a sketch or photo (SDEdit): the image is
        noised to ``strength`` of the chain and denoised with the prompt.
        ``inpaint_image`` + ``inpaint_mask`` (1 = keep) need inpainting models.
        ``clip_guidance_scale`` replaces classifier-free guidance by CLIP guidance.
        ``upsample=None`` returns the base samples.
        ``restate`` says each caption in the relations the base was trained on
        (see ``restated``); False samples the captions as given.
        """
        prompts = _check_prompts(prompts)
        if restate:
            prompts = self.restated(prompts)
        if guidance_scale is None:
            guidance_scale = self.base.guidance_scale if self.base.guidance_scale is not None else GUIDANCE_DEFAULT
        base = resolve_stage(base, self.base, BASE_DEFAULT)
        if upsample is not None:
            if self.upsampler is None and isinstance(upsample, str) and upsample == DEFAULT:
                upsample = None  # no upsampler loaded: base-size samples
            else:
                upsample = resolve_stage(upsample, self.upsampler, UPSAMPLE_DEFAULT)
        if not 0.0 <= guidance_scale <= 100.0:
            raise ValueError(f"guidance_scale must be in [0, 100], got {guidance_scale}")
        if clip_guidance_scale is not None and not 0.0 < clip_guidance_scale <= 1000.0:
            raise ValueError(f"clip_guidance_scale must be in (0, 1000], got {clip_guidance_scale}")
        if not 0.0 < strength <= 1.0:
            raise ValueError(f"strength must be in (0, 1], got {strength}")
        if (inpaint_image is None) != (inpaint_mask is None):
            raise ValueError("inpainting needs both inpaint_image and inpaint_mask")
        if init_image is not None and inpaint_image is not None:
            raise ValueError("give either init_image (editing) or inpaint_image (inpainting), not both")
        base.validate("base")
        if upsample is not None:
            upsample.validate("upsample")
            if self.upsampler is None:
                raise ValueError("no upsampler is loaded: pass upsample=None for base-size samples")
        n = len(prompts)
        batch_size = batch_size or n
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        size = self.base.config.unet.image_size
        init = inpaint_lo = inpaint_hi = None
        if init_image is not None:
            init = I.to_model(I.resize(I.read_image(init_image, "init_image"), size))[None]
        elif inpaint_image is None and base.start < 1.0:
            init = I.to_model(np.full((size, size, 3), base.canvas, np.uint8))[None]
            strength = base.start
        if inpaint_image is not None:
            img = I.read_image(inpaint_image, "inpaint_image")
            msk = I.read_mask(inpaint_mask, img.shape[:2])
            inpaint_lo = (I.to_model(I.resize(img, size))[None], (I.resize(msk, size) >= 0.5).astype(np.float32)[None])
            if self.upsampler is not None and upsample is not None:
                hi = self.upsampler.config.unet.image_size
                inpaint_hi = (I.to_model(I.resize(img, hi))[None], (I.resize(msk, hi) >= 0.5).astype(np.float32)[None])
        key = jax.random.key(seed) if isinstance(seed, int) else seed
        bar = ProgressBar.get() if progress else None
        outputs = []
        for start in range(0, n, batch_size):
            chunk = prompts[start:start + batch_size]
            real = len(chunk)
            chunk = chunk + [chunk[-1]] * (batch_size - real)  # same shapes every chunk: one compilation
            k_base, k_up = jax.random.split(jax.random.fold_in(key, start))
            bs = len(chunk)
            tile = lambda pair: None if pair is None else (np.repeat(pair[0], bs, 0), np.repeat(pair[1], bs, 0))
            if bar:
                bar.start(f"base {start + 1}-{start + real}/{n}")
            x = self._base_stage(chunk, k_base, guidance_scale, base, None if init is None else np.repeat(init, bs, 0),
                                 strength, tile(inpaint_lo), clip_guidance_scale, bar)
            if upsample is not None:
                if bar:
                    bar.start(f"upsample {start + 1}-{start + real}/{n}")
                x = self._upsample_stage(chunk, x, k_up, upsample, tile(inpaint_hi), bar)
            outputs.append(I.to_uint8(jax.device_get(x))[:real])
        if bar:
            bar.close()
        return np.concatenate(outputs)

    def upsample_images(self, prompts, image: I.ImageLike, *, seed: Union[int, jax.Array] = 0,
                        options: Union[StageOptions, str] = DEFAULT, progress: bool = False) -> np.ndarray:
        """Super-resolve one given image once per prompt; returns uint8 ``[N, S, S, 3]``."""
        prompts = _check_prompts(prompts)
        if self.upsampler is None:
            raise ValueError("no upsampler is loaded")
        options = resolve_stage(options, self.upsampler, UPSAMPLE_DEFAULT)
        options.validate("upsample")
        cfg = self.upsampler.config
        low = cfg.low_res_size or self.base.config.unet.image_size
        x = I.to_model(I.resize(I.read_image(image, "image"), low))[None]
        key = jax.random.key(seed) if isinstance(seed, int) else seed
        bar = ProgressBar.get() if progress else None
        out = self._upsample_stage(prompts, np.repeat(x, len(prompts), 0), key, options, None, bar)
        if bar:
            bar.close()
        return I.to_uint8(jax.device_get(out))
