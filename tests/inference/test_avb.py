"""``avb``: posterior recovery with an implicit guide, the discriminator's optimum, gradient routing, refusals."""

import pyro
import pyro.distributions as dist
import pytest
import torch
from conftest import hierarchical_guide_pair
from pyro import poutine
from pyro.nn import PyroModule
from torch import nn

import pplgen
from pplgen import UnsupportedModelError
from pplgen.distributions import Implicit, ImplicitDensityError
from pplgen.inference import ENGINES, get
from pplgen.models import VAE, EightSchools

SIGMA = 0.7
PRECISION = 1 + 1 / SIGMA**2
#: The exact posterior of ConjugateGaussian: z | x ~ N(A x, S²) in each dimension.
EXACT_A, EXACT_S = 1 / SIGMA**2 / PRECISION, PRECISION**-0.5


class ConjugateGaussian(PyroModule):
    """z ~ N(0, I₂), x | z ~ N(z, σ² I₂); the guide z = a x + c + s ε is a sampler to the engine (no density)."""

    def __init__(self):
        super().__init__()
        self.a = nn.Parameter(torch.zeros(2))
        self.c = nn.Parameter(torch.zeros(2))
        self.log_s = nn.Parameter(torch.zeros(2))

    def model(self, x):
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(x.new_zeros(2), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z, SIGMA).to_event(1), obs=x)

    def guide(self, x):
        with pyro.plate("data", len(x)):
            noise = dist.Normal(x.new_zeros(2), 1.0).to_event(1)
            pyro.sample("z", Implicit(noise, self.draw(x), event_shape=(2,)))

    def draw(self, x):
        return lambda eps: self.a * x + self.c + self.log_s.exp() * eps


def marginal_data(n, seed):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, 2, generator=generator) * (1 + SIGMA**2) ** 0.5


def fit_conjugate(engine, steps):
    pyro.set_rng_seed(0)
    module = ConjugateGaussian()
    lr = {"guide": 3e-3, "helper": 1e-3}
    pplgen.fit(module, engine, marginal_data(4000, 1), steps=steps, batch_size=200, lr=lr, progress=False)
    return module


def test_avb_recovers_the_exact_posterior_and_the_log_density_ratio():
    """Seed 0, 1,500 steps: the guide's coefficients within 0.06 of the exact posterior's
    (measured: 0.021, 0.017, 0.004); the discriminator's T(x, z) on 500 held-out pairs
    correlates with log q(z | x) − log p(z) at r > 0.9 (measured 0.98)."""
    engine = get("avb", discriminator=(64, 64))
    module = fit_conjugate(engine, steps=1500)
    assert torch.allclose(module.a.detach(), torch.full((2,), EXACT_A), atol=0.06)
    assert torch.allclose(module.c.detach(), torch.zeros(2), atol=0.06)
    assert torch.allclose(module.log_s.exp().detach(), torch.full((2,), EXACT_S), atol=0.06)

    with torch.no_grad():
        x = marginal_data(500, 2)
        z = module.draw(x)(torch.randn(500, 2))
        q = dist.Normal(module.a * x + module.c, module.log_s.exp())
        log_ratio = q.log_prob(z).sum(-1) - dist.Normal(0.0, 1.0).log_prob(z).sum(-1)
        t = engine.discriminator(torch.cat([x, z, z * z], -1), 1).squeeze(-1)
    assert torch.corrcoef(torch.stack([t, log_ratio]))[0, 1] > 0.9


def test_adaptive_contrast_recovers_the_exact_posterior():
    """Seed 0, 800 steps, K = 8: within 0.03 of the exact posterior (measured at 1,500 steps: 0.001, 0.006, 0.002)."""
    module = fit_conjugate(get("avb", num_particles=8, adaptive_contrast=True, discriminator=(64, 64)), steps=800)
    assert torch.allclose(module.a.detach(), torch.full((2,), EXACT_A), atol=0.03)
    assert torch.allclose(module.c.detach(), torch.zeros(2), atol=0.03)
    assert torch.allclose(module.log_s.exp().detach(), torch.full((2,), EXACT_S), atol=0.03)


def implicit_vae():
    torch.manual_seed(0)
    return VAE(data_dim=12, latent_dim=3, hidden=(8,), guide="implicit"), torch.rand(6, 12).bernoulli()


def roles(vae, engine):
    return {
        "model": list(vae.decoder.parameters()),
        "guide": list(vae.encoder.parameters()),
        "helper": list(engine.discriminator.parameters()),
    }


def gradients(value, params):
    grads = torch.autograd.grad(value, params, allow_unused=True, retain_graph=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]


