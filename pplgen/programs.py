"""Model/guide pairs as users pass them: two callables, or one object with
``.model`` and ``.guide`` (every model family in :mod:`pplgen.models`)."""

import torch


def model_and_guide(model, guide=None):
    """The two programs of a pair."""
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
