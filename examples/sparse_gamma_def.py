"""Sparse gamma deep exponential family on handwritten digits, with every engine.
==============================================================================

Story: a Bayesian factor model with three layers of non-negative, sparse
activations (Ranganath, Tang, Charlin & Blei 2015, "Deep Exponential
Families"), the model of Pyro's ``examples/sparse_gamma_def.py``. For each
image n, with Gamma(shape, rate) and weights shared by all images::

    W_l ~ Gamma(0.1, 0.3)                                  l = top, mid, bottom
    z_top,n ~ Gamma(0.1, 0.1)
    z_l,n ~ Gamma(0.1, 0.1 / (z_above,n W_above))         l = mid, bottom
    x_n ~ Poisson(z_bottom,n W_bottom)

The weights live in sibling plates that reuse ``dim=-1`` with other sizes
than the data plate, as in Pyro's program. The guide is mean-field Gamma with
one (shape, mean) pair of ``pyro.param``s per latent; it is not amortized, so
there are no held-out images to score without refitting. The script reports
each engine's final loss and, as a number all engines share, the ELBO per
image estimated with 100 particles by Pyro's ``Trace_ELBO``.

Data: scikit-learn's ``load_digits()`` (1,797 real 8×8 digits with pixel
counts 0–16, shipped in the scikit-learn wheel); the first ``--images``.

Run: ``.venv/bin/python examples/sparse_gamma_def.py`` (every engine;
``--engine svi`` for one, ``--smoke`` for a few steps).
"""

import math

import every_engine
import pyro
import pyro.distributions as dist
import torch
from pyro.infer import Trace_ELBO
from sklearn.datasets import load_digits
from torch.nn.functional import softplus

import pplgen

WIDTHS = {"top": 12, "mid": 8, "bottom": 4}
PIXELS = 64
ALPHA_Z, BETA_Z, ALPHA_W, BETA_W = 0.1, 0.1, 0.1, 0.3
# Floors on the guide's shapes and means: Gamma draws with tiny shape or mean
# have huge score and path gradients (Pyro's example clamps its parameters).
MIN_SHAPE, MIN_MEAN = 0.08, 0.01
SMOKE = {"steps": 3, "images": 20}
#: The DEF's priors chain the layers (z_mid's rate reads z_top and the weights), so avb contrasts the guide
#: with a Gaussian fitted to each step's particles instead of the prior.
ENGINE_OPTIONS = {"avb": {"adaptive_contrast": True, "num_particles": 8, "discriminator": (64, 64)}}


def weight_shape(layer):
    """(rows, columns) of the weights that map ``layer`` to the layer below (or to the pixels)."""
    below = {"top": "mid", "mid": "bottom"}.get(layer)
    return WIDTHS[layer], WIDTHS[below] if below else PIXELS


def as_matrix(w, layer):
    """Flat weights (with a leading particle dim or not) as a batch of matrices."""
    return w.reshape(w.shape[:-1] + weight_shape(layer))


def model(x):
    weights = {}
    for layer in WIDTHS:
        with pyro.plate(f"w_{layer}_plate", math.prod(weight_shape(layer)), dim=-1):
            w = pyro.sample(f"w_{layer}", dist.Gamma(x.new_tensor(ALPHA_W), x.new_tensor(BETA_W)))
        weights[layer] = as_matrix(w, layer)
    with pyro.plate("data", x.shape[0], dim=-1):
        top = dist.Gamma(x.new_tensor(ALPHA_Z), x.new_tensor(BETA_Z)).expand([WIDTHS["top"]])
        z = pyro.sample("z_top", top.to_event(1))
        for layer, above in [("mid", "top"), ("bottom", "mid")]:
            mean = z @ weights[above]
            z = pyro.sample(f"z_{layer}", dist.Gamma(ALPHA_Z, BETA_Z / mean).to_event(1))
        pyro.sample("x", dist.Poisson(z @ weights["bottom"]).to_event(1), obs=x)


def gamma_param(name, shape):
    """A mean-field Gamma with free shape and mean, initialised as in Pyro's example."""
    raw_shape = pyro.param(f"{name}_shape", lambda: 0.5 + 0.1 * torch.randn(shape))
    raw_mean = pyro.param(f"{name}_mean", lambda: 0.1 * torch.randn(shape))
    shape, mean = softplus(raw_shape) + MIN_SHAPE, softplus(raw_mean) + MIN_MEAN
    return dist.Gamma(shape, shape / mean)


def guide(x):
    for layer in WIDTHS:
        size = math.prod(weight_shape(layer))
        with pyro.plate(f"w_{layer}_plate", size, dim=-1):
            pyro.sample(f"w_{layer}", gamma_param(f"q_w_{layer}", (size,)))
    with pyro.plate("data", x.shape[0], dim=-1):
        for layer, width in WIDTHS.items():
            pyro.sample(f"z_{layer}", gamma_param(f"q_z_{layer}", (x.shape[0], width)).to_event(1))


def load_images(num_images):
    """The first ``num_images`` digits as pixel counts, ``(N, 64)`` float."""
    return torch.as_tensor(load_digits().data[:num_images], dtype=torch.float32)


@torch.no_grad()
def elbo_per_image(x, num_particles=100):
    """The ELBO of the trained pair, per image, by Pyro's vectorized Trace_ELBO."""
    loss = Trace_ELBO(num_particles=num_particles, vectorize_particles=True, max_plate_nesting=1)
    return -loss.loss(model, guide, x) / len(x)


def train(name, x, args):
    """Fit with one engine from fresh parameters; the final loss per image and the ELBO per image."""
    pyro.clear_param_store()
    engine = pplgen.inference.get(name, **ENGINE_OPTIONS.get(name, {}))
    result = pplgen.fit(
        model,
        engine,
        (x,),
        guide=guide,
        steps=args.steps,
        seed=args.seed,
        optimization=pplgen.Optimization(lr=args.lr),
        execution=pplgen.Execution(accelerator="cpu"),
    )
    loss, elbo = result.metric("loss")[-1], elbo_per_image(x)
    return loss, f"loss/image {loss:9.2f}   ELBO/image (K=100) {elbo:9.2f}"


def parse_args(argv):
    parser = every_engine.parser(__doc__.splitlines()[0], SMOKE)
    parser.add_argument("--steps", type=int, default=1500, help="steps, each on all images")
    parser.add_argument("--images", type=int, default=300, help="digits to fit")
    parser.add_argument("--lr", type=float, default=0.03)
    return every_engine.parse(parser, argv, SMOKE)


def main(argv=None):
    """Train with each engine; returns ``{engine: final loss per image, or the engine's refusal}``."""
    args = parse_args(argv)
    x = load_images(args.images)
    print(f"{len(x)} digits of {PIXELS} pixel counts, layers {WIDTHS}, {args.steps} steps")
    return every_engine.run(args, lambda name: train(name, x, args))


if __name__ == "__main__":
    main()
