"""Every field of a checkpoint is checked: a bad one is a CheckpointError naming file and field.

A real run's checkpoint is taken apart and put back together with one thing wrong. Each
must be refused by the loader (never a TypeError or KeyError from deep inside, never a
huge allocation), the message must name the file and the field, and the file must be
left exactly as it was.
"""

import json

import numpy as np
import pytest

from minivae.tool.checkpoint import CheckpointError, load_checkpoint
from minivae.tool.evaluate import load_run
from minivae.tool.train import TrainConfig, load_run_checkpoint, train


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    path = tmp_path_factory.mktemp("schema") / "run"
    train(TrainConfig(dataset="synthetic", hidden=[6], latent_dim=2, batch_size=500,
                      train_eval_size=100, epochs=1, pictures=False), path)
    return path


def _rewrite(src, dst, change):
    with np.load(src) as f:
        arrays = {k: f[k] for k in f.files}
    meta = json.loads(arrays["meta_json"].tobytes())
    change(meta, arrays)
    arrays["meta_json"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    np.savez(dst, **arrays)  # may hold an object array on purpose: np.savez pickles it
    return dst


def _set(key, value):
    return lambda m, a: m.__setitem__(key, value)


def _drop(key):
    return lambda m, a: m.pop(key)


def _config(key, value):
    return lambda m, a: m["train_config"].__setitem__(key, value)


def _model(key, value):
    return lambda m, a: m["model_config"].__setitem__(key, value)


def _array(key, value):
    def change(m, a):
        a[key] = value(a[key]) if callable(value) else value
    return change


def _nan_at_0(a):
    a = a.copy()
    a[0] = np.nan
    return a


CASES = {
    "epoch as a string": (_set("epoch", "3"), "'epoch' must be an integer >= 0"),
    "negative epoch": (_set("epoch", -1), "'epoch' must be an integer >= 0"),
    "no epoch": (_drop("epoch"), "no field 'epoch'"),
    "step null": (_set("step", None), "'step' must be an integer >= 0, got None"),
    "no train_config": (_drop("train_config"), "no field 'train_config'"),
    "train_config a list": (_set("train_config", []), "'train_config' must be a JSON object"),
    "lr a string": (_config("lr", "a"), "'train_config': --lr must be a real number"),
    "hidden a number": (_config("hidden", 200), "'train_config': --hidden must be a list"),
    "an option missing": (lambda m, a: m["train_config"].pop("batch_size"),
                          "'train_config': no option batch_size"),
    "an unknown option": (_config("momentum", 0.9), "unknown training options"),
    "history an object": (_set("history", {}), "'history' must be a list of JSON objects"),
    "history too short": (_set("history", []), "'history' has 0 entries for epoch 1"),
    "best a string": (_set("best", "low"), "'best' must be a number"),
    "bad_epochs negative": (_set("bad_epochs", -2), "'bad_epochs' must be an integer >= 0"),
    "binarize unknown": (_set("binarize", "sometimes"), "'binarize' must be one of"),
    "position malformed": (_set("position", {"batch": "x"}), "'position' must be an object"),
    "param_specs wrong": (_set("param_specs", [["w", [3]]]), "'param_specs' describes 3"),
    "param_specs not pairs": (_set("param_specs", "all"), "'param_specs' must be a list"),
    "model_config huge": (_model("hidden", [10**9]),
                          "'model_config': describes a model of 69000000470 parameters"),
    "model_config no likelihood": (lambda m, a: m["model_config"].pop("likelihood"),
                                   "'model_config': not a model description"),
    "model_config bad activation": (_model("activation", "gelu"), "'model_config'"),
    "no format": (_drop("format"), "unknown checkpoint format None"),
    "version a number": (_set("version", 1), "'version' must be a string"),
    "dtype float16": (_set("dtype", "float16"), "'dtype' must be one of"),
    "n_params zero": (_set("n_params", 0), "'n_params' must be an integer >= 1"),
    "no generator": (lambda m, a: a.pop("rng.train"), "no random generator state 'rng.train'"),
    "generator words": (_array("rng.train", lambda w: np.array([1, 2, 3, 5, 7, 9], np.uint64)),
                        "random generator 'rng.train': not a PCG64 generator state"),
    "NaN parameters": (_array("params", _nan_at_0), "holds non-finite parameters (1 of"),
    "infinite parameters": (_array("params", lambda p: np.full_like(p, np.inf)),
                            "holds non-finite parameters"),
    "NaN optimizer state": (_array("optim.v", _nan_at_0),
                            "non-finite optimizer state 'v'"),
    "pickled parameters": (_array("params", np.array([object()], dtype=object)),
                           "holds pickled Python objects"),
    "metadata a list": (lambda m, a: None, "must be a JSON object"),  # special-cased below
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_bad_field_is_refused_naming_file_and_field(run, tmp_path, case):
    change, match = CASES[case]
    bad = tmp_path / "bad.npz"
    if case == "metadata a list":
        with np.load(run / "checkpoints" / "latest.npz") as f:
            arrays = {k: f[k] for k in f.files}
        arrays["meta_json"] = np.frombuffer(b"[1, 2]", np.uint8)
        np.savez(bad, **arrays)
    else:
        _rewrite(run / "checkpoints" / "latest.npz", bad, change)
    before = bad.read_bytes()
    with pytest.raises(CheckpointError) as info:
        load_run_checkpoint(bad)
    message = str(info.value)
    assert match in message and str(bad) in message, message
    assert "allow_pickle" not in message and "\n" not in message
    assert bad.read_bytes() == before


def test_load_run_refuses_them_too_and_the_good_file_loads(run):
    config, model, ckpt = load_run(run)
    assert ckpt.meta["epoch"] == 1 and np.isfinite(model.flat).all()
    assert config.hidden == [6]
    # the generic loader (used by scripts with their own metadata) checks only the format
    assert load_checkpoint(run / "checkpoints" / "latest.npz").meta["epoch"] == 1


@pytest.mark.parametrize("change, match", [
    (_array("optim.m", lambda m: m[:-1]), "optimizer array 'm'"),
    (lambda m, a: a.pop("optim.step_count"), "optimizer array 'step_count'"),
    (_array("optim.m_scale_steps", lambda s: np.int64(-1)), "'m_scale_steps' must be one integer"),
    (_set("position", {"batch": 99, "seen": 0, "loss_sum": 0.0,
                       "epoch_rng": [0, 1, 2, 3, 4, 5]}), "'position' (batch 99"),
], ids=["adam state shape", "no step count", "negative scale steps",
        "position beyond the epoch"])
def test_resume_refuses_state_that_does_not_fit_the_run(run, tmp_path, change, match):
    """Fields that only the run can judge (the optimizer, the epoch's batches) are checked
    when it resumes, before the first step; the run's files are untouched."""
    copy = tmp_path / "run"
    (copy / "checkpoints").mkdir(parents=True)
    _rewrite(run / "checkpoints" / "latest.npz", copy / "checkpoints" / "latest.npz", change)
    before = (copy / "checkpoints" / "latest.npz").read_bytes()
    with pytest.raises(CheckpointError, match=match.replace("(", r"\(")):
        train(run_dir=copy, resume=True, overrides={"epochs": 2})
    assert (copy / "checkpoints" / "latest.npz").read_bytes() == before
    assert sorted(p.name for p in (copy / "checkpoints").iterdir()) == ["latest.npz"]
