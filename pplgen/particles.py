"""Vectorized particles and importance log-weights, the primitives engines share.

Every engine draws K particles from the guide and scores them under the model.
Here this happens once, vectorized: model and guide run inside one extra
``pyro.plate`` (the particle plate, left of all the program's plates), so each
latent gets a leading particle dimension and one pass scores all K.

Log-weights ``log w_k = log p(x, z_k) - log q(z_k | x)`` are kept *per
factor*: when every sample site sits inside the same plate (the data plate of
a VAE), the joint factorizes over that plate, so the weights are returned with
shape ``(K, batch)`` and bounds such as IWAE's are taken per datum, as in the
literature, rather than over the whole mini-batch at once.
"""

from contextlib import nullcontext
from dataclasses import dataclass

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.poutine.util import site_is_subsample

from pplgen.sampling import PATHWISE, Drawing
from pplgen.stacked import Stacked, stack_traces

PARTICLE_PLATE = "_particles"


def particle_frame(msg):
    """The particle plate's frame among a sample message's plates, or None outside it."""
    return next((f for f in msg["cond_indep_stack"] if f.name == PARTICLE_PLATE), None)


@dataclass
class Particles:
    """Guide and model traces of ``num_particles`` (K) vectorized particles.

    ``particle_dim`` is the (negative) batch dim of the particle plate;
    ``factor_dims`` are the plate dims shared by every sample site, over which
    the log-weights factorize (empty when some site lies outside them).
    """

    guide_trace: pyro.poutine.Trace
    model_trace: pyro.poutine.Trace
    num_particles: int
    particle_dim: int
    factor_dims: tuple[int, ...]

    def sites(self, trace, *, observed=None):
        """Sample sites of ``trace`` (all, or only observed/latent ones)."""
        return [
            site
            for site in trace.nodes.values()
            if is_sample_site(site) and (observed is None or site["is_observed"] == observed)
        ]

    def reduce(self, log_prob):
        """Sum a site's log-density over all batch dims but the particle and factor dims.

        Returns a tensor of shape ``(K, *factor_sizes)`` (a size 1 where the site does not reach a dim).
        """
        return reduce_to_factors(log_prob, self.particle_dim, self.factor_dims)

    def reduce_max(self, values):
        """Like :meth:`reduce`, with the maximum in place of the sum."""
        return reduce_to_factors(values, self.particle_dim, self.factor_dims, reduction=torch.amax)

    def zeros(self):
        """A zero log-density of every particle and factor, ``(K, *factor_sizes)``."""
        sites = self.sites(self.model_trace) + self.sites(self.guide_trace)
        like = next((s["value"] for s in sites if s["value"].is_floating_point()), None)
        options = {"dtype": like.dtype, "device": like.device} if like is not None else {}
        shape = (self.num_particles, *self.factor_sizes())
        return torch.zeros(shape, **options)

    def factor_sizes(self):
        """The sizes of the factor plates, as the sites broadcast to them (a size-less ``pyro.plate`` has
        no size of its own)."""
        sizes = dict.fromkeys(self.factor_dims, 1)
        for trace in (self.model_trace, self.guide_trace):
            for site in self.sites(trace):
                shape = site_batch_shape(site)
                for dim in self.factor_dims:
                    if len(shape) >= -dim:
                        sizes[dim] = max(sizes[dim], shape[dim])
        return tuple(sizes[d] for d in self.factor_dims)


def site_batch_shape(site):
    """The batch shape of a site's value and distribution together (an observation may broadcast its
    distribution)."""
    value = site["value"]
    return torch.broadcast_shapes(site["fn"].batch_shape, value.shape[: value.dim() - site["fn"].event_dim])


def site_structure(particles):
    """The pair's site set: ``(guide sites, model latents, model observations)`` by name. A program whose
    data change its sites (a label observed in one batch, drawn in the next) has one structure per kind."""
    model = [site for site in particles.sites(particles.model_trace) if not _summed_out(site)]
    return (
        frozenset(site["name"] for site in particles.sites(particles.guide_trace)),
        frozenset(site["name"] for site in model if not site["is_observed"]),
        frozenset(site["name"] for site in model if site["is_observed"]),
    )


