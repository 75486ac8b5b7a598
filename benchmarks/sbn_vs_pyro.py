"""SBN 200-200 on binarized MNIST: pplgen ``rws`` and ``nvil`` against stock Pyro and hand-written PyTorch.

::

    python benchmarks/sbn_vs_pyro.py --part both --rounds 300 --budget 120 --output sbn_vs_pyro.json

The linear sigmoid belief net ``SigmoidBeliefNet(layers=(200, 200))`` with its
layered recognition net, on the fixed binarization of Larochelle & Murray
(``--root``, else ``$PPLGEN_BINARIZED_MNIST``, else
``../shared/data/binarized-mnist`` beside the repository; the script says so
and stops when the folder is absent), batches of 24 (as in NVIL), Adam lr 1e-3.
Every contestant starts from the same initial weights, in one process.

Reweighted wake-sleep, K=5 (wake-θ and wake-φ updates):

* ``pplgen``: ``pplgen.TrainingStep(sbn.model, sbn.guide, pplgen.inference.get("rws", num_particles=5))``;
* ``pyro``: ``pyro.infer.SVI`` with ``ReweightedWakeSleep(num_particles=5,
  vectorize_particles=True, max_plate_nesting=1)`` on thin wrappers
  ``model(observations)`` / ``guide(observations)`` around the same networks.
  Pyro self-normalizes the weights of the whole mini-batch as one sample
  (its docs: "mini-batch training is not supported"), where pplgen and the
  hand-written step weight each datum; the cost per step is the same;
* ``torch``: K×batch draws of the recognition net, log p and log q written
  out, per-datum softmax weights, the same surrogate, backward, Adam.

NVIL (one particle):

* ``pplgen``: ``pplgen.inference.get("nvil")`` with its defaults: per-layer
  local learning signals, an input-dependent baseline MLP 784-100-2 (tanh)
  fitted by squared error, running mean/variance normalization;
* ``pyro``: ``SVI`` with ``TraceGraph_ELBO`` (local signals found by provenance
  tracking) and Pyro's ``nn_baseline`` on each guide site: one 784-100-1 MLP
  per site, initialized to the pplgen baseline's output for that site; Pyro
  has no variance normalization;
* ``torch``: the pplgen estimator written out (same baseline weights);
  ``torch-reinforce``: plain score function, no baseline, for reference.

Pyro is driven as its docs show, through ``SVI`` and ``pyro.optim.Adam``
(torch's Adam per parameter, the same update); pplgen and the hand-written
steps use ``torch.optim.Adam``. Pyro's validation is off for all (``--validate``
turns it on for all, pplgen then checking every step like Pyro).

Part 1 times one training step (``--rounds`` rounds after ``--warmup``; each
round gives one step to every contestant on the same batch, in a shuffled
order) and reports medians, pplgen / torch and pyro / pplgen. Before that, a
check: from the same weights and the same seed before every step, pplgen and
the hand-written step must give the same first gradients and the same loss at
each of 3 steps (so the same particles and Adam updates), and Pyro's first
loss must be the same objective on the same particles (for RWS, the
whole-batch bound), each within a relative 1e-5 (float32 summation order).

Part 2 trains each contestant for the same ``--budget`` seconds of its own
step time (rounds interleaved as in part 1, each contestant on the same
sequence of batches) and scores the first ``--eval-limit`` test images with
``pplgen.evaluate.log_likelihood(sbn, test, num_samples=--eval-samples)``,
the recognition net as proposal; Pyro's contestants are scored on the very
networks they trained.
"""

import argparse
import copy
import json
import math
import os
import platform
import random
import statistics
import time
from pathlib import Path

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.infer import SVI, ReweightedWakeSleep, TraceGraph_ELBO
from torch import nn

import pplgen
import pplgen.inference
from pplgen.models import SigmoidBeliefNet

