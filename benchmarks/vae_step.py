"""Time one VAE training step: hand-written PyTorch vs pplgen ``svi`` vs stock Pyro SVI.

::

    python benchmarks/vae_step.py --rounds 2000 --json vae_step.json

All contenders train the same VAE (784-400-20, tanh MLPs, Bernoulli
likelihood, one reparameterized particle, the single-sample ELBO summed over
the batch, Adam lr 1e-3) from the same initial weights on the same batches of
the embedded MNIST digits (threshold-binarized); with the same seed they give
the same losses:

* ``torch``: encoder and decoder ``nn.Sequential``, the log-densities written out;
* ``pplgen``: ``pplgen.TrainingStep(vae.model, vae.guide, svi).step(x)``;
* ``pyro``: ``pyro.infer.SVI`` with ``Trace_ELBO`` and ``pyro.optim.Adam`` on
  ``vae.model`` / ``vae.guide``, each preceded by ``pyro.module`` for its network.

pplgen and Pyro run with Pyro's validation (distribution argument and support
checks) on, the default, and off (``-novalid``). With validation on, pplgen's
``TrainingStep`` checks the first step only unless ``validate_every_step=True``
(``pplgen-checked``, every step checked, as stock Pyro does). The contenders are
timed in one process, round-robin in a shuffled order each round after a
warm-up, so load from other processes hits them alike; each contender has its
own param-store scope, entered outside the timed region.

``--profile N`` then runs N steps of pplgen (validation off) and of the
hand-written step under cProfile and prints, per step, the cumulative time of
each phase, the forward pass (profiled alone) split by whose code spends it,
and the Python functions with the most own time in pplgen's forward pass
(validation off is what pplgen's ``TrainingStep`` runs after its first step by
default). cProfile slows Python-heavy code more than tensor kernels: read the
differences and shares, not the absolute figures.
"""

import argparse
import copy
import cProfile
import json
import math
import platform
import pstats
import random
import statistics
import time
from pathlib import Path

import pyro
import torch
import torch.nn.functional as F
from pyro.infer import SVI, Trace_ELBO
from torch import nn

import pplgen
import pplgen.inference
from pplgen.models import VAE

HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)
REPOSITORY = str(Path(__file__).resolve().parents[1])


class TorchELBO(nn.Module):
    """The VAE's negative single-sample ELBO, summed over the batch, in plain PyTorch."""

    def __init__(self, vae):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(784, 400), nn.Tanh(), nn.Linear(400, 2 * vae.latent_dim))
        self.decoder = nn.Sequential(nn.Linear(vae.latent_dim, 400), nn.Tanh(), nn.Linear(400, 784))
        self.encoder.load_state_dict(vae.encoder.state_dict())
        self.decoder.load_state_dict(vae.decoder.state_dict())

    def forward(self, x):
        loc, raw_scale = self.encoder(x).chunk(2, dim=-1)
        scale = F.softplus(raw_scale) + 1e-4
        z = loc + scale * torch.randn_like(loc)
        log_px = -F.binary_cross_entropy_with_logits(self.decoder(z), x, reduction="none").sum(-1)
        log_pz = (-0.5 * z.pow(2) - HALF_LOG_2PI).sum(-1)
        log_qz = (-0.5 * ((z - loc) / scale).pow(2) - scale.log() - HALF_LOG_2PI).sum(-1)
        return -(log_px + log_pz - log_qz).sum()


class HandWritten:
    def __init__(self, vae, lr):
        self.loss = TorchELBO(vae)
        self.optimizer = torch.optim.Adam(self.loss.parameters(), lr=lr)

    def forward_module(self):
        return self.loss

    def step(self, x):
        loss = self.loss(x)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss.item()


class PplgenSVI:
    def __init__(self, vae, lr, validate_every_step=False):
        engine = pplgen.inference.get("svi", num_particles=1)
        self.trainer = pplgen.TrainingStep(vae.model, vae.guide, engine, lr=lr, validate_every_step=validate_every_step)

    def forward_module(self):
        return self.trainer.engine

    def step(self, x):
        return self.trainer.step(x)["loss"]


class PyroSVI:
    """Stock Pyro; the networks are registered with ``pyro.module`` as in Pyro's VAE tutorial
    (calling ``vae.model`` directly does not enter the PyroModule's context)."""

    def __init__(self, vae, lr):
        def model(x):
            pyro.module("decoder", vae.decoder)
            vae.model(x)

        def guide(x):
            pyro.module("encoder", vae.encoder)
            vae.guide(x)

        self.svi = SVI(model, guide, pyro.optim.Adam({"lr": lr}), Trace_ELBO())

    def step(self, x):
        return self.svi.step(x)


class Contender:
    """A trainer run under a fixed validation setting and its own param-store scope."""

    def __init__(self, name, trainer, validation):
        self.name, self.trainer, self.validation = name, trainer, validation
        self.scope = {"params": {}, "constraints": {}}
        self.times = []

    def step(self, x, record):
        pyro.enable_validation(self.validation)
        with pyro.get_param_store().scope(self.scope):
            start = time.perf_counter()
            self.trainer.step(x)
            elapsed = time.perf_counter() - start
        if record:
            self.times.append(elapsed)


