"""The ``pplgen`` command line.

::

    pplgen fit vae --engine svi --data mnist --epochs 20
    pplgen fit vae --engine iwae --particles 5 --estimator dreg --data binarized-mnist --root DATA
    pplgen fit sbn --engine vimco --particles 5 --layers 200,200 --data binarized-mnist --root PATH
    pplgen fit helmholtz --engine wake_sleep
    pplgen fit vae --guide implicit --engine avb --adaptive-contrast --particles 8
    python -m pplgen fit --help

``pplgen fit`` trains one model family with one engine, estimates the
held-out log-likelihood by importance sampling (K = ``--eval-samples``), or by
AIS (``--ais-steps`` × ``--ais-chains``) when the guide is implicit and has no
density to importance-sample, and writes a run folder (default ``runs/<model>-<engine>-<data>``)::

    metrics.json          configuration, per-epoch training loss, evaluations,
                          test log-likelihood and ELBO, training wall time, versions
    loss.png              training loss per datum against the step
    samples.png           mean images of 64 draws from the model
    reconstructions.png   test images (odd rows) above their reconstructions
    checkpoint.pt         the state ``--resume`` continues from

A model family is one entry of :data:`MODELS`, with its own model options
(``--latent``/``--hidden`` for ``vae``, ``--layers`` for ``sbn`` and
``helmholtz``, ``--nonlinear`` for ``sbn``) and the engine it trains with
when ``--engine`` is not given (``svi`` for ``vae``; ``vimco`` for ``sbn`` and
``wake_sleep`` for ``helmholtz``, whose binary latents ``svi`` cannot
differentiate through). An engine option is one entry of
:data:`ENGINE_OPTIONS`, passed only to engines whose constructor takes it; a
model or engine option given to a model or engine that does not take it is
an error that names it.

Mistakes in the input (an unknown option, a missing data file, a model an
engine cannot train, a diverging run) end with one line ``pplgen: error:
...`` on stderr and exit status 2.
"""

import argparse
import inspect
import math
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyro

import pplgen
from pplgen import data, inference, models
from pplgen.checks import UnsupportedModelError
from pplgen.distributed import rank
from pplgen.options import PRECISIONS, Execution, Optimization
from pplgen.reports import image_report, image_summary, posterior_report, topic_report
from pplgen.step import NonFiniteLossError

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
#: Exceptions that report a mistake in the input rather than a bug.
USER_ERRORS = (ValueError, FileNotFoundError, ImportError, UnsupportedModelError, NonFiniteLossError)


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


class _UsageError(Exception):
    """A command line argparse rejected, with the usage of the (sub)command."""

    def __init__(self, message, usage):
        super().__init__(message)
        self.usage = usage


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows an option's default where it has a value to show (not for flags or unset options)."""

    def _get_help_string(self, action):
        if action.default is None or isinstance(action.default, bool) or "default" in action.help:
            return action.help
        return super()._get_help_string(action)


class _Parser(argparse.ArgumentParser):
    """An argument parser that raises on bad input, so :func:`main` returns the status."""

    def error(self, message):
        raise _UsageError(message, self.format_usage())


