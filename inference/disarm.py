"""``disarm``: antithetic, unbiased gradients for Bernoulli latents, and ARM.

Dong, Mnih & Tucker (2020), "DisARM: An Antithetic Gradient Estimator for
Binary Latent Variables"; ARM: Yin & Zhou (2019), "ARM: Augment-REINFORCE-Merge
Gradient for Stochastic Binary Networks". For a guide of Bernoulli sites with
logits α(x), one uniform u per latent unit gives the antithetic pair
b = 1[u < σ(α)] and b̃ = 1[1 − u < σ(α)], each distributed as q. With
f(b) = log p_θ(x, b) − log q_φ(b | x) per datum, the gradient of E_q[f] in α is::

    DisARM:  ½ (f(b) − f(b̃)) (−1)^b̃ 1[b ≠ b̃] σ(|α|)
    ARM:     (f(b̃) − f(b)) (u − ½)

element by element, passed to φ through α by the chain rule; θ gets
½ ∇θ [log p_θ(x, b) + log p_θ(x, b̃)]. Both are unbiased. DisARM is ARM
integrated over u given the pair, so its variance is never larger. The
explicit dependence of f on φ through log q has zero expected gradient and
is left out, as in the paper. ``num_particles = 2m`` draws m independent
pairs and averages their estimates.

The units must be independent given x: a guide whose Bernoulli logits read
another latent (a layered guide) would need one pair per layer and is
refused by name, as is any guide site that is not a Bernoulli.

Cost per step: one guide pass and one model pass over 2m × batch particles.

Example::

    sbn = pplgen.models.SigmoidBeliefNet(layers=(200,))
    engine = pplgen.inference.get("disarm", num_particles=2)
    loss = engine(sbn.model, sbn.guide, x)

Metrics: ``loss`` (−ELBO of the batch, averaged over the 2m particles), ``elbo``.
"""

import pyro.distributions as dist
import torch
from pyro.poutine.messenger import Messenger

from pplgen.checks import UnsupportedModelError, check_independent_guide_sites, distribution_name, registry
from pplgen.engine import Loss, ParticleEngine
from pplgen.particles import log_weights, particle_frame
from pplgen.sampling import Drawing

ESTIMATORS = ("disarm", "arm")


class AntitheticBernoulli(Messenger):
    """Redraws every Bernoulli guide site in antithetic pairs: particle k + m is 1[1 − u < σ(α)] where particle k
    is 1[u < σ(α)], with one uniform u per unit kept in the site's ``infer["antithetic_uniform"]``. Runs after the
    draw and outside ``poutine.trace``, so the trace and the program see the pairs."""

    @torch.compiler.disable  # its uniforms are drawn by the eager generator, compiled or not
    def _pyro_post_sample(self, msg):
        frame = particle_frame(msg)
        base = _bernoulli(msg["fn"])
        if msg["is_observed"] or frame is None or base is None:
            return
        dim = frame.dim - msg["fn"].event_dim
        probs = base.probs.expand(msg["value"].shape).detach()
        half = msg["value"].shape[dim] // 2
        uniform = torch.rand_like(probs.narrow(dim, 0, half))
        first, second = probs.narrow(dim, 0, half), probs.narrow(dim, half, half)
        msg["value"] = torch.cat([(uniform < first), (1 - uniform < second)], dim).to(msg["value"].dtype)
        msg["infer"]["antithetic_uniform"] = uniform


class Antithetic(Drawing):
    """Bernoulli draws in antithetic pairs (not differentiable, as comparisons); they cannot be drawn one run
    at a time."""

    stackable = False

    def around_guide(self):
        return AntitheticBernoulli()


