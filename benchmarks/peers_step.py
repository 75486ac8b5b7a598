"""One training step of pplgen, eager and traced, beside hand-written PyTorch, Pyro and NumPyro, in one process.

::

    python benchmarks/peers_step.py --batch-size 100 --json peers_step_100.json
    python benchmarks/peers_step.py --batch-size 1000 --rounds 100 --json peers_step_1000.json
    python benchmarks/peers_step.py --device cuda      # on a GPU (benchmarks/gpu.sh); NumPyro stays on its CPU

Both frameworks run on one thread (``torch.set_num_threads(1)``; ``XLA_FLAGS`` set below before JAX loads) and
the process is pinned to one core (``--core``, ``os.sched_setaffinity``): with the flags alone, XLA 0.10 still
runs a matrix product on two cores (measured: 786 µs of CPU time in 464 µs of wall time for 100×784 @ 784×400),
so ``--core -1`` (no pinning) times NumPyro with more cores than the others. Data: the embedded MNIST digits, threshold-binarized, Adam lr 1e-3, Pyro's validation off (pplgen's ``TrainingStep``
turns it off after its first step). Models and contenders:

* VAE 784-400-20 (tanh MLPs, Bernoulli logits, one reparameterized particle, the ELBO summed over the batch):
  ``pplgen`` (``TrainingStep`` with ``svi``, its default fused Adam), ``pplgen-foreach`` (the same with
  ``optimizer_options={"foreach": True}``, Adam as before the fused default), ``pplgen-traced`` (the same with
  ``compile="trace"``), ``torch``
  (the step written out, ``benchmarks/vae_step.py``), ``torch-compiled`` (its loss under ``torch.compile``,
  eager Adam), ``pyro`` (``SVI`` + ``Trace_ELBO``), ``pyro-jit`` (``SVI`` + ``JitTrace_ELBO``) and ``numpyro``
  (``SVI.update`` under ``jax.jit``, the same networks as ``numpyro.param`` arrays, same initial weights).
* The linear sigmoid belief net 200-200 for the score-function engines ``rws`` (K = 5), ``vimco`` (K = 5) and
  ``nvil``: pplgen eager (fused and foreach Adam) and traced, the estimator written out in PyTorch (``torch``; rws and nvil from
  ``benchmarks/sbn_vs_pyro.py``, vimco here), Pyro where it has the estimator (``ReweightedWakeSleep``;
  ``TraceGraph_ELBO`` with one ``nn_baseline`` per site for nvil) and NumPyro's jitted ``TraceGraph_ELBO`` for
  nvil (score function with its dependency-graph signals; NumPyro has no baselines, RWS or VIMCO).

Each model's contenders start from the same weights and are timed round-robin, in a shuffled order each round,
after ``--warmup`` rounds (tracing and compilation happen there); reported: the median ms per step, and each
contender's ratio to pplgen eager, to the hand-written eager step and to NumPyro.
"""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")

import argparse
import copy
import json
import math
import platform
import random
import statistics
import sys
import time
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as nd
import pyro
import torch
from pyro.infer import SVI, JitTrace_ELBO, Trace_ELBO
from torch import nn

import pplgen
from pplgen.models import VAE, SigmoidBeliefNet

sys.path.insert(0, str(Path(__file__).resolve().parent))
import sbn_vs_pyro
import vae_step


class Timed:
    """A contender: a step function under its own Pyro param-store scope; the seconds of its timed steps."""

    def __init__(self, name, step):
        self.name, self.step_fn = name, step
        self.scope = {"params": {}, "constraints": {}}
        self.times = []

    def step(self, x, record):
        with pyro.get_param_store().scope(self.scope):
            start = time.perf_counter()
            self.step_fn(x)
            elapsed = time.perf_counter() - start
        if record:
            self.times.append(elapsed)


def pplgen_step(family, engine, lr, compile, first, optimizer_options=None):
    trainer = pplgen.TrainingStep(
        family.model, family.guide, engine, lr=lr, compile=compile, optimizer_options=optimizer_options
    )
    trainer.setup(first)
    return lambda x: trainer.step(x)["loss"]