def _summed_out(site):
    """A site enumeration sums out of the particles (drawn by the probe), or the factor that holds the sum."""
    return site["infer"].get("summed_out", False) or (
        not site["is_observed"] and site["infer"].get("enumerate") == "parallel"
    )


def reduce_to_factors(log_prob, particle_dim, factor_dims, *, reduction=torch.sum):
    """Reduce ``log_prob`` (batch dims only) over all dims right of ``particle_dim`` but ``factor_dims``
    (a sum, or ``reduction``); shape ``(K, *factor_sizes)``."""
    ndim = -particle_dim
    if log_prob.dim() > ndim:
        raise ValueError(
            f"a log-density of shape {tuple(log_prob.shape)} has more batch dims than the {ndim - 1} plate dims "
            "declared: put every batch dim of a site in a pyro.plate, or declare event dims with .to_event(...)."
        )
    log_prob = log_prob.reshape((1,) * (ndim - log_prob.dim()) + log_prob.shape)
    summed = [d for d in range(particle_dim + 1, 0) if d not in factor_dims]
    if summed:
        log_prob = reduction(log_prob, dim=summed, keepdim=True)
    return log_prob.reshape(log_prob.shape[0], *(log_prob.shape[d] for d in factor_dims))


@dataclass
class LogWeights:
    """Per-particle, per-factor log-densities: ``model`` is log p(x, z_k) and
    ``guide`` is log q(z_k | x), each of shape ``(K, *factor_sizes)``,
    unscaled; ``scale`` is the subsampling scale shared by all sites."""

    model: torch.Tensor
    guide: torch.Tensor
    scale: torch.Tensor | float

    @property
    def log_weights(self):
        return self.model - self.guide


def plate_nesting(*traces):
    """How many plate dims the sample sites of ``traces`` use."""
    dims = [
        -frame.dim
        for trace in traces
        for site in trace.nodes.values()
        if is_sample_site(site)
        for frame in site["cond_indep_stack"]
        if frame.vectorized and frame.dim is not None
    ]
    return max(dims, default=0)


def sample_particles(
    model,
    guide,
    args,
    kwargs,
    *,
    num_particles,
    max_plate_nesting,
    drawing=PATHWISE,
    vectorized=True,
    enumerated=False,
):
    """Run the guide and the model on K particles, vectorized or (``vectorized=False``) one run each.

    ``drawing`` (a :class:`~pplgen.sampling.Drawing`) says how gradients may flow through the guide's
    draws; runs one at a time keep only what a ``stackable`` drawing promises (see :mod:`pplgen.stacked`).
    With ``enumerated`` the model's enumerated sites are summed out of each particle (:mod:`pplgen.enumeration`).
    """
    if not isinstance(drawing, Drawing):
        raise TypeError(f"drawing must be a pplgen.sampling.Drawing, got {drawing!r}")
    if not vectorized and num_particles > 1:
        return _stacked_particles(model, guide, args, kwargs, num_particles, max_plate_nesting, drawing, enumerated)
    particle_dim = -max_plate_nesting - 1
    # One particle needs no plate: its log-densities get the particle dim in ``reduce``.
    particle_plate = pyro.plate(PARTICLE_PLATE, num_particles, dim=particle_dim) if num_particles > 1 else nullcontext()
    with particle_plate:
        with drawing.around_guide():
            guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
        if enumerated:
            from pplgen.enumeration import enumerate_model, sum_out  # which reads this module's site helpers

            model = enumerate_model(model, particle_dim)  # inside the replay, as TraceEnum_ELBO runs it
        replayed = poutine.replay(model, trace=drawing.for_model(guide_trace))
        model_trace = poutine.trace(replayed).get_trace(*args, **kwargs)
        if enumerated:
            factor_dims = shared_plate_dims(guide_trace, model_trace)
            model_trace = sum_out(model_trace, guide_trace, particle_dim, factor_dims)
    return Particles(guide_trace, model_trace, num_particles, particle_dim, shared_plate_dims(guide_trace, model_trace))


