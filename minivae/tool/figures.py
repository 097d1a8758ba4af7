"""Pictures: image grids as PNG (no dependencies) and learning curves (matplotlib, optional).

Image grids are written by a tiny PNG encoder (zlib + the PNG chunk format),
so reconstructions, samples and the 2-D latent manifold are always drawn.
Learning curves need matplotlib (``pip install 'minivae[plots]'``); without it
:func:`save_learning_curves` returns False and the caller says so.
"""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
from scipy.special import ndtri

from .files import atomic_open, atomic_path

#: the largest picture :func:`save_sample_grid` draws, in pixels (PNG allows more, but
#: viewers do not); 100,000 MNIST samples take 85 million
MAX_PIXELS = 2**31
#: enlarge small images only while the picture stays this wide (pixels)
MAX_ENLARGED_WIDTH = 2048


def encode_png(img: np.ndarray) -> bytes:
    """PNG bytes of an 8-bit greyscale (H, W) or RGB (H, W, 3) uint8 image."""
    img = np.asarray(img)
    if img.dtype != np.uint8 or img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] != 3):
        raise ValueError(f"image must be uint8 (H, W) or (H, W, 3), got {img.dtype} {img.shape}")
    h, w = img.shape[:2]
    color_type = 0 if img.ndim == 2 else 2
    rows = img.reshape(h, -1)
    raw = np.concatenate([np.zeros((h, 1), np.uint8), rows], axis=1).tobytes()  # filter 0

    ihdr = struct.pack(">IIBBBBB", w, h, 8, color_type, 0, 0, 0)
    return (_PNG_SIGNATURE + _png_chunk(b"IHDR", ihdr)
            + _png_chunk(b"IDAT", zlib.compress(raw, 6)) + _png_chunk(b"IEND", b""))


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _png_chunk(tag: bytes, data: bytes) -> bytes:
    return (struct.pack(">I", len(data)) + tag + data
            + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF))


def write_png(path, img: np.ndarray) -> Path:
    """Write ``img`` (uint8) as a PNG file, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path) as f:
        f.write(encode_png(img))
    return path


def write_png_bands(path, width: int, height: int, bands: Iterable[np.ndarray]) -> Path:
    """Write a greyscale PNG from horizontal bands of rows, holding one band at a time.

    ``bands`` yields uint8 arrays of shape (rows, width), top to bottom, ``height`` rows
    in all. Each band is compressed as it comes and written as its own IDAT chunk (the
    chunks' data concatenated form one zlib stream), so memory is one band whatever the
    picture's size. Written atomically: a failure leaves no file and no temporary.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    z = zlib.compressobj(6)
    rows = 0
    with atomic_open(path) as f:
        f.write(_PNG_SIGNATURE + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8,
                                                                 0, 0, 0, 0)))
        for band in bands:
            if band.dtype != np.uint8 or band.ndim != 2 or band.shape[1] != width:
                raise ValueError(f"a band must be uint8 (rows, {width}), got {band.dtype} "
                                 f"{band.shape}")
            raw = np.concatenate([np.zeros((len(band), 1), np.uint8), band], axis=1)  # filter 0
            data = z.compress(raw.tobytes())
            if data:
                f.write(_png_chunk(b"IDAT", data))
            rows += len(band)
        if rows != height:
            raise ValueError(f"the bands held {rows} rows, the picture has {height}")
        f.write(_png_chunk(b"IDAT", z.flush()) + _png_chunk(b"IEND", b""))
    return path


