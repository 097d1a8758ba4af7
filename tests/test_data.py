"""Loaders on tiny files written here, in every supported format, and on corrupt files."""

import gzip
import hashlib
import io
import urllib.error

import numpy as np
import pytest

from minivae.tool import data
from minivae.tool.data import (
    binarize,
    check_likelihood_data,
    load_binarized_mnist,
    load_dataset,
    load_linear_gaussian,
    load_mnist,
    parse_amat,
    prepare_data,
    read_idx,
)


@pytest.fixture(autouse=True)
def _empty_cache(tmp_path, monkeypatch):
    """Point the download cache at an empty directory, and make any network use fail."""
    monkeypatch.setenv("MINIVAE_DATA", str(tmp_path / "cache"))

    def no_network(url, timeout=None):
        raise urllib.error.URLError("tests never use the network")

    monkeypatch.setattr(data, "_urlopen", no_network)


def _binary(rng, n):
    return (rng.random((n, 784)) < 0.3).astype(np.uint8)


def _amat_text(a, sep=" ", newline="\n"):
    return "".join(sep.join(map(str, row)) + newline for row in a).encode()


def _tiny_split(rng):
    return {"train": _binary(rng, 6), "valid": _binary(rng, 3), "test": _binary(rng, 2)}


# --------------------------------------------------------------- binarized MNIST


def test_parse_amat_any_whitespace():
    rng = np.random.default_rng(0)
    a = _binary(rng, 4)
    for sep, nl in ((" ", "\n"), ("\t", "\r\n"), ("  ", "\n\n")):
        np.testing.assert_array_equal(parse_amat(_amat_text(a, sep, nl)), a)


@pytest.mark.parametrize("text, match", [
    (b"0 1 2" + b" 0" * 781 + b"\n", "unexpected character"),
    (b"0 1 0.5" + b" 0" * 781 + b"\n", "unexpected character"),
    (b"01" + b" 0" * 783 + b"\n", "more than one digit"),
    (b"0" + b" 1" * 700 + b"\n", "row 0 has 701 values"),
    (b"\n \n", "no data"),
], ids=["digit-2", "decimal", "two-digits", "short-row", "empty"])
def test_parse_amat_rejects_bad_text(text, match):
    with pytest.raises(ValueError, match=match):
        parse_amat(text)


def test_binarized_mnist_from_npz_and_amat(tmp_path):
    splits = _tiny_split(np.random.default_rng(1))
    npz_dir, amat_dir = tmp_path / "npz", tmp_path / "amat"
    npz_dir.mkdir()
    amat_dir.mkdir()
    np.savez(npz_dir / "binarized_mnist.npz", **splits)
    for s, a in splits.items():
        (amat_dir / f"binarized_mnist_{s}.amat").write_bytes(_amat_text(a))
    for d in (npz_dir, amat_dir):
        ds = load_dataset("binarized-mnist", d)
        assert ds.binary and ds.image_shape == (28, 28)
        for s, a in splits.items():
            np.testing.assert_array_equal(getattr(ds, s), a)


