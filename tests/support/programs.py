"""A catalogue of model/guide program shapes, the kinds Pyro users write.

Every engine is run over every entry of ``PROGRAMS``. An entry builds a fresh
``(model, guide, args, kwargs)`` with a few data points, and records what
Pyro's own reference does with it: one step of ::

    SVI(model, guide, pyro.optim.Adam({"lr": 1e-6}), Trace_ELBO()).step(*args, **kwargs)

with validation on is ``"ok"``, ``"warns"`` or ``"error"``, ``reason`` being
a fragment of Pyro's message in the last two cases. ``latents`` says what the
guide samples: ``"continuous"`` when every guide sample site has ``rsample``
(a guide ``pyro.factor`` counts with its ``has_rsample``), ``"discrete"``
when some site has not, ``"none"`` when the guide samples nothing.
``test_pyro_reference.py`` holds every entry to both.

Programs that Pyro refuses keep the mistake in the model and a clean guide,
so the guide can always be traced on its own.

Data and network weights come from a ``torch.Generator`` seeded inside each
builder: building a program never draws from the global RNG.
"""

from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.distributions import constraints
from pyro.infer.reparam import LocScaleReparam
from pyro.nn import PyroModule, PyroParam
from pyro.ops.indexing import Vindex
from pyro.poutine.plate_messenger import block_plate
from torch import nn

OUTCOMES = ("ok", "warns", "error")
LATENTS = ("continuous", "discrete", "none")


@dataclass(frozen=True, kw_only=True)
class Program:
    """One model/guide shape and Pyro's verdict on it."""

    name: str
    build: Callable[[], tuple]
    pyro: str
    latents: str
    description: str
    reason: str = ""

    def __post_init__(self):
        if self.pyro not in OUTCOMES:
            raise ValueError(f"pyro must be one of {OUTCOMES}, got {self.pyro!r}")
        if self.latents not in LATENTS:
            raise ValueError(f"latents must be one of {LATENTS}, got {self.latents!r}")
        if (self.pyro == "ok") != (self.reason == ""):
            raise ValueError(f"reason must be given exactly when pyro is not 'ok' ({self.name})")


def program(*, pyro="ok", latents="continuous", reason=""):
    """Make a builder into a :class:`Program` named after it, described by its docstring."""

    def make(build):
        description = build.__doc__.strip().splitlines()[0]
        return Program(
            name=build.__name__,
            build=build,
            pyro=pyro,
            latents=latents,
            description=description,
            reason=reason,
        )

    return make


def _generator(seed):
    return torch.Generator().manual_seed(seed)


def _linear(in_features, out_features, generator, cls=nn.Linear):
    """A linear layer with weights from ``generator``; ``skip_init`` keeps the global RNG untouched."""
    layer = nn.utils.skip_init(cls, in_features, out_features)
    with torch.no_grad():
        layer.weight.copy_(0.3 * torch.randn(layer.weight.shape, generator=generator))
        layer.bias.zero_()
    return layer


def _positive(name, init):
    return pyro.param(name, init, constraint=constraints.positive)


def _normal_guide_for(name, shape=()):
    """A mean-field Normal guide for one site named ``name``."""

    def guide(*args, **kwargs):
        loc = pyro.param(f"{name}_loc", torch.zeros(shape))
        scale = _positive(f"{name}_scale", torch.ones(shape))
        pyro.sample(name, dist.Normal(loc, scale).to_event(len(shape)))

    return guide


def _global_loc_model(x):
    loc = pyro.sample("loc", dist.Normal(0.0, 1.0))
    with pyro.plate("data", len(x)):
        pyro.sample("x", dist.Normal(loc, 1.0), obs=x)


# ---------------------------------------------------------------- global and local latents


@program()
def global_latent():
    """One global Normal latent and no plate: the data vector is a single event."""
    x = torch.randn(3, generator=_generator(0)) + 1.0

    def model(x):
        loc = pyro.sample("loc", dist.Normal(0.0, 1.0))
        pyro.sample("x", dist.Normal(loc, 1.0).expand(x.shape).to_event(1), obs=x)

    return model, _normal_guide_for("loc"), (x,), {}


@program()
def vae_local_latents():
    """A data plate with a local latent per datum: linear decoder and amortised encoder via pyro.module."""
    g = _generator(1)
    x = torch.bernoulli(torch.full((4, 3), 0.5), generator=g)
    decoder, encoder = _linear(2, 3, g), _linear(3, 4, g)

    def model(x):
        pyro.module("decoder", decoder)
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=decoder(z)).to_event(1), obs=x)

    def guide(x):
        pyro.module("encoder", encoder)
        with pyro.plate("data", len(x)):
            loc, log_scale = encoder(x).chunk(2, dim=-1)
            pyro.sample("z", dist.Normal(loc, log_scale.exp()).to_event(1))

    return model, guide, (x,), {}


@program()
def global_and_local_latents():
    """A global mean outside a data plate of local latents (hierarchical Normal)."""
    x = torch.randn(4, generator=_generator(2))

    def model(x):
        mu = pyro.sample("mu", dist.Normal(0.0, 2.0))
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(mu, 1.0))
            pyro.sample("x", dist.Normal(z, 0.5), obs=x)

    def guide(x):
        mu_loc = pyro.param("mu_loc", torch.tensor(0.0))
        pyro.sample("mu", dist.Normal(mu_loc, _positive("mu_scale", torch.tensor(1.0))))
        z_loc = pyro.param("z_loc", torch.zeros(len(x)))
        z_scale = _positive("z_scale", torch.ones(len(x)))
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Normal(z_loc, z_scale))

    return model, guide, (x,), {}


