"""The data of :func:`pplgen.fit`: batches in a seeded shuffle, or the programs' arguments passed whole, and
the checks that the model observes them and that they lie in the observing sites' supports.

Each epoch's shuffle comes from a generator seeded with ``(seed, epoch)``, so
every rank draws the same batches and a resumed run draws those the
uninterrupted one would have.
"""

import hashlib
import math

import pyro
import torch
from pyro import poutine
from torch.distributions import constraints
from torch.utils.data import DataLoader, Dataset

from pplgen.checks import distribution_name
from pplgen.particles import is_observation, is_sample_site
from pplgen.probe import dtype_hint


def batches_for(data, batch_size, seed, device):
    """:class:`WholeArguments` for a tuple of the programs' arguments, else :class:`Batches` of ``data``."""
    return WholeArguments(data, device) if isinstance(data, tuple) else Batches(data, batch_size, seed, device)


def data_fingerprint(data):
    """What identifies training data across a resume: rows, shape, dtype and a SHA-256 of the contents of
    each tensor (a ``Dataset``'s or ``DataLoader``'s type and size), as one string per argument."""
    if isinstance(data, tuple):
        return [data_fingerprint(argument) for argument in data]
    if isinstance(data, DataLoader):
        return f"a DataLoader of {len(data.dataset)} rows in {len(data)} batches of {type(data.dataset).__name__}"
    if isinstance(data, Dataset):
        return f"a {type(data).__name__} of {len(data)} rows"
    if not isinstance(data, torch.Tensor):
        return type(data).__name__
    contents = data.detach().cpu().contiguous().reshape(-1)
    digest = hashlib.sha256(contents.view(torch.uint8).numpy()).hexdigest()
    return f"{tuple(data.shape)} {str(data.dtype).removeprefix('torch.')}, sha256 {digest[:16]}"


def rows_in(batch):
    """The batch's rows: the length of its first tensor argument with dims (1 without one)."""
    return next((len(a) for a in batch if isinstance(a, torch.Tensor) and a.dim()), 1)


class WholeArguments:
    """The programs' arguments given as a tuple, passed whole at every step (one step per epoch)."""

    def __init__(self, arguments, device):
        self.arguments = tuple(
            checked_tensor(a, f"data[{i}]").to(device) if isinstance(a, torch.Tensor) else a
            for i, a in enumerate(arguments)
        )

    def __len__(self):
        return 1

    def first(self):
        return self.arguments

    def check_shardable(self, processes):
        if processes > 1:
            raise ValueError(
                f"data given as the programs' arguments (a tuple) is passed whole at every step, so it cannot be "
                f"split over {processes} processes; fit it with devices=1, or pass a tensor of rows to shard."
            )

    def check_against(self, model_trace, first):
        _check_observations(model_trace, first, self.arguments)

    def loader_state(self):
        return None

    def load_loader_state(self, state):
        """Arguments passed whole have no order to restore."""

    def explain_failure(self, model, first):
        _check_data(model, first, self.arguments)

    def epoch(self, epoch, skip):
        if skip == 0:
            yield self.arguments


