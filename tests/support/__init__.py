"""What several test modules share: program catalogues, reference models, small data, figure checks.

Test modules import it as ``from tests.support.programs import PROGRAMS``; ``tests`` is a package and
pytest puts the repository root on ``sys.path`` (``pythonpath`` in ``pyproject.toml``).
"""
