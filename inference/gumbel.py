"""``gumbel``: the Concrete (Gumbel-softmax) relaxation of binary and one-hot guide sites, and its
straight-through variant.

Maddison, Mnih & Teh (2017), "The Concrete Distribution"; Jang, Gu & Poole
(2017), "Categorical Reparameterization with Gumbel-Softmax". Each Bernoulli
(or OneHotCategorical) guide site with logits α is drawn relaxed and
reparameterized, z̃ = σ((α + L) / τ) with L logistic noise (softmax of
(α + G) / τ with Gumbel noise G for one-hot sites), and the ELBO of the
relaxed program is differentiated by autograd::

    ELBO_τ ≈ (1/K) Σ_k [log p̃_τ(x, z̃_k) − log q̃_τ(z̃_k | x)]

where each relaxed site's two terms log p̃ − log q̃ are −KL(q ‖ p) of its
discrete guide and model distributions (the model's at the relaxed values of
its parents), as Jang et al. train their categorical VAE
(``densities="discrete"``, the default), or the Concrete densities of the
model's and the guide's logits at the same temperature, as Maddison et al.
do (``densities="concrete"``). The model runs on the relaxed values, so it must take values in [0, 1]
where it draws a binary site. With ``straight_through=True`` the program
sees the hard sample 1[z̃ > ½] (the argmax's one-hot) and the densities are the
discrete ones at it, while gradients pass through z̃ (Bengio et al. 2013; Jang
et al. 2017).

Biased by design, for any τ > 0: the relaxed objective is not the ELBO. The
bias shrinks as τ falls (with the discrete KL; the Concrete densities keep
most of theirs), and the variance grows. ``temperature`` is τ; with
``anneal=(final, rate)`` it follows τ_t = max(final, τ · exp(−rate · t)) over
the training steps t, as in Jang et al.

Cost per step: one guide pass and one model pass over K × batch particles.

Example::

    sbn = pplgen.models.SigmoidBeliefNet(layers=(200,))
    engine = pplgen.inference.get("gumbel", temperature=0.5, straight_through=True)
    loss = engine(sbn.model, sbn.guide, x)

Metrics: ``loss`` (−ELBO_τ of the batch), ``elbo``, ``temperature``.
"""

import math
from contextlib import contextmanager

import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.poutine.messenger import Messenger

from pplgen.checks import UnsupportedModelError, distribution_name, registry
from pplgen.dependencies import density_reads
from pplgen.engine import Loss, ParticleEngine
from pplgen.particles import masked, sample_particles
from pplgen.sampling import DetachLatents, Drawing

DENSITIES = ("discrete", "concrete")


def other_engines():
    """What a refusal of a relaxation engine advises instead, from the registry."""
    return f"train it with {registry().unrelaxed_engines()}, which need no relaxation"


class Relax(Messenger):
    """Draws every Bernoulli and OneHotCategorical guide site from its Concrete relaxation at ``temperature``
    (hard values with straight-through gradients when ``straight_through``); other sites are left alone."""

    def __init__(self, temperature, straight_through):
        super().__init__()
        self.temperature, self.straight_through = temperature, straight_through

    def _pyro_sample(self, msg):
        if msg["is_observed"] or discrete_base(msg["fn"]) is None:
            return
        msg["infer"]["discrete_fn"] = msg["fn"]
        msg["fn"] = _relaxed(msg["fn"], self.temperature)

    def _pyro_post_sample(self, msg):
        if "discrete_fn" not in msg["infer"] or not self.straight_through:
            return
        relaxed = msg["value"]
        msg["value"] = _hard(relaxed, discrete_base(msg["infer"]["discrete_fn"])) + (relaxed - relaxed.detach())


class Relaxed(Drawing):
    stackable = False

    def __init__(self, temperature, straight_through):
        self.temperature, self.straight_through = temperature, straight_through

    def around_guide(self):
        return Relax(self.temperature, self.straight_through)


class RelaxedLeaves(Drawing):
    """Relaxed draws, each cut and made a fresh leaf that requires grad, so autograd can tell which model
    densities read it pathwise (:mod:`pplgen.dependencies`)."""

    stackable = False

    def __init__(self, temperature):
        self.temperature = temperature

    @contextmanager
    def around_guide(self):
        with DetachLatents(requires_grad=True), Relax(self.temperature, straight_through=False):
            yield


