"""Every registered engine on every program shape of the catalogue: it trains, or ``check`` refuses it.

A cell that trains runs ``check`` and then three optimizer steps, each with a
finite surrogate and finite gradients, and ``check`` must have found every
problem: no step may raise. A refused cell raises ``ValueError`` (or
:class:`~pplgen.UnsupportedModelError`) from ``check`` with the fragment in
:mod:`tests.support.outcomes`. Pairs Pyro rejects are refused by every engine
that runs the guide; a guide-free engine (gan) runs the model alone.
"""

import contextlib
import math
from pathlib import Path

import pyro
import pytest
import torch
from pyro.infer import TraceEnum_ELBO

import pplgen
from pplgen.inference import ENGINES as REGISTERED
from pplgen.inference import get, per_site_engines, score_function_engines
from pplgen.programs import owning_modules
from tests.support.outcomes import ENGINES, ENUMERATED_GUIDES, ENUMERATED_MODELS, PYRO_REFUSED, expected, markdown_table
from tests.support.programs import PROGRAMS

CELLS = [(entry, engine) for entry in PROGRAMS for engine in ENGINES]
IDS = [f"{entry.name}-{engine}" for entry, engine in CELLS]


def test_the_table_covers_every_registered_engine_and_program():
    assert list(ENGINES) == list(REGISTERED)
    names = {entry.name for entry in PROGRAMS}
    refused = {program for row in ENGINES.values() for refusal in row.refusals for program in refusal.programs}
    assert refused <= names and set(PYRO_REFUSED) <= names
    assert {entry.name for entry in PROGRAMS if entry.pyro != "ok"} == set(PYRO_REFUSED)


#: (program, engine) cells where no parameter moves, by Pyro's semantics: the guide's latent is masked out,
#: so its score is zero, and these engines' model updates reach no parameter of the program.
TRAINS_NOTHING = {
    ("mask_false_in_model_and_guide", name)
    for name, engine in REGISTERED.items()
    if engine.needs_guide and not engine.requires_rsample
}


@pytest.mark.parametrize("entry, engine_name", CELLS, ids=IDS)
def test_engine_trains_or_refuses_in_check(entry, engine_name):
    model, guide, args, kwargs = entry.build()
    engine = get(engine_name, **ENGINES[engine_name].options)
    guide = guide if engine.needs_guide else None
    refusal = expected(entry.name, engine_name)
    if refusal is not None:
        with pytest.raises(ValueError, match=refusal):
            engine.check(model, guide, *args, **kwargs)
        return
    probe = engine.check(model, guide, *args, **kwargs)
    params = _parameters(probe, model, guide, engine)
    pair = _parameters(probe, model, guide)
    optimizer = torch.optim.SGD(params, lr=1e-3) if params else None
    for _ in range(3):
        loss = engine(model, guide, *args, **kwargs)
        assert loss.surrogate.shape == () and torch.isfinite(loss.surrogate)
        assert all(math.isfinite(value) for value in loss.metrics.values())
        if optimizer:
            optimizer.zero_grad()
        loss.surrogate.backward()
        moved = any(p.grad is not None and p.grad.abs().sum() > 0 for p in pair)
        assert moved == (bool(pair) and (entry.name, engine_name) not in TRAINS_NOTHING)
        assert all(torch.isfinite(p.grad).all() for p in params if p.grad is not None)
        if optimizer:
            optimizer.step()


def _parameters(probe, model, guide, engine=None):
    candidates = list(probe.store_params.values()) + (list(engine.parameters()) if engine is not None else [])
    candidates += [p for module in owning_modules(model, guide) for p in module.parameters()]
    unique = {id(p): p for p in candidates if p.requires_grad}
    return list(unique.values())


def test_a_pair_with_nothing_to_train_takes_a_step_that_moves_nothing():
    """Pyro's SVI takes no step when no parameter reaches the loss; an engine's surrogate still accepts ``backward``."""
    entry = next(e for e in PROGRAMS if e.name == "no_trainable_parameters")
    model, guide, args, kwargs = entry.build()
    for name, row in ENGINES.items():
        if expected(entry.name, name) is None:
            engine = get(name, **row.options)
            loss = engine(model, guide if engine.needs_guide else None, *args, **kwargs)
            assert loss.surrogate.requires_grad
            loss.surrogate.backward()


def test_fit_refuses_a_pair_with_no_parameter_by_name():
    entry = next(e for e in PROGRAMS if e.name == "no_trainable_parameters")
    model, guide, args, kwargs = entry.build()
    with pytest.raises(ValueError, match="no parameters to train"):
        pplgen.fit(model, "svi", args, guide=guide, steps=1)


@pytest.mark.parametrize("entry", [e for e in PROGRAMS if e.pyro == "ok"], ids=lambda e: e.name)
def test_checking_leaves_the_random_number_generators_untouched(entry):
    model, guide, args, kwargs = entry.build()
    pyro.set_rng_seed(3)
    before = torch.get_rng_state()
    with contextlib.suppress(ValueError):
        get("svi").check(model, guide, *args, **kwargs)
    assert torch.equal(before, torch.get_rng_state())


def test_the_documentation_renders_this_table():
    """docs/own_program.md shows the conformance table through the ``conformance-table`` directive
    (docs/_ext/pplgen_docs.py), which builds it from :func:`markdown_table` at every ``make docs``: the page
    cannot drift from what this suite asserts."""
    root = Path(__file__).parents[2]
    assert "```{conformance-table}" in (root / "docs" / "own_program.md").read_text()
    assert "outcomes.markdown_table()" in (root / "docs" / "_ext" / "pplgen_docs.py").read_text()
    table = markdown_table()
    assert all(f"| `{entry.name}` |" in table for entry in PROGRAMS if entry.pyro == "ok")


def test_the_engines_named_in_refusals_are_the_registrys():
    assert per_site_engines() == ["svi", "wake_sleep", "nvil", "gumbel"]
    assert score_function_engines() == ["wake_sleep", "rws", "nvil", "vimco"]


@pytest.mark.parametrize("name", ENUMERATED_MODELS + ENUMERATED_GUIDES)
@pytest.mark.parametrize("seed", [0, 1])
def test_svi_gives_trace_enum_elbos_loss_and_gradients_on_every_enumerated_program(name, seed):
    """The same seed, the same draws: svi's loss on each enumerated shape of the catalogue, and its gradient in
    every parameter, are TraceEnum_ELBO's."""
    entry = next(e for e in PROGRAMS if e.name == name)
    model, guide, args, kwargs = entry.build()
    nesting = get("svi").check(model, guide, *args, **kwargs).max_plate_nesting
    results = []
    for loss_of in (
        lambda: get("svi")(model, guide, *args, **kwargs).surrogate,
        lambda: TraceEnum_ELBO(max_plate_nesting=nesting).differentiable_loss(model, guide, *args, **kwargs),
    ):
        pyro.clear_param_store()
        pyro.set_rng_seed(seed)
        loss = loss_of()
        loss.backward()
        results.append((loss.detach(), {n: p.grad for n, p in pyro.get_param_store().named_parameters()}))
    (ours, our_grads), (theirs, their_grads) = results
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-4)
    assert our_grads.keys() == their_grads.keys() and all(g is not None for g in their_grads.values())
    for n in our_grads:
        torch.testing.assert_close(our_grads[n], their_grads[n], rtol=1e-5, atol=1e-5, msg=n)
