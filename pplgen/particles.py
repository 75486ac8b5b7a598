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
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_subsample

PARTICLE_PLATE = "_particles"

#: How the model sees the guide's latents (``sample_particles(latents=...)``):
#: ``"pathwise"`` as drawn, so gradients flow through reparameterized draws;
#: ``"model_leaves"`` as detached leaves that require grad, in the model only
#: (the guide keeps its path, as DReG needs); ``"detached"`` cut from the graph
#: as they are drawn, in guide and model alike (score-function estimators);
#: ``"leaves"`` cut as they are drawn but requiring grad, so autograd can tell
#: which densities each latent reaches.
LATENT_MODES = ("pathwise", "model_leaves", "detached", "leaves")


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

        Returns a tensor of shape ``(K, *factor_sizes)``.
        """
        return reduce_to_factors(log_prob, self.particle_dim, self.factor_dims)


def reduce_to_factors(log_prob, particle_dim, factor_dims):
    """Sum ``log_prob`` (batch dims only) over all dims right of ``particle_dim`` but ``factor_dims``;
    shape ``(K, *factor_sizes)``."""
    ndim = -particle_dim
    log_prob = log_prob.reshape((1,) * (ndim - log_prob.dim()) + log_prob.shape)
    summed = [d for d in range(particle_dim + 1, 0) if d not in factor_dims]
    if summed:
        log_prob = log_prob.sum(dim=summed, keepdim=True)
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


def guess_max_plate_nesting(model, guide, args, kwargs):
    """How many plate dims the program uses, found by running it once."""
    with poutine.block():
        guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*args, **kwargs)
    return plate_nesting(guide_trace, model_trace)


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


class DetachLatents(Messenger):
    """Cuts each latent from the autograd graph as it is drawn.

    Placed *outside* ``poutine.trace``, so the trace and everything the program
    computes from the draw see the detached value. With ``requires_grad`` the
    detached value is a fresh leaf that requires grad (floating-point draws only).
    """

    def __init__(self, requires_grad=False):
        super().__init__()
        self.requires_grad = requires_grad

    def _pyro_post_sample(self, msg):
        if msg["is_observed"] or site_is_subsample(msg):
            return
        value = msg["value"].detach()
        msg["value"] = value.requires_grad_() if self.requires_grad and value.is_floating_point() else value


def sample_particles(model, guide, args, kwargs, *, num_particles, max_plate_nesting, latents="pathwise"):
    """Run the guide and the model on K vectorized particles.

    ``latents`` (one of :data:`LATENT_MODES`) says how gradients may flow
    through the guide's draws.
    """
    if latents not in LATENT_MODES:
        raise ValueError(f"latents must be one of {LATENT_MODES}, got {latents!r}")
    particle_dim = -max_plate_nesting - 1
    # One particle needs no plate: its log-densities get the particle dim in ``reduce``.
    particle_plate = pyro.plate(PARTICLE_PLATE, num_particles, dim=particle_dim) if num_particles > 1 else nullcontext()
    cut = DetachLatents(requires_grad=latents == "leaves") if latents in ("detached", "leaves") else nullcontext()
    with particle_plate:
        with cut:
            guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
        replayed = _detached_leaves(guide_trace) if latents == "model_leaves" else guide_trace
        model_trace = poutine.trace(poutine.replay(model, trace=replayed)).get_trace(*args, **kwargs)
    return Particles(guide_trace, model_trace, num_particles, particle_dim, shared_plate_dims(guide_trace, model_trace))


def site_log_prob(site, *, detach_params=False):
    """Unscaled, masked log-density of a sample site at its value."""
    fn = detach_parameters(site["fn"], site["name"]) if detach_params else site["fn"]
    log_prob = fn.log_prob(site["value"])
    if site["mask"] is not None:
        log_prob = log_prob.masked_fill(~site["mask"], 0.0)
    return log_prob


def log_weights(particles, *, detach_guide_params=False):
    """Log p(x, z_k) and log q(z_k | x) per particle and factor."""
    return LogWeights(
        model_log_density(particles),
        guide_log_density(particles, detach_params=detach_guide_params),
        common_scale(particles),
    )


def model_log_density(particles):
    """log p(x, z_k), shape ``(K, *factor_sizes)``."""
    return sum(particles.reduce(site_log_prob(s)) for s in particles.sites(particles.model_trace))


def site_log_densities(particles, trace):
    """``{site name: log-density}`` of every sample site of ``trace``, each ``(K, *factor_sizes)``."""
    return {site["name"]: particles.reduce(site_log_prob(site)) for site in particles.sites(trace)}


def guide_log_density(particles, *, detach_params=False):
    """log q(z_k | x), shape ``(K, *factor_sizes)``; with ``detach_params`` the
    guide's parameters are cut from the graph but the path through z_k is kept."""
    return sum(
        particles.reduce(site_log_prob(s, detach_params=detach_params))
        for s in particles.sites(particles.guide_trace)
    )


