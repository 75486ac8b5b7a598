"""The model families, engine options and defaults of ``pplgen fit``."""

from collections.abc import Callable
from dataclasses import dataclass

from pplgen import data, models

#: Epochs trained when neither ``--epochs`` nor ``--steps`` is given.
DEFAULT_EPOCHS = 10
#: Learning rate of the image families when ``--lr`` is not given.
DEFAULT_LR = 1e-3
#: The generator's optimizer when the engine is gan: Adam at 2e-4 with β = (0.5, 0.999) (Radford et al. 2016).
GAN_LR, GAN_BETAS = 2e-4, (0.5, 0.999)
#: The initial noise scale σ of the gan family's decoder: dreams start near G(z), not drowned in unit noise.
GAN_INITIAL_SCALE = 0.05
#: Importance samples of the evaluations made during training (the final one uses ``--eval-samples``).
PERIODIC_EVAL_SAMPLES = 100
#: AIS steps of the evaluations of implicit guides during training (the final one uses ``--ais-steps``).
PERIODIC_AIS_STEPS = 100
#: The values of ``--binarize`` and what :func:`pplgen.data.load` receives for each.
BINARIZE = {"threshold": "threshold", "stochastic": "stochastic", "none": None}
#: Options of the image families that the Bayesian models, which read their own data on the CPU, refuse.
IMAGE_ONLY_OPTIONS = (
    "--data",
    "--root",
    "--download",
    "--binarize",
    "--split-train",
    "--split-test",
    "--accelerator",
    "--devices",
    "--num-nodes",
    "--strategy",
    "--precision",
    "--compile",
    "--resume",
    "--eval-every",
    "--eval-limit",
)
#: Command-line option -> engine constructor argument (also its argparse ``dest``).
ENGINE_OPTIONS = {
    "--particles": "num_particles",
    "--estimator": "estimator",
    "--stl": "stl",
    "--analytic-kl": "analytic_kl",
    "--phi": "phi",
    "--baseline": "baseline",
    "--no-normalize": "normalize",
    "--no-local-signals": "local_signals",
    "--discriminator": "discriminator",
    "--discriminator-steps": "discriminator_steps",
    "--discriminator-lr": "discriminator_lr",
    "--gradient-penalty": "gradient_penalty",
    "--adaptive-contrast": "adaptive_contrast",
}
#: Command-line option -> model constructor argument (also its argparse ``dest``).
MODEL_OPTIONS = {
    "--latent": "latent_dim",
    "--hidden": "hidden",
    "--guide": "guide",
    "--parameterization": "parameterization",
    "--topics": "num_topics",
    "--layers": "layers",
    "--nonlinear": "nonlinear",
}


@dataclass(frozen=True)
class ModelFamily:
    """How ``pplgen fit`` builds one model family.

    ``build(data_dim, **options)`` returns a module with ``.model``,
    ``.guide``, ``.sample(n)`` and ``.reconstruct(x)``; ``options`` are the
    constructor arguments of :data:`MODEL_OPTIONS` the family takes, with
    their defaults (any other model option is refused). ``binary`` says its
    likelihood needs binary data, so grey levels are binarized unless told
    otherwise; ``engine`` is the engine used when ``--engine`` is not given.
    """

    build: Callable
    binary: bool
    description: str
    engine: str
    options: dict


def _vae(data_dim, **options):
    return models.VAE(data_dim=data_dim, **options)


def _decoder(data_dim, **options):
    return models.VAE(data_dim=data_dim, likelihood="gaussian", scale=GAN_INITIAL_SCALE, **options)


def _sbn(data_dim, **options):
    return models.SigmoidBeliefNet(observed=data_dim, **options)


def _helmholtz(data_dim, **options):
    return models.HelmholtzMachine(observed=data_dim, **options)


MODELS = {
    "vae": ModelFamily(
        _vae,
        binary=True,
        description="variational autoencoder, Gaussian z, Bernoulli pixels",
        engine="svi",
        options={"latent_dim": 20, "hidden": (400,), "guide": "gaussian"},
    ),
    "gan": ModelFamily(
        _decoder,
        binary=False,
        description="decoder x ~ N(G(z), σ²) on grey levels, trained adversarially (a VAE with --engine svi)",
        engine="gan",
        options={"latent_dim": 20, "hidden": (400,)},
    ),
    "sbn": ModelFamily(
        _sbn,
        binary=True,
        description="sigmoid belief net, layers of binary units",
        engine="vimco",
        options={"layers": (200, 200), "nonlinear": False},
    ),
    "helmholtz": ModelFamily(
        _helmholtz,
        binary=True,
        description="Helmholtz machine, a logistic-linear sbn",
        engine="wake_sleep",
        options={"layers": (200, 200)},
    ),
}


@dataclass(frozen=True)
class BayesianFamily:
    """How ``pplgen fit`` builds a Bayesian model with its own data, fitted and then diagnosed.

    ``build(**options)`` returns a module with ``.model`` and ``.guide``;
    ``arguments()`` returns the programs' arguments and the coordinates of
    their named dims; ``steps`` and ``lr`` are the defaults of ``--steps`` and ``--lr``.
    """

    build: Callable
    arguments: Callable
    description: str
    options: dict
    steps: int
    lr: float


def _eight_schools_arguments():
    schools = data.eight_schools()
    return (schools.sigma, schools.y), {"school": list(schools.schools)}


def _sleepstudy_arguments():
    study = data.sleepstudy()
    return (study.days, study.subject, study.num_subjects, study.reaction), {"subject": list(study.subjects)}


BAYESIAN_MODELS = {
    "eight-schools": BayesianFamily(
        models.EightSchools,
        _eight_schools_arguments,
        description="eight schools (Rubin 1981), hierarchical normal model",
        options={"parameterization": "non_centered", "guide": "full_rank"},
        steps=3000,
        lr=0.02,
    ),
    "multilevel": BayesianFamily(
        models.MultilevelRegression,
        _sleepstudy_arguments,
        description="varying intercepts and slopes on lme4's sleepstudy",
        options={"guide": "full_rank"},
        steps=3000,
        lr=0.02,
    ),
}


#: ``pplgen fit lda``: the engines of each route (the engine picks the model).
TOPIC_ROUTES = {"svi": "ProdLDA", "iwae": "ProdLDA", "rws": "LDA", "vimco": "LDA", "nvil": "LDA"}
