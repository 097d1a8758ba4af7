"""Atomic, pickle-free checkpoints.

A checkpoint is one ``.npz`` file holding only numeric arrays:

* ``params``: the model's flat parameter vector;
* ``optim.<name>``: the optimizer's state arrays (``step_count``, Adam's ``m``
  and ``v``, SGD's ``velocity``);
* ``rng.<name>``: each numpy ``Generator``'s PCG64 state as uint64 arrays
  (the 128-bit ``state`` and ``inc`` as [high, low] words, then
  ``has_uint32`` and ``uinteger``), so a restored generator continues
  bit for bit;
* ``meta_json``: the UTF-8 bytes of a JSON document (model and training
  configuration, epoch, step, metrics history, library version, parameter
  layout) as a uint8 array.

A copy of the JSON is written beside it (``NAME.json``) for people to read;
loading trusts only the ``.npz``. Every file is written to a temporary name in
the same directory, flushed to disk and renamed with :func:`os.replace`, so a
crash never leaves a torn checkpoint. Loading uses ``allow_pickle=False``; a
corrupt, truncated or mismatched file raises :class:`CheckpointError` and is
left untouched.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__

FORMAT = "minivae-checkpoint-1"
_MASK64 = (1 << 64) - 1


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: corrupt, truncated, or for another model."""


@dataclass
class Checkpoint:
    """What :func:`load_checkpoint` returns."""

    path: Path
    params: np.ndarray
    optimizer_state: dict[str, np.ndarray]
    rngs: dict[str, np.random.Generator]
    meta: dict[str, Any]


# ----------------------------------------------------------------------
# Generator state <-> arrays (no pickle)
# ----------------------------------------------------------------------


def rng_to_array(rng: np.random.Generator) -> np.ndarray:
    """A PCG64 Generator's full state as a uint64 array of 6 words."""
    state = rng.bit_generator.state
    if state["bit_generator"] != "PCG64":
        raise TypeError(f"only PCG64 generators can be checkpointed, got "
                        f"{state['bit_generator']}")
    s, inc = state["state"]["state"], state["state"]["inc"]
    return np.array([s >> 64, s & _MASK64, inc >> 64, inc & _MASK64,
                     state["has_uint32"], state["uinteger"]], dtype=np.uint64)


def rng_from_array(words: np.ndarray) -> np.random.Generator:
    """Inverse of :func:`rng_to_array`."""
    words = np.asarray(words)
    if words.shape != (6,) or words.dtype != np.uint64:
        raise CheckpointError(f"a generator state must be 6 uint64 words, got {words.dtype} "
                              f"{words.shape}")
    w = [int(v) for v in words]
    bg = np.random.PCG64()
    bg.state = {"bit_generator": "PCG64",
                "state": {"state": (w[0] << 64) | w[1], "inc": (w[2] << 64) | w[3]},
                "has_uint32": w[4], "uinteger": w[5]}
    return np.random.Generator(bg)


# ----------------------------------------------------------------------
# writing
# ----------------------------------------------------------------------


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def save_checkpoint(path, params: np.ndarray, optimizer_state: dict, rngs: dict,
                    meta: dict) -> Path:
    """Write a checkpoint atomically to ``path`` (``.npz``) and its JSON beside it."""
    path = Path(path)
    if path.suffix != ".npz":
        raise ValueError(f"checkpoint path must end in .npz, got {path}")
    if not np.isfinite(params).all():
        raise ValueError("refusing to checkpoint non-finite parameters")
    meta = dict(meta, format=FORMAT, version=__version__, n_params=int(params.size),
                dtype=str(params.dtype))
    text = json.dumps(meta, indent=1, sort_keys=True, allow_nan=True)
    arrays = {"params": params, "meta_json": np.frombuffer(text.encode(), dtype=np.uint8)}
    for k, v in optimizer_state.items():
        arrays[f"optim.{k}"] = np.asarray(v)
    for k, g in rngs.items():
        arrays[f"rng.{k}"] = rng_to_array(g)
    for k, v in arrays.items():
        if v.dtype == object:
            raise TypeError(f"checkpoint array {k!r} has dtype object (would need pickle)")
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(path, buf.getvalue())
    _atomic_write(path.with_suffix(".json"), (text + "\n").encode())
    return path


# ----------------------------------------------------------------------
# reading
# ----------------------------------------------------------------------


def load_checkpoint(path) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint` (``allow_pickle=False``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as exc:
        raise CheckpointError(
            f"{path} is corrupt or truncated and cannot be read ({type(exc).__name__}: {exc}); "
            f"it was left untouched"
        ) from exc
    for key in ("params", "meta_json"):
        if key not in arrays:
            raise CheckpointError(f"{path} is not a minivae checkpoint: no {key!r} array")
    try:
        meta = json.loads(arrays.pop("meta_json").tobytes().decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: its metadata is corrupt ({exc})") from exc
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: unknown checkpoint format {meta.get('format')!r}, "
                              f"expected {FORMAT!r}")
    params = arrays.pop("params")
    if params.ndim != 1 or params.size != meta.get("n_params") or \
            str(params.dtype) != meta.get("dtype"):
        raise CheckpointError(f"{path}: parameter array {params.dtype} {params.shape} disagrees "
                              f"with its metadata ({meta.get('dtype')}, {meta.get('n_params')})")
    optim = {k[len("optim."):]: v for k, v in arrays.items() if k.startswith("optim.")}
    rngs = {k[len("rng."):]: rng_from_array(v) for k, v in arrays.items() if k.startswith("rng.")}
    return Checkpoint(path, params, optim, rngs, meta)


def check_architecture(ckpt: Checkpoint, model) -> None:
    """Raise :class:`CheckpointError` unless ``ckpt`` holds parameters for ``model``'s layout."""
    want = [[n, list(s)] for n, s in model.params.specs]
    got = ckpt.meta.get("param_specs")
    if got != want or ckpt.params.size != model.n_params or ckpt.params.dtype != model.dtype:
        raise CheckpointError(
            f"{ckpt.path} holds a different architecture: checkpoint has {len(got or [])} "
            f"parameter arrays ({ckpt.params.size} numbers, {ckpt.params.dtype}), the model has "
            f"{len(want)} ({model.n_params} numbers, {model.dtype}): {model!r}"
        )


def param_specs_json(model) -> list:
    """The model's parameter layout as JSON (names and shapes), stored in the metadata."""
    return [[n, list(s)] for n, s in model.params.specs]