class Gumbel(ParticleEngine):
    name = "gumbel"
    metric_names = ("loss", "elbo", "temperature")
    mean_metrics = ("temperature",)
    requires_rsample = True  # gradients pass through every draw; discrete sites are drawn relaxed
    relaxes_discrete = True

    def __init__(
        self,
        num_particles=1,
        *,
        temperature=1.0,
        anneal=None,
        straight_through=False,
        densities="discrete",
        max_plate_nesting=None,
    ):
        super().__init__(num_particles, max_plate_nesting)
        if densities not in DENSITIES:
            raise ValueError(f"densities must be one of {DENSITIES}, got {densities!r}")
        self.densities = densities
        if not temperature > 0:
            raise ValueError(f"temperature must be positive, got {temperature!r}")
        if anneal is not None and not (len(anneal) == 2 and anneal[0] > 0 and anneal[1] >= 0):
            raise ValueError(f"anneal must be (final temperature > 0, rate >= 0), got {anneal!r}")
        self.initial_temperature = float(temperature)
        self.anneal = None if anneal is None else (float(anneal[0]), float(anneal[1]))
        self.straight_through = bool(straight_through)
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    @property
    def temperature(self):
        if self.anneal is None:
            return self.initial_temperature
        final, rate = self.anneal
        return max(final, self.initial_temperature * math.exp(-rate * int(self.steps)))

    def forward(self, model, guide, *args, **kwargs):
        temperature = self.temperature
        drawing = Relaxed(temperature, self.straight_through)
        particles = self.particles(model, guide, args, kwargs, drawing=drawing)
        relaxed = {
            s["name"]: s["infer"]["discrete_fn"]
            for s in particles.sites(particles.guide_trace)
            if "discrete_fn" in s["infer"]
        }
        scored_by_kl = set(relaxed) & set(particles.model_trace.nodes) if self.densities == "discrete" else set()
        total = particles.zeros().sum()
        for site in particles.sites(particles.model_trace):
            if site["name"] in scored_by_kl:
                total = total - _discrete_kl(relaxed[site["name"]], site).sum()
            else:
                total = total + self._model_term(site, site["name"] in relaxed, temperature).sum()
        for site in particles.sites(particles.guide_trace):
            if site["name"] not in scored_by_kl:
                total = total - self._guide_term(site).sum()
        elbo = total / particles.num_particles
        if self.training:
            self.steps += 1
        metrics = {"loss": -elbo.detach(), "elbo": elbo.detach(), "temperature": torch.tensor(temperature)}
        return Loss(-elbo, metrics)

    def _model_term(self, site, relaxed, temperature):
        """A model site's scaled log-density: at a relaxed site, the Concrete density of the model's logits
        (the discrete density at the hard value, straight-through)."""
        fn = site["fn"]
        if relaxed and not self.straight_through:
            fn = _relaxed(fn, temperature)
        return site["scale"] * masked(fn.log_prob(site["value"]), site["mask"])

    def _guide_term(self, site):
        fn = site["infer"]["discrete_fn"] if self.straight_through and "discrete_fn" in site["infer"] else site["fn"]
        return site["scale"] * masked(fn.log_prob(site["value"]), site["mask"])

    def check_guide_gradients(self, probe):
        """Every guide site is relaxed (Bernoulli, OneHotCategorical) or reparameterized: gradients pass through
        every draw."""
        for site in probe.sites(probe.guide_trace, observed=False):
            if discrete_base(site["fn"]) is None and not site["fn"].has_rsample:
                if isinstance(_inner(site["fn"]), dist.Categorical):
                    raise UnsupportedModelError(
                        f"guide site '{site['name']}' is a Categorical: its values are indices, which have no "
                        "relaxation the model could take; write it as a OneHotCategorical for gumbel, or "
                        f"{other_engines()}."
                    )
                raise UnsupportedModelError(
                    f"guide site '{site['name']}' is a {distribution_name(site['fn'])} without rsample and without "
                    "a Concrete relaxation; gumbel relaxes Bernoulli and OneHotCategorical sites; "
                    f"{other_engines()}."
                )

    def needs_vectorized_particles(self):
        return f"num_particles={self.num_particles} (relaxed draws are made together)"

    def rehearse(self, model, guide, args, kwargs, probe):
        super().rehearse(model, guide, args, kwargs, probe)
        for site in probe.sites(probe.guide_trace, observed=False):
            if discrete_base(site["fn"]) is not None and site["name"] in probe.model_trace.nodes:
                _check_same_kind(site, probe.model_trace.nodes[site["name"]])
        check_relaxed_run(model, guide, args, kwargs, probe, self.temperature, self.name)

    def options(self):
        return {
            **super().options(),
            "temperature": self.initial_temperature,
            "anneal": self.anneal,
            "straight_through": self.straight_through,
            "densities": self.densities,
        }


