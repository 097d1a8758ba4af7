"""The program around the model: data, training runs, checkpoints, evaluation, pictures, CLI.

The command line
================

``python -m minivae COMMAND`` (or ``minivae COMMAND`` once installed). Every command
explains each option, with its unit and default, under ``--help``; every loss is the
negative ELBO in nats per datapoint (summed over data and latent dimensions, averaged
over datapoints).

* ``train``: trains a VAE and writes a run directory (below). The default is the 8x8
  digits that scikit-learn ships (no network, no files); ``--dataset binarized-mnist
  --data-dir DIR`` is the standard static binarization of Larochelle & Murray (2011),
  ``--dataset mnist`` reads the official IDX files (binarized afresh every epoch for the
  Bernoulli likelihood). Model (``--hidden``, ``--decoder-hidden``, ``--latent-dim``,
  ``--likelihood``, ``--activation``, ``--dtype``), objective (``--objective elbo|iwae``,
  ``--estimator pathwise|stl|dreg``, ``--k``, ``--kl``, ``--beta``, ``--warmup-epochs``),
  optimization (``--optimizer``, ``--lr``, ``--batch-size``, ``--epochs``,
  ``--patience``, ``--seed``).
* ``evaluate RUN_DIR``: the test negative ELBO with its reconstruction and KL parts, and
  the importance-sampled :math:`\\log p(x)` with ``--k`` samples per datapoint, each with
  its standard errors; writes ``RUN_DIR/evaluation_SPLIT.json``.
* ``sample RUN_DIR``: a PNG grid of ``--n`` samples from the prior (in bounded memory,
  whatever ``--n``).
* ``gradcheck``: a finite-difference check of a model you describe; prints the worst
  relative error per parameter block and exits 1 above ``--tol``.
* ``verify``: the numbered identities of the derivation (:mod:`minivae.theory`).

Each epoch of ``train`` prints one line: the train and validation negative ELBO with its
reconstruction and KL parts (the train numbers measured at the end of the epoch on up to
``--train-eval-size`` training points, z sampled from q, beta = 1), the number of active
latent units (Burda et al.: :math:`\\mathrm{Cov}_x(E_q[z_j]) > 0.01`), time, rate and ETA;
``*`` marks a new best validation value. A progress bar goes to stderr.

The run directory
=================

::

    runs/run-1/config.json              every option of the run
    runs/run-1/metrics.jsonl            one JSON line per epoch
    runs/run-1/checkpoints/latest.npz   after every epoch (and on Ctrl-C)
    runs/run-1/checkpoints/best.npz     lowest validation -ELBO so far
    runs/run-1/checkpoints/*.json       the same metadata, for people to read
    runs/run-1/pictures/                what the model does, epoch by epoch (below)
    runs/run-1/.lock                    held by the process training in it (its pid)

The pictures, each titled with its dataset and epoch (``KIND_latest.png`` is always the
current epoch; a copy ``KIND_epochNNN.png`` is kept every ceil(epochs/10) epochs and at
the last one, so a 50-epoch run keeps epochs 5, 10, ..., 50)::

    reconstructions_latest.png  validation images (rows "input") above their
                                reconstructions ("recon.": the mean of p(x|z) at z = mu(x));
                                for binarized grey levels, the grey levels on top ("data")
    samples_latest.png          64 samples from the prior (the same z every epoch)
    manifold_latest.png         with --latent-dim 2: decoded means over a grid of z, with
                                the z1 and z2 values on the axes
    latent_latest.png           encoder means of the validation set (the first two principal
                                components when Z > 2), coloured by label where the data
                                have labels (digits; mnist with its label files)
    curves.png                  train and validation -ELBO per epoch

The latent scatter and the curves need matplotlib (``pip install 'minivae[plots]'``);
without it the run says so in one line and draws the image grids, which need nothing.

A checkpoint is one ``.npz`` of plain arrays: the flat parameters, the optimizer state,
the random generator's state (PCG64, as uint64 words) and the metadata as JSON bytes
(model and training configuration, epoch, step, metrics, library version). It is read
with ``allow_pickle=False``, every metadata field is checked against a schema, and it is
written to a temporary name and renamed, so a crash never leaves a torn file.
``python -m minivae train --resume RUN_DIR [--epochs N]`` continues a run: the result is
bit for bit the parameters of a run that never stopped (tested, including a stop in the
middle of an epoch and dynamic binarization).

When something goes wrong
=========================

Every refusal or failure is one line on stderr naming the option or file and what was
expected; a traceback would be a bug. Exit status: 0 done; 2 refused before any work
(nothing was written); 1 the work failed (a file could not be written, memory ran out;
nothing already saved is lost); 3 a non-finite loss or gradient stopped training; 130
Ctrl-C.

* A NaN or infinite loss or gradient stops training at once, before the update, naming
  the step and the parameter blocks whose gradient is not finite; the last good
  checkpoint is kept (one is written before the first step).
* Ctrl-C saves a checkpoint at the next step boundary; a second Ctrl-C aborts without
  saving.
* A run directory belongs to one process (an ``flock`` on ``RUN_DIR/.lock``, released by
  the kernel however the process ends, ``kill -9`` included). Without ``--run-dir`` each
  run claims the next free ``runs/run-N`` atomically, so two commands started together
  get two directories. A new run goes only into a new or empty directory.
* Checked before the first step: the options, the data, the checkpoint to resume, that
  the directory accepts files, disk room for the checkpoints, and the memory one step
  needs (refused with the estimate when it cannot fit). A new run that fails before its
  first step leaves no directory behind.
* A full disk never costs a checkpoint: a failed write removes its temporary file, the
  previous file stays, and the run stops with the command that resumes it. Temporary
  files of a process killed while writing are removed at the next start.
* A corrupt, truncated, modified or mismatched checkpoint is an error naming the file
  and the field, and it is never overwritten. Missing data files, a wrong IDX magic
  number, an empty split, a checksum mismatch: an error that names the file and what
  was expected.
* Options a mode would ignore are refused (``--kl`` or ``--beta`` with ``--objective
  iwae``, ``--data-dir`` for a dataset that reads no files, an estimator that does not
  fit the objective).

Modules
=======

* :mod:`minivae.tool.data`: datasets and loaders;
* :mod:`minivae.tool.train`: the training loop (:func:`~minivae.tool.train.train_step`,
  :func:`~minivae.tool.train.fit`) and a resumable run around it;
* :mod:`minivae.tool.rundir`, :mod:`minivae.tool.files`, :mod:`minivae.tool.memory`: one
  owner per run directory, files written whole, memory checked before the work;
* :mod:`minivae.tool.checkpoint`: atomic, pickle-free, schema-checked checkpoints;
* :mod:`minivae.tool.evaluate`, :mod:`minivae.tool.diagnostics`: numbers about a model;
* :mod:`minivae.tool.figures`: image grids (titled in :mod:`minivae.tool.pixelfont`), the
  latent scatter and curves; :mod:`minivae.tool.epoch_pictures`: which a run draws and keeps;
* :mod:`minivae.tool.burda`: Burda et al.'s training recipe, as their released code runs
  it;
* :mod:`minivae.tool.cli`: ``python -m minivae``.

It may import the core and :mod:`minivae.theory`; neither imports it.
"""