# --------------------------------------------------------------------------
# VAE
# --------------------------------------------------------------------------


def torch_compiled_vae(base, lr):
    step = vae_step.HandWritten(base, lr)
    compiled = torch.compile(step.loss)

    def run(x):
        loss = compiled(x)
        step.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        step.optimizer.step()
        return loss.item()

    return run


def pyro_vae(base, lr, elbo):
    """Pyro's ``SVI`` with ``elbo`` on the VAE, its networks registered as in Pyro's VAE tutorial."""
    vae = copy.deepcopy(base)

    def model(x):
        pyro.module("decoder", vae.decoder)
        vae.model(x)

    def guide(x):
        pyro.module("encoder", vae.encoder)
        vae.guide(x)

    return SVI(model, guide, pyro.optim.Adam({"lr": lr}), elbo).step


class JittedSVI:
    """NumPyro's ``SVI.update`` on ``(model, guide)`` with ``elbo`` and Adam, under ``jax.jit``."""

    def __init__(self, model, guide, elbo, lr, first):
        svi = numpyro.infer.SVI(model, guide, numpyro.optim.Adam(lr), elbo)
        self.state = svi.init(jax.random.PRNGKey(0), _jax(first))
        self.update = jax.jit(svi.update)

    def __call__(self, x):
        self.state, loss = self.update(self.state, _jax(x))
        return float(loss.block_until_ready())


def numpyro_vae(base, lr, first):
    """The VAE in NumPyro: the same MLPs as ``numpyro.param`` arrays (same initial weights)."""
    weights = {k: jnp.asarray(v.detach().numpy()) for k, v in vae_step.TorchELBO(base).state_dict().items()}
    latent = base.latent_dim

    def mlp(prefix, h):
        w1, b1 = (
            numpyro.param(f"{prefix}.0.w", weights[f"{prefix}.0.weight"].T),
            numpyro.param(f"{prefix}.0.b", weights[f"{prefix}.0.bias"]),
        )
        w2, b2 = (
            numpyro.param(f"{prefix}.2.w", weights[f"{prefix}.2.weight"].T),
            numpyro.param(f"{prefix}.2.b", weights[f"{prefix}.2.bias"]),
        )
        return jnp.tanh(h @ w1 + b1) @ w2 + b2

    def model(x):
        with numpyro.plate("data", x.shape[0]):
            z = numpyro.sample("z", nd.Normal(0.0, 1.0).expand([latent]).to_event(1))
            numpyro.sample("x", nd.Bernoulli(logits=mlp("decoder", z)).to_event(1), obs=x)

    def guide(x):
        with numpyro.plate("data", x.shape[0]):
            loc, raw_scale = jnp.split(mlp("encoder", x), 2, axis=-1)
            numpyro.sample("z", nd.Normal(loc, jax.nn.softplus(raw_scale) + 1e-4).to_event(1))

    return JittedSVI(model, guide, numpyro.infer.Trace_ELBO(), lr, first)


def vae_contenders(first, lr, device):
    torch.manual_seed(0)
    base = VAE(784, 20, (400,)).to(device)
    hand_written = vae_step.HandWritten(copy.deepcopy(base), lr)
    hand_written.loss.to(device)
    compiled = vae_step.HandWritten(copy.deepcopy(base), lr)
    compiled.loss.to(device)
    engine = lambda: pplgen.inference.get("svi").to(device)  # noqa: E731
    contenders = {
        "pplgen": pplgen_step(copy.deepcopy(base), engine(), lr, False, first),
        "pplgen-foreach": pplgen_step(copy.deepcopy(base), engine(), lr, False, first, {"foreach": True}),
        "pplgen-traced": pplgen_step(copy.deepcopy(base), engine(), lr, "trace", first),
        "torch": hand_written.step,
        "torch-compiled": torch_compiled_vae(copy.deepcopy(base), lr),
        "pyro": pyro_vae(base, lr, Trace_ELBO()),
        "pyro-jit": pyro_vae(base, lr, JitTrace_ELBO()),
    }
    if device == "cpu":
        contenders["numpyro"] = numpyro_vae(base.cpu(), lr, first)
    return contenders


