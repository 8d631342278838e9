"""Starting a training run from a trained model (``train.init_from``) instead of random weights.

Three ways; each training task (``glide_jax.train.tasks``) names the one it uses:

* **the same model** (``base``, ``upsample``, ``clip``, and ``inpaint`` from an
  inpainting model): the source's config must equal the run's, up to
  ``FREE_FIELDS`` (how a network runs, not what its weights mean); the
  parameters are copied as they are. This continues a model under a new
  experiment: another data mix, a curriculum stage, a longer schedule.
* **guidance-embedding start** (``distill-guidance``, Meng et al. 2023): a
  student with ``unet.guidance_embed`` from a teacher without it. The
  guidance-weight MLP (``guidance_embed_0``, ``guidance_embed_2``) starts at
  its init, whose last layer is zero, so at step 0 the student computes the
  teacher's conditional output; every other parameter is copied.
* **inpaint widening** (``inpaint`` from a base or upsampler, as the GLIDE
  paper fine-tunes its inpainting models): the first convolution
  ``input_blocks_0_0`` grows from ``[x, (low_res_up)]`` to
  ``[x, image * mask, mask, (low_res_up)]`` input channels. The new channels'
  weights start at zero, so at step 0 the inpainting model computes exactly
  what its source computes; every other parameter is copied.

Every way, the result must have exactly the parameter shapes of the run's
model (``glide_jax.family.abstract_params``), or a
``CheckpointMismatchError`` names every difference.

The source is anything the model registry (``glide_jax.hub.registry``) loads
-- a training workdir's EMA weights, a model directory, an embedded or
released model name, an OpenAI ``.pt`` file -- or, for a U-Net, a ``.npz`` of
a PyTorch state dict (keys optionally prefixed ``state/``, as in the
reference fixtures). A run that
learns a sentencepiece vocabulary keeps its source's instead
(:func:`inherited_tokenizer`): new ids would scramble the token embeddings.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import flax.linen as nn
import jax
import numpy as np

from glide_jax.config import ClipConfig, ModelConfig
from glide_jax.errors import InputError
from glide_jax.family import abstract_params, family_of, init_params
from glide_jax.hub import embedded
from glide_jax.hub.convert import convert_state
from glide_jax.hub.registry import load_model
from glide_jax.hub.torch_layout import CheckpointMismatchError
from glide_jax.models.params import flat_shapes
from glide_jax.regular_files import is_present

Config = Union[ModelConfig, ClipConfig]
Params = Dict[str, Any]

FIRST_CONV = "input_blocks_0_0"
GUIDANCE_LAYERS = ("guidance_embed_0", "guidance_embed_2")  # the U-Net torso's guidance-weight MLP
# Fields (at any depth of a config) that change how a network runs, not what its weights mean.
FREE_FIELDS = ("dropout", "dtype", "remat")
TOKENIZER_FILE = "tokenizer.model"


# ----------------------------------------------------------------------------- comparing configs


def differences(source: Any, target: Any, free: Sequence[str] = FREE_FIELDS, prefix: str = "") -> List[str]:
    """``"path: source vs target"`` for every field of two configs that differs, ignoring ``free`` fields."""
    if type(source) is not type(target):
        return [f"{prefix or 'config'}: {type(source).__name__} vs {type(target).__name__}"]
    out = []
    for f in dataclasses.fields(source):
        if f.name in free:
            continue
        a, b = getattr(source, f.name), getattr(target, f.name)
        if dataclasses.is_dataclass(a) and dataclasses.is_dataclass(b):
            out += differences(a, b, free, f"{prefix}{f.name}.")
        elif a != b:
            out.append(f"{prefix}{f.name}: {a!r} vs {b!r}")
    return out


def check_fits(params: Params, target: Config, what: str) -> None:
    """Raise ``CheckpointMismatchError`` unless ``params`` has exactly the parameter shapes of ``target``."""
    want, got = flat_shapes(abstract_params(target)), flat_shapes(params)
    misshaped = [f"{'/'.join(k)}: {what} {got[k]} vs model {want[k]}" for k in sorted(set(want) & set(got))
                 if want[k] != got[k]]
    if set(want) != set(got) or misshaped:
        raise CheckpointMismatchError(what, ("/".join(k) for k in set(want) - set(got)),
                                      ("/".join(k) for k in set(got) - set(want)), misshaped)


def _host_tree(params: Params) -> Params:
    """The bare parameter tree (no ``{"params": ...}`` wrapper) as numpy arrays."""
    return jax.tree.map(np.asarray, params.get("params", params))


# ----------------------------------------------------------------------------- the two starts


def same_model_params(source_params: Params, source: Config, target: Config) -> Params:
    """The source's parameters, for a run of the same model (up to ``FREE_FIELDS``)."""
    diff = differences(source, target)
    if diff:
        raise InputError("the model to start from is not the model this run trains (only "
                         f"{', '.join(FREE_FIELDS)} may differ): " + "; ".join(diff))
    tree = _host_tree(source_params)
    check_fits(tree, target, "warm start")
    return tree