def test_binarized_mnist_corrupt_npz(tmp_path):
    np.savez(tmp_path / "binarized_mnist.npz", **_tiny_split(np.random.default_rng(2)))
    raw = (tmp_path / "binarized_mnist.npz").read_bytes()
    (tmp_path / "binarized_mnist.npz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match="corrupt or truncated"):
        load_binarized_mnist(tmp_path, download=False)


def test_binarized_mnist_npz_wrong_keys_or_values(tmp_path):
    splits = _tiny_split(np.random.default_rng(3))
    np.savez(tmp_path / "binarized_mnist.npz", train=splits["train"], valid=splits["valid"])
    with pytest.raises(ValueError, match="missing arrays"):
        load_binarized_mnist(tmp_path, download=False)
    splits["test"] = splits["test"] * 3
    np.savez(tmp_path / "binarized_mnist.npz", **splits)
    with pytest.raises(ValueError, match="not 0/1"):
        load_binarized_mnist(tmp_path, download=False)


def test_binarized_mnist_full_size_split_is_hash_checked(tmp_path, monkeypatch):
    splits = _tiny_split(np.random.default_rng(4))
    sizes = {s: len(a) for s, a in splits.items()}
    good = {s: hashlib.sha256(a.tobytes()).hexdigest() for s, a in splits.items()}
    monkeypatch.setattr(data, "BINARIZED_MNIST_SPLITS", sizes)
    monkeypatch.setattr(data, "BINARIZED_MNIST_SHA256", good)
    np.savez(tmp_path / "binarized_mnist.npz", **splits)
    load_binarized_mnist(tmp_path, download=False)
    splits["valid"][0, 0] ^= 1
    np.savez(tmp_path / "binarized_mnist.npz", **splits)
    with pytest.raises(ValueError, match="SHA-256"):
        load_binarized_mnist(tmp_path, download=False)


class _FakeResponse(io.BytesIO):
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def test_download_with_a_fake_opener(tmp_path, monkeypatch):
    splits = _tiny_split(np.random.default_rng(5))
    urls = []

    def opener(url, timeout=None):
        urls.append(url)
        split = url.rsplit("_", 1)[1].split(".")[0]
        return _FakeResponse(_amat_text(splits[split]))

    monkeypatch.setattr(data, "_urlopen", opener)
    good = {s: hashlib.sha256(a.tobytes()).hexdigest() for s, a in splits.items()}
    dest = tmp_path / "cache"
    data.download_binarized_mnist(dest, expected_sha256=good)
    assert sorted(p.name for p in dest.iterdir()) == [
        "binarized_mnist_test.amat", "binarized_mnist_train.amat", "binarized_mnist_valid.amat"]
    assert all(u.startswith(data.BINARIZED_MNIST_URL) for u in urls)
    ds = load_binarized_mnist(None, download=False)  # found in the cache ($MINIVAE_DATA)
    np.testing.assert_array_equal(ds.test, splits["test"])


def test_download_with_wrong_checksum_keeps_nothing(tmp_path, monkeypatch):
    splits = _tiny_split(np.random.default_rng(6))
    monkeypatch.setattr(data, "_urlopen", lambda url, timeout=None: _FakeResponse(
        _amat_text(splits["train"])))
    dest = tmp_path / "dl"
    with pytest.raises(ValueError, match="SHA-256"):
        data.download_binarized_mnist(dest)  # the published checksums
    assert list(dest.iterdir()) == []


def test_offline_and_absent_says_where_to_put_the_files(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        load_dataset("binarized-mnist", tmp_path / "nothing")
    msg = str(info.value)
    assert "binarized_mnist.npz" in msg and "nothing" in msg and "MINIVAE_DATA" in msg


# --------------------------------------------------------------- MNIST IDX


def _idx_bytes(a: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, a.ndim]) + np.array(a.shape, dtype=">u4").tobytes()
    return header + a.astype(np.uint8).tobytes()


@pytest.mark.parametrize("compress", [False, True])
def test_mnist_idx_plain_and_gzip(tmp_path, compress):
    rng = np.random.default_rng(7)
    tr = rng.integers(0, 256, (12, 28, 28), dtype=np.uint8)
    te = rng.integers(0, 256, (4, 28, 28), dtype=np.uint8)
    for name, a in (("train-images-idx3-ubyte", tr), ("t10k-images-idx3-ubyte", te)):
        raw = _idx_bytes(a)
        if compress:
            (tmp_path / (name + ".gz")).write_bytes(gzip.compress(raw))
        else:
            (tmp_path / name).write_bytes(raw)
    ds = load_mnist(tmp_path, n_valid=2)
    assert ds.train.shape == (10, 784) and ds.valid.shape == (2, 784) and ds.test.shape == (4, 784)
    np.testing.assert_allclose(ds.test, te.reshape(4, -1) / 255.0)
    assert ds.train.min() >= 0 and ds.train.max() <= 1 and not ds.binary


def test_read_idx_rejects_corrupt_files(tmp_path):
    good = _idx_bytes(np.zeros((3, 4, 4), np.uint8))
    cases = {
        "magic": (b"\x08\x03" + good[2:], "wrong magic"),
        "truncated": (good[:-5], "truncated IDX file"),
        "header": (good[:6], "truncated IDX header"),
        "extra": (good + b"\x00\x00", "size mismatch"),
        "gzip": (gzip.compress(good)[:-10], "corrupt or truncated gzip"),
    }
    for name, (raw, match) in cases.items():
        p = tmp_path / name
        p.write_bytes(raw)
        with pytest.raises(ValueError, match=match):
            read_idx(p)
    with pytest.raises(FileNotFoundError):
        read_idx(tmp_path / "absent")


def test_mnist_missing_files_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte"):
        load_mnist(tmp_path)
    with pytest.raises(FileNotFoundError, match="--data-dir"):
        load_mnist(None)


# --------------------------------------------------------------- digits, synthetic, linear-Gaussian


def test_digits_split_fixed_by_seed():
    pytest.importorskip("sklearn")
    a, b, c = load_dataset("digits", seed=0), load_dataset("digits", seed=0), \
        load_dataset("digits", seed=1)
    assert (len(a.train), len(a.valid), len(a.test)) == (1297, 200, 300)
    np.testing.assert_array_equal(a.test, b.test)
    assert not np.array_equal(a.test, c.test)
    assert a.train.min() == 0 and a.train.max() == 1 and a.image_shape == (8, 8)


def test_linear_gaussian_exact_log_marginal_matches_a_fitted_gaussian():
    ds = load_linear_gaussian(seed=3, dim=5, latent_dim=2, n_train=20000)
    x = ds.train
    mean, cov = x.mean(0), np.cov(x.T)
    diff = ds.test - mean
    _, logdet = np.linalg.slogdet(cov)
    fitted = -0.5 * (5 * np.log(2 * np.pi) + logdet
                     + np.einsum("nd,de,ne->n", diff, np.linalg.inv(cov), diff))
    exact = ds.exact_log_marginal(ds.test)
    assert exact.shape == (len(ds.test),)
    assert abs(exact.mean() - fitted.mean()) < 0.05


def test_synthetic_is_binary():
    ds = load_dataset("synthetic", seed=0)
    assert ds.binary and ds.train.shape == (2000, 64)


# --------------------------------------------------------------- preparation for a likelihood


def test_bernoulli_refuses_grey_levels_with_an_explanation():
    x = np.array([[0.0, 0.5, 1.0]])
    with pytest.raises(ValueError) as info:
        check_likelihood_data(x, "bernoulli", "my data")
    msg = str(info.value)
    assert "my data" in msg and "binarize" in msg and "gaussian" in msg.lower()
    check_likelihood_data(x, "gaussian-hetero")
    check_likelihood_data(np.array([[0.0, 1.0]]), "bernoulli")


def test_prepare_data_modes_and_dtype():
    ds = load_linear_gaussian(seed=0, n_train=30, n_valid=10, n_test=10)
    with pytest.raises(ValueError, match="Bernoulli likelihood needs 0/1"):
        prepare_data(ds, "bernoulli", "none")
    p = prepare_data(ds, "gaussian-hetero", "auto", np.float32)
    assert p.binarize == "none" and p.train.dtype == np.float32
    with pytest.raises(ValueError, match=r"values in \[0, 1\]"):
        prepare_data(ds, "bernoulli", "auto")  # auto = dynamic, but data are not in [0, 1]

    grey = data.Dataset("g", np.full((50, 4), 0.25), np.full((20, 4), 0.5),
                        np.full((20, 4), 0.75), None, False, "grey")
    dyn = prepare_data(grey, "bernoulli", "auto", np.float64, seed=1)
    assert dyn.dynamic and dyn.train.dtype == np.float64 and not data.is_binary(dyn.train)
    assert data.is_binary(dyn.valid) and data.is_binary(dyn.test)
    np.testing.assert_array_equal(dyn.test, prepare_data(grey, "bernoulli", "auto",
                                                         seed=1).test)  # fixed by the seed
    static = prepare_data(grey, "bernoulli", "static", np.float32)
    assert not static.dynamic and data.is_binary(static.train)


def test_binary_uint8_data_stay_uint8_and_train_exactly_as_a_float32_copy(tmp_path, monkeypatch,
                                                                           capsys):
    """Binarized MNIST is kept as uint8 (a quarter of float32's memory) and converted a batch
    at a time: training, evaluation and pictures give the same numbers as on float32 data."""
    from minivae.tool import evaluate, train

    rng = np.random.default_rng(5)
    splits = {"train": _binary(rng, 60), "valid": _binary(rng, 20), "test": _binary(rng, 20)}
    np.savez(tmp_path / "binarized_mnist.npz", **splits)
    ds = load_dataset("binarized-mnist", tmp_path)
    kept = prepare_data(ds, "bernoulli", "auto", np.float32)
    assert kept.train is ds.train and kept.valid.dtype == kept.test.dtype == np.uint8
    assert not data.is_binary(np.array([[0, 2]], np.uint8))

    cfg = dict(dataset="binarized-mnist", data_dir=str(tmp_path), hidden=[8], latent_dim=2,
               batch_size=16, epochs=2, train_eval_size=30)
    runs, evals = {}, {}
    for name in ("uint8", "float32"):
        if name == "float32":  # the old way: every split converted up front
            monkeypatch.setattr(train, "prepare_data",
                                lambda d, *a, **k: prepare_data(d.astype(np.float32), *a, **k))
        runs[name] = train.train(train.TrainConfig(**cfg), tmp_path / name)
        evals[name] = evaluate.evaluate_run(tmp_path / name, k=5, n=10, print_fn=lambda s: 0)
    capsys.readouterr()
    a, b = runs["uint8"], runs["float32"]
    assert [h["valid_loss"] for h in a.history] == [h["valid_loss"] for h in b.history]
    assert evals["uint8"].log_marginal == evals["float32"].log_marginal
    assert np.isfinite(evals["uint8"].log_marginal)
    for png in (tmp_path / "uint8" / "pictures").glob("*.png"):
        assert png.read_bytes() == (tmp_path / "float32" / "pictures" / png.name).read_bytes()


def test_binarize_is_a_bernoulli_draw():
    x = np.full((200, 50), 0.3, dtype=np.float32)
    a = binarize(x, np.random.default_rng(0))
    assert a.dtype == np.float32 and data.is_binary(a)
    assert abs(a.mean() - 0.3) < 0.01
    np.testing.assert_array_equal(a, binarize(x, np.random.default_rng(0)))
    with pytest.raises(TypeError, match="Generator"):
        binarize(x, 0)
