"""Pictures: image grids as PNG (no dependencies); the latent scatter and the learning
curves (matplotlib, optional).

Image grids (reconstructions beside their inputs, samples, the 2-D latent manifold) are
written by a tiny PNG encoder (zlib + the PNG chunk format) and labelled in a built-in pixel
font (:mod:`minivae.tool.pixelfont`), so they are always drawn and always say what they show.
The scatter of the encoder means and the learning curves need matplotlib (``pip install
'minivae[plots]'``); without it their functions return None and the caller says so.

The ``*_picture`` functions return a uint8 picture and the ``*_png`` functions PNG bytes;
they write nothing. Files are written whole (:mod:`minivae.tool.files`).
"""

from __future__ import annotations

import io
import math
import struct
import textwrap
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
from scipy.special import ndtri

from . import pixelfont
from .files import atomic_open

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
    raw = _filter_up(img.reshape(h, -1), np.zeros(img[0].size, np.uint8))
    ihdr = struct.pack(">IIBBBBB", w, h, 8, color_type, 0, 0, 0)
    return (_PNG_SIGNATURE + _png_chunk(b"IHDR", ihdr)
            + _png_chunk(b"IDAT", zlib.compress(raw, ZLIB_LEVEL)) + _png_chunk(b"IEND", b""))


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: zlib's compression level: with the "Up" filter, level 2 compresses these pictures
#: better than level 6 without it, in half the time (measured)
ZLIB_LEVEL = 2


def _filter_up(rows: np.ndarray, above: np.ndarray) -> bytes:
    """Rows of bytes in PNG filter type 2, "Up": each byte minus the one above it (mod 256),
    ``above`` being the row before the first. Enlarged images repeat rows and change
    slowly down a column, so most differences are 0 or small, and compress well."""
    diff = np.diff(rows, axis=0, prepend=above[None, :])  # uint8: wraps mod 256
    return np.concatenate([np.full((len(rows), 1), 2, np.uint8), diff], axis=1).tobytes()


def _png_chunk(tag: bytes, data: bytes) -> bytes:
    return (struct.pack(">I", len(data)) + tag + data
            + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF))


def decode_png(raw: bytes) -> np.ndarray:
    """The pixels (H, W) uint8 of a greyscale PNG written by this module: the inverse of
    :func:`encode_png` and :func:`write_png_bands` (filter types 0 and 2 only), for tests
    and for reading a run's pictures back."""
    if raw[:8] != _PNG_SIGNATURE or raw[12:16] != b"IHDR" or raw[24:26] != b"\x08\x00":
        raise ValueError("not an 8-bit greyscale PNG")
    w, h = struct.unpack(">II", raw[16:24])
    pos, idat = 8, []
    while pos < len(raw):
        n = struct.unpack(">I", raw[pos:pos + 4])[0]
        if raw[pos + 4:pos + 8] == b"IDAT":
            idat.append(raw[pos + 8:pos + 8 + n])
        pos += 12 + n
    rows = np.frombuffer(zlib.decompress(b"".join(idat)), np.uint8).reshape(h, w + 1)
    pixels, above = np.empty((h, w), np.uint8), np.zeros(w, np.uint8)
    for i, (kind, data) in enumerate(zip(rows[:, 0], rows[:, 1:], strict=True)):
        if kind not in (0, 2):
            raise ValueError(f"row {i}: PNG filter type {kind}, not 0 (None) or 2 (Up)")
        pixels[i] = above = data + above if kind == 2 else data
    return pixels


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
    z = zlib.compressobj(ZLIB_LEVEL)
    rows, above = 0, np.zeros(width, np.uint8)
    with atomic_open(path) as f:
        f.write(_PNG_SIGNATURE + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8,
                                                                 0, 0, 0, 0)))
        for band in bands:
            if band.dtype != np.uint8 or band.ndim != 2 or band.shape[1] != width:
                raise ValueError(f"a band must be uint8 (rows, {width}), got {band.dtype} "
                                 f"{band.shape}")
            data = z.compress(_filter_up(band, above))
            above = band[-1] if len(band) else above
            if data:
                f.write(_png_chunk(b"IDAT", data))
            rows += len(band)
        if rows != height:
            raise ValueError(f"the bands held {rows} rows, the picture has {height}")
        f.write(_png_chunk(b"IDAT", z.flush()) + _png_chunk(b"IEND", b""))
    return path


