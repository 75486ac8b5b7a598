"""The traced step: an engine's forward and backward as one graph, traced once and replayed compiled.

Pyro's effect handlers are Python, and in an eager step that Python runs on every step: on a small model it
costs as much as the arithmetic (``benchmarks/peers_step.py``). The programs these engines train keep their
structure from step to step, so :class:`TracedGradients` records one step, engine forward through model and
guide, the surrogate and its gradient with respect to every trained parameter, at the level of ATen operations
(``torch.fx.experimental.proxy_tensor.make_fx``, the tracer under ``torch.export`` and AOTAutograd), and compiles
the graph with TorchInductor (:func:`inductor`). Later steps replay it: no Pyro handler, distribution object or
engine code runs, and the random draws are fresh, from the same generator and in the same order as the eager step
takes them (the compiler keeps PyTorch's random operations, ``fallback_random``), so a traced run gives the eager
run's numbers to float tolerance.

A graph holds for the arguments' shapes, strides, dtypes and devices, their non-tensor values, the autocast
setting, the Pyro handlers entered around the step and the very tensors it reads; a value the program reads from
elsewhere (a global annealing factor, say) is a constant of the graph, so pass such values as arguments. A step
whose key differs is traced anew (the last, shorter batch of an epoch is one more graph, noted at INFO level by
the ``pplgen.traced`` logger), up to :data:`MAX_GRAPHS`. A key's first step runs eagerly (a new site set is
checked there, and helpers sized by the program are built), its second is traced: the trace is a step, the eager
one, and its results are the step's. A step that cannot be traced runs eagerly, with one
:class:`TraceFallbackWarning` naming why, and the RNG and every tensor it reads as they were before the
attempt, so nothing of the attempt remains:

* a value read from a tensor into Python (``.item()``, ``if tensor:``, ``int(tensor)``), where the program's or
  the engine's control flow depends on data (the first such read is named by file and line);
* an engine whose forward trains a helper with its own optimizer (avb's and gan's discriminators), whose step
  counts are read in Python, for the same reason;
* a collective inside the forward (nvil's running moments in a multi-process run): the gradients are summed
  over the processes outside the graph, so other engines trace there;
* an operation whose output shape depends on the data (``x[x > 0]``, ``torch.nonzero``), which the compiler
  does not take;
* another operation the tracer or the compiler does not take.
"""

import logging
import traceback
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

import pyro
import torch
import torch.utils._pytree as pytree
from pyro.poutine.runtime import _PYRO_STACK
from torch.fx.experimental.proxy_tensor import make_fx

from pplgen.engine import Loss

_log = logging.getLogger(__name__)

#: At most this many graphs per step object (argument shapes, autocast settings); further keys run eagerly.
MAX_GRAPHS = 8

_TORCH = str(Path(torch.__file__).resolve().parent)
_LIBRARIES = (_TORCH, str(Path(pyro.__file__).resolve().parent), str(Path(__file__).resolve()))


class TraceFallbackWarning(UserWarning):
    """A step that ``compile="trace"`` runs eagerly, and why."""


def inductor(graph: torch.fx.GraphModule, example_inputs: list) -> Callable:
    """TorchInductor on the traced graph, with PyTorch's own random operations kept, so draws equal the eager ones.

    The graph goes to the compiler directly (``torch._inductor.compile``, its entry for graphs captured without
    TorchDynamo), not through ``torch.compile``: the key of :class:`TracedGradients` already says when a graph
    holds, so Dynamo's guards would check it a second time on every replay (0.27 ms of a 6 ms step,
    ``benchmarks/replay_floor.py``). The compiled code asserts its inputs' sizes and strides.
    """
    return torch._inductor.compile(graph, example_inputs, options={"fallback_random": True})


