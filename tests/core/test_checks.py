"""A malformed model/guide pair is refused before training, naming the site."""

import pyro
import pyro.distributions as dist
import pytest
import torch

from pplgen.inference import get


def model(x):
    with pyro.plate("data", len(x)):
        z = pyro.sample("z", dist.Normal(x.new_zeros(2), 1.0).to_event(1))
        pyro.sample("x", dist.Normal(z.sum(-1), 1.0), obs=x)


def guide_without_z(x):
    pyro.param("unused", torch.zeros(()))


def guide_with_extra_site(x):
    with pyro.plate("data", len(x)):
        pyro.sample("z", dist.Normal(x.new_zeros(2), 1.0).to_event(1))
        pyro.sample("w", dist.Normal(x.new_zeros(()), 1.0))


def guide_with_wrong_event_shape(x):
    with pyro.plate("data", len(x)):
        pyro.sample("z", dist.Normal(x.new_zeros(3), 1.0).to_event(1))


def guide_with_wrong_batch_shape(x):
    with pyro.plate("wrong", 7):
        pyro.sample("z", dist.Normal(x.new_zeros(2), 1.0).to_event(1))


def guide_sampling_observed_site(x):
    with pyro.plate("data", len(x)):
        pyro.sample("z", dist.Normal(x.new_zeros(2), 1.0).to_event(1))
        pyro.sample("x", dist.Normal(x.new_zeros(()), 1.0))


@pytest.mark.parametrize(
    "guide, message",
    [
        (guide_without_z, "model site 'z' is latent but the guide has no site of that name"),
        (guide_with_extra_site, r"guide site 'w' does not appear in the model"),
        (guide_with_wrong_event_shape, r"site 'z': the guide's event shape is \(3,\) but the model's is \(2,\)"),
        (guide_with_wrong_batch_shape, r"fail when run together.*Shape mismatch inside plate\('data'\)"),
        (guide_sampling_observed_site, "guide site 'x' is observed in the model"),
    ],
)
@pytest.mark.parametrize("engine", ["svi", "iwae"])
def test_malformed_pairs_are_named(engine, guide, message):
    with pytest.raises(ValueError, match=message):
        get(engine).check(model, guide, torch.randn(4))
