"""Datasets and their loaders.

Every loader returns a :class:`Dataset`: three splits ``train``, ``valid`` and
``test`` of shape (N, D), each a float64 array (or uint8 0/1 for the binary
MNIST files, to save memory), plus what is known about them (image shape, are
they binary, an exact log-likelihood when there is one). Training code turns
them into the model's dtype explicitly with :meth:`Dataset.astype`.

=================== ====================================================================
name                what
=================== ====================================================================
``digits``          scikit-learn's 8x8 handwritten digits, grey levels scaled to [0, 1];
                    1797 images split 1297 / 200 / 300 by a fixed seed (extra ``digits``)
``binarized-mnist`` the static binarization of Larochelle & Murray (2011), 50,000 /
                    10,000 / 10,000; ``.npz`` or ``.amat`` from ``data_dir`` or the cache,
                    downloaded (and SHA-256 checked) when absent and online
``mnist``           the official IDX files (gzip or not), grey levels scaled to [0, 1];
                    the 60,000 training images split 50,000 / 10,000, test = t10k
``linear-gaussian`` samples of a random linear-Gaussian model x = Az + b + noise, whose
                    exact marginal N(b, AA^T + Sigma) gives the true log p(x)
``synthetic``       8x8 binary "bars" images (no files, no extras)
=================== ====================================================================

Labels (:attr:`Dataset.labels`, the class of each datapoint per split) come with
``digits`` and with ``mnist`` when its label files are there; pictures use them. The
binarized MNIST has none: its splits are not in the order of the official MNIST files.

Grey-level data and the Bernoulli likelihood: :func:`check_likelihood_data`
refuses them (a Bernoulli log-likelihood of grey levels is not a
log-likelihood of anything); :func:`binarize` draws x_bin ~ Bernoulli(x), once
("static") or each epoch ("dynamic").
"""

from __future__ import annotations

import gzip
import hashlib
import os
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ..theory.exact import LinearGaussian

DATASETS = ("digits", "binarized-mnist", "mnist", "linear-gaussian", "synthetic")
#: the datasets read from files (in ``--data-dir``); the others are built in memory
FILE_DATASETS = ("binarized-mnist", "mnist")

#: Public location of the Larochelle & Murray binarized MNIST text files.
BINARIZED_MNIST_URL = "http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/"
BINARIZED_MNIST_SPLITS = {"train": 50000, "valid": 10000, "test": 10000}
#: SHA-256 of each split parsed into a C-ordered uint8 (N, 784) array of 0/1.
BINARIZED_MNIST_SHA256 = {
    "train": "43490d4d6ac9002727af4426d8748609fdb7e4094fa65ad8d681ea60082a7a5a",
    "valid": "069b4f0beb389b776478c3e872b4df71c95ac4be64d7cbe6d32e24ebac8e6d5e",
    "test": "ca0294c3b8d984c7a1dc891015a8eea6f37bae59a34e35ea0fc8c47110a8dd86",
}

# The URL opener used for downloads; tests replace it (never the network in tests).
_urlopen = urllib.request.urlopen


@dataclass
class Dataset:
    """Three splits of (N, D) data and what is known about them."""

    name: str
    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray
    image_shape: tuple[int, int] | None
    binary: bool
    description: str
    #: exact per-datapoint log p(x) in nats, when the generating model is known
    exact_log_marginal: Callable[[np.ndarray], np.ndarray] | None = field(default=None, repr=False)
    #: the class of each datapoint, split by split (``{"train": (N,) ints, ...}``, in the
    #: order of the splits' rows), for datasets that have labels; only pictures use them
    labels: dict[str, np.ndarray] | None = field(default=None, repr=False)

    def __post_init__(self):
        if self.labels is not None:
            for split in ("train", "valid", "test"):
                n, got = len(getattr(self, split)), np.shape(self.labels.get(split))
                if got != (n,):
                    raise ValueError(f"labels[{split!r}] must have shape ({n},) like the "
                                     f"{split} split of {self.name}, got {got}")

    @property
    def dim(self) -> int:
        return int(self.train.shape[1])

    def astype(self, dtype) -> Dataset:
        """The same dataset with every split converted to ``dtype`` (explicitly, once)."""
        dtype = np.dtype(dtype)
        return replace(self, train=self.train.astype(dtype), valid=self.valid.astype(dtype),
                       test=self.test.astype(dtype))


