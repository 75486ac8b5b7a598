"""Every score-function and relaxation engine on the sigmoid belief nets of the REBAR, RELAX and DisARM papers,
and on Jang et al.'s categorical VAE.

::

    OMP_NUM_THREADS=1 python benchmarks/discrete_estimators.py --setting linear --budget 300
    OMP_NUM_THREADS=1 python benchmarks/discrete_estimators.py --setting nonlinear --budget 300
    OMP_NUM_THREADS=1 python benchmarks/discrete_estimators.py --setting categorical --budget 300
    python benchmarks/discrete_estimators.py --report

On the fixed-binarized MNIST, each run trains one ``SigmoidBeliefNet`` with a
single stochastic layer of 200 Bernoulli units — ``linear`` (affine maps
between x and h) or ``nonlinear`` (two deterministic tanh layers of 200 on
either side) — or the categorical VAE (``pplgen.models.CategoricalVAE``, 20
one-hot latents of 10 classes, 784-512-256 ReLU MLPs) from the same initial weights (seed 0), Adam lr 3e-4, batches
of 24, for the same budget of ``--budget`` seconds of CPU time of its one
pinned thread (``time.process_time``, which other processes on the machine do
not change; evaluation is not counted). At checkpoints (10, 25, 50 and 100 %
of the budget) it records the test ELBO (one particle, the first
``--eval-limit`` test images) and the mean per-coordinate variance of the
guide-gradient estimate over ``--variance-estimates`` draws on one fixed batch
(``pplgen.diagnostics.gradient_variance``); at the end, the importance-sampled
test log-likelihood (K = ``--eval-samples``). Each run's result is a JSON file
under ``--out``; a run already there is skipped, so an interrupted benchmark
resumes where it stopped. ``--report`` prints the tables (markdown) and draws
the figures under ``benchmarks/figures/`` (named after the ``--out`` folder)
from all results.
"""

import argparse
import json
import math
import time
from pathlib import Path

import pyro
import torch

import pplgen
from pplgen.diagnostics import gradient_variance
from pplgen.models import CategoricalVAE, SigmoidBeliefNet

HERE = Path(__file__).resolve().parent
DEFAULT_ROOT = HERE.parent / ".." / "shared" / "data" / "binarized-mnist"
DEFAULT_OUT = HERE / "results" / "discrete_estimators"
FIGURES = HERE / "figures"

#: (label, engine, options): two particles (or one antithetic pair) for the multi-sample engines, one otherwise,
#: as the papers run them.
SBN_RUNS = [
    ("wake_sleep", "wake_sleep", {}),
    ("rws K=2", "rws", {"num_particles": 2}),
    ("nvil", "nvil", {}),
    ("vimco K=2", "vimco", {"num_particles": 2}),
    ("gumbel-ST τ=0.5", "gumbel", {"temperature": 0.5, "straight_through": True}),
    ("rebar", "rebar", {}),
    ("relax", "relax", {}),
    ("arm", "disarm", {"estimator": "arm"}),
    ("disarm", "disarm", {}),
]
#: The categorical VAE's engines; the temperature schedule is Jang et al.'s (τ from 1 to 0.5, rate 3e-5 per step).
CATEGORICAL_RUNS = [
    ("gumbel", "gumbel", {"temperature": 1.0, "anneal": (0.5, 3e-5)}),
    ("gumbel-ST", "gumbel", {"temperature": 1.0, "anneal": (0.5, 3e-5), "straight_through": True}),
    ("relax", "relax", {}),
    ("rws K=2", "rws", {"num_particles": 2}),
    ("vimco K=2", "vimco", {"num_particles": 2}),
]
SETTINGS = {
    "linear": (lambda: SigmoidBeliefNet(layers=(200,)), SBN_RUNS),
    "nonlinear": (lambda: SigmoidBeliefNet(layers=(200,), nonlinear=True, hidden=(200, 200)), SBN_RUNS),
    "categorical": (CategoricalVAE, CATEGORICAL_RUNS),
}
TITLES = {
    "linear": "SBN 200 linear",
    "nonlinear": "SBN 200 nonlinear",
    "categorical": "categorical VAE 20×10",
}