def test_the_discriminator_gets_its_logistic_loss_alone():
    """Same seed for the step and for the discriminator's loss alone (avb's extra-step loss draws the same way)."""
    vae, x = implicit_vae()
    engine = get("avb", discriminator=(16,), discriminator_steps=2)
    engine.check(vae.model, vae.guide, x)
    groups = roles(vae, engine)
    pyro.set_rng_seed(1)
    surrogate = engine(vae.model, vae.guide, x).surrogate
    pyro.set_rng_seed(1)
    (discriminator_loss,) = list(engine.helper_losses(vae.model, vae.guide, x))
    for step, alone in zip(gradients(surrogate, groups["helper"]), gradients(discriminator_loss, groups["helper"])):
        assert torch.allclose(step, alone, rtol=1e-5, atol=1e-7)
    assert all(g.abs().sum() > 0 for g in gradients(discriminator_loss, groups["helper"]))
    for role in ("model", "guide"):
        assert all(torch.count_nonzero(g) == 0 for g in gradients(discriminator_loss, groups[role]))


def test_model_and_guide_get_the_gradient_of_the_estimated_elbo_alone():
    """θ and φ get −∇[log p(x | z) − T(x, z)] with T's weights fixed (the prior here has no parameters)."""
    vae, x = implicit_vae()
    engine = get("avb", discriminator=(16,))
    engine.check(vae.model, vae.guide, x)
    groups = roles(vae, engine)
    pyro.set_rng_seed(1)
    surrogate = engine(vae.model, vae.guide, x).surrogate
    pyro.set_rng_seed(1)
    guide_trace = poutine.trace(vae.guide).get_trace(x)
    model_trace = poutine.trace(poutine.replay(vae.model, trace=guide_trace)).get_trace(x)
    z = guide_trace.nodes["z"]["value"]
    log_likelihood = model_trace.nodes["x"]["fn"].log_prob(x).sum()
    t = engine.discriminator(torch.cat([x, z, z * z], -1), 1).sum()
    for role in ("model", "guide"):
        for step, expected in zip(gradients(surrogate, groups[role]), gradients(-(log_likelihood - t), groups[role])):
            assert torch.allclose(step, expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", sorted(set(ENGINES) - {"avb"}))
def test_engines_that_need_log_q_refuse_implicit_guides_and_point_to_avb(name):
    vae, x = implicit_vae()
    options = {"num_particles": 2} if name == "vimco" else {}
    with pytest.raises(UnsupportedModelError, match=rf"site 'z' is drawn by an Implicit sampler with no density, and {name} needs log q.*avb"):
        get(name, **options).check(vae.model, vae.guide, x)


def test_implicit_sites_have_no_density_and_follow_the_particle_plate():
    vae, x = implicit_vae()
    with pyro.plate("particles", 4, dim=-2):
        trace = poutine.trace(vae.guide).get_trace(x)
    z = trace.nodes["z"]["value"]
    assert z.shape == (4, 6, 3)
    assert not torch.allclose(z[0], z[1])  # fresh noise per particle
    with pytest.raises(ImplicitDensityError, match="has no density.*avb"):
        trace.nodes["z"]["fn"].log_prob(z)
    with pytest.raises(ValueError, match="held-out|ais"):
        pplgen.evaluate.log_likelihood(vae, x)


def test_a_transform_that_does_not_broadcast_is_named():
    noise = dist.Normal(torch.zeros(3), 1.0).to_event(1)
    implicit = Implicit(noise, lambda eps: eps.sum(-1), event_shape=(3,))
    with pytest.raises(ValueError, match=r"transform returned shape \(\) .* expected \(3,\)"):
        implicit.rsample()


def test_prior_contrast_refuses_dependent_priors_and_names_adaptive_contrast():
    model, guide, x = hierarchical_guide_pair()
    with pytest.raises(UnsupportedModelError, match="site 'z2': its prior depends on latent 'z1'.*adaptive_contrast=True"):
        get("avb").check(model, guide, x)
    get("avb", num_particles=2, adaptive_contrast=True).check(model, guide, x)


def test_fit_scores_implicit_guides_by_ais_and_says_so():
    vae, x = implicit_vae()
    result = pplgen.fit(vae, get("avb", discriminator=(16,)), x, steps=2, batch_size=3, valid_data=x[:2], progress=False)
    evaluation = result.evaluations[-1]
    assert evaluation["estimator"].startswith("ais")
    assert "'z'" in evaluation["estimator"] and evaluation["elbo"] is None
    assert torch.isfinite(torch.tensor(evaluation["log_likelihood"]))


def test_avb_pairs_latents_in_the_model_order_whatever_the_guide_draws():
    """An autoguide draws auxiliary sites first; the discriminator still sees (μ, τ, θ̃), as the prior draws them."""
    data = pplgen.data.eight_schools()
    schools = EightSchools("non_centered", guide="mean_field")
    engine = get("avb", discriminator=(8,))
    engine.check(schools.model, schools.guide, data.sigma, data.y)
    assert engine.discriminator.weight0.shape[1] == 8 + 2 * 10  # x, then z and z² of μ, τ and the 8 θ̃
    particles = engine.particles(schools.model, schools.guide, (data.sigma, data.y), {})
    _, z = engine._pairs(particles)
    drawn = [particles.guide_trace.nodes[name]["value"].reshape(-1) for name in ("mu", "tau", "theta_t")]
    assert torch.equal(z.reshape(-1), torch.cat(drawn))
    assert torch.isfinite(engine(schools.model, schools.guide, data.sigma, data.y).surrogate)
