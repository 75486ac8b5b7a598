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
STORIES = ("swap_engines_vae", "implicit_guide_avb", "eight_schools", "lda", "new_model_from_scratch")


def load_example(name, monkeypatch):
    """The script ``examples/{name}.py`` as a module; its folder is on ``sys.path`` for this test only (the scripts
    import their shared helper, examples/every_engine.py, as a script run from there would)."""
    monkeypatch.syspath_prepend(str(EXAMPLES))
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("engine", pplgen.inference.guided_engines())
@pytest.mark.parametrize("script", SCRIPTS)
def test_smoke_run(script, engine, one_thread, monkeypatch):
    result = load_example(script, monkeypatch).main(["--smoke", "--engine", engine])[engine]
    if isinstance(result, pplgen.UnsupportedModelError):
        assert "site" in str(result)
    else:
        assert math.isfinite(result)


@pytest.mark.parametrize("script", STORIES)
def test_story_smoke_run(script, one_thread, monkeypatch):
    figures = load_example(script, monkeypatch).main(["--smoke"])
    assert figures
    assert all(math.isfinite(value) for value in figures.values()), figures
