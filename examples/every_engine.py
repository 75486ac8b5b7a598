"""What the example scripts share: the options every one takes, and a run with one engine or each in turn."""

import argparse
import time

import pplgen


def parser(description, smoke):
    """An argument parser with ``--engine``, ``--seed`` and ``--smoke`` (which applies ``smoke``)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--engine",
        choices=sorted(pplgen.inference.guided_engines()),
        help="one engine (default: every engine that trains a guide)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help=f"a tiny run: {smoke}")
    return parser


def parse(parser, argv, smoke):
    args = parser.parse_args(argv)
    if args.smoke:
        vars(args).update(smoke)
    return args


def run(args, train):
    """``train(engine name) -> (loss, summary)`` for the chosen engine or each registered one, printing
    each summary or refusal; returns ``{engine: loss, or its UnsupportedModelError}``."""
    results = {}
    for name in [args.engine] if args.engine else pplgen.inference.guided_engines():
        start = time.perf_counter()
        try:
            loss, summary = train(name)
        except pplgen.UnsupportedModelError as refusal:
            print(f"{name + ':':<11} refused: {refusal}")
            results[name] = refusal
            continue
        print(f"{name + ':':<11} {summary}   {time.perf_counter() - start:.1f} s")
        results[name] = loss
    return results
