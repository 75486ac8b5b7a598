"""``avb``: adversarial variational Bayes, for guides known only through a sampler.

Mescheder, Nowozin & Geiger (2017), "Adversarial Variational Bayes: Unifying
Variational Autoencoders and Generative Adversarial Networks". A
discriminator T_ψ(x, z) learns, by logistic regression, to tell z ~ q_φ(z | x)
from z ~ c(z | x), a contrast distribution whose density is known; at its
optimum T*(x, z) = log q_φ(z | x) − log c(z | x), so with z = g_φ(x, ε)::

    ELBO = E_ε[log p_θ(x, z) − log c(z | x) − T*(x, z)]

which needs no log q. Per role, in one surrogate routed by ``detach()``:

* θ gets ∇θ E_q log p_θ(x, z) (z held fixed; ∇θ log p(x | z) for a fixed prior),
* φ gets ∇φ E_ε[log p(x | z) − T_ψ(x, z)] through the reparameterized sampler
  (the discriminator's weights held fixed: ψ is not moved by this term),
* ψ gets only the discriminator's logistic loss, on detached samples, so
  nothing of it reaches θ or φ.

The contrast c is the prior p(z) (the paper's §3.2; T then absorbs log p(z).
Its sites must not read each other: θ's term log p_θ(z) is taken with each z
held fixed, and a site whose prior reads another latent would pass φ a
gradient through that parent) or, with
``adaptive_contrast=True`` (§3.3), a Gaussian r(z | x) with each datum's mean
and standard deviation over the K particles, held fixed in the gradient. The
discriminator then sees the standardized z̃ = (z − μ)/σ against ε ~ N(0, I);
q and r are much closer than q and p(z), so T has less to learn. It needs
``num_particles >= 2`` (8 or more estimates the moments well).

The discriminator is a ReLU MLP of (x, z, z ⊙ z) per datum (log-density
ratios of near-Gaussian posteriors are quadratic in z, which a network of z
alone approximates poorly), sized by the first program it meets. Its learning
rate is the "helper" role's (``fit(..., lr={"helper": ...})``).
``discriminator_steps=n`` gives it n − 1 extra updates per step, on fresh
samples and before the step of all three roles; :class:`~pplgen.Trainer`
runs them from :meth:`AVB.helper_losses`.

Cost per step: one guide pass and one model pass over K × batch particles,
one prior pass without gradients (prior contrast), the discriminator on
2 × K × batch pairs, and (n − 1) × (guide pass + prior pass + discriminator)
for the extra discriminator steps.

Example::

    vae = pplgen.models.VAE(guide="implicit")
    engine = pplgen.inference.get("avb", discriminator=(256, 256))
    loss = engine(vae.model, vae.guide, x)

Metrics: ``loss`` (−estimated ELBO of the batch), ``elbo``,
``discriminator_loss`` (logistic loss, summed over the batch and both
classes, per particle) and ``discriminator_accuracy`` (fraction of both
classes told apart; near 0.5 means the discriminator cannot tell them apart
or has fallen behind).
"""

import pyro
import torch
from pyro import poutine
from torch.func import functional_call
from torch.nn.functional import softplus

from pplgen.checks import UnsupportedModelError, check_has_latents, check_observes
from pplgen.engine import Loss, ParticleEngine
from pplgen.nn import LazyMLP
from pplgen.particles import (
    PARTICLE_PLATE,
    common_scale,
    latent_features,
    observed_features,
    site_log_prob,
)
from pplgen.stacked import stack_traces