DEFAULT_ROOT = Path(__file__).resolve().parents[2] / "shared" / "data" / "binarized-mnist"
LAYERS = (200, 200)
OBSERVED = 784
BASELINE_HIDDEN = 100  # pplgen nvil's default baseline=(100,)
CHECK_STEPS = 3
CHECK_TOLERANCE = 1e-5  # relative: float32 sums of ~10^4 nats in another order differ by ~10^-7
ESTIMATORS = ("rws", "nvil")


# --------------------------------------------------------------------------
# Hand-written PyTorch
# --------------------------------------------------------------------------


def bernoulli_log_prob(logits, value):
    """log Bernoulli(value | logits) summed over the last dim."""
    return -F.binary_cross_entropy_with_logits(logits, value, reduction="none").sum(-1)


class TorchSBN(nn.Module):
    """The SBN's networks as plain torch modules, with its parameter names (state dicts interchange)."""

    def __init__(self, sbn):
        super().__init__()
        self.prior_logits = nn.Parameter(torch.empty_like(sbn.prior_logits))
        self.generative = nn.ModuleList(nn.Linear(f.in_features, f.out_features) for f in sbn.generative)
        self.recognition = nn.ModuleList(nn.Linear(g.in_features, g.out_features) for g in sbn.recognition)
        self.load_state_dict(sbn.state_dict())

    def guide(self, x, num_particles):
        """K particles from q(h | x): the layers from the data up, each ``(K, B, n)``, and their log q, ``(K, B)``."""
        h, layers, log_q = x, [], []
        for recognition in self.recognition:
            logits = recognition(h).expand(num_particles, len(x), -1)
            h = torch.bernoulli(torch.sigmoid(logits))
            layers.append(h)
            log_q.append(bernoulli_log_prob(logits, h))
        return layers, log_q

    def model(self, x, layers):
        """log p of the top layer, and log p(h_l | h_{l+1}) for l = 0 … L-1 with h_0 = x, each ``(K, B)``."""
        top = layers[-1]
        prior = bernoulli_log_prob(self.prior_logits.expand_as(top), top)
        below = [x.expand(*top.shape[:-1], -1), *layers[:-1]]
        conditionals = [bernoulli_log_prob(f(h), v) for f, h, v in zip(self.generative, layers, below)]
        return prior, conditionals


def local_signals(prior, conditionals, log_q):
    """NVIL's signal for each layer: the terms of log p − log q that it or the layers above it move."""
    signals, above = [], prior
    for conditional, guide in zip(reversed(conditionals), reversed(log_q)):
        above = above + conditional - guide
        signals.append(above)
    return signals[::-1]


def surrogate_with_value(value, estimator):
    """A scalar whose value is ``value`` and whose gradient is that of ``estimator``."""
    return value.detach() + (estimator - estimator.detach())


class TorchStep:
    """A hand-written training step on a :class:`TorchSBN` and ``extra`` modules, with Adam."""

    def __init__(self, sbn, lr, extra=()):
        self.networks = TorchSBN(sbn)
        self.extra = nn.ModuleList(extra)
        self.optimizer = torch.optim.Adam([*self.networks.parameters(), *self.extra.parameters()], lr=lr)

    def step(self, x):
        loss, surrogate = self.loss(x)
        self.optimizer.zero_grad(set_to_none=True)
        surrogate.backward()
        self.optimizer.step()
        return loss.item()

    def sbn(self):
        trained = SigmoidBeliefNet(layers=LAYERS, observed=OBSERVED)
        trained.load_state_dict(self.networks.state_dict())
        return trained


class TorchRWS(TorchStep):
    """Reweighted wake-sleep with per-datum weights, as pplgen's ``rws``."""

    def __init__(self, sbn, lr, num_particles):
        super().__init__(sbn, lr)
        self.num_particles = num_particles

    def loss(self, x):
        layers, log_q = self.networks.guide(x, self.num_particles)
        prior, conditionals = self.networks.model(x, layers)
        log_p, log_q = prior + sum(conditionals), sum(log_q)
        log_w = log_p - log_q
        weights = torch.softmax(log_w.detach(), dim=0)
        bound = (torch.logsumexp(log_w, dim=0) - math.log(self.num_particles)).sum()
        return -bound.detach(), surrogate_with_value(-bound, -(weights * (log_p + log_q)).sum())


