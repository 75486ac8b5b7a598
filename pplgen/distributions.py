"""Implicit distributions: known through a sampler, without a density.

An adversarial guide (Mescheder et al. 2017) draws its latent by a network
of the data and injected noise, z = g_φ(x, ε), ε ~ p(ε), and has no tractable
log q(z | x). :class:`Implicit` is that sampler as a Pyro distribution::

    noise = dist.Normal(x.new_zeros(noise_dim), 1.0).to_event(1)
    pyro.sample("z", Implicit(noise, lambda eps: sampler(x, eps), event_shape=(latent_dim,)))

It is a distribution rather than a ``Delta`` with a flag because the noise
must follow the plates: the particle plate of a vectorized engine expands a
site's distribution to ``(K, batch)``, and only a distribution that owns its
noise can draw K independent ε per datum (a ``Delta`` would repeat one value K
times). ``rsample`` is reparameterized, so gradients reach φ through ε's
push-forward; ``log_prob`` raises. Engines that need log q refuse such a site
before training (see :func:`pplgen.checks.check_explicit_guide`); ``avb``
trains it, and :func:`pplgen.evaluate.ais` scores the model without it.
"""

import pyro.distributions as dist
import torch
from pyro.distributions.torch_distribution import TorchDistribution
from torch.distributions import constraints


class ImplicitDensityError(NotImplementedError):
    """``log_prob`` was asked of a distribution that has no density."""


class Implicit(TorchDistribution):
    """The push-forward of ``noise`` through ``transform``.

    :param noise: the noise distribution p(ε); its batch shape is this
        distribution's batch shape.
    :param transform: maps ε of shape ``batch_shape + noise.event_shape`` to a
        sample of shape ``batch_shape + event_shape``; it must broadcast over
        any leading batch dims (plates expand them).
    :param event_shape: the event shape of a sample.
    """

    arg_constraints = {}
    has_rsample = True

    def __init__(self, noise, transform, event_shape=()):
        if not isinstance(noise, torch.distributions.Distribution) or not noise.has_rsample:
            raise ValueError(f"Implicit needs a reparameterizable noise distribution (with rsample), got {noise!r}")
        if not callable(transform):
            raise TypeError(f"Implicit's transform must be callable, got {type(transform).__name__}")
        self.noise = noise
        self.transform = transform
        super().__init__(noise.batch_shape, torch.Size(event_shape), validate_args=False)

    @property
    def support(self):
        return constraints.independent(constraints.real, len(self.event_shape))

    def rsample(self, sample_shape=torch.Size()):
        value = self.transform(self.noise.rsample(sample_shape))
        expected = torch.Size(sample_shape) + self.batch_shape + self.event_shape
        if value.shape != expected:
            raise ValueError(
                f"Implicit's transform returned shape {tuple(value.shape)} for noise of batch shape "
                f"{tuple(torch.Size(sample_shape) + self.batch_shape)}; expected {tuple(expected)} "
                f"(batch shape + event_shape={tuple(self.event_shape)}). Make the transform broadcast over leading dims."
            )
        return value

    def sample(self, sample_shape=torch.Size()):
        with torch.no_grad():
            return self.rsample(sample_shape)

    def expand(self, batch_shape, _instance=None):
        return Implicit(self.noise.expand(torch.Size(batch_shape)), self.transform, self.event_shape)

    def log_prob(self, value):
        raise ImplicitDensityError(
            "an Implicit distribution has no density: train it with the 'avb' engine and evaluate the model "
            "with pplgen.evaluate.ais"
        )


def is_implicit(fn):
    """Whether ``fn`` is an :class:`Implicit`, possibly wrapped (``to_event``, ``expand``, ``mask``)."""
    while isinstance(fn, (dist.Independent, dist.ExpandedDistribution, dist.MaskedDistribution)):
        fn = fn.base_dist
    return isinstance(fn, Implicit)
