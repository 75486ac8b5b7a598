"""Baselines a program attaches to its guide sites, as Pyro's ``TraceGraph_ELBO`` reads them
(``infer={"baseline": {...}}``), honoured by nvil: in Pyro's units (a baseline of the cost −l), trained where
they have parameters, and refused by name where malformed."""

import re

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn

import pplgen
from pplgen.inference import get

x = torch.tensor([0.3, -1.2, 2.0, 0.8, -0.4, 1.1])


def model(x):
    with pyro.plate("data", len(x)):
        z = pyro.sample("z", dist.Bernoulli(torch.full((), 0.5)))
        pyro.sample("x", dist.Normal(2.0 * z - 1.0, 1.0), obs=x)


def guide_with(baseline):
    def guide(x):
        logit = pyro.param("logit", torch.tensor(0.2))
        options = baseline(x) if callable(baseline) else baseline
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Bernoulli(logits=logit), infer={"baseline": options} if options else {})

    return guide


def plain_nvil():
    return get("nvil", baseline=None, normalize=False, local_signals=False)


def test_a_baseline_value_shifts_the_score_term_by_the_hand_computed_amount():
    """One particle, the same draw z (seed 3): the guide's gradient is −(l + c) ∇ log q(z) with Pyro's baseline
    c of the cost, so a baseline of 5 moves it by −5 Σ_n (z_n − σ(logit)) from no baseline."""
    draws = {}

    def recording(options):
        def guide(x):
            logit = pyro.param("logit", torch.tensor(0.2))
            with pyro.plate("data", len(x)):
                draws["z"] = pyro.sample(
                    "z", dist.Bernoulli(logits=logit), infer={"baseline": options} if options else {}
                )

        return guide

    gradients = {}
    for value in (0.0, 5.0):
        pyro.clear_param_store()
        engine = plain_nvil()
        guide = recording({"baseline_value": torch.tensor(value)} if value else None)
        engine.prepare(model, guide, x)
        pyro.set_rng_seed(3)
        engine(model, guide, x).surrogate.backward()
        gradients[value] = pyro.param("logit").grad.clone()
        z = draws["z"].detach()
    expected = -5.0 * (z - torch.sigmoid(torch.tensor(0.2))).sum()
    torch.testing.assert_close(gradients[5.0] - gradients[0.0], expected, rtol=1e-5, atol=1e-5)


def test_a_programs_own_baseline_network_is_trained_and_its_loss_falls():
    """A linear baseline of x registered with pyro.module (as Pyro's examples do): nvil steps it with the loop's
    optimizer, its weights move and the squared error falls by a quarter at least (the last 20 of 300 steps
    against the first 20, seed 0; measured: to 0.58 of it, the signal's own noise being the floor)."""
    torch.manual_seed(0)
    network = nn.Linear(1, 1)

    def options(x):
        pyro.module("my_baseline", network)
        return {"nn_baseline": lambda inputs: network(inputs.unsqueeze(-1)).squeeze(-1), "nn_baseline_input": x}

    before = [p.detach().clone() for p in network.parameters()]
    result = pplgen.fit(model, plain_nvil(), x, guide=guide_with(options), steps=300, optimization={"lr": 0.05})
    assert all(not torch.equal(a, b) for a, b in zip(before, network.parameters()))
    losses = result.metric("baseline_loss")
    assert sum(losses[-20:]) < 0.75 * sum(losses[:20])


def test_a_decaying_average_baseline_tracks_the_cost_and_travels_with_the_engine():
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    engine = plain_nvil()
    guide = guide_with({"use_decaying_avg_baseline": True, "baseline_beta": 0.5})
    costs = []
    for _ in range(3):
        loss = engine(model, guide, x)
        costs.append(loss.metrics["loss"].item() / len(x))  # one site: the mean cost is −ELBO per datum
    expected = 0.0
    for cost in costs:
        expected = 0.5 * expected + 0.5 * cost
    assert engine.site_averages["z"].value.item() == pytest.approx(expected, rel=1e-5)
    restored = plain_nvil()
    restored.load_state_dict(engine.state_dict())
    assert torch.equal(restored.site_averages["z"].value, engine.site_averages["z"].value)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"nn_baseline_typo": 1}, "asks for baseline option 'nn_baseline_typo', which Pyro does not define"),
        ({"nn_baseline": nn.Identity()}, "gives nn_baseline without nn_baseline_input"),
        ({"baseline_value": torch.zeros(4)}, "its baseline has shape (4,), which does not broadcast"),
    ],
    ids=["unknown", "no-input", "shape"],
)
def test_a_malformed_baseline_is_refused_by_name(options, message):
    pyro.clear_param_store()
    with pytest.raises(pplgen.UnsupportedModelError, match=f"guide site 'z'.*{re.escape(message)}"):
        plain_nvil()(model, guide_with(options), x)
