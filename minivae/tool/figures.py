"""Pictures: image grids as PNG (no dependencies) and learning curves (matplotlib, optional).

Image grids are written by a tiny PNG encoder (zlib + the PNG chunk format),
so reconstructions, samples and the 2-D latent manifold are always drawn.
Learning curves need matplotlib (``pip install 'minivae[plots]'``); without it
:func:`save_learning_curves` returns False and the caller says so.
"""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import numpy as np
from scipy.special import ndtri


def encode_png(img: np.ndarray) -> bytes:
    """PNG bytes of an 8-bit greyscale (H, W) or RGB (H, W, 3) uint8 image."""
    img = np.asarray(img)
    if img.dtype != np.uint8 or img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] != 3):
        raise ValueError(f"image must be uint8 (H, W) or (H, W, 3), got {img.dtype} {img.shape}")
    h, w = img.shape[:2]
    color_type = 0 if img.ndim == 2 else 2
    rows = img.reshape(h, -1)
    raw = np.concatenate([np.zeros((h, 1), np.uint8), rows], axis=1).tobytes()  # filter 0

    def chunk(tag: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + tag + data
                + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF))

    ihdr = struct.pack(">IIBBBBB", w, h, 8, color_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b""))


def write_png(path, img: np.ndarray) -> Path:
    """Write ``img`` (uint8) as a PNG file, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_bytes(encode_png(img))
    os.replace(tmp, path)
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
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)
    return True
