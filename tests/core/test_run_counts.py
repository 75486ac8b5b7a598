"""How often the programs run: ``fit`` probes the pair once before its first update, evaluation reuses the
fit's plan, and nothing else runs them to find something out.

Counted by wrapping model and guide. What one run cannot show (several particles drawn at once, a dream
scored by the guide, the prior run inside the particle plate) ``check`` tries on the side, and in training
the first step tries it as it runs, with the same verdict: so every engine runs the pair once before its
first step (a guide-free engine, gan, never runs the guide).
"""

import pyro
import pyro.distributions as dist
import pytest
import torch

import pplgen
from pplgen import inference
from pplgen.evaluate import held_out_scores


class Counted:
    """A program that counts its runs."""

    def __init__(self, program):
        self.program, self.runs = program, 0

    def __call__(self, *args, **kwargs):
        self.runs += 1
        return self.program(*args, **kwargs)


def model(x):
    weight = pyro.param("weight", torch.ones(2))
    with pyro.plate("data", len(x)):
        z = pyro.sample("z", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
        pyro.sample("x", dist.Normal(z * weight, 1.0).to_event(1), obs=x)


def guide(x):
    loc = pyro.param("q_loc", torch.zeros(2))
    with pyro.plate("data", len(x)):
        pyro.sample("z", dist.Normal(loc, 1.0).to_event(1))


def binary_model(x):
    weight = pyro.param("weight", torch.ones(2))
    with pyro.plate("data", len(x)):
        h = pyro.sample("z", dist.Bernoulli(0.5).expand([2]).to_event(1))
        pyro.sample("x", dist.Normal(h * weight, 1.0).to_event(1), obs=x)


def binary_guide(x):
    probs = pyro.param("q_probs", torch.full((2,), 0.5), constraint=dist.constraints.unit_interval)
    with pyro.plate("data", len(x)):
        pyro.sample("z", dist.Bernoulli(probs).to_event(1))


def programs_for(engine):
    """The Gaussian pair, or a Bernoulli one for an engine of binary latents."""
    return (
        (binary_model, binary_guide) if (engine.binary_latents_only or engine.discrete_latents_only) else (model, guide)
    )


x = torch.linspace(-2.0, 2.0, 16).reshape(8, 2)


def runs(*programs):
    counts = tuple(p.runs for p in programs)
    for p in programs:
        p.runs = 0
    return counts


@pytest.mark.parametrize("name", sorted(inference.ENGINES))
def test_fit_runs_the_pair_once_to_probe_it_and_then_only_its_steps(name):
    pyro.clear_param_store()
    engine = inference.get(name)
    counted_model, counted_guide = (Counted(program) for program in programs_for(engine))
    result = pplgen.fit(counted_model, engine, x, guide=counted_guide if engine.needs_guide else None, steps=1)
    first = runs(counted_model, counted_guide)
    result.engine(result.model, result.guide, x)  # a second step of the planned pair: no probe
    step = runs(counted_model, counted_guide)
    extra = tuple(f - s for f, s in zip(first, step))
    assert extra == ((1, 1) if engine.needs_guide else (1, 0))


@pytest.mark.parametrize("name", ["svi", "iwae"])
def test_evaluation_with_the_fits_plan_does_not_probe(name):
    """Both scores come from one scorer on the fit's plan: K particles at once for log p(x), one for the ELBO
    (after a one-particle engine, the first K particles are tried at once and the plan keeps the verdict)."""
    pyro.clear_param_store()
    counted_model, counted_guide = Counted(model), Counted(guide)
    result = pplgen.fit(counted_model, name, x, guide=counted_guide, steps=1)
    runs(counted_model, counted_guide)
    held_out_scores(result.model, result.guide, x, 50, plan=result.engine.plan)
    assert runs(counted_model, counted_guide) == (2, 2)
    held_out_scores(result.model, result.guide, x, 50, plan=result.engine.plan)
    assert runs(counted_model, counted_guide) == (2, 2)
