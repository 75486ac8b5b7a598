"""The ``gan`` engine against known answers: a linear generator of Gaussian data, the expected generator update
at the optimal discriminator, the 8-Gaussians ring, AIS of a linear-Gaussian decoder, its routing and refusals."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from numpy.polynomial.hermite_e import hermegauss
from pyro.nn import PyroModule
from torch import nn

import pplgen
from pplgen import UnsupportedModelError
from pplgen.evaluate import ais
from pplgen.inference import get, guided_engines
from pplgen.models import VAE


class LinearGenerator(PyroModule):
    """x = a z + b + σ ε per datum, z, ε ~ N(0, 1): p_θ(x) = N(b, a² + σ²)."""

    def __init__(self, a=1.0, b=0.0, sigma=0.01):
        super().__init__()
        self.a = nn.Parameter(torch.tensor(a))
        self.b = nn.Parameter(torch.tensor(b))
        self.sigma = sigma

    def model(self, x):
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(x.new_zeros(()), 1.0))
            pyro.sample("x", dist.Normal(self.a * z + self.b, self.sigma), obs=x)


def gaussian_data(n, mean, sd, seed):
    return mean + sd * torch.randn(n, generator=torch.Generator().manual_seed(seed))


def test_a_linear_generator_fits_the_data_mean_and_variance(one_thread):
    """4,000 draws of N(3, 2²), 30 epochs of batch 200, a 32-32 discriminator at 1e-3, seed 0: a² within 15 % of
    4 and b within 0.2 of 3 (measured: a² = 4.18, b = 2.95)."""
    x = gaussian_data(4000, 3.0, 2.0, seed=0)
    torch.manual_seed(0)
    generator = LinearGenerator()
    engine = get("gan", discriminator=(32, 32), discriminator_lr=1e-3)
    pplgen.fit(generator, engine, x, epochs=30, batch_size=200, optimization=pplgen.Optimization(lr=1e-2))
    assert generator.a.item() ** 2 == pytest.approx(4.0, rel=0.15)
    assert generator.b.item() == pytest.approx(3.0, abs=0.2)


class OptimalDiscriminator(nn.Module):
    """d*(x) = log p_data(x) − log p_θ(x), the logit of D* = p_data / (p_data + p_θ), for Gaussians; no trainable
    weights, so the engine holds it fixed."""

    def __init__(self, data_mean, data_sd, model_mean, model_sd):
        super().__init__()
        self.data = torch.distributions.Normal(data_mean, data_sd)
        self.generated = torch.distributions.Normal(model_mean, model_sd)

    def forward(self, rows):
        return self.data.log_prob(rows) - self.generated.log_prob(rows)


def analytic_generator_gradient(a, b, sigma, d):
    """∇_(a, b) E_{z, ε}[softplus(−d(a z + b + σ ε))], d fixed, by 60 × 60-point Gauss–Hermite quadrature."""
    nodes, weights = [torch.tensor(v, dtype=torch.float64) for v in hermegauss(60)]
    weights = weights / weights.sum()
    theta = torch.tensor([a, b], dtype=torch.float64, requires_grad=True)
    z, eps = torch.meshgrid(nodes, nodes, indexing="ij")
    x = theta[0] * z + theta[1] + sigma * eps
    loss = (weights[:, None] * weights[None, :] * torch.nn.functional.softplus(-d(x[..., None]).squeeze(-1))).sum()
    (gradient,) = torch.autograd.grad(loss, theta)
    return gradient.float()


def engine_generator_gradients(generator, discriminator, x, repeats):
    """The generator's gradient per datum, from ``repeats`` calls of the engine, ``(repeats, 2)``."""
    engine = get("gan", discriminator=discriminator)
    engine.check(generator.model, None, x)
    gradients = []
    for _ in range(repeats):
        generator.zero_grad()
        engine(generator.model, None, x).surrogate.backward()
        gradients.append(torch.stack([generator.a.grad, generator.b.grad]) / len(x))
    return torch.stack(gradients)


def test_the_expected_generator_update_is_the_analytic_gradient_at_the_optimal_discriminator():
    """Data N(1, 1.5²), generator a = 0.8, b = −0.5, σ = 0.5 (p_θ = N(−0.5, 0.89)), D fixed at D*: the mean of 200
    estimates (batches of 500, seed 0) equals the quadrature gradient within 5 standard errors per coordinate;
    with a wrong D (the data's mean taken as 0) the same check fails by more than 5 standard errors."""
    pyro.set_rng_seed(0)
    a, b, sigma = 0.8, -0.5, 0.5
    generator = LinearGenerator(a, b, sigma)
    x = gaussian_data(500, 1.0, 1.5, seed=1)
    model_sd = math.sqrt(a * a + sigma * sigma)
    optimal = OptimalDiscriminator(1.0, 1.5, b, model_sd)
    exact = analytic_generator_gradient(a, b, sigma, optimal)
    estimates = engine_generator_gradients(generator, optimal, x, repeats=200)
    standard_error = estimates.std(0) / math.sqrt(len(estimates))
    assert ((estimates.mean(0) - exact).abs() / standard_error).max() < 5
    wrong = engine_generator_gradients(generator, OptimalDiscriminator(0.0, 1.5, b, model_sd), x, repeats=200)
    assert ((wrong.mean(0) - exact).abs() / (wrong.std(0) / math.sqrt(len(wrong)))).max() > 5