class Batches:
    """Mini-batches in a shuffle fixed by ``(seed, epoch)``, as argument tuples."""

    def __init__(self, data, batch_size, seed, device):
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        self.batch_size, self.seed, self.device = batch_size, seed, device
        if isinstance(data, torch.Tensor):
            self.tensor = checked_tensor(data, "data").to(device)
            self.source = None
        elif isinstance(data, (Dataset, DataLoader)):
            self.tensor = None
            self.source = data
        else:
            raise TypeError(
                f"data must be a torch.Tensor (N, ...), a torch Dataset or a DataLoader, got {type(data).__name__}; "
                "convert arrays with torch.as_tensor."
            )
        if len(self) == 0:
            raise ValueError("data is empty: it has no batch to train on")
        self._observing = ()  # the sites observing a Dataset's or DataLoader's batches, once the model has run
        self._epoch_start = None  # a DataLoader's random states at the start of the current epoch

    def __len__(self):
        if isinstance(self.source, DataLoader):
            return len(self.source)
        return math.ceil(len(self.source if self.tensor is None else self.tensor) / self.batch_size)

    def first(self):
        return next(iter(self.epoch(0, 0)))

    def check_shardable(self, processes):
        """Every batch has a row for each process, and every rank takes its shard of the same batch."""
        if processes == 1:
            return
        if isinstance(self.source, DataLoader):
            raise ValueError(
                f"a DataLoader cannot be split over {processes} processes: each would draw its own shuffle, so the "
                "ranks' shards would come from different batches. Pass the tensor or the Dataset itself: fit "
                "shuffles it by (seed, epoch) on every rank alike and gives each rank its shard."
            )
        size = len(self.source if self.tensor is None else self.tensor)
        smallest = min(self.batch_size, size % self.batch_size or self.batch_size)
        if smallest < processes:
            raise ValueError(
                f"a batch of {smallest} rows cannot be split over {processes} processes: choose a batch_size of at "
                f"least {processes} whose last batch (the data's size modulo batch_size) also has {processes} rows "
                "or none."
            )

    def check_against(self, model_trace, first):
        """The model observed the data in ``model_trace`` (its run on the ``first`` batch), and every row of
        the data lies in the support of the site observing it: the whole tensor now, a ``Dataset``'s or
        ``DataLoader``'s rows batch by batch as they arrive (:meth:`epoch`)."""
        _check_observations(model_trace, first, self._whole(first))
        if self.source is not None:
            self._observing = _observing_sites(model_trace, first)

    def explain_failure(self, model, first):
        """Raise what is wrong with the data when the pair fails on the ``first`` batch, if anything is."""
        _check_data(model, first, self._whole(first))

    def _whole(self, first):
        return (self.tensor,) + (None,) * (len(first) - 1)

    def epoch(self, epoch, skip):
        if self.source is None:
            yield from self._tensor_epoch(epoch, skip)
            return
        batches = (
            self._loader_epoch(epoch, skip) if isinstance(self.source, DataLoader) else self._dataset_epoch(epoch, skip)
        )
        for index, batch in enumerate(batches, start=skip):
            self._check_batch(batch, epoch, index)
            yield batch

    def _check_batch(self, batch, epoch, index):
        """Every row of a batch from a ``Dataset`` or ``DataLoader`` lies in the support of the site observing
        it, checked before the batch is trained on."""
        for position, site in self._observing:
            try:
                _check_support(site, batch[position])
            except ValueError as error:
                raise ValueError(f"batch {index} of epoch {epoch} (rows counted within the batch): {error}") from None

    def _loader_epoch(self, epoch, skip):
        """The user's ``DataLoader``, its order drawn at the epoch's start; a resumed epoch draws it again from
        the random states its start had (:meth:`loader_state`), so a shuffle resumes exactly."""
        if skip == 0 or self._epoch_start is None:
            self._epoch_start = _random_states(self.source)
            iterator = iter(self.source)
        else:
            now = torch.get_rng_state()
            _set_random_states(self.source, self._epoch_start)
            iterator = iter(self.source)
            for _ in range(skip):
                next(iterator)
            torch.set_rng_state(now)
            skip = 0
        for i, batch in enumerate(iterator):
            if i >= skip:
                yield self._to_device(batch)

    def loader_state(self):
        """What a checkpoint keeps of a user's ``DataLoader``: the random states at the current epoch's start
        and its generators' states now (None for other data)."""
        if not isinstance(self.source, DataLoader):
            return None
        return {"epoch_start": self._epoch_start, "now": _random_states(self.source)["generators"]}

    def load_loader_state(self, state):
        """Restore what :meth:`loader_state` returned."""
        if state is None or not isinstance(self.source, DataLoader):
            return
        self._epoch_start = state["epoch_start"]
        _set_random_states(self.source, {"torch": None, "generators": state["now"]})

    def _tensor_epoch(self, epoch, skip):
        order = self._order(epoch).to(self.device)
        for start in range(skip * self.batch_size, len(order), self.batch_size):
            yield (self.tensor[order[start : start + self.batch_size]],)

    def _dataset_epoch(self, epoch, skip):
        order = self._order(epoch)
        loader = DataLoader(
            self.source,
            batch_size=self.batch_size,
            sampler=order[skip * self.batch_size :].tolist(),
            generator=torch.Generator().manual_seed(self.seed),  # keeps the global RNG untouched
        )
        for batch in loader:
            yield self._to_device(batch)

    def _order(self, epoch):
        size = len(self.tensor if self.tensor is not None else self.source)
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(size, generator=generator)

    def _to_device(self, batch):
        batch = batch if isinstance(batch, (tuple, list)) else (batch,)
        return tuple(b.to(self.device) if isinstance(b, torch.Tensor) else b for b in batch)


def _check_data(model, first, whole):
    """What :func:`_check_observations` finds on a run of the model alone on the ``first`` batch, when the
    pair fails: from the prior and without Pyro's value checks (which stop at the batch's first bad value
    without naming its row), leaving the RNG untouched."""
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices), poutine.block(), torch.no_grad():
        try:  # with Pyro's checks on, a site that opts out of them (validate_args=False) can be told apart
            trace, validated = poutine.trace(model).get_trace(*first), True
        except (ValueError, RuntimeError, TypeError, IndexError, NotImplementedError):
            with pyro.validation_enabled(False):
                try:
                    trace, validated = poutine.trace(model).get_trace(*first), False
                except (ValueError, RuntimeError, TypeError, IndexError, NotImplementedError) as error:
                    raise ValueError(
                        f"the model fails on the first batch of data: {error}{dtype_hint(error, first, {})}"
                    ) from error
    _check_observations(trace, first, whole, honour_opt_outs=validated)


