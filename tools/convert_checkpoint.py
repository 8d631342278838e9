"""Convert an OpenAI GLIDE ``.pt`` checkpoint into a glide_jax model directory (config.json + params.zip).

    python -m tools.convert_checkpoint --preset base --pt base.pt --out models/base
    python -m tools.convert_checkpoint --preset clip --image-pt clip_image_enc.pt --text-pt clip_text_enc.pt --out models/clip
    python -m tools.convert_checkpoint --reference-kwargs kwargs.json --pt model.pt --out models/custom

The ``.pt`` files are read without executing pickled code (or with
``torch.load(weights_only=True)`` when ``--use-torch`` is given). The model
directory (:mod:`glide_jax.hub.model_dir`) holds float32 parameters unless
``--float16`` is given; ``--model`` then loads it, e.g.
``glide-jax generate "a corgi" --model models/base --upsampler none``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from glide_jax.config import ClipConfig, DiffusionConfig, ModelConfig, UNetConfig, get_preset
from glide_jax.hub.convert import convert_pt
from glide_jax.hub.model_dir import save_model_dir
from glide_jax.family import family_of


def _config(args):
    if args.reference_kwargs:
        kw = json.loads(open(args.reference_kwargs).read())
        kw = kw.get("create_model_kwargs", kw)
        if "config_yaml" in kw or "n_embd" in kw:
            return ClipConfig.from_reference(kw.get("config_yaml", kw))
        diffusion = DiffusionConfig(int(kw.get("diffusion_steps", 1000)), kw.get("noise_schedule", "squaredcos_cap_v2"))
        return ModelConfig(UNetConfig.from_reference(kw), diffusion, kw.get("low_res_size"))
    return get_preset(args.preset)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--preset", help="base, upsample, base-inpaint, upsample-inpaint or clip")
    src.add_argument("--reference-kwargs", help="json of the reference's create_model kwargs (or a CLIP config)")
    ap.add_argument("--pt", help="U-Net checkpoint (.pt)")
    ap.add_argument("--image-pt", help="CLIP image encoder checkpoint (.pt)")
    ap.add_argument("--text-pt", help="CLIP text encoder checkpoint (.pt)")
    ap.add_argument("--out", required=True, help="model directory to write")
    ap.add_argument("--overwrite", action="store_true", help="replace an existing --out directory")
    ap.add_argument("--float16", action="store_true", help="store the parameters as float16 (half the size)")
    ap.add_argument("--use-torch", action="store_true", help="read with torch.load(weights_only=True)")
    args = ap.parse_args(argv)
    try:
        config = _config(args)
        family = family_of(config)
        flags = {"model": ("--pt", args.pt), "image": ("--image-pt", args.image_pt), "text": ("--text-pt", args.text_pt)}
        missing = [flags[role][0] for role in family.checkpoint_roles if not flags[role][1]]
        if missing:
            ap.error(f"a {family.name} conversion needs {' and '.join(missing)}")
        paths = {role: flags[role][1] for role in family.checkpoint_roles}
        config, params = convert_pt(config, paths, use_torch=args.use_torch)
        card = {"converted_from": sorted(Path(p).name for p in paths.values())}
        save_model_dir(args.out, config, params, dtype="float16" if args.float16 else "float32", card=card,
                       overwrite=args.overwrite)
        out = Path(args.out).absolute()
    except (ValueError, KeyError, FileNotFoundError, FileExistsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
