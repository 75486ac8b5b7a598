"""Model/guide pairs as users pass them: two callables, or one object with
``.model`` and ``.guide`` (every model family in :mod:`pplgen.models`)."""

import torch


def no_guide(*args, **kwargs):
    """The guide of a model trained without one (the ``gan`` engine): it draws nothing."""


def model_and_guide(model, guide=None, *, needs_guide=True):
    """The two programs of a pair; :func:`no_guide` for engines that train the model alone
    (``needs_guide=False``), whatever guide was given."""
    if not needs_guide:
        program = model.model if callable(getattr(model, "model", None)) else model
        if not callable(program):
            raise TypeError(f"the model must be a callable Pyro program, got {type(model).__name__}")
        return program, no_guide
    if guide is None:
        if callable(getattr(model, "model", None)) and callable(getattr(model, "guide", None)):
            return model.model, model.guide
        raise TypeError(
            f"no guide given and {type(model).__name__} has no .model and .guide methods: pass "
            "guide=..., or an object with both (e.g. pplgen.models.VAE())."
        )
    if not callable(model) or not callable(guide):
        raise TypeError("model and guide must be callables (Pyro programs)")
    return model, guide


def owning_modules(*programs):
    """The distinct ``torch.nn.Module`` objects behind programs (a module or its bound method)."""
    modules = []
    for program in programs:
        module = program if isinstance(program, torch.nn.Module) else getattr(program, "__self__", None)
        if isinstance(module, torch.nn.Module) and not any(module is m for m in modules):
            modules.append(module)
    return modules
