"""The pictures a training run draws after an epoch, and which of them it keeps.

In ``RUN_DIR/pictures/``, for data that are images:

=============================== ===========================================================
``reconstructions_latest.png``  32 validation images (rows "input") each above its
                                reconstruction (rows "recon.": the mean of p(x|z) at z = mu(x));
                                for binarized grey levels, the grey levels above (rows "data")
``samples_latest.png``          64 samples from the prior: the mean of p(x|z), z ~ N(0, I),
                                the same 64 z at every epoch
``manifold_latest.png``         (``--latent-dim 2``) the mean of p(x|z) over a 15 x 15 grid
                                (10 x 10 for 8x8 images) of z at the quantiles of N(0, 1),
                                z1 and z2 on the axes
=============================== ===========================================================

and, for any data, when matplotlib is installed:

=============================== ===========================================================
``latent_latest.png``           the encoder means mu(x) of the validation set (their first two
                                principal components when Z > 2), coloured by label when the
                                dataset has labels (digits; mnist with its label files)
``curves.png``                  train and validation negative ELBO per epoch so far
=============================== ===========================================================

Each picture says in itself what it shows and at which epoch. ``KIND_latest.png`` is
replaced at each drawing; a copy ``KIND_epochNNN.png`` is kept every
:func:`keep_every` epochs and at the last epoch (the end of the run, early stopping, an
interrupt), so a run keeps at most about :data:`MAX_KEPT` pictures of each kind, however
long. Drawing takes 0.1 to 0.5 s, as long as a whole epoch of the digits: between two
kept epochs, pictures are drawn at most every :data:`REDRAW_SECONDS`.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np

from ..vae import VAE
from . import figures
from .data import PreparedData
from .files import atomic_write

#: a run keeps at most about this many pictures of each kind (plus the last epoch's)
MAX_KEPT = 10
#: between kept epochs, pictures are drawn again only after this many seconds
REDRAW_SECONDS = 10.0
#: how many validation images the reconstructions show, and how many samples
N_RECONSTRUCTIONS, N_SAMPLES = 32, 64
#: why a dataset that could have labels has none (said in the latent scatter)
NO_LABELS_WHY = {
    "binarized-mnist": "the binarized MNIST has no labels (its splits are not in the order "
                       "of the official MNIST files)",
    "mnist": "no labels: train-labels-idx1-ubyte and t10k-labels-idx1-ubyte were not found",
}


def keep_every(epochs: int) -> int:
    """Every how many epochs a picture is kept: at most :data:`MAX_KEPT` in ``epochs``."""
    return max(1, math.ceil(epochs / MAX_KEPT))


def is_kept(epoch: int, epochs: int, last: bool = False) -> bool:
    """Is the picture of ``epoch`` kept (as ``KIND_epochNNN.png``) in a run of ``epochs``?"""
    return last or epoch % keep_every(epochs) == 0


def picture_names(kind: str, epoch: int, kept: bool) -> list[str]:
    """The files one picture is written to: always ``KIND_latest.png``, and
    ``KIND_epochNNN.png`` when the epoch is kept."""
    return [f"{kind}_latest.png"] + ([f"{kind}_epoch{epoch:03d}.png"] if kept else [])


class EpochPictures:
    """Draws a run's pictures after an epoch (:meth:`draw`) into ``directory``."""

    def __init__(self, directory, data: PreparedData, latent_dim: int, seed: int, err):
        self.directory, self.err = Path(directory), err
        dataset = data.dataset
        self.name, self.image_shape = dataset.name, dataset.image_shape
        self.binarized = data.binarize != "none"  # grey levels drawn as 0/1
        self.inputs = np.asarray(data.valid[:N_RECONSTRUCTIONS], dtype=np.float64)
        # grey levels binarized for a Bernoulli likelihood: show them too, since the mean of
        # p(x|z) estimates them, not the one binarized draw the encoder saw
        self.grey = (np.asarray(dataset.valid[:N_RECONSTRUCTIONS], dtype=np.float64)
                     if self.binarized else None)
        self.labels = None if dataset.labels is None else dataset.labels["valid"]
        self.sample_z = np.random.default_rng([seed, 2]).standard_normal((N_SAMPLES,
                                                                          latent_dim))
        self.next_t = 0.0
        self.told = False

    def draw(self, model: VAE, epoch: int, epochs: int, last: bool, history: list[dict],
             means: np.ndarray) -> list[Path]:
        """Draw the pictures of ``epoch`` if it is kept or :data:`REDRAW_SECONDS` have
        passed; ``means`` are the encoder means mu(x) of the validation set. Returns the
        files written."""
        kept = is_kept(epoch, epochs, last)
        if not kept and time.perf_counter() < self.next_t:
            return []
        pngs = {}
        if self.image_shape is not None:
            pngs.update(self._grids(model, epoch))
        n, z = means.shape
        what = ("their first two principal components" if z > 2 else "z1" if z == 1
                else "z1 and z2")
        pngs["latent"] = figures.latent_scatter_png(
            means, self.labels,
            f"{self.name}, epoch {epoch}: encoder means mu(x) of the {n} validation "
            f"datapoints ({what}), " + ("coloured by label" if self.labels is not None
                                        else "not coloured: no labels"),
            no_labels=NO_LABELS_WHY.get(self.name, f"the {self.name} data have no labels"))
        pngs["curves"] = figures.learning_curves_png(
            history, f"{self.name}: negative ELBO to epoch {epoch} (lower is better)")
        self._tell_once(pngs)
        self.directory.mkdir(parents=True, exist_ok=True)
        written = []
        for kind, png in pngs.items():
            if png is None:
                continue
            names = ["curves.png"] if kind == "curves" else picture_names(kind, epoch, kept)
            for name in names:
                written.append(atomic_write(self.directory / name, png))
        self.next_t = time.perf_counter() + REDRAW_SECONDS
        return written

    def _grids(self, model: VAE, epoch: int) -> dict[str, bytes]:
        shape, dtype = self.image_shape, model.dtype
        head = f"{self.name}, epoch {epoch}:"
        x = self.inputs.astype(dtype)
        rows = [("input", x), ("recon.", model.reconstruct(x))]
        about = "validation images (input) and their reconstructions (recon.: mean of p(x|z) " \
                "at z = mu(input))"
        if self.grey is not None:
            rows.insert(0, ("data", self.grey))
            about = "validation images (data: grey levels; input: a binarized draw of them, " \
                    "what the encoder sees) and their reconstructions (recon.: mean of p(x|z) " \
                    "at z = mu(input))"
        pictures = {
            "reconstructions": figures.reconstruction_picture(rows, shape, f"{head} {about}"),
            "samples": figures.samples_picture(
                model.decode_mean(self.sample_z.astype(dtype)), shape,
                f"{head} {N_SAMPLES} samples from the prior: mean of p(x|z), z ~ N(0, I) "
                f"(the same z at every epoch)"),
        }
        if model.latent_dim == 2:
            pictures["manifold"] = figures.manifold_picture(
                model.decode_mean, shape, dtype,
                f"{head} mean of p(x|z) at z = (z1, z2) on a grid of the quantiles "
                f"of N(0, 1) (equal prior mass between neighbours)")
        return {kind: figures.encode_png(p) for kind, p in pictures.items()}

    def _tell_once(self, pngs: dict) -> None:
        if self.told:
            return
        self.told = True
        if self.image_shape is None:
            self.err.write(f"image grids skipped: the {self.name} data are not images\n")
        if pngs["curves"] is None:
            self.err.write("learning curves and latent scatter skipped: matplotlib is not "
                           "installed (pip install 'minivae[plots]')"
                           + ("; image grids are still written\n" if self.image_shape
                              else "\n"))
