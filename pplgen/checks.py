"""Checks of a model/guide pair, run once before training on its probe (:mod:`pplgen.probe`).

Each raises :class:`UnsupportedModelError` (or ``ValueError`` for a malformed
pair) with the site's name and what to do, so a user never meets a silent
prior sample or a shape broadcast deep inside a loss. A pair that Pyro's own
``Trace_ELBO`` rejects, or warns about, is refused here with Pyro's reason.
"""

import math
import warnings

import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.util import check_model_guide_match, check_site_shape

from pplgen.distributions import is_implicit
from pplgen.particles import (
    common_scale,
    is_auxiliary,
    is_observation,
    sample_particles,
    site_log_prob,
)
from pplgen.sampling import PATHWISE


def registry():
    """:mod:`pplgen.inference`, whose engines' traits name the alternatives a refusal advises. Imported when a
    refusal is written: the engines import this module."""
    from pplgen import inference

    return inference


class UnsupportedModelError(ValueError):
    """An engine cannot train this model/guide pair; the message says why and what can."""


def check_pair(probe):
    """The guide covers the model's latents, and nothing else, with matching shapes; and Pyro's checks pass.

    Auxiliary guide sites (``infer={"is_auxiliary": True}``, as Pyro's
    autoguides draw their unconstrained latents, and ``pyro.factor``) are part
    of q but not of the model; their density counts in log q like any other
    guide site's.
    """
    _check_names(probe)
    _check_with_pyro(probe)


def _check_names(probe):
    model_latents = {s["name"]: s for s in probe.sites(probe.model_trace, observed=False)}
    model_observed = {s["name"] for s in probe.sites(probe.model_trace, observed=True)}
    guide_sites = {s["name"]: s for s in probe.sites(probe.guide_trace)}
    for name in guide_sites:
        if name in model_observed:
            raise ValueError(
                f"guide site '{name}' is observed in the model: the guide must sample only latent sites. "
                "Remove it from the guide."
            )
    for name, site in model_latents.items():
        if name not in guide_sites and site["infer"].get("enumerate") == "sequential":
            raise UnsupportedModelError(
                f"model site '{name}' asks for sequential enumeration, which neither pplgen nor Pyro sums out "
                "in the model (Pyro enumerates model sites in parallel only); ask for infer={'enumerate': "
                "'parallel'}, or enumerate the site in the guide."
            )
        if name in probe.enumerated:
            continue
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


def _check_with_pyro(probe):
    """Pyro's own checks of the pair (``check_model_guide_match``, ``check_site_shape``), warnings as errors;
    the model's sites to sum out are left out of the match, as Pyro leaves out its enumerated sites."""
    model_trace = probe.model_trace
    if probe.enumerated:
        model_trace = model_trace.copy()
        for name in probe.enumerated:
            model_trace.remove_node(name)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_model_guide_match(model_trace, probe.guide_trace, probe.max_plate_nesting)
    for warning in caught:
        if issubclass(warning.category, UserWarning) or issubclass(warning.category, RuntimeWarning):
            raise ValueError(f"Pyro refuses this model/guide pair: {warning.message}")
    for trace in (probe.model_trace, probe.guide_trace):
        for site in probe.sites(trace):
            check_site_shape({**site, "log_prob": _log_prob_shaped(site)}, math.inf)


def _log_prob_shaped(site):
    """The site's log-density, or zeros of its shape for a sampler with no density."""
    if is_implicit(site["fn"]):
        return site["value"].new_zeros(site["fn"].batch_shape)
    return site_log_prob(site)


def check_particles(
    model, guide, args, kwargs, engine_name, plate_nesting, needs_vectorized=None, enumerated=False, num_particles=2
):
    """Whether the programs run on particles drawn at once (True) or only one run at a time (False), tried on
    two particles (or, for an engine of one particle, the one it draws with the model's sites enumerated)
    without gradients, leaving the RNG untouched (see :func:`draw_particles`)."""
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices), poutine.block(), torch.no_grad():
        _, vectorized = draw_particles(
            model,
            guide,
            args,
            kwargs,
            engine_name,
            plate_nesting,
            needs_vectorized,
            num_particles=num_particles,
            enumerated=enumerated,
        )
    return vectorized