class TracedGradients:
    """The surrogate, the metrics and the gradients of one step, replayed from a traced graph.

    :param forward: ``forward(*args, **kwargs) -> Loss``, the engine's forward on the pair.
    :param name: the engine's name, for the notes.
    :param compiler: ``compiler(graph, example_inputs)`` turns a traced ``torch.fx.GraphModule`` into the callable
        replayed (default :func:`inductor`); it is called at the graph's first replay, with that replay's inputs.
    """

    def __init__(self, forward: Callable, name: str, compiler: Callable = inductor):
        self.forward = forward
        self.name = name
        self.compiler = compiler
        self.graphs = {}
        self.seen = set()
        self.replayed = set()
        self.refused = {}

    def __call__(self, params: Sequence[torch.Tensor], state: Sequence[torch.Tensor], args, kwargs):
        """``(Loss, gradients)`` of one step, the gradients in the order of ``params`` (None where the surrogate
        does not reach one); None when this step must run eagerly (a note says why, once per key)."""
        leaves, spec = pytree.tree_flatten((args, kwargs))
        tensors = [leaf for leaf in leaves if isinstance(leaf, torch.Tensor)]
        key = _key(spec, leaves, params, state)
        if key in self.graphs:
            return self._replay(key, state, tensors)
        if key in self.refused:
            return None
        if key not in self.seen:
            self.seen.add(key)  # its first step runs eagerly: checks of a new site set, helpers built lazily
            return None
        if len(self.graphs) >= MAX_GRAPHS:
            return self._refuse(key, f"it has traced {MAX_GRAPHS} graphs already (argument shapes or settings)")
        return self._trace(key, spec, leaves, params, state, tensors)

    def _trace(self, key, spec, leaves, params, state, tensors):
        """Record the step as a graph of flat inputs (the state, then the arguments' tensors) and flat outputs (the
        surrogate, the metrics, the gradients); the recording run is this step's eager run."""
        recorded = {}

        def step(*inputs):
            supplied = iter(inputs[len(state) :])
            values = [next(supplied) if isinstance(leaf, torch.Tensor) else leaf for leaf in leaves]
            args, kwargs = pytree.tree_unflatten(values, spec)
            loss = self.forward(*args, **kwargs)
            grads = torch.autograd.grad(loss.surrogate, params, allow_unused=True)
            recorded["metrics"] = list(loss.metrics)
            recorded["outputs"] = [loss.surrogate.detach(), *(m.detach() for m in loss.metrics.values()), *grads]
            return recorded["outputs"]

        before = _snapshot(state)
        try:
            with torch.enable_grad():
                graph = make_fx(step)(*state, *tensors)
        except Exception as error:  # any failure to trace means: run this step eagerly
            _restore(state, before)
            return self._refuse(key, _reason(error))
        collective = next((n.target for n in graph.graph.nodes if _is_collective(n)), None)
        if collective is not None:
            self._refuse(key, f"its forward sums statistics over the processes ({collective}), which a replay cannot")
        else:
            self.graphs[key] = _Graph(graph, recorded["metrics"])
            shapes = ", ".join(str(tuple(t.shape)) for t in tensors)
            _log.info(
                "compile='trace': %s traced graph %d, for arguments of shapes %s", self.name, len(self.graphs), shapes
            )
        return _unflattened(recorded["outputs"], recorded["metrics"])

    def _replay(self, key, state, tensors):
        """Run the graph; its first run compiles it, and a graph the compiler does not take leaves the step (and
        the key's later steps) to eager."""
        if key in self.replayed:
            return self._run(key, state, tensors)
        before = _snapshot(state)
        try:
            graph = self.graphs[key]
            example_inputs = [*(t.detach() for t in state), *tensors]
            self.graphs[key] = graph._replace(run=self.compiler(graph.run, example_inputs))
            result = self._run(key, state, tensors)
        except Exception as error:  # a graph the compiler does not take runs eagerly
            _restore(state, before)
            del self.graphs[key]
            return self._refuse(key, _compile_failure(error))
        self.replayed.add(key)
        return result

    def _run(self, key, state, tensors):
        graph = self.graphs[key]
        with torch.no_grad():
            return _unflattened(graph.run(*state, *tensors), graph.metrics)

    def _refuse(self, key, reason):
        self.refused[key] = reason
        warnings.warn(f"compile='trace': {self.name}'s step runs eagerly: {reason}", TraceFallbackWarning, stacklevel=4)
        return None


