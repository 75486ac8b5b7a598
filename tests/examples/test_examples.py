"""Every example script runs on its smoke budget: those that loop over every engine give a finite figure or
the engine's named refusal for each; the others give finite figures."""

import importlib.util
import math
from pathlib import Path

import pytest

import pplgen

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SCRIPTS = ("sparse_gamma_def", "deep_markov_model", "semi_supervised_vae", "sigmoid_belief_net")
#: Scripts of one user story each that train chosen engines, not every one; ``main`` returns ``{name: figure}``.
STORIES = (
    "swap_engines_vae",
    "implicit_guide_avb",
    "eight_schools",
    "lda",
    "new_model_from_scratch",
    "enumerated_mixture_and_hmm",
    "discrete_estimators",
)


def load_example(name, monkeypatch):
    """The script ``examples/{name}.py`` as a module; its folder is on ``sys.path`` for this test only (the scripts
    import their shared helper, examples/every_engine.py, as a script run from there would)."""
    monkeypatch.syspath_prepend(str(EXAMPLES))
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def expected_refusal(script, engine):
    """The fragment of the refusal ``engine`` must give the script's model, from the engine's traits, or None
    when it must train it: the sigmoid belief net's latents are Bernoulli (no rsample); the deep Markov model
    anneals its KL terms (sites of a datum scaled apart) and observes slices of its data argument (no dream
    can take their place); the sparse gamma DEF's and M2's latents are not all binary."""
    traits = pplgen.inference.ENGINES[engine]
    if script == "sigmoid_belief_net" and traits.requires_rsample and not traits.relaxes_discrete:
        return "site 'h1' is a Bernoulli and has no rsample"
    if script == "deep_markov_model" and traits.discrete_latents_only:
        return "not a Bernoulli"
    if script == "deep_markov_model" and traits.needs_common_scale:
        return "importance weights need every site of a datum scaled alike"
    if script == "deep_markov_model" and traits.dreams:
        return "cannot tell which model argument holds the data observed at site 'x_1'"
    if script in ("sparse_gamma_def", "semi_supervised_vae") and (
        traits.binary_latents_only or traits.discrete_latents_only
    ):
        return "not a Bernoulli"
    return None


@pytest.mark.parametrize("engine", pplgen.inference.guided_engines())
@pytest.mark.parametrize("script", SCRIPTS)
def test_smoke_run(script, engine, one_thread, monkeypatch):
    result = load_example(script, monkeypatch).main(["--smoke", "--engine", engine])[engine]
    refusal = expected_refusal(script, engine)
    if refusal is None:
        assert not isinstance(result, Exception), result
        assert math.isfinite(result)
    else:
        assert isinstance(result, pplgen.UnsupportedModelError) and refusal in str(result), result


@pytest.mark.parametrize("script", STORIES)
def test_story_smoke_run(script, one_thread, monkeypatch):
    figures = load_example(script, monkeypatch).main(["--smoke"])
    assert figures
    assert all(math.isfinite(value) for value in figures.values()), figures
