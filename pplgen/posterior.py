"""Draws from a fitted guide, with the names of their dimensions: what posterior diagnostics consume.

:func:`posterior_draws` runs the guide on S vectorized particles and the
model on each draw, and returns tensors whose dimensions are named after the
program's plates (``"school"``, ``"data"``) or, for event dims,
``"<site>_dim_<i>"``; the draws run along the first dimension. ArviZ sees
them only in :mod:`pplgen.diagnostics`.
"""

from dataclasses import dataclass, field

import pyro
import torch
from pyro import poutine
from pyro.infer import infer_discrete

from pplgen.checks import check_explicit_guide
from pplgen.particles import (
    PARTICLE_PLATE,
    is_sample_site,
    log_weights,
    plate_nesting,
    sample_particles,
    site_log_prob,
)
from pplgen.probe import probe_pair


@dataclass
class NamedDraws:
    """``{site: tensor}`` with ``dims[site]``, the names of each tensor's dims after the draw dim."""

    values: dict = field(default_factory=dict)
    dims: dict = field(default_factory=dict)

    def add(self, name, value, dims):
        self.values[name] = value
        self.dims[name] = dims


@dataclass
class PosteriorDraws:
    """S draws of a guide and what the model says of them.

    ``posterior``: the latents; ``posterior_predictive``: a replicated data set
    per draw (of each observed site whose distribution can draw); ``log_likelihood``: log p(x_i | z) per observation and draw;
    ``observed_data``: the observations (no draw dim); ``log_weights``:
    log p(x, z) − log q(z) per draw, shape ``(S,)``. A model's enumerated sites
    (:mod:`pplgen.enumeration`) are summed out of the log-weights, and drawn in
    ``posterior`` from their posterior given each guide draw (``infer_discrete``),
    the observations then scored and replicated given them.
    """

    posterior: NamedDraws
    posterior_predictive: NamedDraws
    log_likelihood: NamedDraws
    observed_data: NamedDraws
    log_weights: torch.Tensor


@torch.no_grad()
def posterior_draws(model, guide, args, kwargs=None, *, num_samples=1000):
    """``num_samples`` draws of ``guide`` for the programs' arguments ``args``, with the model's view of each."""
    if not isinstance(num_samples, int) or num_samples < 2:
        raise ValueError(f"num_samples must be an int >= 2, got {num_samples!r}")
    kwargs = kwargs or {}
    probe = probe_pair(model, guide, args, kwargs)
    check_explicit_guide(
        probe, "a posterior summary with importance log-weights", "use pplgen.evaluate.ais for log p(x)"
    )
    nesting = probe.max_plate_nesting
    options = {"num_particles": num_samples, "max_plate_nesting": nesting, "enumerated": bool(probe.enumerated)}
    particles = sample_particles(model, guide, args, kwargs, **options)
    draws = PosteriorDraws(NamedDraws(), NamedDraws(), NamedDraws(), NamedDraws(), _total_log_weights(particles))
    model_trace = particles.model_trace
    if probe.enumerated:
        model_trace = _discrete_posterior(model, particles, args, kwargs)
    for site in particles.sites(model_trace):
        value, dims = named_value(site, site["value"], nesting, draws=num_samples)
        if not site["is_observed"]:
            draws.posterior.add(site["name"], value, dims)
            continue
        try:
            predictive = site["fn"].sample()
        except NotImplementedError:  # a distribution that only scores observations (e.g. a bag of words)
            predictive = None
        if predictive is not None:
            draws.posterior_predictive.add(site["name"], *named_value(site, predictive, nesting, draws=num_samples))
        log_likelihood = site_log_prob(site)
        draws.log_likelihood.add(
            site["name"], *named_value(site, log_likelihood, nesting, draws=num_samples, event=False)
        )
        draws.observed_data.add(site["name"], *named_value(site, site["value"], nesting, draws=None))
    return draws


def _discrete_posterior(model, particles, args, kwargs):
    """The model's trace at each guide draw with its enumerated sites drawn from their posterior given that
    draw and the data (Pyro's ``infer_discrete``, temperature 1), so each draw's observations are scored given
    its discrete sites."""
    replayed = poutine.replay(model, trace=particles.guide_trace)

    def at_each_draw(*args, **kwargs):
        with pyro.plate(PARTICLE_PLATE, particles.num_particles, dim=particles.particle_dim):
            return replayed(*args, **kwargs)

    discrete = infer_discrete(at_each_draw, first_available_dim=particles.particle_dim - 1, temperature=1)
    return poutine.trace(discrete).get_trace(*args, **kwargs)


def named_value(site, value, nesting, *, draws, event=True):
    """``value`` of a site (batch dims, then event dims if ``event``) with its plate dims named and the dims
    of plates it is not in dropped; with ``draws``, a leading draw dim of that size."""
    event_dim = site["fn"].event_dim if event else 0
    batch_ndim = nesting + (draws is not None)
    value = value.reshape((1,) * (batch_ndim + event_dim - value.dim()) + value.shape)
    plates = {
        frame.dim: frame.name for frame in site["cond_indep_stack"] if frame.vectorized and frame.name != PARTICLE_PLATE
    }
    names, index = [], []
    for position in range(batch_ndim):
        dim = position - batch_ndim
        if draws is not None and position == 0:
            index.append(slice(None))
        elif dim in plates:
            names.append(plates[dim])
            index.append(slice(None))
        else:
            index.append(0)
    value = value[tuple(index)]
    if draws is not None and value.shape[0] != draws:
        value = value.expand(draws, *value.shape[1:])
    names += [f"{site['name']}_dim_{i}" for i in range(event_dim)]
    return value, names


def program_dims(model, args, kwargs=None):
    """``{site: dim names}`` of the model's sample sites (no draw dim), from one run of the model."""
    with torch.no_grad(), poutine.block():
        trace = poutine.trace(model).get_trace(*args, **(kwargs or {}))
    nesting = plate_nesting(trace)
    return {
        name: named_value(site, site["value"], nesting, draws=None)[1]
        for name, site in trace.nodes.items()
        if is_sample_site(site)
    }


def _total_log_weights(particles):
    """log p(x, z_s) − log q(z_s) of the whole program per draw ``(S,)`` (summed over every plate)."""
    weights = log_weights(particles)
    total = weights.scale * weights.log_weights
    return total.reshape(total.shape[0], -1).sum(-1)
