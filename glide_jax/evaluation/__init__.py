"""Sample quality as the field measures it: FID and CLIP score, computed in JAX, checked against the references.

* ``preprocess``   - uint8 images to the FID Inception input: resize to 299 (pytorch-fid's bilinear, or
  clean-fid's PIL bicubic) and scale to [-1, 1];
* ``features``     - pool3 features of a batch of images, jitted once per batch shape;
* ``frechet``      - streaming feature statistics, pytorch-fid's ``.npz`` files, the Fréchet distance;
* ``clip_inputs``  - ``CLIPImageProcessor``'s resize, crop and normalisation;
* ``clip_score``   - torchmetrics' CLIP score over a Hugging Face CLIP, streaming and mergeable.

Evaluating a sampling pipeline (``glide-jax evaluate``, training's periodic evaluation):

* ``runner``       - ``evaluate``: samples drawn and scored batch by batch, shards, resuming, processes;
* ``captions``     - ``read_captions(spec, n)``: caption files, image-caption shards, the shapes grammar;
* ``reference``    - the FID reference: ``.npz`` statistics, or reference images' statistics, cached;
* ``scorers``      - the Inception and CLIP towers with each batch split over the local devices;
* ``devices``      - the 1-D mesh of local devices and padded, split batches;
* ``eval_dir``     - the output folder: settings, shard files, results;
* ``in_training``  - the evaluator training's loop calls every ``eval.every`` steps.

The networks are :class:`glide_jax.models.inception.FIDInceptionV3` and
:class:`glide_jax.models.clip_vit.ClipVitModel`, their weights converted by
:mod:`glide_jax.hub.convert_inception` and :mod:`glide_jax.hub.convert_hf_clip`.
Each module states where it deliberately differs from the published implementation.
"""
