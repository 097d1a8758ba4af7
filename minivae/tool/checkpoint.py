"""Atomic, pickle-free checkpoints.

A checkpoint is one ``.npz`` file holding only numeric arrays:

* ``params``: the model's flat parameter vector;
* ``optim.<name>``: the optimizer's state arrays (``step_count``, Adam's ``m``
  and ``v`` with their ``m_scale_steps`` and ``v_scale_steps``, SGD's ``velocity``);
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
left untouched. Every field of the metadata is checked against a schema (type, range,
presence): :func:`load_checkpoint` checks what every checkpoint has (format, version, size,
dtype, finite parameters, generator states), :func:`check_run_meta` what a training run's
checkpoint adds (epoch, step, history, configurations, ...); a bad field is a
:class:`CheckpointError` naming the file and the field.
"""

from __future__ import annotations

import io
import json
import math
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..checks import DTYPES
from .files import atomic_write

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
    if w[4] not in (0, 1) or w[5] >= 2**32 or w[3] % 2 == 0:  # PCG64's increment is odd
        raise CheckpointError(f"not a PCG64 generator state: has_uint32 {w[4]} (expected 0 "
                              f"or 1), uinteger {w[5]} (< 2**32), increment ending in "
                              f"{w[3] % 2} (odd)")
    bg = np.random.PCG64()
    bg.state = {"bit_generator": "PCG64",
                "state": {"state": (w[0] << 64) | w[1], "inc": (w[2] << 64) | w[3]},
                "has_uint32": w[4], "uinteger": w[5]}
    return np.random.Generator(bg)


# ----------------------------------------------------------------------
# writing
# ----------------------------------------------------------------------


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
    atomic_write(path, buf.getvalue(), sync=True)  # on failure: old file kept, no temporary
    atomic_write(path.with_suffix(".json"), (text + "\n").encode())
    return path


# ----------------------------------------------------------------------
# the metadata schema
# ----------------------------------------------------------------------
# Each rule takes a value and returns None if it is acceptable, else what was expected.


def _integer(minimum: int = 0) -> Callable[[Any], str | None]:
    def rule(v):
        ok = isinstance(v, int) and not isinstance(v, bool) and v >= minimum
        return None if ok else f"an integer >= {minimum}"
    return rule


def _number(v) -> str | None:
    """A real number, or +inf (``best`` before the first epoch); never NaN."""
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isnan(v)
    return None if ok else "a number"


def _text(v) -> str | None:
    return None if isinstance(v, str) else "a string"


def _one_of(*choices) -> Callable[[Any], str | None]:
    return lambda v: None if v in choices else f"one of {choices}"


def _object(v) -> str | None:
    return None if isinstance(v, dict) else "a JSON object"


def _list_of(rule, what: str) -> Callable[[Any], str | None]:
    return lambda v: (None if isinstance(v, list) and all(rule(e) is None for e in v)
                      else f"a list of {what}")


def _param_spec(v) -> str | None:
    ok = (isinstance(v, list) and len(v) == 2 and isinstance(v[0], str)
          and isinstance(v[1], list) and all(_integer(1)(d) is None for d in v[1]))
    return None if ok else "a [name, shape] pair"


def _position(v) -> str | None:
    expected = ("an object with batch and seen (integers >= 0), loss_sum (a number) and "
                "epoch_rng (6 integers)")
    if not isinstance(v, dict):
        return expected
    rules = {"batch": _integer(0), "seen": _integer(0), "loss_sum": _number,
             "epoch_rng": lambda r: None if (isinstance(r, list) and len(r) == 6 and all(
                 _integer(0)(w) is None and w < 2**64 for w in r)) else "6 integers"}
    return None if set(v) == set(rules) and all(rule(v[k]) is None
                                                 for k, rule in rules.items()) else expected


#: what every checkpoint's metadata holds (written by :func:`save_checkpoint`)
FORMAT_SCHEMA = {"format": _one_of(FORMAT), "version": _text, "n_params": _integer(1),
                 "dtype": _one_of(*DTYPES)}

#: what a training run's checkpoint adds (written by :mod:`minivae.tool.train`); ``position``
#: (where an interrupted epoch stopped) is the one optional field
RUN_SCHEMA = {
    "train_config": _object, "model_config": _object,
    "param_specs": _list_of(_param_spec, "[name, shape] pairs"),
    "epoch": _integer(0), "step": _integer(0),
    "history": _list_of(_object, "JSON objects (one per epoch)"),
    "best": _number, "bad_epochs": _integer(0), "dataset": _text,
    "binarize": _one_of("none", "static", "dynamic"), "position": _position,
}
_OPTIONAL = {"position"}


def _check_fields(path, meta: dict, schema: dict) -> None:
    for name, rule in schema.items():
        if name not in meta:
            if name in _OPTIONAL:
                continue
            raise CheckpointError(f"{path}: its metadata has no field {name!r}; the file was "
                                  f"left untouched")
        expected = rule(meta[name])
        if expected is not None:
            shown = repr(meta[name])
            shown = shown if len(shown) <= 60 else shown[:57] + "..."
            raise CheckpointError(f"{path}: metadata field {name!r} must be {expected}, got "
                                  f"{shown}; the file was left untouched")