@program(latents="discrete")
def mixed_discrete_continuous():
    """A Bernoulli switch and a Normal latent per datum in one data plate."""
    x = torch.randn(4, generator=_generator(3))

    def model(x):
        with pyro.plate("data", len(x)):
            c = pyro.sample("c", dist.Bernoulli(0.5))
            z = pyro.sample("z", dist.Normal(2.0 * c - 1.0, 1.0))
            pyro.sample("x", dist.Normal(z, 0.5), obs=x)

    def guide(x):
        probs = pyro.param("c_probs", torch.full((len(x),), 0.5), constraint=constraints.unit_interval)
        weight = pyro.param("weight", torch.tensor(0.5))
        with pyro.plate("data", len(x)):
            c = pyro.sample("c", dist.Bernoulli(probs))
            pyro.sample("z", dist.Normal(weight * x + 0.1 * c, 1.0))

    return model, guide, (x,), {}


@program(latents="discrete")
def gaussian_mixture():
    """Global cluster means and a Categorical assignment per datum."""
    x = torch.randn(5, generator=_generator(4)) * 2.0

    def model(x):
        with pyro.plate("clusters", 2):
            locs = pyro.sample("locs", dist.Normal(0.0, 3.0))
        with pyro.plate("data", len(x)):
            k = pyro.sample("k", dist.Categorical(torch.ones(2) / 2))
            pyro.sample("x", dist.Normal(locs[k], 1.0), obs=x)

    def guide(x):
        with pyro.plate("clusters", 2):
            pyro.sample("locs", dist.Normal(pyro.param("locs_loc", torch.tensor([-1.0, 1.0])), 0.5))
        probs = pyro.param("k_probs", torch.ones(len(x), 2) / 2, constraint=constraints.simplex)
        with pyro.plate("data", len(x)):
            pyro.sample("k", dist.Categorical(probs))

    return model, guide, (x,), {}


@program(latents="discrete")
def sigmoid_belief_layer():
    """A layer of Bernoulli units per datum (``.to_event(1)``), as in a sigmoid belief net."""
    g = _generator(5)
    x = torch.bernoulli(torch.full((4, 3), 0.5), generator=g)
    decoder, encoder = _linear(2, 3, g), _linear(3, 2, g)

    def model(x):
        pyro.module("decoder", decoder)
        with pyro.plate("data", len(x)):
            h = pyro.sample("h", dist.Bernoulli(logits=torch.zeros(2)).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=decoder(h)).to_event(1), obs=x)

    def guide(x):
        pyro.module("encoder", encoder)
        with pyro.plate("data", len(x)):
            pyro.sample("h", dist.Bernoulli(logits=encoder(x)).to_event(1))

    return model, guide, (x,), {}


# ---------------------------------------------------------------- plates


@program()
def nested_plates():
    """Group effects in plate dim=-2 and item latents in plates dim=-2 x dim=-1."""
    x = torch.randn(2, 3, generator=_generator(6))

    def model(x):
        with pyro.plate("groups", 2, dim=-2):
            group_loc = pyro.sample("group_loc", dist.Normal(0.0, 1.0))
            with pyro.plate("items", 3, dim=-1):
                z = pyro.sample("z", dist.Normal(group_loc, 1.0))
                pyro.sample("x", dist.Normal(z, 0.5), obs=x)

    def guide(x):
        with pyro.plate("groups", 2, dim=-2):
            pyro.sample("group_loc", dist.Normal(pyro.param("group_loc_loc", torch.zeros(2, 1)), 1.0))
            with pyro.plate("items", 3, dim=-1):
                pyro.sample("z", dist.Normal(pyro.param("z_loc", torch.zeros(2, 3)), 1.0))

    return model, guide, (x,), {}


def _sparse_gamma_counts():
    return torch.poisson(torch.full((4, 3), 2.0), generator=_generator(7))


def _sparse_gamma_guide(counts):
    with pyro.plate("weights", 3):
        pyro.sample("w", dist.Gamma(_positive("w_alpha", torch.ones(3)), _positive("w_beta", torch.ones(3))))
    with pyro.plate("data", 4):
        pyro.sample("z", dist.Gamma(_positive("z_alpha", torch.ones(4)), _positive("z_beta", torch.ones(4))))


@program()
def sparse_gamma_siblings():
    """Gamma weights (plate of 3) and activations (plate of 4) on dim=-1, Poisson counts in the data plate."""

    def model(counts):
        with pyro.plate("weights", 3):
            w = pyro.sample("w", dist.Gamma(1.0, 1.0))
        with pyro.plate("data", 4):
            z = pyro.sample("z", dist.Gamma(1.0, 1.0))
            pyro.sample("counts", dist.Poisson(z.unsqueeze(-1) * w).to_event(1), obs=counts)

    return model, _sparse_gamma_guide, (_sparse_gamma_counts(),), {}


@program()
def sibling_plates_same_size():
    """Two sibling plates of the same size and different names, data passed as keywords."""
    g = _generator(8)
    x, y = torch.randn(3, generator=g), torch.randn(3, generator=g)

    def model(x, y):
        with pyro.plate("left", 3):
            a = pyro.sample("a", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(a, 1.0), obs=x)
        with pyro.plate("right", 3):
            b = pyro.sample("b", dist.Normal(0.0, 1.0))
            pyro.sample("y", dist.Normal(b, 1.0), obs=y)

    def guide(x, y):
        with pyro.plate("left", 3):
            pyro.sample("a", dist.Normal(pyro.param("a_loc", torch.zeros(3)), 1.0))
        with pyro.plate("right", 3):
            pyro.sample("b", dist.Normal(pyro.param("b_loc", torch.zeros(3)), 1.0))

    return model, guide, (), {"x": x, "y": y}


