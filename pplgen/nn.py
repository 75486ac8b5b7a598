"""Small network builders shared by the model families and the engines, and the fitter of engines' helpers."""

import torch
from torch import nn
from torch.nn.modules.lazy import LazyModuleMixin
from torch.nn.parameter import UninitializedBuffer, UninitializedParameter

from pplgen.distributed import all_reduce_sum_

ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU, "softplus": nn.Softplus, "elu": nn.ELU}


def mlp(sizes, activation="tanh", *, final_activation=False):
    """Linear layers of the given sizes with ``activation`` between them."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
    if len(sizes) < 2:
        raise ValueError(f"an MLP needs at least an input and an output size, got {list(sizes)}")
    layers = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2 or final_activation:
            layers.append(ACTIVATIONS[activation]())
    return nn.Sequential(*layers)


class LazyMLP(LazyModuleMixin, nn.Module):
    """An MLP whose input and output sizes are those of the first program it meets.

    Engines own such networks (nvil's baseline, avb's discriminator): their
    sizes depend on the program, so they are built on the first call, or by
    the engine's ``check``, as a lazy module (``state_dict`` loads into a fresh
    one). ``forward(features, out_features)`` maps ``(..., in_features)`` to
    ``(..., out_features)`` and refuses other sizes than those it was built for.

    :param hidden: hidden layer sizes.
    :param owner: how error messages name the network, e.g. ``"nvil's baseline"``.
    """

    def __init__(self, hidden, activation="tanh", *, owner="the network"):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        self.hidden = tuple(hidden)
        self.activation = ACTIVATIONS[activation]()
        self.owner = owner
        for i in range(len(self.hidden) + 1):
            self.register_parameter(f"weight{i}", UninitializedParameter())
            self.register_parameter(f"bias{i}", UninitializedParameter())

    def initialize_parameters(self, features, out_features):
        if not self.has_uninitialized_params():
            return
        sizes = (features.shape[-1], *self.hidden, out_features)
        options = {"device": features.device, "dtype": features.dtype}
        with torch.no_grad():
            for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
                layer = nn.Linear(n_in, n_out, **options)
                for name, initial in ((f"weight{i}", layer.weight), (f"bias{i}", layer.bias)):
                    getattr(self, name).materialize(initial.shape, **options)
                    getattr(self, name).copy_(initial)

    def forward(self, features, out_features):
        built = (self.weight0.shape[1], getattr(self, f"bias{len(self.hidden)}").shape[0])
        if (features.shape[-1], out_features) != built:
            raise ValueError(
                f"{self.owner} was built for {built[0]} inputs and {built[1]} outputs, got "
                f"{features.shape[-1]} and {out_features}; use a fresh engine for a different program."
            )
        h = features
        for i in range(len(self.hidden) + 1):
            h = nn.functional.linear(h, getattr(self, f"weight{i}"), getattr(self, f"bias{i}"))
            if i < len(self.hidden):
                h = self.activation(h)
        return h


class HelperFitter(LazyModuleMixin, nn.Module):
    """Fits a helper network inside an engine's forward (avb's and gan's discriminators), apart from the
    loop's optimizer.

    :meth:`step` takes the gradient of the helper's loss with ``torch.autograd.grad`` (so no ``.grad`` the
    loop's optimizer reads changes), sums it over the ranks (:func:`~pplgen.distributed.all_reduce_sum_`, so
    the helper steps alike on every rank) and steps ``torch.optim.Adam`` with β = (0.5, 0.999), as GAN
    discriminators are trained (Radford et al. 2016). Adam's moments and step counts live in flat buffers of
    this module that the optimizer's state views, so ``state_dict``, ``.to()`` and checkpoints carry them with
    the engine and a resumed run steps exactly as the uninterrupted one. :func:`frozen_copy` gives the
    network's weights as constants for the engine's estimator.
    """

    betas = (0.5, 0.999)

    def __init__(self, lr):
        super().__init__()
        self.lr = lr
        self.optimizer = None
        for name in ("exp_avg", "exp_avg_sq", "steps"):
            self.register_buffer(name, UninitializedBuffer())
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))

    def initialize_parameters(self, params):
        """Sizes the moments for ``params`` (once) and builds the optimizer over them."""
        if self.has_uninitialized_params():
            options = {"device": params[0].device, "dtype": params[0].dtype}
            for buffer in (self.exp_avg, self.exp_avg_sq):
                buffer.materialize((sum(p.numel() for p in params),), **options)
                buffer.zero_()
            self.steps.materialize((len(params),), device=params[0].device, dtype=torch.float32)
            self.steps.zero_()
        if self.optimizer is None:
            self.optimizer = torch.optim.Adam(params, lr=self.lr, betas=self.betas, foreach=False)
            self._link()

    def step(self, loss, params):
        """One update of ``params`` along −∇ ``loss``, summed over the ranks."""
        self.initialize_parameters(params)
        for param, grad in zip(params, torch.autograd.grad(loss, params)):
            param.grad = all_reduce_sum_(grad)
        self.optimizer.step()
        for param in params:
            param.grad = None
        self.updates += 1

    def _link(self):
        """Points the optimizer's state of each parameter at its slice of the buffers."""
        params = self.optimizer.param_groups[0]["params"]
        sizes = [p.numel() for p in params]
        moments = zip(self.exp_avg.split(sizes), self.exp_avg_sq.split(sizes))
        for index, (param, (mean, square)) in enumerate(zip(params, moments)):
            state = {"step": self.steps[index], "exp_avg": mean.view_as(param), "exp_avg_sq": square.view_as(param)}
            self.optimizer.state[param] = state

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        if self.optimizer is not None:
            self._link()
        return self


def frozen_copy(module):
    """The module's weights as constants: copies, since the helper is updated before the caller's backward."""
    return {name: p.detach().clone() for name, p in module.named_parameters()}