def check_run_meta(ckpt: Checkpoint) -> dict:
    """Raise :class:`CheckpointError` unless ``ckpt`` has every field of a training run's
    checkpoint (:data:`RUN_SCHEMA`), consistent with each other, and its generator."""
    meta, path = ckpt.meta, ckpt.path
    _check_fields(path, meta, RUN_SCHEMA)
    if len(meta["history"]) != meta["epoch"]:
        raise CheckpointError(f"{path}: metadata field 'history' has {len(meta['history'])} "
                              f"entries for epoch {meta['epoch']} (one per epoch expected); "
                              f"the file was left untouched")
    sizes = sum(int(np.prod(shape)) for _, shape in meta["param_specs"])
    if sizes != ckpt.params.size:
        raise CheckpointError(f"{path}: metadata field 'param_specs' describes {sizes} "
                              f"parameters, the file holds {ckpt.params.size}; the file was "
                              f"left untouched")
    if "train" not in ckpt.rngs:
        raise CheckpointError(f"{path}: no random generator state 'rng.train' (a training "
                              f"run's checkpoint has one); the file was left untouched")
    return meta


# ----------------------------------------------------------------------
# reading
# ----------------------------------------------------------------------


def load_checkpoint(path) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint` (``allow_pickle=False``).

    Checks what every checkpoint has (:data:`FORMAT_SCHEMA`, a finite 1-D parameter
    vector of that size and dtype, numeric finite optimizer arrays, valid generator
    states); :func:`check_run_meta` checks the fields of a training run.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as exc:
        raise CheckpointError(
            f"{path} is corrupt or truncated and cannot be read ({type(exc).__name__}: "
            f"{_without_pickle_advice(exc)}); it was left untouched"
        ) from exc
    for key in ("params", "meta_json"):
        if key not in arrays:
            raise CheckpointError(f"{path} is not a minivae checkpoint: no {key!r} array")
    try:
        meta = json.loads(arrays.pop("meta_json").tobytes().decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: its metadata is corrupt ({exc})") from exc
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: its metadata must be a JSON object, got "
                              f"{type(meta).__name__}; the file was left untouched")
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: unknown checkpoint format {meta.get('format')!r}, "
                              f"expected {FORMAT!r}")
    _check_fields(path, meta, FORMAT_SCHEMA)
    params = arrays.pop("params")
    if params.ndim != 1 or params.size != meta["n_params"] or str(params.dtype) != meta["dtype"]:
        raise CheckpointError(f"{path}: parameter array {params.dtype} {params.shape} disagrees "
                              f"with its metadata ({meta['dtype']}, {meta['n_params']})")
    _check_finite(path, "parameters", params)
    optim = {k[len("optim."):]: v for k, v in arrays.items() if k.startswith("optim.")}
    for name, a in optim.items():
        if a.dtype.kind not in "iuf":
            raise CheckpointError(f"{path}: optimizer array {name!r} has dtype {a.dtype}, "
                                  f"expected numbers")
        _check_finite(path, f"optimizer state {name!r}", a)
    rngs = {}
    for k, v in arrays.items():
        if k.startswith("rng."):
            try:
                rngs[k[len("rng."):]] = rng_from_array(v)
            except CheckpointError as exc:
                raise CheckpointError(f"{path}: random generator {k!r}: {exc}") from exc
    return Checkpoint(path, params, optim, rngs, meta)


def _check_finite(path, what: str, a: np.ndarray) -> None:
    bad = int(a.size - np.count_nonzero(np.isfinite(a)))
    if bad:
        raise CheckpointError(
            f"{path} holds non-finite {what} ({bad} of {a.size} numbers are NaN or infinite): "
            f"minivae never saves such a checkpoint (a run stops before its parameters go "
            f"non-finite), so the file was damaged or modified; it was left untouched")


def _without_pickle_advice(exc: Exception) -> str:
    """NumPy's reason for refusing a file, without its advice to allow pickle: a file that
    needs pickle to load is not a minivae file, and unpickling runs arbitrary code."""
    text = str(exc)
    if "pickle" in text:
        return "it holds pickled Python objects, not plain arrays"
    return text


def check_optimizer_state(ckpt: Checkpoint, optimizer_name: str) -> None:
    """Raise :class:`CheckpointError` unless the optimizer arrays fit the parameters."""
    state, params, path = ckpt.optimizer_state, ckpt.params, ckpt.path
    expected = {"adam": ("m", "v"), "burda-adam": ("m", "v"),
                "sgd": ("velocity",)}.get(optimizer_name, ())
    # Adam's moments are kept pre-scaled: how many steps of scale each carries (optim.Adam)
    counts = ("m_scale_steps", "v_scale_steps") if optimizer_name == "adam" else ()
    step = state.get("step_count")
    if step is None or step.shape != () or step.dtype.kind not in "iu" or int(step) < 0:
        raise CheckpointError(f"{path}: optimizer array 'step_count' must be one integer >= 0, "
                              f"got {step!r}; the file was left untouched")
    for name, a in state.items():
        if name == "step_count":
            continue
        if name in counts:
            if a.shape != () or a.dtype.kind not in "iu" or int(a) < 0:
                raise CheckpointError(f"{path}: optimizer array {name!r} must be one integer "
                                      f">= 0, got {a!r}; the file was left untouched")
            continue
        if name not in expected or a.shape != params.shape or a.dtype != params.dtype:
            raise CheckpointError(
                f"{path}: optimizer array {name!r} ({a.dtype} {a.shape}) does not belong to "
                f"{optimizer_name} on {params.size} {params.dtype} parameters; the file was "
                f"left untouched")


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
