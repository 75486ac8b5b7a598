"""Model sites summed out inside every particle (:mod:`pplgen.enumeration`): a Gaussian mixture whose
assignment the model enumerates, held to Pyro's ``TraceEnum_ELBO`` and to bounds computed by hand."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import TraceEnum_ELBO

import pplgen
from pplgen.inference import get
from pplgen.particles import log_weights

WEIGHTS = torch.tensor([0.3, 0.7])
x = torch.tensor([0.1, -1.3, 2.2, 1.0, 0.4])


def mixture(x):
    """A shared shift of two components, each datum's component enumerated."""
    shift = pyro.sample("shift", dist.Normal(0.0, 1.0))
    locs = pyro.param("locs", torch.tensor([-1.0, 1.5]))
    with pyro.plate("data", len(x)):
        c = pyro.sample("c", dist.Categorical(WEIGHTS), infer={"enumerate": "parallel"})
        pyro.sample("x", dist.Normal(locs[c] + shift, 1.0), obs=x)


def shift_guide(x):
    pyro.sample("shift", dist.Normal(pyro.param("q", torch.tensor(0.2)), 0.5))


def marginal_log_joint(shift, locs=None):
    """log p(x, shift) with every assignment summed out, by hand, for each shift (at the fitted locations,
    held fixed, unless ``locs`` are given)."""
    locs = pyro.param("locs").detach() if locs is None else locs
    components = torch.log(WEIGHTS) + dist.Normal(locs + shift[:, None, None], 1.0).log_prob(x[:, None])
    return dist.Normal(0.0, 1.0).log_prob(shift) + torch.logsumexp(components, -1).sum(-1)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_svi_gives_trace_enum_elbos_loss_and_gradients(seed):
    """The same seed, the same draw of the shift: the loss and every gradient equal TraceEnum_ELBO's."""
    results = []
    for loss_of in (
        lambda: get("svi")(mixture, shift_guide, x).surrogate,
        lambda: TraceEnum_ELBO(max_plate_nesting=1).differentiable_loss(mixture, shift_guide, x),
    ):
        pyro.clear_param_store()
        pyro.set_rng_seed(seed)
        loss = loss_of()
        loss.backward()
        results.append((loss.detach(), pyro.param("q").grad.clone(), pyro.param("locs").grad.clone()))
    for ours, theirs in zip(*results):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["iwae", "rws", "vimco"])
def test_multi_sample_engines_weight_each_particle_by_the_marginal(name):
    """Five particles of the shift: the model's log-weight of each is log p(x, shift_k) summed over every
    assignment (by hand), and the K-sample bound is the log-mean-exp of the weights."""
    pyro.clear_param_store()
    engine = get(name, num_particles=5)
    engine.prepare(mixture, shift_guide, x)
    pyro.set_rng_seed(0)
    particles = engine.particles(mixture, shift_guide, (x,), {})
    shift = particles.guide_trace.nodes["shift"]["value"].reshape(-1)
    weights = log_weights(particles)
    torch.testing.assert_close(weights.model.reshape(-1), marginal_log_joint(shift), rtol=1e-5, atol=1e-5)
    pyro.set_rng_seed(0)
    bound = engine(mixture, shift_guide, x).metrics["bound"]
    expected = torch.logsumexp(marginal_log_joint(shift) - dist.Normal(0.2, 0.5).log_prob(shift), 0) - math.log(5)
    torch.testing.assert_close(bound, expected, rtol=1e-5, atol=1e-5)


def no_latent_guide(x):
    pass


def fixed_mixture(x):
    locs = pyro.param("locs", torch.tensor([-1.0, 1.5]))
    with pyro.plate("data", len(x)):
        c = pyro.sample("c", dist.Categorical(WEIGHTS), infer={"enumerate": "parallel"})
        pyro.sample("x", dist.Normal(locs[c], 1.0), obs=x)


def exact_log_likelihood():
    locs = pyro.param("locs").detach()
    return torch.logsumexp(torch.log(WEIGHTS) + dist.Normal(locs, 1.0).log_prob(x[:, None]), -1)


