"""``rebar``: unbiased gradients for binary and one-hot guide sites, with the Concrete relaxation as a control
variate.

Tucker, Mnih, Maddison, Lawson & Sohl-Dickstein (2017), "REBAR: Low-variance,
unbiased gradient estimates for discrete latent variable models". Each
Bernoulli (or OneHotCategorical) guide site with logits α(x) is drawn through
its continuous parent: z = α + L (logistic noise L; Gumbel noise per class for
one-hot sites), b = H(z) (the sign, or the argmax's one-hot), and z̃ is drawn
from z given b with fresh noise. With f(b) = log p_θ(x, b) − log q_φ(b | x)
per datum and c(z) = η f(σ_λ(z)) (f at the Concrete value σ(z / λ), softmax
for one-hot sites, the Bernoulli and categorical densities extended to it),
the gradient of E_q[f] in α is::

    ĝ_α = [f(b) − c(z̃)] ∂/∂α log q(b) + ∂/∂α c(z) − ∂/∂α c(z̃)

passed to φ through α by the chain rule; θ gets ∇θ log p_θ(x, b). It is
unbiased for any η and λ > 0. The explicit dependence of f on φ through
log q has zero expected gradient and is left out, as in
:mod:`~pplgen.inference.disarm`. η and log λ are this engine's parameters,
trained with the model's by the single-sample gradient of E‖ĝ‖² (the
estimator's variance, as its mean does not depend on them; §3.3 of the
paper), ĝ taken with respect to each site's logits, which stand in for the
guide's parameters; ``adapt=False`` keeps them fixed.

The units must be independent given x (one stochastic layer in the guide; a
layered guide is refused by name), every guide site Bernoulli or
OneHotCategorical, and the model must take relaxed values where it draws
them (as for :mod:`~pplgen.inference.gumbel`: a site used as an index is
refused by name).

Cost per step: one guide pass and one model pass over 3K × batch particles
(b, σ_λ(z), σ_λ(z̃)), a backward pass through the relaxed ones for ∂c/∂α, and,
with ``adapt``, a second-order backward pass for η and λ. ``compile=True`` runs
it eagerly: torch.compile does not take second-order gradients.

Example::

    sbn = pplgen.models.SigmoidBeliefNet(layers=(200,))
    engine = pplgen.inference.get("rebar", temperature=0.5)
    loss = engine(sbn.model, sbn.guide, x)

Metrics: ``loss`` (−ELBO of the batch), ``elbo``, ``temperature`` (λ), ``eta`` (η), ``variance`` (‖ĝ‖²
summed over the batch, the quantity η and λ follow).
"""

import math
from dataclasses import dataclass

import pyro.distributions as dist
import torch
from pyro.poutine.messenger import Messenger

from pplgen.checks import UnsupportedModelError, check_independent_guide_sites, distribution_name, registry
from pplgen.engine import Loss, ParticleEngine
from pplgen.inference.disarm import aligned
from pplgen.inference.gumbel import check_relaxed_run, discrete_base, other_engines
from pplgen.particles import common_scale, masked, particle_frame, site_log_prob
from pplgen.sampling import Drawing

#: Blocks of particles: the discrete draws b, then σ_λ(z) and σ_λ(z̃), K particles each.
BLOCKS = 3


@dataclass
class Draw:
    """What a guide site's particles were made of: its logits as the guide computed them (``logits``, the path
    to φ) and as a leaf (``alpha``) the relaxed values are functions of, and the discrete values ``b``, all
    ``(K, ...)`` along the particle dim ``dim`` of the value."""

    logits: torch.Tensor
    alpha: torch.Tensor
    b: torch.Tensor
    dim: int
    one_hot: bool


