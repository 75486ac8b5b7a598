"""The conformance table: one row per registered engine, and the outcome of each on every program of
:mod:`tests.support.programs`.

A :class:`Row` holds the options the suite runs the engine with, the
``variants`` (further option sets) that the contract tests also run, and the
:class:`Refusal` kinds its ``check`` must raise, each a set of programs and a
fragment of the message; every other program must train. Programs that
Pyro's ``Trace_ELBO`` rejects or warns about are refused by every engine that
runs the guide, with the fragment in ``PYRO_REFUSED``. Adding an engine adds
one row. The documentation's table of what each engine accepts (docs/own_program.md, built by the
``conformance-table`` directive) is generated from here; ``python -m tests.support.outcomes`` prints it.
"""

from dataclasses import dataclass

from pplgen.inference import ENGINES as REGISTERED
from tests.support.programs import PROGRAMS


@dataclass(frozen=True)
class Refusal:
    """Programs an engine refuses for one reason, and a fragment of its message."""

    programs: tuple[str, ...]
    fragment: str


@dataclass(frozen=True)
class Row:
    """An engine's options in the suite, its further configurations, and what it refuses (the first kind
    holding a program gives the expected message)."""

    options: dict
    refusals: tuple[Refusal, ...] = ()
    variants: tuple[dict, ...] = ()


DISCRETE_GUIDE = Refusal(("mixed_discrete_continuous", "gaussian_mixture", "sigmoid_belief_layer"), "has no rsample")
UNEQUAL_SCALES = Refusal(
    ("subsample_with_global", "explicit_subsample", "subsample_primitive", "kl_annealing"),
    "every site of a datum scaled alike",
)
UNDREAMABLE = Refusal(
    (
        "sequential_plate",
        "sequential_plate_subsampled",
        "sequential_in_vectorized_plate",
        "vectorized_subsample",
        "subsample_with_global",
        "explicit_subsample",
        "subsample_primitive",
        "param_event_dim_in_plate",
        "markov_time_series",
        "plate_in_guide_only",
        "enumerated_markov_chain",
    ),
    "cannot tell which model argument holds the data",
)
DEPENDENT_PRIOR = Refusal(
    ("global_and_local_latents", "nested_plates", "reparam_decentered", "markov_time_series"),
    "its prior depends on latent",
)
POINT_ESTIMATE = Refusal(("map_delta_guide", "delta_event_dim"), "is a Delta")
AUXILIARY = Refusal(("factor_in_guide_rsample", "auxiliary_guide_site"), "is auxiliary")
NO_OBSERVATION = Refusal(("empty_model_empty_guide",), "observes no site")
NO_LATENT = Refusal(("empty_guide_observed_model", "empty_model_empty_guide"), "the guide draws no latent site")
MODEL_FAILS = Refusal(
    (
        "duplicate_site_name",
        "plate_recreated_by_name",
        "plate_broadcast_error",
        "plate_dim_collision",
        "param_plate_size_mismatch",
    ),
    "fail when run together",
)
UNREPARAMETERIZED_DATA = Refusal(
    ("vae_local_latents", "sparse_gamma_siblings", "ordered_logistic_obs"), "which has no rsample"
)
DISCRETE_MODEL = Refusal(
    (
        "mixed_discrete_continuous",
        "gaussian_mixture",
        "sigmoid_belief_layer",
        "enumerated_guide_site",
        "sequential_enumeration_in_guide",
        "enumerated_class_in_guide",
        "sequential_enumeration_in_model",
        "enumerated_mixture_in_model",
        "enumerated_markov_chain",
        "enumerated_topics_in_nested_plates",
    ),
    "without rsample",
)
DENSITY_TERM = Refusal(("factor_in_model",), "is a pyro.factor")
NOT_BERNOULLI = Refusal(
    (
        "global_latent",
        "vae_local_latents",
        "global_and_local_latents",
        "mixed_discrete_continuous",
        "gaussian_mixture",
        "nested_plates",
        "sparse_gamma_siblings",
        "sibling_plates_same_size",
        "plate_reuse",
        "plate_stack",
        "block_plate_global",
        "sequential_plate",
        "sequential_plate_subsampled",
        "sequential_in_vectorized_plate",
        "vectorized_subsample",
        "param_event_dim_in_plate",
        "mask_false_in_model",
        "mask_true_in_model",
        "mask_false_in_model_and_guide",
        "mask_true_in_model_and_guide",
        "tensor_mask_in_plate",
        "dist_mask_latents",
        "broadcast_mask_nested",
        "scale_whole_program",
        "tensor_scale_in_plate",
        "factor_in_model",
        "factor_in_guide_rsample",
        "deterministic_site",
        "auxiliary_guide_site",
        "reparam_decentered",
        "multivariate_normal_obs",
        "ordered_logistic_obs",
        "markov_time_series",
        "pyro_module_methods",
        "no_trainable_parameters",
        "enumerated_mixture_in_model",
        "enumerated_markov_chain",
        "enumerated_topics_in_nested_plates",
    ),
    "not a Bernoulli",
)

