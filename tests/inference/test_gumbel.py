"""gumbel's relaxation, schedule and refusals on small programs (its bias is measured in test_discrete_exact)."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch

from pplgen.checks import UnsupportedModelError
from pplgen.inference import get


def binary_pair(use):
    """A model that reads its binary site as ``use(h)`` and its guide."""

    def model(x):
        with pyro.plate("data", len(x)):
            h = pyro.sample("h", dist.Bernoulli(x.new_full((3,), 0.5)).to_event(1))
            pyro.sample("x", dist.Normal(use(h), 1.0).to_event(1), obs=x)

    def guide(x):
        logits = pyro.param("logits", torch.zeros(3))
        with pyro.plate("data", len(x)):
            pyro.sample("h", dist.Bernoulli(logits=logits).to_event(1))

    return model, guide, torch.randn(4, 3)


def one_hot_pair(seen):
    def model(x):
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.OneHotCategorical(logits=x.new_zeros(4)))
            seen.append(z.detach())
            pyro.sample("x", dist.Normal(z @ torch.arange(4.0), 1.0), obs=x)

    def guide(x):
        logits = pyro.param("z_logits", torch.zeros(4))
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.OneHotCategorical(logits=logits))

    return model, guide, torch.randn(5)


def test_the_model_sees_relaxed_values_or_hard_ones_straight_through():
    seen = []
    model, guide, x = one_hot_pair(seen)
    get("gumbel", temperature=0.5).check(model, guide, x)
    seen.clear()
    torch.manual_seed(0)
    get("gumbel", temperature=0.5)(model, guide, x).surrogate.backward()
    relaxed = seen[-1]
    assert torch.allclose(relaxed.sum(-1), torch.ones(5)) and not torch.isin(relaxed, torch.tensor([0.0, 1.0])).all()
    pyro.clear_param_store()
    get("gumbel", temperature=0.5, straight_through=True)(model, guide, x).surrogate.backward()
    assert torch.isin(seen[-1], torch.tensor([0.0, 1.0])).all() and (seen[-1].sum(-1) == 1).all()
    assert pyro.param("z_logits").grad.abs().sum() > 0


def test_the_temperature_anneals_in_training_to_its_floor():
    model, guide, x = binary_pair(lambda h: h)
    engine = get("gumbel", temperature=2.0, anneal=(0.5, 0.5))
    engine.check(model, guide, x)
    temperatures = [engine(model, guide, x).metrics["temperature"].item() for _ in range(5)]
    assert temperatures == pytest.approx([2.0, 2.0 * math.exp(-0.5), 2.0 * math.exp(-1.0), 0.5, 0.5])
    engine.eval()
    assert engine(model, guide, x).metrics["temperature"].item() == temperatures[-1]
    assert engine.options()["anneal"] == (0.5, 0.5)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"temperature": 0.0}, "temperature must be positive"),
        ({"anneal": (0.0, 1.0)}, r"anneal must be \(final temperature > 0, rate >= 0\)"),
        ({"anneal": (0.5,)}, "anneal must be"),
        ({"densities": "relaxed"}, r"densities must be one of \('discrete', 'concrete'\)"),
    ],
)
def test_bad_options_are_named(options, message):
    with pytest.raises(ValueError, match=message):
        get("gumbel", **options)


def test_a_site_cast_to_an_index_is_refused_by_name():
    model, guide, x = binary_pair(lambda h: torch.tensor([-1.0, 1.0])[h.long()])
    with pytest.raises(UnsupportedModelError, match=r"no model density reads site 'h' through a differentiable path"):
        get("gumbel").check(model, guide, x)
    get("disarm").check(model, guide, x)


def test_a_model_that_fails_on_relaxed_values_is_refused_by_name():
    def use(h):
        if not torch.isin(h, torch.tensor([0.0, 1.0])).all():
            raise ValueError("expected binary values")
        return h

    model, guide, x = binary_pair(use)
    with pytest.raises(UnsupportedModelError, match=r"the model fails on relaxed values.*expected binary values"):
        get("gumbel").check(model, guide, x)


def test_a_guide_site_without_a_relaxation_is_refused_by_name():
    def model(x):
        with pyro.plate("data", len(x)):
            n = pyro.sample("n", dist.Poisson(x.new_full((), 3.0)))
            pyro.sample("x", dist.Normal(n, 1.0), obs=x)

    def guide(x):
        rate = pyro.param("rate", torch.tensor(3.0), constraint=dist.constraints.positive)
        with pyro.plate("data", len(x)):
            pyro.sample("n", dist.Poisson(rate))

    with pytest.raises(UnsupportedModelError, match=r"guide site 'n' is a Poisson without rsample and without"):
        get("gumbel").check(model, guide, torch.randn(3))


def test_a_site_of_two_kinds_in_model_and_guide_is_refused_by_name():
    def model(x):
        with pyro.plate("data", len(x)):
            h = pyro.sample("h", dist.ContinuousBernoulli(logits=x.new_zeros(3)).to_event(1))
            pyro.sample("x", dist.Normal(h, 1.0).to_event(1), obs=x)

    def guide(x):
        logits = pyro.param("logits", torch.zeros(3))
        with pyro.plate("data", len(x)):
            pyro.sample("h", dist.Bernoulli(logits=logits).to_event(1))

    x = torch.randn(4, 3)
    with pytest.raises(UnsupportedModelError, match=r"site 'h' is a Bernoulli in the guide but a ContinuousBernoulli"):
        get("gumbel").check(model, guide, x)