class ConditionallyRelaxed(Messenger):
    """Redraws every Bernoulli and OneHotCategorical guide site as three blocks of K particles along the particle
    dim: b = H(z), σ_λ(z) and σ_λ(z̃), z̃ drawn from z given b; the site's :class:`Draw` goes to
    ``infer["conditional_relaxation"]``. Runs after the draw and outside ``poutine.trace``, so the trace and the
    model see the blocks."""

    def __init__(self, temperature):
        super().__init__()
        self.temperature = temperature

    def _pyro_post_sample(self, msg):
        frame = particle_frame(msg)
        base = discrete_base(msg["fn"])
        if msg["is_observed"] or frame is None or base is None:
            return
        dim = frame.dim - msg["fn"].event_dim
        logits = base.logits.expand(msg["value"].shape)
        logits = logits.narrow(dim, 0, logits.shape[dim] // BLOCKS)
        alpha = logits.detach().requires_grad_()
        one_hot = isinstance(base, dist.OneHotCategorical)
        b, z, z_tilde = (_categorical_draws if one_hot else _bernoulli_draws)(alpha)
        relax = (
            (lambda v: torch.softmax(v / self.temperature, -1))
            if one_hot
            else (lambda v: torch.sigmoid(v / self.temperature))
        )
        msg["value"] = torch.cat([b, relax(z), relax(z_tilde)], dim).to(msg["value"].dtype)
        msg["infer"]["conditional_relaxation"] = Draw(logits, alpha, b, dim, one_hot)


class ConditionalRelaxation(Drawing):
    """Discrete draws with their two relaxations; not differentiable in φ (the blocks read a leaf), and they
    cannot be drawn one run at a time."""

    stackable = False

    def __init__(self, temperature):
        self.temperature = temperature

    def around_guide(self):
        return ConditionallyRelaxed(self.temperature)


class Rebar(ParticleEngine):
    name = "rebar"
    metric_names = ("loss", "elbo", "temperature", "eta", "variance")
    mean_metrics = ("temperature", "eta")
    requires_rsample = False
    needs_common_scale = True
    discrete_latents_only = True
    relaxes_discrete = True

    def __init__(self, num_particles=1, *, temperature=0.5, eta=1.0, adapt=True, max_plate_nesting=None):
        super().__init__(num_particles, max_plate_nesting)
        if not temperature > 0:
            raise ValueError(f"temperature must be positive, got {temperature!r}")
        self.adapt = bool(adapt)
        self.log_temperature = torch.nn.Parameter(torch.tensor(math.log(temperature)), requires_grad=self.adapt)
        self.eta = torch.nn.Parameter(torch.tensor(float(eta)), requires_grad=self.adapt)

    @property
    def temperature(self):
        return self.log_temperature.exp()

    @torch.compiler.disable  # its second-order gradients are beyond torch.compile's aot_autograd
    def forward(self, model, guide, *args, **kwargs):
        k = self.num_particles
        particles = self.particles(
            model, guide, args, kwargs, num_particles=BLOCKS * k, drawing=ConditionalRelaxation(self.temperature)
        )
        draws = {
            site["name"]: site["infer"]["conditional_relaxation"]
            for site in particles.sites(particles.guide_trace, observed=False)
        }
        model_density, f = _signal(particles, draws)
        f_b, f_z, f_z_tilde = f.split(k)
        c_z, c_z_tilde = self.control_variate(particles, f_z, f_z_tilde)
        adapting = self.adapt and self.training
        logit_gradients = self._logit_gradients(particles, draws, f_b.detach(), c_z, c_z_tilde, adapting)
        scale = common_scale(particles)
        guide_term = sum((g.detach() * draws[name].logits).sum() for name, g in logit_gradients.items()) / k
        variance = sum(g.pow(2).sum() for g in logit_gradients.values()) / k
        model_term = (scale * model_density[:k]).sum() / k
        elbo = (scale * f_b).sum().detach() / k
        estimator = model_term + guide_term
        surrogate = -elbo - (estimator - estimator.detach())
        if adapting and logit_gradients:
            surrogate = surrogate + self._variance_surrogate(variance)
        metrics = {
            "loss": -elbo,
            "elbo": elbo,
            "temperature": self.temperature.detach(),
            "eta": self.eta.detach(),
            "variance": torch.as_tensor(variance).detach(),
        }
        return Loss(surrogate, metrics)

    def control_variate(self, particles, f_z, f_z_tilde):
        """c(z) and c(z̃) per particle and datum, from f at the relaxed values."""
        return self.eta * f_z, self.eta * f_z_tilde

    def _logit_gradients(self, particles, draws, f_b, c_z, c_z_tilde, create_graph):
        """ĝ_α of every guide site, shaped like its K discrete particles and scaled as the site is."""
        names = list(draws)
        if not names:
            return {}
        pathwise = torch.autograd.grad(
            (c_z - c_z_tilde).sum(),
            [draws[name].alpha for name in names],
            create_graph=create_graph,
            retain_graph=True,
            allow_unused=True,
        )
        gradients = {}
        for name, path in zip(names, pathwise):
            draw, site = draws[name], particles.guide_trace.nodes[name]
            signal = aligned(f_b - c_z_tilde, particles, site["fn"].event_dim)
            estimate = signal * _score(draw) + (torch.zeros_like(draw.alpha) if path is None else path)
            gradients[name] = site["scale"] * estimate
        return gradients

    def _variance_surrogate(self, variance):
        """A term whose gradient in the engine's own parameters (η, λ and any network of the control variate)
        is that of ‖ĝ‖², and zero in every other parameter; its value is zero."""
        own = [p for p in self.parameters() if p.requires_grad]
        grads = torch.autograd.grad(variance, own, allow_unused=True, retain_graph=True)
        return sum((g.detach() * (p - p.detach())).sum() for g, p in zip(grads, own) if g is not None)

    def check_guide_gradients(self, probe):
        for site in probe.sites(probe.guide_trace, observed=False):
            if discrete_base(site["fn"]) is None:
                raise UnsupportedModelError(
                    f"guide site '{site['name']}' is a {distribution_name(site['fn'])}, not a Bernoulli or "
                    f"OneHotCategorical: {self.name} relaxes those only; {other_engines()}."
                )

    def refuse(self, model, guide, args, kwargs):
        probe = super().refuse(model, guide, args, kwargs)
        check_independent_guide_sites(
            probe,
            self.name,
            None,
            remedy=f"its conditional relaxation needs units independent given x; use {', '.join(registry().score_function_engines())}",
        )
        return probe

    def rehearse(self, model, guide, args, kwargs, probe):
        super().rehearse(model, guide, args, kwargs, probe)
        check_relaxed_run(model, guide, args, kwargs, probe, self.temperature.item(), self.name)

    def particles_per_step(self):
        return BLOCKS * self.num_particles

    def needs_vectorized_particles(self):
        return "its three blocks of particles drawn together"

    def options(self):
        return {
            **super().options(),
            "temperature": self.temperature.item(),
            "eta": self.eta.item(),
            "adapt": self.adapt,
        }


def _bernoulli_draws(alpha):
    """b = 1[z > 0] with z = α + logistic noise, and z̃ ~ z | b: z̃ = α + logit(v'), v' uniform on b's side of
    1 − σ(α)."""
    u, v = _uniform(alpha), _uniform(alpha)
    z = alpha + torch.logit(u)
    b = (z > 0).to(alpha.dtype)
    p = torch.sigmoid(alpha)
    v_prime = torch.where(b > 0, (1 - p) + v * p, v * (1 - p))
    z_tilde = alpha + torch.logit(v_prime.clamp(_tiny(alpha), 1 - _tiny(alpha)))
    return b, z, z_tilde


def _categorical_draws(alpha):
    """b = one-hot argmax of z = log π + Gumbel noise, and z̃ ~ z | b: the winner's Gumbel max at −log(−log v_b),
    every other class truncated below it (Tucker et al. 2017, appendix)."""
    log_pi = torch.log_softmax(alpha, -1)
    z = log_pi - torch.log(-torch.log(_uniform(alpha)))
    b = torch.nn.functional.one_hot(z.argmax(-1), alpha.shape[-1]).to(alpha.dtype)
    v = _uniform(alpha)
    top = -torch.log(-torch.log((v * b).sum(-1, keepdim=True)))
    others = -torch.log(-torch.log(v) * torch.exp(-log_pi) + torch.exp(-top))
    return b, z, torch.where(b > 0, top, others)


def _uniform(alpha):
    return torch.rand_like(alpha).clamp(_tiny(alpha), 1 - _tiny(alpha))


def _tiny(tensor):
    return torch.finfo(tensor.dtype).eps


def _score(draw):
    """∂/∂α log q(b): b − σ(α), or b − softmax(α) for a one-hot site."""
    return draw.b - (torch.softmax(draw.alpha, -1) if draw.one_hot else torch.sigmoid(draw.alpha))


def _signal(particles, draws):
    """log p(x, ·) and f = log p(x, ·) − log q(· | x) per particle and factor, ``(3K, *factor_sizes)``, with the
    discrete densities extended to the relaxed values: Σ v log σ(α) + (1 − v) log σ(−α) for a binary site,
    Σ v log softmax(α) for a one-hot one. The guide's densities read the leaf α."""
    model_density = particles.zeros()
    for site in particles.sites(particles.model_trace):
        model_density = model_density + particles.reduce(
            _extended_log_prob(site) if site["name"] in draws else site_log_prob(site)
        )
    guide_density = particles.zeros()
    for site in particles.sites(particles.guide_trace, observed=False):
        draw = draws[site["name"]]
        alpha = torch.cat([draw.alpha] * BLOCKS, draw.dim)
        guide_density = guide_density + particles.reduce(_extended_log_prob(site, alpha))
    return model_density, model_density - guide_density


def _extended_log_prob(site, logits=None):
    """The site's discrete density at its (possibly relaxed) value, extended to values in [0, 1] (the simplex),
    at its own logits or at ``logits``; masked as the site is."""
    fn, value = site["fn"], site["value"]
    base = discrete_base(fn)
    logits = base.logits if logits is None else logits
    if isinstance(base, dist.OneHotCategorical):
        log_prob = (value * torch.log_softmax(logits, -1)).sum(-1)
    else:
        logits, value = torch.broadcast_tensors(logits, value)
        log_prob = -torch.nn.functional.binary_cross_entropy_with_logits(logits, value, reduction="none")
    extra = fn.event_dim - base.event_dim
    log_prob = log_prob.sum(tuple(range(-extra, 0))) if extra else log_prob
    return masked(log_prob, site["mask"])
