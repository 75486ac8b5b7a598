"""Small programs and data sets that several test modules train or check."""

import pyro
import pyro.distributions as dist
import torch

from pplgen.inference import ENGINES, get
from pplgen.models import VAE, SigmoidBeliefNet
from tests.support.outcomes import ENGINES as ROWS


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


def family_for(name, *, vae, sbn):
    """The model family an engine trains, chosen by its traits and built with the ``vae`` or ``sbn`` options:
    for a guide-free engine a VAE with a Gaussian likelihood (its dreams must be differentiable), a VAE for
    engines that need ``rsample``, a sigmoid belief net (discrete latents) for the others."""
    engine = ENGINES[name]
    if not engine.needs_guide:
        return VAE(likelihood="gaussian", **vae)
    return VAE(**vae) if engine.requires_rsample else SigmoidBeliefNet(**sbn)


def small_case(name):
    """A small model each engine trains (:func:`family_for`), the engine with its conformance row's options,
    and a batch: grey levels for a Gaussian likelihood, binary ones otherwise."""
    torch.manual_seed(0)
    x = torch.rand(6, 12, generator=torch.Generator().manual_seed(0))
    engine = get(name, **ROWS[name].options)
    model = family_for(
        name, vae={"data_dim": 12, "latent_dim": 2, "hidden": (8,)}, sbn={"layers": (4,), "observed": 12}
    )
    return model, engine, x if not engine.needs_guide else x.bernoulli()