def is_binary(x: np.ndarray) -> bool:
    """True when every entry of ``x`` is 0 or 1."""
    if x.dtype.kind == "u":  # unsigned integers: no full-size temporaries (39 MB each on MNIST)
        return x.size == 0 or int(x.max()) <= 1
    return bool(np.all((x == 0) | (x == 1)))


def check_likelihood_data(x: np.ndarray, likelihood: str, dataset: str = "the data") -> None:
    """Refuse the Bernoulli likelihood on data that is not 0/1.

    A Bernoulli "log-likelihood" of grey levels (binary cross-entropy) is not
    the log-density of any model of those data, so the numbers would be false.
    """
    if likelihood == "bernoulli" and not is_binary(x):
        lo, hi = float(np.min(x)), float(np.max(x))
        raise ValueError(
            f"the Bernoulli likelihood needs 0/1 data, but {dataset} has values in "
            f"[{lo:g}, {hi:g}] that are not all 0 or 1; binarize it (--binarize dynamic or "
            f"static: x ~ Bernoulli(grey level)) or use a Gaussian likelihood "
            f"(--likelihood gaussian-hetero, gaussian-shared, gaussian-isotropic or gaussian-fixed)"
        )


def binarize(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One draw x_bin ~ Bernoulli(x) for grey levels x in [0, 1], in x's float dtype."""
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    dtype = x.dtype if x.dtype in (np.float32, np.float64) else np.dtype(np.float64)
    return (rng.random(x.shape, dtype=dtype) < x).astype(dtype)


def cache_dir() -> Path:
    """Where downloads go: ``$MINIVAE_DATA`` if set, else ``~/.cache/minivae``."""
    env = os.environ.get("MINIVAE_DATA")
    return Path(env) if env else Path.home() / ".cache" / "minivae"


# ----------------------------------------------------------------------
# synthetic bars (kept as it is: used elsewhere)
# ----------------------------------------------------------------------


def synthetic_bars(n: int, rng: np.random.Generator, side: int = 8, p_bar: float = 0.2,
                   flip: float = 0.02) -> np.ndarray:
    """Binary side x side images made of random horizontal and vertical bars.

    Each of the 2*side bars is on with probability ``p_bar``; each pixel is then
    flipped with probability ``flip``. Returns float64 0/1 data of shape
    (n, side*side): a dataset with clear latent structure (which bars are on)
    for a quick training run.
    """
    rows = rng.random((n, side)) < p_bar
    cols = rng.random((n, side)) < p_bar
    img = rows[:, :, None] | cols[:, None, :]
    img ^= rng.random(img.shape) < flip
    return img.reshape(n, side * side).astype(np.float64)


def load_synthetic(seed: int = 0, n_train: int = 2000, n_valid: int = 500,
                   n_test: int = 500) -> Dataset:
    """The bars dataset, generated from ``seed``."""
    rng = np.random.default_rng(seed)
    x = synthetic_bars(n_train + n_valid + n_test, rng)
    return Dataset("synthetic", x[:n_train], x[n_train:n_train + n_valid],
                   x[n_train + n_valid:], (8, 8), True, "8x8 binary bars images")


# ----------------------------------------------------------------------
# digits (scikit-learn)
# ----------------------------------------------------------------------


def load_digits(seed: int = 0, n_valid: int = 200, n_test: int = 300) -> Dataset:
    """scikit-learn's 8x8 digits, grey levels 0..16 scaled to [0, 1].

    The 1797 images are permuted by ``default_rng(seed)`` and split into
    test (first ``n_test``), validation (next ``n_valid``) and training (rest).
    """
    try:
        from sklearn.datasets import load_digits as sk_load_digits
    except ImportError as exc:
        raise ImportError(
            "the digits dataset needs scikit-learn: pip install 'minivae[digits]' "
            "(or pip install scikit-learn), or choose another --dataset"
        ) from exc
    digits = sk_load_digits()
    x = np.asarray(digits.data, dtype=np.float64) / 16.0
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = x[order], digits.target[order].astype(np.uint8)  # labels in the images' order
    test, valid, train = x[:n_test], x[n_test:n_test + n_valid], x[n_test + n_valid:]
    labels = {"test": y[:n_test], "valid": y[n_test:n_test + n_valid],
              "train": y[n_test + n_valid:]}
    return Dataset("digits", train, valid, test, (8, 8), False,
                   f"scikit-learn 8x8 digits in [0, 1], split {len(train)}/{len(valid)}/"
                   f"{len(test)} by seed {seed}", labels=labels)


# ----------------------------------------------------------------------
# linear-Gaussian model with a known marginal
# ----------------------------------------------------------------------


def load_linear_gaussian(seed: int = 0, dim: int = 10, latent_dim: int = 2,
                         n_train: int = 5000, n_valid: int = 1000,
                         n_test: int = 1000) -> Dataset:
    r"""Data from a random :class:`~minivae.theory.exact.LinearGaussian` model, with its
    exact log-likelihood.

    .. math::  z \sim N(0, I_k),\quad x = Az + b + \epsilon,\quad
               \epsilon \sim N(0, \Sigma),\ \Sigma = \mathrm{diag}(s^2)

    so :math:`p(x) = N(x; b, AA^\top + \Sigma)` exactly; ``exact_log_marginal(x)`` is the
    model's ``log_marginal``, per datapoint (nats). A, b and s are drawn from
    ``default_rng(seed)``: A ~ N(0, 1), b ~ N(0, 1), s^2 ~ U(0.1, 0.5).
    """
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((dim, latent_dim))
    b = rng.standard_normal(dim)
    model = LinearGaussian(A, b, rng.uniform(0.1, 0.5, size=dim))
    _, x = model.sample(rng, n_train + n_valid + n_test)

    def exact_log_marginal(data: np.ndarray) -> np.ndarray:
        return np.atleast_1d(model.log_marginal(np.asarray(data, dtype=np.float64)))

    return Dataset("linear-gaussian", x[:n_train], x[n_train:n_train + n_valid],
                   x[n_train + n_valid:], None, False,
                   f"linear-Gaussian model, D={dim}, k={latent_dim}, seed {seed} "
                   f"(exact log p(x) known)", exact_log_marginal)


# ----------------------------------------------------------------------
# IDX files (MNIST)
# ----------------------------------------------------------------------

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4",
               0x0E: ">f8"}


