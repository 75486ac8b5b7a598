"""``avb``: adversarial variational Bayes, for guides known only through a sampler.

Mescheder, Nowozin & Geiger (2017), "Adversarial Variational Bayes: Unifying
Variational Autoencoders and Generative Adversarial Networks". A
discriminator T_ψ(x, z) learns, by logistic regression, to tell z ~ q_φ(z | x)
from z ~ c(z | x), a contrast distribution whose density is known; at its
optimum T*(x, z) = log q_φ(z | x) − log c(z | x), so with z = g_φ(x, ε)::

    ELBO = E_ε[log p_θ(x, z) − log c(z | x) − T*(x, z)]

which needs no log q. The surrogate, routed by ``detach()``, gives

* θ: ∇θ E_q log p_θ(x, z) (z held fixed; ∇θ log p(x | z) for a fixed prior),
* φ: ∇φ E_ε[log p(x | z) − T_ψ(x, z)] through the reparameterized sampler,
  T's weights held fixed,
* ψ: nothing. The engine fits the discriminator itself, inside ``forward``.

How T is fitted. In training mode (``engine.train()``, the default, with
gradients enabled) every call of ``forward`` updates T ``discriminator_steps``
= n times on its logistic loss

    L(ψ) = E_q softplus(−T_ψ(x, z)) + E_c softplus(T_ψ(x, z′))

with the engine's own Adam (rate ``discriminator_lr``, β = (0.5, 0.999)):
n − 1 updates on fresh particles, then the estimator with T held fixed, then
one update on the step's own particles, detached. Adam's moments and update
count are buffers, so ``state_dict()`` resumes a fit exactly and ``.to()``
moves them. In ``eval()`` mode, or under ``torch.no_grad()``, ``forward``
changes nothing (:func:`pplgen.diagnostics.gradient_variance` runs it so).

Why the engine trains T, and not the caller's optimizer: φ's estimator is
right only while T stays near its optimum for the current q, and how hard T
must be trained to stay there belongs to the estimator, not to the loop.
``loss.surrogate.backward(); optimizer.step()`` is then the whole step in
any loop (:func:`pplgen.fit`, a ``torch.optim`` loop over the model's and
guide's parameters alone, Pyro's ``SVI``), and T trains alike whatever that
loop's optimizer, rates or schedule (``fit`` puts T in no role, and
refuses ``lr={"helper": ...}`` for avb by name). Keeping T's gradient in the
surrogate too would step ψ by a second optimizer with other moments, at a
rate the engine does not know.

The defaults are the settings that recover a strongly correlated posterior.
On z ~ N(0, I₂), x | z ~ N(W z, 0.5² I₂), W = [[2, 2], [0.1, −0.1]]
(correlation −0.94, principal-axis standard deviations 0.174 and 0.962), a
tanh MLP guide of (x, ε), Adam at 1e-3 for the guide and 1,000 steps of 200
data, the largest errors of the posterior means and of those standard
deviations at 4 held-out x were (seeds 0, 3, 4)::

    T fitted by                                      means       sds
    the loop's optimizer, 1 step (former default)    0.14–0.24   27–52 %
    the loop's optimizer, 3 steps                    0.07–0.11   25–38 %
    its own Adam, 1 update at 3e-3                   0.09–0.11   18–38 %
    its own Adam, 3 updates at 1e-3                  0.05–0.06    9–25 %
    its own Adam, 3 updates at 3e-3 (default)       ≤ 0.082     ≤ 13 %   (seeds 0–9)

A rate of 1e-2 or 5 updates did no better; a decaying rate for T
(lr / (1 + t/1000)) let it lag and did worse, and so did averaging its
weights over updates; a decaying rate for the guide was not needed. T learns
from the batch × K pairs of each update: with batches of 100, 2 of 7 seeds
ended with a standard deviation 17 % off.

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
alone approximates poorly), sized by the first program it meets.

Options: ``num_particles`` K (default 1); ``discriminator``, T's hidden
layer sizes (default (256, 256)); ``discriminator_steps`` n (default 3);
``discriminator_lr`` (default 3e-3); ``adaptive_contrast`` (default False);
``max_plate_nesting``.

Cost per step: one guide pass and one model pass over K × batch particles,
one prior pass without gradients (prior contrast), n forward and backward
passes of T on 2 × K × batch pairs, and n − 1 further guide, model and prior
passes without gradients for the fresh particles (a 2-D model with batches
of 200 on one CPU thread: 14 ms a step with n = 3, 6 ms with n = 1).

Example::

    vae = pplgen.models.VAE(guide="implicit")
    engine = pplgen.inference.get("avb")
    optimizer = torch.optim.Adam(vae.parameters(), lr=1e-3)
    for x in batches:
        optimizer.zero_grad()
        engine(vae.model, vae.guide, x).surrogate.backward()  # T's n updates happen in the call
        optimizer.step()

Metrics: ``loss`` (−estimated ELBO of the batch), ``elbo``,
``discriminator_loss`` (logistic loss on the step's particles before T's last
update, summed over the batch and both classes, per particle) and
``discriminator_accuracy`` (fraction of both classes told apart; near 0.5
means the discriminator cannot tell them apart or has fallen behind).
"""