@program()
def plate_reuse():
    """Plate objects made once and entered alone and together (row and column effects)."""
    x = torch.randn(3, 2, generator=_generator(9))

    def model(x):
        rows, cols = pyro.plate("rows", 3, dim=-2), pyro.plate("cols", 2, dim=-1)
        with rows:
            r = pyro.sample("row_effect", dist.Normal(0.0, 1.0))
        with cols:
            c = pyro.sample("col_effect", dist.Normal(0.0, 1.0))
        with rows, cols:
            pyro.sample("x", dist.Normal(r + c, 1.0), obs=x)

    def guide(x):
        rows, cols = pyro.plate("rows", 3, dim=-2), pyro.plate("cols", 2, dim=-1)
        with rows:
            pyro.sample("row_effect", dist.Normal(pyro.param("row_loc", torch.zeros(3, 1)), 1.0))
        with cols:
            pyro.sample("col_effect", dist.Normal(pyro.param("col_loc", torch.zeros(2)), 1.0))

    return model, guide, (x,), {}


@program()
def plate_stack():
    """A 2 x 3 grid of latents under ``pyro.plate_stack``."""
    x = torch.randn(2, 3, generator=_generator(10))

    def model(x):
        with pyro.plate_stack("grid", x.shape):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    def guide(x):
        with pyro.plate_stack("grid", x.shape):
            pyro.sample("z", dist.Normal(pyro.param("z_loc", torch.zeros(2, 3)), 1.0))

    return model, guide, (x,), {}


@program()
def block_plate_global():
    """A global latent drawn inside the data plate, hidden from it by ``block_plate``."""
    x = torch.randn(4, generator=_generator(11))

    def model(x):
        with pyro.plate("data", len(x)):
            with block_plate("data"):
                loc = pyro.sample("loc", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(loc, 1.0), obs=x)

    return model, _normal_guide_for("loc"), (x,), {}


@program()
def sequential_plate():
    """A sequential plate, ``for i in pyro.plate(...)``, with sites ``z_{i}``."""
    x = torch.randn(3, generator=_generator(12))

    def model(x):
        for i in pyro.plate("data", len(x)):
            z = pyro.sample(f"z_{i}", dist.Normal(0.0, 1.0))
            pyro.sample(f"x_{i}", dist.Normal(z, 1.0), obs=x[i])

    def guide(x):
        locs = pyro.param("z_locs", torch.zeros(len(x)))
        for i in pyro.plate("data", len(x)):
            pyro.sample(f"z_{i}", dist.Normal(locs[i], 1.0))

    return model, guide, (x,), {}


@program()
def sequential_plate_subsampled():
    """A sequential plate over 5 data with ``subsample_size=2``."""
    x = torch.randn(5, generator=_generator(13))

    def model(x):
        for i in pyro.plate("data", len(x), subsample_size=2):
            z = pyro.sample(f"z_{i}", dist.Normal(0.0, 1.0))
            pyro.sample(f"x_{i}", dist.Normal(z, 1.0), obs=x[i])

    def guide(x):
        locs = pyro.param("z_locs", torch.zeros(len(x)))
        for i in pyro.plate("data", len(x), subsample_size=2):
            pyro.sample(f"z_{i}", dist.Normal(locs[i], 1.0))

    return model, guide, (x,), {}


@program()
def sequential_in_vectorized_plate():
    """A sequential plate of steps inside a vectorized data plate."""
    x = torch.randn(3, 2, generator=_generator(14))

    def model(x):
        with pyro.plate("data", len(x)):
            for j in pyro.plate("steps", x.size(1)):
                z = pyro.sample(f"z_{j}", dist.Normal(0.0, 1.0))
                pyro.sample(f"x_{j}", dist.Normal(z, 1.0), obs=x[:, j])

    def guide(x):
        weight = pyro.param("weight", torch.tensor(0.5))
        with pyro.plate("data", len(x)):
            for j in pyro.plate("steps", x.size(1)):
                pyro.sample(f"z_{j}", dist.Normal(weight * x[:, j], 1.0))

    return model, guide, (x,), {}


@program()
def vectorized_subsample():
    """A vectorized plate of 6 with ``subsample_size=3``; sites read ``x[idx]``."""
    x = torch.randn(6, generator=_generator(15))

    def model(x):
        with pyro.plate("data", len(x), subsample_size=3) as idx:
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x[idx])

    def guide(x):
        locs = pyro.param("z_locs", torch.zeros(len(x)))
        scales = _positive("z_scales", torch.ones(len(x)))
        with pyro.plate("data", len(x), subsample_size=3) as idx:
            pyro.sample("z", dist.Normal(locs[idx], scales[idx]))

    return model, guide, (x,), {}


@program()
def subsample_with_global():
    """A global latent outside a subsampled data plate: terms at two scales."""
    x = torch.randn(6, generator=_generator(16)) + 0.5

    def model(x):
        mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
        with pyro.plate("data", len(x), subsample_size=2) as idx:
            z = pyro.sample("z", dist.Normal(mu, 1.0))
            pyro.sample("x", dist.Normal(z, 0.5), obs=x[idx])

    def guide(x):
        pyro.sample("mu", dist.Normal(pyro.param("mu_loc", torch.tensor(0.0)), 1.0))
        locs = pyro.param("z_locs", torch.zeros(len(x)))
        with pyro.plate("data", len(x), subsample_size=2) as idx:
            pyro.sample("z", dist.Normal(locs[idx], 1.0))

    return model, guide, (x,), {}


@program()
def explicit_subsample():
    """A plate given its subsample indices as an argument (a minibatch chosen outside)."""
    x = torch.randn(5, generator=_generator(17))

    def model(x, batch):
        loc = pyro.sample("loc", dist.Normal(0.0, 1.0))
        with pyro.plate("data", len(x), subsample=batch) as idx:
            pyro.sample("x", dist.Normal(loc, 1.0), obs=x[idx])

    def guide(x, batch):
        _normal_guide_for("loc")()

    return model, guide, (x,), {"batch": torch.tensor([0, 3])}


@program()
def subsample_primitive():
    """Observations sliced by ``pyro.subsample`` inside a subsampled plate."""
    x = torch.randn(6, 2, generator=_generator(18))

    def model(x):
        loc = pyro.sample("loc", dist.Normal(torch.zeros(2), 1.0).to_event(1))
        with pyro.plate("data", len(x), subsample_size=3):
            batch = pyro.subsample(x, event_dim=1)
            pyro.sample("x", dist.Normal(loc, 1.0).to_event(1), obs=batch)

    return model, _normal_guide_for("loc", (2,)), (x,), {}