# --------------------------------------------------------------------------
# Sigmoid belief net: rws, vimco, nvil
# --------------------------------------------------------------------------

SBN_ENGINES = {"rws": {"num_particles": 5}, "vimco": {"num_particles": 5}, "nvil": {}}


class TorchVIMCO(sbn_vs_pyro.TorchStep):
    """VIMCO (Mnih & Rezende 2016) written out: the K-sample bound, each particle's score weighted by its
    leave-one-out learning signal (the others' mean log-weight in its place)."""

    def __init__(self, sbn, lr, num_particles):
        super().__init__(sbn, lr)
        self.num_particles = num_particles

    def loss(self, x):
        layers, log_q = self.networks.guide(x, self.num_particles)
        prior, conditionals = self.networks.model(x, layers)
        log_q = sum(log_q)
        log_w = prior + sum(conditionals) - log_q
        k = self.num_particles
        bound = torch.logsumexp(log_w, dim=0) - math.log(k)
        others = (log_w.sum(0, keepdim=True) - log_w) / (k - 1)
        diagonal = torch.eye(k, dtype=torch.bool, device=log_w.device).unsqueeze(-1)
        swapped = torch.where(diagonal, others.unsqueeze(0), log_w.unsqueeze(1))  # (k, k', B): w_k' with k left out
        signal = bound - (torch.logsumexp(swapped, dim=1) - math.log(k))
        score = (signal.detach() * log_q).sum()
        return -bound.sum().detach(), sbn_vs_pyro.surrogate_with_value(-bound.sum(), -(bound.sum() + score))


def numpyro_nvil(sbn, lr, first):
    """NumPyro's ``TraceGraph_ELBO`` on the SBN (score function with its dependency graph's local signals, no
    baselines)."""
    weights = {k: jnp.asarray(v.detach().numpy()) for k, v in sbn.state_dict().items()}
    names = sbn.latent_names

    def linear(name):
        return numpyro.param(f"{name}.weight", weights[f"{name}.weight"].T), numpyro.param(
            f"{name}.bias", weights[f"{name}.bias"]
        )

    def model(x):
        prior = numpyro.param("prior_logits", weights["prior_logits"])
        with numpyro.plate("data", x.shape[0]):
            h = numpyro.sample(names[-1], nd.Bernoulli(logits=prior).to_event(1))
            for index in reversed(range(len(names))):
                w, b = linear(f"generative.{index}")
                name = names[index - 1] if index else "x"
                h = numpyro.sample(name, nd.Bernoulli(logits=h @ w + b).to_event(1), obs=None if index else x)

    def guide(x):
        with numpyro.plate("data", x.shape[0]):
            h = x
            for index, name in enumerate(names):
                w, b = linear(f"recognition.{index}")
                h = numpyro.sample(name, nd.Bernoulli(logits=h @ w + b).to_event(1))

    return JittedSVI(model, guide, numpyro.infer.TraceGraph_ELBO(), lr, first)


def sbn_contenders(name, first, lr, device):
    torch.manual_seed(0)
    base = SigmoidBeliefNet(layers=sbn_vs_pyro.LAYERS, observed=784).to(device)
    options = SBN_ENGINES[name]
    engine = lambda: pplgen.inference.get(name, **options).to(device)  # noqa: E731
    contenders = {
        "pplgen": pplgen_step(copy.deepcopy(base), engine(), lr, False, first),
        "pplgen-foreach": pplgen_step(copy.deepcopy(base), engine(), lr, False, first, {"foreach": True}),
        "pplgen-traced": pplgen_step(copy.deepcopy(base), engine(), lr, "trace", first),
    }
    if name == "rws":
        hand_written = sbn_vs_pyro.TorchRWS(base, lr, options["num_particles"])
        contenders["pyro"] = sbn_vs_pyro.PyroRWS(copy.deepcopy(base), lr, options["num_particles"]).step
    elif name == "vimco":
        hand_written = TorchVIMCO(base, lr, options["num_particles"])
    else:
        shared = nn.Sequential(nn.Linear(784, sbn_vs_pyro.BASELINE_HIDDEN), nn.Tanh(), nn.Linear(100, 2))
        hand_written = sbn_vs_pyro.TorchNVIL(base, shared, lr, pplgen.inference.get("nvil").decay)
        hand_written.mean, hand_written.var = hand_written.mean.to(device), hand_written.var.to(device)
        hand_written.extra.to(device)
        baselines = sbn_vs_pyro.per_site_baselines(shared).to(device)
        contenders["pyro"] = sbn_vs_pyro.PyroNVIL(copy.deepcopy(base), baselines, lr).step
        if device == "cpu":
            contenders["numpyro"] = numpyro_nvil(base.cpu(), lr, first)
    hand_written.networks.to(device)
    contenders["torch"] = hand_written.step
    return contenders