def main(argv=None):
    """Run the command line ``argv`` (default ``sys.argv[1:]``); return the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:  # --help and --version print, then stop with status 0
        return stop.code
    except _UsageError as error:
        sys.stderr.write(error.usage)
        return _fail(error)
    try:
        return args.run(args)
    except USER_ERRORS as error:
        return _fail(error)


def _run_folder(args, default):
    """The run folder, checked before any work (and created only when the run writes to it): a folder
    that can be written, holding no run unless ``--resume`` continues it or ``--overwrite`` replaces it."""
    out = args.out or default
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a folder; give the folder the run should be written to")
    held = [name for name in ("checkpoint.pt", "metrics.json") if (out / name).exists()]
    if held and not (args.resume or args.overwrite):
        raise ValueError(
            f"the run folder {out} already holds a run ({', '.join(held)}): pass --resume to continue it, "
            "--overwrite to replace it, or another --out"
        )
    existing = next(folder for folder in (out, *out.parents) if folder.exists())
    if not existing.is_dir():
        raise ValueError(f"cannot create the run folder {out}: {existing} is a file; give another --out")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"cannot write the run folder {out}: {existing} is not writable; give another --out")
    return out


def _fail(error):
    """Report a user error on stderr; the exit status of a usage error."""
    print(f"pplgen: error: {error}", file=sys.stderr)
    return 2


def build_parser():
    """The argument parser of ``pplgen`` and its subcommands."""
    parser = _Parser(
        prog="pplgen",
        allow_abbrev=False,
        description="Train deep generative models written as Pyro programs with interchangeable inference engines.",
        epilog="Run 'pplgen COMMAND --help' for the options of a command.",
    )
    parser.add_argument("--version", action="version", version=f"pplgen {pplgen.__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_fit(commands)
    return parser


def _add_fit(commands):
    """The ``fit`` subcommand and its options."""
    families = {**MODELS, **BAYESIAN_MODELS}
    models_help = "; ".join(f"{name}: {family.description}" for name, family in families.items())
    models_help += "; lda: topic model on gensim's Lee corpus, ProdLDA with svi or iwae, LDA with rws, vimco or nvil"
    families = [*families, "lda"]
    fit_parser = commands.add_parser(
        "fit",
        allow_abbrev=False,
        help="train a model with an engine, evaluate it on held-out data and write a run folder",
        description=(
            "Train MODEL with an inference engine, estimate the held-out log-likelihood by importance "
            "sampling and write metrics.json, loss.png, samples.png, reconstructions.png and a checkpoint "
            "to the run folder."
        ),
        formatter_class=_HelpFormatter,
    )
    fit_parser.set_defaults(run=_fit_command)
    fit_parser.add_argument("model", choices=sorted(families), metavar="MODEL", help=f"model family ({models_help})")
    _add_engine_arguments(fit_parser.add_argument_group("engine (each option names the engines that take it)"))
    _add_data_arguments(fit_parser.add_argument_group("data"))
    _add_model_arguments(fit_parser.add_argument_group("model (each option names the models that take it)"))
    _add_training_arguments(fit_parser.add_argument_group("training"))
    _add_output_arguments(fit_parser.add_argument_group("evaluation and output"))


def _add_engine_arguments(group):
    """``--engine`` and the engine options of :data:`ENGINE_OPTIONS`.

    An engine option left out is absent from the parsed arguments
    (``argparse.SUPPRESS``), so the engine's own default applies; that keeps
    ``--baseline none`` (``baseline=None``) apart from no ``--baseline``.
    """
    defaults = ", ".join(f"{family.engine} for {name}" for name, family in MODELS.items())
    group.add_argument(
        "--engine",
        choices=sorted(inference.ENGINES),
        help=f"inference engine (default: {defaults}; svi and iwae cannot train binary latents)",
    )
    option = _options_adder(group, ENGINE_OPTIONS)
    option(
        "--particles",
        type=_positive_int,
        metavar="K",
        help="particles per datum (every engine; default 5 for iwae, rws and vimco, else 1)",
    )
    option("--estimator", metavar="NAME", help="guide gradient estimator, 'standard' or 'dreg' (iwae)")
    option("--stl", action="store_true", help="'sticking the landing' estimator (svi)")
    option("--analytic-kl", action="store_true", help="closed-form KL where known (svi)")
    option("--phi", choices=["wake", "sleep", "both"], help="the guide's update (rws; default wake)")
    option(
        "--baseline",
        type=_baseline,
        metavar="SIZES|none",
        help="hidden layer sizes of the input-dependent baseline C(x), or none (nvil; default 100)",
    )
    option("--no-normalize", action="store_false", help="no running centring and scaling of learning signals (nvil)")
    option("--no-local-signals", action="store_false", help="one global learning signal for every layer (nvil)")
    option(
        "--discriminator",
        type=_layer_sizes,
        metavar="SIZES",
        help="hidden layer sizes of the discriminator, T(x, z) of avb or D(x) of gan (default 256,256)",
    )
    option(
        "--discriminator-steps",
        type=_positive_int,
        metavar="N",
        help="discriminator updates per step (avb: default 3; gan: default 1)",
    )
    option(
        "--discriminator-lr",
        type=_adam_learning_rate,
        metavar="LR",
        help="learning rate of the discriminator's own Adam (avb: default 3e-3; gan: default 2e-4)",
    )
    option(
        "--gradient-penalty",
        type=_non_negative_float,
        metavar="GAMMA",
        help="R1 penalty weight on real data (gan; default 0)",
    )
    option(
        "--adaptive-contrast", action="store_true", help="contrast q with a Gaussian of its own moments (avb; K >= 2)"
    )


def _add_model_arguments(group):
    """The model options of :data:`MODEL_OPTIONS`; left out, the family's default applies."""
    option = _options_adder(group, MODEL_OPTIONS)
    option("--latent", type=_positive_int, metavar="N", help="latent dimension (vae; default 20)")
    option("--hidden", type=_layer_sizes, metavar="SIZES", help="hidden layer sizes, e.g. 200,200 (vae; default 400)")
    option(
        "--guide",
        choices=["gaussian", "implicit", "mean_field", "full_rank"],
        help="vae: gaussian q(z | x) (default) or implicit, a sampler z = g(x, e) trained by avb; "
        "eight-schools, multilevel: mean_field or full_rank (default) autoguide",
    )
    option(
        "--parameterization",
        choices=["centered", "non_centered"],
        help="eight-schools: theta drawn around mu (centered) or as mu + tau * theta_t (non_centered, default)",
    )
    option("--topics", type=_positive_int, metavar="K", help="number of topics (lda; default 20)")
    option(
        "--layers",
        type=_layer_sizes,
        metavar="SIZES",
        help="stochastic layer sizes from the data upwards (sbn, helmholtz; default 200,200)",
    )
    option(
        "--nonlinear",
        action="store_true",
        help="MLP conditionals with two tanh hidden layers of 200 instead of affine ones (sbn)",
    )


