"""Dreaming: the model run without its observations, the dream put where the data were."""

import pyro
import pyro.distributions as dist
import pytest
import torch

from pplgen.dreams import dream, sleep_log_density
from pplgen.inference import get


def model(x, noise_scale=1.0):
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Normal(x.new_zeros(()), 1.0))
        pyro.sample("x", dist.Normal(z, noise_scale), obs=x)


def guide(x, noise_scale=1.0):
    weight = pyro.param("weight", torch.tensor(0.5))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("z", dist.Normal(weight * x, 0.7))


def test_dream_replaces_the_data_argument_and_detaches():
    x = torch.full((5,), 100.0)
    dreamed = dream(model, (x,), {"noise_scale": 0.1})
    z, x_dreamed = dreamed.trace.nodes["z"]["value"], dreamed.args[0]
    assert x_dreamed.shape == x.shape and (x_dreamed - z).abs().max() < 1.0
    assert dreamed.kwargs == {"noise_scale": 0.1}
    assert not x_dreamed.requires_grad


def test_sleep_log_density_scores_the_dreamed_latents_given_the_dreamed_data():
    torch.manual_seed(0)
    dreamed = dream(model, (torch.zeros(4),), {})
    weight = pyro.param("weight", torch.tensor(0.5))
    expected = dist.Normal(weight * dreamed.args[0], 0.7).log_prob(dreamed.trace.nodes["z"]["value"]).sum()
    assert torch.allclose(sleep_log_density(guide, dreamed), expected)


def test_a_reshaped_argument_is_found_and_the_dream_keeps_its_shape():
    def flat_model(images):
        x = images.reshape(len(images), -1)
        with pyro.plate("data", len(x)):
            pyro.sample("x", dist.Bernoulli(x.new_full((4,), 0.5)).to_event(1), obs=x)

    images = torch.ones(3, 2, 2)
    assert dream(flat_model, (images,), {}).args[0].shape == (3, 2, 2)


def test_keyword_data_argument_is_found():
    def keyword_model(scale, *, data):
        with pyro.plate("data", len(data)):
            pyro.sample("x", dist.Normal(data.new_zeros(()), scale), obs=data)

    dreamed = dream(keyword_model, (2.0,), {"data": torch.zeros(6)})
    assert set(dreamed.kwargs) == {"data"} and dreamed.args == (2.0,)


def two_copies_model(x, same):
    with pyro.plate("data", len(x)):
        pyro.sample("x", dist.Normal(x.new_zeros(()), 1.0), obs=x)


def test_an_ambiguous_argument_is_named_with_the_way_out():
    x = torch.zeros(3)
    with pytest.raises(ValueError, match=r"site 'x' \(several arguments hold it\); pass data_arguments=\{'x': 0\}"):
        dream(two_copies_model, (x, x.clone()), {})
    assert dream(two_copies_model, (x, x.clone()), {}, data_arguments={"x": 1}).args[0] is x


def test_observing_a_subsample_of_the_argument_is_refused():
    def subsampling_model(x):
        with pyro.plate("data", len(x), subsample_size=2) as index:
            pyro.sample("x", dist.Normal(x.new_zeros(()), 1.0), obs=x[index])

    with pytest.raises(ValueError, match=r"site .x. observes values of shape \(2,\) but argument 0 has shape \(5,\)"):
        dream(subsampling_model, (torch.zeros(5),), {}, data_arguments={"x": 0})


@pytest.mark.parametrize(
    "data_arguments, message",
    [
        ({"y": 0}, "names site 'y', which the model does not observe"),
        ({"x": 3}, "maps site 'x' to 3, but the model received 1"),
    ],
)
def test_bad_explicit_mappings_are_named(data_arguments, message):
    with pytest.raises(ValueError, match=message):
        dream(model, (torch.zeros(3),), {}, data_arguments=data_arguments)


def test_a_model_without_observations_cannot_dream():
    def prior_only(x):
        pyro.sample("z", dist.Normal(0.0, 1.0))

    with pytest.raises(ValueError, match="observes no site"):
        dream(prior_only, (torch.zeros(2),), {})


def latent_two_copies_model(x, same):
    with pyro.plate("data", len(x)):
        z = pyro.sample("z", dist.Normal(x.new_zeros(()), 1.0))
        pyro.sample("x", dist.Normal(z, 1.0), obs=x)


def latent_guide(x, same):
    with pyro.plate("data", len(x)):
        pyro.sample("z", dist.Normal(pyro.param("loc", torch.tensor(0.0)), 1.0))


@pytest.mark.parametrize("name, options", [("wake_sleep", {}), ("rws", {"phi": "sleep"})])
def test_dreaming_engines_check_the_mapping_before_training(name, options):
    with pytest.raises(ValueError, match="pass data_arguments"):
        get(name, **options).check(latent_two_copies_model, latent_guide, torch.zeros(3), torch.zeros(3))
