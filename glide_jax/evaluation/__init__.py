"""Sample-quality evaluation: FID as pytorch-fid (and clean-fid's resize) compute it, without torch.

* ``preprocess`` - uint8 images to the Inception input: resize to 299 and scale to [-1, 1];
* ``features``   - pool3 features of a batch of images, jitted once per batch shape;
* ``frechet``    - streaming feature statistics, pytorch-fid's ``.npz`` files, the Fréchet distance.

The network is :class:`glide_jax.models.inception.FIDInceptionV3`, its weights
converted by :mod:`glide_jax.hub.convert_inception`.
"""