class TorchNVIL(TorchStep):
    """NVIL as pplgen's ``nvil`` computes it: local signals, baseline MLP, running normalization."""

    def __init__(self, sbn, baseline, lr, decay):
        super().__init__(sbn, lr, extra=[copy.deepcopy(baseline)])
        self.decay = decay
        self.mean = torch.zeros(len(LAYERS))
        self.var = torch.ones(len(LAYERS))

    def loss(self, x):
        layers, log_q = self.networks.guide(x, 1)
        prior, conditionals = self.networks.model(x, layers)
        log_p = prior + sum(conditionals)
        elbo = (log_p - sum(log_q)).sum()
        signals = torch.stack(local_signals(prior, conditionals, log_q)).detach()  # (layers, 1, B)
        baseline = self.extra[0](x).T.unsqueeze(1)
        residual = signals - baseline.detach()
        with torch.no_grad():
            self.mean.lerp_(residual.mean((1, 2)), 1 - self.decay)
            self.var.lerp_(residual.var((1, 2), unbiased=False), 1 - self.decay)
        mean, std = self.mean.view(-1, 1, 1), self.var.sqrt().clamp(min=1.0).view(-1, 1, 1)
        baseline_loss = (signals - mean - baseline).pow(2).sum()
        score = ((residual - mean) / std * torch.stack(log_q)).sum()
        return -elbo.detach(), surrogate_with_value(-elbo, -(log_p.sum() + score) + baseline_loss)


class TorchREINFORCE(TorchStep):
    """The plain score-function estimator of the ELBO: no baseline, one signal for all layers."""

    def loss(self, x):
        layers, log_q = self.networks.guide(x, 1)
        prior, conditionals = self.networks.model(x, layers)
        log_p, log_q = prior + sum(conditionals), sum(log_q)
        elbo = (log_p - log_q).sum()
        return -elbo.detach(), surrogate_with_value(-elbo, -(log_p + (log_p - log_q).detach() * log_q).sum())


def whole_batch_rws_loss(networks, x, num_particles):
    """−log (1/K) Σ_k Π_n w_kn: the bound Pyro's RWS reports, one importance weight for the whole batch."""
    with torch.no_grad():
        layers, log_q = networks.guide(x, num_particles)
        prior, conditionals = networks.model(x, layers)
        log_w = (prior + sum(conditionals) - sum(log_q)).sum(-1)
        return -(torch.logsumexp(log_w, dim=0) - math.log(num_particles)).item()


# --------------------------------------------------------------------------
# pplgen and Pyro
# --------------------------------------------------------------------------


class SBNStep:
    """A training step that trains a :class:`SigmoidBeliefNet` in place (``self.networks``)."""

    def sbn(self):
        return self.networks


class PplgenStep(SBNStep):
    """``pplgen.TrainingStep`` on the SBN, set up on ``first_batch`` (the pair check runs outside the steps)."""

    def __init__(self, sbn, engine, lr, validate, first_batch):
        self.networks = sbn
        self.trainer = pplgen.TrainingStep(sbn.model, sbn.guide, engine, lr=lr, validate_every_step=validate)
        self.trainer.setup(first_batch)

    def step(self, x):
        return self.trainer.step(x)["loss"]


def pplgen_nvil(baseline):
    """pplgen's ``nvil`` with its defaults, its baseline MLP loaded with ``baseline``'s weights."""
    engine = pplgen.inference.get("nvil")
    first, last = baseline[0], baseline[2]
    weights = {"weight0": first.weight, "bias0": first.bias, "weight1": last.weight, "bias1": last.bias}
    engine.baseline.load_state_dict(weights)
    return engine


