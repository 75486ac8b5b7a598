"""The VAE on real digits: it learns, it runs on any dtype/device, its errors are named."""

import pytest
import torch

import pplgen
from pplgen import evaluate
from pplgen.inference import get
from pplgen.models import VAE


@pytest.fixture(scope="module")
def digits():
    train = pplgen.data.load("mnist", split="train", binarize="threshold")
    test = pplgen.data.load("mnist", split="test", binarize="threshold")[:200]
    return train, test


@pytest.mark.parametrize("engine", ["svi", "iwae"])
def test_short_run_improves_held_out_log_likelihood(digits, engine):
    """3 epochs (120 steps) lift log p(x) by more than 250 nats from about −545 at initialization."""
    train, test = digits
    torch.manual_seed(0)
    vae = VAE()
    before = evaluate.log_likelihood(vae, test, num_samples=100).mean()
    pplgen.fit(vae, engine, train, epochs=3, batch_size=100)
    after = evaluate.log_likelihood(vae, test, num_samples=100).mean()
    assert after - before > 250, (before, after)
    assert after > -200


@pytest.mark.slow
def test_longer_run_reaches_documented_log_likelihood(digits):
    """50 epochs of svi on the 4,000 embedded training digits: test log p(x) > −120 nats (K=1000)."""
    train, _ = digits
    test = pplgen.data.load("mnist", split="test", binarize="threshold")
    torch.manual_seed(0)
    vae = VAE()
    pplgen.fit(vae, "svi", train, epochs=50, batch_size=100)
    assert evaluate.log_likelihood(vae, test, num_samples=1000).mean() > -120


def test_gaussian_likelihood_learns_grey_levels(digits):
    grey = pplgen.data.load("mnist", split="train")[:500]
    torch.manual_seed(0)
    result = pplgen.fit(
        VAE(likelihood="gaussian"), "svi", grey, epochs=10, batch_size=100, optimization=pplgen.Optimization(lr=1e-2)
    )
    assert result.metric("loss")[-1] < result.metric("loss")[0] - 300


def test_programs_follow_the_data_dtype(float64):
    vae = VAE(data_dim=10, latent_dim=2, hidden=(5,)).double()
    x = torch.rand(4, 10, dtype=torch.float64).bernoulli()
    loss = get("iwae", num_particles=3)(vae.model, vae.guide, x)
    assert loss.surrogate.dtype == torch.float64
    assert vae.sample(3).dtype == torch.float64 and vae.reconstruct(x).shape == (4, 10)


@pytest.mark.parametrize(
    "x, error, message",
    [
        (torch.ones(3, 9), ValueError, r"VAE\(data_dim=10\) expects data of shape \(batch, 10\), got \(3, 9\)"),
        (torch.ones(10), ValueError, r"got \(10,\); flatten images"),
        ([1.0] * 10, TypeError, "VAE expects a tensor"),
    ],
)
def test_bad_data_is_named(x, error, message):
    vae = VAE(data_dim=10, latent_dim=2, hidden=(5,))
    with pytest.raises(error, match=message):
        vae.model(x)


def test_bad_options_are_named():
    with pytest.raises(ValueError, match="likelihood must be one of"):
        VAE(likelihood="poisson")
    with pytest.raises(ValueError, match="activation must be one of"):
        VAE(activation="gelu")


def test_implicit_guide_trained_by_avb_improves_the_ais_log_likelihood(digits):
    """3 epochs of avb lift the AIS estimate (20 steps × 4 chains, 100 test digits) from about −545 to −187 (seed 0)."""
    train, test = digits
    torch.manual_seed(0)
    vae = VAE(latent_dim=8, hidden=(200,), guide="implicit")
    before = evaluate.ais(vae, test[:100], num_steps=20, num_chains=4).mean()
    pplgen.fit(vae, "avb", train, epochs=3, batch_size=100)
    after = evaluate.ais(vae, test[:100], num_steps=20, num_chains=4).mean()
    assert after - before > 250 and after > -220, (before, after)
    assert vae.reconstruct(test[:4]).shape == (4, 784)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"guide": "flow"}, "guide must be one of"),
        ({"noise_dim": 4}, "give it only with guide='implicit'"),
    ],
)
def test_bad_guide_options_are_named(options, message):
    with pytest.raises(ValueError, match=message):
        VAE(**options)


def test_the_gaussian_scale_starts_where_given_and_can_be_held_fixed():
    learned = VAE(data_dim=4, latent_dim=2, hidden=(3,), likelihood="gaussian", scale=0.05)
    fixed = VAE(data_dim=4, latent_dim=2, hidden=(3,), likelihood="gaussian", scale=0.2, learn_scale=False)
    assert learned.log_scale.exp().item() == pytest.approx(0.05) and learned.log_scale.requires_grad
    assert fixed.log_scale.exp().item() == pytest.approx(0.2) and not fixed.log_scale.requires_grad


@pytest.mark.parametrize(
    "options, message",
    [
        ({"likelihood": "gaussian", "scale": 0.0}, "scale must be a finite positive number"),
        ({"scale": 0.5}, "give them with likelihood='gaussian'"),
    ],
)
def test_bad_scale_options_are_named(options, message):
    with pytest.raises(ValueError, match=message):
        VAE(data_dim=4, latent_dim=2, hidden=(3,), **options)