class AVB(ParticleEngine):
    name = "avb"
    metric_names = ("loss", "elbo", "discriminator_loss", "discriminator_accuracy")
    reparameterized = True
    implicit_guides = True
    needs_common_scale = True

    def __init__(
        self,
        num_particles=1,
        *,
        discriminator=(256, 256),
        discriminator_steps=1,
        adaptive_contrast=False,
        max_plate_nesting=None,
    ):
        super().__init__(num_particles, max_plate_nesting)
        if not (isinstance(discriminator, (tuple, list)) and all(isinstance(n, int) and n > 0 for n in discriminator)):
            raise ValueError(f"discriminator must be a sequence of hidden layer sizes (e.g. (256, 256)), got {discriminator!r}")
        if not isinstance(discriminator_steps, int) or discriminator_steps < 1:
            raise ValueError(f"discriminator_steps must be a positive int, got {discriminator_steps!r}")
        if adaptive_contrast and num_particles < 2:
            raise ValueError(
                f"adaptive_contrast needs num_particles >= 2 to estimate each datum's moments, got {num_particles}"
            )
        self.discriminator = LazyMLP(discriminator, "relu", owner="avb's discriminator")
        self.discriminator_steps = discriminator_steps
        self.adaptive_contrast = bool(adaptive_contrast)

    def forward(self, model, guide, *args, **kwargs):
        particles = self.particles(model, guide, args, kwargs)
        scale = common_scale(particles)
        x, z = self._pairs(particles)
        if self.adaptive_contrast:
            z, log_contrast, contrast = _standardized(z)
            log_p = _log_density(particles, observed=None)
            prior_for_theta = log_p.new_zeros(())
        else:
            contrast = latent_features(particles, self._prior_trace(model, args, kwargs))
            log_p, log_contrast = _log_density(particles, observed=True), 0.0
            # log p_θ(z) at the guide's z, held fixed: its gradient reaches the prior's parameters only.
            prior_for_theta = _log_density(particles, observed=False, detach_values=True)
        inputs = _inputs(x, z)
        self.discriminator.initialize_parameters(inputs, 1)
        fixed_t = functional_call(self.discriminator, _detached(self.discriminator), (inputs, 1)).squeeze(-1)
        elbo_terms = log_p - log_contrast - fixed_t
        elbo = (scale * elbo_terms).sum() / particles.num_particles
        prior_for_theta = (scale * prior_for_theta).sum() / particles.num_particles
        estimator = elbo + prior_for_theta - prior_for_theta.detach()
        loss, accuracy = self._discriminator_loss(x, z.detach(), contrast, particles.num_particles)
        surrogate = -elbo.detach() - (estimator - estimator.detach()) + (loss - loss.detach())
        metrics = {"loss": -elbo.detach(), "elbo": elbo.detach(), "discriminator_loss": loss.detach()}
        return Loss(surrogate, {**metrics, "discriminator_accuracy": accuracy})

    @property
    def helper_steps(self):
        return self.discriminator_steps - 1

    def helper_losses(self, model, guide, *args, **kwargs):
        """The discriminator's loss alone on fresh samples, ``discriminator_steps − 1`` times."""
        for _ in range(self.discriminator_steps - 1):
            with torch.no_grad():
                particles = self.particles(model, guide, args, kwargs)
                x, z = self._pairs(particles)
                if self.adaptive_contrast:
                    z, _, contrast = _standardized(z)
                else:
                    contrast = latent_features(particles, self._prior_trace(model, args, kwargs))
            yield self._discriminator_loss(x, z, contrast, particles.num_particles)[0]

    def _pairs(self, particles):
        """Observed data and latents of each particle and datum, ``(K, *factor_sizes, features)`` each."""
        # The model trace holds the guide's draws (path kept) in the model's site order, as the prior trace does.
        z = latent_features(particles, particles.model_trace)
        x = observed_features(particles, z.shape[1:-1], z.dtype)
        if x is None:
            raise UnsupportedModelError(
                "avb's discriminator T(x, z) is a function of the observed data, but the model observes "
                "no site (no obs=); observe the data with obs=."
            )
        return x.expand(*z.shape[:-1], x.shape[-1]), z

    def _prior_trace(self, model, args, kwargs):
        """The model run on the same data with its latents drawn from the prior (no gradients), K particles."""
        with torch.no_grad(), poutine.block():
            if not self.vectorized:
                runs = [poutine.trace(model).get_trace(*args, **kwargs) for _ in range(self.num_particles)]
                return stack_traces(runs, self.plate_nesting)
            with pyro.plate(PARTICLE_PLATE, self.num_particles, dim=-self.plate_nesting - 1):
                return poutine.trace(model).get_trace(*args, **kwargs)

    def _discriminator_loss(self, x, z, contrast, num_particles):
        """Logistic loss of T on (x, z ~ q) against (x, z ~ contrast), and the fraction told apart."""
        from_guide = self.discriminator(_inputs(x, z), 1).squeeze(-1)
        from_contrast = self.discriminator(_inputs(x, contrast), 1).squeeze(-1)
        loss = (softplus(-from_guide) + softplus(from_contrast)).sum() / num_particles
        accuracy = 0.5 * ((from_guide > 0).float().mean() + (from_contrast < 0).float().mean())
        return loss, accuracy.detach()

    def check(self, model, guide, *args, **kwargs):
        """Also builds the discriminator for this program, and with the prior as contrast refuses
        priors whose latents depend on each other."""
        probe = super().check(model, guide, *args, **kwargs)
        check_has_latents(probe, self.name)
        check_observes(probe, "avb's discriminator T(x, z) is a function of the observed data; observe the data with obs=")
        if not self.adaptive_contrast:
            for site, reads in probe.prior_parents.items():
                if reads:
                    raise UnsupportedModelError(
                        f"site '{site}': its prior depends on latent '{sorted(reads)[0]}', but avb with the "
                        "prior as contrast needs p(z) to be a product of independent sites; use "
                        "adaptive_contrast=True (with num_particles >= 2)."
                    )
        with torch.no_grad():
            x, z = self._pairs(probe.particles)
        self.discriminator.initialize_parameters(_inputs(x, z), 1)
        return probe

    def options(self):
        return {
            **super().options(),
            "discriminator": self.discriminator.hidden,
            "discriminator_steps": self.discriminator_steps,
            "adaptive_contrast": self.adaptive_contrast,
        }


def _inputs(x, z):
    return torch.cat([x, z, z * z], dim=-1)


def _detached(module):
    return {name: p.detach() for name, p in module.named_parameters()}


def _standardized(z):
    """z̃ = (z − μ)/σ per datum over the particles, log r(z | x) = log N(z; μ, σ²) and ε ~ N(0, I) like z̃.

    μ and σ are held fixed (detached): r is a fixed reference at this step.
    """
    mean = z.detach().mean(0)
    std = z.detach().std(0).clamp(min=1e-6)
    standardized = (z - mean) / std
    log_r = torch.distributions.Normal(mean, std).log_prob(z).sum(-1)
    return standardized, log_r, torch.randn_like(standardized)


def _log_density(particles, *, observed, detach_values=False):
    """Σ log p of the model's sites (all, or only observed/latent), ``(K, *factor_sizes)``."""
    total = 0.0
    for site in particles.sites(particles.model_trace, observed=observed):
        if detach_values:
            site = {**site, "value": site["value"].detach()}
        total = total + particles.reduce(site_log_prob(site))
    return total