NOT_RELAXABLE = Refusal(
    UNEQUAL_SCALES.programs + POINT_ESTIMATE.programs + NOT_BERNOULLI.programs,
    "not a Bernoulli or OneHotCategorical",
)


ENGINES = {
    "svi": Row(
        {},
        (DISCRETE_GUIDE,),
        variants=({"num_particles": 3, "analytic_kl": True}, {"stl": True}),
    ),
    "iwae": Row(
        {"num_particles": 3},
        (DISCRETE_GUIDE, UNEQUAL_SCALES),
        variants=({"num_particles": 4, "estimator": "dreg"},),
    ),
    "wake_sleep": Row({}, (UNDREAMABLE, AUXILIARY, POINT_ESTIMATE, NO_OBSERVATION, NO_LATENT)),
    "rws": Row({"num_particles": 3}, (UNEQUAL_SCALES, POINT_ESTIMATE), variants=({"num_particles": 3, "phi": "both"},)),
    "nvil": Row(
        {},
        (POINT_ESTIMATE, NO_LATENT),
        variants=({"baseline": None, "normalize": False, "local_signals": False},),
    ),
    "vimco": Row({"num_particles": 3}, (UNEQUAL_SCALES, POINT_ESTIMATE)),
    "avb": Row(
        {"discriminator": (8,)},
        (DISCRETE_GUIDE, UNEQUAL_SCALES, DEPENDENT_PRIOR, NO_LATENT),
        variants=({"num_particles": 3, "adaptive_contrast": True, "discriminator_steps": 2},),
    ),
    "gan": Row(
        {"discriminator": (8,)},
        (MODEL_FAILS, UNREPARAMETERIZED_DATA, DISCRETE_MODEL, DENSITY_TERM, UNDREAMABLE, NO_OBSERVATION),
        variants=({"discriminator": (8,), "gradient_penalty": 1.0, "discriminator_steps": 2},),
    ),
    "disarm": Row(
        {"num_particles": 2},
        (UNEQUAL_SCALES, POINT_ESTIMATE, NOT_BERNOULLI),
        variants=({"num_particles": 4, "estimator": "arm"},),
    ),
    "gumbel": Row(
        {},
        (Refusal(("gaussian_mixture",), "its values are indices"),),
        variants=({"num_particles": 2, "temperature": 0.5, "straight_through": True}, {"anneal": (0.5, 0.01)}),
    ),
    "rebar": Row({}, (NOT_RELAXABLE,), variants=({"num_particles": 2, "adapt": False},)),
    "relax": Row({"control": (8,)}, (NOT_RELAXABLE,), variants=({"num_particles": 2},)),
}

PYRO_REFUSED = {
    "plate_in_guide_only": "Found plate statements in guide but not model",
    "guide_site_not_in_model": "guide site 'noise' does not appear in the model",
    "model_latent_not_in_guide": "model site 'noise' is latent but the guide has no site",
    "enumerated_guide_site": "asks to be enumerated",
    "sequential_enumeration_in_guide": "asks to be enumerated",
    "enumerated_class_in_guide": "asks to be enumerated",
    "sequential_enumeration_in_model": "asks for sequential enumeration",
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
    "enumerated_mixture_in_model": "asks to be enumerated",
    "enumerated_markov_chain": "asks to be enumerated",
    "enumerated_topics_in_nested_plates": "asks to be enumerated",
}


def configurations():
    """Every ``(engine name, options)`` the contract tests run: each row's options and its variants."""
    return [(name, options) for name, row in ENGINES.items() for options in (row.options, *row.variants)]


#: Programs Pyro's ``Trace_ELBO`` warns about that its ``TraceEnum_ELBO`` trains: an engine that sums enumerated
#: guide sites out trains them, and one that sums the model's out trains the others, or refuses them for the
#: reasons of its row.
ENUMERATED_GUIDES = ("enumerated_guide_site", "sequential_enumeration_in_guide", "enumerated_class_in_guide")
ENUMERATED_MODELS = ("enumerated_mixture_in_model", "enumerated_markov_chain", "enumerated_topics_in_nested_plates")


def expected(program, engine):
    """``None`` when ``engine`` must train ``program``, else a fragment of its refusal."""
    if program in ENUMERATED_GUIDES and REGISTERED[engine].sums_out_guide_enumeration:
        return None
    if program in ENUMERATED_MODELS and REGISTERED[engine].sums_out_enumerated:
        return next((r.fragment for r in ENGINES[engine].refusals if program in r.programs), None)
    if program in PYRO_REFUSED and runs_guide(engine):
        return PYRO_REFUSED[program]
    return next((r.fragment for r in ENGINES[engine].refusals if program in r.programs), None)


def runs_guide(engine):
    """Whether the engine runs the guide (so Pyro's verdict on the pair applies to it)."""
    return REGISTERED[engine].needs_guide


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
