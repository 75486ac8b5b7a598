"""Particles drawn one run at a time, stacked as if drawn at once.

Some programs do not broadcast over a particle dim left of their plates
(``Normal(loc, 1).expand(x.shape)``, ``locs[k]``, ``z.unsqueeze(-1) * w``):
Pyro runs such programs once per particle (``vectorize_particles=False``).
:func:`stack_traces` turns K such runs into one trace whose sites carry a
leading particle dim, so every engine reads them as it reads vectorized
particles. Each stacked site's distribution is a :class:`Stacked` of the K
runs' distributions, scoring each particle's value under its own run.

Gradients reach parameters through each run's graph; what is lost is the
value of one site as an input of another run's densities, so estimators
that differentiate with respect to latents (DReG, dependency probes) need
vectorized particles.
"""

import torch
from pyro import poutine
from pyro.distributions import TorchDistribution
from pyro.poutine.util import site_is_subsample


class Stacked(TorchDistribution):
    """K distributions, one per particle, as one with a leading particle dim.

    ``batch_ndim`` is the number of batch dims each run's sites are padded to
    (the program's plate nesting), so the particle dim sits left of them all.
    """

    arg_constraints = {}

    def __init__(self, distributions, batch_ndim):
        self.distributions = list(distributions)
        self.batch_ndim = batch_ndim
        first = self.distributions[0]
        shapes = [_padded(d.batch_shape, batch_ndim) for d in self.distributions]
        batch_shape = (len(self.distributions), *torch.broadcast_shapes(*shapes))
        super().__init__(batch_shape, first.event_shape, validate_args=False)

    @property
    def has_rsample(self):
        return all(d.has_rsample for d in self.distributions)

    @property
    def support(self):
        return self.distributions[0].support

    def log_prob(self, value):
        scores = [d.log_prob(v) for d, v in zip(self.distributions, value.unbind(0))]
        return torch.stack(torch.broadcast_tensors(*[s.reshape(_padded(s.shape, self.batch_ndim)) for s in scores]))

    def sample(self, sample_shape=torch.Size()):
        return self._stack([d.sample(sample_shape) for d in self.distributions])

    def rsample(self, sample_shape=torch.Size()):
        return self._stack([d.rsample(sample_shape) for d in self.distributions])

    def _stack(self, values):
        return stack_values(values, self.event_dim, self.batch_ndim)

    def map(self, function):
        """The same stack with ``function`` applied to each run's distribution."""
        return Stacked([function(d) for d in self.distributions], self.batch_ndim)


def stack_values(values, event_dim, batch_ndim):
    """Values of K runs (batch dims, then ``event_dim`` event dims) stacked on a new particle dim 0,
    each run's batch dims padded on the left to ``batch_ndim``."""
    padded = []
    for value in values:
        batch_shape = value.shape[: value.dim() - event_dim]
        padded.append(value.reshape(_padded(batch_shape, batch_ndim) + value.shape[value.dim() - event_dim :]))
    return torch.stack(torch.broadcast_tensors(*padded))


def stack_traces(traces, batch_ndim):
    """One trace of K runs' traces; raises ``ValueError`` when the runs drew different sites."""
    names = [tuple(name for name, site in trace.nodes.items() if site["type"] == "sample") for trace in traces]
    if any(n != names[0] for n in names[1:]):
        differing = sorted(set(names[0]).symmetric_difference(*names[1:]))
        raise ValueError(
            f"the program drew different sample sites on different runs ({differing[:3]}), so its particles "
            "cannot be drawn one run at a time and stacked"
        )
    stacked = poutine.Trace()
    for name, site in traces[0].nodes.items():
        if site["type"] == "sample" and not site_is_subsample(site):
            runs = [trace.nodes[name] for trace in traces]
            fn = Stacked([run["fn"] for run in runs], batch_ndim)
            site = {**site, "fn": fn, "value": stack_values([run["value"] for run in runs], fn.event_dim, batch_ndim)}
        stacked.add_node(name, **site)
    return stacked


def _padded(shape, ndim):
    return torch.Size((1,) * (ndim - len(shape)) + tuple(shape))
