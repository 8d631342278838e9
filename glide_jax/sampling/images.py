"""Image input and output for the pipeline and the CLI: validation, conversion, PNGs and grids.

User images arrive as uint8 RGB arrays (or PNG/JPEG paths); the models work on
float32 NHWC in [-1, 1]. Every check here raises a ``ValueError`` that names the
problem (wrong rank, size, channel count, mask values) instead of letting a
shape error surface deep inside a jitted function. A file that is not an image
(or a truncated one, or one too large to decode safely) is a ``ValueError`` naming
the file. A mask file with grey levels is thresholded at half its range with an
:class:`~glide_jax.errors.InputWarning` saying how many pixels were grey.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
import tempfile
from typing import Iterator, List, Sequence, Union
import warnings

from PIL import Image
import numpy as np

from glide_jax.errors import InputError
from glide_jax.errors import InputWarning

ImageLike = Union[str, Path, np.ndarray]


@contextmanager
def _opened(path: Path, what: str) -> Iterator["object"]:
    """A PIL image of ``path``, fully decoded; every decoding failure a ``ValueError`` naming the file."""
    if not path.exists():
        raise FileNotFoundError(f"{what} file {path} does not exist")
    if path.is_dir():
        raise InputError(f"{what} {path} is a directory, not an image file")
    im = None
    try:
        im = Image.open(path)
        im.load()
    except (Image.DecompressionBombError, OSError, SyntaxError, ValueError) as e:
        if im is not None:
            im.close()
        _refuse_image(e, path, what)
    try:
        yield im
    finally:
        im.close()


def _refuse_image(e: BaseException, path: Path, what: str) -> None:
    if isinstance(e, Image.DecompressionBombError):
        raise InputError(f"{what} {path} is too large to decode safely ({e})") from None
    if isinstance(e, OSError) and e.errno is not None:  # permission and I/O errors name their file already
        raise e
    raise InputError(f"{what} {path} is not a readable image ({e})") from None


def read_image(image: ImageLike, what: str = "image") -> np.ndarray:
    """An RGB uint8 ``[H, W, 3]`` array from a path or an array (uint8, or float in [-1, 1])."""
    if isinstance(image, (str, Path)):
        path = Path(image)
        with _opened(path, what) as im:
            if im.mode not in ("RGB", "RGBA", "L", "P", "LA"):
                raise InputError(f"{what} {path} has unsupported mode {im.mode}; use an RGB image")
            return np.asarray(im.convert("RGB"))
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[-1] != 3:
        raise InputError(f"{what} must be an RGB array of shape [H, W, 3], got shape {arr.shape}")
    if arr.dtype == np.uint8:
        return arr
    if np.issubdtype(arr.dtype, np.floating):
        bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
        if bad:
            raise InputError(f"{what} has {bad} NaN or infinite values; give finite values in [-1, 1]")
        if arr.min() < -1.0 - 1e-3 or arr.max() > 1.0 + 1e-3:
            raise InputError(f"float {what} values must lie in [-1, 1], got [{arr.min():.3f}, {arr.max():.3f}]")
        return to_uint8(arr)
    raise InputError(f"{what} must be uint8 or float in [-1, 1], got dtype {arr.dtype}")


def _mask_file(path: Path) -> np.ndarray:
    """A mask file as 0/1 floats: 8- or 16-bit grey levels (or colours) thresholded at half their range."""
    with _opened(path, "mask") as im:
        if im.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N"):
            arr, top = np.asarray(im).astype(np.float64), 65535.0
        elif im.mode == "F":
            raise InputError(f"mask {path} holds floating-point pixels; save it as an 8-bit black-and-white PNG")
        else:
            arr, top = np.asarray(im.convert("L")).astype(np.float64), 255.0
    grey = int(np.count_nonzero((arr > 0) & (arr < top)))
    if grey:
        warnings.warn(f"mask {path} has {grey} grey pixels of {arr.size} (neither black nor white); "
                      f"pixels at or above half of white ({int(top) // 2 + 1}) are kept, the rest are filled in",
                      InputWarning, stacklevel=3)
    return (arr > top / 2).astype(np.float32)


def read_mask(mask: ImageLike, size: Sequence[int]) -> np.ndarray:
    """A float32 ``[H, W, 1]`` mask of 0/1 (1 = keep the given pixels, 0 = fill in).

    Accepts a path (white = keep, black = fill; 8- or 16-bit, grey levels
    thresholded with a warning), a bool array, or a 0/1 (or 0/255) array of
    shape ``[H, W]`` or ``[H, W, 1]``; ``size`` is the image's ``(H, W)``.
    """
    if isinstance(mask, (str, Path)):
        arr = _mask_file(Path(mask))
    else:
        arr = np.asarray(mask)
        if arr.ndim == 3 and arr.shape[-1] == 1:
            arr = arr[..., 0]
        if arr.ndim != 2:
            raise InputError(f"mask must have shape [H, W] or [H, W, 1], got {np.asarray(mask).shape}")
        if arr.dtype == np.bool_:
            arr = arr.astype(np.float32)
        else:
            values = np.unique(arr)
            if set(values.tolist()) <= {0, 1}:
                arr = arr.astype(np.float32)
            elif set(values.tolist()) <= {0, 255}:
                arr = (arr == 255).astype(np.float32)
            else:
                raise InputError(f"mask values must be 0/1 (or 0/255, or bool); found {values[:8].tolist()}")
    if tuple(arr.shape) != tuple(size):
        raise InputError(f"mask shape {tuple(arr.shape)} does not match the image size {tuple(size)}")
    return arr[..., None]


def resize(image: np.ndarray, size: int) -> np.ndarray:
    """Resize a square ``[H, W, C]`` image to ``size``×``size`` (area when shrinking, bicubic when growing)."""
    if image.shape[0] != image.shape[1]:
        raise InputError(f"images must be square, got {image.shape[0]}x{image.shape[1]}; crop it first")
    if image.shape[0] == size:
        return image

    method = Image.BOX if image.shape[0] > size else Image.BICUBIC
    if image.dtype == np.uint8:
        return np.asarray(Image.fromarray(image).resize((size, size), method))
    channels = [np.asarray(Image.fromarray(image[..., c].astype(np.float32), mode="F").resize((size, size), method))
                for c in range(image.shape[-1])]
    return np.stack(channels, axis=-1)


def to_model(image: np.ndarray) -> np.ndarray:
    """uint8 ``[..., 3]`` → float32 in [-1, 1]."""
    return image.astype(np.float32) / 127.5 - 1.0


def to_uint8(x) -> np.ndarray:
    """float in [-1, 1] → uint8, rounding like the reference notebooks ((x + 1) * 127.5)."""
    x = np.asarray(x, np.float32)
    return np.clip(np.round((x + 1.0) * 127.5), 0, 255).astype(np.uint8)


def make_grid(images: np.ndarray, ncols: int | None = None, pad: int = 2) -> np.ndarray:
    """Tile ``[N, H, W, 3]`` uint8 images into one image with ``pad`` white pixels between them."""
    images = np.asarray(images)
    if images.ndim != 4:
        raise InputError(f"expected [N, H, W, C] images, got shape {images.shape}")
    n, h, w, c = images.shape
    ncols = ncols or int(np.ceil(np.sqrt(n)))
    nrows = int(np.ceil(n / ncols))
    grid = np.full((nrows * (h + pad) + pad, ncols * (w + pad) + pad, c), 255, np.uint8)
    for i in range(n):
        r, col = divmod(i, ncols)
        grid[pad + r * (h + pad): pad + r * (h + pad) + h, pad + col * (w + pad): pad + col * (w + pad) + w] = images[i]
    return grid


def prepare_output_dir(out_dir) -> Path:
    """Create ``out_dir`` and prove it takes a file, before any minutes are spent sampling into it."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"output folder {out_dir} is a file; choose a folder with --out")
    for parent in out_dir.parents:
        if parent.exists() and not parent.is_dir():
            raise InputError(f"output folder {out_dir} lies under a file ({parent})")
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=out_dir, prefix=".write-test-"):
        pass  # an unwritable folder or a full disk fails here, as an OSError naming the file
    return out_dir


def save_images(images: np.ndarray, out_dir, prefix: str = "generate", grid: bool = True) -> List[Path]:
    """Write each image as ``<prefix>_000.png``, ``<prefix>_001.png``, ... and, for more than one image,
    ``<prefix>_grid.png``; returns the paths written.

    One naming scheme for the library and the CLI: files are named after what made them. The CLI
    passes its command (``generate_000.png``, ``inpaint_000.png``, ``edit_...``, ``upsample_...``)
    and the default, ``"generate"``, gives ``Pipeline.generate``'s images the names ``glide-jax
    generate`` writes. An existing file is never overwritten: the new one becomes ``<name>-1.png``,
    ``<name>-2.png``, ...
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []

    def free_path(name: str) -> Path:
        path, k = out_dir / f"{name}.png", 1
        while path.exists():
            path, k = out_dir / f"{name}-{k}.png", k + 1
        return path

    for i, img in enumerate(np.asarray(images)):
        path = free_path(f"{prefix}_{i:03d}")
        Image.fromarray(img).save(path)
        paths.append(path)
    if grid and len(images) > 1:
        path = free_path(f"{prefix}_grid")
        Image.fromarray(make_grid(images)).save(path)
        paths.append(path)
    return paths
