"""Sigmoid belief networks and the Helmholtz machine as Pyro models and guides.

A sigmoid belief net (Neal 1992) is a top-down stack of layers of binary
units. With layers h_1 (next to the data) … h_L (top)::

    h_L ~ Bernoulli(σ(b)),   h_{l-1} | h_l ~ Bernoulli(σ(f_l(h_l))),   x | h_1 ~ Bernoulli(σ(f_1(h_1)))

where each f_l is affine (``nonlinear=False``, Neal's logistic-linear
conditionals) or an MLP with tanh hidden layers (``nonlinear=True``, the
"nonlinear" SBN of the MuProp, REBAR and ARM benchmarks). The guide is the
recognition network of the same depth, bottom-up and layer-wise Bernoulli::

    q(h | x) = Π_l q(h_l | h_{l-1}),   h_0 = x,   q(h_l | h_{l-1}) = Bernoulli(σ(g_l(h_{l-1})))

Sites are named ``"h1"`` … ``"hL"`` and ``"x"``; every site sits in
``pyro.plate("data")``, so particles vectorize and a subsampled plate scales
each term alike. No latent has ``rsample``: train with ``nvil``, ``vimco``,
``rws`` or ``wake_sleep``::

    sbn = SigmoidBeliefNet(layers=(200, 200))
    pplgen.fit(sbn, pplgen.inference.get("vimco", num_particles=5), data)

:class:`HelmholtzMachine` is a configuration of :class:`SigmoidBeliefNet`,
not a separate implementation: the machine of Dayan, Hinton, Neal & Zemel
(1995) is exactly a logistic-linear generative net with a logistic-linear
recognition net of the same shape.
"""

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule
from torch import nn

from pplgen.nn import mlp


class SigmoidBeliefNet(PyroModule):
    """A sigmoid belief net with a layered recognition network.

    :param layers: stochastic layer sizes from the data upwards, e.g.
        ``(200, 200)`` for the "200-200" net of the literature.
    :param observed: size of a flattened binary datum (784 for MNIST).
    :param nonlinear: MLP conditionals instead of affine ones, in both the
        generative and the recognition network.
    :param hidden: the tanh hidden layer sizes inside each nonlinear conditional.
    """

    def __init__(self, layers=(200, 200, 200), observed=784, nonlinear=False, hidden=(200, 200)):
        super().__init__()
        layers = tuple(layers)
        if not layers or not all(isinstance(n, int) and n > 0 for n in layers):
            raise ValueError(f"layers must be a non-empty sequence of positive ints, got {layers!r}")
        if not isinstance(observed, int) or observed < 1:
            raise ValueError(f"observed must be a positive int, got {observed!r}")
        self.layers = layers
        self.observed = observed
        self.nonlinear = bool(nonlinear)
        self.hidden = tuple(hidden)
        sizes = (observed, *layers)
        self.prior_logits = nn.Parameter(torch.zeros(layers[-1]))
        # generative[i] maps layer i+1 down to layer i (layer 0 is x); recognition[i] maps layer i up to i+1.
        self.generative = nn.ModuleList(self._conditional(sizes[i + 1], sizes[i]) for i in range(len(layers)))
        self.recognition = nn.ModuleList(self._conditional(sizes[i], sizes[i + 1]) for i in range(len(layers)))

    def _conditional(self, n_in, n_out):
        if self.nonlinear:
            return mlp((n_in, *self.hidden, n_out), "tanh")
        return nn.Linear(n_in, n_out)

    @property
    def latent_names(self):
        """Site names from the data upwards: ``("h1", ..., "hL")``."""
        return tuple(f"h{i}" for i in range(1, len(self.layers) + 1))

    def model(self, x):
        self._check_data(x)
        with pyro.plate("data", x.shape[0]):
            h = pyro.sample(self.latent_names[-1], dist.Bernoulli(logits=self.prior_logits).to_event(1))
            for i in reversed(range(1, len(self.layers))):
                h = pyro.sample(self.latent_names[i - 1], dist.Bernoulli(logits=self.generative[i](h)).to_event(1))
            pyro.sample("x", self.observation(h).to_event(1), obs=x)

    def guide(self, x):
        self._check_data(x)
        with pyro.plate("data", x.shape[0]):
            h = x
            for name, layer in zip(self.latent_names, self.recognition):
                h = pyro.sample(name, dist.Bernoulli(logits=layer(h)).to_event(1))

    def observation(self, h1):
        """The distribution of x given the lowest latent layer (event dims not yet declared)."""
        return dist.Bernoulli(logits=self.generative[0](h1))

    @torch.no_grad()
    def sample(self, num_samples, device=None):
        """Mean images ``E[x | h_1]`` for h drawn ancestrally from the model."""
        device = device or self.prior_logits.device
        h = torch.bernoulli(torch.sigmoid(self.prior_logits).expand(num_samples, -1).to(device))
        for i in reversed(range(1, len(self.layers))):
            h = torch.bernoulli(torch.sigmoid(self.generative[i](h)))
        return self.observation(h).mean

    @torch.no_grad()
    def reconstruct(self, x):
        """Mean images ``E[x | h_1]`` at the recognition network's most probable h_1 given x."""
        h1 = (self.recognition[0](x) > 0).to(x.dtype)
        return self.observation(h1).mean

    def _check_data(self, x):
        if not isinstance(x, torch.Tensor):
            raise TypeError(
                f"{type(self).__name__} expects a tensor of shape (batch, {self.observed}), got {type(x).__name__}"
            )
        if x.dim() != 2 or x.shape[-1] != self.observed:
            raise ValueError(
                f"{type(self).__name__}(observed={self.observed}) expects binary data of shape "
                f"(batch, {self.observed}), got {tuple(x.shape)}; flatten images with x.reshape(len(x), -1) "
                "or set observed."
            )


class HelmholtzMachine(SigmoidBeliefNet):
    """The Helmholtz machine (Dayan, Hinton, Neal & Zemel 1995): a logistic-linear
    sigmoid belief net whose recognition net has the same shape, the model the
    wake-sleep algorithm was made for. A :class:`SigmoidBeliefNet` with
    ``nonlinear=False``; any engine trains it, ``wake_sleep`` is the original.
    """

    def __init__(self, layers=(200, 200), observed=784):
        super().__init__(layers, observed, nonlinear=False)