def _options_adder(group, table):
    """``add_argument`` for the options of ``table``: ``dest`` is the constructor argument, absent unless given."""

    def add(flag, **kwargs):
        group.add_argument(flag, dest=table[flag], default=argparse.SUPPRESS, **kwargs)

    return add


def _add_data_arguments(group):
    """Which data set, splits and binarization."""
    group.add_argument("--data", default="mnist", choices=list(data.SPLITS), help="data set (see pplgen.data)")
    group.add_argument("--split-train", default="train", metavar="SPLIT", help="split to train on")
    group.add_argument(
        "--split-test", default="test", metavar="SPLIT", help="held-out split ('valid' exists for binarized-mnist)"
    )
    group.add_argument(
        "--root", type=Path, metavar="PATH", help="folder of the data files (binarized-mnist, mnist-idx, fashion-mnist)"
    )
    group.add_argument(
        "--download",
        action="store_true",
        help="fetch the published files (mnist-idx, fashion-mnist, binarized-mnist) into $PPLGEN_DATA or --root, "
        "checked against pinned SHA-256 sums; a mirror is read from $PPLGEN_DATA_MIRROR",
    )
    group.add_argument(
        "--binarize",
        choices=list(BINARIZE),
        help="binarization of grey levels (default: threshold for models with binary likelihoods, else none)",
    )