import dataclasses
import math

import pyro
import torch
from pyro import poutine
from torch.func import functional_call
from torch.nn.functional import softplus

from pplgen.checks import UnsupportedModelError, check_has_latents, check_observes
from pplgen.engine import Loss, ParticleEngine
from pplgen.nn import HelperFitter, LazyMLP, frozen_copy
from pplgen.particles import (
    PARTICLE_PLATE,
    at_least_float32,
    common_scale,
    latent_features,
    observed_features,
    site_log_prob,
)
from pplgen.stacked import stack_traces


class AVB(ParticleEngine):
    name = "avb"
    metric_names = ("loss", "elbo", "discriminator_loss", "discriminator_accuracy")
    mean_metrics = ("discriminator_accuracy",)
    requires_rsample = True
    implicit_guides = True
    sums_out_enumerated = False
    needs_common_scale = True
    fits_own_helpers = True

    def __init__(
        self,
        num_particles=1,
        *,
        discriminator=(256, 256),
        discriminator_steps=3,
        discriminator_lr=3e-3,
        adaptive_contrast=False,
        max_plate_nesting=None,
    ):
        super().__init__(num_particles, max_plate_nesting)
        if not (isinstance(discriminator, (tuple, list)) and all(isinstance(n, int) and n > 0 for n in discriminator)):
            raise ValueError(
                f"discriminator must be a sequence of hidden layer sizes (e.g. (256, 256)), got {discriminator!r}"
            )
        if not isinstance(discriminator_steps, int) or discriminator_steps < 1:
            raise ValueError(f"discriminator_steps must be a positive int, got {discriminator_steps!r}")
        if isinstance(discriminator_lr, bool) or not (
            isinstance(discriminator_lr, (int, float)) and 0 < discriminator_lr < math.inf
        ):
            raise ValueError(f"discriminator_lr must be a finite positive number, got {discriminator_lr!r}")
        if adaptive_contrast and num_particles < 2:
            raise ValueError(
                f"adaptive_contrast needs num_particles >= 2 to estimate each datum's moments, got {num_particles}"
            )
        self.discriminator = LazyMLP(discriminator, "relu", owner="avb's discriminator")
        self.fitter = HelperFitter(float(discriminator_lr))
        self.discriminator_steps = discriminator_steps
        self.adaptive_contrast = bool(adaptive_contrast)

    def forward(self, model, guide, *args, **kwargs):
        updating = self.training and torch.is_grad_enabled()
        for _ in range(self.discriminator_steps - 1 if updating else 0):
            self._update_on_fresh_particles(model, guide, args, kwargs)
        particles = self.particles(model, guide, args, kwargs)
        scale = common_scale(particles)
        x, z = self._pairs(particles)
        z, log_contrast, contrast = self._contrast(particles, z, model, args, kwargs)
        if self.adaptive_contrast:
            log_p = _log_density(particles, observed=None)
            prior_for_theta = log_p.new_zeros(())
        else:
            log_p = _log_density(particles, observed=True)
            # log p_θ(z) at the guide's z, held fixed: its gradient reaches the prior's parameters only.
            prior_for_theta = _log_density(particles, observed=False, detach_values=True)
        inputs = _inputs(x, z)
        self.discriminator.initialize_parameters(inputs, 1)
        fixed_t = at_least_float32(
            functional_call(self.discriminator, frozen_copy(self.discriminator), (inputs, 1)).squeeze(-1)
        )
        elbo = (scale * (log_p - log_contrast - fixed_t)).sum() / particles.num_particles
        prior_for_theta = (scale * prior_for_theta).sum() / particles.num_particles
        estimator = elbo + prior_for_theta - prior_for_theta.detach()
        if updating:
            loss, accuracy = self._update_discriminator(x, z.detach(), contrast, particles.num_particles)
        else:
            with torch.no_grad():
                loss, accuracy = self._discriminator_loss(x, z, contrast, particles.num_particles)
        metrics = {"loss": -elbo.detach(), "elbo": elbo.detach(), "discriminator_loss": loss.detach()}
        return Loss(-elbo.detach() - (estimator - estimator.detach()), {**metrics, "discriminator_accuracy": accuracy})

    def _contrast(self, particles, z, model, args, kwargs):
        """What the discriminator sees of q (z, or the standardized z̃), log c at z (0 for the prior, which T
        absorbs) and draws of the contrast."""
        if self.adaptive_contrast:
            return _standardized(z)
        return z, 0.0, self._prior_features(model, args, kwargs, self.plan, particles)

    def _update_on_fresh_particles(self, model, guide, args, kwargs):
        with torch.no_grad():
            particles = self.particles(model, guide, args, kwargs)
            x, z = self._pairs(particles)
            z, _, contrast = self._contrast(particles, z, model, args, kwargs)
        self._update_discriminator(x, z, contrast, particles.num_particles)

    def _update_discriminator(self, x, z, contrast, num_particles):
        """One update of T alone by the engine's fitter; T's loss and accuracy before it."""
        self.discriminator.initialize_parameters(_inputs(x, z), 1)
        loss, accuracy = self._discriminator_loss(x, z, contrast, num_particles)
        params = [p for p in self.discriminator.parameters() if p.requires_grad]
        if params:  # a T without trainable weights (a fixed function) is left as it is
            self.fitter.step(loss, params)
        return loss.detach(), accuracy

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

    def _prior_trace(self, model, args, kwargs, plan=None):
        """The model run on the same data with its latents drawn from the prior (no gradients), K particles
        as the plan draws them."""
        plan = plan or self.plan
        with torch.no_grad(), poutine.block():
            if plan.vectorized is False:
                runs = [poutine.trace(model).get_trace(*args, **kwargs) for _ in range(self.num_particles)]
                return stack_traces(runs, plan.max_plate_nesting)
            with pyro.plate(PARTICLE_PLATE, self.num_particles, dim=-plan.max_plate_nesting - 1):
                return poutine.trace(model).get_trace(*args, **kwargs)

    def _prior_features(self, model, args, kwargs, plan, particles=None):
        """Draws of the contrast z ~ p(z), as :func:`~pplgen.particles.latent_features` of the model run from
        its prior as the particles run (``particles``, or K copies of the plan's); a model that fails there is
        refused, by the step as by :meth:`rehearse`."""
        try:
            trace = self._prior_trace(model, args, kwargs, plan)
            return latent_features(particles or _with_trace(plan.particles, self.num_particles, trace), trace)
        except (ValueError, RuntimeError, TypeError, IndexError) as error:
            where = (
                "one run per particle"
                if plan.vectorized is False
                else f"a particle plate at dim {-plan.max_plate_nesting - 1}"
            )
            raise UnsupportedModelError(
                f"avb draws the contrast z ~ p(z) by running the model from its prior in {where}, and the model "
                f"fails there ({type(error).__name__}: {str(error).splitlines()[0]}); write every batch dim inside "
                "a pyro.plate and index from the right (e.g. x[..., k], pyro.ops.indexing.Vindex), or use "
                "adaptive_contrast=True (with num_particles >= 2), which needs no prior run."
            ) from None

    def _discriminator_loss(self, x, z, contrast, num_particles):
        """Logistic loss of T on (x, z ~ q) against (x, z ~ contrast), and the fraction told apart."""
        both = self.discriminator(_inputs(torch.cat([x, x]), torch.cat([z, contrast])), 1)  # one pass for both classes
        from_guide, from_contrast = at_least_float32(both.squeeze(-1)).chunk(
            2
        )  # summed in float32 under mixed precision
        loss = (softplus(-from_guide) + softplus(from_contrast)).sum() / num_particles
        accuracy = 0.5 * ((from_guide > 0).float().mean() + (from_contrast < 0).float().mean())
        return loss, accuracy.detach()

    def refuse(self, model, guide, args, kwargs):
        """Also, with the prior as contrast, refuses priors whose latents depend on each other and models
        that fail when run from their prior as the particles run."""
        probe = super().refuse(model, guide, args, kwargs)
        check_has_latents(probe, self.name)
        check_observes(
            probe, "avb's discriminator T(x, z) is a function of the observed data; observe the data with obs="
        )
        if not self.adaptive_contrast:
            for site, reads in probe.prior_parents.items():
                if reads:
                    raise UnsupportedModelError(
                        f"site '{site}': its prior depends on latent '{sorted(reads)[0]}', but avb with the "
                        "prior as contrast needs p(z) to be a product of independent sites; use "
                        "adaptive_contrast=True (with num_particles >= 2)."
                    )
        return probe

    def rehearse(self, model, guide, args, kwargs, probe):
        """Also, with the prior as contrast, runs the model from its prior as the particles run."""
        super().rehearse(model, guide, args, kwargs, probe)
        if not self.adaptive_contrast:
            devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
            with torch.random.fork_rng(devices=devices), pyro.validation_enabled(False):
                self._prior_features(model, args, kwargs, probe)

    def adopt(self, probe, args, kwargs):
        """Builds the discriminator and its optimizer for this program (their sizes are its sizes)."""
        with torch.no_grad():
            x, z = self._pairs(probe.particles)
        self.discriminator.initialize_parameters(_inputs(x, z), 1)
        params = [p for p in self.discriminator.parameters() if p.requires_grad]
        if params:
            self.fitter.initialize_parameters(params)

    def options(self):
        return {
            **super().options(),
            "discriminator": self.discriminator.hidden,
            "discriminator_steps": self.discriminator_steps,
            "discriminator_lr": self.fitter.lr,
            "adaptive_contrast": self.adaptive_contrast,
        }


def _inputs(x, z):
    return torch.cat([x, z, z * z], dim=-1)


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


def _with_trace(particles, num_particles, model_trace):
    """``particles``' layout for another model trace of ``num_particles`` (the contrast's prior run)."""
    return dataclasses.replace(particles, model_trace=model_trace, num_particles=num_particles)
