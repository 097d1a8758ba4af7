"""The pictures of a run: what they say, which files a run keeps, the labels they are coloured by.

Pictures are checked as pixels: a tile of known constant grey is found where it must be,
and text is found by matching the pixel font's own rendering of the expected words (a title
without its epoch, or a manifold without its z values, fails).
"""

import errno
import gzip
import re
import sys
from pathlib import Path

import numpy as np
import pytest

from minivae.tool import data, epoch_pictures, figures, files, pixelfont
from minivae.tool.evaluate import sample_run
from minivae.tool.train import EXIT_FAILED, TrainConfig, train
from minivae.vae import VAE

# ---------------------------------------------------------------------- helpers


def has_text(picture: np.ndarray, text: str) -> bool:
    """Is ``text`` written in ``picture`` (in ink on paper, at either font scale)?"""
    ink = picture == figures.INK
    height, width = ink.shape
    for scale in (1, 2):
        pattern = pixelfont.render(text, scale)
        ph, pw = pattern.shape
        if ph > height or pw > width:
            continue
        hc, wc = height - ph + 1, width - pw + 1
        candidates = np.ones((hc, wc), bool)  # narrowed by 40 of the pattern's pixels at once
        rng = np.random.default_rng(0)
        for py, px in zip(rng.integers(0, ph, 40), rng.integers(0, pw, 40), strict=True):
            candidates &= ink[py:py + hc, px:px + wc] == pattern[py, px]
        for y, x in np.argwhere(candidates):
            if np.array_equal(ink[y:y + ph, x:x + pw], pattern):
                return True
    return False


def find_block(picture: np.ndarray, value: int, size: tuple[int, int]) -> tuple[int, int]:
    """Top-left corner of the first size[0] x size[1] block of the grey level ``value``."""
    for y, x in np.argwhere(picture == value):
        if (picture[y:y + size[0], x:x + size[1]] == value).all():
            return int(y), int(x)
    raise AssertionError(f"no {size} block of grey {value}")


# ---------------------------------------------------------------------- the pixel font


def test_every_printable_character_has_its_own_glyph():
    printable = [chr(c) for c in range(32, 127)]
    assert sorted(pixelfont.GLYPHS) == printable
    shapes = {g.shape for g in pixelfont.GLYPHS.values()}
    assert shapes == {(pixelfont.GLYPH_H, pixelfont.GLYPH_W)}
    seen = {}
    for ch, g in pixelfont.GLYPHS.items():  # a misaligned table would repeat or blank glyphs
        assert g.any() or ch == " ", ch
        assert g.tobytes() not in seen, (ch, seen.get(g.tobytes()))
        seen[g.tobytes()] = ch
    assert pixelfont.GLYPHS["1"][:, 2].sum() == 7  # the stem of a 1, where it should be
    assert has_text(np.where(pixelfont.render("é?"), 0, 255), "??")  # non-ASCII drawn as ?


def test_wrap_breaks_at_spaces_and_cuts_long_words():
    assert pixelfont.wrap("epoch 12: mean of p(x|z)", 10) == ["epoch 12:", "mean of", "p(x|z)"]
    assert pixelfont.wrap("/a/very/long/path x", 6) == ["/a/ver", "y/long", "/path", "x"]
    assert all(len(line) <= 7 for line in pixelfont.wrap("the quick brown fox " * 5, 7))


# ---------------------------------------------------------------------- the image grids


def test_reconstructions_show_each_input_above_its_reconstruction_with_labels():
    n, shape = 10, (8, 8)
    inputs = np.repeat(((10 + 20 * np.arange(n)) / 255)[:, None], 64, axis=1)  # one grey each
    recons = 1 - inputs
    pic = figures.reconstruction_picture([("input", inputs), ("recon.", recons)], shape,
                                         "digits, epoch 7: validation images", per_row=4)
    side = 8 * figures._scale_for(shape)
    for i in (0, 5, 9):  # the first, one in the second group, the last
        grey_in, grey_out = (round(v * 255) for v in (inputs[i, 0], recons[i, 0]))
        y, x = find_block(pic, grey_in, (side, side))
        assert find_block(pic[y + side:], grey_out, (side, side)) == (2, x)  # right below
    assert has_text(pic, "input") and has_text(pic, "recon.") and has_text(pic, "epoch 7")
    assert not has_text(pic, "epoch 8")
    with pytest.raises(ValueError, match="'recon.' images must have the shape"):
        figures.reconstruction_picture([("input", inputs), ("recon.", recons[:3])], shape, "t")


