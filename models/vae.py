"""The variational autoencoder as a Pyro model and guide.

Kingma & Welling (2014); Rezende, Mohamed & Wierstra (2014). For each datum x::

    z ~ N(0, I),   x | z ~ Bernoulli(logits = f_θ(z))   or   N(f_θ(z), σ² I)
    q_φ(z | x) = N(μ_φ(x), diag σ_φ(x)²)                     guide="gaussian"
    z = g_φ(x, ε),  ε ~ N(0, I)   (no density)               guide="implicit"

The implicit guide is the "flexible" encoder of adversarial variational Bayes
(Mescheder et al. 2017): the noise enters at the input of an MLP, so q can
take any shape, and is drawn through :class:`pplgen.distributions.Implicit`.
Only ``avb`` trains it; :func:`pplgen.evaluate.ais` scores the model.

``VAE`` is a :class:`~pyro.nn.PyroModule` exposing ``.model(x)`` and
``.guide(x)``, the convention of every model family in pplgen, so any engine
trains it::

    vae = VAE(data_dim=784, latent_dim=20, hidden=(400,))
    pplgen.fit(vae, "svi", data)          # or "iwae", ...

Both programs put the batch in ``pyro.plate("data")`` and create every
constant on the data's device, so the same module runs on CPU and CUDA.
"""

import math

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule
from torch import nn
from torch.nn.functional import softplus

from pplgen.distributions import Implicit
from pplgen.nn import mlp

LIKELIHOODS = ("bernoulli", "gaussian")
GUIDES = ("gaussian", "implicit")


class VAE(PyroModule):
    """A VAE with MLP encoder and decoder.

    :param data_dim: size of a flattened datum (784 for MNIST).
    :param latent_dim: size of z.
    :param hidden: hidden layer sizes of the decoder; the encoder mirrors them.
    :param likelihood: ``"bernoulli"`` for binary data (logits from the
        decoder) or ``"gaussian"`` for real-valued data, x ~ N(G(z), σ² I)
        with one scale σ for all pixels.
    :param scale: the Gaussian likelihood's σ (its initial value when learned).
    :param learn_scale: learn σ with the decoder (default) or hold it fixed.
    :param activation: ``"tanh"``, ``"relu"``, ``"softplus"`` or ``"elu"``.
    :param guide: ``"gaussian"`` (mean-field Gaussian q) or ``"implicit"``
        (a sampler g_φ(x, ε) without density, for ``avb``).
    :param noise_dim: size of ε for the implicit guide (default ``latent_dim``).
    """

    def __init__(
        self,
        data_dim=784,
        latent_dim=20,
        hidden=(400,),
        likelihood="bernoulli",
        scale=1.0,
        learn_scale=True,
        activation="tanh",
        guide="gaussian",
        noise_dim=None,
    ):
        super().__init__()
        if likelihood not in LIKELIHOODS:
            raise ValueError(f"likelihood must be one of {LIKELIHOODS}, got {likelihood!r}")
        if guide not in GUIDES:
            raise ValueError(f"guide must be one of {GUIDES}, got {guide!r}")
        if noise_dim is not None and guide != "implicit":
            raise ValueError("noise_dim is the size of the implicit guide's noise; give it only with guide='implicit'")
        hidden = tuple(hidden)
        self.data_dim = data_dim
        self.latent_dim = latent_dim
        self.likelihood = likelihood
        self.guide_kind = guide
        self.noise_dim = (noise_dim or latent_dim) if guide == "implicit" else 0
        self.decoder = mlp((latent_dim, *hidden, data_dim), activation)
        encoder_out = latent_dim if guide == "implicit" else 2 * latent_dim
        self.encoder = mlp((data_dim + self.noise_dim, *reversed(hidden), encoder_out), activation)
        if likelihood == "gaussian":
            if not (isinstance(scale, (int, float)) and scale > 0 and math.isfinite(scale)):
                raise ValueError(f"scale must be a finite positive number, got {scale!r}")
            self.log_scale = nn.Parameter(torch.tensor(math.log(scale)), requires_grad=bool(learn_scale))
        elif scale != 1.0 or not learn_scale:
            raise ValueError(
                "scale and learn_scale set the Gaussian likelihood's σ; give them with likelihood='gaussian'"
            )

    def model(self, x):
        self._check_data(x)
        with pyro.plate("data", x.shape[0]):
            prior = dist.Normal(x.new_zeros(self.latent_dim), x.new_ones(self.latent_dim))
            z = pyro.sample("z", prior.to_event(1))
            pyro.sample("x", self.observation(z).to_event(1), obs=x)

    def guide(self, x):
        self._check_data(x)
        with pyro.plate("data", x.shape[0]):
            if self.guide_kind == "implicit":
                noise = dist.Normal(x.new_zeros(self.noise_dim), x.new_ones(self.noise_dim)).to_event(1)
                pyro.sample("z", Implicit(noise, lambda eps: self.draw(x, eps), event_shape=(self.latent_dim,)))
            else:
                loc, scale = self.encode(x)
                pyro.sample("z", dist.Normal(loc, scale).to_event(1))

    def encode(self, x):
        """Mean and standard deviation of the Gaussian q(z | x)."""
        loc, raw_scale = self.encoder(x).chunk(2, dim=-1)
        return loc, softplus(raw_scale) + 1e-4

    def draw(self, x, eps):
        """z = g_φ(x, ε) of the implicit guide; ε may carry leading particle dims."""
        return self.encoder(torch.cat([x.expand(*eps.shape[:-1], x.shape[-1]), eps], dim=-1))

    def observation(self, z):
        """The distribution of x given z (batch shape of z, event dims not yet declared)."""
        output = self.decoder(z)
        if self.likelihood == "bernoulli":
            return dist.Bernoulli(logits=output)
        return dist.Normal(output, self.log_scale.exp().expand_as(output))

    @torch.no_grad()
    def sample(self, num_samples, device=None):
        """Mean images ``E[x | z]`` for z drawn from the prior."""
        device = device or next(self.parameters()).device
        z = torch.randn(num_samples, self.latent_dim, device=device)
        return self.observation(z).mean

    @torch.no_grad()
    def reconstruct(self, x):
        """Mean images ``E[x | z]`` at the guide's mean ``z = μ_φ(x)`` (for the implicit guide, at one draw)."""
        if self.guide_kind == "implicit":
            z = self.draw(x, torch.randn(len(x), self.noise_dim, device=x.device, dtype=x.dtype))
        else:
            z, _ = self.encode(x)
        return self.observation(z).mean

    def _check_data(self, x):
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"VAE expects a tensor of shape (batch, {self.data_dim}), got {type(x).__name__}")
        if x.dim() != 2 or x.shape[-1] != self.data_dim:
            raise ValueError(
                f"VAE(data_dim={self.data_dim}) expects data of shape (batch, {self.data_dim}), "
                f"got {tuple(x.shape)}; flatten images with x.reshape(len(x), -1) or set data_dim."
            )
