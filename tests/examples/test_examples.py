"""Every example script trains a few steps with every engine: a finite loss, or the engine's named refusal."""

import importlib.util
import math
import sys
from pathlib import Path

import pytest
import torch

import pplgen

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SCRIPTS = ("sparse_gamma_def", "deep_markov_model", "semi_supervised_vae")


def load_example(name):
    if str(EXAMPLES) not in sys.path:  # the scripts import their shared helper, examples/every_engine.py
        sys.path.insert(0, str(EXAMPLES))
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def one_thread():
    """The smoke networks are tiny: one thread is fastest and does not slow down on shared cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("engine", list(pplgen.inference.ENGINES))
@pytest.mark.parametrize("script", SCRIPTS)
def test_smoke_run(script, engine, one_thread):
    result = load_example(script).main(["--smoke", "--engine", engine])[engine]
    if isinstance(result, pplgen.UnsupportedModelError):
        assert "site" in str(result)
    else:
        assert math.isfinite(result)
