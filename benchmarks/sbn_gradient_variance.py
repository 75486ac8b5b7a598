"""Gradient-estimator variance of REINFORCE, nvil, vimco and rws at the same SBN parameters.

::

    python benchmarks/sbn_gradient_variance.py --plot benchmarks/figures/sbn_gradient_variance.png

A linear SBN 200-200 is trained with ``nvil`` for ``--warmup`` seconds on
fixed-binarized MNIST (Adam lr 3e-4, batch 24), so the parameters are those
of a net in training, not of a random one. At those parameters, on one fixed
batch of 24 training images, ``pplgen.diagnostics.gradient_variance`` draws
``--estimates`` gradient estimates from each engine and reports the mean
per-coordinate variance and the signal-to-noise ratio ‖E g‖ / √(Σ Var g) of
the model (θ) and guide (φ) gradients:

* REINFORCE: ``nvil`` with ``baseline=None, normalize=False, local_signals=False``;
* nvil: the engine used for the warm-up, its baseline and statistics as
  trained (its guide gradient is divided by the running std, so the table
  also gives it with that division undone, the variance of the control
  variates alone);
* vimco K=5 and rws K=5 (their guide gradients estimate different objectives:
  the 5-sample bound, and wake-φ).
"""

import argparse
import time
from pathlib import Path

import pyro
import torch

import pplgen
from pplgen.diagnostics import gradient_variance
from pplgen.inference import get
from pplgen.models import SigmoidBeliefNet
from pplgen.plots import plot_gradient_variance

DEFAULT_ROOT = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "binarized-mnist"


def warm_up(sbn, engine, data, seconds, batch_size):
    trainer = pplgen.TrainingStep(sbn.model, sbn.guide, engine, lr=3e-4)
    generator = torch.Generator().manual_seed(0)
    start, steps = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        index = torch.randint(len(data), (batch_size,), generator=generator)
        trainer.step(data[index])
        steps += 1
    return steps


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="folder of binarized_mnist_*.amat[.gz]")
    parser.add_argument("--warmup", type=float, default=60.0, help="seconds of nvil training before measuring")
    parser.add_argument("--estimates", type=int, default=200, help="gradient estimates per engine")
    parser.add_argument("--plot", type=Path, help="write the bar chart here")
    args = parser.parse_args()
    if not args.root.is_dir():
        print(f"skipped: no binarized-MNIST folder at {args.root}; pass --root PATH (binarized_mnist_*.amat[.gz])")
        return
    data = pplgen.data.load("binarized-mnist", split="train", root=args.root)
    torch.manual_seed(0)
    pyro.set_rng_seed(0)
    sbn = SigmoidBeliefNet((200, 200))
    nvil = get("nvil")
    steps = warm_up(sbn, nvil, data, args.warmup, 24)
    batch = data[:24]
    engines = {
        "REINFORCE": get("nvil", baseline=None, normalize=False, local_signals=False),
        "nvil": nvil,
        "vimco K=5": get("vimco", num_particles=5),
        "rws K=5": get("rws", num_particles=5),
    }
    results = {
        label: gradient_variance(engine, sbn, batch, num_estimates=args.estimates) for label, engine in engines.items()
    }
    std = nvil.moments.var.sqrt().clamp(min=1.0)
    print(
        f"SBN 200-200 after {steps} nvil steps ({args.warmup:.0f} s); {args.estimates} estimates on one batch of 24; "
        f"nvil running std of the signals per layer: {[round(s, 2) for s in std.tolist()]}\n"
    )
    print("| estimator | θ variance | θ SNR | φ variance | φ SNR |\n|---|---|---|---|---|")
    for label, result in results.items():
        model, guide = result.groups["model"], result.groups["guide"]
        print(f"| {label} | {model.variance:.3g} | {model.snr:.3f} | {guide.variance:.3g} | {guide.snr:.3f} |")
    undone = results["nvil"].groups["guide"].variance * std.max() ** 2
    print(f"\nnvil φ variance with the normalization undone (× max std²): at most {undone:.3g}")
    if args.plot:
        args.plot.parent.mkdir(parents=True, exist_ok=True)
        plot_gradient_variance(results, args.plot, title="SBN 200-200 on binarized MNIST: gradient estimators")
        print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
