"""Data parallel fits on CPU with 2 processes (gloo) against the same fits in 1 process.

``parallel_worker.py`` runs each scenario with ``devices=1`` and with ``devices=2`` (Fabric launching the
second process), once more under ``torchrun``, and as two nodes of one process each (two launchers
rendezvousing on 127.0.0.1, as two machines would); every process pins itself to one thread.
"""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

WORKER = Path(__file__).with_name("parallel_worker.py")
ENGINES = ["svi", "iwae", "avb", "wake_sleep", "rws", "nvil", "vimco", "gan"]


def run(command, out):
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    finished = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=600, cwd=out.parent)
    assert finished.returncode == 0, finished.stderr[-3000:]


def run_two_nodes(command, out):
    """``command`` started twice, as node 0 and node 1 of one process each, meeting at 127.0.0.1."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    environment.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    nodes = [
        subprocess.Popen(
            command,
            env={**environment, "NODE_RANK": str(node)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=out.parent,
        )
        for node in (0, 1)
    ]
    for node in nodes:
        _, stderr = node.communicate(timeout=600)
        assert node.returncode == 0, stderr[-3000:]


def load(folder, rank=0):
    return torch.load(folder / f"rank{rank}.pt", weights_only=False)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """``{"one": rank 0 of 1 process, "two": [rank 0, rank 1] of 2 processes, "torchrun": [...]}``."""
    root = tmp_path_factory.mktemp("parallel")
    run([sys.executable, str(WORKER), "--devices", "1", "--out", str(root / "one")], root / "one")
    run([sys.executable, str(WORKER), "--devices", "2", "--out", str(root / "two")], root / "two")
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    run(
        [*torchrun, str(WORKER), "--devices", "2", "--scenarios", "map", "--out", str(root / "torchrun")],
        root / "torchrun",
    )
    run_two_nodes(
        [
            sys.executable,
            str(WORKER),
            "--devices",
            "1",
            "--num-nodes",
            "2",
            "--scenarios",
            "map",
            "--out",
            str(root / "nodes"),
        ],
        root / "nodes",
    )
    return {
        "one": load(root / "one"),
        "nodes": [load(root / "nodes", r) for r in (0, 1)],
        "two": [load(root / "two", r) for r in (0, 1)],
        "torchrun": [load(root / "torchrun", r) for r in (0, 1)],
    }


def test_two_processes_ran_each_on_its_share_of_the_cores(runs):
    assert runs["one"]["world_size"] == 1
    assert [r["world_size"] for r in runs["two"] + runs["torchrun"] + runs["nodes"]] == [2] * 6
    assert [r["threads"] for r in runs["two"]] == [max(1, (os.cpu_count() or 1) // 2)] * 2


def test_ranks_draw_different_particles(runs):
    """Each rank's RNG is seeded apart (rank 0 keeps the seed, so a one-process run is rank 0's)."""
    rank0, rank1 = runs["two"]
    assert not torch.equal(rank0["evaluation"]["draw_in_fit"], rank1["evaluation"]["draw_in_fit"])


@pytest.mark.parametrize("launcher", ["two", "torchrun", "nodes"])
@pytest.mark.parametrize("program", ["plain", "subsampled"])
def test_deterministic_updates_equal_one_process_on_the_union(runs, launcher, program):
    """A MAP fit (Delta guide for a global latent, a network in the model), 5 Adam steps of batch 12 split
    6 + 6: the parameters equal the 1-process run's to float tolerance, with a plain data plate and with one
    that subsamples 1,000 rows (Pyro's scale 1000/6 per shard, 1000/12 for the batch)."""
    one = runs["one"]["map"][program]
    for rank in runs[launcher]:
        torch.testing.assert_close(rank["map"][program], one, rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", ENGINES)
def test_mean_update_equals_one_process(runs, name):
    """150 single SGD steps from the same state on the same 16 rows (8 per rank): the mean summed gradient
    equals the 1-process one within 5 standard errors of their difference on every coordinate (seeded;
    the largest difference measured over all engines was 2.7 SE). A 2-process step that averaged the
    ranks' gradients instead of summing them fails it on every engine (measured: 17 to 30 SE)."""
    one = runs["one"]["mean_update"][name]["gradients"]
    two = runs["two"][0]["mean_update"][name]["gradients"]
    difference = one.mean(0) - two.mean(0)
    standard_error = (one.var(0) / len(one) + two.var(0) / len(two)).sqrt()
    noisy = standard_error > 0
    assert (difference[noisy].abs() / standard_error[noisy]).max() < 5
    torch.testing.assert_close(difference[~noisy], torch.zeros_like(difference[~noisy]), rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", ENGINES)
def test_every_rank_holds_the_same_parameters_and_helper_statistics(runs, name):
    """Parameters and buffers of model, guide and engine (nvil's moments and baseline, avb's and gan's
    discriminators and their Adam moments) after the steps are identical on both ranks."""
    rank0, rank1 = (r["mean_update"][name]["state"] for r in runs["two"])
    assert torch.equal(rank0, rank1)


def test_a_resumed_two_process_run_continues_exactly(runs):
    """vimco, 4 steps, a checkpoint (written by rank 0, with both ranks' RNG states), a resume to 8: the
    history and the state equal those of 8 uninterrupted steps."""
    for rank in runs["two"]:
        straight, resumed = rank["resume"]["straight"], rank["resume"]["resumed"]
        assert resumed["history"] == straight["history"]
        assert torch.equal(resumed["state"], straight["state"])


def test_held_out_evaluation_is_sharded_and_equals_one_process(runs):
    """7 held-out rows scored 4 + 3 by the ranks, with the exact posterior as guide: the mean equals the exact
    log p(x) and the 1-process figure."""
    one = runs["one"]["evaluation"]
    assert one["evaluation"] == pytest.approx(one["exact"], abs=1e-5)
    for rank in runs["two"]:
        assert rank["evaluation"]["evaluation"] == pytest.approx(one["evaluation"], abs=1e-6)


def test_a_k_sample_bound_over_a_global_latent_and_a_dataloader_are_refused_in_two_processes(runs):
    assert runs["one"]["refusal"] == {"global latent": None, "dataloader": None}
    for rank in runs["two"]:
        refusal = rank["refusal"]
        assert "iwae's estimator needs log-weights that factorize over the data rows" in refusal["global latent"]
        assert "devices=1" in refusal["global latent"]
        assert "a DataLoader cannot be split over 2 processes" in refusal["dataloader"]


def test_traced_steps_compose_with_data_parallelism(runs):
    """compile="trace" in 2 processes: the MAP fits equal the 1-process eager fits (the gradients are summed
    over the processes outside the graph); nvil, whose moments are summed inside its forward, says so once and
    runs eagerly there, every rank holding the same state, while in 1 process it traces."""
    for program in ("plain", "subsampled"):
        for rank in runs["two"]:
            torch.testing.assert_close(rank["traced"]["map"][program], runs["one"]["map"][program], rtol=0, atol=1e-5)
    assert runs["one"]["traced"]["nvil_graphs"] == 1 and not runs["one"]["traced"]["nvil_notes"]
    for rank in runs["two"]:
        assert rank["traced"]["nvil_graphs"] == 0
    (note,) = runs["two"][0]["traced"]["nvil_notes"]
    assert "nvil's step runs eagerly: its forward sums statistics over the processes" in note
    assert torch.equal(runs["two"][0]["traced"]["nvil_state"], runs["two"][1]["traced"]["nvil_state"])
