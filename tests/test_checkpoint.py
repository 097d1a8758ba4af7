"""Checkpoints: pickle-free, atomic, bit-exact RNG state, clear errors on bad files."""

import json
import zipfile

import numpy as np
import pytest

from minivae import VAE, Adam
from minivae.tool.checkpoint import (
    CheckpointError,
    check_architecture,
    load_checkpoint,
    param_specs_json,
    rng_from_array,
    rng_to_array,
    save_checkpoint,
)


def _saved(tmp_path, model=None):
    model = model or VAE(5, 2, hidden=(4,), dtype=np.float32, seed=3)
    opt = Adam(1e-2)
    rng = np.random.default_rng(11)
    x = (rng.random((3, 5)) < 0.5).astype(np.float32)
    for _ in range(3):
        _, g = model.loss_and_grad_sampled(x, rng)
        opt.step(model.flat, g.flat)
    rng.standard_normal(3)  # leave the generator mid-stream
    meta = {"epoch": 2, "history": [{"epoch": 1, "valid_loss": 1.5}], "best": float("inf"),
            "param_specs": param_specs_json(model), "model_config": model.config()}
    path = save_checkpoint(tmp_path / "ck" / "latest.npz", model.flat, opt.state_dict(),
                           {"train": rng}, meta)
    return path, model, opt, rng


def test_rng_state_round_trip_is_bit_exact():
    rng = np.random.default_rng(123)
    rng.random(7)
    rng.integers(0, 10, 3, dtype=np.uint32)  # sets has_uint32
    words = rng_to_array(rng)
    assert words.dtype == np.uint64 and words.shape == (6,)
    copy = rng_from_array(words)
    assert copy.bit_generator.state == rng.bit_generator.state
    np.testing.assert_array_equal(copy.standard_normal(50), rng.standard_normal(50))
    with pytest.raises(TypeError, match="PCG64"):
        rng_to_array(np.random.Generator(np.random.MT19937(0)))


def test_round_trip_without_pickle(tmp_path):
    path, model, opt, rng = _saved(tmp_path)
    with np.load(path, allow_pickle=False) as f:
        assert all(f[k].dtype != object for k in f.files)
        assert {"params", "meta_json", "optim.m", "optim.v", "optim.step_count",
                "rng.train"} <= set(f.files)
    ck = load_checkpoint(path)
    np.testing.assert_array_equal(ck.params, model.flat)
    assert ck.params.dtype == np.float32
    for key, value in opt.state_dict().items():  # Adam's m and v as it keeps them, pre-scaled
        np.testing.assert_array_equal(ck.optimizer_state[key], value)
    assert int(ck.optimizer_state["step_count"]) == 3
    np.testing.assert_array_equal(ck.rngs["train"].random(5), rng.random(5))
    assert ck.meta["epoch"] == 2 and ck.meta["best"] == float("inf")
    assert ck.meta["version"] and ck.meta["history"][0]["valid_loss"] == 1.5
    assert json.loads(path.with_suffix(".json").read_text())["epoch"] == 2  # readable copy
    assert sorted(p.name for p in path.parent.iterdir()) == ["latest.json", "latest.npz"]
    opt2 = Adam(1e-2)
    opt2.load_state_dict(ck.optimizer_state)
    assert opt2.step_count == 3 and opt2.m.dtype == np.float32
    np.testing.assert_array_equal(opt2.m, opt.m)


def test_truncated_or_garbage_checkpoint_is_a_clear_error_and_left_untouched(tmp_path):
    path, _, _, _ = _saved(tmp_path)
    raw = path.read_bytes()
    for bad in (raw[: len(raw) // 2], b"not a checkpoint at all", raw[:-3]):
        path.write_bytes(bad)
        with pytest.raises(CheckpointError, match="corrupt or truncated"):
            load_checkpoint(path)
        assert path.read_bytes() == bad
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "absent.npz")


def test_flipped_byte_is_caught_by_the_zip_crc(tmp_path):
    path, _, _, _ = _saved(tmp_path)
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as z:
        info = z.getinfo("params.npy")
    raw[info.header_offset + 30 + len(info.filename) + 200] ^= 0xFF  # inside params data
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError):
        load_checkpoint(path)


def test_not_a_minivae_checkpoint(tmp_path):
    p = tmp_path / "other.npz"
    np.savez(p, params=np.zeros(3))
    with pytest.raises(CheckpointError, match="meta_json"):
        load_checkpoint(p)


def test_architecture_mismatch(tmp_path):
    path, _, _, _ = _saved(tmp_path)
    ck = load_checkpoint(path)
    check_architecture(ck, VAE(5, 2, hidden=(4,), dtype=np.float32))
    for other in (VAE(5, 2, hidden=(6,), dtype=np.float32), VAE(5, 2, hidden=(4,)),
                  VAE(5, 3, hidden=(4,), dtype=np.float32)):
        with pytest.raises(CheckpointError, match="different architecture"):
            check_architecture(ck, other)


def test_overwrite_is_atomic_and_refuses_non_finite(tmp_path):
    path, model, opt, rng = _saved(tmp_path)
    before = path.read_bytes()
    bad = model.flat.copy()
    bad[0] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        save_checkpoint(path, bad, opt.state_dict(), {"train": rng}, {})
    assert path.read_bytes() == before
    save_checkpoint(path, model.flat, opt.state_dict(), {"train": rng}, {"epoch": 5})
    assert load_checkpoint(path).meta["epoch"] == 5
    assert not [p for p in path.parent.iterdir() if ".tmp" in p.name]
    with pytest.raises(ValueError, match=".npz"):
        save_checkpoint(tmp_path / "x.bin", model.flat, {}, {}, {})
