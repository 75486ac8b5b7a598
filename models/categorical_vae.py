"""The categorical VAE of Jang, Gu & Poole (2017): discrete latents, one-hot, as a Pyro model and guide.

For each datum x, ``latents`` independent one-hot variables of ``classes``
classes each::

    z_j ~ OneHotCategorical(uniform),   j = 1..latents
    x | z ~ Bernoulli(logits = f_θ(z_1, ..., z_latents))
    q_φ(z | x) = Π_j OneHotCategorical(z_j; logits = g_φ(x)_j)

f and g are MLPs (784-512-256-(20×10) and back in the paper, ReLU). The
latents are one site ``z`` of shape ``(latents, classes)`` inside
``pyro.plate("data")``; the decoder reads them as a flat vector, so it takes
relaxed values on the simplex as well as one-hot ones, and every discrete
engine trains it: ``gumbel`` (with or without ``straight_through``),
``rebar``, ``relax``, ``rws``, ``vimco``, ``nvil`` and ``wake_sleep``::

    vae = CategoricalVAE()
    pplgen.fit(vae, pplgen.inference.get("gumbel", temperature=1.0, anneal=(0.5, 3e-5)), data)
"""

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule

from pplgen.nn import mlp


class CategoricalVAE(PyroModule):
    """A VAE with ``latents`` one-hot latents of ``classes`` classes.

    :param data_dim: size of a flattened datum (784 for MNIST).
    :param latents: number of categorical latents.
    :param classes: classes of each.
    :param hidden: hidden layer sizes of the encoder (the decoder mirrors them).
    :param activation: ``"relu"`` (the paper's), ``"tanh"``, ``"softplus"`` or ``"elu"``.
    """

    def __init__(self, data_dim=784, latents=20, classes=10, hidden=(512, 256), activation="relu"):
        super().__init__()
        for name, value in (("data_dim", data_dim), ("latents", latents), ("classes", classes)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if classes < 2:
            raise ValueError(f"classes must be at least 2, got {classes}")
        hidden = tuple(hidden)
        self.data_dim, self.latents, self.classes = data_dim, latents, classes
        self.encoder = mlp((data_dim, *hidden, latents * classes), activation)
        self.decoder = mlp((latents * classes, *reversed(hidden), data_dim), activation)

    def model(self, x):
        self._check_data(x)
        with pyro.plate("data", x.shape[0]):
            prior = dist.OneHotCategorical(logits=x.new_zeros(self.latents, self.classes))
            z = pyro.sample("z", prior.to_event(1))
            pyro.sample("x", self.observation(z).to_event(1), obs=x)

    def guide(self, x):
        self._check_data(x)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.OneHotCategorical(logits=self.encode(x)).to_event(1))

    def encode(self, x):
        """The logits of q(z | x), ``(batch, latents, classes)``."""
        return self.encoder(x).reshape(*x.shape[:-1], self.latents, self.classes)

    def observation(self, z):
        """The distribution of x given z (one-hot or relaxed, ``(..., latents, classes)``)."""
        return dist.Bernoulli(logits=self.decoder(z.flatten(-2)))

    @torch.no_grad()
    def sample(self, num_samples, device=None):
        """Mean images ``E[x | z]`` for z drawn from the uniform prior."""
        device = device or next(self.parameters()).device
        classes = torch.randint(self.classes, (num_samples, self.latents), device=device)
        z = torch.nn.functional.one_hot(classes, self.classes).float()
        return self.observation(z).mean

    @torch.no_grad()
    def reconstruct(self, x):
        """Mean images ``E[x | z]`` at the guide's most probable z."""
        logits = self.encode(x)
        z = torch.nn.functional.one_hot(logits.argmax(-1), self.classes).to(x.dtype)
        return self.observation(z).mean

    def _check_data(self, x):
        if not isinstance(x, torch.Tensor):
            raise TypeError(
                f"CategoricalVAE expects a tensor of shape (batch, {self.data_dim}), got {type(x).__name__}"
            )
        if x.dim() != 2 or x.shape[-1] != self.data_dim:
            raise ValueError(
                f"CategoricalVAE(data_dim={self.data_dim}) expects data of shape (batch, {self.data_dim}), "
                f"got {tuple(x.shape)}; flatten images with x.reshape(len(x), -1) or set data_dim."
            )
