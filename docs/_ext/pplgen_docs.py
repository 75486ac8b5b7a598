"""What the documentation build adds to Sphinx: the conformance table, generated from the test suite's one
source (``tests/support/outcomes.py``, which also prints it as Markdown), and the gallery's settings that
sphinx-gallery takes by qualified name (a function in ``conf.py`` could not be pickled with the environment)."""

import ast
import re
from pathlib import Path

from docutils import nodes
from sphinx.util.docutils import SphinxDirective

import pplgen.inference
from tests.support import outcomes, programs

#: The gallery's order: the user stories of the pages first, then the scripts that run every engine.
STORIES = (
    "swap_engines_vae.py",
    "new_model_from_scratch.py",
    "sigmoid_belief_net.py",
    "discrete_estimators.py",
    "implicit_guide_avb.py",
    "eight_schools.py",
    "lda.py",
    "enumerated_mixture_and_hmm.py",
    "semi_supervised_vae.py",
    "sparse_gamma_def.py",
    "deep_markov_model.py",
)


def smoke_argv(gallery_conf, script_vars):
    """The command line every example runs with in the build: its own few-step budget.

    The script also gets its docstring back as ``__doc__``, as when it runs from the command line:
    sphinx-gallery blanks it (the docstring is the page's text, not output), and the scripts describe their
    ``--help`` with its first line. ``example_globals`` is sphinx-gallery 0.22's name for the script's
    namespace, which is why the ``docs`` extra pins that release line."""
    source = Path(script_vars["src_file"]).read_text(encoding="utf-8")
    script_vars["example_globals"]["__doc__"] = ast.get_docstring(ast.parse(source), clean=False)
    return ["--smoke"]


class StoryOrder:
    """sphinx-gallery's ``within_subsection_order``: the scripts in :data:`STORIES` order, any other after
    them by name (a new script appears without a change here)."""

    def __init__(self, src_dir):
        self.src_dir = src_dir

    def __call__(self, filename):
        name = Path(filename).name
        return (STORIES.index(name), name) if name in STORIES else (len(STORIES), name)


def _cell(*children):
    entry = nodes.entry()
    entry += nodes.paragraph("", "", *children)
    return entry


def _markup(text):
    """The inline node of a Markdown cell: ``code``, **bold**, or plain text."""
    if match := re.fullmatch(r"`([^`]*)`", text):
        return nodes.literal(text=match[1])
    if match := re.fullmatch(r"\*\*(.*)\*\*", text):
        return nodes.strong(text=match[1].replace(" / ", "/"))
    return nodes.Text(text)


class ConformanceTable(SphinxDirective):
    """``.. conformance-table::``: what each registered engine does with each program of the conformance
    catalogue that Pyro trains, as the suite asserts it. The cells are those of
    ``tests.support.outcomes.markdown_table``; a refusal is shown by a number whose fragment of the refusal
    message is listed under the table, so that twelve engines fit one page."""

    def run(self):
        # The table changes with the suite's rows, its catalogue of programs and the registry of engines.
        for module in (outcomes, programs, pplgen.inference):
            self.env.note_dependency(module.__file__)
        lines = outcomes.markdown_table().splitlines()
        header, _, *body = [[cell.strip() for cell in line.strip().strip("|").split(" | ")] for line in lines]
        reasons = {}
        for cells in body:
            for text in cells[1:]:
                if text.startswith("refused: "):
                    reasons.setdefault(text.removeprefix("refused: "), len(reasons) + 1)

        def cell(text):
            if text == "trains":
                return _cell(nodes.Text("✓"))
            if text.startswith("refused: "):
                return _cell(nodes.Text(f"✗ {reasons[text.removeprefix('refused: ')]}"))
            return _cell(_markup(text))

        group = nodes.tgroup(cols=len(header))
        for _ in header:
            group += nodes.colspec(colwidth=1)
        group += nodes.thead("", nodes.row("", *(_cell(_markup(text)) for text in header)))
        group += nodes.tbody("", *(nodes.row("", *(cell(text) for text in cells)) for cells in body))
        table = nodes.table("", group, classes=["conformance", "colwidths-auto"])
        legend = nodes.enumerated_list(enumtype="arabic", classes=["conformance-legend"])
        for reason in reasons:
            legend += nodes.list_item("", nodes.paragraph("", f"“{reason}”"))
        caption = nodes.paragraph(
            "", "✓: trains. ✗ n: the engine's check refuses the program, and its message holds fragment n:"
        )
        return [table, caption, legend]


def setup(app):
    app.add_directive("conformance-table", ConformanceTable)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
