"""Pyro's own example and tutorial programs through every engine (:mod:`tests.support.pyro_repository`): each trains or is
refused in check with a named reason. Runs when ``PPLGEN_PYRO_REPOSITORY`` names a checkout of
https://github.com/pyro-ppl/pyro; skipped otherwise (nothing is downloaded)."""

import os
from pathlib import Path

import pytest
import torch

from tests.support.outcomes import ENGINES
from tests.support.pyro_repository import EXAMPLES, run

REPOSITORY = os.environ.get("PPLGEN_PYRO_REPOSITORY")

pytestmark = pytest.mark.skipif(
    not REPOSITORY or not (Path(REPOSITORY) / "examples").is_dir(),
    reason="set PPLGEN_PYRO_REPOSITORY to a checkout of pyro-ppl/pyro to run Pyro's examples",
)

#: The engine nearest to the estimator each example's author trains it with (nvil for TraceGraph_ELBO and for
#: Trace_ELBO on discrete guide sites), which must train it here.
TRAINED_AS_WRITTEN = {
    "vae": "svi",
    "ss_vae_M2 (unlabelled)": "svi",
    "lda": "svi",
    **{f"hmm model_{n}": "svi" for n in range(8)},
    "toy_mixture_model_discrete_enumeration": "svi",
    **{f"cjs model_{n}": "svi" for n in range(1, 6)},
    "sparse_gamma_def": "svi",
    "eight_schools/svi": "svi",
    "svi_torch": "svi",
    "air": "nvil",
    "dmm": "svi",
    "cvae": "svi",
    "scanvi": "svi",
    "autoname/scoping_mixture": "svi",
    "gmm (MAP)": "svi",
    "gmm (full_guide)": "svi",
    "svi_part_i": "svi",
    "svi_part_iii": "nvil",
    "enumeration: mixture": "svi",
    "enumeration: hmm": "svi",
    "intro_long (custom_guide)": "svi",
    "intro_long (AutoNormal)": "svi",
    "mle_map (MLE)": "svi",
    "mle_map (MAP)": "svi",
    "intro_part_ii": "svi",
    "dirichlet_process_mixture": "nvil",
    "easyguide": "svi",
}


@pytest.mark.parametrize("engine", list(ENGINES))
@pytest.mark.parametrize("example", EXAMPLES, ids=[e.name for e in EXAMPLES])
def test_each_example_trains_or_is_refused_by_name(example, engine):
    outcome = run(example, engine, REPOSITORY)
    assert outcome.verdict in ("trains", "refused"), outcome.message
    if TRAINED_AS_WRITTEN.get(example.name) == engine:
        assert outcome.verdict == "trains", outcome.message


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.name for e in EXAMPLES])
def test_each_example_gives_its_eager_losses_under_the_trace(example):
    """``compile="trace"`` on the engine each example is trained with, 6 steps (eager, traced, then replayed):
    the eager losses to float tolerance, whether the step traces or runs eagerly with a note saying why."""
    engine = TRAINED_AS_WRITTEN.get(example.name)
    if engine is None:
        pytest.skip(f"{example.name} has no engine it is trained with as written")
    eager, traced = (run(example, engine, REPOSITORY, steps=6, compile=c) for c in (False, "trace"))
    assert (eager.verdict, traced.verdict) == ("trains", "trains"), traced.message
    torch.testing.assert_close(torch.tensor(traced.losses), torch.tensor(eager.losses), rtol=1e-4, atol=1e-3)
