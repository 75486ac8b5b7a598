"""Particles: one run at a time scores as vectorized; plates are told apart by name; Pyro's masks and scales."""

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine

import pplgen
from pplgen.evaluate import log_likelihood
from pplgen.inference import get
from pplgen.particles import PARTICLE_PLATE, Particles, common_scale, log_weights, sample_particles, site_log_prob
from pplgen.probe import probe_pair
from tests.support.programs import PROGRAMS

BY_NAME = {entry.name: entry for entry in PROGRAMS}


@pytest.mark.parametrize("name", ["vae_local_latents", "sibling_plates_same_size", "markov_time_series"])
def test_particles_drawn_one_run_at_a_time_score_as_vectorized_ones(name):
    """The same latent values give the same log-weights, stacked from K runs or replayed in one particle plate."""
    model, guide, args, kwargs = BY_NAME[name].build()
    nesting = probe_pair(model, guide, args, kwargs).max_plate_nesting
    stacked = sample_particles(model, guide, args, kwargs, num_particles=4, max_plate_nesting=nesting, vectorized=False)
    with pyro.plate(PARTICLE_PLATE, 4, dim=-nesting - 1):
        guide_trace = poutine.trace(poutine.replay(guide, trace=stacked.guide_trace)).get_trace(*args, **kwargs)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*args, **kwargs)
    vectorized = Particles(guide_trace, model_trace, 4, -nesting - 1, stacked.factor_dims)
    ours, theirs = log_weights(stacked), log_weights(vectorized)
    assert ours.log_weights.shape == theirs.log_weights.shape
    assert torch.allclose(ours.log_weights, theirs.log_weights, atol=1e-5)


def test_options_that_differentiate_through_latents_refuse_programs_that_do_not_vectorize():
    model, guide, args, kwargs = BY_NAME["global_latent"].build()
    with pytest.raises(ValueError, match="with estimator='dreg' needs them"):
        get("iwae", num_particles=3, estimator="dreg").check(model, guide, *args, **kwargs)
    with pytest.raises(ValueError, match="with local_signals=True needs them"):
        get("nvil", num_particles=2).check(model, guide, *args, **kwargs)
    engine = get("iwae", num_particles=3)
    assert engine.check(model, guide, *args, **kwargs).vectorized is False


def test_sibling_plates_that_share_a_dim_are_separate_factors():
    """Two plates at dim -1 of sizes 3 and 4: no plate holds every site, so the weights are per program."""
    model, guide, args, kwargs = BY_NAME["sparse_gamma_siblings"].build()
    probe = probe_pair(model, guide, args, kwargs)
    assert probe.particles.factor_dims == ()
    assert {name: (plate.dim, plate.size) for name, plate in probe.plates.items()} == {
        "weights": (-1, 3),
        "data": (-1, 4),
    }
    assert log_weights(probe.particles).log_weights.shape == (1,)


@pytest.mark.parametrize(
    "mask, expected",
    [(None, [1.0, 2.0]), (True, [1.0, 2.0]), (False, [0.0, 0.0]), (torch.tensor([True, False]), [1.0, 0.0])],
)
def test_masks_are_pyros(mask, expected):
    site = {
        "fn": dist.Delta(torch.zeros(2), log_density=torch.tensor([1.0, 2.0])),
        "value": torch.zeros(2),
        "mask": mask,
        "scale": 1.0,
        "name": "z",
    }
    assert site_log_prob(site).tolist() == expected


def test_a_scale_per_datum_is_one_scale_per_factor_and_a_scale_within_a_datum_is_refused():
    def model(x, scale):
        with pyro.plate("data", 3), poutine.scale(scale=scale):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    def guide(x, scale):
        with pyro.plate("data", 3), poutine.scale(scale=scale):
            pyro.sample("z", dist.Normal(0.0, 1.0))

    per_datum = torch.tensor([1.0, 2.0, 3.0])
    particles = sample_particles(model, guide, (torch.zeros(3), per_datum), {}, num_particles=2, max_plate_nesting=1)
    assert common_scale(particles).tolist() == [[1.0, 2.0, 3.0]]
    with pytest.raises(ValueError, match="scale alike|every site of a datum"):
        mixed = sample_particles(
            model, lambda x, s: guide(x, 1.0), (torch.zeros(3), per_datum), {}, num_particles=2, max_plate_nesting=1
        )
        common_scale(mixed)


def test_importance_sampling_scores_a_program_that_does_not_vectorize_one_run_at_a_time():
    """``z.reshape(len(x))`` breaks under a particle plate; with the exact posterior as guide every
    importance weight is p(x), so the estimate is exact: x ~ N(0, 2)."""

    def model(x):
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z.reshape(len(x)), 1.0), obs=x)

    def guide(x):
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Normal(x / 2, 0.5**0.5))

    x = torch.tensor([0.3, -1.2, 2.0])
    estimate = log_likelihood(model, x, guide=guide, num_samples=7, particle_chunk=3)
    assert torch.allclose(estimate, dist.Normal(0.0, 2**0.5).log_prob(x), atol=1e-5)


@pytest.mark.parametrize(
    "name, options, reason",
    [
        ("disarm", {}, "its antithetic pairs drawn together"),
        ("rebar", {}, "its three blocks of particles drawn together"),
        ("relax", {}, "its three blocks of particles drawn together"),
        ("gumbel", {"num_particles": 2}, r"num_particles=2 \(relaxed draws are made together\)"),
    ],
)
def test_estimators_whose_draws_cannot_be_made_one_run_at_a_time_refuse_programs_that_do_not_vectorize(
    name, options, reason
):
    def model(x):
        h = pyro.sample("h", dist.Bernoulli(torch.full((len(x), 3), 0.5)).to_event(2))
        pyro.sample("x", dist.Normal(h.reshape(len(x), 3), 1.0).to_event(2), obs=x)

    def guide(x):
        logits = pyro.param("logits", torch.zeros(3))
        pyro.sample("h", dist.Bernoulli(logits=logits.expand(len(x), 3)).to_event(2))

    with pytest.raises(pplgen.UnsupportedModelError, match=rf"{name} with {reason} needs them"):
        get(name, **options).check(model, guide, torch.randn(4, 3))