def test_manifold_has_gaps_between_tiles_and_z_values_on_its_axes():
    n, shape = 7, (28, 28)
    decoded = []

    def decode_mean(z):  # tile brightness rises with z1 and falls with z2 (row by row)
        decoded.append(z)
        return np.repeat(((z[:, 0] - z[:, 1]) / 8 + 0.5)[:, None], 784, axis=1)

    pic = figures.manifold_picture(decode_mean, shape, np.float32, "mnist, epoch 3: grid", n=n)
    np.testing.assert_array_equal(decoded[0], figures.manifold_latents(n, np.float32))
    q = figures.manifold_axis(n)
    np.testing.assert_allclose(q, -q[::-1])  # symmetric quantiles of N(0, 1)
    assert q[n // 2] == 0
    # the top row: n tiles of different greys, each pair separated by grey gap pixels
    scale = (840 // n) // 28
    side = 28 * scale
    y, x = find_block(pic, round(((q[0] - q[-1]) / 8 + 0.5) * 255), (side, side))  # top left
    below, left = pic[y + n * (side + 2):], pic[:, :x]
    assert has_text(pic[:y], "epoch 3") and has_text(below, "z1") and has_text(left, "z2")
    for value in q:  # every z1 value below the grid, every z2 value left of it
        assert has_text(below, f"{value:.2f}") and has_text(left, f"{value:.2f}"), value
    # in their places: z2 = +1.47 beside the top row, z1 = -1.47 below the first column
    top, first = left[y:y + side], below[:, max(0, x - side // 2):x + side + side // 2]
    assert has_text(top, f"{q[-1]:.2f}") and not has_text(top, f"{q[0]:.2f}")
    assert has_text(first, f"{q[0]:.2f}") and not has_text(first, f"{q[1]:.2f}")
    row = pic[y + side // 2, x:x + n * (side + 2)]
    assert (row[side:side + 2] == figures.GAP).all()
    tiles = [row[c * (side + 2)] for c in range(n)]
    assert len(set(tiles)) == n and tiles == sorted(tiles)  # z1 rises to the right


def test_small_images_are_enlarged_smoothly_and_say_so():
    step = np.array([[0.0, 1.0]]).repeat(2, axis=0).reshape(1, 4)  # left black, right white
    smooth = figures.to_pixels(step, (2, 2), 4)[0]
    assert len(np.unique(smooth[0])) > 2  # a ramp, not two blocks
    big = np.zeros((1, 16 * 16))
    assert set(np.unique(figures.to_pixels(big + 0.5, (16, 16), 3))) == {128}
    pic = figures.samples_picture(np.full((4, 64), 0.5), (8, 8), "synthetic, epoch 1")
    assert has_text(pic, "8x8") and has_text(pic, "smoothly")


def test_the_streamed_sample_grid_says_what_it_shows(tmp_path):
    path = figures.save_sample_grid(tmp_path / "s.png", 5, lambda c: np.full((c, 64), 0.25),
                                    (8, 8), "digits, epoch 4: 5 samples")
    assert has_text(figures.decode_png(path.read_bytes()), "epoch 4:")


def test_projection_to_two_dimensions_says_how():
    rng = np.random.default_rng(0)
    direction = np.array([3.0, 0.0, 4.0, 0.0]) / 5
    means = rng.standard_normal((400, 1)) * 3 * direction + 0.1 * rng.standard_normal((400, 4))
    xy, (xlabel, ylabel) = figures.project_2d(means)
    assert "principal component 1" in xlabel and "Z = 4" in xlabel
    share = float(re.search(r"\((\d+)% of", xlabel).group(1))
    assert share > 95  # the one direction carries almost all the variance
    # the first coordinate is the projection on that direction (up to its sign, fixed positive)
    np.testing.assert_allclose(xy[:, 0], (means - means.mean(0)) @ direction, atol=0.05 * 3)
    two = rng.standard_normal((5, 2))
    assert figures.project_2d(two)[1] == ("z1", "z2")
    np.testing.assert_array_equal(figures.project_2d(two)[0], two)
    assert "jitter" in figures.project_2d(two[:, :1])[1][1]


def test_latent_scatter_is_a_png_with_matplotlib_and_none_without(monkeypatch):
    pytest.importorskip("matplotlib")
    means, labels = np.random.default_rng(1).standard_normal((50, 3)), np.arange(50) % 10
    png = figures.latent_scatter_png(means, labels, "digits, epoch 2")
    assert png.startswith(b"\x89PNG")
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # import fails
    assert figures.latent_scatter_png(means, None, "t") is None
    assert figures.learning_curves_png([{"epoch": 1, "train_loss": 1, "valid_loss": 1}],
                                       "t") is None


# ---------------------------------------------------------------------- labels


def test_digits_labels_follow_the_permutation_of_the_images():
    sklearn = pytest.importorskip("sklearn.datasets")
    raw = sklearn.load_digits()
    label_of = {}
    for image, label in zip(raw.data, raw.target, strict=True):
        label_of.setdefault((image / 16.0).tobytes(), set()).add(int(label))
    d = data.load_digits(seed=3)
    for split in ("train", "valid", "test"):
        x, y = getattr(d, split), d.labels[split]
        assert y.shape == (len(x),) and y.dtype == np.uint8
        assert all(int(lab) in label_of[row.tobytes()] for row, lab in zip(x, y, strict=True))
    # the labels go wherever the splits go
    prepared = data.prepare_data(d, "bernoulli", "dynamic", np.float32)
    assert prepared.dataset.labels is d.labels
    assert d.astype(np.float32).labels is d.labels


def test_datasets_without_labels_carry_none_and_bad_labels_are_refused():
    assert data.load_synthetic().labels is None
    assert data.load_linear_gaussian().labels is None
    x = np.zeros((4, 2))
    with pytest.raises(ValueError, match=r"labels\['valid'\] must have shape \(4,\)"):
        data.Dataset("d", x, x, x, None, True, "d",
                     labels={"train": np.zeros(4), "valid": np.zeros(3), "test": np.zeros(4)})


def _idx(a: np.ndarray) -> bytes:
    return bytes([0, 0, 0x08, a.ndim]) + np.array(a.shape, ">u4").tobytes() + a.tobytes()


def test_mnist_labels_come_from_the_label_files_when_present(tmp_path):
    rng = np.random.default_rng(2)
    images = {"train": rng.integers(0, 256, (12, 28, 28), np.uint8),
              "t10k": rng.integers(0, 256, (5, 28, 28), np.uint8)}
    for split, a in images.items():
        (tmp_path / f"{split}-images-idx3-ubyte").write_bytes(_idx(a))
    assert data.load_mnist(tmp_path, n_valid=3).labels is None
    labels = {"train": np.arange(12, dtype=np.uint8), "t10k": np.arange(5, dtype=np.uint8) + 20}
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(_idx(labels["train"])))
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(_idx(labels["t10k"]))
    d = data.load_mnist(tmp_path, n_valid=3)
    np.testing.assert_array_equal(d.labels["train"], np.arange(9))
    np.testing.assert_array_equal(d.labels["valid"], [9, 10, 11])
    np.testing.assert_array_equal(d.labels["test"], np.arange(20, 25))
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(_idx(np.arange(4, dtype=np.uint8)))
    with pytest.raises(ValueError, match="t10k-labels-idx1-ubyte: expected 5 uint8 labels"):
        data.load_mnist(tmp_path, n_valid=3)


# ---------------------------------------------------------------------- which files a run keeps


@pytest.mark.parametrize("epochs", [1, 7, 10, 11, 50, 55, 1000])
def test_a_run_keeps_at_most_about_ten_of_each_picture_and_the_last(epochs):
    kept = [e for e in range(1, epochs + 1) if epoch_pictures.is_kept(e, epochs, e == epochs)]
    assert len(kept) <= epoch_pictures.MAX_KEPT + 1 and kept[-1] == epochs
    assert len(kept) >= min(epochs, epoch_pictures.MAX_KEPT // 2)
    assert epoch_pictures.is_kept(3, epochs, last=True)  # an early stop keeps its pictures


class _Stub:
    """matplotlib's pictures replaced by fixed bytes: the policy, not the drawing, is tested."""

    def __init__(self, monkeypatch):
        monkeypatch.setattr(figures, "latent_scatter_png", lambda *a, **k: b"scatter")
        monkeypatch.setattr(figures, "learning_curves_png", lambda *a, **k: b"curves")


def _pictures_of(tmp_path, dataset, latent_dim=2):
    prepared = data.prepare_data(dataset, "bernoulli", "auto", np.float32)
    model = VAE(dataset.dim, latent_dim, hidden=(6,), dtype=np.float32, seed=0)
    return model, prepared, epoch_pictures.EpochPictures(tmp_path, prepared, latent_dim, 0,
                                                         err=sys.stderr)


def test_latest_every_epoch_and_one_kept_every_n_epochs(tmp_path, monkeypatch):
    _Stub(monkeypatch)
    monkeypatch.setattr(epoch_pictures, "REDRAW_SECONDS", 0.0)  # draw every epoch
    model, prepared, pictures = _pictures_of(tmp_path, data.load_synthetic(n_train=50))
    means = np.zeros((len(prepared.valid), 2))
    history, epochs = [], 13  # keep_every(13) = 2: epochs 2, 4, ..., 12 and the last, 13
    for epoch in range(1, epochs + 1):
        history.append({"epoch": epoch, "train_loss": 1.0, "valid_loss": 1.0})
        pictures.draw(model, epoch, epochs, epoch == epochs, history, means)
        latest = figures.decode_png((tmp_path / "samples_latest.png").read_bytes())
        assert has_text(latest, f"epoch {epoch}:")  # the latest is this epoch's
    kinds = ("reconstructions", "samples", "manifold", "latent")
    expected = {f"{k}_epoch{e:03d}.png" for k in kinds for e in [*range(2, 13, 2), 13]}
    expected |= {f"{k}_latest.png" for k in kinds} | {"curves.png"}
    assert {p.name for p in tmp_path.iterdir()} == expected
    assert (tmp_path / "samples_epoch013.png").read_bytes() == \
        (tmp_path / "samples_latest.png").read_bytes()


def test_between_kept_epochs_pictures_wait_for_redraw_seconds(tmp_path, monkeypatch):
    _Stub(monkeypatch)
    model, prepared, pictures = _pictures_of(tmp_path, data.load_synthetic(n_train=50))
    means = np.zeros((len(prepared.valid), 2))
    drawn = [bool(pictures.draw(model, e, 50, False, [], means)) for e in range(1, 7)]
    assert drawn == [True, False, False, False, True, False]  # the first, then epoch 5 (kept)


def test_without_matplotlib_one_line_says_so_and_the_grids_are_drawn(tmp_path, monkeypatch,
                                                                       capsys):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    model, prepared, pictures = _pictures_of(tmp_path, data.load_synthetic(n_train=50))
    for epoch in (1, 2):
        pictures.draw(model, epoch, 2, epoch == 2, [], np.zeros((len(prepared.valid), 2)))
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "matplotlib is not installed" in err
    assert "image grids are still written" in err
    assert (tmp_path / "manifold_epoch002.png").exists()
    assert not (tmp_path / "latent_latest.png").exists()


def test_a_run_writes_its_pictures_and_a_failed_write_leaves_nothing_behind(tmp_path,
                                                                            monkeypatch, capsys):
    config = TrainConfig(dataset="synthetic", hidden=[8], latent_dim=2, batch_size=500,
                         train_eval_size=100, epochs=1, seed=1)
    run = tmp_path / "run"
    assert train(config, run).status == "completed"
    kinds = ["reconstructions", "samples", "manifold"]
    if figures._figure((1, 1)) is not None:
        kinds.append("latent")
    names = {p.name for p in (run / "pictures").iterdir()}
    assert names == ({f"{k}_{t}.png" for k in kinds for t in ("latest", "epoch001")}
                     | ({"curves.png"} if "latent" in kinds else set()))
    recon = figures.decode_png((run / "pictures" / "reconstructions_latest.png").read_bytes())
    assert has_text(recon, "input") and has_text(recon, "epoch 1:")

    # sample: the streamed grid says what it shows and from which epoch
    sample_run(run, tmp_path / "s.png", n=5, print_fn=lambda *a: None)
    assert has_text(figures.decode_png((tmp_path / "s.png").read_bytes()), "epoch 1:")

    # the disk fills up while a picture is written: the run stops, keeps its last good
    # checkpoint, and leaves no half-written or temporary file
    real_open = open

    class FullDisk:  # writes the first bytes, then the disk is full
        def __init__(self, f):
            self.f = f

        def write(self, data):
            self.f.write(data[:10])
            raise OSError(errno.ENOSPC, "No space left on device")

        def __getattr__(self, name):
            return getattr(self.f, name)

    def full_disk(path, mode="r", *a, **k):
        f = real_open(path, mode, *a, **k)
        return FullDisk(f) if "samples_latest" in str(path) else f

    monkeypatch.setattr(files, "open", full_disk, raising=False)
    before = (run / "pictures" / "samples_latest.png").read_bytes()
    capsys.readouterr()
    result = train(None, run, resume=True, overrides={"epochs": 2})
    assert result.exit_code == EXIT_FAILED
    err = capsys.readouterr().err
    assert "could not write" in err and "samples_latest.png" in err
    assert (run / "pictures" / "samples_latest.png").read_bytes() == before
    leftovers = [p for p in Path(run).rglob(".*") if files.TEMPORARY.match(p.name)]
    assert leftovers == []
