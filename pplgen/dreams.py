"""Dreaming: run the model with its observations removed and hand the dream to the guide.

Wake-sleep and reweighted wake-sleep train the guide in a *sleep* phase on
pairs (z̃, x̃) ~ p(z, x) drawn from the model itself. A pplgen program receives
its data as an argument and observes it with ``obs=``; a dream is that program
run under ``poutine.uncondition``, and the dreamed x̃ then replaces the data
argument when the guide is scored::

    dreamed = dream(model, (x,), {})
    log_q = sleep_log_density(guide, dreamed)   # Σ scale · log q(z̃ | x̃)

Which argument an observed site reads is found by identity (the model passes
the argument, or a reshape of it, to ``obs=``); where that is ambiguous or
impossible, engines take ``data_arguments={"x": 0}`` (a position) or
``{"x": "images"}`` (a keyword).
"""

from contextlib import nullcontext
from dataclasses import dataclass

import torch
from pyro import poutine

from pplgen.checks import UnsupportedModelError, registry
from pplgen.particles import (
    is_auxiliary,
    is_observation,
    is_sample_site,
    site_log_prob,
)
from pplgen.sampling import DetachLatents


def without_dreams():
    """What a sleep phase's refusals advise when the model cannot be dreamed in place of its data."""
    return (
        f"train the guide without dreams ({', '.join(registry().engines_without_dreams())}, or "
        f"{' or '.join(registry().pathwise_engines())} for continuous latents)"
    )


@dataclass
class Dream:
    """A model trace drawn with observations removed and the arguments the
    guide receives in its place; ``data_arguments`` says which argument
    (position or keyword) holds each observed site's dream."""

    trace: poutine.Trace
    args: tuple
    kwargs: dict
    data_arguments: dict


def dream(model, args, kwargs, *, data_arguments=None, reparameterized=False):
    """Draw (z̃, x̃) from the model; put x̃ where the real data were.

    By default the dream's values are detached (the sleep phase trains the guide on them). With
    ``reparameterized=True`` they keep their graph: sites with ``rsample`` are drawn by it, so x̃ is a
    differentiable function of the model's parameters (the ``gan`` engine's generator).
    """
    with nullcontext() if reparameterized else DetachLatents():
        trace = poutine.trace(poutine.uncondition(model)).get_trace(*args, **kwargs)
    observed = observed_sites(trace)
    if not observed:
        raise UnsupportedModelError("the model observes no site (no obs=), so there is nothing to dream")
    if data_arguments is not None:
        mapping = dict(data_arguments)
    else:
        observations = {name: site["infer"]["obs"] for name, site in observed.items()}
        mapping = find_data_arguments(observations, args, kwargs)
    args, kwargs = list(args), dict(kwargs)
    for name, key in mapping.items():
        if name not in observed:
            raise ValueError(
                f"data_arguments names site '{name}', which the model does not observe; "
                f"observed sites: {sorted(observed)}"
            )
        site = observed[name]
        if site["value"].shape != site["infer"]["obs"].shape:
            raise UnsupportedModelError(
                f"site '{name}': the model dreams data of shape {tuple(site['value'].shape)} but observes data of "
                f"shape {tuple(site['infer']['obs'].shape)}; a dream must take the data's place row for row, so "
                "size the model's plates by the data."
            )
        argument = _argument(args, kwargs, key, name)
        if argument.numel() != site["value"].numel():
            raise UnsupportedModelError(
                f"site '{name}' observes values of shape {tuple(site['infer']['obs'].shape)} but argument {key!r} has shape "
                f"{tuple(argument.shape)}: dreaming needs the model to observe the whole argument, so subsample "
                "outside the program (pass mini-batches) when an engine dreams."
            )
        dreamed = site["value"].reshape(argument.shape).to(argument.dtype)
        if isinstance(key, int):
            args[key] = dreamed
        else:
            kwargs[key] = dreamed
    return Dream(trace, tuple(args), kwargs, mapping)


def observed_sites(trace):
    """``{name: site}`` of the sites a dream drew in place of observations."""
    return {
        name: site
        for name, site in trace.nodes.items()
        if is_sample_site(site) and site["infer"].get("was_observed") and is_observation({**site, "is_observed": True})
    }