def pyro_model(sbn):
    """``sbn.model`` with its parameters registered in Pyro's param store, as Pyro's ``SVI`` needs."""

    def model(observations):
        pyro.param("prior_logits", sbn.prior_logits)
        pyro.module("generative", sbn.generative)
        sbn.model(observations)

    return model


class PyroRWS(SBNStep):
    """``SVI`` with ``ReweightedWakeSleep``; the loss it returns is the wake-θ one."""

    def __init__(self, sbn, lr, num_particles):
        def guide(observations):
            pyro.module("recognition", sbn.recognition)
            sbn.guide(observations)

        self.networks = sbn
        rws = ReweightedWakeSleep(num_particles=num_particles, vectorize_particles=True, max_plate_nesting=1)
        self.svi = SVI(pyro_model(sbn), guide, pyro.optim.Adam({"lr": lr}), rws)

    def step(self, x):
        wake_theta_loss, _ = self.svi.step(observations=x)
        return wake_theta_loss


def per_site_baselines(shared):
    """One 784-100-1 tanh MLP per guide site, each starting equal to ``shared``'s output for its site."""
    sites = []
    for site in range(shared[2].out_features):
        head = nn.Linear(BASELINE_HIDDEN, 1)
        with torch.no_grad():
            head.weight.copy_(shared[2].weight[site : site + 1])
            head.bias.copy_(shared[2].bias[site : site + 1])
        sites.append(nn.Sequential(copy.deepcopy(shared[0]), nn.Tanh(), head, nn.Flatten(0)))
    return nn.ModuleList(sites)


class PyroNVIL(SBNStep):
    """``SVI`` with ``TraceGraph_ELBO`` and one ``nn_baseline`` per guide site."""

    def __init__(self, sbn, baselines, lr):
        def guide(observations):
            pyro.module("recognition", sbn.recognition)
            pyro.module("baselines", baselines)
            with pyro.plate("data", len(observations)):
                h = observations
                for name, recognition, baseline in zip(sbn.latent_names, sbn.recognition, baselines):
                    infer = {"baseline": {"nn_baseline": baseline, "nn_baseline_input": observations}}
                    h = pyro.sample(name, dist.Bernoulli(logits=recognition(h)).to_event(1), infer=infer)

        self.networks = sbn
        self.svi = SVI(pyro_model(sbn), guide, pyro.optim.Adam({"lr": lr}), TraceGraph_ELBO())

    def step(self, x):
        return self.svi.step(x)


# --------------------------------------------------------------------------
# Contestants
# --------------------------------------------------------------------------


class Contestant:
    """A training step under its own Pyro param-store scope; records the seconds of each step and their total."""

    def __init__(self, estimator, name, trainer):
        self.estimator, self.name, self.trainer = estimator, name, trainer
        self.scope = {"params": {}, "constraints": {}}
        self.times = []
        self.seconds = 0.0

    @property
    def label(self):
        return f"{self.estimator} {self.name}"

    def step(self, x, record=True):
        with pyro.get_param_store().scope(self.scope):
            start = time.perf_counter()
            loss = self.trainer.step(x)
            elapsed = time.perf_counter() - start
        if record:
            self.times.append(elapsed)
            self.seconds += elapsed
        return loss


