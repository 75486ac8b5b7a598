"""``fit(compile=True)``: the step runs through ``torch.compile`` and gives the eager losses."""

import pyro
import pytest
import torch

import pplgen
from pplgen.inference import ENGINES, get
from pplgen.models import VAE, SigmoidBeliefNet


@pytest.mark.parametrize("name", sorted(ENGINES))
def test_compiled_steps_give_the_eager_losses(name):
    """Three steps with the same seed, eager and compiled: the losses agree to float tolerance (graph breaks at
    Pyro's handlers fall back to eager; the compiled pieces may fuse float operations differently)."""
    x = torch.rand(32, 12, generator=torch.Generator().manual_seed(0)).bernoulli()
    losses = []
    for compiled in (False, True):
        pyro.clear_param_store()
        torch.manual_seed(0)
        pair = VAE(data_dim=12, latent_dim=2, hidden=(8,)) if name in {"svi", "iwae", "avb"} else SigmoidBeliefNet(layers=(4,), observed=12)
        engine = get(name, **({"num_particles": 3} if name in {"iwae", "rws", "vimco"} else {}))
        result = pplgen.fit(pair, engine, x, steps=3, batch_size=32, accelerator="cpu", compile=compiled, progress=False)
        losses.append(torch.tensor([row["loss"] for row in result.history]))
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-5, atol=1e-4)
