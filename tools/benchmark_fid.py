"""FID feature-extraction speed, glide_jax beside pytorch-fid on the same machine: ``python -m tools.benchmark_fid``.

Both sides turn the same uint8 ``[N, 299, 299, 3]`` images into pool3 features in batches of
``--batch-size``, timed from the uint8 array to the features on the host:

- glide_jax: :func:`glide_jax.evaluation.features.inception_features` (the pytorch-fid resize,
  the Flax FID Inception), in this interpreter's JAX, which uses every core of the machine;
- pytorch-fid 0.3.0: its ``InceptionV3([3], resize_input=True, normalize_input=True,
  use_fid_inception=True)`` in eval mode under ``torch.no_grad()``, the images made float NCHW
  in [0, 1] as ``ToTensor`` does, on ``--threads`` threads. pytorch-fid builds the network with
  ``fid_inception_v3()``, which downloads its weights: here that download is replaced by
  ``torch.load`` of ``--weights``, so the file must have the released file's keys (the FID
  fixture's ``pt_inception-random.pth`` does).

Each side runs in a fresh subprocess per round (``--rounds``, alternating glide_jax and torch),
which passes over the images once to compile or warm up, then times ``--repeats`` passes; the
report gives every pass and, per side, the median images/s over all rounds. The glide_jax side
also reports the network's FLOPs per image from XLA's cost analysis of the compiled batch.

The torch side runs in the interpreter given by ``--torch-python`` (a side venv with torch,
torchvision and pytorch-fid; never a dependency of this project) and imports nothing of
glide_jax; without it only the glide_jax side runs. ``--clip`` adds, on the glide_jax side, the
image embedding of a CLIP ViT-B/32-sized model (Hugging Face ``openai/clip-vit-base-patch32``'s
config, random weights) on preprocessed 224x224 pixels, with its FLOPs per image.

    python -m tools.benchmark_fid --weights ../shared/fixtures/fid/pt_inception-random.pth \\
        --torch-python .venv-fid/bin/python --images 64 --rounds 2 --repeats 3 --clip

Prints JSON.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SIZE = 299  # the Inception's input: neither side resizes more than a copy
# Hugging Face's openai/clip-vit-base-patch32 config.json, the keys that set the network's size.
CLIP_B32_CONFIG = {
    "projection_dim": 512,
    "text_config": {"hidden_size": 512, "intermediate_size": 2048, "num_attention_heads": 8,
                    "num_hidden_layers": 12},
    "vision_config": {"hidden_size": 768, "intermediate_size": 3072, "num_attention_heads": 12,
                      "num_hidden_layers": 12, "patch_size": 32, "image_size": 224},
}


def make_images(count: int, seed: int = 0) -> np.ndarray:
    """``count`` smooth coloured uint8 299x299 images with a few flat shapes (not noise, not constant)."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32) / SIZE
    out = np.empty((count, SIZE, SIZE, 3), np.uint8)
    for i in range(count):
        image = np.stack([127 + 80 * np.sin(6 * (a * cols + b * rows) + 3 * p)
                          for a, b, p in rng.uniform(-1, 1, (3, 3))], axis=-1)
        for _ in range(3):
            top, left = rng.integers(0, SIZE - 60, 2)
            image[top:top + rng.integers(20, 60), left:left + rng.integers(20, 60)] = rng.uniform(0, 255, 3)
        out[i] = np.clip(image + rng.normal(0, 6, image.shape), 0, 255).astype(np.uint8)
    return out


def _passes(run, count: int, repeats: int) -> dict:
    """One untimed pass (compile, warm-up), then ``repeats`` timed passes over ``count`` images."""
    started = time.perf_counter()
    run()
    first = time.perf_counter() - started
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        seconds.append(time.perf_counter() - started)
    return {"first_pass_s": round(first, 3), "seconds": [round(s, 4) for s in seconds],
            "images_per_s": [round(count / s, 3) for s in seconds]}


def _flops(compiled) -> float:
    analysis = compiled.cost_analysis()
    analysis = analysis[0] if isinstance(analysis, (list, tuple)) else analysis
    return float(analysis["flops"])


