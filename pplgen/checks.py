"""Checks of a model/guide pair, run once before training.

Each raises :class:`~pplgen.engine.UnsupportedModelError` (or ``ValueError``
for a malformed pair) with the site's name and what to do, so a user never
meets a silent prior sample or a shape broadcast deep inside a loss.
"""

import pyro.distributions as dist
import torch

from pplgen.distributions import is_implicit
from pplgen.engine import UnsupportedModelError
from pplgen.particles import is_auxiliary


def check_pair(particles):
    """The guide covers the model's latents, and nothing else, with matching shapes.

    Auxiliary guide sites (``infer={"is_auxiliary": True}``, as Pyro's
    autoguides draw their unconstrained latents) are part of q but not of the
    model; their density counts in log q like any other guide site's.
    """
    model_latents = {s["name"]: s for s in particles.sites(particles.model_trace, observed=False)}
    model_observed = {s["name"] for s in particles.sites(particles.model_trace, observed=True)}
    guide_sites = {s["name"]: s for s in particles.sites(particles.guide_trace)}
    for name in guide_sites:
        if name in model_observed:
            raise ValueError(
                f"guide site '{name}' is observed in the model: the guide must sample only latent sites. "
                "Remove it from the guide."
            )
    for name, site in model_latents.items():
        if name not in guide_sites:
            raise ValueError(
                f"model site '{name}' is latent but the guide has no site of that name: "
                f"add pyro.sample('{name}', ...) to the guide (or observe it in the model with obs=)."
            )
        _check_shapes(name, site["fn"], guide_sites[name]["fn"])
    for name, site in guide_sites.items():
        if name not in model_latents and not is_auxiliary(site):
            raise ValueError(
                f"guide site '{name}' does not appear in the model: rename it to a latent site of the "
                f"model ({sorted(model_latents) or 'none'})."
            )


def check_reparameterizable(particles, engine_name, alternatives):
    """Every guide site can be differentiated through (has ``rsample``)."""
    for site in particles.sites(particles.guide_trace):
        if not site["fn"].has_rsample:
            others = ", ".join(alternatives) if alternatives else "no registered engine"
            raise UnsupportedModelError(
                f"site '{site['name']}' is a {distribution_name(site['fn'])} and has no rsample: "
                f"{engine_name} cannot differentiate through it; use {others} "
                "(score-function engines), or reparameterize the site."
            )


def check_explicit_guide(particles, user, advice="train implicit guides with avb (adversarial variational Bayes)"):
    """Every guide site has a density (no :class:`~pplgen.distributions.Implicit` sampler); ``user``
    names what needs it and ``advice`` what to do instead."""
    for site in particles.sites(particles.guide_trace):
        if is_implicit(site["fn"]):
            raise UnsupportedModelError(
                f"site '{site['name']}' is drawn by an Implicit sampler with no density, and {user} "
                f"needs log q(z | x); {advice}."
            )


def check_independent_guide_sites(particles, engine_name, option):
    """No guide site's parameters depend on another latent.

    Estimators that detach the guide's parameters in log q (``stl``, DReG) drop
    the path through such a dependency and would be biased.
    """
    latents = []
    for site in particles.sites(particles.guide_trace):
        params = [p for p in _parameters(site["fn"]) if p.requires_grad]
        upstream = [s for s in latents if s["value"].requires_grad]
        if params and upstream:
            grads = torch.autograd.grad(
                sum(p.sum() for p in params), [s["value"] for s in upstream], allow_unused=True, retain_graph=True
            )
            for parent, grad in zip(upstream, grads):
                if grad is not None:
                    raise UnsupportedModelError(
                        f"site '{site['name']}': its guide distribution depends on latent '{parent['name']}', "
                        f"so {engine_name} with {option} would drop that path and be biased; "
                        f"use {engine_name} without {option}."
                    )
        latents.append(site)


def _check_shapes(name, model_fn, guide_fn):
    if model_fn.event_shape != guide_fn.event_shape:
        raise ValueError(
            f"site '{name}': the guide's event shape is {tuple(guide_fn.event_shape)} but the model's is "
            f"{tuple(model_fn.event_shape)}; declare the same event dims in both (e.g. .to_event(1))."
        )
    try:
        torch.broadcast_shapes(model_fn.batch_shape, guide_fn.batch_shape)
    except RuntimeError:
        raise ValueError(
            f"site '{name}': the guide's batch shape {tuple(guide_fn.batch_shape)} does not broadcast with "
            f"the model's {tuple(model_fn.batch_shape)}; put the site in the same plates in model and guide."
        ) from None


def _parameters(fn):
    base = getattr(fn, "base_dist", None)
    if base is not None:
        return _parameters(base)
    return [v for k, v in vars(fn).items() if k in fn.arg_constraints and isinstance(v, torch.Tensor)]


def distribution_name(fn):
    """The distribution's class name under ``to_event``, ``expand`` and ``mask`` (HalfCauchy stays HalfCauchy)."""
    while isinstance(fn, (dist.Independent, dist.ExpandedDistribution, dist.MaskedDistribution)):
        fn = fn.base_dist
    return type(fn).__name__