def draw_particles(
    model,
    guide,
    args,
    kwargs,
    engine_name,
    plate_nesting,
    needs_vectorized=None,
    *,
    num_particles,
    drawing=PATHWISE,
    enumerated=False,
):
    """``(particles, vectorized)``: K particles drawn at once when the programs broadcast over a particle plate,
    else one run each, with every site's log-density checked for its shape.

    Vectorized particles sit in a plate left of the program's plates; programs
    that do not broadcast over it run once per particle, as Pyro runs them
    (:mod:`pplgen.stacked`). ``needs_vectorized`` names an option that needs
    vectorized particles, if the engine has one on. An engine's first step draws
    its particles here, so it gives the verdict :func:`check_particles` gives.
    """
    options = {"num_particles": num_particles, "max_plate_nesting": plate_nesting, "drawing": drawing}
    options["enumerated"] = enumerated
    if num_particles == 1:
        return _enumerated_particle(model, guide, args, kwargs, engine_name, options), True
    try:
        return _scored(sample_particles(model, guide, args, kwargs, vectorized=True, **options)), True
    except (ValueError, RuntimeError, IndexError) as error:
        vectorized_error = _described(error)
    failure = (
        f"the programs fail on particles drawn at once, in a plate at dim {-plate_nesting - 1} ({vectorized_error})"
    )
    if needs_vectorized is not None:
        raise UnsupportedModelError(
            f"{failure}, and {engine_name} with {needs_vectorized} needs them: write every batch dim inside a "
            "pyro.plate and index from the right (e.g. pyro.ops.indexing.Vindex, x[..., k]), or turn the option off."
        )
    try:
        return _scored(sample_particles(model, guide, args, kwargs, vectorized=False, **options)), False
    except (ValueError, RuntimeError, IndexError) as error:
        raise UnsupportedModelError(
            f"{failure}, and one run at a time too ({_described(error)}); {engine_name} needs several particles of "
            f"the same sites: use an engine with num_particles=1 ({', '.join(registry().per_site_engines())})."
        ) from None


def _enumerated_particle(model, guide, args, kwargs, engine_name, options):
    """One particle with the model's annotated sites enumerated, or a refusal saying how the model breaks."""
    try:
        return _scored(sample_particles(model, guide, args, kwargs, vectorized=True, **options))
    except (ValueError, RuntimeError, IndexError) as error:
        raise UnsupportedModelError(
            f"the model fails with its sites enumerated in parallel, in dims left of "
            f"{-options['max_plate_nesting'] - 1} ({_described(error)}), as {engine_name} sums them out: index "
            "with pyro.ops.indexing.Vindex and broadcast from the right as Pyro's enumeration needs, or train "
            "with a guide that draws those sites."
        ) from None


def _scored(particles):
    """``particles``, once every site's log-density shape (that of its distribution's batch, broadcast with its
    value's) has reduced to the particles' factor shape. The densities are not evaluated: an engine may score a
    site at values of its own (a relaxation) with another density."""
    for trace in (particles.model_trace, particles.guide_trace):
        for site in particles.sites(trace):
            fn, value = site["fn"], site["value"]
            batch = value.shape[: value.dim() - fn.event_dim] if torch.is_tensor(value) else ()
            shape = torch.broadcast_shapes(fn.batch_shape, batch)
            particles.reduce(torch.zeros(shape, device=value.device if torch.is_tensor(value) else None))
    return particles


def _described(error):
    return f"{type(error).__name__}: {str(error).splitlines()[0]}"


def check_reparameterizable(probe, engine_name):
    """Every guide site can be differentiated through (has ``rsample``), but those summed over their support."""
    for site in probe.sites(probe.guide_trace):
        if not site["fn"].has_rsample and site["name"] not in probe.guide_enumerated:
            others = ", ".join(registry().score_function_engines())
            raise UnsupportedModelError(
                f"site '{site['name']}' is a {distribution_name(site['fn'])} and has no rsample: "
                f"{engine_name} cannot differentiate through it; use {others} "
                "(engines for sites without rsample), or reparameterize the site."
            )


def check_scored_guide(probe, engine_name):
    """No guide site is a point estimate: a ``dist.Delta`` at a parameter (a MAP guide), not at a function of
    another guide latent (as autoguides place their Deltas). Its log-density is constant where it is drawn, so a
    score-function gradient would never move its parameters."""
    latents = [s for s in probe.sites(probe.guide_trace) if s["value"].requires_grad and not _is_delta(s["fn"])]
    for site in probe.sites(probe.guide_trace):
        if _is_delta(site["fn"]) and not _depends_on(probe.pathwise.get(site["name"], site["value"]), latents):
            raise UnsupportedModelError(
                f"site '{site['name']}' is a Delta (a point estimate at its parameter): its log-density is constant "
                f"where it is drawn, so {engine_name}'s score-function gradient never moves it; fit MAP guides with "
                f"{' or '.join(registry().pathwise_engines())}, which differentiate through the draw."
            )