@program()
def param_event_dim_in_plate():
    """A per-datum ``pyro.param(..., event_dim=1)`` inside a subsampled plate, sliced to the batch."""
    x = torch.randn(6, 2, generator=_generator(19))

    def model(x):
        with pyro.plate("data", len(x), subsample_size=3) as idx:
            z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z, 1.0).to_event(1), obs=x[idx])

    def guide(x):
        with pyro.plate("data", len(x), subsample_size=3):
            locs = pyro.param("z_locs", torch.zeros(len(x), 2), event_dim=1)
            pyro.sample("z", dist.Normal(locs, 1.0).to_event(1))

    return model, guide, (x,), {}


# ---------------------------------------------------------------- masks and scales


def _masked_loc_program(mask, in_guide):
    x = torch.randn(3, generator=_generator(20))

    def model(x):
        with poutine.mask(mask=mask):
            loc = pyro.sample("loc", dist.Normal(0.0, 1.0))
        with pyro.plate("data", len(x)):
            pyro.sample("x", dist.Normal(loc, 1.0), obs=x)

    def guide(x):
        with poutine.mask(mask=mask) if in_guide else nullcontext():
            _normal_guide_for("loc")()

    return model, guide, (x,), {}


@program()
def mask_false_in_model():
    """``poutine.mask(mask=False)`` around the model's prior site only (a flat prior)."""
    return _masked_loc_program(False, in_guide=False)


@program()
def mask_true_in_model():
    """``poutine.mask(mask=True)`` around the model's prior site only (no effect)."""
    return _masked_loc_program(True, in_guide=False)


@program()
def mask_false_in_model_and_guide():
    """``poutine.mask(mask=False)`` around the latent in both model and guide."""
    return _masked_loc_program(False, in_guide=True)


@program()
def mask_true_in_model_and_guide():
    """``poutine.mask(mask=True)`` around the latent in both model and guide."""
    return _masked_loc_program(True, in_guide=True)


@program()
def tensor_mask_in_plate():
    """Missing observations switched off with ``poutine.mask(mask=tensor)`` inside the data plate."""
    x = torch.randn(4, generator=_generator(21))
    observed = torch.tensor([True, False, True, True])

    def model(x, observed):
        loc = pyro.sample("loc", dist.Normal(0.0, 1.0))
        with pyro.plate("data", len(x)), poutine.mask(mask=observed):
            pyro.sample("x", dist.Normal(loc, 1.0), obs=x)

    def guide(x, observed):
        _normal_guide_for("loc")()

    return model, guide, (x, observed), {}


@program()
def dist_mask_latents():
    """Local latents masked with ``dist.mask(tensor)`` in model and guide."""
    x = torch.randn(4, generator=_generator(22))
    keep = torch.tensor([True, True, False, True])

    def model(x):
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(0.0, 1.0).mask(keep))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    def guide(x):
        locs = pyro.param("z_locs", torch.zeros(len(x)))
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Normal(locs, 1.0).mask(keep))

    return model, guide, (x,), {}


@program()
def broadcast_mask_nested():
    """A row mask of shape (3, 1) on observations in nested (3, 2) plates."""
    x = torch.randn(3, 2, generator=_generator(23))
    rows_kept = torch.tensor([[True], [False], [True]])

    def model(x):
        loc = pyro.sample("loc", dist.Normal(0.0, 1.0))
        with pyro.plate("rows", 3, dim=-2), pyro.plate("cols", 2, dim=-1):
            with poutine.mask(mask=rows_kept):
                pyro.sample("x", dist.Normal(loc, 1.0), obs=x)

    return model, _normal_guide_for("loc"), (x,), {}


@program()
def scale_whole_program():
    """Model and guide each wrapped whole in ``poutine.scale(scale=2.0)``."""
    x = torch.randn(4, generator=_generator(24))
    guide = _normal_guide_for("loc")
    return poutine.scale(_global_loc_model, scale=2.0), poutine.scale(guide, scale=2.0), (x,), {}


@program()
def tensor_scale_in_plate():
    """One ``poutine.scale`` weight per datum inside the data plate, in model and guide."""
    x = torch.randn(4, generator=_generator(25))
    weights = torch.tensor([1.0, 2.0, 0.5, 1.0])

    def model(x, weights):
        with pyro.plate("data", len(x)), poutine.scale(scale=weights):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    def guide(x, weights):
        locs = pyro.param("z_locs", torch.zeros(len(x)))
        with pyro.plate("data", len(x)), poutine.scale(scale=weights):
            pyro.sample("z", dist.Normal(locs, 1.0))

    return model, guide, (x, weights), {}


@program()
def kl_annealing():
    """Latent sites under ``poutine.scale(scale=annealing_factor)`` in model and guide, KL-annealing style."""
    x = torch.randn(4, 2, generator=_generator(26))

    def model(x, annealing_factor=1.0):
        with pyro.plate("data", len(x)):
            with poutine.scale(scale=annealing_factor):
                z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z, 1.0).to_event(1), obs=x)

    def guide(x, annealing_factor=1.0):
        weight = pyro.param("weight", torch.tensor(0.5))
        with pyro.plate("data", len(x)):
            with poutine.scale(scale=annealing_factor):
                pyro.sample("z", dist.Normal(weight * x, 1.0).to_event(1))

    return model, guide, (x,), {"annealing_factor": 0.5}


# ---------------------------------------------------------------- factors, point masses, deterministic sites