def _stacked_particles(model, guide, args, kwargs, num_particles, max_plate_nesting, drawing, enumerated):
    if not drawing.stackable:
        raise ValueError(f"particles drawn one run at a time cannot keep the drawing {drawing!r}")
    runs = [
        sample_particles(
            model,
            guide,
            args,
            kwargs,
            num_particles=1,
            max_plate_nesting=max_plate_nesting,
            drawing=drawing,
            enumerated=enumerated,
        )
        for _ in range(num_particles)
    ]
    return Particles(
        stack_traces([run.guide_trace for run in runs], max_plate_nesting),
        stack_traces([run.model_trace for run in runs], max_plate_nesting),
        num_particles,
        runs[0].particle_dim,
        runs[0].factor_dims,
    )


def site_log_prob(site, *, detach_params=False, scaled=False):
    """Masked log-density of a sample site at its value, times the site's scale if ``scaled``.

    Masks and scales are Pyro's: a mask is a bool or a bool tensor that
    broadcasts with the log-density, a scale a number or a tensor that does.

    Under mixed precision (``torch.autocast``) the density is computed in
    float32, outside autocast, from float32 copies of the distribution's
    parameters and of the value (for a distribution whose parameters cannot
    be told, its own density is cast), so every log-density, log-weight,
    log-sum-exp and leave-one-out term downstream is summed in float32.
    """
    fn, value = site["fn"], site["value"]
    mixed = torch.is_autocast_enabled(value.device.type)
    if mixed:
        fn, value = _with_parameters(fn, at_least_float32) or fn, at_least_float32(value)
    fn = detach_parameters(fn, site["name"]) if detach_params else fn
    with torch.autocast(value.device.type, enabled=False) if mixed else nullcontext():
        log_prob = masked(at_least_float32(fn.log_prob(value)), site["mask"])
    return site["scale"] * log_prob if scaled else log_prob


def masked(log_prob, mask):
    """``log_prob`` with zeros where ``mask`` (None, a bool, or a bool tensor) is False."""
    if mask is None or mask is True:
        return log_prob
    if mask is False:
        return torch.zeros_like(log_prob)
    return torch.where(mask, log_prob, log_prob.new_zeros(()))


def log_weights(particles, *, detach_guide_params=False):
    """Log p(x, z_k) and log q(z_k | x) per particle and factor."""
    return LogWeights(
        model_log_density(particles),
        guide_log_density(particles, detach_params=detach_guide_params),
        common_scale(particles),
    )


def model_log_density(particles, *, scaled=False):
    """log p(x, z_k), shape ``(K, *factor_sizes)``."""
    return _total(particles, particles.sites(particles.model_trace), scaled=scaled)


def site_log_densities(particles, trace, *, scaled=False):
    """``{site name: log-density}`` of every sample site of ``trace``, each ``(K, *factor_sizes)``."""
    return {site["name"]: particles.reduce(site_log_prob(site, scaled=scaled)) for site in particles.sites(trace)}


def guide_log_density(particles, *, detach_params=False, scaled=False):
    """log q(z_k | x), shape ``(K, *factor_sizes)``; with ``detach_params`` the
    guide's parameters are cut from the graph but the path through z_k is kept."""
    return _total(particles, particles.sites(particles.guide_trace), detach_params=detach_params, scaled=scaled)


def _total(particles, sites, **options):
    """Σ of the sites' log-densities per particle and factor; a zero of that shape for no site."""
    total = particles.zeros()
    for site in sites:
        total = total + particles.reduce(site_log_prob(site, **options))
    return total


def common_scale(particles):
    """The scale every site shares in each factor, a number or a ``(1, *factor_sizes)`` tensor;
    importance weights need one. Raises ``ValueError`` naming two sites that differ."""
    sites = particles.sites(particles.model_trace) + particles.sites(particles.guide_trace)
    if not sites:
        return 1.0
    scales = [(site, _factor_scale(particles, site)) for site in sites]
    first, scale = scales[0]
    for site, other in scales[1:]:
        if not _same_scale(other, scale):
            raise ValueError(
                f"site '{site['name']}' has scale {_describe(site['scale'])} but site '{first['name']}' has "
                f"{_describe(first['scale'])}: importance weights need every site of a datum scaled alike"
            )
    return scale