class DisARM(ParticleEngine):
    name = "disarm"
    metric_names = ("loss", "elbo")
    requires_rsample = False
    needs_common_scale = True
    binary_latents_only = True

    def __init__(self, num_particles=2, *, estimator="disarm", max_plate_nesting=None):
        if not isinstance(num_particles, int) or num_particles < 2 or num_particles % 2:
            raise ValueError(
                f"disarm draws antithetic pairs: num_particles must be even and >= 2, got {num_particles!r}"
            )
        if estimator not in ESTIMATORS:
            raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
        super().__init__(num_particles, max_plate_nesting)
        self.estimator = estimator

    def forward(self, model, guide, *args, **kwargs):
        particles = self.particles(model, guide, args, kwargs, drawing=Antithetic())
        weights = log_weights(particles)
        signal = (weights.model - weights.guide).detach()
        half = particles.num_particles // 2
        score = sum(
            (self._logit_gradient(site, signal, half, particles).detach() * _bernoulli(site["fn"]).logits).sum()
            for site in particles.sites(particles.guide_trace, observed=False)
        )
        model_term = (weights.scale * weights.model).sum() / particles.num_particles
        elbo = (weights.scale * signal).sum() / particles.num_particles
        estimator = model_term + score / half
        surrogate = -elbo - (estimator - estimator.detach())
        return Loss(surrogate, {"loss": -elbo, "elbo": elbo})

    def _logit_gradient(self, site, signal, half, particles):
        """The estimate of ∂E_q[f]/∂α at every unit of ``site``, shaped like its first half of particles (the
        site's scale included); zero on the second half, which holds the same logits."""
        fn = site["fn"]
        dim = particles.particle_dim - fn.event_dim
        value = site["value"]
        b, b_tilde = value.narrow(dim, 0, half), value.narrow(dim, half, half)
        f = aligned(signal, particles, fn.event_dim)
        f, f_tilde = f.narrow(dim, 0, half), f.narrow(dim, half, half)
        if self.estimator == "disarm":
            logits = _bernoulli(fn).logits.expand(value.shape).narrow(dim, 0, half).detach()
            sign = 1 - 2 * b_tilde
            estimate = 0.5 * (f - f_tilde) * sign * (b != b_tilde) * torch.sigmoid(logits.abs())
        else:
            estimate = (f_tilde - f) * (site["infer"]["antithetic_uniform"] - 0.5)
        estimate = estimate * site["scale"]
        return torch.cat([estimate, torch.zeros_like(estimate)], dim)

    def needs_vectorized_particles(self):
        return "its antithetic pairs drawn together"

    def refuse(self, model, guide, args, kwargs):
        probe = super().refuse(model, guide, args, kwargs)
        for site in probe.sites(probe.guide_trace, observed=False):
            if _bernoulli(site["fn"]) is None:
                raise UnsupportedModelError(
                    f"guide site '{site['name']}' is a {distribution_name(site['fn'])}, not a Bernoulli: disarm's "
                    f"antithetic pairs are defined for binary units; use {', '.join(registry().score_function_engines())} for "
                    "other sites."
                )
        check_independent_guide_sites(
            probe,
            self.name,
            None,
            remedy=f"its antithetic pairs need units independent given x; use {', '.join(registry().score_function_engines())}",
        )
        return probe

    def options(self):
        return {**super().options(), "estimator": self.estimator}


def _bernoulli(fn):
    """The Bernoulli inside ``fn`` (a Bernoulli, possibly ``.to_event``-ed or expanded), or None."""
    while isinstance(fn, (dist.Independent, dist.ExpandedDistribution, dist.MaskedDistribution)):
        fn = fn.base_dist
    return fn if isinstance(fn, dist.Bernoulli) else None


def aligned(per_factor, particles, event_dim):
    """``(K, *factor_sizes)`` values placed at the particle and factor dims of a site's value, with its event
    dims after them."""
    ndim = -particles.particle_dim
    shape = [1] * ndim
    shape[0] = per_factor.shape[0]
    for size, dim in zip(per_factor.shape[1:], particles.factor_dims):
        shape[ndim + dim] = size
    return per_factor.reshape(*shape, *[1] * event_dim)