def test_with_nothing_left_to_draw_the_elbo_and_the_held_out_score_are_log_p_x():
    pyro.clear_param_store()
    loss = get("svi")(fixed_mixture, no_latent_guide, x).metrics["loss"]
    torch.testing.assert_close(-loss, exact_log_likelihood().sum())
    scores = pplgen.evaluate.log_likelihood(fixed_mixture, x, guide=no_latent_guide, num_samples=4)
    torch.testing.assert_close(scores, exact_log_likelihood())


def test_fit_trains_the_mixture_with_every_engine_that_sums_it_out():
    """50 steps each (seed 0): the loss falls, and the locations move (engines for binary guides aside: the
    guide draws a Gaussian shift)."""
    for name in pplgen.inference.enumerating_engines():
        if pplgen.inference.ENGINES[name].binary_latents_only or pplgen.inference.ENGINES[name].discrete_latents_only:
            continue
        pyro.clear_param_store()
        result = pplgen.fit(mixture, name, x, guide=shift_guide, steps=50, optimization={"lr": 0.05})
        assert sum(result.metric("loss")[-10:]) < sum(result.metric("loss")[:10]), name
        assert not torch.equal(pyro.param("locs").detach(), torch.tensor([-1.0, 1.5])), name


def hmm(x):
    """Independent sequences (rows) of a two-state hidden Markov chain, the states enumerated along
    ``pyro.markov``."""
    transition = pyro.param("transition", torch.tensor([[0.8, 0.2], [0.3, 0.7]]), constraint=dist.constraints.simplex)
    locs = pyro.param("hmm_locs", torch.tensor([-1.0, 1.0]))
    with pyro.plate("sequences", x.shape[0], dim=-1):
        state = torch.tensor(0)
        for t in pyro.markov(range(x.shape[1])):
            state = pyro.sample(f"s_{t}", dist.Categorical(transition[state]), infer={"enumerate": "parallel"})
            pyro.sample(f"x_{t}", dist.Normal(locs[state], 1.0), obs=x[:, t])


def forward_algorithm(sequences):
    """log p(x) of each sequence by the forward recursion, written out."""
    transition, locs = pyro.param("transition").detach(), pyro.param("hmm_locs").detach()
    alpha = torch.log(transition[0]) + dist.Normal(locs, 1.0).log_prob(sequences[:, :1])
    for t in range(1, sequences.shape[1]):
        emission = dist.Normal(locs, 1.0).log_prob(sequences[:, t : t + 1])
        alpha = torch.logsumexp(alpha[:, :, None] + torch.log(transition), 1) + emission
    return torch.logsumexp(alpha, -1)


SEQUENCES = torch.linspace(-2.0, 2.0, 18).reshape(3, 6).sin()