def _factor_scale(particles, site):
    """The site's scale per factor: a number, or a tensor ``(1, *factor_sizes)`` when it varies across factors.

    Raises ``ValueError`` when the scale varies within a factor (along a dim the weights sum over).
    """
    scale = site["scale"]
    if not isinstance(scale, torch.Tensor):
        return float(scale)
    if scale.dim() == 0:
        return scale
    ones = torch.ones(site["fn"].batch_shape, dtype=scale.dtype, device=scale.device)
    spread = scale * ones
    low = -particles.reduce_max(-spread)
    high = particles.reduce_max(spread)
    if not torch.equal(low, high):
        raise ValueError(
            f"site '{site['name']}' has a scale that varies inside a datum (along a plate that not every site "
            "shares): importance weights need one scale per datum"
        )
    return high


def _describe(scale):
    if isinstance(scale, torch.Tensor) and scale.numel() > 1:
        return f"a tensor of shape {tuple(scale.shape)}"
    return f"{float(scale):g}"


def observed_features(particles, factor_shape, dtype):
    """The observed values of each factor (datum) as one flat ``dtype`` vector, ``(*factor_shape, features)``;
    ``None`` when the model observes no site."""
    features = [
        # A per-particle observation repeats one value over the particles: keep the first.
        _per_factor(particles, site["value"].detach(), site["fn"].event_dim, factor_shape)[0]
        for site in particles.sites(particles.model_trace, observed=True)
        if is_observation(site)
    ]
    return torch.cat(features, dim=-1).to(dtype) if features else None


def latent_features(particles, trace):
    """The latent values of each particle and factor as one flat vector, ``(K, *factor_sizes, features)``."""
    sites = particles.sites(trace, observed=False)
    factor_shape = _factor_shape(particles, sites)
    features = [_per_factor(particles, site["value"], site["fn"].event_dim, factor_shape) for site in sites]
    return torch.cat([f.expand(particles.num_particles, *f.shape[1:]) for f in features], dim=-1)


def _factor_shape(particles, sites):
    ndim = -particles.particle_dim
    shapes = [(1,) * ndim + site["value"].shape[: site["value"].dim() - site["fn"].event_dim] for site in sites]
    return tuple(max(shape[d] for shape in shapes) for d in particles.factor_dims)


def _per_factor(particles, value, event_dim, factor_shape):
    """``value`` (batch dims, the particle dim leftmost, then event dims) as ``(K or 1, *factor_shape, features)``."""
    ndim = -particles.particle_dim
    value = value.reshape((1,) * (ndim - (value.dim() - event_dim)) + value.shape)
    factor_positions = [ndim + d for d in particles.factor_dims]
    value = value.movedim(factor_positions, list(range(1, len(factor_positions) + 1)))
    value = value.expand(value.shape[0], *factor_shape, *value.shape[len(factor_positions) + 1 :])
    return value.reshape(value.shape[0], *factor_shape, -1)


LOW_PRECISION = (torch.float16, torch.bfloat16)
_ALTERNATIVE_PARAMETERS = (("logits", "probs"), ("scale_tril", "covariance_matrix", "precision_matrix"))


def detach_parameters(fn, site_name):
    """The same distribution with its parameters cut from the autograd graph.

    Used where an estimator keeps the path derivative through a latent but
    drops the score of the guide's parameters (sticking the landing, DReG).
    """
    rebuilt = _with_parameters(fn, torch.Tensor.detach)
    if rebuilt is None:
        raise ValueError(
            f"site '{site_name}': cannot detach the parameters of {type(fn).__name__}; "
            "use a guide distribution with explicit parameters (Normal, MultivariateNormal, ...) "
            "or turn off the option that needs it (stl, estimator='dreg')."
        )
    return rebuilt