def _random_leaf(rng: np.random.Generator, path, leaf) -> np.ndarray:
    """He-normal kernels and identity batch norms: the speed does not depend on the weights' values."""
    name = path[-1].key
    if name == "kernel":
        return (rng.normal(size=leaf.shape) * np.sqrt(2 / np.prod(leaf.shape[:-1]))).astype(np.float32)
    return np.full(leaf.shape, 1.0 if name in ("scale", "var") else 0.0, np.float32)


def jax_side(images_path: str, weights: str, batch_size: int, repeats: int) -> dict:
    """glide_jax's pool3 features of the saved images; FLOPs per image of the compiled network."""
    # deferred: this file also runs under the torch side's interpreter, which has no jax or glide_jax
    import jax
    from glide_jax.evaluation import features
    from glide_jax.hub.convert_inception import load_inception
    from glide_jax.models.inception import FIDInceptionV3, abstract_variables

    images = np.load(images_path)
    if weights:
        variables = load_inception(weights)
    else:
        variables = jax.tree_util.tree_map_with_path(functools.partial(_random_leaf, np.random.default_rng(0)),
                                                     abstract_variables())
    variables = jax.device_put(variables)
    result = _passes(lambda: features.inception_features(variables, images, batch_size=batch_size),
                     len(images), repeats)
    batch = jax.ShapeDtypeStruct((batch_size, SIZE, SIZE, 3), np.float32)
    flops = _flops(jax.jit(FIDInceptionV3().apply).lower(variables, batch).compile())
    return {"side": "glide_jax", "jax": jax.__version__, "backend": jax.default_backend(),
            "devices": len(jax.devices()), "cores": os.cpu_count(), "batch_size": batch_size,
            "weights": "file" if weights else "random", "gflop_per_image": round(flops / batch_size / 1e9, 3),
            **result}


def clip_side(batch_size: int, repeats: int, count: int) -> dict:
    """Image embeddings of a CLIP ViT-B/32-sized model (random weights) on ``count`` preprocessed images."""
    # deferred: this file also runs under the torch side's interpreter, which has no jax or glide_jax
    import jax
    from glide_jax.models import clip_vit

    config = clip_vit.ClipVitConfig.from_hf_dict(CLIP_B32_CONFIG)
    params = clip_vit.init_params(config, jax.random.key(0))
    size = config.vision.image_size
    pixels = np.random.default_rng(0).normal(size=(count, size, size, 3)).astype(np.float32)
    model = clip_vit.ClipVitModel(config)
    embed = jax.jit(lambda p, x: clip_vit.image_features(model, p, x))
    batch = jax.ShapeDtypeStruct((batch_size, size, size, 3), np.float32)
    flops = _flops(embed.lower(params, batch).compile())

    def run():  # whole batches (the last one padded), as the CLIP scorer runs them
        padded = np.concatenate([pixels, np.zeros((-count % batch_size, size, size, 3), np.float32)])
        return np.concatenate([np.asarray(embed(params, padded[i:i + batch_size]))
                               for i in range(0, len(padded), batch_size)])[:count]

    return {"side": "glide_jax clip-vit-b32 image embedding", "batch_size": batch_size,
            "gflop_per_image": round(flops / batch_size / 1e9, 3), **_passes(run, count, repeats)}


def torch_side(images_path: str, weights: str, batch_size: int, repeats: int, threads: int) -> dict:
    """pytorch-fid's pool3 features of the saved images, its network built with ``--weights``."""
    # deferred: torch and pytorch-fid exist only in the side venv given as --torch-python
    import torch
    import pytorch_fid
    from pytorch_fid import inception

    torch.set_num_threads(threads)
    state = torch.load(weights, map_location="cpu", weights_only=True)
    inception.load_state_dict_from_url = lambda url, progress=True: state  # instead of the download
    block = inception.InceptionV3.BLOCK_INDEX_BY_DIM[2048]
    model = inception.InceptionV3([block], resize_input=True, normalize_input=True, use_fid_inception=True).eval()
    images = np.load(images_path)

    def run():
        out = np.empty((len(images), 2048), np.float32)
        with torch.no_grad():
            for start in range(0, len(images), batch_size):
                batch = torch.from_numpy(images[start:start + batch_size]).permute(0, 3, 1, 2).float() / 255.0
                out[start:start + len(batch)] = model(batch)[0].squeeze(-1).squeeze(-1).numpy()
        return out

    return {"side": "pytorch-fid", "torch": torch.__version__, "pytorch_fid": pytorch_fid.__version__,
            "threads": torch.get_num_threads(), "batch_size": batch_size, **_passes(run, len(images), repeats)}


