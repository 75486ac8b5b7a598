"""Small programs and data sets that several test modules train or check."""

import pyro
import pyro.distributions as dist
import torch

from pplgen.inference import get
from pplgen.models import VAE, SigmoidBeliefNet

CONTINUOUS = {"svi", "iwae", "avb"}


def hierarchical_guide_pair():
    """A prior z1 → z2 → x and a guide that draws z2 from z1: ``(model, guide, x)``."""

    def model(x):
        with pyro.plate("data", len(x)):
            z1 = pyro.sample("z1", dist.Normal(x.new_zeros(()), 1.0))
            z2 = pyro.sample("z2", dist.Normal(z1, 1.0))
            pyro.sample("x", dist.Normal(z2, 1.0), obs=x)

    def guide(x):
        weight = pyro.param("weight", torch.tensor(0.5))
        with pyro.plate("data", len(x)):
            z1 = pyro.sample("z1", dist.Normal(weight * x, 1.0))
            pyro.sample("z2", dist.Normal(weight * z1, 1.0))

    return model, guide, torch.randn(4)


def small_vae(seed=0):
    torch.manual_seed(seed)
    return VAE(data_dim=16, latent_dim=3, hidden=(12,))


def binary_data(n=64, seed=1):
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(n, 16, generator=generator).bernoulli(generator=generator)


def small_case(name):
    """A small model each engine trains, its engine and a batch: a VAE for the reparameterized engines, its
    Gaussian-likelihood decoder on grey levels for gan, a sigmoid belief net for the others."""
    torch.manual_seed(0)
    x = torch.rand(6, 12, generator=torch.Generator().manual_seed(0))
    engine = get(name, **({"num_particles": 3} if name in {"iwae", "rws", "vimco"} else {}))
    if name == "gan":
        return VAE(data_dim=12, latent_dim=2, hidden=(8,), likelihood="gaussian"), engine, x
    if name in CONTINUOUS:
        return VAE(data_dim=12, latent_dim=2, hidden=(8,)), engine, x.bernoulli()
    return SigmoidBeliefNet(layers=(4,), observed=12), engine, x.bernoulli()