def sleep_log_density(guide, dreamed):
    """Σ over guide sites of scale · log q(z̃ | x̃) at a dream: the sleep-phase objective."""
    guide_trace = poutine.trace(poutine.replay(guide, trace=dreamed.trace)).get_trace(*dreamed.args, **dreamed.kwargs)
    for site in guide_trace.nodes.values():
        if is_sample_site(site) and is_auxiliary(site):
            raise UnsupportedModelError(
                f"guide site '{site['name']}' is auxiliary (the model has no such site, as in Pyro's autoguides): "
                "the sleep phase scores the guide at latents dreamed from the model and cannot score it; "
                f"use {' or '.join(registry().engines_without_dreams() + registry().pathwise_engines())}."
            )
    return sum(site_log_prob(site, scaled=True).sum() for site in guide_trace.nodes.values() if is_sample_site(site))


def check_dreams(model, guide, args, kwargs, data_arguments, engine_name):
    """Dream once and score the guide on the dream, as a sleep phase will, leaving the RNG untouched;
    a program that fails on its own dreams is refused here, before training."""
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices), poutine.block():
        sleep_phase(model, guide, args, kwargs, data_arguments, engine_name, first=True)


def sleep_phase(model, guide, args, kwargs, data_arguments, engine_name, *, first=False):
    """The sleep objective Σ scale · log q(z̃ | x̃) at one dream from the model. A guide that fails on the
    dream is refused; on the ``first`` sleep phase of a plan, so is one that gives it no finite density (the
    verdict of :func:`check_dreams`, which this is)."""
    dreamed = dream(model, args, kwargs, data_arguments=data_arguments)
    try:
        log_q = sleep_log_density(guide, dreamed)
    except UnsupportedModelError:
        raise
    except Exception as error:
        raise UnsupportedModelError(
            f"{engine_name}'s sleep phase runs the guide on data dreamed from the model, and the guide fails "
            f"on them ({type(error).__name__}: {error}); pass data_arguments to say which argument each observed "
            f"site reads, or {without_dreams()}."
        ) from error
    if first and not torch.isfinite(torch.as_tensor(log_q)):
        raise UnsupportedModelError(
            f"{engine_name}'s sleep phase scores the guide at latents dreamed from the model, and the guide gives "
            f"them log-density {float(log_q)} (a Delta or point-mass guide has no density there); {without_dreams()}."
        )
    return log_q


def find_data_arguments(observations, args, kwargs, *, advice=None):
    """``{observed site: argument position or keyword}``, where the observed value (``observations``, by site
    name) is that argument."""
    candidates = [(i, a) for i, a in enumerate(args)] + list(kwargs.items())
    candidates = [(key, a) for key, a in candidates if isinstance(a, torch.Tensor)]
    mapping = {}
    for name, obs in observations.items():
        matches = [key for key, argument in candidates if _holds(argument, obs)]
        if len(matches) != 1:
            hint = f"pass data_arguments={{'{name}': 0}} (its position) or {{'{name}': 'keyword'}} to the engine"
            if matches:
                raise UnsupportedModelError(
                    f"cannot tell which model argument holds the data observed at site '{name}' (several arguments "
                    f"hold it); {hint}."
                )
            raise UnsupportedModelError(
                f"cannot tell which model argument holds the data observed at site '{name}' (no argument holds it "
                f"unchanged); if the site observes a whole argument, {hint}; if it observes part of one (a time "
                f"step, a subsample), a dream cannot take its place: {advice or without_dreams()}."
            )
        mapping[name] = matches[0]
    keys = list(mapping.values())
    if len(set(keys)) != len(keys):
        raise ValueError(
            f"observed sites {sorted(mapping)} all read the same argument; pass data_arguments explicitly."
        )
    return mapping


def _holds(argument, obs):
    if argument is obs:
        return True
    return argument.numel() == obs.numel() and torch.equal(argument.reshape(obs.shape), obs)


def _argument(args, kwargs, key, name):
    if isinstance(key, int) and 0 <= key < len(args):
        return args[key]
    if isinstance(key, str) and key in kwargs:
        return kwargs[key]
    raise ValueError(
        f"data_arguments maps site '{name}' to {key!r}, but the model received {len(args)} positional "
        f"arguments and keywords {sorted(kwargs)}"
    )


def check_data_arguments(data_arguments):
    """Validate an engine's ``data_arguments`` option: ``None`` or ``{site: position or keyword}``."""
    if data_arguments is None:
        return None
    if not isinstance(data_arguments, dict) or not all(
        isinstance(site, str) and isinstance(key, (int, str)) and not isinstance(key, bool)
        for site, key in data_arguments.items()
    ):
        raise ValueError(
            "data_arguments must map observed site names to argument positions or keywords, "
            f"e.g. {{'x': 0}}; got {data_arguments!r}"
        )
    return dict(data_arguments)
