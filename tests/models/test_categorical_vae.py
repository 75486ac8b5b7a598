"""The categorical VAE: its sites, its arguments, and every discrete engine on it."""

import pyro
import pytest
import torch
from pyro import poutine

import pplgen
from pplgen.inference import get
from pplgen.models import CategoricalVAE


def test_program_sites_and_shapes():
    vae = CategoricalVAE(data_dim=12, latents=3, classes=4, hidden=(8,))
    x = torch.rand(5, 12).round()
    guide = poutine.trace(vae.guide).get_trace(x)
    model = poutine.trace(poutine.replay(vae.model, trace=guide)).get_trace(x)
    z = guide.nodes["z"]["value"]
    assert z.shape == (5, 3, 4) and (z.sum(-1) == 1).all()
    assert model.nodes["x"]["fn"].event_shape == (12,) and model.nodes["z"]["fn"].event_shape == (3, 4)
    assert vae.sample(2).shape == (2, 12) and vae.reconstruct(x).shape == (5, 12)


@pytest.mark.parametrize(
    "options, message",
    [({"latents": 0}, "latents must be a positive int"), ({"classes": 1}, "classes must be at least 2")],
)
def test_bad_arguments_are_named(options, message):
    with pytest.raises(ValueError, match=message):
        CategoricalVAE(**options)


def test_data_of_the_wrong_shape_is_named():
    with pytest.raises(ValueError, match=r"expects data of shape \(batch, 12\), got \(5, 3\)"):
        CategoricalVAE(data_dim=12).model(torch.zeros(5, 3))


@pytest.mark.parametrize(
    "name, options",
    [
        ("gumbel", {"anneal": (0.5, 1e-3)}),
        ("gumbel", {"straight_through": True}),
        ("rebar", {}),
        ("relax", {"control": (8,)}),
        ("rws", {"num_particles": 2}),
        ("vimco", {"num_particles": 2}),
        ("nvil", {}),
        ("wake_sleep", {}),
    ],
    ids=str,
)
def test_every_discrete_engine_trains_it(name, options, one_thread):
    pyro.clear_param_store()
    torch.manual_seed(0)
    vae = CategoricalVAE(data_dim=12, latents=3, classes=4, hidden=(8,))
    before = [p.detach().clone() for p in vae.parameters()]
    result = pplgen.fit(vae, get(name, **options), torch.rand(20, 12).round(), steps=3, batch_size=10)
    assert all(torch.isfinite(torch.tensor(row["loss"])) for row in result.history)
    assert any(not torch.equal(a, b) for a, b in zip(before, vae.parameters()))


def test_disarm_refuses_its_one_hot_site_by_name():
    vae = CategoricalVAE(data_dim=12, latents=3, classes=4, hidden=(8,))
    with pytest.raises(pplgen.UnsupportedModelError, match="guide site 'z' is a OneHotCategorical, not a Bernoulli"):
        get("disarm").check(vae.model, vae.guide, torch.rand(4, 12).round())
