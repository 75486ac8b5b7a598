"""How fast a traced VAE step can be in PyTorch on this CPU: the loss graph replayed with nothing around it, beside
pplgen's traced step and NumPyro's jitted step, in one process.

::

    python benchmarks/replay_floor.py --rounds 300

The hand-written VAE loss (``vae_step.TorchELBO``, 784-400-20) is traced once with ``make_fx`` and compiled by
TorchInductor, as ``compile="trace"`` does, and replayed two ways:

* ``replay+fused-adam``: the graph returns the loss and the gradients; torch's fused Adam and the non-finite
  parameter check run after it. This is pplgen's traced step without pplgen's bookkeeping (the graph's key, the
  list of state tensors, the metrics).
* ``replay+adam-in-graph``: Adam's update is written into the graph (gated on a finite loss, as pplgen's "no
  update on a non-finite loss" asks), and the graph returns the loss and the parameters' sums for the check.

beside ``pplgen-traced`` (``TrainingStep(..., compile="trace")``), ``pplgen-traced-dynamo`` (the same graph
replayed through ``torch.compile``, whose guards check it on every call) and ``numpyro`` (``SVI.update`` under
``jax.jit``), all from the same weights. Threads, pinning, data and timing as in ``peers_step.py``.
"""

import peers_step  # noqa: I001  (sets XLA_FLAGS before JAX loads)

import argparse
import copy
import math
import os

import pyro
import torch
from torch.fx.experimental.proxy_tensor import make_fx

import pplgen
import vae_step
from pplgen.models import VAE
from pplgen.traced import inductor

BETAS, EPS = (0.9, 0.999), 1e-8


def compiled(function, example_inputs):
    """``function`` traced and compiled as ``compile="trace"`` does it."""
    return inductor(make_fx(function)(*example_inputs), [t.detach() for t in example_inputs])


def through_dynamo(graph, example_inputs):
    """The traced graph replayed through ``torch.compile`` (Dynamo's guards checked on every call), as
    ``pplgen.traced`` did before it compiled with TorchInductor directly."""
    return torch.compile(graph, options={"fallback_random": True})


def pplgen_traced(base, lr, first, compiler=inductor):
    step = pplgen.TrainingStep(base.model, base.guide, pplgen.inference.get("svi"), lr=lr, compile="trace")
    step.traced.compiler = compiler
    step.setup(first)
    return lambda x: step.step(x)["loss"]


def adam_after_one_eager_step(loss, lr, first):
    """Fused Adam on the loss's parameters, its state made by one eager step."""
    params = list(loss.parameters())
    optimizer = torch.optim.Adam(params, lr=lr, fused=True)
    loss(first).backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return params, optimizer


def replay_with_fused_adam(base, lr, first):
    loss = vae_step.TorchELBO(copy.deepcopy(base))
    params, optimizer = adam_after_one_eager_step(loss, lr, first)

    def traced(*inputs):
        value = loss(inputs[-1])
        return [value.detach(), *torch.autograd.grad(value, params)]

    graph = compiled(traced, [*params, first])

    def step(x):
        with torch.no_grad():
            value, *grads = graph(*params, x)
        for param, grad in zip(params, grads):
            param.grad = grad
        optimizer.step()
        if not torch.stack([p.detach().sum() for p in params]).isfinite().all():
            raise FloatingPointError("a parameter is not finite")
        return value.item()

    return step


def adam_update(param, grad, exp_avg, exp_avg_sq, step, lr, finite):
    """Adam's update of one parameter (torch's formula), written only where the loss is finite; the new sum."""
    beta1, beta2 = BETAS
    new_step = step + 1
    new_avg = exp_avg * beta1 + grad * (1 - beta1)
    new_avg_sq = exp_avg_sq * beta2 + grad * grad * (1 - beta2)
    denominator = new_avg_sq.sqrt() / (1 - beta2**new_step).sqrt() + EPS
    new_param = param - lr / (1 - beta1**new_step) * new_avg / denominator
    for old, new in ((param, new_param), (exp_avg, new_avg), (exp_avg_sq, new_avg_sq), (step, new_step)):
        old.copy_(torch.where(finite, new, old))
    return param.sum()


def replay_with_adam_in_graph(base, lr, first):
    loss = vae_step.TorchELBO(copy.deepcopy(base))
    params, optimizer = adam_after_one_eager_step(loss, lr, first)
    states = [optimizer.state[p] for p in params]
    slots = [[s[name] for s in states] for name in ("exp_avg", "exp_avg_sq", "step")]
    count = len(params)

    def traced(*inputs):
        grouped = [inputs[i * count : (i + 1) * count] for i in range(4)]
        rate, x = inputs[-2:]
        value = loss(x)
        grads = torch.autograd.grad(value, grouped[0])
        with torch.no_grad():
            finite = value.isfinite()
            sums = [adam_update(*tensors, rate, finite) for tensors in zip(grouped[0], grads, *grouped[1:])]
        return [torch.stack([value.detach(), *sums])]

    graph = compiled(traced, [*params, *(t for slot in slots for t in slot), torch.tensor(lr), first])

    def step(x):
        rate = torch.tensor(optimizer.param_groups[0]["lr"])
        with torch.no_grad():
            (values,) = graph(*params, *(t for slot in slots for t in slot), rate, x)
        value, *sums = values.tolist()
        if not all(map(math.isfinite, sums)):
            raise FloatingPointError("a parameter is not finite")
        return value

    return step


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--core", type=int, default=0, help="pin the process to this CPU core (-1: no pinning)")
    args = parser.parse_args()
    args.device = "cpu"
    if args.core >= 0:
        os.sched_setaffinity(0, {args.core})
    torch.set_num_threads(1)
    pyro.enable_validation(False)
    data = peers_step.batches(args.batch_size, "cpu")
    first = next(data)
    torch.manual_seed(0)
    base = VAE(784, 20, (400,))
    contenders = {
        "replay+fused-adam": replay_with_fused_adam(base, args.lr, first),
        "replay+adam-in-graph": replay_with_adam_in_graph(base, args.lr, first),
        "pplgen-traced": pplgen_traced(copy.deepcopy(base), args.lr, first),
        "pplgen-traced-dynamo": pplgen_traced(copy.deepcopy(base), args.lr, first, through_dynamo),
        "numpyro": peers_step.numpyro_vae(base, args.lr, first),
    }
    medians = peers_step.time_contenders(contenders, data, args)
    peers_step.print_table(f"VAE 784-400-20, batch {args.batch_size}", medians)


if __name__ == "__main__":
    main()
