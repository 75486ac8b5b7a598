"""A Pyro user keeps their loop: ``pyro.infer.SVI`` trains with every pplgen engine, and
``pyro.infer.Predictive`` reads what pplgen fitted."""

import pyro
import pytest
import torch
from pyro.infer import SVI, Predictive
from pyro.optim import Adam

import pplgen
from pplgen.inference import get
from tests.support.cases import family_for
from tests.support.outcomes import ENGINES
from tests.support.programs import PROGRAMS

BY_NAME = {entry.name: entry for entry in PROGRAMS}


def function_program(engine):
    """A Pyro user's own functions, registering their networks with ``pyro.module``: a VAE for engines that
    need ``rsample``, a sigmoid belief layer for the others, a Gaussian hierarchy for a guide-free engine."""
    if not engine.needs_guide:
        return BY_NAME["global_and_local_latents"].build()
    return BY_NAME["vae_local_latents" if engine.requires_rsample else "sigmoid_belief_layer"].build()


def module_program(engine):
    """pplgen's model families: modules whose bound methods are the programs."""
    x = torch.bernoulli(torch.full((5, 6), 0.5), generator=torch.Generator().manual_seed(0))
    family = family_for(
        engine.name, vae={"data_dim": 6, "latent_dim": 2, "hidden": (4,)}, sbn={"layers": (3,), "observed": 6}
    )
    return family.model, family.guide, (x,), {}


@pytest.mark.parametrize("programs", [function_program, module_program], ids=["functions", "modules"])
@pytest.mark.parametrize("name", ENGINES)
def test_pyro_svi_steps_every_engine_and_its_helpers(name, programs):
    engine = get(name, **ENGINES[name].options)
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