@pytest.mark.parametrize("name", ["svi", "iwae", "rws", "vimco"])
def test_a_markov_chain_is_summed_out_exactly_as_the_forward_algorithm_does(name):
    """A hidden Markov model with nothing left to draw: every engine's loss is −log p(x), computed by hand with
    the forward recursion, as TraceEnum_ELBO's is; held-out evaluation scores each sequence alike."""
    pyro.clear_param_store()
    loss = get(name)(hmm, no_latent_guide, SEQUENCES).metrics["loss"]
    exact = forward_algorithm(SEQUENCES)
    torch.testing.assert_close(-loss, exact.sum(), rtol=1e-5, atol=1e-4)
    theirs = TraceEnum_ELBO(max_plate_nesting=1).differentiable_loss(hmm, no_latent_guide, SEQUENCES)
    torch.testing.assert_close(loss, theirs.detach(), rtol=1e-5, atol=1e-4)
    scores = pplgen.evaluate.log_likelihood(hmm, SEQUENCES, guide=no_latent_guide, num_samples=2)
    torch.testing.assert_close(scores, exact, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("seed", [0, 1])
def test_an_enumerated_global_read_in_the_data_plate_is_summed_out_over_the_whole_batch(seed):
    """One assignment for all rows, and a drawn shift: the sum over the assignment comes after the product
    over rows, and svi gives TraceEnum_ELBO's loss on the same draw."""
    results = []
    for loss_of in (
        lambda: get("svi")(global_assignment, shift_guide, x).metrics["loss"],
        lambda: TraceEnum_ELBO(max_plate_nesting=1).differentiable_loss(global_assignment, shift_guide, x).detach(),
    ):
        pyro.clear_param_store()
        pyro.set_rng_seed(seed)
        results.append(loss_of())
    torch.testing.assert_close(*results, rtol=1e-5, atol=1e-5)


def global_assignment(x):
    """One assignment for all rows, read inside the data plate, and a shared shift."""
    shift = pyro.sample("shift", dist.Normal(0.0, 1.0))
    c = pyro.sample("c", dist.Categorical(WEIGHTS), infer={"enumerate": "parallel"})
    with pyro.plate("data", len(x)):
        pyro.sample("x", dist.Normal(torch.tensor([-1.0, 1.5])[c] + shift, 1.0), obs=x)


def sequential(x):
    with pyro.plate("data", len(x)):
        c = pyro.sample("c", dist.Categorical(WEIGHTS), infer={"enumerate": "sequential"})
        pyro.sample("x", dist.Normal(torch.tensor([-1.0, 1.5])[c], 1.0), obs=x)


@pytest.mark.parametrize(
    "engine, model, guide, message",
    [
        (get("avb"), mixture, shift_guide, "model site 'c' asks to be enumerated .* avb cannot sum it out"),
        (get("iwae"), sequential, no_latent_guide, "model site 'c' asks for sequential enumeration"),
    ],
    ids=["avb", "sequential"],
)
def test_what_is_not_summed_out_is_refused_in_check_by_name(engine, model, guide, message):
    pyro.clear_param_store()
    with pytest.raises(pplgen.UnsupportedModelError, match=message):
        engine.check(model, guide, x)


def labelled_model(x, y=None):
    locs = pyro.param("class_locs", torch.tensor([-1.0, 0.5, 2.0]))
    with pyro.plate("data", len(x)):
        label = pyro.sample("y", dist.Categorical(logits=torch.zeros(3)), obs=y)
        pyro.sample("x", dist.Normal(locs[label], 1.0), obs=x)


def labelling_guide(x, y=None):
    """The class drawn from q(y | x) where it is not observed, enumerated as Pyro's M2 example does."""
    logits = pyro.param("guide_logits", torch.zeros(3))
    if y is None:
        with pyro.plate("data", len(x)):
            pyro.sample("y", dist.Categorical(logits=logits + 0.1 * x[:, None]), infer={"enumerate": "parallel"})


def test_svi_sums_an_enumerated_guide_site_as_trace_enum_elbo_does_on_every_batch():
    """An unlabelled batch after a labelled one: the loss and gradients are TraceEnum_ELBO's, exactly (the
    class is summed over, nothing is drawn)."""
    labels = torch.tensor([0, 1, 2, 0, 1])
    pyro.clear_param_store()
    engine = get("svi")
    engine(labelled_model, labelling_guide, x, labels)
    ours = engine(labelled_model, labelling_guide, x).surrogate
    ours.backward()
    ours_grad = pyro.param("guide_logits").grad.clone()
    pyro.param("guide_logits").grad = None
    theirs = TraceEnum_ELBO(max_plate_nesting=1).differentiable_loss(labelled_model, labelling_guide, x)
    theirs.backward()
    torch.testing.assert_close(ours.detach(), theirs.detach())
    torch.testing.assert_close(ours_grad, pyro.param("guide_logits").grad)


@pytest.mark.parametrize("name", [n for n in pplgen.inference.guided_engines() if n != "svi"])
def test_every_other_engine_refuses_an_enumerated_guide_site_naming_svi(name):
    pyro.clear_param_store()
    with pytest.raises(pplgen.UnsupportedModelError, match="guide site 'y' asks to be enumerated.*use svi"):
        get(name).check(labelled_model, labelling_guide, x)


def sharp_shift_guide(x):
    pyro.sample("shift", dist.Normal(torch.tensor(0.2), 1e-4))


def test_posterior_draws_sample_the_enumerated_sites_from_their_posterior():
    """With the shift held at 0.2 by the guide, 4000 draws (seed 0) of each datum's component match
    p(c = 1 | x, shift) = w₁ N(x; μ₁ + 0.2) / Σ_c w_c N(x; μ_c + 0.2) within 4 binomial standard errors, and
    ArviZ's posterior holds them under the data plate's name."""
    from pplgen.diagnostics import to_inference_data
    from pplgen.posterior import posterior_draws

    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    draws = posterior_draws(mixture, sharp_shift_guide, (x,), num_samples=4000)
    assert draws.posterior.dims["c"] == ["data"]
    frequency = draws.posterior.values["c"].float().mean(0)
    locs = pyro.param("locs").detach()
    joint = torch.log(WEIGHTS) + dist.Normal(locs + 0.2, 1.0).log_prob(x[:, None])
    exact = torch.softmax(joint, -1)[:, 1]
    tolerance = 4 * (exact * (1 - exact) / 4000).sqrt() + 1e-3
    assert ((frequency - exact).abs() <= tolerance).all(), (frequency, exact)
    assert "c" in to_inference_data(mixture, (x,), guide=sharp_shift_guide, num_samples=10).posterior


def gradients_and_draws(name, seed, **options):
    """The engine's gradients in ``(q, locs)`` after one step of five particles, and those particles' shifts
    drawn again from the same seed."""
    pyro.clear_param_store()
    engine = get(name, num_particles=5, **options)
    engine.prepare(mixture, shift_guide, x)
    pyro.set_rng_seed(seed)
    engine(mixture, shift_guide, x).surrogate.backward()
    gradients = [pyro.param(n).grad.clone() for n in ("q", "locs")]
    for n in ("q", "locs"):
        pyro.param(n).grad = None
    pyro.set_rng_seed(seed)
    particles = engine.particles(mixture, shift_guide, (x,), {})
    return gradients, particles.guide_trace.nodes["shift"]["value"].reshape(-1)


def assert_gradients(gradients, objective):
    """``gradients`` in ``(q, locs)`` are those of −``objective``."""
    (-objective).backward()
    for got, want in zip(gradients, (pyro.param("q").grad, pyro.param("locs").grad)):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_iwae_gradients_are_those_of_the_hand_written_enumerated_bound():
    """The same five draws of the shift (seed 4): iwae's gradients in the guide's q and the model's locations
    equal autograd of log (1/K) Σ_k p(x, shift_k) / q(shift_k) with every assignment summed out by hand."""
    gradients, shift = gradients_and_draws("iwae", seed=4)
    log_q = dist.Normal(pyro.param("q"), 0.5).log_prob(shift)
    bound = torch.logsumexp(marginal_log_joint(shift, pyro.param("locs")) - log_q, 0) - math.log(5)
    assert_gradients(gradients, bound)


def test_rws_updates_are_the_hand_written_self_normalized_ones_with_the_assignments_summed_out():
    """The same five draws (seed 5): rws's θ update is −Σ_k w̃_k ∇ log p(x, shift_k) and its wake-φ update
    −Σ_k w̃_k ∇ log q(shift_k), with w̃ the normalized marginal weights, every assignment summed out by hand."""
    gradients, shift = gradients_and_draws("rws", seed=5)
    shift = shift.detach()
    log_joint = marginal_log_joint(shift, pyro.param("locs"))
    log_q = dist.Normal(pyro.param("q"), 0.5).log_prob(shift)
    normalized = torch.softmax((log_joint - log_q).detach(), 0)
    assert_gradients(gradients, (normalized * (log_joint + log_q)).sum())


def test_vimco_gradients_are_the_hand_written_leave_one_out_estimator_with_the_assignments_summed_out():
    """The same five draws (seed 6): vimco's gradients are those of L + Σ_k (L − L₋ₖ) log q(shift_k), with the
    draws held fixed, L = log (1/K) Σ_k w_k of the marginal weights (every assignment summed out by hand) and
    L₋ₖ the same bound with w_k replaced by the geometric mean of the other weights."""
    gradients, shift = gradients_and_draws("vimco", seed=6)
    shift = shift.detach()
    log_q = dist.Normal(pyro.param("q"), 0.5).log_prob(shift)
    log_w = marginal_log_joint(shift, pyro.param("locs")) - log_q
    bound = torch.logsumexp(log_w, 0) - math.log(5)
    leave_one_out = []
    for k in range(5):
        others = torch.cat([log_w[:k], log_w[k + 1 :]]).detach()
        replaced = torch.cat([others[:k], others.mean().reshape(1), others[k:]])
        leave_one_out.append(torch.logsumexp(replaced, 0) - math.log(5))
    signals = (bound - torch.stack(leave_one_out)).detach()
    assert_gradients(gradients, bound + (signals * log_q).sum())


def test_nvil_as_reinforce_gives_the_hand_written_score_function_gradients_with_the_assignments_summed_out():
    """The same five draws (seed 7), nvil without baseline, normalization or local signals: its gradients are
    those of (1/K) Σ_k [log p(x, shift_k) + l_k log q(shift_k)], l_k = log p(x, shift_k) − log q(shift_k) held
    fixed, with every assignment summed out by hand."""
    gradients, shift = gradients_and_draws("nvil", seed=7, baseline=None, normalize=False, local_signals=False)
    shift = shift.detach()
    log_joint = marginal_log_joint(shift, pyro.param("locs"))
    log_q = dist.Normal(pyro.param("q"), 0.5).log_prob(shift)
    signals = (log_joint - log_q).detach()
    assert_gradients(gradients, (log_joint + signals * log_q).mean())


def chains_of_a_subsampled_sequential_plate(num_states, sequences):
    """Pyro's ``examples/hmm.py`` ``model_0``: sequences in a subsampled sequential plate, each one's states
    enumerated along ``pyro.markov``, so the sample sites differ from batch to batch; the number of states
    comes first, as a plain int."""
    transition = pyro.param("transition", torch.full((num_states, num_states), 1.0 / num_states))
    for i in pyro.plate("sequences", len(sequences), subsample_size=2):
        state = 0
        for t in pyro.markov(range(sequences.shape[1])):
            state = pyro.sample(f"s_{i}_{t}", dist.Categorical(transition[state]), infer={"enumerate": "parallel"})
            pyro.sample(f"x_{i}_{t}", dist.Normal(state.float(), 1.0), obs=sequences[i, t])


def nothing_drawn(*args):
    pass


def test_sites_that_vary_by_batch_are_summed_out_as_trace_enum_elbo_sums_them():
    """Each step draws other sequences (other site names); one particle needs no second one to try the
    enumeration, and the loss is TraceEnum_ELBO's on the same subsample (seeds 0-2)."""
    arguments = (2, SEQUENCES)
    for seed in range(3):
        losses = []
        for loss_of in (
            lambda: get("svi")(chains_of_a_subsampled_sequential_plate, nothing_drawn, *arguments).metrics["loss"],
            lambda: TraceEnum_ELBO(max_plate_nesting=0).loss(
                chains_of_a_subsampled_sequential_plate, nothing_drawn, *arguments
            ),
        ):
            pyro.clear_param_store()
            pyro.set_rng_seed(seed)
            losses.append(float(loss_of()))
        assert losses[0] == pytest.approx(losses[1], rel=1e-5), seed
    pyro.clear_param_store()
    result = pplgen.fit(chains_of_a_subsampled_sequential_plate, "svi", arguments, guide=nothing_drawn, steps=4)
    assert len(result.history) == 4 and all(math.isfinite(loss) for loss in result.metric("loss"))
