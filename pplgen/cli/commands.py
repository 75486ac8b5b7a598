"""``pplgen fit``: what each model family's route does with the parsed arguments."""

import inspect
from pathlib import Path

import pyro

from pplgen import data, inference, models
from pplgen.cli.families import (
    BAYESIAN_MODELS,
    BINARIZE,
    DEFAULT_EPOCHS,
    DEFAULT_LR,
    ENGINE_OPTIONS,
    GAN_BETAS,
    GAN_LR,
    IMAGE_ONLY_OPTIONS,
    MODEL_OPTIONS,
    MODELS,
    PERIODIC_AIS_STEPS,
    PERIODIC_EVAL_SAMPLES,
    TOPIC_ROUTES,
)
from pplgen.distributed import rank
from pplgen.loggers import named_loggers
from pplgen.options import Execution, Logging, Optimization
from pplgen.reports import image_report, image_summary, posterior_report, topic_report
from pplgen.run_folder import RunFolder


def _run_folder(args, default):
    """The run folder (``--out``, else ``default``), held by this run (:class:`~pplgen.run_folder.RunFolder`):
    checked before any work, created only when the run writes to it."""
    args.run_folder = args.out or default  # where an interrupted run's checkpoint is
    return RunFolder(args.run_folder, resume=args.resume, overwrite=args.overwrite)


def fit_command(args):
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
    engine = _build_engine(engine_name, args)
    binarize = _binarize(args, family)
    with _run_folder(args, Path("runs") / f"{args.model}-{engine_name}-{args.data}") as out:
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
                compile={None: False, "forward": True}.get(args.compile, args.compile),
                progress=args.progress,
            ),
            evaluation={
                "every": args.eval_every,
                "samples": min(args.eval_samples, PERIODIC_EVAL_SAMPLES),
                "ais_options": {"num_steps": min(args.ais_steps, PERIODIC_AIS_STEPS), "num_chains": args.ais_chains},
            },
            checkpoint={
                "resume": args.resume,
                "overwrite": args.overwrite,
                "settings": _resume_settings(args, model_options, binarize),
            },
            loggers=_logging(args, out),
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
    engine = _build_engine(engine_name, args)
    arguments, coords = family.arguments()
    pyro.clear_param_store()
    pyro.set_rng_seed(args.seed)
    model = family.build(**{**family.options, **given})
    with _run_folder(args, Path("runs") / f"{args.model}-{engine_name}") as out:
        nuts_options = {
            "num_warmup": args.nuts_warmup,
            "num_samples": args.nuts_samples,
            "num_chains": args.nuts_chains,
        }
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
            loggers=_logging(args, out),
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
    engine = _build_engine(engine_name, args)
    train, test = data.lee_corpus("train"), data.lee_corpus("test")
    pyro.clear_param_store()
    pyro.set_rng_seed(args.seed)
    model = getattr(models, TOPIC_ROUTES[engine_name])(train.num_words, num_topics=given.get("num_topics", 20))
    with _run_folder(args, Path("runs") / f"lda-{engine_name}") as out:
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
            loggers=_logging(args, out),
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


def _logging(args, out):
    """The loggers of ``--logger``, writing under the run folder's ``logs/``, or None."""
    return Logging(named_loggers(args.logger, out / "logs"), every=args.log_every) if args.logger else None


def _refuse_image_options(args, also):
    """Refuse the options of the image families that ``args.model`` would ignore (and those in ``also``)."""
    ignored = [
        flag
        for flag in (*IMAGE_ONLY_OPTIONS, *also)
        if getattr(args, _dest(flag)) != args.default_of(_dest(flag))  # the parser's own default
    ]
    if ignored:
        raise ValueError(
            f"'{args.model}' does not take {', '.join(ignored)}: it reads its own data and runs on the CPU"
        )


def _dest(flag):
    return flag.removeprefix("--").replace("-", "_")


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
    skipped = {
        "run",
        "default_of",
        "command",
        "progress",
        "engine_option",
        *ENGINE_OPTIONS.values(),
        *MODEL_OPTIONS.values(),
    }
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


def _resume_settings(args, model_options, binarize):
    """What a ``--resume`` must match beyond :func:`pplgen.fit`'s own settings, by the flags that set it: the
    model's architecture and the source of its data."""
    flags = {keyword: flag for flag, keyword in MODEL_OPTIONS.items()}
    architecture = {flags.get(keyword, keyword): _plain(value) for keyword, value in model_options.items()}
    source = {"--data": args.data, "--split-train": args.split_train, "--binarize": binarize}
    return {**architecture, **source}


def _plain(value):
    """A value as a checkpoint keeps it (tuples become lists, as they come back from the file)."""
    return list(value) if isinstance(value, tuple) else value


def _model_options(args, family):
    """The family's model options: its defaults, overridden by those given, after checking that it takes them."""
    given = _given(args, MODEL_OPTIONS)
    _refuse("model", args.model, MODEL_OPTIONS, given, family.options)
    return {**family.options, **given}


def _build_engine(name, args):
    """The registered engine ``name`` with the engine options of ``args`` (the flags of
    :data:`~pplgen.cli.families.ENGINE_OPTIONS`, then every ``--engine-option``), after checking that its
    constructor takes each of them."""
    accepted = inspect.signature(inference.ENGINES[name].__init__).parameters
    options = _given(args, ENGINE_OPTIONS)
    _refuse("engine", name, ENGINE_OPTIONS, options, accepted)
    for keyword, value in args.engine_option:
        if keyword not in accepted or keyword == "self":
            takes = ", ".join(k for k, p in accepted.items() if k != "self" and p.kind is not p.VAR_KEYWORD)
            raise ValueError(f"engine '{name}' does not take --engine-option {keyword}=...; its options are {takes}")
        options[keyword] = value
    return inference.get(name, **options)


def _binarize(args, family):
    """What ``--binarize`` asks for, or the family's default."""
    if args.binarize is not None:
        return BINARIZE[args.binarize]
    return "threshold" if family.binary else None