class RingGenerator(PyroModule):
    """z ~ N(0, I₂), x ~ N(G(z), 0.01² I₂) with a 2-64-64-2 ReLU MLP G."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 2))

    def model(self, x):
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(x.new_zeros(2), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(self.net(z), 0.01).to_event(1), obs=x)


def test_r1_covers_the_modes_of_the_eight_gaussians_ring(one_thread):
    """8 Gaussians (sd 0.02) on a circle of radius 2, 4,096 draws; 300 epochs of batch 256, 2 discriminator
    updates per step at 3e-4, R1 weight 1, seed 0: at least 7 of 8 modes hold a sample within 3 sd of their
    centre among 2,000 samples (measured: 8 modes; 48 % of the samples within 3 sd of a mode)."""
    generator = torch.Generator().manual_seed(0)
    angles = torch.arange(8) * 2 * math.pi / 8
    centres = 2 * torch.stack([angles.cos(), angles.sin()], 1)
    x = centres[torch.randint(8, (4096,), generator=generator)] + 0.02 * torch.randn(4096, 2, generator=generator)
    torch.manual_seed(0)
    ring = RingGenerator()
    engine = get("gan", discriminator=(64, 64), gradient_penalty=1.0, discriminator_lr=3e-4, discriminator_steps=2)
    pplgen.fit(ring, engine, x, epochs=300, batch_size=256, seed=0, optimization=pplgen.Optimization(lr=3e-4))
    with torch.no_grad():
        samples = ring.net(torch.randn(2000, 2, generator=torch.Generator().manual_seed(1)))
    distance, mode = torch.cdist(samples, centres).min(1)
    near = distance < 3 * 0.02
    print(f"ring: {len(set(mode[near].tolist()))} of 8 modes, {near.float().mean():.0%} of samples within 3 sd")
    assert len(set(mode[near].tolist())) >= 7


class LinearDecoder(PyroModule):
    """x = W z + c + σ ε, z ~ N(0, I₂), x in R⁴: log p(x) = log N(x; c, W Wᵀ + σ² I) in closed form."""

    def __init__(self):
        super().__init__()
        generator = torch.Generator().manual_seed(4)
        self.weight = nn.Parameter(torch.randn(4, 2, generator=generator))
        self.bias = nn.Parameter(torch.randn(4, generator=generator))
        self.sigma = 0.5

    def model(self, x):
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(x.new_zeros(2), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z @ self.weight.T + self.bias, self.sigma).to_event(1), obs=x)

    def log_evidence(self, x):
        covariance = self.weight @ self.weight.T + self.sigma**2 * torch.eye(4)
        return torch.distributions.MultivariateNormal(self.bias, covariance).log_prob(x)


def test_ais_scores_a_linear_gaussian_decoder_trained_by_gan_exactly():
    """The decoder after 20 gan steps, 30 held-out rows, AIS with 200 steps × 16 chains, seed 0: the mean
    log-likelihood within 0.1 nats of the closed form."""
    torch.manual_seed(0)
    decoder = LinearDecoder()
    x = torch.randn(400, 4, generator=torch.Generator().manual_seed(5)) * 2
    pplgen.fit(decoder, get("gan", discriminator=(16,)), x, steps=20, batch_size=100)
    held_out = torch.randn(30, 4, generator=torch.Generator().manual_seed(6)) * 2
    pyro.set_rng_seed(0)
    estimate = ais(decoder.model, held_out, num_steps=200, num_chains=16)
    assert (estimate.mean() - decoder.log_evidence(held_out).mean()).abs().item() < 0.1


def test_the_generator_gets_only_its_loss_and_the_discriminator_only_its_own():
    """backward leaves no gradient on d; the generator loss is Σ softplus(−d(x̃)) with d as the call's update left
    it; d moves only inside forward in training mode, and not at all in eval mode."""
    torch.manual_seed(0)
    generator, x = LinearGenerator(sigma=0.3), gaussian_data(64, 1.0, 1.0, seed=2)
    engine = get("gan", discriminator=(8,))
    engine.prepare(generator.model, None, x)
    before = [p.detach().clone() for p in engine.discriminator.parameters()]
    engine.eval()
    engine(generator.model, None, x)
    assert all(torch.equal(p, q) for p, q in zip(engine.discriminator.parameters(), before))
    engine.train()
    pyro.set_rng_seed(3)
    loss = engine(generator.model, None, x)
    loss.surrogate.backward()
    assert all(p.grad is None for p in engine.discriminator.parameters())
    assert not all(torch.equal(p, q) for p, q in zip(engine.discriminator.parameters(), before))
    generator.zero_grad()
    pyro.set_rng_seed(3)
    with pyro.poutine.trace() as tape:
        pplgen.dreams.dream(generator.model, (x,), {}, reparameterized=True)
    fake = tape.trace.nodes["x"]["value"].reshape(-1, 1)
    updated = {name: p.detach() for name, p in engine.discriminator.named_parameters()}
    logits = torch.func.functional_call(engine.discriminator, updated, (fake, 1)).squeeze(-1)
    expected = torch.nn.functional.softplus(-logits).sum()
    theta = torch.autograd.grad(expected, [generator.a, generator.b])
    torch.testing.assert_close(loss.metrics["loss"], expected.detach())
    assert all(g is not None for g in theta)


def test_fit_trains_a_model_without_a_guide_and_other_engines_still_need_one():
    x = gaussian_data(200, 0.0, 1.0, seed=3)
    generator = LinearGenerator()
    result = pplgen.fit(
        generator.model,
        "gan",
        x,
        steps=3,
        batch_size=100,
        evaluation=pplgen.Evaluation(x[:20], ais_options={"num_steps": 5, "num_chains": 2}),
    )
    assert result.evaluations[-1]["estimator"].startswith("ais") and "no guide" in result.evaluations[-1]["estimator"]
    with pytest.raises(TypeError, match="no guide given"):
        pplgen.fit(generator.model, "svi", x, steps=1)
    assert "gan" not in guided_engines()


def test_the_same_decoder_trains_as_a_vae_an_iwae_and_a_gan():
    """``VAE(likelihood="gaussian")`` is one program: svi and iwae train it with its guide, gan without, unchanged."""
    x = torch.rand(64, 12, generator=torch.Generator().manual_seed(0))
    for engine in ("svi", get("iwae", num_particles=3), get("gan", discriminator=(8,))):
        torch.manual_seed(0)
        decoder = VAE(data_dim=12, latent_dim=2, hidden=(8,), likelihood="gaussian")
        before = [p.detach().clone() for p in decoder.decoder.parameters()]
        result = pplgen.fit(decoder, engine, x, steps=3, batch_size=32)
        assert all(math.isfinite(row["loss"]) for row in result.history)
        assert not all(torch.equal(p, q) for p, q in zip(decoder.decoder.parameters(), before))


def test_bernoulli_observations_are_refused_by_name():
    vae, x = VAE(data_dim=12, latent_dim=2, hidden=(8,)), torch.rand(8, 12).bernoulli()
    with pytest.raises(UnsupportedModelError, match=r"site 'x' .*Bernoulli.*no rsample.*likelihood='gaussian'"):
        get("gan").check(vae.model, None, x)


def test_a_discrete_latent_is_refused_by_name():
    def mixture(x):
        locs = pyro.param("locs", torch.tensor([-1.0, 1.0]))
        with pyro.plate("data", len(x)):
            component = pyro.sample("component", dist.Categorical(torch.ones(2) / 2))
            pyro.sample("x", dist.Normal(locs[component], 0.1), obs=x)

    with pytest.raises(UnsupportedModelError, match=r"latent site 'component' is a Categorical without rsample"):
        get("gan").check(mixture, None, torch.randn(5))


def test_a_dream_of_another_shape_than_the_data_is_refused_with_both_shapes():
    def model(x):
        loc = pyro.param("loc", torch.zeros(3))
        pyro.sample("x", dist.Normal(loc, 1.0).to_event(1), obs=x)  # one row, broadcast against the batch

    with pytest.raises(UnsupportedModelError, match=r"dreams data of shape \(3,\) but observes data of shape \(5, 3\)"):
        get("gan").check(model, None, torch.randn(5, 3))


@pytest.mark.parametrize(
    "options, message",
    [
        ({"discriminator": "big"}, "discriminator must be"),
        ({"discriminator_steps": 0}, "discriminator_steps must be a positive int"),
        ({"discriminator_lr": -1.0}, "discriminator_lr must be a finite positive"),
        ({"gradient_penalty": float("nan")}, "gradient_penalty must be a finite non-negative"),
    ],
)
def test_bad_options_are_named(options, message):
    with pytest.raises(ValueError, match=message):
        get("gan", **options)