def _read_maybe_gzip(path: Path) -> bytes:
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise ValueError(f"{path}: corrupt or truncated gzip data ({exc})") from exc
    return raw


def read_idx(path) -> np.ndarray:
    """Read an IDX file (gzip-compressed or not) into an array of its declared shape.

    Header: two zero bytes, a type code (0x08 = uint8, ...), the number of
    dimensions n, then n big-endian uint32 sizes. Raises ``ValueError`` for a
    wrong magic number, a truncated file, or a size that does not match the
    header.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"IDX file not found: {path}")
    raw = _read_maybe_gzip(path)
    if len(raw) < 4:
        raise ValueError(f"{path}: truncated IDX file ({len(raw)} bytes, no complete header)")
    if raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(
            f"{path}: wrong magic number 0x{raw[:4].hex()}; an IDX file starts with 00 00, a "
            f"type code in {[hex(c) for c in _IDX_DTYPES]} and the number of dimensions"
        )
    ndim = raw[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise ValueError(f"{path}: truncated IDX header (ndim={ndim}, {len(raw)} bytes)")
    shape = tuple(int(s) for s in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    got = len(raw) - header
    if got < expected:
        raise ValueError(
            f"{path}: truncated IDX file: header says shape {shape} ({expected} bytes of data), "
            f"the file has {got}"
        )
    if got > expected:
        raise ValueError(
            f"{path}: size mismatch: header says shape {shape} ({expected} bytes of data), "
            f"the file has {got}"
        )
    if expected == 0:
        raise ValueError(f"{path}: the IDX file holds no data (shape {shape})")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).astype(
        dtype.newbyteorder("="))


def _find(directory: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (directory / name).is_file():
            return directory / name
    # the official files are sometimes renamed with a dot: train-images.idx3-ubyte
    alt = stem.replace("-idx", ".idx")
    for name in (alt, alt + ".gz"):
        if (directory / name).is_file():
            return directory / name
    return None


def load_mnist(data_dir, n_valid: int | None = None) -> Dataset:
    """MNIST from the official IDX files in ``data_dir``, grey levels scaled to [0, 1].

    Needs ``train-images-idx3-ubyte`` and ``t10k-images-idx3-ubyte`` (each
    optionally ``.gz``). The last ``n_valid`` training images are the
    validation split: by default 10,000 (the usual 50,000 / 10,000), or a sixth
    of a training file smaller than 20,000 images.
    """
    if data_dir is None:
        raise FileNotFoundError(
            "the mnist dataset reads the official IDX files: pass --data-dir DIR with "
            "train-images-idx3-ubyte(.gz) and t10k-images-idx3-ubyte(.gz) "
            "(from http://yann.lecun.com/exdb/mnist/)"
        )
    d = Path(data_dir)
    found = {s: _find(d, f"{s}-images-idx3-ubyte") for s in ("train", "t10k")}
    missing = [f"{s}-images-idx3-ubyte[.gz]" for s, p in found.items() if p is None]
    if missing:
        raise FileNotFoundError(
            f"mnist: {', '.join(missing)} not found in {d}; put the official IDX files there"
        )
    images = {}
    for split, path in found.items():
        a = read_idx(path)
        if a.ndim != 3 or a.dtype != np.uint8:
            raise ValueError(f"{path}: expected uint8 images of shape (N, rows, cols), "
                             f"got {a.dtype} {a.shape}")
        images[split] = a
    shape = images["train"].shape[1:]
    if images["t10k"].shape[1:] != shape:
        raise ValueError(f"mnist: train images are {shape} but test images are "
                         f"{images['t10k'].shape[1:]}")
    tr = images["train"].reshape(len(images["train"]), -1) / 255.0
    te = images["t10k"].reshape(len(images["t10k"]), -1) / 255.0
    if len(tr) < 2:
        raise ValueError(f"{found['train']}: {len(tr)} training image(s); at least 2 are "
                         f"needed (a training and a validation split)")
    if n_valid is None:
        n_valid = 10000 if len(tr) > 20000 else max(1, len(tr) // 6)
    if not 0 < n_valid < len(tr):
        raise ValueError(f"n_valid must be in (0, {len(tr)}), got {n_valid}")
    labels = _mnist_labels(d, {"train": len(tr), "t10k": len(te)})
    if labels is not None:
        labels = {"train": labels["train"][:-n_valid], "valid": labels["train"][-n_valid:],
                  "test": labels["t10k"]}
    return Dataset("mnist", tr[:-n_valid], tr[-n_valid:], te, (int(shape[0]), int(shape[1])),
                   False, f"MNIST from IDX files in {d}, grey levels in [0, 1]"
                   + ("" if labels else " (no label files: pictures are not coloured by digit)"),
                   labels=labels)


def _mnist_labels(d: Path, sizes: dict[str, int]) -> dict[str, np.ndarray] | None:
    """The digit of each image, from ``train-labels-idx1-ubyte`` and ``t10k-labels-idx1-ubyte``
    (each optionally ``.gz``) when both are in ``d``; None when either is missing. A
    labels file that does not match its images is refused."""
    found = {s: _find(d, f"{s}-labels-idx1-ubyte") for s in sizes}
    if None in found.values():
        return None
    labels = {}
    for split, path in found.items():
        a = read_idx(path)
        if a.shape != (sizes[split],) or a.dtype != np.uint8:
            raise ValueError(f"{path}: expected {sizes[split]} uint8 labels, one per image of "
                             f"the {split} images file, got {a.dtype} {a.shape}; replace the "
                             f"file (or remove it: labels only colour pictures)")
        labels[split] = a
    return labels


# ----------------------------------------------------------------------
# binarized MNIST (Larochelle & Murray 2011): .npz, .amat, download
# ----------------------------------------------------------------------


def parse_amat(raw: bytes, source: str = "amat data", dim: int = 784) -> np.ndarray:
    """Parse Larochelle ``.amat`` text (rows of whitespace-separated 0/1) into uint8 (N, dim).

    Vectorized: every token must be a single character ``0`` or ``1``; any other
    character, or a row with a number of values other than ``dim``, is an error.
    """
    b = np.frombuffer(raw, dtype=np.uint8)
    digit = (b == ord("0")) | (b == ord("1"))
    space = (b == ord(" ")) | (b == ord("\t")) | (b == ord("\r")) | (b == ord("\n"))
    bad = ~(digit | space)
    if bad.any():
        pos = int(np.argmax(bad))
        raise ValueError(f"{source}: unexpected character {bytes([b[pos]])!r} at byte {pos}; "
                         f"binarized MNIST .amat files hold only 0/1 values")
    if (digit[1:] & digit[:-1]).any():
        raise ValueError(f"{source}: a value with more than one digit; expected single 0/1 values")
    newline = b == ord("\n")
    # row index of each byte: rows are separated by newlines; empty rows are dropped
    row_of = np.concatenate([[0], np.cumsum(newline[:-1])]) if len(b) else np.zeros(0, int)
    counts = np.bincount(row_of[digit], minlength=int(row_of[-1]) + 1 if len(b) else 0)
    counts = counts[counts > 0]
    if len(counts) == 0:
        raise ValueError(f"{source}: no data")
    if np.any(counts != dim):
        row = int(np.argmax(counts != dim))
        raise ValueError(f"{source}: row {row} has {int(counts[row])} values, expected {dim} "
                         f"(truncated or not a binarized MNIST file?)")
    return (b[digit] - ord("0")).reshape(len(counts), dim)


def _check_split(a: np.ndarray, split: str, source: str, verify: bool) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim != 2 or a.shape[1] != 784 or a.shape[0] == 0:
        raise ValueError(f"{source}: split {split!r} must have shape (N, 784) with N >= 1, "
                         f"got {a.shape}")
    if not is_binary(a):
        raise ValueError(f"{source}: split {split!r} is not 0/1 data")
    a = np.ascontiguousarray(a, dtype=np.uint8)
    if verify and a.shape[0] == BINARIZED_MNIST_SPLITS[split]:
        digest = hashlib.sha256(memoryview(a)).hexdigest()  # the bytes, without a copy
        if digest != BINARIZED_MNIST_SHA256[split]:
            raise ValueError(
                f"{source}: split {split!r} has SHA-256 {digest}, expected "
                f"{BINARIZED_MNIST_SHA256[split]}: the file is corrupt or is not the standard "
                f"Larochelle & Murray split"
            )
    return a


def _amat_path(directory: Path, split: str) -> Path:
    return directory / f"binarized_mnist_{split}.amat"


def download_binarized_mnist(dest: Path, *, base_url: str = BINARIZED_MNIST_URL,
                             expected_sha256: dict[str, str] | None = None,
                             timeout: float = 60.0, print_fn=None) -> None:
    """Download the three ``.amat`` files into ``dest``, verifying each parsed split.

    Each file is written to a temporary name and renamed only after its parsed
    uint8 array has the expected SHA-256 (``expected_sha256``, by default the
    published values), so a failed or corrupted download never leaves a file
    that looks complete. Raises ``OSError`` (``urllib.error.URLError``) when
    offline and ``ValueError`` on a checksum mismatch.
    """
    expected = BINARIZED_MNIST_SHA256 if expected_sha256 is None else expected_sha256
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for split in BINARIZED_MNIST_SPLITS:
        target = _amat_path(dest, split)
        if target.is_file():
            continue
        url = f"{base_url}binarized_mnist_{split}.amat"
        if print_fn:
            print_fn(f"downloading {url} -> {target}")
        with _urlopen(url, timeout=timeout) as response:
            raw = response.read()
        a = parse_amat(raw, url)
        digest = hashlib.sha256(np.ascontiguousarray(a, dtype=np.uint8).tobytes()).hexdigest()
        if digest != expected[split]:
            raise ValueError(f"downloaded {url}: SHA-256 of the parsed split is {digest}, "
                             f"expected {expected[split]}; the file was not kept")
        tmp = target.with_name(target.name + f".part{os.getpid()}")
        tmp.write_bytes(raw)
        os.replace(tmp, target)


def _load_binarized_from(directory: Path, verify: bool) -> dict[str, np.ndarray] | None:
    npz = directory / "binarized_mnist.npz"
    if npz.is_file():
        with open(npz, "rb") as f:
            magic = f.read(4)
        if magic != b"PK\x03\x04":  # np.load would try to unpickle anything else
            raise ValueError(f"{npz} is not a .npz file (a zip archive of arrays): it is "
                             f"corrupt or of another kind; replace it (keys train, valid, "
                             f"test: uint8 0/1 arrays of shape (N, 784))")
        try:
            with np.load(npz, allow_pickle=False) as f:
                missing = [s for s in BINARIZED_MNIST_SPLITS if s not in f.files]
                if missing:
                    raise _NpzError(f"{npz}: missing arrays {missing}; expected keys "
                                    f"train, valid, test")
                return {s: _check_split(_npz_array(f, s, npz), s, str(npz), verify)
                        for s in BINARIZED_MNIST_SPLITS}
        except _NpzError as exc:
            raise ValueError(str(exc)) from None
        except ValueError as exc:
            if str(npz) in str(exc):  # our own message, from _check_split
                raise
            raise ValueError(f"{npz}: corrupt or truncated .npz file ({exc})") from exc
        except Exception as exc:  # zipfile.BadZipFile, OSError, EOFError and friends
            raise ValueError(f"{npz}: corrupt or truncated .npz file ({exc})") from exc
    paths = {s: _amat_path(directory, s) for s in BINARIZED_MNIST_SPLITS}
    if all(p.is_file() for p in paths.values()):
        return {s: _check_split(parse_amat(p.read_bytes(), str(p)), s, str(p), verify)
                for s, p in paths.items()}
    return None


class _NpzError(ValueError):
    """A .npz file that is readable but not binarized MNIST; the message is final."""


def _npz_array(f, key: str, npz: Path) -> np.ndarray:
    """``f[key]``, refusing object arrays without NumPy's advice to allow pickle: a file
    that needs pickle is not data, and unpickling a file runs code from it."""
    try:
        return f[key]
    except ValueError as exc:
        if "pickle" not in str(exc):
            raise
        raise _NpzError(f"{npz}: array {key!r} holds Python objects, not numbers; expected "
                        f"uint8 0/1 data of shape (N, 784)") from None


def load_binarized_mnist(data_dir=None, *, download: bool = True, verify: bool = True,
                         print_fn=None) -> Dataset:
    """The statically binarized MNIST of Larochelle & Murray (2011).

    Looks in ``data_dir`` (if given), then in :func:`cache_dir`, for
    ``binarized_mnist.npz`` (keys train/valid/test) or the three
    ``binarized_mnist_{train,valid,test}.amat`` text files. When absent, and
    ``download`` is true, downloads the ``.amat`` files into the cache directory.
    A full-size split is verified against its published SHA-256.
    """
    dirs = ([Path(data_dir)] if data_dir is not None else []) + [cache_dir()]
    for d in dirs:
        splits = _load_binarized_from(d, verify)
        if splits is not None:
            return Dataset("binarized-mnist", splits["train"], splits["valid"], splits["test"],
                           (28, 28), True, f"binarized MNIST (Larochelle & Murray) from {d}")
    where = " or ".join(str(d) for d in dirs)
    files = ("binarized_mnist.npz (keys train, valid, test) or "
             "binarized_mnist_{train,valid,test}.amat")
    if not download:
        raise FileNotFoundError(f"binarized-mnist not found: put {files} in {where}")
    try:
        download_binarized_mnist(cache_dir(), print_fn=print_fn)
    except (urllib.error.URLError, OSError) as exc:
        raise FileNotFoundError(
            f"binarized-mnist not found in {where}, and downloading it from "
            f"{BINARIZED_MNIST_URL} failed ({exc}); put {files} in one of those directories "
            f"(--data-dir DIR, or set MINIVAE_DATA)"
        ) from exc
    return load_binarized_mnist(data_dir, download=False, verify=verify)


# ----------------------------------------------------------------------
# one entry point
# ----------------------------------------------------------------------


def load_dataset(name: str, data_dir=None, *, seed: int = 0, print_fn=None) -> Dataset:
    """Load a dataset by name (see the module docstring); ``seed`` fixes splits and draws."""
    if name == "digits":
        return load_digits(seed)
    if name == "binarized-mnist":
        return load_binarized_mnist(data_dir, print_fn=print_fn)
    if name == "mnist":
        return load_mnist(data_dir)
    if name == "linear-gaussian":
        return load_linear_gaussian(seed)
    if name == "synthetic":
        return load_synthetic(seed)
    raise ValueError(f"dataset must be one of {DATASETS}, got {name!r}")


# ----------------------------------------------------------------------
# from a dataset to the arrays a model trains on
# ----------------------------------------------------------------------

BINARIZE_MODES = ("auto", "none", "static", "dynamic")


@dataclass
class PreparedData:
    """The splits, binarized as requested, in the model's dtype or as uint8 0/1.

    Binary data stored as uint8 (binarized MNIST) stay uint8: a quarter of the memory
    of float32 (binarized MNIST: 55 MB instead of 220 MB). Whoever feeds a model
    converts one batch at a time, ``x[rows].astype(model.dtype, copy=False)``, which is
    exact for 0/1.

    With ``binarize == "dynamic"``, ``train`` holds grey levels and the
    training loop draws a fresh binarization each epoch
    (:func:`binarize` with its Generator); ``valid`` and ``test`` are always
    binarized once, with a fixed seed, so their numbers are comparable.
    """

    dataset: Dataset
    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray
    binarize: str

    @property
    def dynamic(self) -> bool:
        return self.binarize == "dynamic"


def resolve_binarize(binarize: str, dataset: Dataset, likelihood: str) -> str:
    """``"auto"`` means dynamic binarization for grey levels under a Bernoulli likelihood."""
    if binarize not in BINARIZE_MODES:
        raise ValueError(f"binarize must be one of {BINARIZE_MODES}, got {binarize!r}")
    if binarize == "auto":
        return "dynamic" if likelihood == "bernoulli" and not dataset.binary else "none"
    if binarize != "none" and dataset.binary:
        return "none"  # already 0/1: nothing to draw
    return binarize


def prepare_data(dataset: Dataset, likelihood: str, binarize_mode: str = "auto",
                 dtype=np.float64, seed: int = 0) -> PreparedData:
    """Convert to ``dtype`` explicitly, binarize, and refuse Bernoulli on non-0/1 data.

    ``binarize_mode`` is one of :data:`BINARIZE_MODES` (see :func:`resolve_binarize`).
    Binary uint8 splits are kept as they are (see :class:`PreparedData`).
    """
    mode = resolve_binarize(binarize_mode, dataset, likelihood)
    compact = dataset.binary and all(a.dtype == np.uint8
                                     for a in (dataset.train, dataset.valid, dataset.test))
    d = dataset if compact else dataset.astype(dtype)
    train, valid, test = d.train, d.valid, d.test
    if mode != "none":
        lo, hi = min(float(a.min()) for a in (train, valid, test)), \
            max(float(a.max()) for a in (train, valid, test))
        if lo < 0 or hi > 1:
            raise ValueError(f"binarization draws x ~ Bernoulli(value) and needs values in "
                             f"[0, 1]; {dataset.name} has values in [{lo:g}, {hi:g}]")
        fixed = np.random.default_rng([seed, 7])
        valid, test = binarize(valid, fixed), binarize(test, fixed)
        if mode == "static":
            train = binarize(train, fixed)
    for split, a in (("training", train if mode != "dynamic" else None), ("validation", valid),
                     ("test", test)):
        if a is not None:
            check_likelihood_data(a, likelihood, f"the {split} split of {dataset.name}")
    return PreparedData(dataset, train, valid, test, mode)
