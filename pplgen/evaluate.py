"""Held-out evaluation: the numbers the literature reports.

:func:`log_likelihood` is the importance-sampled estimate of log p(x) per
datum (Burda et al. 2016, the "test log-likelihood" of the VAE, IWAE, NVIL,
VIMCO papers)::

    log p(x) ≈ log (1/K) Σ_k p(x, z_k) / q(z_k | x),   z_k ~ q(z | x)

a stochastic lower bound whose gap closes as K grows. :func:`elbo` is the
per-datum evidence lower bound (the K = 1 case, averaged over samples).
:func:`ais` (annealed importance sampling, :mod:`pplgen.annealing`) needs no
guide: it is the estimate for implicit guides, which have no q(z | x), and a
tighter check of the importance-sampled one, at a much higher cost.

Both run vectorized over particles in chunks, so K = 5000 on 1,000 MNIST
images needs only a few hundred MiB at a time, and both need the program's
sites to share one data plate (so log-weights factorize per datum).
"""

import math
from collections.abc import Callable, Mapping

import torch
from pyro import poutine

from pplgen.annealing import ais
from pplgen.checks import check_explicit_guide, draw_particles
from pplgen.distributed import all_reduce_sum_, rank, world_size
from pplgen.distributions import is_implicit
from pplgen.particles import is_sample_site, log_weights, sample_particles
from pplgen.probe import Probe, probe_pair
from pplgen.programs import model_and_guide, no_guide

__all__ = ["ais", "elbo", "held_out_scores", "implicit_sites", "log_likelihood"]

#: AIS settings of :func:`held_out_scores` for guides with implicit sites.
DEFAULT_AIS_OPTIONS = {"num_steps": 100, "num_chains": 8}


@torch.no_grad()
def log_likelihood(
    model: Callable | torch.nn.Module,
    data: torch.Tensor,
    *,
    guide: Callable | None = None,
    num_samples: int = 5000,
    batch_size: int = 100,
    particle_chunk: int = 500,
    plan: Probe | None = None,
) -> torch.Tensor:
    """Importance-sampled log p(x) for each datum of ``data``, shape ``(N,)``.

    :param model: a Pyro model, or an object with ``.model`` and ``.guide``.
    :param data: tensor of shape ``(N, ...)``; each batch is passed as the
        programs' single argument.
    :param guide: the guide, when ``model`` is a bare program.
    :param num_samples: K, importance samples per datum.
    :param batch_size: data per pass.
    :param particle_chunk: particles per pass; lower it to save memory.
    :param plan: the pair's probe (:mod:`pplgen.probe`) when one is at hand, e.g. ``result.engine.plan``
        after :func:`pplgen.fit`: the pair is then not probed again.
    """
    scorer = _Scorer(model, guide, data, batch_size=batch_size, particle_chunk=particle_chunk, plan=plan)
    return scorer.log_likelihood(num_samples)


@torch.no_grad()
def elbo(
    model: Callable | torch.nn.Module,
    data: torch.Tensor,
    *,
    guide: Callable | None = None,
    num_samples: int = 1,
    batch_size: int = 100,
    particle_chunk: int = 500,
    plan: Probe | None = None,
) -> torch.Tensor:
    """The evidence lower bound E_q[log p(x, z) − log q(z | x)] per datum, shape ``(N,)``,
    estimated with ``num_samples`` particles (``plan`` as in :func:`log_likelihood`)."""
    scorer = _Scorer(model, guide, data, batch_size=batch_size, particle_chunk=particle_chunk, plan=plan)
    return scorer.elbo(num_samples)


def implicit_sites(guide, *args, **kwargs):
    """Names of the guide's sites drawn by an :class:`~pplgen.distributions.Implicit` sampler (no density)."""
    with torch.no_grad(), poutine.block():
        trace = poutine.trace(guide).get_trace(*args, **kwargs)
    return _implicit(trace)


def _implicit(trace):
    return [name for name, site in trace.nodes.items() if is_sample_site(site) and is_implicit(site["fn"])]