def contestants(first_batch, args):
    """Every contestant, built from the same initial SBN (and NVIL baseline) weights."""
    torch.manual_seed(args.seed)
    sbn = SigmoidBeliefNet(layers=LAYERS, observed=OBSERVED)
    baseline = nn.Sequential(nn.Linear(OBSERVED, BASELINE_HIDDEN), nn.Tanh(), nn.Linear(BASELINE_HIDDEN, len(LAYERS)))
    k, lr = args.particles, args.lr
    rws_engine = pplgen.inference.get("rws", num_particles=k)
    nvil_engine = pplgen_nvil(baseline)
    decay = nvil_engine.decay
    return [
        Contestant("rws", "pplgen", PplgenStep(copy.deepcopy(sbn), rws_engine, lr, args.validate, first_batch)),
        Contestant("rws", "pyro", PyroRWS(copy.deepcopy(sbn), lr, k)),
        Contestant("rws", "torch", TorchRWS(sbn, lr, k)),
        Contestant("nvil", "pplgen", PplgenStep(copy.deepcopy(sbn), nvil_engine, lr, args.validate, first_batch)),
        Contestant("nvil", "pyro", PyroNVIL(copy.deepcopy(sbn), per_site_baselines(baseline), lr)),
        Contestant("nvil", "torch", TorchNVIL(sbn, baseline, lr, decay)),
        Contestant("nvil", "torch-reinforce", TorchREINFORCE(sbn, lr)),
    ]


def batches(data, batch_size, seed):
    """Mini-batches of ``data`` in shuffled passes, the same sequence for the same seed."""
    generator = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(len(data), generator=generator)
        for start in range(0, len(data) - batch_size + 1, batch_size):
            yield data[order[start : start + batch_size]]


# --------------------------------------------------------------------------
# Same samples, same numbers
# --------------------------------------------------------------------------


def same_samples_check(x, args):
    """Fresh contestants run ``CHECK_STEPS`` steps on ``x``, the RNG seeded with the step number before each.

    Returns one row per estimator: the losses of pplgen, torch and pyro, the
    largest |pplgen − torch| loss difference, the largest difference of their
    first gradients relative to the largest gradient, the value Pyro's first
    loss should have, and whether each pair agrees within ``CHECK_TOLERANCE``.
    """
    runners = {c.label: c for c in contestants(x, args)}
    losses, first_gradients = {}, {}
    for label, runner in runners.items():
        losses[label] = []
        for step in range(CHECK_STEPS):
            pyro.set_rng_seed(step)
            losses[label].append(runner.step(x, record=False))
            if step == 0:
                parameters = runner.trainer.networks.named_parameters()
                first_gradients[label] = {name: p.grad.clone() for name, p in parameters}
    torch.manual_seed(args.seed)
    initial = TorchSBN(SigmoidBeliefNet(layers=LAYERS, observed=OBSERVED))
    pyro.set_rng_seed(0)
    expected_pyro = {"rws": whole_batch_rws_loss(initial, x, args.particles), "nvil": losses["nvil pplgen"][0]}
    rows = {}
    for estimator in ESTIMATORS:
        ours, floor = f"{estimator} pplgen", f"{estimator} torch"
        loss_difference = max(abs(a - b) for a, b in zip(losses[ours], losses[floor]))
        gradient_difference = relative_difference(first_gradients[ours], first_gradients[floor])
        pyro_first = losses[f"{estimator} pyro"][0]
        rows[estimator] = {
            "pplgen_losses": losses[ours],
            "torch_losses": losses[floor],
            "pyro_losses": losses[f"{estimator} pyro"],
            "max_loss_difference": loss_difference,
            "relative_gradient_difference": gradient_difference,
            "pyro_first_loss_expected": expected_pyro[estimator],
            "pplgen_equals_torch": loss_difference <= CHECK_TOLERANCE * abs(losses[floor][0])
            and gradient_difference <= CHECK_TOLERANCE,
            "pyro_equals_expected": abs(pyro_first - expected_pyro[estimator]) <= CHECK_TOLERANCE * abs(pyro_first),
        }
    return rows


def relative_difference(gradients, reference):
    """max |g − g_ref| over all elements, over max |g_ref|."""
    difference = max((g - reference[name]).abs().max().item() for name, g in gradients.items())
    return difference / max(g.abs().max().item() for g in reference.values())