def _is_delta(fn):
    while hasattr(fn, "base_dist"):
        fn = fn.base_dist
    return isinstance(fn, dist.Delta)


def _depends_on(value, latents):
    """Whether ``value`` is computed from any of the ``latents``' (cut) draws."""
    if not latents or not value.requires_grad:
        return False
    with torch.enable_grad():
        grads = torch.autograd.grad(value.sum(), [s["value"] for s in latents], allow_unused=True, retain_graph=True)
    return any(g is not None for g in grads)


def check_explicit_guide(probe, user, advice=None):
    """Every guide site has a density (no :class:`~pplgen.distributions.Implicit` sampler); ``user``
    names what needs it and ``advice`` what to do instead (by default, the engines that train implicit guides)."""
    advice = advice or f"train implicit guides with {' or '.join(registry().implicit_guide_engines())}"
    for site in probe.sites(probe.guide_trace):
        if is_implicit(site["fn"]):
            raise UnsupportedModelError(
                f"site '{site['name']}' is drawn by an Implicit sampler with no density, and {user} "
                f"needs log q(z | x); {advice}."
            )


def check_independent_guide_sites(probe, engine_name, option, remedy=None):
    """No guide site's parameters depend on another latent.

    Estimators that detach the guide's parameters in log q (``stl``, DReG) drop
    the path through such a dependency and would be biased; ``remedy`` says what
    to do instead of dropping the option (for an engine without one, ``option`` None).
    """
    latents = []
    for site in probe.sites(probe.guide_trace, observed=False):
        params = [p for p in _parameters(site["fn"]) if p.requires_grad]
        upstream = [s for s in latents if s["value"].requires_grad]
        if params and upstream:
            grads = torch.autograd.grad(
                sum(p.sum() for p in params), [s["value"] for s in upstream], allow_unused=True, retain_graph=True
            )
            for parent, grad in zip(upstream, grads):
                if grad is not None:
                    configured = engine_name if option is None else f"{engine_name} with {option}"
                    raise UnsupportedModelError(
                        f"site '{site['name']}': its guide distribution depends on latent '{parent['name']}', "
                        f"so {configured} would drop that path and be biased; "
                        f"{remedy or f'use {engine_name} without {option}'}."
                    )
        latents.append(site)


def check_common_scale(probe, engine_name):
    """Every site of a datum has the same scale, as importance weights across sites need."""
    try:
        common_scale(probe.particles)
    except ValueError as error:
        raise UnsupportedModelError(
            f"{error}, so {engine_name} cannot weight them together; use {', '.join(registry().per_site_engines())} "
            "(which scale each site's term on its own), or give every site the same scale."
        ) from None


def check_observes(probe, user):
    """The model observes data at one site at least; ``user`` names what needs the data."""
    if not any(is_observation(site) for site in probe.sites(probe.model_trace, observed=True)):
        raise UnsupportedModelError(f"the model observes no site (no obs=), and {user}.")


def refuse_enumeration(probe, engine_name, reason):
    """Refuse a model with sites to sum out (:mod:`pplgen.enumeration`), saying ``reason`` and naming the
    engines that sum them out."""
    others = " or ".join(registry().enumerating_engines())
    raise UnsupportedModelError(
        f"model site '{probe.enumerated[0]}' asks to be enumerated (infer={{'enumerate': 'parallel'}}) and the "
        f"guide does not draw it, but {engine_name} cannot sum it out: {reason}; use {others}, which sum it out "
        "of log p(x, z), or draw the site in the guide."
    )


def refuse_guide_enumeration(probe, engine_name):
    """Refuse a guide site that asks to be enumerated, naming the engines that sum it out."""
    name = probe.guide_enumerated[0]
    others = " or ".join(registry().guide_enumerating_engines())
    raise UnsupportedModelError(
        f"guide site '{name}' asks to be enumerated (infer={{'enumerate': ...}}), but {engine_name} samples every "
        f"guide site and would draw it silently; use {others}, which sums it out weighted by q as Pyro's "
        "TraceEnum_ELBO does, or drop the option to sample it."
    )


def check_has_latents(probe, engine_name):
    """The guide draws at least one latent."""
    if not probe.sites(probe.guide_trace, observed=False):
        raise UnsupportedModelError(
            f"the guide draws no latent site, and {engine_name} learns a distribution over latents; "
            f"use {' or '.join(registry().pathwise_engines())} (without latents its bound is log p(x)) or add the latents."
        )


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