# --------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------


def _jax(x):
    return jnp.asarray(x.cpu().numpy())


def batches(batch_size, device):
    x = pplgen.data.load("mnist", split="train", binarize="threshold")
    generator = torch.Generator().manual_seed(0)
    while True:
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x) - batch_size + 1, batch_size):
            yield x[order[start : start + batch_size]].to(device)


def time_contenders(contenders, data, args):
    runners = [Timed(name, step) for name, step in contenders.items()]
    order = random.Random(0)
    for round_index in range(args.warmup + args.rounds):
        x = next(data)
        order.shuffle(runners)
        for runner in runners:
            runner.step(x, record=round_index >= args.warmup)
        if args.device == "cuda":
            torch.cuda.synchronize()
    return {runner.name: 1e3 * statistics.median(runner.times) for runner in runners}


def ratios(medians):
    out = {}
    for reference in ("pplgen", "torch", "numpyro"):
        if reference in medians:
            out[f"/ {reference}"] = {name: ms / medians[reference] for name, ms in medians.items()}
    return out


def print_table(title, medians):
    table = ratios(medians)
    print(f"\n{title}")
    print(f"{'contender':<16} {'median ms':>10} " + " ".join(f"{r:>10}" for r in table))
    for name, ms in sorted(medians.items(), key=lambda item: item[1]):
        cells = " ".join(f"{table[r][name]:>10.3f}" for r in table)
        print(f"{name:<16} {ms:>10.3f} {cells}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=300, help="timed rounds (one step of each contender per round)")
    parser.add_argument("--warmup", type=int, default=30, help="untimed rounds first (tracing, compilation)")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--core", type=int, default=0, help="pin the process to this CPU core (-1: no pinning)")
    parser.add_argument("--models", nargs="+", default=["vae", *SBN_ENGINES], choices=["vae", *SBN_ENGINES])
    parser.add_argument("--json", metavar="OUT", help="write the results to this file")
    args = parser.parse_args()

    if args.core >= 0:
        os.sched_setaffinity(0, {args.core})
    torch.set_num_threads(1)
    pyro.enable_validation(False)
    warnings.filterwarnings("ignore", message=".*record_function.*")
    environment = {
        "torch": torch.__version__,
        "pyro": pyro.__version__,
        "numpyro": numpyro.__version__,
        "jax": jax.__version__,
        "python": platform.python_version(),
        "device": torch.cuda.get_device_name() if args.device == "cuda" else platform.processor() or "cpu",
        "torch_threads": torch.get_num_threads(),
        "xla_flags": os.environ["XLA_FLAGS"],
        "cores": sorted(os.sched_getaffinity(0)),
        "batch_size": args.batch_size,
        "rounds": args.rounds,
    }
    print(", ".join(f"{k} {v}" for k, v in environment.items()))
    results = {}
    for model in args.models:
        data = batches(args.batch_size, args.device)
        first = next(data)
        if model == "vae":
            contenders = vae_contenders(first, args.lr, args.device)
            title = "VAE 784-400-20, svi, one particle"
        else:
            contenders = sbn_contenders(model, first, args.lr, args.device)
            title = f"SBN 200-200, {model} {SBN_ENGINES[model] or ''}"
        results[model] = time_contenders(contenders, data, args)
        print_table(title, results[model])
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"environment": environment, "medians_ms": results}, out, indent=2)


if __name__ == "__main__":
    main()