def _add_training_arguments(group):
    """Training budget, optimizer, seed, devices and precision."""
    budget = group.add_mutually_exclusive_group()
    budget.add_argument(
        "--epochs", type=_positive_int, metavar="N", help=f"passes over the data (default: {DEFAULT_EPOCHS})"
    )
    budget.add_argument("--steps", type=_positive_int, metavar="N", help="optimizer steps (instead of --epochs)")
    group.add_argument("--batch-size", type=_positive_int, default=100, metavar="N", help="data per step")
    group.add_argument(
        "--lr",
        type=_adam_learning_rate,
        help="Adam learning rate (default: 0.001; 2e-4 with betas 0.5, 0.999 for gan; 0.02 for eight-schools, multilevel; 0.01 for lda)",
    )
    group.add_argument("--seed", type=int, default=0, metavar="N", help="seed of weights, shuffles and particles")
    group.add_argument("--accelerator", default="auto", help="cpu, cuda, gpu, mps or auto (a GPU when there is one)")
    group.add_argument(
        "--devices", type=_devices, default=1, metavar="N|I,J", help="how many devices (processes), or which: 0,2"
    )
    group.add_argument(
        "--num-nodes",
        type=_positive_int,
        default=1,
        metavar="N",
        help="machines taking part (start the command on each with torchrun or under SLURM)",
    )
    group.add_argument(
        "--strategy", default="auto", help="Lightning Fabric strategy: auto or ddp (the command runs once per device)"
    )
    group.add_argument("--precision", choices=PRECISIONS, default="32-true", help="float precision (default 32-true)")
    group.add_argument("--compile", action="store_true", help="compile the training step with torch.compile")
    group.add_argument(
        "--no-progress", dest="progress", action="store_false", default=None, help="hide the progress bar"
    )


def _add_output_arguments(group):
    """Held-out evaluation and the run folder."""
    group.add_argument(
        "--eval-samples", type=_positive_int, default=1000, metavar="K", help="importance samples per test image"
    )
    group.add_argument("--eval-limit", type=_positive_int, default=1000, metavar="N", help="test images used")
    group.add_argument(
        "--ais-steps",
        type=_positive_int,
        default=500,
        metavar="T",
        help="annealing steps of the test log-likelihood by AIS, used for implicit guides (no density)",
    )
    group.add_argument("--ais-chains", type=_positive_int, default=8, metavar="C", help="AIS chains per test image")
    group.add_argument(
        "--eval-every",
        type=_positive_int,
        default=1,
        metavar="EPOCHS",
        help=f"evaluate during training every so many epochs (K = min({PERIODIC_EVAL_SAMPLES}, --eval-samples))",
    )
    group.add_argument("--out", type=Path, metavar="PATH", help="run folder (default: runs/MODEL-ENGINE-DATA)")
    group.add_argument("--resume", action="store_true", help="continue from the checkpoint in the run folder, if any")
    group.add_argument("--overwrite", action="store_true", help="replace the run already in the run folder")
    group.add_argument(
        "--compare-nuts",
        action="store_true",
        help="eight-schools, multilevel: also run NUTS on the same program and compare the posteriors",
    )
    group.add_argument(
        "--nuts-warmup", type=_positive_int, default=1000, metavar="N", help="NUTS warm-up steps per chain"
    )
    group.add_argument("--nuts-samples", type=_positive_int, default=1000, metavar="N", help="NUTS draws per chain")
    group.add_argument("--nuts-chains", type=_positive_int, default=4, metavar="N", help="NUTS chains")
    group.add_argument(
        "--posterior-samples", type=_positive_int, default=4000, metavar="N", help="guide draws in posterior.nc"
    )