def _child(args) -> int:
    if args.child == "jax":
        out = jax_side(args.images_path, args.weights, args.batch_size, args.repeats)
    elif args.child == "clip":
        out = clip_side(args.batch_size, args.repeats, args.images)
    else:
        out = torch_side(args.images_path, args.weights, args.batch_size, args.repeats, args.threads)
    print(json.dumps(out))
    return 0


def _run_child(python: str, part: str, args, images_path: str) -> dict:
    command = [python, "-m", "tools.benchmark_fid", "--child", part, "--images-path", images_path,
               "--batch-size", str(args.batch_size), "--repeats", str(args.repeats), "--threads", str(args.threads),
               "--images", str(args.images)]
    if args.weights:
        command += ["--weights", str(Path(args.weights).resolve())]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    out = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=env)
    if out.returncode:
        raise RuntimeError(f"the {part} side failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _summary(rounds, side: str) -> dict:
    rates = [rate for row in rounds for rate in row[side]["images_per_s"]]
    return {"median_images_per_s": round(statistics.median(rates), 3), "min": min(rates), "max": max(rates),
            "passes_timed": len(rates)}


def side_by_side(args) -> dict:
    sides = [("glide_jax", sys.executable, "jax")]
    if args.torch_python:
        sides.append(("pytorch_fid", args.torch_python, "torch"))
    rounds = []
    with tempfile.TemporaryDirectory() as scratch:
        images_path = os.path.join(scratch, "images.npy")
        np.save(images_path, make_images(args.images))
        for _ in range(args.rounds):
            rounds.append({name: _run_child(python, part, args, images_path) for name, python, part in sides})
        report = {"images": args.images, "size": SIZE, "batch_size": args.batch_size, "threads": args.threads,
                  "summary": {name: _summary(rounds, name) for name, _, _ in sides}, "rounds": rounds}
        if args.clip:
            clip = _run_child(sys.executable, "clip", args, images_path)
            report["clip_vit_b32"] = {**clip, "median_images_per_s": statistics.median(clip["images_per_s"])}
    if args.torch_python:
        fast, slow = (report["summary"][name]["median_images_per_s"] for name in ("glide_jax", "pytorch_fid"))
        report["summary"]["glide_jax_over_pytorch_fid"] = round(fast / slow, 3)
    return report


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", default=None, help="a .pth with pytorch-fid's keys (needed by --torch-python; the "
                                                    "glide_jax side uses random weights without it)")
    ap.add_argument("--torch-python", default=None, metavar="PYTHON",
                    help="interpreter with torch, torchvision and pytorch-fid (e.g. .venv-fid/bin/python)")
    ap.add_argument("--images", type=int, default=64, help="images per pass (default 64)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=2, help="fresh processes per side, alternating (default 2)")
    ap.add_argument("--repeats", type=int, default=3, help="timed passes per process (default 3)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (JAX uses every core)")
    ap.add_argument("--clip", action="store_true", help="also time CLIP ViT-B/32 image embeddings (glide_jax)")
    ap.add_argument("--child", choices=("jax", "torch", "clip"), default=None, help=argparse.SUPPRESS)
    ap.add_argument("--images-path", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return _child(args)
    for name in ("images", "batch_size", "rounds", "repeats", "threads"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.torch_python and not args.weights:
        ap.error("--torch-python needs --weights: pytorch-fid's network is built from a .pth with the released "
                 "file's keys (e.g. the FID fixture's pt_inception-random.pth)")
    print(json.dumps(side_by_side(args), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