def print_check(rows):
    print(f"\nsame weights, same seed before each of {CHECK_STEPS} steps (losses are batch totals, nats)")
    for estimator, row in rows.items():
        print(f"  {estimator} pplgen  " + " ".join(f"{v:12.4f}" for v in row["pplgen_losses"]))
        print(f"  {estimator} torch   " + " ".join(f"{v:12.4f}" for v in row["torch_losses"]))
        print(
            f"  {estimator}: max |pplgen - torch| loss {row['max_loss_difference']:.2e}; "
            f"first gradients differ by {row['relative_gradient_difference']:.2e} of the largest: "
            + agreement(row["pplgen_equals_torch"])
        )
        what = "whole-batch bound on the same particles" if estimator == "rws" else "pplgen's first loss"
        expected = row["pyro_first_loss_expected"]
        print(
            f"  {estimator} pyro first loss {row['pyro_losses'][0]:.4f}; {what}: {expected:.4f}: "
            + agreement(row["pyro_equals_expected"])
        )


def agreement(agrees):
    verdict = "same within" if agrees else "DIFFERENT beyond"
    return f"{verdict} {CHECK_TOLERANCE:g} (relative)"


# --------------------------------------------------------------------------
# Part 1: step time
# --------------------------------------------------------------------------


def step_times(train, args):
    data = batches(train, args.batch_size, seed=args.seed)
    runners = contestants(next(data), args)
    order = random.Random(args.seed)
    for round_index in range(args.warmup + args.rounds):
        x = next(data)
        order.shuffle(runners)
        for runner in runners:
            runner.step(x, record=round_index >= args.warmup)
    return {runner.label: time_summary(runner.times) for runner in sorted(runners, key=label_order)}


def label_order(runner):
    return ESTIMATORS.index(runner.estimator), runner.name


def time_summary(times):
    ms = [1e3 * t for t in times]
    q1, median, q3 = statistics.quantiles(ms, n=4)
    return {"median_ms": median, "q1_ms": q1, "q3_ms": q3, "steps": len(ms)}


def step_ratios(times):
    median = {label: row["median_ms"] for label, row in times.items()}
    return {
        estimator: {
            "pplgen / torch": median[f"{estimator} pplgen"] / median[f"{estimator} torch"],
            "pyro / pplgen": median[f"{estimator} pyro"] / median[f"{estimator} pplgen"],
        }
        for estimator in ESTIMATORS
    }


# --------------------------------------------------------------------------
# Part 2: quality at equal wall clock
# --------------------------------------------------------------------------


def quality(train, test, args):
    first = next(batches(train, args.batch_size, seed=args.seed))
    runners = contestants(first, args)
    streams = {runner.label: batches(train, args.batch_size, seed=args.seed) for runner in runners}
    order = random.Random(args.seed)
    active = list(runners)
    while active:
        order.shuffle(active)
        for runner in active:
            runner.step(next(streams[runner.label]))
        active = [runner for runner in active if runner.seconds < args.budget]
    rows = {}
    for runner in sorted(runners, key=label_order):
        pyro.set_rng_seed(args.seed)
        start = time.perf_counter()
        log_likelihood = pplgen.evaluate.log_likelihood(runner.trainer.sbn(), test, num_samples=args.eval_samples)
        rows[runner.label] = {
            "steps": len(runner.times),
            "train_s": runner.seconds,
            "test_log_likelihood": log_likelihood.mean().item(),
            "eval_s": time.perf_counter() - start,
        }
        row = rows[runner.label]
        print(f"  {runner.label}: {row['steps']} steps, test LL {row['test_log_likelihood']:.2f}", flush=True)
    return rows


# --------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------


def print_step_tables(times, ratios):
    print("\n| estimator | contestant | median ms/step | IQR (q1–q3) |")
    print("|---|---|---|---|")
    for label, row in times.items():
        estimator, name = label.split(" ", 1)
        iqr = f"{row['q3_ms'] - row['q1_ms']:.2f} ({row['q1_ms']:.2f}–{row['q3_ms']:.2f})"
        print(f"| {estimator} | {name} | {row['median_ms']:.2f} | {iqr} |")
    print("\n| estimator | pplgen / torch | pyro / pplgen |")
    print("|---|---|---|")
    for estimator, row in ratios.items():
        print(f"| {estimator} | {row['pplgen / torch']:.2f} | {row['pyro / pplgen']:.2f} |")