@program()
def factor_in_model():
    """A ``pyro.factor`` soft constraint on the latent in the model."""
    x = torch.randn(4, generator=_generator(27))

    def model(x):
        loc = pyro.sample("loc", dist.Normal(0.0, 1.0))
        pyro.factor("loc_positive", nn.functional.logsigmoid(4.0 * loc))
        with pyro.plate("data", len(x)):
            pyro.sample("x", dist.Normal(loc, 1.0), obs=x)

    return model, _normal_guide_for("loc"), (x,), {}


def _factor_guide_program(has_rsample):
    x = torch.randn(4, generator=_generator(28))

    def guide(x):
        loc = pyro.sample("loc", dist.Normal(pyro.param("loc_loc", torch.tensor(0.0)), 1.0))
        if has_rsample is None:
            pyro.factor("tilt", -0.1 * loc**2)
        else:
            pyro.factor("tilt", -0.1 * loc**2, has_rsample=has_rsample)

    return _global_loc_model, guide, (x,), {}


@program()
def factor_in_guide_rsample():
    """A ``pyro.factor(..., has_rsample=True)`` tilting a reparameterised guide."""
    return _factor_guide_program(True)


@program()
def map_delta_guide():
    """A MAP guide: ``dist.Delta`` at a ``pyro.param``."""
    x = torch.randn(4, generator=_generator(29))

    def guide(x):
        pyro.sample("loc", dist.Delta(pyro.param("loc_map", torch.tensor(0.0))))

    return _global_loc_model, guide, (x,), {}


@program()
def delta_event_dim():
    """A vector ``dist.Delta(..., event_dim=1)`` guide for a ``.to_event(1)`` prior."""
    x = torch.randn(4, 2, generator=_generator(30))

    def model(x):
        loc = pyro.sample("loc", dist.Normal(torch.zeros(2), 1.0).to_event(1))
        with pyro.plate("data", len(x)):
            pyro.sample("x", dist.Normal(loc, 1.0).to_event(1), obs=x)

    def guide(x):
        pyro.sample("loc", dist.Delta(pyro.param("loc_map", torch.zeros(2)), event_dim=1))

    return model, guide, (x,), {}


@program()
def deterministic_site():
    """A ``pyro.deterministic`` site recording a function of the latent in the model."""
    x = torch.randn(4, generator=_generator(31))

    def model(x):
        log_scale = pyro.sample("log_scale", dist.Normal(0.0, 1.0))
        scale = pyro.deterministic("scale", log_scale.exp())
        with pyro.plate("data", len(x)):
            pyro.sample("x", dist.Normal(0.0, scale), obs=x)

    return model, _normal_guide_for("log_scale"), (x,), {}


@program()
def auxiliary_guide_site():
    """A guide site marked ``is_auxiliary`` that the model does not have (a hierarchical guide)."""
    x = torch.randn(4, generator=_generator(32))

    def guide(x):
        u = pyro.sample("u", dist.Normal(0.0, 1.0), infer={"is_auxiliary": True})
        pyro.sample("loc", dist.Normal(pyro.param("weight", torch.tensor(0.5)) * u, 1.0))

    return _global_loc_model, guide, (x,), {}


@program()
def reparam_decentered():
    """A model under ``poutine.reparam`` (``LocScaleReparam``); the guide draws ``z_decentered``."""
    x = torch.randn(4, generator=_generator(33))

    def model(x):
        mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(mu, 2.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    def guide(x):
        pyro.sample("mu", dist.Normal(pyro.param("mu_loc", torch.tensor(0.0)), 1.0))
        with pyro.plate("data", len(x)):
            pyro.sample("z_decentered", dist.Normal(pyro.param("z_locs", torch.zeros(len(x))), 1.0))

    reparam_model = poutine.reparam(model, config={"z": LocScaleReparam(centered=0.0)})
    return reparam_model, guide, (x,), {}


# ---------------------------------------------------------------- likelihoods


@program()
def multivariate_normal_obs():
    """``MultivariateNormal`` observations in a data plate, ``scale_tril`` a model parameter."""
    x = torch.randn(4, 2, generator=_generator(34))

    def model(x):
        loc = pyro.sample("loc", dist.Normal(torch.zeros(2), 1.0).to_event(1))
        scale_tril = pyro.param("scale_tril", torch.eye(2), constraint=constraints.lower_cholesky)
        with pyro.plate("data", len(x)):
            pyro.sample("x", dist.MultivariateNormal(loc, scale_tril=scale_tril), obs=x)

    return model, _normal_guide_for("loc", (2,)), (x,), {}


@program()
def ordered_logistic_obs():
    """``OrderedLogistic`` observations in a data plate, cutpoints a ``constraints.ordered_vector`` param."""
    covariate = torch.randn(5, generator=_generator(35))
    y = torch.tensor([0, 1, 2, 1, 0])

    def model(covariate, y):
        beta = pyro.sample("beta", dist.Normal(0.0, 1.0))
        cutpoints = pyro.param("cutpoints", torch.tensor([-1.0, 1.0]), constraint=constraints.ordered_vector)
        with pyro.plate("data", len(y)):
            pyro.sample("y", dist.OrderedLogistic(beta * covariate, cutpoints), obs=y)

    def guide(covariate, y):
        _normal_guide_for("beta")()

    return model, guide, (covariate, y), {}


# ---------------------------------------------------------------- time series and modules


@program()
def markov_time_series():
    """A ``pyro.markov`` chain of Normal states per sequence, lengths masked with ``poutine.mask``."""
    x = torch.randn(3, 4, generator=_generator(36))
    lengths = torch.tensor([4, 2, 3])

    def model(x, lengths):
        transition = pyro.param("transition", torch.tensor(0.8))
        with pyro.plate("sequences", len(x)):
            z = x.new_zeros(len(x))
            for t in pyro.markov(range(x.size(1))):
                with poutine.mask(mask=t < lengths):
                    z = pyro.sample(f"z_{t}", dist.Normal(transition * z, 1.0))
                    pyro.sample(f"x_{t}", dist.Normal(z, 0.5), obs=x[:, t])

    def guide(x, lengths):
        weight = pyro.param("weight", torch.tensor(0.5))
        carry = pyro.param("carry", torch.tensor(0.3))
        with pyro.plate("sequences", len(x)):
            z = x.new_zeros(len(x))
            for t in pyro.markov(range(x.size(1))):
                with poutine.mask(mask=t < lengths):
                    z = pyro.sample(f"z_{t}", dist.Normal(weight * x[:, t] + carry * z, 0.7))

    return model, guide, (x, lengths), {}


class _AutoencodingRegression(PyroModule):
    """Model and guide as methods of one ``PyroModule``: linear layers and ``PyroParam`` scales."""

    def __init__(self, generator):
        super().__init__()
        self.decoder = _linear(1, 2, generator, PyroModule[nn.Linear])
        self.encoder = _linear(2, 1, generator, PyroModule[nn.Linear])
        self.noise = PyroParam(torch.tensor(0.5), constraint=constraints.positive)
        self.guide_scale = PyroParam(torch.tensor(1.0), constraint=constraints.positive)

    def model(self, x):
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(torch.zeros(1), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(self.decoder(z), self.noise).to_event(1), obs=x)

    def guide(self, x):
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Normal(self.encoder(x), self.guide_scale).to_event(1))


