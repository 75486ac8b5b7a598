"""One training step of every engine, eager and compiled (``TrainingStep(compile=True)``), beside a hand-written step.

::

    python benchmarks/compiled_step.py --rounds 200 --json compiled_step.json
    python benchmarks/compiled_step.py --device cuda --batch-size 1000   # on a GPU (benchmarks/gpu.sh)

Models: the VAE 784-400-20 (svi, iwae K=5, avb) and the linear sigmoid belief net 200-200 (wake_sleep,
rws K=5, nvil, vimco K=5) on the embedded MNIST digits (threshold-binarized), Adam lr 1e-3, Pyro's
validation off after the first step (the ``TrainingStep`` default). For each engine: ``eager``
(``pplgen.TrainingStep``), ``compiled`` (the same with ``compile=True``) and, where the step is written out in
plain PyTorch in another benchmark, ``torch`` (svi from ``vae_step.py``; rws and nvil from
``sbn_vs_pyro.py``). The contestants of one engine start from the same weights and are timed in one process,
round-robin in a shuffled order each round after ``--warmup`` rounds (which include compilation); reported:
the median ms per step, ratios to the hand-written step (or to eager where there is none), images per
second, and the graphs and graph breaks ``torch._dynamo.explain`` finds in the engine's forward, with the
most frequent break reasons.
"""

import argparse
import collections
import copy
import json
import platform
import random
import statistics
import sys
import time
from pathlib import Path

import pyro
import torch
from torch import nn

import pplgen
from pplgen.models import VAE, SigmoidBeliefNet

sys.path.insert(0, str(Path(__file__).resolve().parent))
import sbn_vs_pyro
import vae_step

ENGINES = {
    "svi": ("vae", {}),
    "iwae": ("vae", {"num_particles": 5}),
    "avb": ("vae", {}),
    "wake_sleep": ("sbn", {}),
    "rws": ("sbn", {"num_particles": 5}),
    "nvil": ("sbn", {}),
    "vimco": ("sbn", {"num_particles": 5}),
}


class Eager:
    def __init__(self, family, engine, lr, compile, first_batch):
        self.trainer = pplgen.TrainingStep(family.model, family.guide, engine, lr=lr, compile=compile)
        self.trainer.setup(first_batch)

    def step(self, x):
        return self.trainer.step(x)["loss"]


def families(kind, device):
    torch.manual_seed(0)
    if kind == "vae":
        return VAE(784, 20, (400,)).to(device)
    return SigmoidBeliefNet(layers=sbn_vs_pyro.LAYERS, observed=784).to(device)


def hand_written(name, family, lr, device):
    """The plain PyTorch step of ``name`` on a copy of ``family``'s weights, or None."""
    if name == "svi":
        step = vae_step.HandWritten(family, lr)
        step.loss.to(device)
        return step
    if name == "rws":
        step = sbn_vs_pyro.TorchRWS(family, lr, ENGINES["rws"][1]["num_particles"])
        step.networks.to(device)
        return step
    if name == "nvil":
        baseline = nn.Sequential(
            nn.Linear(784, sbn_vs_pyro.BASELINE_HIDDEN),
            nn.Tanh(),
            nn.Linear(sbn_vs_pyro.BASELINE_HIDDEN, len(sbn_vs_pyro.LAYERS)),
        )
        step = sbn_vs_pyro.TorchNVIL(family, baseline, lr, pplgen.inference.get("nvil").decay)
        step.networks.to(device)
        step.extra.to(device)
        step.mean, step.var = step.mean.to(device), step.var.to(device)
        return step
    return None


