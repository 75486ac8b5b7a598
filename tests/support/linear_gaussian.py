"""The linear-Gaussian reference: a model whose posterior, evidence and ELBO are known exactly."""

import math

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule
from torch import nn


class LinearGaussian(PyroModule):
    """Per datum and dimension: z ~ N(μ₀, 1), x | z ~ N(w z + b, σ²); guide q(z | x) = N(a x + c, s²).

    θ = (μ₀, w, b) are model parameters, φ = (a, c, log s) guide parameters.
    The posterior is Gaussian with precision 1 + w²/σ², the evidence is
    N(w μ₀ + b, w² + σ²), and the ELBO has a closed form, so every
    engine's expected update can be checked against autograd of it.
    """

    def __init__(self, sigma=0.8):
        super().__init__()
        self.sigma = sigma
        self.mu0 = nn.Parameter(torch.tensor([0.3, -0.5]))
        self.w = nn.Parameter(torch.tensor([1.2, 0.7]))
        self.b = nn.Parameter(torch.tensor([0.1, 0.2]))
        self.a = nn.Parameter(torch.tensor([0.4, 0.2]))
        self.c = nn.Parameter(torch.tensor([0.0, -0.3]))
        self.log_s = nn.Parameter(torch.tensor([-0.2, -0.6]))

    def model(self, x):
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(self.mu0, 1.0).expand(x.shape[-1:]).to_event(1))
            pyro.sample("x", dist.Normal(self.w * z + self.b, self.sigma).to_event(1), obs=x)

    def guide(self, x):
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Normal(self.a * x + self.c, self.log_s.exp()).to_event(1))

    def log_evidence(self, x):
        """Exact log p(x) per datum."""
        scale = (self.w**2 + self.sigma**2).sqrt()
        return dist.Normal(self.w * self.mu0 + self.b, scale).log_prob(x).sum(-1)

    def analytic_elbo(self, x):
        """Exact ELBO per datum, differentiable in θ and φ."""
        m, s = self.a * x + self.c, self.log_s.exp()
        log_prior = -0.5 * math.log(2 * math.pi) - 0.5 * ((m - self.mu0) ** 2 + s**2)
        log_lik = -0.5 * math.log(2 * math.pi * self.sigma**2) - ((x - self.w * m - self.b) ** 2 + self.w**2 * s**2) / (
            2 * self.sigma**2
        )
        entropy = 0.5 * torch.log(2 * math.pi * math.e * s**2)
        return (log_prior + log_lik + entropy).sum(-1)

    @torch.no_grad()
    def set_exact_posterior(self, shift=0.0, stretch=1.0):
        """Make the guide the exact posterior, optionally shifted and widened."""
        precision = 1 + self.w**2 / self.sigma**2
        self.a.copy_(self.w / self.sigma**2 / precision)
        self.c.copy_((self.mu0 - self.w * self.b / self.sigma**2) / precision + shift)
        self.log_s.copy_((stretch / precision.sqrt()).log())


def grads(module, names):
    """Current gradients of the named parameters, concatenated."""
    return torch.cat([getattr(module, n).grad.reshape(-1).clone() for n in names])


MODEL_PARAMS = ("mu0", "w", "b")
GUIDE_PARAMS = ("a", "c", "log_s")