def _positive_int(text):
    """argparse type: an integer of at least 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _positive_float(text):
    """argparse type: a finite number above 0."""
    return _finite_float(text, lambda value: value > 0, "a finite positive number")


def _non_negative_float(text):
    """argparse type: a finite number of at least 0."""
    return _finite_float(text, lambda value: value >= 0, "a finite number >= 0")


def _finite_float(text, accepts, expected):
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and accepts(value)):
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
    return value


def _adam_learning_rate(text):
    """argparse type: Adam's learning rate, in (0, 1]: its steps are about lr per weight, so a larger rate
    throws the weights around (``--lr 1e6`` trains to a log-likelihood of -2e13 without a NaN to stop at)."""
    value = _positive_float(text)
    if value > 1:
        raise argparse.ArgumentTypeError(
            f"expected a learning rate in (0, 1] (Adam moves each weight by about lr a step), got {text!r}"
        )
    return value


def _devices(text):
    """argparse type: a device count, or device indices separated by commas (a list)."""
    if "," not in text:
        return _positive_int(text)
    try:
        return [int(index) for index in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a device count or indices separated by commas, got {text!r}"
        ) from None


def _layer_sizes(text):
    """argparse type: comma-separated positive layer sizes, as a tuple."""
    try:
        return tuple(_positive_int(size) for size in text.split(","))
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected positive layer sizes separated by commas, got {text!r}") from None


def _baseline(text):
    """argparse type of ``--baseline``: layer sizes, or ``none`` for no baseline (``None``)."""
    if text.lower() == "none":
        return None
    try:
        return _layer_sizes(text)
    except argparse.ArgumentTypeError:
        message = f"expected hidden layer sizes (e.g. 100 or 200,100) or none, got {text!r}"
        raise argparse.ArgumentTypeError(message) from None


# --------------------------------------------------------------------------
# pplgen fit
# --------------------------------------------------------------------------


def _fit_command(args):
    """``pplgen fit``: train, evaluate on held-out data, write the run folder, print a summary."""
    if args.model in BAYESIAN_MODELS:
        return _fit_bayesian(args)
    if args.compare_nuts:
        raise ValueError(f"--compare-nuts applies to {', '.join(BAYESIAN_MODELS)}, not to '{args.model}'")
    if args.model == "lda":
        return _fit_topics(args)
    family = MODELS[args.model]
    engine_name = args.engine or family.engine
    model_options = _model_options(args, family)
    engine = _build_engine(engine_name, _given(args, ENGINE_OPTIONS))
    binarize = _binarize(args, family)
    out = _run_folder(args, Path("runs") / f"{args.model}-{engine_name}-{args.data}")
    where = {"root": args.root, "download": args.download}
    x_train = data.load(args.data, args.split_train, **where, binarize=binarize, seed=args.seed)
    x_test = data.load(args.data, args.split_test, **where, binarize=binarize, seed=args.seed)[: args.eval_limit]
    pyro.clear_param_store()
    pyro.set_rng_seed(args.seed)  # seeds torch, numpy and random before the model's weights are drawn
    model = family.build(x_train.shape[1], **model_options)
    epochs = DEFAULT_EPOCHS if args.epochs is None and args.steps is None else args.epochs

    label = f"{args.model} trained by {engine_name} on {args.data}"
    config = _config(
        args,
        engine=engine_name,
        lr=_learning_rate(args, GAN_LR if engine_name == "gan" else DEFAULT_LR),
        binarize=binarize,
        epochs=epochs,
        model_options=model_options,
        train_images=len(x_train),
    )
    record = image_report(
        model,
        engine,
        x_train,
        x_test,
        out,
        config=config,
        label=label,
        test_samples=args.eval_samples,
        test_ais_options={"num_steps": args.ais_steps, "num_chains": args.ais_chains},
        epochs=epochs,
        steps=args.steps,
        batch_size=args.batch_size,
        seed=args.seed,
        optimization=Optimization(
            lr=_learning_rate(args, GAN_LR if engine_name == "gan" else DEFAULT_LR),
            options={"betas": GAN_BETAS} if engine_name == "gan" else None,
        ),
        execution=Execution(
            accelerator=args.accelerator,
            devices=args.devices,
            num_nodes=args.num_nodes,
            strategy=args.strategy,
            precision=args.precision,
            compile=args.compile,
            progress=args.progress,
        ),
        evaluation={
            "every": args.eval_every,
            "samples": min(args.eval_samples, PERIODIC_EVAL_SAMPLES),
            "ais_options": {"num_steps": min(args.ais_steps, PERIODIC_AIS_STEPS), "num_chains": args.ais_chains},
        },
        checkpoint={"resume": args.resume, "overwrite": args.overwrite},
    )
    if rank() == 0:
        print(image_summary(record))
    return 0


def _fit_bayesian(args):
    """``pplgen fit eight-schools|multilevel``: fit, then diagnose (k̂, and NUTS with ``--compare-nuts``)."""
    family = BAYESIAN_MODELS[args.model]
    if args.epochs is not None:
        raise ValueError(f"'{args.model}' trains on its whole data set at every step: give --steps, not --epochs")
    _refuse_image_options(args, ["--batch-size", "--eval-samples"])
    given = _given(args, MODEL_OPTIONS)
    _refuse("model", args.model, MODEL_OPTIONS, given, family.options)
    engine_name = args.engine or "svi"
    engine = _build_engine(engine_name, _given(args, ENGINE_OPTIONS))
    arguments, coords = family.arguments()
    pyro.clear_param_store()
    pyro.set_rng_seed(args.seed)
    model = family.build(**{**family.options, **given})
    out = _run_folder(args, Path("runs") / f"{args.model}-{engine_name}")
    nuts_options = {"num_warmup": args.nuts_warmup, "num_samples": args.nuts_samples, "num_chains": args.nuts_chains}
    record = posterior_report(
        model,
        engine,
        arguments,
        out,
        steps=args.steps or family.steps,
        lr=_learning_rate(args, family.lr),
        seed=args.seed,
        num_samples=args.posterior_samples,
        compare_nuts=args.compare_nuts,
        nuts_options=nuts_options,
        coords=coords,
        progress=args.progress,
    )
    print(_bayesian_summary(args.model, record, out))
    return 0


def _fit_topics(args):
    """``pplgen fit lda``: ProdLDA (svi, iwae) or LDA with per-token topics (rws, vimco, nvil) on the Lee corpus."""
    if args.steps is not None:
        raise ValueError("lda trains by epochs over the corpus: give --epochs, not --steps")
    _refuse_image_options(args, [])
    engine_name = args.engine or "svi"
    if engine_name not in TOPIC_ROUTES:
        raise ValueError(
            f"lda trains with {', '.join(TOPIC_ROUTES)} (svi, iwae: ProdLDA; the others: LDA), not {engine_name}"
        )
    given = _given(args, MODEL_OPTIONS)
    _refuse("model", "lda", MODEL_OPTIONS, given, {"num_topics"})
    engine = _build_engine(engine_name, _given(args, ENGINE_OPTIONS))
    train, test = data.lee_corpus("train"), data.lee_corpus("test")
    pyro.clear_param_store()
    pyro.set_rng_seed(args.seed)
    model = getattr(models, TOPIC_ROUTES[engine_name])(train.num_words, num_topics=given.get("num_topics", 20))
    out = _run_folder(args, Path("runs") / f"lda-{engine_name}")
    record = topic_report(
        model,
        engine,
        train,
        test,
        out,
        epochs=args.epochs or 200,
        batch_size=args.batch_size,
        lr=_learning_rate(args, 1e-2),
        seed=args.seed,
        num_samples=args.eval_samples,
        progress=args.progress,
    )
    print(
        f"lda: {record['config']['model']} trained by {engine_name} for {record['config']['epochs']} epochs in "
        f"{record['fit_wall_time_s']:.1f} s\n  held-out perplexity {record['test_perplexity']:.1f} "
        f"(uniform {record['uniform_perplexity']}, unigram {record['unigram_perplexity']:.1f}); "
        f"NPMI {record['npmi_mean']:+.3f}\n"
        + "\n".join(f"  {' '.join(t['top_words'])}" for t in record["topics"][:5])
        + f"\n  run folder: {out}"
    )
    return 0


def _refuse_image_options(args, also):
    """Refuse the options of the image families that ``args.model`` would ignore (and those in ``also``)."""
    given = {
        "--data": args.data != "mnist",
        "--root": args.root is not None,
        "--download": args.download,
        "--binarize": args.binarize is not None,
        "--split-train": args.split_train != "train",
        "--split-test": args.split_test != "test",
        "--accelerator": args.accelerator != "auto",
        "--devices": args.devices != 1,
        "--num-nodes": args.num_nodes != 1,
        "--strategy": args.strategy != "auto",
        "--precision": args.precision != "32-true",
        "--compile": args.compile,
        "--resume": args.resume,
        "--eval-every": args.eval_every != 1,
        "--eval-limit": args.eval_limit != 1000,
        "--batch-size": "--batch-size" in also and args.batch_size != 100,
        "--eval-samples": "--eval-samples" in also and args.eval_samples != 1000,
    }
    ignored = [flag for flag, present in given.items() if present]
    if ignored:
        raise ValueError(
            f"'{args.model}' does not take {', '.join(ignored)}: it reads its own data and runs on the CPU"
        )


def _learning_rate(args, default):
    return default if args.lr is None else args.lr


def _bayesian_summary(name, record, out):
    config = record["config"]
    lines = [
        f"{name} ({config['model']}) trained by {config['engine']} for {config['steps']} steps "
        f"in {record['fit_wall_time_s']:.1f} s; final loss {record['final_loss']:.2f}",
        f"  PSIS k-hat {record['khat']:.2f}: {record['khat_reading']} (< 0.5 good, 0.5-0.7 ok, > 0.7 unreliable)",
    ]
    if "comparison" in record:
        lines.append(f"  NUTS ({record['nuts_backend']}) in {record['nuts_wall_time_s']:.1f} s; VI against NUTS:")
        lines.append(f"    {'parameter':<16} {'vi mean':>9} {'nuts mean':>9} {'vi sd':>8} {'nuts sd':>8} {'W1':>7}")
        for parameter, row in list(record["comparison"].items())[:12]:
            lines.append(
                f"    {parameter:<16} {row['vi_mean']:>9.3f} {row['nuts_mean']:>9.3f} {row['vi_sd']:>8.3f} "
                f"{row['nuts_sd']:>8.3f} {row['wasserstein']:>7.3f}"
            )
    lines.append(f"  run folder: {out}")
    return "\n".join(lines)


def _config(args, **resolved):
    """The run's configuration: the options as given, then ``resolved`` (model and engine options as built)."""
    skipped = {"run", "command", "progress", *ENGINE_OPTIONS.values(), *MODEL_OPTIONS.values()}
    given = {name: str(value) if isinstance(value, Path) else value for name, value in vars(args).items()}
    return {**{name: value for name, value in given.items() if name not in skipped}, **resolved}