class _Graph(NamedTuple):
    """A traced step: ``run(*state, *argument_tensors) -> [surrogate, *metrics, *gradients]`` and the metrics'
    names."""

    run: Callable
    metrics: list[str]


def _unflattened(outputs, metrics):
    """``(Loss, gradients)`` from a graph's flat outputs."""
    count = len(metrics)
    return Loss(outputs[0], dict(zip(metrics, outputs[1 : 1 + count]))), list(outputs[1 + count :])


def _key(spec, leaves, params, state):
    """What a graph holds for: the arguments' structure, the tensors' metadata, the other values, the tensors it
    reads and the autocast setting."""
    described = tuple(
        (leaf.shape, leaf.stride(), leaf.dtype, leaf.device, leaf.requires_grad)
        if isinstance(leaf, torch.Tensor)
        else _hashable(leaf)
        for leaf in leaves
    )
    autocast = tuple(
        (device, torch.is_autocast_enabled(device), torch.get_autocast_dtype(device)) for device in ("cpu", "cuda")
    )
    handlers = tuple(_handler_key(handler) for handler in _PYRO_STACK)  # e.g. a poutine.scale(...) around the step
    return spec, described, tuple(map(id, params)), tuple(map(id, state)), autocast, handlers


def _is_collective(node):
    return node.op == "call_function" and getattr(node.target, "namespace", "") in ("c10d", "_c10d_functional")


def _handler_key(handler):
    """A Pyro handler by its type and settings: one built anew each step with the same settings (pplgen's own
    shard scale in a multi-process run, a ``poutine.scale`` of a fixed factor) replays the same graph."""
    return type(handler), tuple((name, _hashable(value)) for name, value in sorted(vars(handler).items()))


def _hashable(value):
    if isinstance(value, (set, frozenset)):
        return frozenset(map(_hashable, value))
    if isinstance(value, (list, tuple)):
        return tuple(map(_hashable, value))
    try:
        hash(value)
    except TypeError:
        return ("object", id(value))
    return value


def _snapshot(state):
    """The RNG states and the values of the tensors a step may change in place."""
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    with torch.no_grad():
        return torch.random.get_rng_state(), cuda, [t.detach().clone() for t in state]


def _restore(state, snapshot):
    cpu, cuda, values = snapshot
    torch.random.set_rng_state(cpu)
    if cuda is not None:
        torch.cuda.set_rng_state_all(cuda)
    with torch.no_grad():
        for tensor, value in zip(state, values):
            tensor.copy_(value)


def _reason(error):
    """One line on why the trace failed, naming the innermost frame of the program's (or else pplgen's or
    Pyro's) code where it did."""
    while error.__cause__ is not None:  # Pyro re-raises a program's error with the trace's shapes
        error = error.__cause__
    frames = [f for f in traceback.extract_tb(error.__traceback__) if not f.filename.startswith(_TORCH)]
    where = next((f for f in reversed(frames) if not f.filename.startswith(_LIBRARIES)), None)
    where = where or (frames[-1] if frames else None)
    at = f" at {where.filename}:{where.lineno} ({where.line})" if where else ""
    if "_local_scalar_dense" in str(error) or "data-dependent" in str(error):
        return f"it reads a tensor's value in Python (data-dependent control flow, .item() or int()){at}"
    return f"it could not be traced ({type(error).__name__}: {_first_line(error)}){at}"


def _compile_failure(error):
    """One line on why the compiler did not take a graph."""
    detail = f"{type(error).__name__}: {_first_line(error)}"
    if type(error).__name__ == "DynamicOutputShapeException":  # the shape of a nonzero() the trace recorded
        return f"an operation's output shape depends on the data (boolean-mask indexing, torch.nonzero; {detail})"
    return f"the compiler failed on its graph ({detail})"


def _first_line(error):
    return str(error).strip().splitlines()[0][:160] if str(error).strip() else ""
