"""One side of the data-parallel tests: run with ``--devices 1`` or ``--devices 2`` (Fabric launches the second
process by running this script again; ``torchrun --nproc-per-node 2`` works alike) and write, per rank,
``OUT/rank{r}.pt``: what each scenario produced. ``tests/distributed/test_data_parallel.py`` compares them.

Scenarios:

* ``map``: 5 Adam steps of svi on MAP programs (a Delta guide for a global latent, a network in the model),
  plain and with a subsampled data plate: deterministic, so 2 processes must equal 1.
* ``mean_update``: for each engine, ``REPEATS`` single steps from the same state on the same batch, each
  step's summed gradient recorded (its update is −lr × it under SGD), then the full state of every rank.
* ``resume``: 8 steps of vimco straight, and 4 steps, a checkpoint and a resume to 8.
* ``evaluation``: the held-out log-likelihood by importance sampling with the exact posterior as guide.
* ``refusal``: iwae on a program with a global latent, refused by name in 2 processes.
* ``traced``: the ``map`` fits with ``compile="trace"``, and nvil traced (whose running moments are summed over
  the processes inside its forward).
"""

import argparse
import math
import warnings
from pathlib import Path

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule
from torch import nn

import pplgen
from pplgen.distributed import data_plates, rank, world_size
from pplgen.inference import get
from pplgen.models import VAE, SigmoidBeliefNet
from pplgen.traced import TraceFallbackWarning
from pplgen.training import _step

REPEATS = 150
ENGINES = {
    "svi": ({}, "vae"),
    "iwae": ({"num_particles": 3}, "vae"),
    "avb": ({"discriminator": (8,)}, "vae"),
    "wake_sleep": ({}, "sbn"),
    "rws": ({"num_particles": 3}, "sbn"),
    "nvil": ({"baseline": (4,)}, "sbn"),
    "vimco": ({"num_particles": 3}, "sbn"),
    "gan": ({"discriminator": (8,)}, "decoder"),
}


class MapRegression(PyroModule):
    """y = f(x) + x·w + noise with a network f, a global w ~ N(0, I) fitted by MAP (a Delta guide).
    ``total`` set: the data plate subsamples a data set of that size."""

    def __init__(self, total=None):
        super().__init__()
        self.total = total
        self.net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1))
        self.w_map = nn.Parameter(torch.zeros(3))

    def plate(self, data):
        if self.total is None:
            return pyro.plate("data", len(data))
        return pyro.plate("data", self.total, subsample=torch.arange(len(data)))

    def model(self, data):
        x, y = data[:, :3], data[:, 3]
        w = pyro.sample("w", dist.Normal(0.0, 1.0).expand([3]).to_event(1))
        with self.plate(data):
            pyro.sample("y", dist.Normal(self.net(x).squeeze(-1) + x @ w, 0.5), obs=y)

    def guide(self, data):
        pyro.sample("w", dist.Delta(self.w_map).to_event(1))


class ExactPosterior(PyroModule):
    """z ~ N(0, 1), x | z ~ N(z, 1) per coordinate, guided by its posterior N(x / 2, 1 / 2): importance sampling
    then returns log p(x) = log N(x; 0, 2) whatever the particles. The guide's scale is a parameter (at its
    optimum) so that there is something to train."""

    def __init__(self):
        super().__init__()
        self.log_scale = nn.Parameter(torch.tensor(0.5 * math.log(0.5)))

    def model(self, x):
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(0.0, 1.0).expand([x.shape[-1]]).to_event(1))
            pyro.sample("x", dist.Normal(z, 1.0).to_event(1), obs=x)

    def guide(self, x):
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Normal(x / 2, self.log_scale.exp()).to_event(1))


def regression_data():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(24, 3, generator=generator)
    y = x @ torch.tensor([1.0, -2.0, 0.5]) + 0.3 * torch.randn(24, generator=generator)
    return torch.cat([x, y[:, None]], 1)


def binary_data():
    return torch.rand(16, 8, generator=torch.Generator().manual_seed(1)).bernoulli()


def family(kind):
    torch.manual_seed(0)
    if kind in ("vae", "decoder"):
        return VAE(data_dim=8, latent_dim=2, hidden=(4,), likelihood="gaussian" if kind == "decoder" else "bernoulli")
    return SigmoidBeliefNet(layers=(3,), observed=8)


ACCELERATOR = {"name": "cpu", "num_nodes": 1}


def options(devices):
    nodes = ACCELERATOR["num_nodes"]
    strategy = "ddp" if devices * nodes > 1 else "auto"
    execution = {"accelerator": ACCELERATOR["name"], "devices": devices, "num_nodes": nodes, "strategy": strategy}
    return {"execution": execution}


def parameters(*modules):
    return torch.cat([t.detach().reshape(-1) for m in modules for t in (*m.parameters(), *m.buffers())])


def map_scenario(devices, compile=False):
    finals = {}
    for name, total in [("plain", None), ("subsampled", 1000)]:
        pyro.clear_param_store()
        torch.manual_seed(0)
        program = MapRegression(total)
        run = options(devices)
        pplgen.fit(
            program,
            "svi",
            regression_data(),
            steps=5,
            batch_size=12,
            seed=0,
            execution={**run["execution"], "compile": compile},
            optimization=pplgen.Optimization(lr=0.05),
        )
        finals[name] = parameters(program).cpu()
    return finals