def check_held_out(model, data):
    """The model scores the held-out ``data`` as evaluation will (each batch its single argument), each value
    in the support of its site: checked before the first step, so that no epoch is trained before a failure."""
    try:
        _check_data(model, (data[:2],), (data,))
    except ValueError as error:
        raise ValueError(f"the evaluation data cannot be scored by the model: {error}") from None


def _check_observations(trace, first, whole, honour_opt_outs=True):
    """The model observes the data, and every value of the whole data lies in the support of the site
    observing it (``whole`` holds each argument's full data, or None where only batches are at hand), but at
    sites built with ``validate_args=False`` (known only of a trace run with Pyro's checks on)."""
    observations = [site for site in trace.nodes.values() if is_sample_site(site) and is_observation(site)]
    if not observations:
        raise ValueError(
            "the model observes no site (no obs=), so the data given to fit are never scored and the guide "
            "would only be fitted to the prior; observe the data in the model with pyro.sample(..., obs=...)."
        )
    for site in observations:
        for batch, data in zip(first, whole):
            if data is not None and _holds(batch, site["value"]):
                _check_support(site, data, honour_opt_outs)


def _generators(loader):
    """The generators a ``DataLoader`` draws its order and worker seeds from (its own, its sampler's)."""
    found = [loader.generator, getattr(loader.sampler, "generator", None)]
    batch_sampler = getattr(loader, "batch_sampler", None)
    found.append(getattr(getattr(batch_sampler, "sampler", None), "generator", None))
    unique = []
    for generator in found:
        if generator is not None and all(generator is not g for g in unique):
            unique.append(generator)
    return unique


def _random_states(loader):
    return {"torch": torch.get_rng_state(), "generators": [g.get_state() for g in _generators(loader)]}


def _set_random_states(loader, states):
    if states["torch"] is not None:
        torch.set_rng_state(states["torch"])
    for generator, state in zip(_generators(loader), states["generators"]):
        generator.set_state(state)


def _observing_sites(trace, first):
    """``(argument position, site)`` for each observed site whose value is a whole argument of the batch."""
    return [
        (position, {"name": site["name"], "fn": site["fn"]})
        for site in trace.nodes.values()
        if is_sample_site(site) and is_observation(site)
        for position, argument in enumerate(first)
        if _holds(argument, site["value"])
    ]


def _holds(argument, value):
    if not isinstance(argument, torch.Tensor) or argument.numel() != value.numel():
        return False
    return argument is value or torch.equal(argument.reshape(value.shape), value)


def _check_support(site, data, honour_opt_outs=True):
    if honour_opt_outs and _opted_out_of_validation(site["fn"]):
        return
    support = site["fn"].support
    while isinstance(support, constraints.independent):  # .to_event(...) keeps the elementwise support
        support = support.base_constraint
    if support.event_dim != 0 or support is constraints.real:
        return
    inside = support.check(data).reshape(len(data), -1).all(-1) if data.dim() else support.check(data)
    if inside.all():
        return
    row = (~inside).nonzero().flatten()[0].item()
    hint = (
        "binarize it, e.g. pplgen.data.load(..., binarize='threshold') or 'stochastic'"
        if support is constraints.boolean
        else "transform the data into that support, or observe it with a distribution whose support holds it"
    )
    raise ValueError(
        f"site '{site['name']}' observes the data with a {distribution_name(site['fn'])}, whose support is "
        f"{support}, but {int((~inside).sum())} rows of the data lie outside it, first at row {row}: {hint}."
    )


def _opted_out_of_validation(fn):
    """Whether the program built the site's distribution (or the one it wraps) with ``validate_args=False``,
    as Pyro's VAE examples do to score grey digits with a Bernoulli: its data are then not checked either."""
    while fn is not None:
        if fn.__dict__.get("_validate_args") is False:
            return True
        fn = getattr(fn, "base_dist", None)
    return False


def checked_tensor(data, name, processes=1):
    if not isinstance(data, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(data).__name__}; convert with torch.as_tensor")
    if data.dim() and len(data) == 0:
        raise ValueError(f"{name} is empty: it has no rows to train on")
    if processes > 1 and (not data.dim() or len(data) < processes):
        raise ValueError(f"{name} has fewer rows than the {processes} processes that share it")
    if data.is_floating_point():
        finite = torch.isfinite(data.reshape(len(data), -1)).all(-1) if data.dim() else torch.isfinite(data)
        if not finite.all():
            rows = (~finite).nonzero().flatten()
            raise ValueError(
                f"{name} has non-finite values (NaN or inf) in {len(rows)} rows, first at row {rows[0].item()}; "
                "remove or impute them before fitting."
            )
    return data
