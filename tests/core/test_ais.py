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
    with pytest.raises(ValueError, match="site 'h1' is discrete .*needs continuous ones; annotate it"):
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


MIXTURE_LOCS = torch.tensor([-2.0, 1.0, 3.0])
MIXTURE_WEIGHTS = torch.tensor([0.2, 0.5, 0.3])


def shifted_mixture(x):
    """Each datum a component (enumerated) plus a shift of its own: p(x) = Σ_c w_c N(x; μ_c, √2)."""
    with pyro.plate("data", len(x)):
        shift = pyro.sample("shift", pyro.distributions.Normal(0.0, 1.0))
        c = pyro.sample("c", pyro.distributions.Categorical(MIXTURE_WEIGHTS), infer={"enumerate": "parallel"})
        pyro.sample("x", pyro.distributions.Normal(MIXTURE_LOCS[c] + shift, 1.0), obs=x)


def test_ais_sums_enumerated_sites_out_exactly():
    """The component of each datum summed out at every point of the chains: T = 200, 8 chains, seed 0,
    within 0.05 nats of the exact mixture evidence on average (measured −0.03), each datum within 0.2 (worst 0.11)."""
    pyro.set_rng_seed(0)
    x = torch.tensor([-3.0, -0.5, 0.7, 2.0, 4.5])
    components = torch.distributions.Normal(MIXTURE_LOCS, 2.0**0.5).log_prob(x[:, None])
    exact = torch.logsumexp(MIXTURE_WEIGHTS.log() + components, -1)
    error = ais(shifted_mixture, x, num_steps=200, num_chains=8) - exact
    assert error.mean().abs() < 0.05 and error.abs().max() < 0.2, error


def test_a_latent_whose_prior_reads_an_enumerated_site_is_named():
    def model(x):
        with pyro.plate("data", len(x)):
            c = pyro.sample("c", pyro.distributions.Categorical(MIXTURE_WEIGHTS), infer={"enumerate": "parallel"})
            shift = pyro.sample("shift", pyro.distributions.Normal(MIXTURE_LOCS[c], 1.0))
            pyro.sample("x", pyro.distributions.Normal(shift, 1.0), obs=x)

    with pytest.raises(ValueError, match="latent site 'shift' depends on the enumerated site 'c'"):
        ais(model, torch.zeros(3), num_steps=2)
