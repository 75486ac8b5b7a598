"""The expected outcome of every engine on every program of :mod:`tests.support.programs`: the one table.

``ENGINES`` are the configurations the suite runs (one per registered
engine). ``REFUSED[program][engine]`` is a fragment of the refusal that
engine's ``check`` must raise; every cell not listed must train. Programs
that Pyro's ``Trace_ELBO`` rejects or warns about are refused by every
engine, with the fragment in ``PYRO_REFUSED``. The README's table of what
each engine accepts is printed from here (``python -m tests.support.outcomes``).
"""

from tests.support.programs import PROGRAMS

ENGINES = {
    "svi": {},
    "iwae": {"num_particles": 3},
    "wake_sleep": {},
    "rws": {"num_particles": 3},
    "nvil": {},
    "vimco": {"num_particles": 3},
    "avb": {"discriminator": (8,)},
}

_SCALAR = {name: "has no rsample" for name in ("svi", "iwae", "avb")}
_SCALES = {name: "every site of a datum scaled alike" for name in ("iwae", "rws", "vimco", "avb")}
_DATA_ARGUMENT = {"wake_sleep": "cannot tell which model argument holds the data"}
_DEPENDENT_PRIOR = {"avb": "its prior depends on latent"}
_DELTA = {name: "is a Delta" for name in ("wake_sleep", "rws", "nvil", "vimco")}
_NO_LATENT = {name: "the guide draws no latent site" for name in ("wake_sleep", "nvil", "avb")}

REFUSED = {
    "global_and_local_latents": _DEPENDENT_PRIOR,
    "mixed_discrete_continuous": _SCALAR,
    "gaussian_mixture": _SCALAR,
    "sigmoid_belief_layer": _SCALAR,
    "nested_plates": _DEPENDENT_PRIOR,
    "sequential_plate": _DATA_ARGUMENT,
    "sequential_plate_subsampled": _DATA_ARGUMENT,
    "sequential_in_vectorized_plate": _DATA_ARGUMENT,
    "vectorized_subsample": _DATA_ARGUMENT,
    "subsample_with_global": {**_SCALES, **_DATA_ARGUMENT},
    "explicit_subsample": {**_SCALES, **_DATA_ARGUMENT},
    "subsample_primitive": {**_SCALES, **_DATA_ARGUMENT},
    "param_event_dim_in_plate": _DATA_ARGUMENT,
    "kl_annealing": _SCALES,
    "factor_in_guide_rsample": {"wake_sleep": "is auxiliary"},
    "map_delta_guide": _DELTA,
    "delta_event_dim": _DELTA,
    "auxiliary_guide_site": {"wake_sleep": "is auxiliary"},
    "reparam_decentered": _DEPENDENT_PRIOR,
    "markov_time_series": {**_DATA_ARGUMENT, **_DEPENDENT_PRIOR},
    "empty_guide_observed_model": _NO_LATENT,
    "empty_model_empty_guide": {**_NO_LATENT, "wake_sleep": "observes no site"},
}

PYRO_REFUSED = {
    "plate_in_guide_only": "Found plate statements in guide but not model",
    "guide_site_not_in_model": "guide site 'noise' does not appear in the model",
    "model_latent_not_in_guide": "model site 'noise' is latent but the guide has no site",
    "enumerated_guide_site": "asks to be enumerated",
    "shape_mismatch": "the guide's event shape is",
    "event_dim_mismatch": "the guide's event shape is",
    "duplicate_site_name": "Multiple sample sites named",
    "plate_recreated_by_name": "Multiple sample sites named",
    "plate_broadcast_error": "Shape mismatch inside plate",
    "batched_site_outside_plate": "invalid log_prob shape",
    "batched_site_no_plates": "invalid log_prob shape",
    "plate_dim_collision": "collide at dim",
    "param_plate_size_mismatch": "invalid shape of pyro.param",
    "factor_in_guide_without_has_rsample": "missing specification of has_rsample",
}


def expected(program, engine):
    """``None`` when ``engine`` must train ``program``, else a fragment of its refusal."""
    if program in PYRO_REFUSED:
        return PYRO_REFUSED[program]
    return REFUSED.get(program, {}).get(engine)


def markdown_table():
    """What each engine does with each program Pyro trains, as a Markdown table, and the counts."""
    accepted = [entry for entry in PROGRAMS if entry.pyro == "ok"]
    lines = [
        "| program | " + " | ".join(f"`{e}`" for e in ENGINES) + " |",
        "|---|" + "---|" * len(ENGINES),
    ]
    for entry in accepted:
        cells = [
            "trains" if expected(entry.name, e) is None else f"refused: {expected(entry.name, e)}" for e in ENGINES
        ]
        lines.append(f"| `{entry.name}` | " + " | ".join(cells) + " |")
    trains = [sum(expected(entry.name, e) is None for entry in accepted) for e in ENGINES]
    lines.append("| **trains** | " + " | ".join(f"**{n} / {len(accepted)}**" for n in trains) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown_table())