def print_quality_table(rows, args):
    print(
        f"\nEqual budget of {args.budget:g} s of step time each; test LL (nats per datum) with "
        f"K={args.eval_samples} on the first {args.eval_limit} test images"
    )
    print("\n| estimator | contestant | steps | train s | test LL |")
    print("|---|---|---|---|---|")
    for label, row in rows.items():
        estimator, name = label.split(" ", 1)
        print(f"| {estimator} | {name} | {row['steps']:,} | {row['train_s']:.0f} | {row['test_log_likelihood']:.2f} |")


def arguments():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--part", choices=("1", "2", "both"), default="both", help="1: step time, 2: quality")
    parser.add_argument(
        "--root",
        type=Path,
        default=Path(os.environ.get("PPLGEN_BINARIZED_MNIST", DEFAULT_ROOT)),
        help="folder of binarized_mnist_*.amat[.gz] (default: $PPLGEN_BINARIZED_MNIST, else shared/data/...)",
    )
    parser.add_argument("--batch-size", type=int, default=24)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--particles", type=int, default=5, help="K of rws")
    parser.add_argument("--rounds", type=int, default=300, help="timed rounds of part 1, a step of each contestant")
    parser.add_argument("--warmup", type=int, default=30, help="untimed rounds first")
    parser.add_argument("--budget", type=float, default=120, help="seconds of step time per contestant in part 2")
    parser.add_argument("--eval-samples", type=int, default=1000, help="importance samples K of the test LL")
    parser.add_argument("--eval-limit", type=int, default=1000, help="score the first N test images")
    parser.add_argument("--validate", action="store_true", help="Pyro's distribution checks on every step, for all")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", "--json", dest="output", metavar="OUT", help="write the results as JSON here")
    return parser.parse_args()


def main():
    args = arguments()
    if not args.root.is_dir():
        print(f"skipped: no binarized-MNIST folder at {args.root}; pass --root PATH (binarized_mnist_*.amat[.gz])")
        return
    pyro.enable_validation(args.validate)
    train = pplgen.data.load("binarized-mnist", "train", root=args.root)
    environment = {
        "torch": torch.__version__,
        "pyro": pyro.__version__,
        "python": platform.python_version(),
        "torch_threads": torch.get_num_threads(),
    }
    print(
        f"SBN {'-'.join(map(str, LAYERS))} linear, {len(train)} train images, batch {args.batch_size}, "
        f"Adam lr {args.lr}, rws K={args.particles}, Pyro validation {'on' if args.validate else 'off'}; "
        + ", ".join(f"{k} {v}" for k, v in environment.items())
    )
    record = {"environment": environment, "arguments": {**vars(args), "root": str(args.root)}}

    record["check"] = same_samples_check(next(batches(train, args.batch_size, seed=args.seed)), args)
    print_check(record["check"])
    if args.part in ("1", "both"):
        print(f"\npart 1: {args.warmup} warm-up + {args.rounds} timed rounds", flush=True)
        record["step_times"] = step_times(train, args)
        record["ratios"] = step_ratios(record["step_times"])
    if args.part in ("2", "both"):
        test = pplgen.data.load("binarized-mnist", "test", root=args.root)[: args.eval_limit]
        print(f"\npart 2: {args.budget:g} s of step time per contestant", flush=True)
        record["quality"] = quality(train, test, args)
    if "step_times" in record:
        print_step_tables(record["step_times"], record["ratios"])
    if "quality" in record:
        print_quality_table(record["quality"], args)
    if args.output:
        with open(args.output, "w") as out:
            json.dump(record, out, indent=2)


if __name__ == "__main__":
    main()