class _Scorer:
    """Log-weights of particle chunks for batches of data, from one plan of the pair.

    The plan is the probe given (a fit's), else one probe of the pair on the first batch; whether particles
    run at once is tried once and kept in the plan."""

    def __init__(self, model, guide, data, *, batch_size, particle_chunk, plan=None):
        _check_positive(batch_size=batch_size, particle_chunk=particle_chunk)
        if not isinstance(data, torch.Tensor):
            raise TypeError(f"data must be a tensor of shape (N, ...), got {type(data).__name__}")
        self.model, self.guide = model_and_guide(model, guide)
        self.data = data
        self.batch_size = batch_size
        self.particle_chunk = particle_chunk
        self.plan = probe_pair(self.model, self.guide, (data[:batch_size],), {}) if plan is None else plan
        self.implicit = _implicit(self.plan.guide_trace)

    def log_likelihood(self, num_samples):
        """Importance-sampled log p(x) per datum with ``num_samples`` particles."""
        results = []
        for batch in self._batches(num_samples):
            chunks = [self(batch, size) for size in self._chunk_sizes(num_samples)]
            total = torch.logsumexp(torch.stack([torch.logsumexp(c, 0) for c in chunks]), 0)
            results.append(total - math.log(num_samples))
        return torch.cat(results)

    def elbo(self, num_samples):
        """The ELBO per datum, averaged over ``num_samples`` particles."""
        results = []
        for batch in self._batches(num_samples):
            total = sum(self(batch, size).sum(0) for size in self._chunk_sizes(num_samples))
            results.append(total / num_samples)
        return torch.cat(results)

    def _batches(self, num_samples):
        _check_positive(num_samples=num_samples)
        check_explicit_guide(
            self.plan, "importance sampling", "estimate log p(x) with pplgen.evaluate.ais(model, data)"
        )
        return self.data.split(self.batch_size)

    def _chunk_sizes(self, num_samples):
        return [min(self.particle_chunk, num_samples - s) for s in range(0, num_samples, self.particle_chunk)]

    def __call__(self, batch, num_particles):
        """log p(x, z_k) − log q(z_k | x), shape ``(num_particles, len(batch))``. The first particles of a
        one-particle engine's plan are tried at once (or one run each), and the plan keeps the verdict."""
        nesting = self.plan.max_plate_nesting
        if self.plan.vectorized is None and num_particles > 1:
            particles, self.plan.vectorized = draw_particles(
                self.model,
                self.guide,
                (batch,),
                {},
                "importance sampling",
                nesting,
                num_particles=num_particles,
                enumerated=bool(self.plan.enumerated),
            )
        else:
            particles = sample_particles(
                self.model,
                self.guide,
                (batch,),
                {},
                num_particles=num_particles,
                max_plate_nesting=nesting,
                vectorized=self.plan.vectorized is not False,
                enumerated=bool(self.plan.enumerated),
            )
        if len(particles.factor_dims) != 1:
            raise ValueError(
                "per-datum evaluation needs every sample site of model and guide inside one data plate "
                f"(found shared plate dims {particles.factor_dims}); put the batch in pyro.plate('data', N)."
            )
        weights = log_weights(particles).log_weights
        if weights.shape[1] != len(batch):
            raise ValueError(
                f"the data plate has size {weights.shape[1]} but the batch has {len(batch)} rows; "
                "the plate must run over the first dim of the data."
            )
        return weights


def _check_positive(**values):
    for name, value in values.items():
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")


@torch.no_grad()
def held_out_scores(
    model: Callable,
    guide: Callable,
    data: torch.Tensor,
    num_samples: int,
    ais_options: Mapping | None = None,
    plan: Probe | None = None,
) -> dict:
    """Mean per-datum ``log_likelihood`` and ``elbo`` of ``data``, and the ``estimator`` used.

    Importance sampling with ``num_samples`` particles, both scores from one
    plan (``plan``, a fit's probe, or one probe of the pair); for a guide with
    implicit sites or none (:func:`pplgen.programs.no_guide`, the models
    ``gan`` trains), :func:`ais` with ``ais_options`` (default
    :data:`DEFAULT_AIS_OPTIONS`) and no ELBO. In a multi-process run each rank
    scores its shard of ``data`` and the means are of all of it.
    """
    mine = data.tensor_split(world_size())[rank()]
    scorer = None if guide is no_guide else _Scorer(model, guide, mine, batch_size=100, particle_chunk=500, plan=plan)
    if scorer is None or scorer.implicit:
        options = {**DEFAULT_AIS_OPTIONS, **(ais_options or {})}
        (log_p,) = _data_means([ais(model, mine, **options)], len(data))
        reason = "no guide" if scorer is None else f"guide site '{scorer.implicit[0]}' is implicit, with no density"
        estimator = f"ais ({options['num_steps']} steps, {options['num_chains']} chains): {reason} to importance-sample"
        return {"log_likelihood": log_p, "elbo": None, "estimator": estimator}
    log_p, bound = _data_means([scorer.log_likelihood(num_samples), scorer.elbo(1)], len(data))
    return {"log_likelihood": log_p, "elbo": bound, "estimator": f"importance sampling (K={num_samples})"}


def _data_means(per_datum, size):
    """Means over all ranks' data of per-datum scores (each rank holding those of its shard)."""
    dtype = torch.float32 if per_datum[0].device.type == "mps" else torch.float64  # MPS has no float64
    sums = torch.stack([scores.sum(dtype=dtype) for scores in per_datum])
    return (all_reduce_sum_(sums) / size).tolist()
