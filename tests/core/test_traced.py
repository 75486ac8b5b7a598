"""``compile="trace"``: one graph per step shape, replayed compiled, with the eager step's numbers (``pplgen.traced``)."""

import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.nn import PyroModule
from torch import nn

import pplgen
from pplgen.inference import ENGINES, get
from pplgen.step import TrainingStep
from pplgen.traced import TraceFallbackWarning
from tests.support.cases import small_case
from tests.support.outcomes import ENGINES as ROWS
from tests.support.outcomes import expected
from tests.support.programs import PROGRAMS

STEPS = 20


def train(model, guide, engine, batches, compile, **options):
    """The losses and the final trained parameters of one step per batch, seeded alike; the fallback notes."""
    pyro.clear_param_store()
    step = TrainingStep(model, guide, engine, lr=1e-2, compile=compile, **options)
    torch.manual_seed(1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", TraceFallbackWarning)
        losses = torch.tensor([step.step(*batch)["loss"] for batch in batches])
    params = torch.cat([p.detach().flatten() for group in step.optimizer.param_groups for p in group["params"]])
    notes = [str(w.message) for w in caught if issubclass(w.category, TraceFallbackWarning)]
    return losses, params, notes, step


def eager_and_traced(make, batches, **options):
    """``make()`` gives ``(model, guide, engine)`` afresh (same initial weights); both runs of them."""
    return [train(*make(), batches, compile, **options) for compile in (False, "trace")]


def case(name):
    family, engine, x = small_case(name)
    return family.model, family.guide if engine.needs_guide else None, engine, x


@pytest.mark.parametrize("name", sorted(ENGINES))
def test_the_traced_step_gives_the_eager_losses_and_parameters(name):
    """20 steps of every engine with the same seed, eager and traced (inductor, PyTorch's random operations
    kept): losses and parameters agree to float tolerance (fusion reorders float sums). An engine that fits a
    helper with its own optimizer inside forward says why it runs eagerly, by name, and gives the eager
    numbers exactly."""
    x = case(name)[3]
    (eager, eager_params, _, _), (traced, traced_params, notes, step) = eager_and_traced(
        lambda: case(name)[:3], [(x,)] * STEPS
    )
    torch.testing.assert_close(traced, eager, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(traced_params, eager_params, rtol=1e-4, atol=1e-5)
    if step.traced.graphs:
        assert not notes
    else:
        assert len(notes) == 1 and f"{name}'s step runs eagerly" in notes[0], notes
        assert "reads a tensor's value in Python" in notes[0] and "optimizer.step()" in notes[0]
        torch.testing.assert_close(traced, eager, rtol=0, atol=0)


def test_the_graphs_replay_and_do_not_rerun_the_program():
    """After the first two steps of a shape, the model's Python does not run: the step is the graph."""
    model, guide, engine, x = case("svi")
    calls = []

    def counted_model(x):
        calls.append(1)
        return model(x)

    train(counted_model, guide, engine, [(x,)] * 6, "trace")
    first_two = len(calls)
    assert first_two > 0
    train(counted_model, guide, case("svi")[2], [(x,)] * 12, "trace")
    assert len(calls) - first_two == first_two


def test_a_short_last_batch_gets_its_own_graph(caplog):
    """Batches of 6 and a last one of 4, twice over: two graphs, each noted once, the eager numbers."""
    model, guide, engine, x = case("rws")
    batches = [(x,), (x,), (x[:4],), (x,), (x[:4],), (x[:4],), (x,)]
    with caplog.at_level("INFO", logger="pplgen.traced"):
        runs = eager_and_traced(lambda: case("rws")[:3], batches)
    (eager, eager_params, *_), (traced, traced_params, notes, step) = runs
    assert len(step.traced.graphs) == 2 and not notes
    assert [r.getMessage() for r in caplog.records] == [
        "compile='trace': rws traced graph 1, for arguments of shapes (6, 12)",
        "compile='trace': rws traced graph 2, for arguments of shapes (4, 12)",
    ]
    torch.testing.assert_close(traced, eager, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(traced_params, eager_params, rtol=1e-4, atol=1e-5)


def test_a_batch_laid_out_otherwise_gets_its_own_graph():
    """The same shape with other strides (a transposed copy, as a column-major loader gives) is another graph:
    compiled code is specialized to its inputs' strides. The eager numbers either way."""
    model, guide, engine, x = case("rws")
    column_major = x.t().contiguous().t()
    assert column_major.shape == x.shape and column_major.stride() != x.stride()
    batches = [(x,), (x,), (column_major,), (x,), (column_major,), (column_major,)]
    (eager, eager_params, *_), (traced, traced_params, notes, step) = eager_and_traced(lambda: case("rws")[:3], batches)
    assert len(step.traced.graphs) == 2 and not notes
    torch.testing.assert_close(traced, eager, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(traced_params, eager_params, rtol=1e-4, atol=1e-5)


def test_an_output_shape_that_depends_on_the_data_runs_eagerly_with_a_note():
    """Boolean-mask indexing (as Pyro's cvae example does): the trace records the mask's count, which the compiler
    refuses, so the step runs eagerly with one note saying why, and the numbers are the eager ones."""

    def model(x):
        loc = pyro.param("loc", torch.zeros(()))
        observed = x[x > -1.0]
        with pyro.plate("data", len(observed)):
            pyro.sample("x", dist.Normal(loc, 1.0), obs=observed)

    def guide(x):
        pass

    x = torch.linspace(-2.0, 2.0, 9)
    (eager, eager_params, *_), (traced, traced_params, notes, step) = eager_and_traced(
        lambda: (model, guide, get("svi")), [(x,)] * 5
    )
    assert not step.traced.graphs and len(notes) == 1, notes
    assert "output shape depends on the data (boolean-mask indexing" in notes[0]
    torch.testing.assert_close(traced, eager, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(traced_params, eager_params, rtol=1e-4, atol=1e-5)


class Branching(PyroModule):
    """A model whose structure depends on the data's values: a second latent only when the batch mean is high."""

    def __init__(self):
        super().__init__()
        self.loc = nn.Parameter(torch.zeros(()))

    def model(self, x):
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(self.loc, 1.0))
            if x.mean() > 0:
                z = z + pyro.sample("w", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    def guide(self, x):
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Normal(self.loc + 0.5 * x, 0.8))
            if x.mean() > 0:
                pyro.sample("w", dist.Normal(0.1 * x, 0.8))


def test_data_dependent_control_flow_runs_eagerly_with_a_note_naming_the_line():
    """The branch on ``x.mean() > 0`` cannot be replayed: the step runs eagerly, one note names the file and
    the line, and the numbers (the RNG and every tensor restored after the attempt) are the eager ones."""
    x = torch.randn(8) + 1.0
    batches = [(x,), (-x,)] * 5

    def make():
        torch.manual_seed(0)
        program = Branching()
        return program.model, program.guide, pplgen.inference.get("svi")

    (eager, eager_params, *_), (traced, traced_params, notes, step) = eager_and_traced(make, batches)
    assert not step.traced.graphs
    assert len(notes) == 1, notes  # both signs share one key, refused once
    assert all("reads a tensor's value in Python" in n and "test_traced.py" in n for n in notes)
    assert "if x.mean() > 0" in notes[0]
    torch.testing.assert_close(traced, eager, rtol=0, atol=0)
    torch.testing.assert_close(traced_params, eager_params, rtol=0, atol=0)


class Labelled(PyroModule):
    """A label observed when given and drawn when not: the site set varies with the arguments."""

    def __init__(self):
        super().__init__()
        self.net = nn.Linear(3, 3)

    def model(self, x, y=None):
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            y = pyro.sample("y", dist.Bernoulli(torch.sigmoid(self.net(x)[:, 0])), obs=y)
            loc = (y + z).unsqueeze(-1) + self.net(x)[:, 1:2]
            pyro.sample("x", dist.Normal(loc, 1.0).to_event(1), obs=x[:, :1])

    def guide(self, x, y=None):
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Normal(self.net(x)[:, 2], 1.0))
            if y is None:
                pyro.sample("y", dist.Bernoulli(torch.sigmoid(self.net(x)[:, 1])))


def test_arguments_that_change_the_site_set_get_their_own_graph():
    """nvil on batches with and without labels: a graph for each, checked eagerly first, the eager numbers."""
    generator = torch.Generator().manual_seed(0)
    x, y = torch.randn(8, 3, generator=generator), torch.randint(0, 2, (8,), generator=generator).float()
    batches = [(x,), (x, y)] * 4

    def make():
        torch.manual_seed(0)
        program = Labelled()
        return program.model, program.guide, pplgen.inference.get("nvil")

    (eager, eager_params, *_), (traced, traced_params, notes, step) = eager_and_traced(make, batches)
    assert len(step.traced.graphs) == 2 and not notes
    torch.testing.assert_close(traced, eager, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(traced_params, eager_params, rtol=1e-4, atol=1e-5)


def test_bf16_autocast_composes_with_the_trace():
    """Under bf16 autocast the graph holds the casts: the traced losses equal the eager ones to bf16's
    tolerance (log-densities still sum in float32)."""
    x = case("iwae")[3]
    (eager, *_), (traced, _, notes, step) = eager_and_traced(
        lambda: case("iwae")[:3], [(x,)] * 8, precision="bf16-mixed"
    )
    assert step.traced.graphs and not notes
    torch.testing.assert_close(traced, eager, rtol=2e-2, atol=1e-1)


def test_the_fit_loop_resumes_a_traced_run_exactly(tmp_path):
    """fit(compile="trace"): 3 steps, a checkpoint, a resume to 6 give the history of 6 uninterrupted steps,
    which equals the eager history, to float tolerance: the steps after a resume run eagerly once, traced
    once, then compiled, so one step may be the eager one where the uninterrupted run replayed the graph."""

    def fit(steps, compile, resume=False):
        pyro.clear_param_store()
        family, engine, x = small_case("vimco")
        return pplgen.fit(
            family,
            engine,
            x.repeat(4, 1),
            steps=steps,
            batch_size=6,
            execution=pplgen.Execution(accelerator="cpu", compile=compile),
            checkpoint=pplgen.Checkpointing(tmp_path / f"{compile}.pt", resume=resume),
        )

    eager = [row["loss"] for row in fit(6, False).history]
    straight = [row["loss"] for row in fit(6, "trace").history]
    (tmp_path / "trace.pt").unlink()
    fit(3, "trace")
    resumed = [row["loss"] for row in fit(6, "trace", resume=True).history]
    torch.testing.assert_close(torch.tensor(resumed), torch.tensor(straight), rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(torch.tensor(straight), torch.tensor(eager), rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"compile": "jit"}, "compile must be one of"),
        ({"compile": "trace", "precision": "16-mixed"}, "use precision='bf16-mixed'"),
    ],
)
def test_a_compile_option_it_cannot_apply_is_refused_by_name(options, message):
    model, guide, engine, _ = case("svi")
    with pytest.raises(ValueError, match=message):
        TrainingStep(model, guide, engine, **options)
    with pytest.raises(ValueError, match=message):
        pplgen.Execution(**options)


def test_a_handler_around_the_step_is_part_of_the_key():
    """A ``poutine.scale`` entered around each step: the same factor replays one graph, a new factor gets its own
    (the factor is a constant of the graph), and the numbers are the eager ones."""
    model, guide, engine, x = case("svi")
    factors = [1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 1.0]
    runs = []
    for compile in (False, "trace"):
        pyro.clear_param_store()
        model, guide, engine, x = case("svi")
        step = TrainingStep(model, guide, engine, lr=1e-2, compile=compile)
        torch.manual_seed(1)
        losses = []
        for factor in factors:
            with pyro.poutine.scale(scale=factor):
                losses.append(step.step(x)["loss"])
        runs.append((torch.tensor(losses), step))
    (eager, _), (traced, step) = runs
    assert len(step.traced.graphs) == 2
    torch.testing.assert_close(traced, eager, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("name", ["svi", "rws", "nvil"])
def test_every_catalogue_program_an_engine_trains_replays_its_eager_numbers_or_says_why_not(name):
    """Each program of the conformance catalogue that the engine trains (Pyro's shapes: plates, masks, scales,
    subsampling, enumeration, sequential plates, ...), 5 steps eager and traced, the graph replayed as traced
    (uncompiled; the compiler's part is the per-engine test above): the same losses, or eager steps with one
    note naming why. Most programs trace (at least 30 of the catalogue's)."""
    traced = 0
    for entry in PROGRAMS:
        if expected(entry.name, name) is not None:
            continue
        outcomes = []
        for compile in (False, "trace"):
            pyro.clear_param_store()
            torch.manual_seed(0)
            model, guide, args, kwargs = entry.build()
            step = TrainingStep(model, guide, get(name, **ROWS[name].options), lr=1e-2, compile=compile)
            if compile:
                step.traced.compiler = lambda graph, example_inputs: graph
            torch.manual_seed(1)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", TraceFallbackWarning)
                try:
                    outcome = torch.tensor([step.step(*args, **kwargs)["loss"] for _ in range(5)])
                except ValueError as error:  # a pair with nothing to train: the same refusal either way
                    outcome = str(error)
            notes = [str(w.message) for w in caught if issubclass(w.category, TraceFallbackWarning)]
            outcomes.append((outcome, notes, step))
        (eager, _, _), (replayed, notes, step) = outcomes
        if isinstance(eager, str):
            assert replayed == eager, entry.name
            continue
        torch.testing.assert_close(replayed, eager, rtol=1e-5, atol=1e-4, msg=entry.name)
        if step.traced.graphs:
            traced += 1
            assert not notes, (entry.name, notes)
        else:
            assert len(notes) == 1 and f"{name}'s step runs eagerly: it reads a tensor's value" in notes[0], entry.name
    assert traced >= 30