def graph_breaks(name, kind, batch):
    """Graphs, breaks and the three most frequent break reasons of the engine's forward."""
    family = families(kind, batch.device)
    engine = pplgen.inference.get(name, **ENGINES[name][1]).to(batch.device)
    engine.check(family.model, family.guide, batch)
    torch._dynamo.reset()
    with pyro.validation_enabled(False):
        explanation = torch._dynamo.explain(lambda x: engine(family.model, family.guide, x).surrogate)(batch)
    reasons = collections.Counter(reason.reason.splitlines()[0][:90] for reason in explanation.break_reasons)
    return {
        "graphs": explanation.graph_count,
        "breaks": explanation.graph_break_count,
        "reasons": reasons.most_common(3),
    }


def time_engine(name, data, args):
    kind, options = ENGINES[name]
    first = next(data)
    base = families(kind, args.device)
    contestants = {
        "eager": Eager(
            copy.deepcopy(base), pplgen.inference.get(name, **options).to(args.device), args.lr, False, first
        ),
        "compiled": Eager(
            copy.deepcopy(base), pplgen.inference.get(name, **options).to(args.device), args.lr, True, first
        ),
    }
    reference = hand_written(name, copy.deepcopy(base), args.lr, args.device)
    if reference is not None:
        contestants["torch"] = reference
    times = {label: [] for label in contestants}
    order = random.Random(0)
    labels = list(contestants)
    with pyro.validation_enabled(False):
        for round_index in range(args.warmup + args.rounds):
            x = next(data)
            order.shuffle(labels)
            for label in labels:
                if args.device.type == "cuda":
                    torch.cuda.synchronize()
                start = time.perf_counter()
                contestants[label].step(x)
                if args.device.type == "cuda":
                    torch.cuda.synchronize()
                if round_index >= args.warmup:
                    times[label].append(time.perf_counter() - start)
    medians = {label: 1e3 * statistics.median(t) for label, t in times.items()}
    floor = medians.get("torch", medians["eager"])
    return {
        "median_ms": medians,
        "ratio": {label: ms / floor for label, ms in medians.items()},
        "images_per_s": {label: args.batch_size / (ms / 1e3) for label, ms in medians.items()},
        "reference": "torch" if "torch" in medians else "eager",
        **graph_breaks(name, kind, first),
    }


def batches(batch_size, device):
    x = pplgen.data.load("mnist", split="train", binarize="threshold").to(device)
    generator = torch.Generator().manual_seed(0)
    while True:
        order = torch.randperm(len(x), generator=generator).to(device)
        for start in range(0, len(x) - batch_size + 1, batch_size):
            yield x[order[start : start + batch_size]]


def print_table(results, args):
    print(
        f"\none step, batch {args.batch_size}, on {args.device}; median ms (ratio to the hand-written step, "
        "else to eager); graphs/breaks of the compiled forward"
    )
    print(
        f"{'engine':<11} {'torch':>8} {'eager':>15} {'compiled':>15} {'graphs':>7} {'breaks':>7}  most frequent break"
    )
    for name, row in results.items():
        ms, ratio = row["median_ms"], row["ratio"]
        torch_ms = f"{ms['torch']:.2f}" if "torch" in ms else "—"
        reason = row["reasons"][0][0] if row["reasons"] else ""
        print(
            f"{name:<11} {torch_ms:>8} {ms['eager']:>8.2f} ({ratio['eager']:.2f}×) "
            f"{ms['compiled']:>8.2f} ({ratio['compiled']:.2f}×) {row['graphs']:>7} {row['breaks']:>7}  {reason}"
        )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", type=torch.device, default=torch.device("cpu"))
    parser.add_argument("--engines", default=",".join(ENGINES), help="comma-separated engines")
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    data = batches(args.batch_size, args.device)
    results = {}
    for name in args.engines.split(","):
        results[name] = time_engine(name, data, args)
        print(f"{name}: {results[name]['median_ms']}", flush=True)
    print_table(results, args)
    if args.json:
        meta = {
            "torch": torch.__version__,
            "python": platform.python_version(),
            "threads": torch.get_num_threads(),
            "device": str(args.device),
            "batch_size": args.batch_size,
            "rounds": args.rounds,
        }
        args.json.write_text(json.dumps({"meta": meta, "engines": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