@program()
def pyro_module_methods():
    """A ``PyroModule`` whose bound ``model`` and ``guide`` use ``PyroParam``s and ``nn.Linear`` layers."""
    g = _generator(37)
    module = _AutoencodingRegression(g)
    x = torch.randn(4, 2, generator=g)
    return module.model, module.guide, (x,), {}


# ---------------------------------------------------------------- degenerate pairs


@program(latents="none")
def empty_guide_observed_model():
    """A model of observed sites and a ``pyro.param`` only, with an empty guide."""
    x = torch.randn(4, generator=_generator(38))

    def model(x):
        loc = pyro.param("loc", torch.tensor(0.0))
        with pyro.plate("data", len(x)):
            pyro.sample("x", dist.Normal(loc, 1.0), obs=x)

    def guide(x):
        pass

    return model, guide, (x,), {}


@program(latents="none")
def empty_model_empty_guide():
    """A model and a guide that do nothing."""

    def model():
        pass

    def guide():
        pass

    return model, guide, (), {}


@program()
def no_trainable_parameters():
    """A model of constants and a fixed guide: no parameter anywhere."""
    x = torch.randn(4, generator=_generator(39))

    def guide(x):
        pyro.sample("loc", dist.Normal(0.5, 0.8))

    return _global_loc_model, guide, (x,), {}


# ---------------------------------------------------------------- pairs Pyro warns about


@program(pyro="warns", reason="Found plate statements in guide but not model")
def plate_in_guide_only():
    """The guide loops over ``pyro.plate``; the model loops over ``range`` (same sites)."""
    x = torch.randn(3, generator=_generator(41))

    def model(x):
        for i in range(len(x)):
            z = pyro.sample(f"z_{i}", dist.Normal(0.0, 1.0))
            pyro.sample(f"x_{i}", dist.Normal(z, 1.0), obs=x[i])

    def guide(x):
        locs = pyro.param("z_locs", torch.zeros(len(x)))
        for i in pyro.plate("data", len(x)):
            pyro.sample(f"z_{i}", dist.Normal(locs[i], 1.0))

    return model, guide, (x,), {}


@program(pyro="warns", reason="Found non-auxiliary vars in guide but not model")
def guide_site_not_in_model():
    """The guide draws a site the model never samples, not marked auxiliary."""
    x = torch.randn(4, generator=_generator(42))

    def guide(x):
        _normal_guide_for("loc")()
        pyro.sample("noise", dist.LogNormal(0.0, 1.0))

    return _global_loc_model, guide, (x,), {}


@program(pyro="warns", reason="Found vars in model but not guide")
def model_latent_not_in_guide():
    """The model has a latent noise scale the guide does not draw (it comes from the prior)."""
    x = torch.randn(4, generator=_generator(43))

    def model(x):
        loc = pyro.sample("loc", dist.Normal(0.0, 1.0))
        noise = pyro.sample("noise", dist.LogNormal(0.0, 1.0))
        with pyro.plate("data", len(x)):
            pyro.sample("x", dist.Normal(loc, noise), obs=x)

    return model, _normal_guide_for("loc"), (x,), {}


@program(pyro="warns", latents="discrete", reason="you need to use TraceEnum_ELBO")
def enumerated_guide_site():
    """A guide site marked ``infer={"enumerate": "parallel"}`` trained with Trace_ELBO."""
    x = torch.randn(4, generator=_generator(44))

    def model(x):
        with pyro.plate("data", len(x)):
            c = pyro.sample("c", dist.Bernoulli(0.5))
            pyro.sample("x", dist.Normal(2.0 * c - 1.0, 1.0), obs=x)

    def guide(x):
        probs = pyro.param("c_probs", torch.full((len(x),), 0.5), constraint=constraints.unit_interval)
        with pyro.plate("data", len(x)):
            pyro.sample("c", dist.Bernoulli(probs), infer={"enumerate": "parallel"})

    return model, guide, (x,), {}


@program(pyro="warns", latents="discrete", reason="you need to use TraceEnum_ELBO")
def sequential_enumeration_in_guide():
    """A global guide site marked ``infer={"enumerate": "sequential"}``: one run of the pair per value."""
    x = torch.randn(4, generator=_generator(48))

    def model(x):
        c = pyro.sample("c", dist.Categorical(torch.tensor([0.2, 0.3, 0.5])))
        with pyro.plate("data", len(x)):
            pyro.sample("x", dist.Normal(c.float() - 1.0, 1.0), obs=x)

    def guide(x):
        probs = pyro.param("c_probs", torch.ones(3) / 3, constraint=constraints.simplex)
        pyro.sample("c", dist.Categorical(probs), infer={"enumerate": "sequential"})

    return model, guide, (x,), {}


