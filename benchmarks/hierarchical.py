"""Hierarchical models: each applicable engine against NumPyro's NUTS on the same program.

::

    python benchmarks/hierarchical.py --steps 3000

For eight schools (non-centred with the full-rank guide, centred with the
mean-field guide) and the multilevel regression on sleepstudy (full rank),
each engine fits the guide for ``--steps`` steps (Adam; lr 0.02, 0.05 for the
multilevel model) and NUTS draws 4 chains × 1,000 after 1,000 warm-up steps
(NumPyro, chains vectorized, compile time included). Reported: wall clock of
each, PSIS k̂ of the guide, and the 1-Wasserstein distance between the VI and
NUTS marginals of the headline parameters.
"""

import argparse
import time

import pyro

import pplgen
from pplgen import diagnostics
from pplgen.models import EightSchools, MultilevelRegression

ENGINES = [("svi", {"num_particles": 4}), ("iwae", {"num_particles": 4}), ("rws", {"num_particles": 4})]


def cases():
    schools = pplgen.data.eight_schools()
    study = pplgen.data.sleepstudy()
    eight = (schools.sigma, schools.y)
    return [
        (
            "eight schools, non-centred, full rank",
            lambda: EightSchools("non_centered", "full_rank"),
            eight,
            0.02,
            ["mu", "tau"],
        ),
        (
            "eight schools, centred, mean field",
            lambda: EightSchools("centered", "mean_field"),
            eight,
            0.02,
            ["mu", "tau"],
        ),
        (
            "sleepstudy, full rank",
            lambda: MultilevelRegression("full_rank"),
            (study.days, study.subject, study.num_subjects, study.reaction),
            0.05,
            ["intercept", "slope", "noise"],
        ),
    ]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--case", help="run only the models whose label contains this text")
    args = parser.parse_args()
    print("| model | method | wall s | k̂ | W1 to NUTS |")
    print("|---|---|---|---|---|")
    for label, build, arguments, lr, names in cases():
        if args.case and args.case not in label:
            continue
        start = time.perf_counter()
        reference = diagnostics.nuts_reference(build().model, *arguments)
        nuts_seconds = time.perf_counter() - start
        print(f"| {label} | NUTS (NumPyro, 4 × 1,000) | {nuts_seconds:.1f} | — | — |", flush=True)
        for engine, options in ENGINES:
            pyro.clear_param_store()
            pyro.set_rng_seed(0)
            model = build()
            start = time.perf_counter()
            try:
                pplgen.fit(
                    model,
                    pplgen.inference.get(engine, **options),
                    arguments,
                    steps=args.steps,
                    optimization=pplgen.Optimization(lr=lr),
                )
            except pplgen.NonFiniteLossError as error:
                print(f"| {label} | {engine} K=4, {args.steps} steps | — | — | diverged: {str(error).split(';')[0]} |")
                continue
            seconds = time.perf_counter() - start
            posterior = diagnostics.to_inference_data(model, arguments, num_samples=4000)
            table = diagnostics.compare(posterior, reference, var_names=names).table
            khat = diagnostics.psis_khat(model, arguments, num_samples=10000).khat
            distances = ", ".join(f"{name} {table.loc[name, 'wasserstein']:.2f}" for name in table.index)
            print(
                f"| {label} | {engine} K=4, {args.steps} steps | {seconds:.1f} | {khat:.2f} | {distances} |", flush=True
            )


if __name__ == "__main__":
    main()
