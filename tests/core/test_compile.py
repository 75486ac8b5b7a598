"""``fit(compile=True)``: the step runs through ``torch.compile`` and gives the eager losses."""

import pyro
import pytest
import torch

import pplgen
from pplgen.inference import ENGINES
from tests.support.cases import small_case


@pytest.mark.parametrize("name", sorted(ENGINES))
def test_compiled_steps_give_the_eager_losses(name):
    """Three steps with the same seed, eager and compiled: the losses agree to float tolerance (graph breaks at
    Pyro's handlers fall back to eager; the compiled pieces may fuse float operations differently)."""
    losses = []
    for compiled in (False, True):
        pyro.clear_param_store()
        pair, engine, x = small_case(name)
        result = pplgen.fit(
            pair, engine, x, steps=3, batch_size=32, execution=pplgen.Execution(accelerator="cpu", compile=compiled)
        )
        losses.append(torch.tensor([row["loss"] for row in result.history]))
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-5, atol=1e-4)