def contenders(lr):
    torch.manual_seed(0)
    base = VAE(784, 20, (400,))
    return [
        Contender("torch", HandWritten(base, lr), validation=False),
        Contender("pplgen", PplgenSVI(copy.deepcopy(base), lr), validation=True),
        Contender("pplgen-checked", PplgenSVI(copy.deepcopy(base), lr, validate_every_step=True), validation=True),
        Contender("pyro", PyroSVI(copy.deepcopy(base), lr), validation=True),
        Contender("pplgen-novalid", PplgenSVI(copy.deepcopy(base), lr), validation=False),
        Contender("pyro-novalid", PyroSVI(copy.deepcopy(base), lr), validation=False),
    ]


def batches(batch_size):
    x = pplgen.data.load("mnist", split="train", binarize="threshold")
    while True:
        order = torch.randperm(len(x))
        for start in range(0, len(x) - batch_size + 1, batch_size):
            yield x[order[start : start + batch_size]]


def summary(times):
    ms = [1e3 * t for t in times]
    q1, median, q3 = statistics.quantiles(ms, n=4)
    return {"median_ms": median, "q1_ms": q1, "q3_ms": q3, "iqr_ms": q3 - q1, "steps": len(ms)}


def benchmark(rounds, warmup, batch_size, lr):
    runners = contenders(lr)
    data = batches(batch_size)
    order = random.Random(0)
    for round_index in range(warmup + rounds):
        x = next(data)
        order.shuffle(runners)
        for runner in runners:
            runner.step(x, record=round_index >= warmup)
    pyro.enable_validation(True)
    return {runner.name: summary(runner.times) for runner in sorted(runners, key=lambda r: r.name)}


# (label, file, function) whose cumulative time is a phase of a step; "step" is the whole step.
PHASES = {
    "pplgen": [("step", "training.py", "step"), ("forward", "svi.py", "forward")],
    "torch": [("step", "vae_step.py", "step"), ("forward", "vae_step.py", "forward")],
}
SHARED_PHASES = [
    ("backward", "_tensor.py", "backward"),
    ("optimizer.step", "adam.py", "step"),
    ("optimizer.zero_grad", "optimizer.py", "zero_grad"),
]

# Where the forward pass's own (not cumulative) time is spent, by the first matching path fragment.
CATEGORIES = [
    ("tensor ops (torch C++ calls)", ("torch._C", "torch._ops", "built-in method torch", "of 'torch.")),
    ("Pyro effect handlers (plate, trace, replay)", ("/pyro/poutine/", "/pyro/primitives.py", "/pyro/util.py")),
    ("distribution objects (Pyro + torch Python)", ("/pyro/distributions/", "/torch/distributions/")),
    ("nn.Module call machinery", ("/torch/nn/",)),
    ("pplgen core and engine", ("/pplgen/", "/inference/")),
    ("model program (models/vae.py)", ("/models/",)),
    ("hand-written loss (this file)", ("vae_step.py",)),
    ("other Python (builtins, contextlib, ...)", ("",)),
]


def profile(num_steps, batch_size, lr):
    """cProfile ``num_steps`` steps of pplgen and of the hand-written step, interleaved (validation off).

    Returns ``{contender: {"phases": ..., "forward": ..., "functions": ...}}``:
    ``label -> [ms per step, calls per step]`` for the phases of a step and
    the forward pass by category, and the top Python functions of the forward
    pass as ``[name, cumulative ms, own ms, calls]`` per step.
    """
    pyro.enable_validation(False)
    torch.manual_seed(0)
    vae = VAE(784, 20, (400,))
    runners = {"pplgen": PplgenSVI(copy.deepcopy(vae), lr), "torch": HandWritten(vae, lr)}
    data = batches(batch_size)
    with pyro.get_param_store().scope():
        for _ in range(20):
            x = next(data)
            for runner in runners.values():
                runner.step(x)
        xs = [next(data) for _ in range(num_steps)]
        whole = _profiled_steps(runners, xs, forward_only=False)
        forward = _profiled_steps(runners, xs, forward_only=True)
    pyro.enable_validation(True)
    return {
        name: {
            "phases": _phases(whole[name], PHASES[name] + SHARED_PHASES, num_steps),
            "forward": _categories(forward[name], num_steps),
            "functions": _top_functions(forward[name], num_steps),
        }
        for name in runners
    }


def _profiled_steps(runners, xs, forward_only):
    """One profiler per runner, on around each step or only around its forward pass."""
    profilers = {name: cProfile.Profile() for name in runners}
    hooks = []
    if forward_only:
        for name, runner in runners.items():
            module, profiler = runner.forward_module(), profilers[name]
            hooks.append(module.register_forward_pre_hook(lambda *_, p=profiler: p.enable()))
            hooks.append(module.register_forward_hook(lambda *_, p=profiler: p.disable()))
    for x in xs:
        for name, runner in runners.items():
            if not forward_only:
                profilers[name].enable()
            runner.step(x)
            if not forward_only:
                profilers[name].disable()
    for hook in hooks:
        hook.remove()
    return {name: pstats.Stats(profiler).stats for name, profiler in profilers.items()}


