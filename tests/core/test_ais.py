"""``pplgen.evaluate.ais``: exact evidence of the linear-Gaussian model, convergence in the number of
steps, agreement with importance sampling on a VAE, and the errors it names."""

import pyro
import pytest
import torch

import pplgen
from pplgen.annealing import annealing_schedule
from pplgen.evaluate import ais, log_likelihood
from pplgen.models import VAE, SigmoidBeliefNet
from tests.support.linear_gaussian import LinearGaussian


def data(n, seed):
    return torch.randn(n, 2, generator=torch.Generator().manual_seed(seed)) * 1.5


def test_ais_matches_the_exact_evidence():
    """Seed 0, 50 data, T = 200, 16 chains: mean error below 0.05 nats (measured 0.01), each datum within 0.6."""
    model = LinearGaussian()
    x = data(50, 1)
    error = ais(model, x, num_steps=200, num_chains=16) - model.log_evidence(x).detach()
    assert error.mean().abs() < 0.05
    assert error.abs().max() < 0.6


def test_ais_rises_toward_the_evidence_with_more_steps():
    """A peaked posterior (σ = 0.1), 100 data, 4 chains: mean gaps measured −7.3, −0.9, −0.3 nats at T = 10, 100, 300."""
    model = LinearGaussian(sigma=0.1)
    x = data(100, 1)
    exact = model.log_evidence(x).detach().mean()
    gaps = [(ais(model, x, num_steps=steps, num_chains=4).mean() - exact).item() for steps in (10, 100, 300)]
    assert gaps[0] < gaps[1] < gaps[2] < 0.05
    assert gaps[0] < -3 and gaps[2] > -1


def test_ais_agrees_with_importance_sampling_on_a_trained_vae():
    """A VAE fitted 300 steps on 1,000 digits; 20 held-out digits: AIS (T = 100, 8 chains) and importance
    sampling (K = 2,000) agree within 1.5 nats on average (measured: AIS 0.2–0.8 nats higher, as the tighter bound)."""
    pyro.set_rng_seed(0)
    digits = pplgen.data.load("mnist", "train", binarize="threshold")
    vae = VAE(latent_dim=5, hidden=(64,))
    pplgen.fit(vae, "svi", digits[:1000], steps=300, batch_size=100, optimization=pplgen.Optimization(lr=3e-3))
    held_out = digits[-20:]
    difference = (
        ais(vae, held_out, num_steps=100, num_chains=8).mean() - log_likelihood(vae, held_out, num_samples=2000).mean()
    )
    assert difference.abs() < 1.5


def test_schedules_run_from_zero_to_one():
    for schedule in ("sigmoid", "linear"):
        betas = annealing_schedule(10, schedule)
        assert betas[0] == 0 and betas[-1] == 1 and (betas.diff() > 0).all()


def test_discrete_latents_are_named():
    sbn = SigmoidBeliefNet(layers=(4,), observed=6)
    with pytest.raises(ValueError, match="site 'h1' is discrete .*needs continuous ones"):
        ais(sbn, torch.rand(3, 6).bernoulli(), num_steps=2)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"num_steps": 0}, "num_steps must be a positive int"),
        ({"num_chains": 1.5}, "num_chains must be a positive int"),
        ({"target_acceptance": 1.0}, "target_acceptance must be in"),
        ({"schedule": "cosine"}, "schedule must be one of"),
    ],
)
def test_bad_options_are_named(options, message):
    with pytest.raises(ValueError, match=message):
        ais(LinearGaussian(), data(2, 0), **options)


def test_ais_on_integer_data_and_a_constrained_latent():
    """z ~ Gamma(2, 1), x_i | z ~ Poisson(z) for one datum each: the evidence is NegativeBinomial(2, 1/2).
    Integer counts keep a floating schedule; T = 200, 8 chains, seed 0: within 0.1 nats (mean)."""

    def model(x):
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", pyro.distributions.Gamma(2.0, 1.0))
            pyro.sample("x", pyro.distributions.Poisson(z), obs=x)

    x = torch.tensor([0, 3, 20])
    exact = torch.distributions.NegativeBinomial(2.0, probs=torch.tensor(0.5)).log_prob(x.float())
    estimate = ais(model, x, num_steps=200, num_chains=8)
    assert (estimate - exact).mean().abs() < 0.1, (estimate, exact)