def image_grid(images: np.ndarray, image_shape: tuple[int, int], ncols: int,
               pad: int = 1, scale: int = 1) -> np.ndarray:
    """Tile (N, h*w) images with values in [0, 1] into one uint8 (H, W) picture.

    Images are laid out row by row, ``ncols`` per row, separated by ``pad``
    grey pixels; each pixel is enlarged to ``scale`` x ``scale``.
    """
    images = np.asarray(images, dtype=np.float64)
    h, w = image_shape
    n = images.shape[0]
    if images.ndim != 2 or images.shape[1] != h * w:
        raise ValueError(f"images must have shape (N, {h * w}), got {images.shape}")
    nrows = -(-n // ncols)
    grid = np.full((nrows * (h + pad) + pad, ncols * (w + pad) + pad), 0.5)
    for i in range(n):
        r, c = divmod(i, ncols)
        y, x = pad + r * (h + pad), pad + c * (w + pad)
        grid[y:y + h, x:x + w] = images[i].reshape(h, w)
    grid = np.clip(grid, 0.0, 1.0)
    if scale > 1:
        grid = np.repeat(np.repeat(grid, scale, axis=0), scale, axis=1)
    return np.round(grid * 255).astype(np.uint8)


def _scale_for(image_shape) -> int:
    return max(1, 112 // max(image_shape))  # 8x8 digits drawn 14x larger, MNIST 4x


def save_reconstructions(path, inputs: np.ndarray, recons: np.ndarray,
                         image_shape: tuple[int, int], pairs_per_row: int = 8) -> Path:
    """Each input followed by its reconstruction, ``pairs_per_row`` pairs per row."""
    both = np.empty((2 * len(inputs), inputs.shape[1]))
    both[0::2], both[1::2] = inputs, recons
    return write_png(path, image_grid(both, image_shape, 2 * pairs_per_row,
                                      scale=_scale_for(image_shape)))


def save_samples(path, samples: np.ndarray, image_shape: tuple[int, int]) -> Path:
    """A square-ish grid of samples."""
    ncols = int(np.ceil(np.sqrt(len(samples))))
    return write_png(path, image_grid(samples, image_shape, ncols, scale=_scale_for(image_shape)))


def save_sample_grid(path, n: int, draw: Callable[[int], np.ndarray],
                     image_shape: tuple[int, int]) -> Path:
    """The grid of :func:`save_samples` for any number of samples, in bounded memory.

    ``draw(count)`` returns the next ``count`` images, (count, h*w) in [0, 1]. The grid
    is drawn one row of images at a time and streamed to the PNG file
    (:func:`write_png_bands`), so memory is one row of images, not the picture: 100,000
    MNIST samples make a picture of 85 million pixels. Images are enlarged (as in
    :func:`save_samples`) only while the picture stays :data:`MAX_ENLARGED_WIDTH` pixels
    wide. A picture of more than :data:`MAX_PIXELS` pixels is refused before anything is
    drawn. The pixels equal those of ``save_samples`` on the same images, when the scale is
    the same.
    """
    h, w = image_shape
    pad = 1
    ncols = math.isqrt(n - 1) + 1  # ceil(sqrt(n))
    nrows = -(-n // ncols)
    base_w, base_h = ncols * (w + pad) + pad, nrows * (h + pad) + pad
    scale = max(1, min(_scale_for(image_shape), MAX_ENLARGED_WIDTH // base_w))
    if base_w * base_h * scale * scale > MAX_PIXELS:
        raise ValueError(f"a grid of {n:,} samples would be a picture of {base_w:,} x "
                         f"{base_h:,} pixels, more than the {MAX_PIXELS:,} a picture may have; "
                         f"choose a smaller --n")

    def to_pixels(band):
        band = np.clip(band, 0.0, 1.0)
        if scale > 1:
            band = np.repeat(np.repeat(band, scale, axis=0), scale, axis=1)
        return np.round(band * 255).astype(np.uint8)

    def bands():
        yield to_pixels(np.full((pad, base_w), 0.5))
        left = n
        for _ in range(nrows):
            count = min(ncols, left)
            images = np.asarray(draw(count), dtype=np.float64)
            if images.shape != (count, h * w):
                raise ValueError(f"draw({count}) must return shape ({count}, {h * w}), got "
                                 f"{images.shape}")
            if not np.isfinite(images).all():
                raise ValueError("the decoder produced non-finite values (NaN or inf); no "
                                 "picture was written")
            band = np.full((h + pad, base_w), 0.5)
            for c in range(count):
                x = pad + c * (w + pad)
                band[:h, x:x + w] = images[c].reshape(h, w)
            left -= count
            yield to_pixels(band)

    return write_png_bands(path, base_w * scale, base_h * scale, bands())


def manifold_latents(n: int, dtype=np.float64) -> np.ndarray:
    """An n x n grid of 2-D latents at the standard normal's quantiles (Kingma & Welling fig. 4)."""
    q = ndtri(np.linspace(0.5 / n, 1 - 0.5 / n, n))
    zy, zx = np.meshgrid(q[::-1], q, indexing="ij")
    return np.stack([zx.ravel(), zy.ravel()], axis=1).astype(dtype)


def save_manifold(path, decode_mean, image_shape: tuple[int, int], dtype, n: int = 15) -> Path:
    """Decoded means over a grid of a 2-D latent space."""
    return write_png(path, image_grid(decode_mean(manifold_latents(n, dtype)), image_shape, n,
                                      pad=0, scale=max(1, _scale_for(image_shape) // 2)))


def save_learning_curves(path, history: list[dict]) -> bool:
    """Plot train and validation negative ELBO per epoch; False when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError:
        return False
    epochs = [h["epoch"] for h in history]
    fig, ax = plt.subplots(figsize=(6, 4))
    for key, label in (("train_loss", "train"), ("valid_loss", "validation")):
        ax.plot(epochs, [h[key] for h in history], marker="o", ms=3, label=label)
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("negative ELBO (nats per datapoint)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with atomic_path(path, ".png") as tmp:  # matplotlib picks the format by extension
            fig.savefig(tmp, dpi=100)
    finally:
        plt.close(fig)
    return True
