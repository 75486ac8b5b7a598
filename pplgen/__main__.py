"""``python -m pplgen``: the ``pplgen`` command line."""

from pplgen.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
