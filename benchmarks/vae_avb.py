"""A VAE with a Gaussian guide and svi against implicit guides trained by avb, at equal wall-clock time.

::

    python benchmarks/vae_avb.py --root ../shared/data/binarized-mnist --budget 240

Three contestants train the same VAE decoder (784-200-200-z, tanh, from the
same initial weights) on the fixed-binarized MNIST, each for ``--budget``
seconds of wall-clock time (Adam, batch 100):

* ``svi``: the Gaussian guide q(z | x) = N(μ(x), σ(x)²), reparameterized ELBO;
* ``avb``: the implicit guide z = g(x, ε) (noise at the encoder's input), the
  prior as contrast, a 256-256 ReLU discriminator;
* ``avb + AC``: the same with adaptive contrast (K = 8 particles per datum).

Each is then scored on the first ``--eval-limit`` test images by AIS
(``pplgen.evaluate.ais``, ``--ais-steps`` × ``--ais-chains``; the estimator
the implicit guides need, and applied to all three alike), and ``svi`` also by
importance sampling with its guide (K = 1,000). Reported: median ms/step,
steps done, AIS test log-likelihood. Skips cleanly without the data folder.
"""

import argparse
import statistics
import time
from pathlib import Path

import pyro
import torch

import pplgen
from pplgen.models import VAE

DEFAULT_ROOT = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "binarized-mnist"

CONTESTANTS = [
    ("svi", "gaussian", "svi", {}),
    ("avb", "implicit", "avb", {}),
    ("avb + AC", "implicit", "avb", {"num_particles": 8, "adaptive_contrast": True}),
]


def train(vae, engine, data, args):
    """Steps of batch ``args.batch_size`` until ``args.budget`` seconds have passed; the step times in ms."""
    trainer = pplgen.TrainingStep(vae.model, vae.guide, engine, lr=args.lr)
    generator = torch.Generator().manual_seed(0)
    times, start = [], time.perf_counter()
    while time.perf_counter() - start < args.budget:
        for batch in data[torch.randperm(len(data), generator=generator)].split(args.batch_size):
            begin = time.perf_counter()
            trainer.step(batch)
            times.append(1e3 * (time.perf_counter() - begin))
            if time.perf_counter() - start >= args.budget:
                break
    return times


def run(label, guide, engine_name, options, train_data, test, args):
    torch.manual_seed(0)
    vae = VAE(784, latent_dim=args.latent, hidden=(200, 200), guide=guide)
    if guide == "implicit":  # the decoder starts from the same weights in every contestant
        torch.manual_seed(0)
        vae.decoder.load_state_dict(VAE(784, latent_dim=args.latent, hidden=(200, 200)).decoder.state_dict())
    times = train(vae, pplgen.inference.get(engine_name, **options), train_data, args)
    pyro.set_rng_seed(1)
    start = time.perf_counter()
    ais = pplgen.evaluate.ais(vae, test, num_steps=args.ais_steps, num_chains=args.ais_chains).mean().item()
    row = {
        "contestant": label,
        "steps": len(times),
        "ms_per_step": statistics.median(times),
        "ais": ais,
        "ais_s": time.perf_counter() - start,
    }
    if guide == "gaussian":
        row["importance_sampled"] = pplgen.evaluate.log_likelihood(vae, test, num_samples=1000).mean().item()
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="folder of binarized_mnist_*.amat[.gz]")
    parser.add_argument("--budget", type=float, default=240, help="training seconds per contestant")
    parser.add_argument("--latent", type=int, default=8, help="latent dimension")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--ais-steps", type=int, default=1000)
    parser.add_argument("--ais-chains", type=int, default=5)
    parser.add_argument("--eval-limit", type=int, default=500, help="score the first N test images")
    args = parser.parse_args()
    if not args.root.is_dir():
        print(f"skipped: no binarized-MNIST folder at {args.root}; pass --root PATH (binarized_mnist_*.amat[.gz])")
        return
    train_data = pplgen.data.load("binarized-mnist", split="train", root=args.root)
    test = pplgen.data.load("binarized-mnist", split="test", root=args.root)[: args.eval_limit]
    print(
        f"binarized-mnist: {len(train_data)} train, {len(test)} test images; VAE 784-200-200-{args.latent} tanh; "
        f"{args.budget:.0f} s per contestant, batch {args.batch_size}, Adam lr {args.lr}; "
        f"AIS {args.ais_steps} steps x {args.ais_chains} chains; torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads",
        flush=True,
    )
    rows = []
    for contestant in CONTESTANTS:
        rows.append(run(*contestant, train_data, test, args))
        print(f"  {rows[-1]}", flush=True)
    print("\n| contestant | ms/step (median) | steps | AIS test log-likelihood | IS (K=1000) | AIS time s |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        importance = f"{row['importance_sampled']:.2f}" if "importance_sampled" in row else "—"
        print(
            f"| {row['contestant']} | {row['ms_per_step']:.2f} | {row['steps']} | {row['ais']:.2f} | "
            f"{importance} | {row['ais_s']:.0f} |"
        )


if __name__ == "__main__":
    main()
