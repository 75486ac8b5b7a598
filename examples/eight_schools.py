"""Eight schools: fit a hierarchical model with an autoguide, then diagnose it against NUTS.
=========================================================================================

Story: "Hierarchical models" (:doc:`/models/hierarchical`). Rubin's (1981) eight schools, the
classic small hierarchical model (``pplgen.models.EightSchools``)::

    μ ~ N(0, 5²),   τ ~ HalfCauchy(5),   θ_j ~ N(μ, τ²),   y_j ~ N(θ_j, σ_j²)     j = 1 … 8

is written against ``pyroapi``, so the same function runs under Pyro for
pplgen's engines and under NumPyro for NUTS. It is fitted twice with ``svi``:

* the centred parameterization with a mean-field guide (``AutoNormal``), the
  classic failure: τ and the θ_j form a funnel that a factorized Gaussian
  cannot follow;
* the non-centred one (θ_j = μ + τ θ̃_j) with a full-rank guide
  (``AutoMultivariateNormal``).

Each fit is then diagnosed with ArviZ through ``pplgen.diagnostics``:
``to_inference_data`` (the guide's draws), ``psis_khat`` (Pareto-smoothed
importance sampling k̂ of the guide as a proposal, Yao, Vehtari, Simpson &
Gelman 2018: below 0.5 good, 0.5–0.7 ok, above 0.7 unreliable),
``nuts_reference`` (NumPyro's NUTS on the same program) and ``compare``
(marginals side by side, with the 1-Wasserstein distance W1).

Data: the eight published effects and standard errors (``pplgen.data.eight_schools()``).

Run: ``.venv/bin/python examples/eight_schools.py`` (``--steps``,
``--nuts-warmup``, ``--nuts-samples``, ``--nuts-chains``; ``--out DIR`` also
saves the overlaid marginals; ``--smoke`` for a few steps and a tiny NUTS
run). It prints, per fit, k̂ with its reading and the VI-against-NUTS table,
and returns ``{"<fit> khat": ..., "<fit> W1 <parameter>": ...}``.
"""

import argparse
import time
from pathlib import Path

import every_engine

import pplgen
from pplgen import diagnostics
from pplgen.models import EightSchools

FITS = {"centered, mean_field": ("centered", "mean_field"), "non_centered, full_rank": ("non_centered", "full_rank")}
COLUMNS = ["vi_mean", "nuts_mean", "vi_sd", "nuts_sd", "wasserstein"]
SMOKE = {"steps": 10, "draws": 100, "nuts_warmup": 5, "nuts_samples": 5, "nuts_chains": 1}


def fit(parameterization, guide, data, args):
    """An EightSchools pair fitted by ``svi`` on the whole data set at every step."""
    schools = EightSchools(parameterization, guide=guide)
    pplgen.fit(
        schools,
        "svi",
        (data.sigma, data.y),
        steps=args.steps,
        seed=args.seed,
        optimization=pplgen.Optimization(lr=args.lr),
        execution=pplgen.Execution(accelerator="cpu"),
    )
    return schools


def diagnose(schools, data, args):
    """k̂ of the fitted guide, and its marginals against NUTS on the same program."""
    coords = {"school": list(data.schools)}
    vi = diagnostics.to_inference_data(schools, (data.sigma, data.y), num_samples=args.draws, coords=coords)
    khat = diagnostics.psis_khat(schools, (data.sigma, data.y), num_samples=args.draws)
    start = time.perf_counter()
    nuts = diagnostics.nuts_reference(
        schools.model,
        data.sigma,
        data.y,
        coords=coords,
        seed=args.seed,
        num_warmup=args.nuts_warmup,
        num_samples=args.nuts_samples,
        num_chains=args.nuts_chains,
    )
    print(f"  NUTS ({nuts.attrs['nuts_backend']}) in {time.perf_counter() - start:.1f} s")
    return khat, diagnostics.compare(vi, nuts)


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3000, help="svi steps, each on all eight schools")
    parser.add_argument("--lr", type=float, default=0.02)
    parser.add_argument("--draws", type=int, default=4000, help="guide draws for k-hat and the comparison")
    parser.add_argument("--nuts-warmup", type=int, default=1000)
    parser.add_argument("--nuts-samples", type=int, default=1000, help="NUTS draws per chain")
    parser.add_argument("--nuts-chains", type=int, default=4)
    parser.add_argument("--out", type=Path, help="a folder for the figures of overlaid marginals")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help=f"a tiny run: {SMOKE}")
    return every_engine.parse(parser, argv, SMOKE)


def main(argv=None):
    """Fit and diagnose both parameterizations; returns k̂ and the W1 distance to NUTS of each parameter."""
    args = parse_args(argv)
    data = pplgen.data.eight_schools()
    nuts = f"{args.nuts_chains} chains x ({args.nuts_warmup} warm-up + {args.nuts_samples} draws)"
    print(f"eight schools: svi for {args.steps} steps; NUTS {nuts}")
    figures = {}
    for label, (parameterization, guide) in FITS.items():
        print(f"\n{label}:")
        start = time.perf_counter()
        schools = fit(parameterization, guide, data, args)
        print(f"  svi in {time.perf_counter() - start:.1f} s")
        khat, comparison = diagnose(schools, data, args)
        print(f"  PSIS k-hat {khat.khat:.2f}: {khat.reading}")
        print(comparison.table[COLUMNS].round(2).to_string(line_width=120))
        figures[f"{label} khat"] = khat.khat
        figures.update({f"{label} W1 {name}": w for name, w in comparison.table["wasserstein"].items()})
        if args.out:
            args.out.mkdir(parents=True, exist_ok=True)
            comparison.figure.savefig(args.out / f"vi-vs-nuts-{parameterization}-{guide}.png")
    return figures


if __name__ == "__main__":
    main()