def common_scale(particles):
    """The subsampling scale every site shares; importance weights need one."""
    sites = particles.sites(particles.model_trace) + particles.sites(particles.guide_trace)
    scale = sites[0]["scale"]
    for site in sites[1:]:
        if not _same_scale(site["scale"], scale):
            raise ValueError(
                f"site '{site['name']}' has scale {site['scale']} but site '{sites[0]['name']}' has {scale}: "
                "importance weights need every site scaled alike. Put all sites in the same "
                "subsampled plate, or drop the extra poutine.scale."
            )
    return scale


def observed_features(particles, factor_shape, dtype):
    """The observed values of each factor (datum) as one flat ``dtype`` vector, ``(*factor_shape, features)``;
    ``None`` when the model observes no site."""
    features = [
        # A per-particle observation repeats one value over the particles: keep the first.
        _per_factor(particles, site["value"].detach(), site["fn"].event_dim, factor_shape)[0]
        for site in particles.sites(particles.model_trace, observed=True)
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


def log_mean_exp(log_values, dim=0):
    """log (1/K) Σ_k exp(v_k), stable."""
    count = torch.tensor(float(log_values.shape[dim]), device=log_values.device, dtype=log_values.dtype)
    return torch.logsumexp(log_values, dim=dim) - count.log()


def effective_sample_size(log_weights):
    """1 / Σ_k w̃_k² of the self-normalized weights (particles along dim 0), averaged over factors."""
    normalized = torch.softmax(log_weights.detach(), dim=0)
    return (1.0 / normalized.pow(2).sum(0)).mean()


def leave_one_out_log_mean_exp(log_values):
    """For each k, log (1/K) Σ_j exp(v_j) with v_k replaced by the mean of the others.

    The geometric mean of the other weights stands in for w_k (Mnih & Rezende
    2016), so the result does not depend on particle k. Dim 0 holds the K ≥ 2
    particles; the result has the input's shape.
    """
    count = log_values.shape[0]
    if count < 2:
        raise ValueError(f"the leave-one-out estimate needs at least 2 particles, got {count}")
    others_mean = (log_values.sum(0, keepdim=True) - log_values) / (count - 1)
    # Row k of ``swapped`` is v with its k-th entry replaced by the mean of the others.
    eye = torch.eye(count, dtype=torch.bool, device=log_values.device).reshape(count, count, *[1] * (log_values.dim() - 1))
    swapped = torch.where(eye, others_mean.unsqueeze(1), log_values.unsqueeze(0))
    return log_mean_exp(swapped, dim=1)


_ALTERNATIVE_PARAMETERS = (("logits", "probs"), ("scale_tril", "covariance_matrix", "precision_matrix"))


def detach_parameters(fn, site_name):
    """The same distribution with its parameters cut from the autograd graph.

    Used where an estimator keeps the path derivative through a latent but
    drops the score of the guide's parameters (sticking the landing, DReG).
    """
    if isinstance(fn, dist.Independent):
        return detach_parameters(fn.base_dist, site_name).to_event(fn.reinterpreted_batch_ndims)
    if isinstance(fn, dist.ExpandedDistribution):
        return detach_parameters(fn.base_dist, site_name).expand(fn.batch_shape)
    if isinstance(fn, dist.MaskedDistribution):
        return detach_parameters(fn.base_dist, site_name).mask(fn._mask)
    given = [
        name
        for name in fn.arg_constraints
        if name in vars(fn) or isinstance(getattr(type(fn), name, None), property)
    ]
    for group in _ALTERNATIVE_PARAMETERS:
        present = [name for name in group if name in given]
        given = [name for name in given if name not in present[1:]]
    if not given:
        raise ValueError(
            f"site '{site_name}': cannot detach the parameters of {type(fn).__name__}; "
            "use a guide distribution with explicit parameters (Normal, MultivariateNormal, ...) "
            "or turn off the option that needs it (stl, estimator='dreg')."
        )
    params = {name: getattr(fn, name).detach() for name in given}
    return type(fn)(**params, validate_args=False)


def _detached_leaves(trace):
    copy = poutine.Trace()
    for name, site in trace.nodes.items():
        site = site.copy()
        if site["type"] == "sample" and not site["is_observed"]:
            site["value"] = site["value"].detach().requires_grad_(site["value"].is_floating_point())
        copy.add_node(name, **site)
    return copy


def is_sample_site(site):
    """A sample site of the program (not the index draw a plate records)."""
    return site["type"] == "sample" and not site_is_subsample(site)


def is_auxiliary(site):
    """A guide site that the model does not have (Pyro's ``infer={"is_auxiliary": True}``)."""
    return bool(site["infer"].get("is_auxiliary", False))


def _plate_dims(site):
    return {
        frame.dim
        for frame in site["cond_indep_stack"]
        if frame.vectorized and frame.dim is not None and frame.name != PARTICLE_PLATE
    }


def shared_plate_dims(*traces):
    """The plate dims (not the particle plate's) that every sample site of ``traces`` sits in."""
    dim_sets = [_plate_dims(site) for trace in traces for site in trace.nodes.values() if is_sample_site(site)]
    shared = set.intersection(*dim_sets) if dim_sets else set()
    return tuple(sorted(shared))


def _same_scale(a, b):
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return bool(torch.equal(torch.as_tensor(a), torch.as_tensor(b)))
    return a == b
