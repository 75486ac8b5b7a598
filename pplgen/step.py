"""One training step of an engine on a model/guide pair: :class:`TrainingStep`.

A step runs the engine's forward through model and guide, sums the
surrogate's gradients over the ranks (:mod:`pplgen.distributed`), clips them
and takes one optimizer step, with one parameter group per role
(:mod:`pplgen.roles`). :func:`pplgen.fit` runs the steps in a loop; the step
object can also be driven by hand::

    step = TrainingStep(model, guide, pplgen.inference.get("rws", num_particles=5), lr=3e-4)
    for x in batches:
        metrics = step.step(x)
"""

import inspect
import math
from collections.abc import Callable, Mapping
from contextlib import nullcontext

import pyro
import torch
import torch.distributed as dist

from pplgen.distributed import broadcast_, sum_gradients, world_size
from pplgen.engine import Engine
from pplgen.options import Optimization, check_compile, check_precision, learning_rates
from pplgen.programs import owning_modules
from pplgen.roles import parameter_roles
from pplgen.traced import TracedGradients


class NonFiniteLossError(FloatingPointError):
    """A step produced a non-finite surrogate (no parameter was updated) or non-finite parameters."""


class TrainingStep:
    """One training step of ``engine`` on a model/guide pair.

    :param lr: a learning rate, or ``{"model": ..., "guide": ..., "helper": ...}``
        (roles left out get the optimizer's default).
    :param optimizer: a ``torch.optim.Optimizer`` subclass.
    :param optimizer_options: further keyword arguments for it.
    :param clip_norm: clip the gradient's total norm to this value.
    :param validate_every_step: keep Pyro's distribution checks (arguments
        and support, when Pyro validation is on) after the first step. They
        run in :meth:`setup` and the first step either way; later steps skip
        them by default because they cost about a tenth of a small VAE's step.
    :param precision: ``"32-true"`` (default), ``"bf16-mixed"`` or
        ``"16-mixed"``: the mixed ones run model, guide and engine under
        ``torch.autocast`` (log-densities are still summed in float32, see
        :func:`pplgen.particles.site_log_prob`); ``"16-mixed"`` also scales
        the loss against float16 underflow (``torch.amp.GradScaler``).
    :param compile: ``"trace"``: from the second step on, replay the engine's
        forward and backward as one traced, compiled graph
        (:mod:`pplgen.traced`; same numbers as eager, steps that cannot be
        traced run eagerly with a note saying why). ``True``: run the engine's
        forward as a ``torch.compile`` function (graph breaks at Pyro's
        handlers fall back to eager). See ``benchmarks/peers_step.py``.

    The optimizer runs its fused kernel (``fused=True``) where it has one for
    the parameters' device, unless ``optimizer_options`` choose its
    implementation (``foreach`` or ``fused``).

    Parameters are sorted into roles on the first step (see :mod:`pplgen.roles`).
    In a multi-process run (:mod:`pplgen.distributed`) each rank calls
    :meth:`step` on its shard; gradients and metrics are summed over ranks.
    """

    def __init__(
        self,
        model: Callable,
        guide: Callable,
        engine: Engine,
        *,
        optimizer: type[torch.optim.Optimizer] = torch.optim.Adam,
        lr: float | Mapping[str, float] = 1e-3,
        optimizer_options: Mapping | None = None,
        clip_norm: float | None = None,
        validate_every_step: bool = False,
        precision: str = "32-true",
        compile: bool | str = False,
    ):
        self.optimization = Optimization(
            optimizer=optimizer,
            lr=lr,
            options=optimizer_options,
            clip_norm=clip_norm,
            validate_every_step=validate_every_step,
        )
        check_precision(precision)
        check_compile(compile, precision)
        self.model, self.guide = model, guide
        self.engine = engine
        self.learning_rates = learning_rates(lr)
        if isinstance(lr, dict) and "helper" in lr and engine.fits_own_helpers:
            raise ValueError(
                f"{engine.name} fits its own networks inside its forward, so lr['helper'] would reach nothing; "
                f"drop it and set the engine's own rate instead (e.g. discriminator_lr for avb)"
            )
        self.optimizer_options = dict(optimizer_options or {})
        self.precision = precision
        self.forward = torch.compile(self._forward) if compile is True else self._forward
        self.traced = TracedGradients(self._forward, engine.name) if compile == "trace" else None
        self.optimizer = None
        self.scaler = None
        self.roles = None
        self.store_params = {}
        self.engine_parameters = 0
        self.num_steps = 0

    def setup(self, *args, **kwargs):
        """Check the pair, sort the parameters into roles and build the optimizer (once); returns the
        pair's probe (:mod:`pplgen.probe`), or None when already set up.

        In a multi-process run every rank then holds rank 0's parameters and buffers (modules built
        without a common seed start alike)."""
        if self.optimizer is not None:
            return None
        probe = self.engine.prepare(self.model, self.guide, *args, **kwargs)
        self.roles = parameter_roles(probe, self.model, self.guide, self.engine)
        self.store_params = probe.store_params
        groups = [
            {
                "params": params,
                "role": role,
                **({"lr": self.learning_rates[role]} if role in self.learning_rates else {}),
            }
            for role, params in self.roles.items()
            if params
        ]
        if not groups:
            trained = "model, guide and engine" if self.engine.needs_guide else "model and engine"
            raise ValueError(f"the {trained} have no parameters to train")
        implementation = _fused(self.optimization.optimizer, groups, self.optimizer_options, self.precision)
        self.optimizer = self.optimization.optimizer(groups, **implementation, **self.optimizer_options)
        self.engine_parameters = sum(1 for _ in self.engine.parameters())
        if self.precision == "16-mixed":
            self.scaler = torch.amp.GradScaler(_device_of(groups).type)
        broadcast_(self._state_tensors())
        return probe

    def step(self, *args, **kwargs) -> dict[str, float]:
        """One update; returns the engine's metrics as floats (summed over ranks; averaged for the engine's
        ``mean_metrics``)."""
        self.setup(*args, **kwargs)
        checks = (
            nullcontext()
            if self.optimization.validate_every_step or self.num_steps == 0
            else pyro.validation_enabled(False)
        )
        traced = None if self.traced is None else self._traced(*args, **kwargs)
        if traced is None:
            with checks, self._autocast():
                loss = self.forward(*args, **kwargs)
            self._join_new_helpers()
        else:
            loss, grads = traced
        self.num_steps += 1
        surrogate, metrics = self._reduced(loss)
        if not math.isfinite(surrogate):
            raise NonFiniteLossError(self._non_finite_message(metrics))
        if traced is None:
            self._backward(loss.surrogate)
        else:
            for param, grad in zip(self._trained(), grads):
                param.grad = grad
        self._apply_gradients()
        return metrics

    def _traced(self, *args, **kwargs):
        """``(loss, gradients)`` from the traced graph of this step, or None when it runs eagerly."""
        with pyro.validation_enabled(False), self._autocast():
            return self.traced(self._trained(), self._state_tensors(), args, kwargs)

    def _trained(self):
        return [p for group in self.optimizer.param_groups for p in group["params"]]

    def _join_new_helpers(self):
        """Engine parameters built after :meth:`setup` (nvil's baseline for a site set first met later) join
        the helper role's group; the optimizer's state of each starts at its first update."""
        count = sum(1 for _ in self.engine.parameters())
        if self.engine.fits_own_helpers or count == self.engine_parameters:
            return
        self.engine_parameters = count
        known = {id(p) for group in self.optimizer.param_groups for p in group["params"]}
        new = [p for p in self.engine.parameters() if p.requires_grad and id(p) not in known]
        if not new:
            return
        self.roles["helper"] = [*self.roles["helper"], *new]
        helper = next((group for group in self.optimizer.param_groups if group["role"] == "helper"), None)
        if helper is None:
            rate = {"lr": self.learning_rates["helper"]} if "helper" in self.learning_rates else {}
            self.optimizer.add_param_group({"params": new, "role": "helper", **rate})
        else:
            helper["params"].extend(new)

    def _forward(self, *args, **kwargs):
        return self.engine(self.model, self.guide, *args, **kwargs)

    def _autocast(self):
        if not self.precision.endswith("-mixed"):
            return nullcontext()
        device = _device_of(self.optimizer.param_groups)
        return torch.autocast(device.type, dtype=torch.bfloat16 if self.precision == "bf16-mixed" else torch.float16)

    def _reduced(self, loss):
        """The surrogate's value and the metrics over all ranks, in one all-reduce and one copy to the host."""
        names = list(loss.metrics)
        dtype = torch.float32 if loss.surrogate.device.type == "mps" else torch.float64  # MPS has no float64
        values = torch.stack([loss.surrogate.detach(), *(loss.metrics[n].detach() for n in names)]).to(dtype)
        if world_size() > 1:
            dist.all_reduce(values)
            means = torch.tensor([n in self.engine.mean_metrics for n in names], device=values.device)
            values[1:] = torch.where(means, values[1:] / world_size(), values[1:])
        surrogate, *rest = values.tolist()
        return surrogate, dict(zip(names, rest))

    def _backward(self, surrogate):
        """Leave ``∇ surrogate`` on the parameters; those it does not reach keep no gradient and stay put."""
        self.optimizer.zero_grad(set_to_none=True)
        (surrogate if self.scaler is None else self.scaler.scale(surrogate)).backward()

    def _apply_gradients(self):
        """One optimizer step along the gradients (summed over ranks).

        Raises :class:`NonFiniteLossError` naming the parameter when the step made one non-finite.
        """
        params = self._trained()
        sum_gradients(params)
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        if self.optimization.clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(params, self.optimization.clip_norm)
        if self.scaler is None:
            self.optimizer.step()
        else:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        # A parameter's sum is NaN or inf when one of its values is (or when they overflow together): one
        # reduction per tensor, a seventeenth of the cost of their norms.
        if not torch.stack([p.detach().sum() for p in params]).isfinite().all():
            raise NonFiniteLossError(self._non_finite_parameter_message())

    def _state_tensors(self):
        """Every parameter and buffer a step reads or changes: modules, Pyro's parameters, the engine."""
        modules = [*owning_modules(self.model, self.guide), self.engine]
        tensors = [t for m in modules for t in (*m.parameters(), *m.buffers())]
        return tensors + list(self.store_params.values())

    def _non_finite_parameter_message(self):
        role, index = next(
            (group["role"], i)
            for group in self.optimizer.param_groups
            for i, p in enumerate(group["params"])
            if not torch.isfinite(p.detach().sum())
        )
        rates = {group["role"]: group["lr"] for group in self.optimizer.param_groups}
        return (
            f"step {self.num_steps}: engine '{self.engine.name}' made {role} parameter {index} non-finite (NaN or "
            f"inf) with learning rates {rates}; training stopped. Lower the learning rate or clip gradients "
            "(clip_norm=...)."
        )

    def _non_finite_message(self, metrics):
        bad = [name for name, value in metrics.items() if not math.isfinite(value)]
        culprit = f"metric '{bad[0]}' = {metrics[bad[0]]}" if bad else "the surrogate"
        spared = "any parameter" if not self.engine.fits_own_helpers else "the model's and guide's parameters"
        return (
            f"step {self.num_steps}: engine '{self.engine.name}' produced a non-finite loss "
            f"({culprit}); training stopped before updating {spared}. Lower the learning "
            "rate, clip gradients (clip_norm=...), or check the data and the model's scales."
        )

    def state_dict(self):
        modules = dict(zip(("model", "guide"), owning_modules(self.model, self.guide)))
        return {
            "modules": {name: module.state_dict() for name, module in modules.items()},
            "param_store": {name: p.detach().clone() for name, p in self.store_params.items()},
            "engine": self.engine.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": None if self.scaler is None else self.scaler.state_dict(),
            "num_steps": self.num_steps,
        }

    def load_state_dict(self, state):
        modules = dict(zip(("model", "guide"), owning_modules(self.model, self.guide)))
        for name, module in modules.items():
            module.load_state_dict(state["modules"][name])
        with torch.no_grad():
            for name, value in state["param_store"].items():
                self.store_params[name].copy_(value)
        self.engine.load_state_dict(state["engine"])
        self._join_new_helpers()
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scaler is not None:
            self.scaler.load_state_dict(state["scaler"])
        self.num_steps = state["num_steps"]


def _fused(optimizer, groups, options, precision):
    """``{"fused": True}`` where the optimizer has a fused kernel for every parameter's device and dtype and the
    options choose no implementation (and no loss scaler steps it)."""
    if "fused" not in inspect.signature(optimizer).parameters or {"fused", "foreach"} & set(options):
        return {}
    if precision == "16-mixed":
        return {}
    params = [p for group in groups for p in group["params"]]
    if not all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params):
        return {}
    return {"fused": True}


def _device_of(param_groups):
    return next(p.device for group in param_groups for p in group["params"])
