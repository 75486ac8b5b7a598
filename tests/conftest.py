"""Fixtures every test module gets: Pyro's state cleared and seeded, default dtype and thread count scoped.

Shared models, data and catalogues live in :mod:`tests.support`.
"""

import pyro
import pytest
import torch


@pytest.fixture
def float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


@pytest.fixture(autouse=True)
def fresh_pyro():
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    yield
    pyro.clear_param_store()


@pytest.fixture
def one_thread():
    """Pins torch to one thread for a training test whose figures were measured so (restored afterwards)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