def widen_first_conv(kernel: np.ndarray, in_channels: int, super_res: bool) -> np.ndarray:
    """``[kh, kw, c_in, c_out]`` kernel of ``[x, (low_res)]`` -> ``[x, image*mask, mask, (low_res)]``,
    the new input channels zero."""
    kernel = np.asarray(kernel)
    c = in_channels
    expected = c * (2 if super_res else 1)
    if kernel.shape[2] != expected:
        raise InputError(f"first conv has {kernel.shape[2]} input channels, expected {expected}")
    out = np.zeros(kernel.shape[:2] + (expected + c + 1,) + kernel.shape[3:], kernel.dtype)
    out[:, :, :c] = kernel[:, :, :c]
    out[:, :, 2 * c + 1:] = kernel[:, :, c:]
    return out


def inpaint_params(source_params: Params, source: Config, target: ModelConfig) -> Params:
    """Parameters of an inpainting ``target``: a copy of an inpainting source, or a base or upsampler
    source with its first convolution widened."""
    if family_of(source).name == "unet" and source.unet.inpaint:
        return same_model_params(source_params, source, target)
    diff = differences(source, target, FREE_FIELDS + ("inpaint",))
    if diff:
        raise InputError("the model to fine-tune and the inpainting model differ beyond the inpainting input "
                         "channels: " + "; ".join(diff))
    tree = _host_tree(source_params)
    unet = dict(tree["unet"])
    unet[FIRST_CONV] = dict(unet[FIRST_CONV], kernel=widen_first_conv(
        unet[FIRST_CONV]["kernel"], target.unet.in_channels, target.unet.super_res))
    tree = dict(tree, unet=unet)
    check_fits(tree, target, "inpainting start")
    return tree


def guidance_embed_params(source_params: Params, source: Config, target: ModelConfig) -> Params:
    """Parameters of a guidance-conditioned ``target`` (``unet.guidance_embed``): a copy of a source that has
    the embedding, else the source's parameters plus the embedding MLP at its init (seed 0; last layer zero)."""
    if family_of(source).name != "unet" or family_of(target).name != "unet" or not target.unet.guidance_embed:
        raise InputError("a guidance-embedding start needs a U-Net source and a target with unet.guidance_embed")
    if source.unet.guidance_embed:
        return same_model_params(source_params, source, target)
    diff = differences(source, target, FREE_FIELDS + ("guidance_embed",))
    if diff:
        raise InputError("the teacher and the guidance-conditioned student differ beyond the guidance "
                         "embedding: " + "; ".join(diff))
    tree = _host_tree(source_params)
    fresh = jax.jit(lambda key: {name: nn.unbox(init_params(target, key))["unet"][name]
                                 for name in GUIDANCE_LAYERS})(jax.random.key(0))
    tree = dict(tree, unet=dict(tree["unet"], **jax.tree.map(np.asarray, fresh)))
    check_fits(tree, target, "guidance-embedding start")
    return tree


# ----------------------------------------------------------------------------- loading the source


def _read_npz_state(path: Path) -> Dict[str, np.ndarray]:
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    if any(k.startswith("state/") for k in arrays):
        arrays = {k[len("state/"):]: v for k, v in arrays.items() if k.startswith("state/")}
    return arrays


def _npz_source(path: Path, target: Config) -> Tuple[Config, Params]:
    """A U-Net state dict saved as ``.npz``: its config is the target's, with or without the inpainting
    inputs, as the first convolution's input channels say."""
    if family_of(target).name != "unet":
        raise InputError(f"{path}: a .npz state dict can start a U-Net only, not a {type(target).__name__}")
    state = _read_npz_state(path)
    first = state.get("input_blocks.0.0.weight")
    config = target
    if first is not None and np.shape(first)[1] != target.unet.model_in_channels:
        config = dataclasses.replace(target, unet=dataclasses.replace(target.unet, inpaint=False))
    return config, convert_state(config, {"model": state})


def load_source(init_from: str, target: Config) -> Tuple[Config, Params]:
    """``(config, params)`` of the model at ``init_from``: a ``.npz`` state dict, or any source of the
    model registry (``glide_jax.hub.registry``)."""
    path = Path(init_from).expanduser()
    if path.suffix == ".npz" and is_present(path, "warm-start state dict"):
        return _npz_source(path, target)

    return load_model(init_from)


def initial_params(start: Callable[[Params, Config, Config], Params], init_from: str, target: Config) -> Params:
    """Host parameters (no ``{"params": ...}`` wrapper) of ``target`` from the model at ``init_from``, by a
    task's ``start`` (``same_model_params``, ``inpaint_params`` or ``guidance_embed_params``)."""
    source, params = load_source(init_from, target)
    return start(params, source, target)


def inherited_tokenizer(init_from: str, tokenizer: str) -> Optional[str]:
    """The ``data.tokenizer`` spec of the source's own sentencepiece vocabulary, when this run would learn
    one (``tokenizer == "sentencepiece"``) and the source has one; else None."""
    if not init_from or tokenizer != "sentencepiece":
        return None

    source = embedded.embedded_dir(init_from) if embedded.is_embedded(init_from) else Path(init_from).expanduser()
    candidate = source / TOKENIZER_FILE
    return f"sentencepiece:{candidate}" if candidate.exists() else None