@program(pyro="warns", latents="discrete", reason="you need to use TraceEnum_ELBO")
def enumerated_class_in_guide():
    """M2's guide: each datum's class enumerated, a continuous style drawn given the class and the datum."""
    x = torch.randn(5, generator=_generator(49))

    def model(x):
        with pyro.plate("data", len(x)):
            label = pyro.sample("y", dist.Categorical(logits=torch.zeros(3)))
            style = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(label.float() - 1.0 + style, 0.5), obs=x)

    def guide(x):
        logits = pyro.param("class_logits", torch.zeros(3))
        loc = pyro.param("style_loc", torch.zeros(3))
        with pyro.plate("data", len(x)):
            label = pyro.sample(
                "y", dist.Categorical(logits=logits + 0.1 * x[:, None]), infer={"enumerate": "parallel"}
            )
            pyro.sample("z", dist.Normal(loc[label] + 0.2 * x, 0.8))

    return model, guide, (x,), {}


@program(pyro="error", reason="model-side sequential enumeration is not implemented")
def sequential_enumeration_in_model():
    """A model site marked ``infer={"enumerate": "sequential"}`` and absent from the guide (Pyro enumerates
    model sites in parallel only)."""
    x = torch.randn(4, generator=_generator(50))

    def model(x):
        shift = pyro.sample("shift", dist.Normal(0.0, 1.0))
        with pyro.plate("data", len(x)):
            c = pyro.sample("c", dist.Bernoulli(0.5), infer={"enumerate": "sequential"})
            pyro.sample("x", dist.Normal(2.0 * c - 1.0 + shift, 1.0), obs=x)

    return model, _normal_guide_for("shift"), (x,), {}


@program(pyro="warns", reason="Found vars in model but not guide")
def enumerated_mixture_in_model():
    """A Gaussian mixture whose component the model enumerates (TraceEnum_ELBO's way), a shift drawn by the guide."""
    x = torch.randn(5, generator=_generator(45)) * 2.0

    def model(x):
        shift = pyro.sample("shift", dist.Normal(0.0, 1.0))
        locs = pyro.param("locs", torch.tensor([-1.0, 1.5]))
        with pyro.plate("data", len(x)):
            c = pyro.sample("c", dist.Categorical(torch.tensor([0.4, 0.6])), infer={"enumerate": "parallel"})
            pyro.sample("x", dist.Normal(locs[c] + shift, 1.0), obs=x)

    return model, _normal_guide_for("shift"), (x,), {}


@program(pyro="warns", reason="Found vars in model but not guide")
def enumerated_markov_chain():
    """Two sequences of a hidden Markov chain, the states enumerated along ``pyro.markov``; the guide draws a shift."""
    x = torch.randn(2, 4, generator=_generator(46))

    def model(x):
        transition = pyro.param("transition", torch.tensor([[0.7, 0.3], [0.2, 0.8]]), constraint=constraints.simplex)
        shift = pyro.sample("shift", dist.Normal(0.0, 1.0))
        with pyro.plate("sequences", x.shape[0], dim=-1):
            state = torch.tensor(0)
            for t in pyro.markov(range(x.shape[1])):
                state = pyro.sample(f"s_{t}", dist.Categorical(transition[state]), infer={"enumerate": "parallel"})
                pyro.sample(f"x_{t}", dist.Normal(2.0 * state.float() - 1.0 + shift, 1.0), obs=x[:, t])

    return model, _normal_guide_for("shift"), (x,), {}


@program(pyro="warns", reason="Found vars in model but not guide")
def enumerated_topics_in_nested_plates():
    """A topic per word, enumerated, inside words inside documents; each document's topic weights drawn by the guide."""
    words = torch.randint(0, 4, (3, 5), generator=_generator(47))

    def model(words):
        topic_words = pyro.param("topic_words", torch.full((2, 4), 0.25), constraint=constraints.simplex)
        with pyro.plate("documents", words.shape[0], dim=-2):
            weights = pyro.sample("weights", dist.Dirichlet(torch.ones(2)))
            with pyro.plate("words", words.shape[1], dim=-1):
                topic = pyro.sample("topic", dist.Categorical(weights), infer={"enumerate": "parallel"})
                pyro.sample("word", dist.Categorical(Vindex(topic_words)[topic]), obs=words)

    def guide(words):
        concentration = pyro.param("concentration", torch.ones(words.shape[0], 1, 2), constraint=constraints.positive)
        with pyro.plate("documents", words.shape[0], dim=-2):
            pyro.sample("weights", dist.Dirichlet(concentration))

    return model, guide, (words,), {}


# ---------------------------------------------------------------- pairs Pyro refuses


@program(pyro="error", reason="Model and guide shapes disagree at site 'loc'")
def shape_mismatch():
    """The guide's vector latent has 3 entries where the model's has 2."""
    x = torch.randn(4, 2, generator=_generator(45))

    def model(x):
        loc = pyro.sample("loc", dist.Normal(torch.zeros(2), 1.0).to_event(1))
        with pyro.plate("data", len(x)):
            pyro.sample("x", dist.Normal(loc, 1.0).to_event(1), obs=x)

    return model, _normal_guide_for("loc", (3,)), (x,), {}


@program(pyro="error", reason="Model and guide event_dims disagree at site 'loc'")
def event_dim_mismatch():
    """The model's vector latent is ``.to_event(1)``, the guide's is not."""
    x = torch.randn(4, 2, generator=_generator(46))

    def model(x):
        loc = pyro.sample("loc", dist.Normal(torch.zeros(2), 1.0).to_event(1))
        with pyro.plate("data", len(x)):
            pyro.sample("x", dist.Normal(loc, 1.0).to_event(1), obs=x)

    def guide(x):
        pyro.sample("loc", dist.Normal(pyro.param("loc_loc", torch.zeros(2)), 1.0))

    return model, guide, (x,), {}


