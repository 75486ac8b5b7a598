"""The argument parser of ``pplgen`` and the argparse types of its options."""

import argparse
import ast
import math
from pathlib import Path

import pplgen
from pplgen import data, inference
from pplgen.cli.commands import fit_command
from pplgen.cli.families import (
    BAYESIAN_MODELS,
    BINARIZE,
    DEFAULT_EPOCHS,
    ENGINE_OPTIONS,
    MODEL_OPTIONS,
    MODELS,
    PERIODIC_EVAL_SAMPLES,
)
from pplgen.loggers import NAMED_LOGGERS
from pplgen.options import PRECISIONS


class UsageError(Exception):
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
        raise UsageError(message, self.format_usage())


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
    fit_parser.set_defaults(run=fit_command, default_of=fit_parser.get_default)
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
    group.add_argument(
        "--engine-option",
        type=_engine_option,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="any keyword of the engine's constructor, the value a Python literal (e.g. num_particles=8, "
        "discriminator=(64,64)); repeatable, so an engine's every option is reachable without a flag of its own",
    )
    option = _options_adder(group, ENGINE_OPTIONS)
    option(
        "--particles",
        type=_positive_int,
        metavar="K",
        help="particles per datum (every engine; default 5 for iwae, rws and vimco, else 1)",
    )
    option(
        "--estimator",
        metavar="NAME",
        help="guide gradient estimator: 'standard' or 'dreg' (iwae), 'disarm' or 'arm' (disarm)",
    )
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
    group.add_argument(
        "--compile",
        nargs="?",
        const="forward",
        choices=("forward", "trace"),
        help="trace: replay each step as one traced, compiled graph (same numbers, faster); forward (the default "
        "when no value is given): compile the engine's forward with torch.compile",
    )
    group.add_argument(
        "--no-progress", dest="progress", action="store_false", default=None, help="hide the progress bar"
    )


def _add_output_arguments(group):
    """Held-out evaluation, the run folder and the loggers."""
    group.add_argument(
        "--logger",
        action="append",
        choices=sorted(NAMED_LOGGERS),
        default=[],
        help="also send the settings, step metrics and evaluations to this Lightning Fabric logger, written "
        "under the run folder's logs/<name> (repeatable)",
    )
    group.add_argument(
        "--log-every", type=_positive_int, default=1, metavar="N", help="log the metrics of every N-th step"
    )
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


def _engine_option(text):
    """argparse type: ``NAME=VALUE`` with VALUE a Python literal (a bare word is taken as a string)."""
    name, separator, value = text.partition("=")
    if not separator or not name.isidentifier():
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE (e.g. num_particles=8), got {text!r}")
    try:
        return name, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return name, value


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
