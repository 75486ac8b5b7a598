"""Small network builders shared by the model families and the engines."""

import torch
from torch import nn
from torch.nn.modules.lazy import LazyModuleMixin
from torch.nn.parameter import UninitializedBuffer, UninitializedParameter

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


class HelperAdam(LazyModuleMixin, nn.Module):
    """The optimizer of a network an engine fits itself inside its forward (avb's and gan's discriminators).

    Adam (Kingma & Ba 2015) with β = (0.5, 0.999), as GAN discriminators are
    trained (Radford et al. 2016). Its moments are flat buffers sized on the
    first update, so ``state_dict`` and ``.to()`` carry them with the engine,
    and a checkpoint resumes it exactly.
    """

    betas = (0.5, 0.999)
    eps = 1e-8

    def __init__(self, lr):
        super().__init__()
        self.lr = lr
        self.register_buffer("exp_avg", UninitializedBuffer())
        self.register_buffer("exp_avg_sq", UninitializedBuffer())
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))

    def initialize_parameters(self, params, grads=None):
        if not self.has_uninitialized_params():
            return
        size = sum(p.numel() for p in params)
        for buffer in (self.exp_avg, self.exp_avg_sq):
            buffer.materialize((size,), device=params[0].device, dtype=params[0].dtype)
            buffer.zero_()

    @torch.no_grad()
    def forward(self, params, grads):
        """One update of ``params`` along their ``grads``."""
        beta1, beta2 = self.betas
        grad = torch.cat([g.reshape(-1) for g in grads])
        self.updates += 1
        t = self.updates.to(grad.dtype)
        self.exp_avg.lerp_(grad, 1 - beta1)
        self.exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        step = (self.exp_avg / (1 - beta1**t)) / ((self.exp_avg_sq / (1 - beta2**t)).sqrt() + self.eps)
        for p, s in zip(params, step.split([p.numel() for p in params])):
            p.sub_(self.lr * s.view_as(p))