@program(pyro="error", reason="Multiple sample sites named 'z'")
def duplicate_site_name():
    """The model samples ``"z"`` twice in a loop (a forgotten ``f"z_{i}"``)."""
    x = torch.randn(2, generator=_generator(47))

    def model(x):
        for i in range(len(x)):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample(f"x_{i}", dist.Normal(z, 1.0), obs=x[i])

    return model, _normal_guide_for("z"), (x,), {}


@program(pyro="error", reason="Multiple sample sites named 'data'")
def plate_recreated_by_name():
    """The sparse-gamma siblings with counts in both plates nested: each plate made a second time by name."""

    def model(counts):
        with pyro.plate("weights", 3):
            w = pyro.sample("w", dist.Gamma(1.0, 1.0))
        with pyro.plate("data", 4):
            z = pyro.sample("z", dist.Gamma(1.0, 1.0))
        with pyro.plate("data", 4, dim=-2), pyro.plate("weights", 3, dim=-1):
            pyro.sample("counts", dist.Poisson(z.unsqueeze(-1) * w), obs=counts)

    return model, _sparse_gamma_guide, (_sparse_gamma_counts(),), {}


@program(pyro="error", reason="Shape mismatch inside plate")
def plate_broadcast_error():
    """A parameter of 3 entries used inside a data plate of 4."""
    x = torch.randn(4, generator=_generator(48))

    def model(x):
        loc = pyro.sample("loc", dist.Normal(0.0, 1.0))
        offsets = pyro.param("offsets", torch.zeros(3))
        with pyro.plate("data", len(x)):
            pyro.sample("x", dist.Normal(loc + offsets, 1.0), obs=x)

    return model, _normal_guide_for("loc"), (x,), {}


@program(pyro="error", reason="invalid log_prob shape")
def batched_site_outside_plate():
    """Batched observations left outside the data plate that holds their latents."""
    x = torch.randn(4, generator=_generator(49))

    def model(x):
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
        pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    def guide(x):
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Normal(pyro.param("z_locs", torch.zeros(len(x))), 1.0))

    return model, guide, (x,), {}


@program(pyro="error", reason="invalid log_prob shape")
def batched_site_no_plates():
    """A batched latent and observation in a program with no plate at all."""
    x = torch.randn(3, generator=_generator(40))

    def model(x):
        z = pyro.sample("z", dist.Normal(torch.zeros(3), 1.0))
        pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    def guide(x):
        pyro.sample("z", dist.Normal(pyro.param("z_loc", torch.zeros(3)), 1.0))

    return model, guide, (x,), {}


@program(pyro="error", reason="collide at dim=")
def plate_dim_collision():
    """Nested plates both given ``dim=-1``."""
    x = torch.randn(3, 2, generator=_generator(50))

    def model(x):
        loc = pyro.sample("loc", dist.Normal(0.0, 1.0))
        with pyro.plate("rows", 3, dim=-1), pyro.plate("cols", 2, dim=-1):
            pyro.sample("x", dist.Normal(loc, 1.0), obs=x)

    return model, _normal_guide_for("loc"), (x,), {}


@program(pyro="error", reason="invalid shape of pyro.param")
def param_plate_size_mismatch():
    """A per-datum ``pyro.param`` of 5 entries inside a subsampled plate of 6."""
    x = torch.randn(6, generator=_generator(51))

    def model(x):
        loc = pyro.sample("loc", dist.Normal(0.0, 1.0))
        with pyro.plate("data", len(x), subsample_size=3) as idx:
            offsets = pyro.param("offsets", torch.zeros(len(x) - 1), event_dim=0)
            pyro.sample("x", dist.Normal(loc + offsets, 1.0), obs=x[idx])

    return model, _normal_guide_for("loc"), (x,), {}


@program(pyro="error", latents="discrete", reason="missing specification of has_rsample")
def factor_in_guide_without_has_rsample():
    """A guide ``pyro.factor`` that does not say whether it is reparameterised."""
    return _factor_guide_program(None)


PROGRAMS = [
    global_latent,
    vae_local_latents,
    global_and_local_latents,
    mixed_discrete_continuous,
    gaussian_mixture,
    sigmoid_belief_layer,
    nested_plates,
    sparse_gamma_siblings,
    sibling_plates_same_size,
    plate_reuse,
    plate_stack,
    block_plate_global,
    sequential_plate,
    sequential_plate_subsampled,
    sequential_in_vectorized_plate,
    vectorized_subsample,
    subsample_with_global,
    explicit_subsample,
    subsample_primitive,
    param_event_dim_in_plate,
    mask_false_in_model,
    mask_true_in_model,
    mask_false_in_model_and_guide,
    mask_true_in_model_and_guide,
    tensor_mask_in_plate,
    dist_mask_latents,
    broadcast_mask_nested,
    scale_whole_program,
    tensor_scale_in_plate,
    kl_annealing,
    factor_in_model,
    factor_in_guide_rsample,
    map_delta_guide,
    delta_event_dim,
    deterministic_site,
    auxiliary_guide_site,
    reparam_decentered,
    multivariate_normal_obs,
    ordered_logistic_obs,
    markov_time_series,
    pyro_module_methods,
    empty_guide_observed_model,
    empty_model_empty_guide,
    no_trainable_parameters,
    plate_in_guide_only,
    guide_site_not_in_model,
    model_latent_not_in_guide,
    enumerated_guide_site,
    sequential_enumeration_in_guide,
    enumerated_class_in_guide,
    enumerated_mixture_in_model,
    enumerated_markov_chain,
    enumerated_topics_in_nested_plates,
    sequential_enumeration_in_model,
    shape_mismatch,
    event_dim_mismatch,
    duplicate_site_name,
    plate_recreated_by_name,
    plate_broadcast_error,
    batched_site_outside_plate,
    batched_site_no_plates,
    plate_dim_collision,
    param_plate_size_mismatch,
    factor_in_guide_without_has_rsample,
]
