"""pplgen takes part in a process group only when data parallelism is on: one set up for other reasons (a
user's own collectives) leaves every engine, step and evaluation on its own process."""

import torch
import torch.distributed as dist

import pplgen
from pplgen.distributed import all_reduce_sum_, data_parallel, rank, world_size
from pplgen.inference import get
from tests.support.cases import binary_data, small_case, small_vae


def a_foreign_group(monkeypatch):
    """A process group of 2 that something other than pplgen initialized (its collectives must not be called)."""
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda *group: 2)
    monkeypatch.setattr(dist, "get_rank", lambda *group: 1)

    def refuse(*args, **kwargs):
        raise AssertionError("pplgen called a collective of a process group it was not asked to use")

    monkeypatch.setattr(dist, "all_reduce", refuse)
    monkeypatch.setattr(dist, "broadcast", refuse)


def test_a_process_group_pplgen_was_not_asked_to_use_is_left_alone(monkeypatch):
    a_foreign_group(monkeypatch)
    data_parallel(False)
    assert (world_size(), rank()) == (1, 0)
    assert torch.equal(all_reduce_sum_(torch.ones(2)), torch.ones(2))
    pair, engine, x = small_case("nvil")  # reduces its running moments over ranks under data parallelism
    engine(pair.model, pair.guide, x).surrogate.backward()
    try:
        data_parallel(True)
        assert (world_size(), rank()) == (2, 1)
    finally:
        data_parallel(False)


def test_fit_turns_data_parallelism_on_only_for_the_processes_it_runs(monkeypatch):
    """A one-process fit leaves it off even where it was on, so a process group met afterwards is left alone."""
    data_parallel(True)
    pplgen.fit(small_vae(), get("svi"), binary_data(16), steps=1, execution={"accelerator": "cpu"})
    a_foreign_group(monkeypatch)
    assert (world_size(), rank()) == (1, 0)
