"""``fit(loggers=...)``: settings, step metrics and evaluations reach Lightning Fabric's TensorBoard and CSV loggers,
read back from the files they write."""

import csv
import json
from pathlib import Path

import pyro
import pytest
import torch
from lightning_fabric.loggers import CSVLogger, TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

import pplgen
from pplgen.loggers import named_loggers
from tests.support.cases import binary_data, small_vae


def fit(loggers, **options):
    pyro.clear_param_store()
    x = binary_data(48)
    return pplgen.fit(
        small_vae(),
        "svi",
        x[:40],
        steps=8,
        batch_size=10,
        evaluation=pplgen.Evaluation(x[40:], every=1, samples=4),
        execution=pplgen.Execution(accelerator="cpu", progress=False),
        loggers=loggers,
        **options,
    )


def test_tensorboard_gets_every_nth_step_the_evaluations_and_the_settings(tmp_path):
    logger = TensorBoardLogger(tmp_path, name="tb", version="")
    result = fit(pplgen.Logging(logger, every=2))
    events = EventAccumulator(str(tmp_path / "tb")).Reload()
    losses = events.Scalars("train/loss")
    assert [e.step for e in losses] == [2, 4, 6, 8]
    history = {row["step"]: row["loss"] for row in result.history}
    assert [e.value for e in losses] == pytest.approx([history[s] for s in (2, 4, 6, 8)], rel=1e-6)
    assert {"train/loss", "train/elbo", "eval/log_likelihood", "eval/elbo"} <= set(events.Tags()["scalars"])
    evaluations = events.Scalars("eval/log_likelihood")
    assert [e.step for e in evaluations] == [r["step"] for r in result.evaluations] == [4, 8]
    assert [e.value for e in evaluations] == pytest.approx([r["log_likelihood"] for r in result.evaluations])
    start = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    settings = HParamsPluginData.FromString(start).session_start_info.hparams
    assert settings["seed"].number_value == 0 and settings["batch_size"].number_value == 10
    assert (
        settings["engine_options/num_particles"].number_value == 1 and settings["precision"].string_value == "32-true"
    )


def test_csv_gets_the_same_rows_and_the_settings_beside_them(tmp_path):
    result = fit([CSVLogger(tmp_path, name="csv", version="")])
    settings = json.loads((tmp_path / "csv" / "settings.json").read_text())
    assert settings["engine_options"]["num_particles"] == 1 and settings["batch_size"] == 10
    with open(tmp_path / "csv" / "metrics.csv") as rows:
        logged = [row for row in csv.DictReader(rows) if row["train/loss"]]
    assert [int(row["step"]) for row in logged] == [1, 2, 3, 4, 5, 6, 7, 8]
    assert [float(row["train/loss"]) for row in logged] == pytest.approx([r["loss"] for r in result.history])


def test_a_run_that_fails_finalizes_its_loggers_as_failed(tmp_path, monkeypatch):
    statuses = []
    logger = CSVLogger(tmp_path, name="csv", version="")
    monkeypatch.setattr(logger, "finalize", statuses.append)
    with pytest.raises(pplgen.NonFiniteLossError):
        fit(logger, optimization=pplgen.Optimization(optimizer=torch.optim.SGD, lr=1e38))
    assert statuses == ["failed"]


def test_loggers_that_are_not_loggers_are_refused_by_name(tmp_path):
    with pytest.raises(TypeError, match="loggers must be Lightning Fabric loggers.*got str"):
        fit(["tensorboard"])
    with pytest.raises(ValueError, match="logging every must be a positive int"):
        pplgen.Logging(CSVLogger(tmp_path), every=0)


def test_named_loggers_write_under_their_names(tmp_path):
    tensorboard, csv_logger = named_loggers(["tensorboard", "csv", "csv"], tmp_path)
    assert isinstance(tensorboard, TensorBoardLogger) and isinstance(csv_logger, CSVLogger)
    assert Path(tensorboard.log_dir) == tmp_path / "tensorboard" and Path(csv_logger.log_dir) == tmp_path / "csv"