def _phases(stats, phases, num_steps):
    rows = {}
    for label, filename, function in phases:
        found = [v for (path, _, name), v in stats.items() if path.endswith(filename) and name == function]
        rows[label] = [1e3 * sum(v[3] for v in found) / num_steps, sum(v[1] for v in found) / num_steps]
    rows["rest of the step"] = [
        rows["step"][0] - sum(rows[label][0] for label, *_ in phases if label != "step"),
        float("nan"),
    ]
    return rows


def _categories(stats, num_steps):
    rows = {label: [0.0, 0.0] for label, _ in CATEGORIES}
    for (path, _, name), (_, calls, own_time, *_) in stats.items():
        where = f"{path} {name}"
        label = next(label for label, fragments in CATEGORIES if any(f in where for f in fragments))
        rows[label][0] += 1e3 * own_time / num_steps
        rows[label][1] += calls / num_steps
    rows["forward total"] = [sum(ms for ms, _ in rows.values()), float("nan")]
    return rows


def _top_functions(stats, num_steps, count=15):
    """The Python functions outside ``torch.nn`` with the most own time in the forward pass."""
    rows = []
    for (path, line, name), (_, calls, own_time, cumulative, _) in stats.items():
        if path.startswith("~") or "/torch/nn/" in path or path.endswith("vae_step.py"):
            continue
        where = f"{_short(path)}:{line}({name})"
        rows.append([where, 1e3 * cumulative / num_steps, 1e3 * own_time / num_steps, calls / num_steps])
    return sorted(rows, key=lambda row: -row[2])[:count]


def _short(path):
    for prefix in ("site-packages/", f"{REPOSITORY}/"):
        if prefix in path:
            return path.split(prefix)[-1]
    return Path(path).name


def print_profile(results, num_steps):
    print(f"\ncProfile, {num_steps} steps each, validation off: ms per step (calls per step)")
    for table in ("phases", "forward"):
        title = "phase (cumulative)" if table == "phases" else "forward pass by own time"
        print(f"\n{title:<46} {'pplgen':>18} {'torch':>18} {'pplgen - torch':>15}")
        for label in results["pplgen"][table]:
            cells = [results[name][table][label] for name in ("pplgen", "torch")]
            text = [f"{ms:8.3f}" + (f" ({calls:6.1f})" if calls == calls else " " * 9) for ms, calls in cells]
            print(f"{label:<46} {text[0]:>18} {text[1]:>18} {cells[0][0] - cells[1][0]:>15.3f}")
    print(f"\npplgen forward: Python functions by own time {'cum ms':>29} {'own ms':>7} {'calls':>6}")
    for where, cumulative, own, calls in results["pplgen"]["functions"]:
        print(f"{where:<78} {cumulative:>7.3f} {own:>7.3f} {calls:>6.1f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=2000, help="timed rounds (one step of each contender per round)")
    parser.add_argument("--warmup", type=int, default=50, help="untimed rounds first")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--profile", type=int, default=300, metavar="N", help="profile N steps of each (0: skip)")
    parser.add_argument("--json", metavar="OUT", help="write the results to this file")
    args = parser.parse_args()

    environment = {
        "torch": torch.__version__,
        "pyro": pyro.__version__,
        "python": platform.python_version(),
        "torch_threads": torch.get_num_threads(),
        "batch_size": args.batch_size,
        "rounds": args.rounds,
    }
    print(", ".join(f"{k} {v}" for k, v in environment.items()))
    results = benchmark(args.rounds, args.warmup, args.batch_size, args.lr)
    print(f"\n{'contender':<16} {'median ms':>10} {'q1':>8} {'q3':>8} {'IQR':>8}")
    for name, row in results.items():
        print(f"{name:<16} {row['median_ms']:>10.3f} {row['q1_ms']:>8.3f} {row['q3_ms']:>8.3f} {row['iqr_ms']:>8.3f}")
    median = {name: row["median_ms"] for name, row in results.items()}
    ratios = {
        "pplgen / torch (validation on)": median["pplgen"] / median["torch"],
        "pplgen / torch (validation off)": median["pplgen-novalid"] / median["torch"],
        "pplgen-checked / torch": median["pplgen-checked"] / median["torch"],
        "pyro / pplgen (validation on)": median["pyro"] / median["pplgen"],
        "pyro / pplgen (validation off)": median["pyro-novalid"] / median["pplgen-novalid"],
        "pyro / pplgen-checked (validation on)": median["pyro"] / median["pplgen-checked"],
    }
    print()
    for name, ratio in ratios.items():
        print(f"{name:<38} {ratio:6.3f}")

    profiled = profile(args.profile, args.batch_size, args.lr) if args.profile else {}
    if profiled:
        print_profile(profiled, args.profile)
    if args.json:
        with open(args.json, "w") as out:
            record = {"environment": environment, "results": results, "ratios": ratios, "profile": profiled}
            json.dump(record, out, indent=2)


if __name__ == "__main__":
    main()
