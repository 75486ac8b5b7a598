"""Pyro's own verdict on every program of the conformance catalogue.

Each entry of ``tests.support.programs.PROGRAMS`` records what one step of
``SVI(model, guide, Adam({"lr": 1e-6}), Trace_ELBO())`` does with validation
on, and what kind of latents its guide draws. These tests run that step and
trace that guide, so the table the engines are held to stays true to Pyro.
"""

import re
import sys
import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import SVI, Trace_ELBO
from pyro.poutine.subsample_messenger import _Subsample

from tests.support.programs import LATENTS, PROGRAMS, Program

IDS = [entry.name for entry in PROGRAMS]


def pyro_outcome(model, guide, args, kwargs):
    """``("ok" | "warns" | "error", messages)`` for one validated Trace_ELBO step."""
    svi = SVI(model, guide, pyro.optim.Adam({"lr": 1e-6}), Trace_ELBO())
    with pyro.validation_enabled(True), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            svi.step(*args, **kwargs)
        except Exception as error:
            return "error", [str(error)]
    messages = [str(w.message) for w in caught]
    return ("warns" if messages else "ok"), messages


def guide_latents(guide, args, kwargs):
    """What the guide draws: its latent sites and its factors, which count with their ``has_rsample``."""
    trace = poutine.trace(guide).get_trace(*args, **kwargs)
    sites = [
        site
        for site in trace.nodes.values()
        if site["type"] == "sample"
        and not isinstance(site["fn"], _Subsample)
        and (not site["is_observed"] or isinstance(site["fn"], dist.Unit))
    ]
    if not sites:
        return "none"
    return "continuous" if all(site["fn"].has_rsample for site in sites) else "discrete"


def test_catalogue_is_listed_once_with_unique_names():
    defined = [v for v in vars(sys.modules[Program.__module__]).values() if isinstance(v, Program)]
    assert len(defined) == len(PROGRAMS) and all(any(p is d for p in PROGRAMS) for d in defined)
    assert len(set(IDS)) == len(IDS)
    assert all(re.fullmatch(r"[a-z][a-z0-9_]*", name) for name in IDS)
    assert {entry.latents for entry in PROGRAMS} == set(LATENTS)


@pytest.mark.parametrize("entry", PROGRAMS, ids=IDS)
def test_pyro_does_what_the_entry_says(entry):
    pyro.clear_param_store()
    outcome, messages = pyro_outcome(*entry.build())
    assert outcome == entry.pyro, messages
    if entry.reason:
        assert any(re.search(entry.reason, message) for message in messages), messages


@pytest.mark.parametrize("entry", PROGRAMS, ids=IDS)
def test_latents_match_the_guide_trace(entry):
    model, guide, args, kwargs = entry.build()
    assert guide_latents(guide, args, kwargs) == entry.latents


@pytest.mark.parametrize("entry", PROGRAMS, ids=IDS)
def test_build_is_deterministic_and_leaves_the_global_rng_alone(entry):
    rng_state = torch.random.get_rng_state()
    *_, args, kwargs = entry.build()
    assert torch.equal(rng_state, torch.random.get_rng_state())
    *_, args_again, kwargs_again = entry.build()
    for first, second in zip([*args, *kwargs.values()], [*args_again, *kwargs_again.values()]):
        assert torch.equal(first, second) if torch.is_tensor(first) else first == second
