"""The program around the model: data, training runs, checkpoints, evaluation, pictures, CLI.

* :mod:`minivae.tool.data`: datasets and loaders;
* :mod:`minivae.tool.train`: the training loop (:func:`~minivae.tool.train.train_step`,
  :func:`~minivae.tool.train.fit`) and a resumable run around it;
* :mod:`minivae.tool.checkpoint`: atomic, pickle-free checkpoints;
* :mod:`minivae.tool.evaluate`, :mod:`minivae.tool.diagnostics`: numbers about a model;
* :mod:`minivae.tool.figures`: image grids (titled in :mod:`minivae.tool.pixelfont`), the
  latent scatter and curves; :mod:`minivae.tool.epoch_pictures`: which a run draws and keeps;
* :mod:`minivae.tool.burda`: Burda et al.'s training recipe;
* :mod:`minivae.tool.cli`: ``python -m minivae``.

It may import the core and :mod:`minivae.theory`; neither imports it.
"""