def _given(args, table):
    """Constructor arguments of the options of ``table`` given on the command line."""
    return {keyword: getattr(args, keyword) for keyword in table.values() if hasattr(args, keyword)}


def _refuse(kind, name, table, given, accepted):
    """Raise a ``ValueError`` naming the options of ``table`` in ``given`` that ``accepted`` lacks, if any."""
    flags = {keyword: flag for flag, keyword in table.items()}
    refused = [flags[keyword] for keyword in given if keyword not in accepted]
    if refused:
        takes = [flag for flag, keyword in table.items() if keyword in accepted]
        raise ValueError(
            f"{kind} '{name}' does not take {', '.join(refused)}; "
            f"its options are {', '.join(takes) if takes else 'none'}"
        )


def _model_options(args, family):
    """The family's model options: its defaults, overridden by those given, after checking that it takes them."""
    given = _given(args, MODEL_OPTIONS)
    _refuse("model", args.model, MODEL_OPTIONS, given, family.options)
    return {**family.options, **given}


def _build_engine(name, options):
    """The registered engine ``name`` with ``options``, after checking that it takes them."""
    _refuse("engine", name, ENGINE_OPTIONS, options, inspect.signature(inference.ENGINES[name].__init__).parameters)
    return inference.get(name, **options)


def _binarize(args, family):
    """What ``--binarize`` asks for, or the family's default."""
    if args.binarize is not None:
        return BINARIZE[args.binarize]
    return "threshold" if family.binary else None
