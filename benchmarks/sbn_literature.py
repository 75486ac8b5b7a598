"""Sigmoid belief nets on fixed-binarized MNIST with the four score-function engines, beside the papers.

::

    python benchmarks/sbn_literature.py --budget 150 --json sbn_literature.json

Each run trains a linear ``SigmoidBeliefNet`` (200, or 200-200) from the same
initial weights for the same wall-clock budget (``--budget`` seconds of
training, Adam lr 3e-4, batches of 24 as in the NVIL paper) with one engine:
``wake_sleep``, ``rws`` (K=5), ``nvil`` (baseline MLP of 100 tanh units,
normalization, local signals), ``vimco`` (K=5 and K=50). Then the test
log-likelihood is estimated by importance sampling with the recognition net
as proposal (``pplgen.evaluate.log_likelihood``, K = ``--eval-samples``) on
the first ``--eval-limit`` test images, and printed beside the published
test NLL for the same architecture (``PUBLISHED``; sources in the comments).
"""

import argparse
import json
import time
from pathlib import Path

import pyro
import torch

import pplgen
from pplgen.models import SigmoidBeliefNet

DEFAULT_ROOT = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "binarized-mnist"

RUNS = [
    ("wake_sleep", "wake_sleep", {}),
    ("rws K=5", "rws", {"num_particles": 5}),
    ("nvil", "nvil", {}),
    ("vimco K=5", "vimco", {"num_particles": 5}),
    ("vimco K=50", "vimco", {"num_particles": 50}),
]

# Test NLL in nats. Wake-sleep and NVIL: Mnih & Gregor (2014), Table 1, as quoted in ARM (Yin & Zhou 2019)
# Table 2a. RWS and VIMCO: Mnih & Rezende (2016), for SBN 200-200-200 only (no 200 or 200-200 figures).
PUBLISHED = {
    ("200", "wake_sleep"): 120.8,
    ("200", "nvil"): 113.1,
    ("200-200", "wake_sleep"): 107.7,
    ("200-200", "nvil"): 99.8,
}


def train(layers, engine_name, options, data, budget, lr, batch_size):
    """Train from seed 0 for ``budget`` seconds; the trained net and the steps and epochs done."""
    torch.manual_seed(0)
    pyro.set_rng_seed(0)
    sbn = SigmoidBeliefNet(layers)
    trainer = pplgen.TrainingStep(sbn.model, sbn.guide, pplgen.inference.get(engine_name, **options), lr=lr)
    generator = torch.Generator().manual_seed(0)
    start, steps = time.perf_counter(), 0
    while time.perf_counter() - start < budget:
        order = torch.randperm(len(data), generator=generator)
        for begin in range(0, len(data) - batch_size + 1, batch_size):
            trainer.step(data[order[begin : begin + batch_size]])
            steps += 1
            if time.perf_counter() - start >= budget:
                break
    return sbn, steps, steps * batch_size / len(data)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="folder of binarized_mnist_*.amat[.gz]")
    parser.add_argument("--budget", type=float, default=150.0, help="training seconds per run")
    parser.add_argument("--layers", default="200;200,200", help="architectures, ';'-separated (e.g. '200;200,200')")
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--batch-size", type=int, default=24)
    parser.add_argument("--eval-samples", type=int, default=1000, help="importance samples K of the test LL")
    parser.add_argument("--eval-limit", type=int, default=1000, help="score the first N test images")
    parser.add_argument("--json", metavar="OUT", help="write the results to this file")
    args = parser.parse_args()
    if not args.root.is_dir():
        print(f"skipped: no binarized-MNIST folder at {args.root}; pass --root PATH (binarized_mnist_*.amat[.gz])")
        return
    train_data = pplgen.data.load("binarized-mnist", split="train", root=args.root)
    test_data = pplgen.data.load("binarized-mnist", split="test", root=args.root)[: args.eval_limit]
    print(
        f"binarized MNIST: {len(train_data)} train, {len(test_data)} test images; {args.budget:.0f} s of training per "
        f"run, batch {args.batch_size}, Adam lr {args.lr}; test LL with K={args.eval_samples}; "
        f"torch {torch.__version__}, pyro {pyro.__version__}, {torch.get_num_threads()} threads"
    )
    rows = []
    for architecture in args.layers.split(";"):
        layers = tuple(int(n) for n in architecture.split(","))
        label = "-".join(map(str, layers))
        for name, engine_name, options in RUNS:
            sbn, steps, epochs = train(layers, engine_name, options, train_data, args.budget, args.lr, args.batch_size)
            pyro.set_rng_seed(1)
            nll = -pplgen.evaluate.log_likelihood(sbn, test_data, num_samples=args.eval_samples).mean().item()
            rows.append(
                {
                    "sbn": label,
                    "engine": name,
                    "steps": steps,
                    "epochs": epochs,
                    "test_nll": nll,
                    "published_nll": PUBLISHED.get((label, engine_name)),
                }
            )
            print(f"  SBN {label} {name}: {steps} steps ({epochs:.1f} epochs), test NLL {nll:.2f}", flush=True)
    print("\n| SBN | engine | steps | epochs | test NLL | published |\n|---|---|---|---|---|---|")
    for row in rows:
        published = "" if row["published_nll"] is None else f"{row['published_nll']:.1f}"
        print(
            f"| {row['sbn']} | {row['engine']} | {row['steps']} | {row['epochs']:.1f} | {row['test_nll']:.2f} | {published} |"
        )
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"arguments": {**vars(args), "root": str(args.root)}, "results": rows}, out, indent=2)


if __name__ == "__main__":
    main()
