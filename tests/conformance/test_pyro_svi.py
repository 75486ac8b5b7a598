"""A Pyro user keeps their loop: ``pyro.infer.SVI`` trains with every pplgen engine, and
``pyro.infer.Predictive`` reads what pplgen fitted."""

import pyro
import pytest
import torch
from pyro.infer import SVI, Predictive
from pyro.optim import Adam

import pplgen
from pplgen.inference import get
from pplgen.models import VAE, SigmoidBeliefNet
from tests.support.outcomes import ENGINES
from tests.support.programs import PROGRAMS

BY_NAME = {entry.name: entry for entry in PROGRAMS}


def function_program(engine):
    """A Pyro user's own functions, registering their networks with ``pyro.module``."""
    return BY_NAME["vae_local_latents" if engine.reparameterized else "sigmoid_belief_layer"].build()


def module_program(engine):
    """pplgen's model families: modules whose bound methods are the programs."""
    x = torch.bernoulli(torch.full((5, 6), 0.5), generator=torch.Generator().manual_seed(0))
    family = (
        VAE(data_dim=6, latent_dim=2, hidden=(4,))
        if engine.reparameterized
        else SigmoidBeliefNet(layers=(3,), observed=6)
    )
    return family.model, family.guide, (x,), {}


@pytest.mark.parametrize("programs", [function_program, module_program], ids=["functions", "modules"])
@pytest.mark.parametrize("name", ENGINES)
def test_pyro_svi_steps_every_engine_and_its_helpers(name, programs):
    engine = get(name, **ENGINES[name])
    model, guide, args, kwargs = programs(engine)
    svi = SVI(model, guide, Adam({"lr": 0.05}), loss=engine.differentiable_loss)
    svi.step(*args, **kwargs)
    before = {key: value.detach().clone() for key, value in pyro.get_param_store().items()}
    for _ in range(3):
        loss = svi.step(*args, **kwargs)
    assert torch.isfinite(torch.tensor(loss))
    moved = {key for key, value in pyro.get_param_store().items() if not torch.equal(value.detach(), before[key])}
    assert moved, "Pyro's optimizer moved no parameter"
    helpers = {key for key in pyro.get_param_store() if key.startswith(f"pplgen.{name}$$$")}
    assert helpers == {f"pplgen.{name}$$${n}" for n, _ in engine.named_parameters()}
    assert helpers <= moved


def test_predictive_reads_a_pplgen_fit():
    model, guide, args, kwargs = BY_NAME["vae_local_latents"].build()
    result = pplgen.fit(model, "iwae", args, guide=guide, steps=5)
    samples = Predictive(result.model, guide=result.guide, num_samples=7)(*args)
    (x,) = args
    assert samples["x"].shape == (7, *x.shape)
    assert samples["z"].shape[0] == 7