CHECKPOINTS = (0.1, 0.25, 0.5, 1.0)


def result_path(out, setting, label):
    return out / f"{setting}-{label.split()[0].replace('/', '_')}.json"


def train(setting, engine_name, options, data, test, args):
    """One run: the checkpoints' records and the final test log-likelihood."""
    torch.manual_seed(0)
    pyro.set_rng_seed(0)
    sbn = SETTINGS[setting][0]()
    engine = pplgen.inference.get(engine_name, **options)
    trainer = pplgen.TrainingStep(sbn.model, sbn.guide, engine, lr=args.lr)
    variance_batch = test[: args.batch_size]
    generator = torch.Generator().manual_seed(0)
    checkpoints = [fraction * args.budget for fraction in CHECKPOINTS]
    records, steps, seconds = [], 0, 0.0
    while checkpoints:
        order = torch.randperm(len(data), generator=generator)
        for begin in range(0, len(data) - args.batch_size + 1, args.batch_size):
            start = time.process_time()
            trainer.step(data[order[begin : begin + args.batch_size]])
            seconds += time.process_time() - start
            steps += 1
            if seconds >= checkpoints[0]:
                records.append(_checkpoint(sbn, engine, test, variance_batch, steps, seconds, args))
                print(f"    {steps} steps, {seconds:.0f} s: test ELBO {records[-1]['test_elbo']:.2f}", flush=True)
                checkpoints.pop(0)
                if not checkpoints:
                    break
    pyro.set_rng_seed(1)
    log_likelihood = pplgen.evaluate.log_likelihood(sbn, test, num_samples=args.eval_samples).mean().item()
    return {"records": records, "test_log_likelihood": log_likelihood}


def _checkpoint(sbn, engine, test, variance_batch, steps, seconds, args):
    pyro.set_rng_seed(2)
    test_elbo = pplgen.evaluate.elbo(sbn, test).mean().item()
    statistics = gradient_variance(engine, sbn, variance_batch, num_estimates=args.variance_estimates).groups["guide"]
    return {
        "steps": steps,
        "seconds": seconds,
        "test_elbo": test_elbo,
        "log10_guide_variance": math.log10(statistics.variance.item()),
    }


def run(args):
    if not args.root.is_dir():
        print(f"skipped: no binarized-MNIST folder at {args.root}; pass --root PATH (binarized_mnist_*.amat[.gz])")
        return
    torch.set_num_threads(1)
    data = pplgen.data.load("binarized-mnist", split="train", root=args.root)
    test = pplgen.data.load("binarized-mnist", split="test", root=args.root)[: args.eval_limit]
    args.out.mkdir(parents=True, exist_ok=True)
    print(
        f"binarized MNIST, {TITLES[args.setting]}: {len(data)} train, {len(test)} test images; {args.budget:.0f} CPU s "
        f"per run, batch {args.batch_size}, Adam lr {args.lr}; torch {torch.__version__}, 1 thread",
        flush=True,
    )
    for label, engine_name, options in SETTINGS[args.setting][1]:
        path = result_path(args.out, args.setting, label)
        if path.exists():
            print(f"  {label}: done before ({path.name})")
            continue
        print(f"  {label}", flush=True)
        result = train(args.setting, engine_name, options, data, test, args)
        record = {"setting": args.setting, "label": label, "engine": engine_name, "options": options, **result}
        record["arguments"] = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
        partial = path.with_suffix(".partial")
        partial.write_text(json.dumps(record, indent=2))
        partial.replace(path)
        print(f"    test log-likelihood {result['test_log_likelihood']:.2f} (K={args.eval_samples})", flush=True)