def _with_parameters(fn, transform):
    """The same distribution with ``transform`` applied to each of its tensor parameters, or None when it
    cannot be rebuilt from them alone (no explicit ``arg_constraints`` attributes, other constructor
    arguments, or another shape from its parameters, as Delta's ``event_dim``)."""
    if isinstance(fn, Stacked):
        runs = [_with_parameters(run, transform) for run in fn.distributions]
        return None if any(run is None for run in runs) else Stacked(runs, fn.batch_ndim)
    if isinstance(fn, (dist.Independent, dist.ExpandedDistribution, dist.MaskedDistribution)):
        base = _with_parameters(fn.base_dist, transform)
        if base is None:
            return None
        if isinstance(fn, dist.Independent):
            return base.to_event(fn.reinterpreted_batch_ndims)
        return base.expand(fn.batch_shape) if isinstance(fn, dist.ExpandedDistribution) else base.mask(fn._mask)
    given = [
        name for name in fn.arg_constraints if name in vars(fn) or isinstance(getattr(type(fn), name, None), property)
    ]
    for group in _ALTERNATIVE_PARAMETERS:
        present = [name for name in group if name in given]
        given = [name for name in given if name not in present[1:]]
    if not given:
        return None
    params = {name: getattr(fn, name) for name in given}
    try:
        rebuilt = type(fn)(
            **{k: transform(v) if isinstance(v, torch.Tensor) else v for k, v in params.items()}, validate_args=False
        )
    except (TypeError, ValueError):  # constructor arguments beyond the parameters (LKJCholesky's dim, ...)
        return None
    if rebuilt.batch_shape != fn.batch_shape or rebuilt.event_shape != fn.event_shape:  # e.g. Delta's event_dim
        return None
    return rebuilt


def at_least_float32(tensor):
    """``tensor`` in float32 when it is float16 or bfloat16 (mixed precision); as it is otherwise."""
    return tensor.float() if tensor.dtype in LOW_PRECISION else tensor


def is_sample_site(site):
    """A sample site of the program (not the index draw a plate records)."""
    return site["type"] == "sample" and not site_is_subsample(site)


def is_observation(site):
    """An observed site that holds data: not a ``pyro.factor``, ``pyro.deterministic`` or a
    reparameterizer's masked-out stand-in for a latent."""
    if not site["is_observed"] or is_auxiliary(site) or site["infer"].get("_deterministic"):
        return False
    fn = site["fn"]
    return not (isinstance(fn, dist.MaskedDistribution) and fn._mask is False)


def is_auxiliary(site):
    """A guide site that the model does not have (Pyro's ``infer={"is_auxiliary": True}``)."""
    return bool(site["infer"].get("is_auxiliary", False))


def vectorized_plates(site):
    """``{(plate name, dim)}`` of the vectorized plates (not the particle plate) the site sits in."""
    return {
        (frame.name, frame.dim)
        for frame in site["cond_indep_stack"]
        if frame.vectorized and frame.dim is not None and frame.name != PARTICLE_PLATE
    }


def shared_plate_dims(*traces):
    """The dims of the plates (not the particle plate) that every sample site of ``traces`` sits in.

    Plates are told apart by name, as Pyro does: sibling plates that reuse a
    dim are separate factors, so a dim counts only when one plate holds every site. A size-less
    ``pyro.plate(name)`` holds a site drawn once for all its rows when the site does not broadcast to
    them: that dim is no factor.
    """
    sites = [site for trace in traces for site in trace.nodes.values() if is_sample_site(site)]
    shared = set.intersection(*[vectorized_plates(site) for site in sites]) if sites else set()
    shapes = [site_batch_shape(site) for site in sites]
    return tuple(sorted(dim for _, dim in shared if len({_size_at(shape, dim) for shape in shapes}) == 1))


def _size_at(shape, dim):
    return shape[dim] if len(shape) >= -dim else 1


def _same_scale(a, b):
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        a, b = torch.broadcast_tensors(torch.as_tensor(a), torch.as_tensor(b))
        return bool(torch.equal(a, b))
    return a == b
