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

A model family is one entry of :data:`~pplgen.cli.families.MODELS`, with its own model options
(``--latent``/``--hidden`` for ``vae``, ``--layers`` for ``sbn`` and
``helmholtz``, ``--nonlinear`` for ``sbn``) and the engine it trains with
when ``--engine`` is not given (``svi`` for ``vae``; ``vimco`` for ``sbn`` and
``wake_sleep`` for ``helmholtz``, whose binary latents ``svi`` cannot
differentiate through). An engine option is one entry of
:data:`~pplgen.cli.families.ENGINE_OPTIONS`, passed only to engines whose constructor takes it; a
model or engine option given to a model or engine that does not take it is
an error that names it.

Mistakes in the input (an unknown option, a missing data file, a model an
engine cannot train, a diverging run) and faults of the machine (a full
disk, a folder that cannot be written, a name too long) end with one line
``pplgen: error: ...`` on stderr and exit status 2; so does Ctrl-C, whose
line says where the last checkpoint is and how to continue from it.
"""

import sys
from pathlib import Path

from pplgen.checks import UnsupportedModelError
from pplgen.cli.arguments import UsageError, build_parser
from pplgen.run_folder import first_process
from pplgen.step import NonFiniteLossError

#: Exceptions that report a mistake in the input or a fault of the machine (OSError: a full disk, a folder that
#: cannot be written, a name too long) rather than a bug.
USER_ERRORS = (ValueError, OSError, ImportError, UnsupportedModelError, NonFiniteLossError)


def main(argv=None):
    """Run the command line ``argv`` (default ``sys.argv[1:]``); return the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:  # --help and --version print, then stop with status 0
        return stop.code
    except UsageError as error:
        sys.stderr.write(error.usage)
        return _fail(error)
    try:
        return args.run(args)
    except USER_ERRORS as error:
        return _fail(error)
    except KeyboardInterrupt:
        return _fail(_interrupted(args))


def _interrupted(args):
    """What Ctrl-C left: the last checkpoint, and the command that continues from it."""
    folder = getattr(args, "run_folder", None)
    checkpoint = Path(folder) / "checkpoint.pt" if folder is not None else None
    if checkpoint is None or not checkpoint.exists():
        return "interrupted before the first checkpoint was written; nothing to resume from"
    return f"interrupted; the last checkpoint is {checkpoint}: run the same command with --resume to continue from it"


def _fail(error):
    """Report a user error on stderr, once (from the first process of a multi-process run); the exit status
    of a usage error."""
    if first_process():
        print(f"pplgen: error: {error}", file=sys.stderr)
    return 2