def report(args):
    results = [json.loads(p.read_text()) for p in sorted(args.out.glob("*.json"))]
    if not results:
        print(f"no results under {args.out}: run the benchmark first")
        return
    order = {label: i for runs in (SBN_RUNS, CATEGORICAL_RUNS) for i, (label, _, _) in enumerate(runs)}
    for setting in SETTINGS:
        rows = sorted((r for r in results if r["setting"] == setting), key=lambda r: order.get(r["label"], 99))
        if not rows:
            continue
        budget = rows[0]["arguments"]["budget"]
        header = " | ".join(f"ELBO at {f * budget:.0f} s" for f in CHECKPOINTS)
        print(f"\n{TITLES[setting]}, {budget:.0f} CPU s per run\n")
        print(f"| engine | steps | {header} | test log p(x) | log10 Var guide grad (start → end) |")
        print("|---|---|" + "---|" * len(CHECKPOINTS) + "---|---|")
        for r in sorted(rows, key=lambda r: -r["test_log_likelihood"]):
            elbos = " | ".join(f"{c['test_elbo']:.2f}" for c in r["records"])
            variance = f"{r['records'][0]['log10_guide_variance']:.2f} → {r['records'][-1]['log10_guide_variance']:.2f}"
            print(
                f"| {r['label']} | {r['records'][-1]['steps']} | {elbos} | {r['test_log_likelihood']:.2f} | {variance} |"
            )
    _figures(results, order, args.out.name)


def _figures(results, order, stem):
    """``{stem}_bound.png`` (test ELBO against CPU seconds) and ``{stem}_variance.png`` (log10 variance of the
    guide gradient against steps), one panel per setting, one colour per engine across panels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    FIGURES.mkdir(exist_ok=True)
    labels = list(dict.fromkeys(label for runs in (SBN_RUNS, CATEGORICAL_RUNS) for label, _, _ in runs))
    colours = {label: plt.get_cmap("tab20")(i / len(labels)) for i, label in enumerate(labels)}
    for key, x_key, y_label, suffix in (
        ("test_elbo", "seconds", "test ELBO (nats)", "bound"),
        ("log10_guide_variance", "steps", "log10 variance of the guide gradient", "variance"),
    ):
        settings = [s for s in SETTINGS if any(r["setting"] == s for r in results)]
        figure, axes = plt.subplots(1, len(settings), figsize=(5 * len(settings), 4.5), squeeze=False)
        for axis, setting in zip(axes[0], settings):
            for r in sorted((r for r in results if r["setting"] == setting), key=lambda r: order.get(r["label"], 99)):
                points = ([c[x_key] for c in r["records"]], [c[key] for c in r["records"]])
                axis.plot(*points, marker="o", label=r["label"], color=colours.get(r["label"]))
            axis.set_title(TITLES[setting])
            axis.set_xlabel("CPU seconds of training" if x_key == "seconds" else "steps")
            axis.set_ylabel(y_label)
            axis.grid(alpha=0.3)
            axis.legend(fontsize=7)
        figure.tight_layout()
        path = FIGURES / f"{stem}_{suffix}.png"
        figure.savefig(path, dpi=110)
        plt.close(figure)
        print(f"wrote {path}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="folder of binarized_mnist_*.amat[.gz]")
    parser.add_argument("--setting", choices=sorted(SETTINGS), default="linear")
    parser.add_argument("--budget", type=float, default=300.0, help="CPU seconds of training per run")
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--batch-size", type=int, default=24)
    parser.add_argument("--eval-samples", type=int, default=200, help="importance samples K of the test LL")
    parser.add_argument("--eval-limit", type=int, default=1000, help="score the first N test images")
    parser.add_argument("--variance-estimates", type=int, default=20, help="gradient draws per variance")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder of the runs' JSON results")
    parser.add_argument("--report", action="store_true", help="print the tables and draw the figures, then stop")
    args = parser.parse_args()
    report(args) if args.report else run(args)


if __name__ == "__main__":
    main()