def _check_same_kind(guide_site, model_site):
    """The model draws a relaxed site from the guide's kind of distribution, whose logits score it."""
    q, p = discrete_base(guide_site["fn"]), discrete_base(model_site["fn"])
    if type(q) is not type(p):
        raise UnsupportedModelError(
            f"site '{guide_site['name']}' is a {distribution_name(guide_site['fn'])} in the guide but a "
            f"{distribution_name(model_site['fn'])} in the model: gumbel scores a relaxed site by the model's "
            "distribution of the guide's kind (their KL divergence, or its Concrete density); draw it from one "
            "kind in both."
        )


def _discrete_kl(guide_fn, site):
    """KL(q ‖ p) of a relaxed site's discrete guide and model distributions (the model's computed at the relaxed
    values of its parents), shaped like the site's batch, its extra event dims summed; masked and scaled."""
    q, p = discrete_base(guide_fn), discrete_base(site["fn"])
    kl = torch.distributions.kl_divergence(q, p)
    value = site["value"]
    kl = kl.expand(value.shape[: value.dim() - p.event_dim])
    extra = site["fn"].event_dim - p.event_dim
    kl = kl.sum(tuple(range(-extra, 0))) if extra else kl
    return site["scale"] * masked(kl, site["mask"])


def check_relaxed_run(model, guide, args, kwargs, probe, temperature, engine_name):
    """The model run on one relaxed draw of the guide's discrete sites, as a relaxation engine runs it, with each
    relaxed site read by some other model density through a differentiable path (not cast to an index)."""
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices), poutine.block():
        try:
            particles = sample_particles(
                model,
                guide,
                args,
                kwargs,
                num_particles=1,
                max_plate_nesting=probe.max_plate_nesting,
                drawing=RelaxedLeaves(temperature),
            )
        except (ValueError, RuntimeError, IndexError, TypeError) as error:
            raise UnsupportedModelError(
                f"the model fails on relaxed values of its discrete sites ({type(error).__name__}: "
                f"{str(error).splitlines()[0]}): {engine_name} runs it where the guide draws values in [0, 1] (a "
                f"site used as an index cannot take them); {other_engines()}."
            ) from None
        _check_read_pathwise(particles, temperature, engine_name)


def _check_read_pathwise(particles, temperature, engine_name):
    relaxed = {s["name"]: s["value"] for s in particles.sites(particles.guide_trace) if "discrete_fn" in s["infer"]}
    read = set()
    for site in particles.sites(particles.model_trace):
        if site["name"] in relaxed:
            site = {**site, "fn": _relaxed(site["fn"], temperature)}
        read |= density_reads(site, relaxed) - {site["name"]}
    for name in relaxed.keys() - read:
        raise UnsupportedModelError(
            f"no model density reads site '{name}' through a differentiable path at relaxed values (is it cast to "
            f"an integer, or used as an index?): {engine_name}'s gradient would not see it; {other_engines()}."
        )


def _inner(fn):
    while isinstance(fn, (dist.Independent, dist.ExpandedDistribution, dist.MaskedDistribution)):
        fn = fn.base_dist
    return fn


def discrete_base(fn):
    """The Bernoulli or OneHotCategorical inside ``fn``, or None."""
    inner = _inner(fn)
    return inner if isinstance(inner, (dist.Bernoulli, dist.OneHotCategorical)) else None


def _relaxed(fn, temperature):
    """``fn`` with its Bernoulli or OneHotCategorical replaced by the Concrete distribution of its logits,
    keeping its batch shape and event dims."""
    inner = discrete_base(fn)
    temperature = torch.as_tensor(temperature, dtype=inner.logits.dtype, device=inner.logits.device)
    if isinstance(inner, dist.Bernoulli):
        relaxed = dist.RelaxedBernoulli(temperature, logits=inner.logits)
    else:
        relaxed = dist.RelaxedOneHotCategorical(temperature, logits=inner.logits)
    relaxed = relaxed.expand(fn.batch_shape + fn.event_shape[: len(fn.event_shape) - relaxed.event_dim])
    return relaxed.to_event(fn.event_dim - relaxed.event_dim) if fn.event_dim > relaxed.event_dim else relaxed


def _hard(relaxed, discrete):
    """The discrete value a relaxed one stands for: 1[z̃ > ½], or the one-hot of its argmax."""
    if isinstance(discrete, dist.Bernoulli):
        return (relaxed > 0.5).to(relaxed.dtype)
    return torch.nn.functional.one_hot(relaxed.argmax(-1), relaxed.shape[-1]).to(relaxed.dtype)