# ----------------------------------------------------------------------
# tiles: images as uint8 pixels, laid out in a grid
# ----------------------------------------------------------------------

#: grey levels of the pictures: text, the page around a grid, the gaps between its tiles
INK, PAPER, GAP = 0, 255, 128


#: images this small (pixels on a side) are enlarged smoothly (bilinear), larger ones by
#: repeating pixels: 8x8 digits drawn as blocks are hard to read, MNIST's 28x28 are not
SMOOTH_BELOW = 16


def smooths(image_shape: tuple[int, int]) -> bool:
    """Are images of this shape enlarged smoothly (see :data:`SMOOTH_BELOW`)?"""
    return max(image_shape) < SMOOTH_BELOW


def _scale_for(image_shape) -> int:
    """How many times larger images are drawn: to tiles of about 112 pixels (MNIST 4x), or
    80 for small images enlarged smoothly (8x8 digits 10x)."""
    return max(1, (80 if smooths(image_shape) else 112) // max(image_shape))


def _gap_for(scale: int) -> int:
    """Grey pixels between tiles: 1 between images drawn at their size, 2 between enlarged ones."""
    return 1 if scale < 4 else 2


def _bilinear(n: int, scale: int) -> np.ndarray:
    """(n*scale, n) weights of linear interpolation between pixel centres (edges held)."""
    u = np.clip((np.arange(n * scale) + 0.5) / scale - 0.5, 0, n - 1)
    lo = np.minimum(np.floor(u).astype(int), n - 2) if n > 1 else np.zeros(len(u), int)
    frac = u - lo
    m = np.zeros((n * scale, n))
    m[np.arange(len(u)), lo] = 1 - frac
    if n > 1:
        m[np.arange(len(u)), lo + 1] += frac
    return m


def _smooth_note(image_shape, scale: int) -> str:
    """What a title says of images enlarged smoothly (none for others)."""
    h, w = image_shape
    return f" [{h}x{w} images, enlarged smoothly]" if scale > 1 and smooths(image_shape) else ""


def to_pixels(images: np.ndarray, image_shape: tuple[int, int], scale: int = 1) -> np.ndarray:
    """(N, h*w) images with values in [0, 1] (clipped) as uint8 tiles (N, h*scale, w*scale).

    Each pixel becomes a ``scale`` x ``scale`` block, or, for images smaller than
    :data:`SMOOTH_BELOW` pixels, the image is interpolated bilinearly.
    """
    images = np.asarray(images)
    h, w = image_shape
    if images.ndim != 2 or images.shape[1] != h * w:
        raise ValueError(f"images must have shape (N, {h * w}), got {images.shape}")
    tiles = np.clip(images.reshape(-1, h, w), 0.0, 1.0)
    if scale > 1 and smooths(image_shape):
        tiles = _bilinear(h, scale) @ tiles @ _bilinear(w, scale).T
    tiles = np.round(tiles * 255).astype(np.uint8)
    if scale > 1 and not smooths(image_shape):
        tiles = np.repeat(np.repeat(tiles, scale, axis=1), scale, axis=2)
    return tiles


def tile(tiles: np.ndarray, ncols: int, gap: int = 1) -> np.ndarray:
    """Lay (N, th, tw) uint8 tiles out row by row, ``ncols`` per row, with ``gap`` grey
    pixels between and around them; an incomplete last row ends in grey."""
    n, th, tw = tiles.shape
    nrows = -(-n // ncols)
    grid = np.full((nrows * (th + gap) + gap, ncols * (tw + gap) + gap), GAP, np.uint8)
    for i in range(n):
        r, c = divmod(i, ncols)
        y, x = gap + r * (th + gap), gap + c * (tw + gap)
        grid[y:y + th, x:x + tw] = tiles[i]
    return grid


def image_grid(images: np.ndarray, image_shape: tuple[int, int], ncols: int,
               pad: int = 1, scale: int = 1) -> np.ndarray:
    """Tile (N, h*w) images with values in [0, 1] into one uint8 (H, W) picture.

    Images are laid out row by row, ``ncols`` per row, each pixel enlarged to
    ``scale`` x ``scale``, with ``pad`` grey pixels between and around them.
    """
    return tile(to_pixels(images, image_shape, scale), ncols, pad)


# ----------------------------------------------------------------------
# words in pictures: titles and labels in the pixel font
# ----------------------------------------------------------------------

#: a picture with a title is at least this wide (pixels), so that the title has room
MIN_TITLED_WIDTH = 360


def text_scale(width: int) -> int:
    """Font pixels are 2 x 2 in a picture at least 640 pixels wide, else 1 x 1."""
    return 2 if width >= 640 else 1


def _stamp(page: np.ndarray, lines, y: int, x: int, scale: int, align: str = "left") -> None:
    """Write ``lines`` in ink on ``page`` with the top at ``y``; ``x`` is the left edge,
    the centre or the right edge as ``align`` says."""
    ink = pixelfont.render(lines, scale)
    h, w = ink.shape
    x0 = {"left": x, "centre": x - w // 2, "right": x - w}[align]
    page[y:y + h, x0:x0 + w][ink] = INK


def title_band(title: str, width: int) -> np.ndarray:
    """A white band ``width`` pixels wide holding ``title``, wrapped to fit."""
    s = text_scale(width)
    margin = 4 * s
    lines = pixelfont.wrap(title, (width - 2 * margin + s) // (pixelfont.ADVANCE * s))
    h, _ = pixelfont.text_size(lines, s)
    band = np.full((h + 2 * margin, width), PAPER, np.uint8)
    _stamp(band, lines, margin, margin, s)
    return band


def _centred(picture: np.ndarray, width: int) -> np.ndarray:
    """``picture`` in the middle of a white page ``width`` pixels wide."""
    left = (width - picture.shape[1]) // 2
    return np.pad(picture, ((0, 0), (left, width - picture.shape[1] - left)),
                  constant_values=PAPER)


def with_title(picture: np.ndarray, title: str) -> np.ndarray:
    """``picture`` below a band holding ``title`` (widened to :data:`MIN_TITLED_WIDTH`)."""
    width = max(picture.shape[1], MIN_TITLED_WIDTH)
    return np.concatenate([title_band(title, width), _centred(picture, width)])


# ----------------------------------------------------------------------
# the image grids of a run: reconstructions, samples, the 2-D manifold
# ----------------------------------------------------------------------


def reconstruction_picture(rows: list[tuple[str, np.ndarray]], image_shape: tuple[int, int],
                           title: str, per_row: int = 8) -> np.ndarray:
    """Images in labelled rows, one row of each kind below the other: e.g. inputs with
    their reconstructions right below them.

    ``rows`` is ``[(label, images), ...]``, every ``images`` (N, h*w) for the same N
    datapoints. Per ``per_row`` datapoints, one row of each kind, labelled at its left;
    a white band separates one such group of rows from the next.
    """
    n = len(rows[0][1])
    for label, images in rows:
        if np.shape(images) != np.shape(rows[0][1]):
            raise ValueError(f"the {label!r} images must have the shape of the "
                             f"{rows[0][0]!r} images {np.shape(rows[0][1])}, got "
                             f"{np.shape(images)}")
    scale = _scale_for(image_shape)
    gap = _gap_for(scale)
    th, tw = image_shape[0] * scale, image_shape[1] * scale
    blank = np.full((1, th, tw), GAP, np.uint8)
    blocks = []
    for start in range(0, n, per_row):
        group = [to_pixels(images[start:start + per_row], image_shape, scale)
                 for _, images in rows]
        group = [np.concatenate([g, np.repeat(blank, per_row - len(g), axis=0)]) for g in group]
        blocks.append(tile(np.concatenate(group), per_row, gap))
    ls = text_scale(per_row * (tw + gap))
    label_w = max(len(label) for label, _ in rows) * pixelfont.ADVANCE * ls + 4 * ls
    sep = 4 * gap + 4
    height = len(blocks) * (blocks[0].shape[0] + sep) - sep
    page = np.full((height, label_w + blocks[0].shape[1]), PAPER, np.uint8)
    text_h = pixelfont.GLYPH_H * ls
    for b, block in enumerate(blocks):
        y = b * (block.shape[0] + sep)
        page[y:y + block.shape[0], label_w:] = block
        for r, (label, _) in enumerate(rows):
            centre = y + gap + r * (th + gap) + th // 2
            _stamp(page, label, centre - text_h // 2, label_w - 3 * ls, ls, align="right")
    return with_title(page, title + _smooth_note(image_shape, scale))


def _grid_geometry(n: int, image_shape: tuple[int, int]):
    """Columns, rows, scale and gap of a square-ish grid of ``n`` images, and its size.

    Images are enlarged (as :func:`_scale_for` says) only while the grid stays
    :data:`MAX_ENLARGED_WIDTH` pixels wide.
    """
    h, w = image_shape
    ncols = math.isqrt(n - 1) + 1  # ceil(sqrt(n))
    nrows = -(-n // ncols)
    scale = _scale_for(image_shape)
    while scale > 1 and ncols * (w * scale + _gap_for(scale)) + _gap_for(scale) \
            > MAX_ENLARGED_WIDTH:
        scale -= 1
    gap = _gap_for(scale)
    return (ncols, nrows, scale, gap, ncols * (w * scale + gap) + gap,
            nrows * (h * scale + gap) + gap)


def samples_picture(samples: np.ndarray, image_shape: tuple[int, int],
                    title: str) -> np.ndarray:
    """A square-ish grid of samples below ``title``."""
    ncols, _, scale, gap, _, _ = _grid_geometry(len(samples), image_shape)
    return with_title(tile(to_pixels(samples, image_shape, scale), ncols, gap),
                      title + _smooth_note(image_shape, scale))


def save_samples(path, samples: np.ndarray, image_shape: tuple[int, int],
                 title: str) -> Path:
    """Write :func:`samples_picture` as a PNG file."""
    return write_png(path, samples_picture(samples, image_shape, title))


def save_sample_grid(path, n: int, draw: Callable[[int], np.ndarray],
                     image_shape: tuple[int, int], title: str) -> Path:
    """The picture of :func:`save_samples` for any number of samples, in bounded memory.

    ``draw(count)`` returns the next ``count`` images, (count, h*w) in [0, 1]. The grid
    is drawn one row of images at a time and streamed to the PNG file
    (:func:`write_png_bands`), so memory is one row of images, not the picture: 100,000
    MNIST samples make a picture of 85 million pixels. Images are enlarged only while the
    picture stays :data:`MAX_ENLARGED_WIDTH` pixels wide. A picture of more than
    :data:`MAX_PIXELS` pixels is refused before anything is drawn. The pixels equal those
    of :func:`save_samples` on the same images.
    """
    h, w = image_shape
    ncols, nrows, scale, gap, grid_w, grid_h = _grid_geometry(n, image_shape)
    width = max(grid_w, MIN_TITLED_WIDTH)
    if width * grid_h > MAX_PIXELS:
        raise ValueError(f"a grid of {n:,} samples would be a picture of {width:,} x "
                         f"{grid_h:,} pixels, more than the {MAX_PIXELS:,} a picture may have; "
                         f"choose a smaller --n")
    head = title_band(title + _smooth_note(image_shape, scale), width)

    def bands():
        yield head
        yield _centred(np.full((gap, grid_w), GAP, np.uint8), width)
        left = n
        for _ in range(nrows):
            count = min(ncols, left)
            images = np.asarray(draw(count))
            if images.shape != (count, h * w):
                raise ValueError(f"draw({count}) must return shape ({count}, {h * w}), got "
                                 f"{images.shape}")
            if not np.isfinite(images).all():
                raise ValueError("the decoder produced non-finite values (NaN or inf); no "
                                 "picture was written")
            band = tile(to_pixels(images, image_shape, scale), ncols, gap)[gap:]
            if count < ncols:  # the last row: grey where no image is
                band[:, gap + count * (w * scale + gap):] = GAP
            left -= count
            yield _centred(band, width)

    return write_png_bands(path, width, len(head) + grid_h, bands())


def manifold_latents(n: int, dtype=np.float64) -> np.ndarray:
    """An n x n grid of 2-D latents at the standard normal's quantiles (Kingma & Welling fig. 4).

    Row by row from the top: z2 falls down the rows, z1 rises along each row; z1 and z2
    each take the values ``manifold_axis(n)``.
    """
    q = manifold_axis(n)
    zy, zx = np.meshgrid(q[::-1], q, indexing="ij")
    return np.stack([zx.ravel(), zy.ravel()], axis=1).astype(dtype)


def manifold_axis(n: int) -> np.ndarray:
    """The quantiles (i + 1/2) / n, i = 0..n-1, of N(0, 1): n values of equal prior mass."""
    return ndtri(np.linspace(0.5 / n, 1 - 0.5 / n, n))


def manifold_picture(decode_mean, image_shape: tuple[int, int], dtype, title: str,
                     n: int | None = None) -> np.ndarray:
    """Decoded means over an n x n grid of a 2-D latent space, with z1 and z2 on the axes.

    By default n = 15, or 10 for images enlarged smoothly (the 8x8 digits: fewer, larger
    tiles); the picture is about 840 pixels wide.
    """
    n = (10 if smooths(image_shape) else 15) if n is None else n
    scale = max(1, (840 // n) // max(image_shape))
    gap = _gap_for(scale)
    grid = tile(to_pixels(decode_mean(manifold_latents(n, dtype)), image_shape, scale), n, gap)
    th, tw = image_shape[0] * scale, image_shape[1] * scale
    q = manifold_axis(n)
    s = text_scale(grid.shape[1])
    values = [f"{v:.2f}" for v in q]
    value_w = max(len(v) for v in values) * pixelfont.ADVANCE * s
    text_h = pixelfont.GLYPH_H * s
    every = -(-(value_w + 3 * pixelfont.ADVANCE * s) // (tw + gap))  # labels that do not touch
    labelled = [i for i in range(n) if (i - n // 2) % every == 0]  # the centre always
    tick, name_w = 3 * s, 3 * pixelfont.ADVANCE * s
    left = name_w + value_w + 3 * tick
    bottom = 2 * text_h + 4 * tick
    page = np.full((grid.shape[0] + bottom, left + grid.shape[1]), PAPER, np.uint8)
    page[:grid.shape[0], left:] = grid
    for i in labelled:
        y = gap + i * (th + gap) + th // 2  # row i shows z2 = q[n - 1 - i]
        page[y - s // 2:y - s // 2 + s, left - tick:left] = INK
        _stamp(page, values[n - 1 - i], y - text_h // 2, left - 2 * tick, s, align="right")
        x = left + gap + i * (tw + gap) + tw // 2  # column i shows z1 = q[i]
        page[grid.shape[0]:grid.shape[0] + tick, x - s // 2:x - s // 2 + s] = INK
        _stamp(page, values[i], grid.shape[0] + 2 * tick, x, s, align="centre")
    _stamp(page, "z2", grid.shape[0] // 2 - text_h // 2, 0, s)
    _stamp(page, "z1", grid.shape[0] + 3 * tick + text_h, left + grid.shape[1] // 2, s,
           align="centre")
    return with_title(page, title + _smooth_note(image_shape, scale))


# ----------------------------------------------------------------------
# matplotlib pictures: the latent scatter and the learning curves
# ----------------------------------------------------------------------


def _figure(figsize):
    """A matplotlib Figure drawn without pyplot (no global state, no backend switch), or
    None when matplotlib is not installed."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return None
    return Figure(figsize=figsize, dpi=100)


def _png_bytes(fig, title: str, right: float = 0.97) -> bytes:
    """The figure as PNG bytes, under ``title`` (wrapped). Fixed margins: the automatic
    layout (``tight_layout``) would cost as much again as the drawing."""
    lines = textwrap.wrap(title, 90)
    fig.suptitle("\n".join(lines), fontsize=9, x=0.01, ha="left")
    height = fig.get_figheight()
    fig.subplots_adjust(left=0.11, right=right, bottom=0.55 / height,
                        top=1 - (0.35 + 0.16 * len(lines)) / height)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def project_2d(means: np.ndarray) -> tuple[np.ndarray, tuple[str, str]]:
    """Two coordinates per row of ``means`` (N, Z), and what they are (axis labels).

    Z = 2: z1 and z2 themselves. Z > 2: the first two principal components of the
    means (centred; each component's sign fixed so that its largest loading is
    positive, so that the picture does not flip between epochs), each labelled with
    the share of the means' variance it carries. Z = 1: z1 against a random jitter.
    """
    means = np.asarray(means, dtype=np.float64)
    z = means.shape[1]
    if z == 2:
        return means, ("z1", "z2")
    if z == 1:
        jitter = np.random.default_rng(0).uniform(-1, 1, len(means))
        return np.stack([means[:, 0], jitter], axis=1), ("z1", "random jitter (no meaning)")
    centred = means - means.mean(axis=0)
    _, sv, vt = np.linalg.svd(centred, full_matrices=False)
    vt = vt[:2] * np.sign(vt[:2, np.argmax(np.abs(vt[:2]), axis=1)].diagonal())[:, None]
    share = sv[:2] ** 2 / max(float(np.sum(sv ** 2)), np.finfo(float).tiny)
    return centred @ vt.T, tuple(f"principal component {i + 1} of mu(x), Z = {z} "
                                 f"({100 * share[i]:.0f}% of its variance)" for i in range(2))


def latent_scatter_png(means: np.ndarray, labels: np.ndarray | None, title: str,
                       no_labels: str = "no labels: points are not coloured") -> bytes | None:
    """PNG bytes of the encoder means mu(x) (N, Z) as points in the plane (see
    :func:`project_2d`), coloured by ``labels`` (N,) when given; None without matplotlib.
    ``no_labels`` is written in the picture when there are no labels."""
    fig = _figure((7.2, 6.0))
    if fig is None:
        return None
    from matplotlib import colormaps
    from matplotlib.lines import Line2D

    xy, (xlabel, ylabel) = project_2d(means)
    ax = fig.subplots()
    size, alpha = (16, 0.8) if len(xy) <= 2000 else (4, 0.5)
    if labels is None:
        ax.scatter(xy[:, 0], xy[:, 1], s=size, alpha=alpha, color="0.25", linewidths=0)
        ax.text(0.02, 0.98, textwrap.fill(no_labels, 60), transform=ax.transAxes, va="top",
                bbox={"facecolor": "white", "edgecolor": "0.6", "alpha": 0.9})
    else:
        classes, index = np.unique(np.asarray(labels), return_inverse=True)
        cmap = colormaps["tab10" if len(classes) <= 10 else "tab20"]
        ax.scatter(xy[:, 0], xy[:, 1], s=size, alpha=alpha, c=cmap(index % cmap.N),
                   linewidths=0)
        ax.legend(handles=[Line2D([], [], ls="", marker="o", color=cmap(i % cmap.N),
                                  label=str(c)) for i, c in enumerate(classes)],
                  title="label", loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    return _png_bytes(fig, title, right=0.97 if labels is None else 0.86)


def learning_curves_png(history: list[dict], title: str) -> bytes | None:
    """PNG bytes of the train and validation negative ELBO per epoch; None without matplotlib."""
    fig = _figure((6.4, 4.2))
    if fig is None:
        return None
    from matplotlib.ticker import MaxNLocator

    epochs = [h["epoch"] for h in history]
    ax = fig.subplots()
    for key, label in (("train_loss", "train"), ("valid_loss", "validation")):
        ax.plot(epochs, [h[key] for h in history], marker="o", ms=3, label=label)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("negative ELBO (nats per datapoint)")
    ax.legend()
    ax.grid(alpha=0.3)
    return _png_bytes(fig, title)