def traced_scenario(devices):
    """The MAP fits with ``compile="trace"``; nvil traced, with the notes it gives and its final state."""
    pyro.clear_param_store()
    program, engine = family("sbn"), get("nvil", baseline=(4,))
    run = options(devices)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", TraceFallbackWarning)
        result = pplgen.fit(
            program,
            engine,
            binary_data(),
            steps=6,
            batch_size=16,
            seed=0,
            execution={**run["execution"], "compile": "trace"},
        )
    return {
        "map": map_scenario(devices, compile="trace"),
        "nvil_notes": [str(w.message) for w in caught if issubclass(w.category, TraceFallbackWarning)],
        "nvil_graphs": len(result.training_step.traced.graphs),
        "nvil_state": parameters(program, engine),
    }


def mean_update_scenario(devices):
    results = {}
    for name, (engine_options, kind) in ENGINES.items():
        pyro.clear_param_store()
        program, engine, x = family(kind), get(name, **engine_options), binary_data()
        result = pplgen.fit(
            program,
            engine,
            x,
            steps=1,
            batch_size=16,
            seed=0,
            **options(devices),
            optimization=pplgen.Optimization(lr=1e-3, optimizer=torch.optim.SGD),
        )
        trainer = result.training_step
        start = trainer.state_dict()
        plates = data_plates(program.model, (x,)) if devices > 1 else None
        params = [p for group in trainer.optimizer.param_groups for p in group["params"]]
        gradients = []
        for _ in range(REPEATS):
            trainer.load_state_dict(start)
            _step(trainer, (x,), plates, None)
            gradients.append(
                torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params])
            )
        results[name] = {"gradients": torch.stack(gradients), "state": parameters(program, engine)}
    return results


def resume_scenario(devices, folder):
    histories = {}
    for label, stops in [("straight", [8]), ("resumed", [4, 8])]:
        checkpoint = folder / f"{label}-{devices}.pt"
        for stop in stops:
            pyro.clear_param_store()
            program = family("sbn")
            result = pplgen.fit(
                program,
                get("vimco", num_particles=3),
                binary_data(),
                steps=stop,
                batch_size=4,
                seed=3,
                **options(devices),
                checkpoint=pplgen.Checkpointing(checkpoint, resume=stop != stops[0], overwrite=stop == stops[0]),
            )
        histories[label] = {"history": result.history, "state": parameters(program, result.engine)}
    return histories


def evaluation_scenario(devices):
    pyro.clear_param_store()
    x = torch.randn(10, 2, generator=torch.Generator().manual_seed(2))
    held_out = torch.randn(7, 2, generator=torch.Generator().manual_seed(3))
    draws = []

    def scheduler(optimizer):  # built once the ranks are seeded: a draw from the RNG the particles use
        draws.append(torch.randn(4))
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: 1.0)

    result = pplgen.fit(
        ExactPosterior(),
        "svi",
        x,
        steps=1,
        batch_size=10,
        **options(devices),
        optimization=pplgen.Optimization(optimizer=torch.optim.SGD, lr=1e-9, scheduler=scheduler),
        evaluation=pplgen.Evaluation(held_out, samples=16),
    )
    exact = torch.distributions.Normal(0.0, math.sqrt(2.0)).log_prob(held_out).sum(-1).mean().item()
    return {"evaluation": result.evaluations[-1]["log_likelihood"], "exact": exact, "draw_in_fit": draws[0]}


def refusal_scenario(devices):
    """What fit says to a K-sample bound over a global latent, and to a DataLoader (None where it trains)."""
    messages = {}
    loader = torch.utils.data.DataLoader(regression_data(), batch_size=12, shuffle=True)
    for label, engine, data in [
        ("global latent", get("iwae", num_particles=2), regression_data()),
        ("dataloader", get("svi"), loader),
    ]:
        pyro.clear_param_store()
        torch.manual_seed(0)
        try:
            pplgen.fit(MapRegression(), engine, data, steps=1, batch_size=12, **options(devices))
            messages[label] = None
        except ValueError as error:
            messages[label] = str(error)
    return messages


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--devices", type=int, required=True)
    parser.add_argument("--accelerator", default="cpu")
    parser.add_argument("--num-nodes", type=int, default=1)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--scenarios", default="map,mean_update,resume,evaluation,refusal,traced")
    args = parser.parse_args()
    ACCELERATOR["name"], ACCELERATOR["num_nodes"] = args.accelerator, args.num_nodes
    torch.set_num_threads(1)
    results = {}
    for scenario in args.scenarios.split(","):
        if scenario == "resume":
            results[scenario] = resume_scenario(args.devices, args.out)
        elif scenario == "refusal":
            results[scenario] = refusal_scenario(args.devices)
        else:
            results[scenario] = globals()[f"{scenario}_scenario"](args.devices)
    results["world_size"] = world_size()
    results["threads"] = torch.get_num_threads()
    args.out.mkdir(parents=True, exist_ok=True)
    torch.save(results, args.out / f"rank{rank()}.pt")


if __name__ == "__main__":
    main()
