"""Small published tables: grouped data for hierarchical models (:mod:`pplgen.models.hierarchical`) and
Old Faithful's eruptions, for mixtures and hidden Markov models.

>>> from pplgen import data
>>> schools = data.eight_schools()       # schools.y, schools.sigma: (8,)
>>> study = data.sleepstudy()            # study.reaction, study.days, study.subject: (180,)
>>> eruptions = data.faithful()          # (272, 2): duration (minutes), waiting time (minutes), in order
"""

import csv
import io
import tarfile
from dataclasses import dataclass

import torch

from pplgen.data.files import _package_folder


@dataclass(frozen=True)
class EightSchools:
    """Rubin (1981): estimated coaching effects ``y`` and their standard errors ``sigma`` in eight schools."""

    y: torch.Tensor
    sigma: torch.Tensor
    schools: tuple[str, ...]


def eight_schools(dtype=torch.float32):
    """The eight published effects and standard errors (Rubin 1981; Gelman et al., BDA §5.5)."""
    return EightSchools(
        y=torch.tensor([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0], dtype=dtype),
        sigma=torch.tensor([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0], dtype=dtype),
        schools=(
            "Choate",
            "Deerfield",
            "Phillips Andover",
            "Phillips Exeter",
            "Hotchkiss",
            "Lawrenceville",
            "St. Paul's",
            "Mt. Hermon",
        ),
    )


@dataclass(frozen=True)
class SleepStudy:
    """Belenky et al. (2003), lme4's ``sleepstudy``: mean reaction time (ms) of 18 subjects on days 0–9
    of sleep deprivation. ``subject`` indexes ``subjects`` (the original ids)."""

    reaction: torch.Tensor
    days: torch.Tensor
    subject: torch.Tensor
    subjects: tuple[str, ...]

    @property
    def num_subjects(self):
        return len(self.subjects)


def sleepstudy(dtype=torch.float32):
    """The 180 rows of lme4's ``sleepstudy``, read from the copy ``pydataset`` ships."""
    rows = _pydataset_rows("lme4/sleepstudy", "sleepstudy")
    subjects = tuple(sorted({row["Subject"] for row in rows}))
    index = {name: i for i, name in enumerate(subjects)}
    return SleepStudy(
        reaction=torch.tensor([float(row["Reaction"]) for row in rows], dtype=dtype),
        days=torch.tensor([float(row["Days"]) for row in rows], dtype=dtype),
        subject=torch.tensor([index[row["Subject"]] for row in rows]),
        subjects=subjects,
    )


def faithful(dtype=torch.float32):
    """The 272 eruptions of Old Faithful (R's ``datasets::faithful``, read from the copy ``pydataset`` ships),
    in recorded order: ``(272, 2)`` of eruption duration and waiting time to the next, in minutes."""
    rows = _pydataset_rows("datasets/faithful", "faithful")
    return torch.tensor([[float(row["eruptions"]), float(row["waiting"])] for row in rows], dtype=dtype)


def _pydataset_rows(table, name):
    """The rows of one table of pydataset's resource archive, read in place; pydataset is not imported, since
    importing it unpacks every data set it has into the home folder."""
    archive = _package_folder("pydataset", f"{name} is read from the data pydataset ships") / "resources.tar.gz"
    with tarfile.open(archive) as tar:
        text = tar.extractfile(f"resources/rdata/csv/{table}.csv").read().decode()
    return list(csv.DictReader(io.StringIO(text)))
