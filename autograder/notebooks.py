"""Reading notebooks and their nbgrader cells: the vocabulary every step shares."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import nbformat

from autograder import LESSONS, SOLUTIONS

TEST_SUFFIX = "_test"


class NotebookError(Exception):
    """A submission that cannot be graded as it is; the message tells the student what to do."""


def lessons() -> list[str]:
    """Every lesson: a folder of ``solutions/`` holding a notebook of the same name."""
    return sorted(p.name for p in SOLUTIONS.iterdir() if (p / f"{p.name}.ipynb").exists())


def source_path(lesson: str) -> Path:
    return SOLUTIONS / lesson / f"{lesson}.ipynb"


def release_path(lesson: str) -> Path:
    return LESSONS / lesson / f"{lesson}.ipynb"


FRESH_COPY = ("Open it in JupyterLab; if it does not open, download a fresh copy of the lesson, "
              "paste your answers back in, save and resubmit.")


def read(path: Path, max_bytes: int | None = None) -> nbformat.NotebookNode:
    """Read and validate a notebook, turning every way it can be broken into one clear message.

    A submission (a notebook in ``<student>/<lesson>/``) must also be that lesson's notebook.
    The file is read without following a link and only up to ``max_bytes`` (default
    :data:`autograder.read.MAX_NOTEBOOK_BYTES`): see :func:`autograder.read.read_bytes`.
    """
    # Imported here: autograder.read imports this module (NotebookError, lessons).
    from autograder.read import MAX_NOTEBOOK_BYTES, read_bytes

    path = Path(path)
    raw = read_bytes(path, MAX_NOTEBOOK_BYTES if max_bytes is None else max_bytes)
    if not raw.strip():
        raise NotebookError(f"{path.name} is empty (0 bytes of notebook): the upload failed or the file was never "
                            "saved. " + FRESH_COPY)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise NotebookError(f"{path.name} is not a readable notebook: it is not text (a binary file, or a damaged "
                            "upload). " + FRESH_COPY) from None
    try:
        data = json.loads(text)
    except ValueError as e:
        raise NotebookError(f"{path.name} is not a readable notebook: it is not valid JSON ({str(e)[:120]}), "
                            "as when a file is cut off mid-upload or edited by hand. " + FRESH_COPY) from None
    if not isinstance(data, dict) or ("cells" not in data and "worksheets" not in data):
        raise NotebookError(f"{path.name} is not a readable notebook: it is JSON, but not a Jupyter notebook. "
                            + FRESH_COPY)
    version = data.get("nbformat")
    try:
        nb = nbformat.reads(text, as_version=4)
    except Exception as e:
        old = (f" It was saved in notebook format {version}, which is too old to convert."
               if isinstance(version, int) and version < 4 else "")
        raise NotebookError(f"{path.name} is not a readable notebook ({type(e).__name__}: {str(e)[:200]}).{old} "
                            + FRESH_COPY) from None
    try:
        nbformat.validate(nb)
    except nbformat.ValidationError as e:
        raise NotebookError(f"{path.name} is not a valid notebook: {e.message[:200]}. "
                            "Re-save it from JupyterLab and resubmit.") from None
    _check_lesson(nb, path)
    return nb


def _graded_ids(lesson: str) -> frozenset[str]:
    return _ids_cached(lesson, source_path(lesson).stat().st_mtime)


@lru_cache(maxsize=32)
def _ids_cached(lesson: str, mtime: float) -> frozenset[str]:
    nb = nbformat.read(source_path(lesson), as_version=4)
    return frozenset(g for g in (grade_id(c) for c in nb.cells) if g)


def _check_lesson(nb: nbformat.NotebookNode, path: Path) -> None:
    """A notebook submitted for one lesson that is plainly another lesson's (by its graded cells)."""
    lesson = path.parent.name
    try:
        known = lessons()
    except OSError:
        return
    if lesson not in known or path.resolve() in (source_path(lesson).resolve(), release_path(lesson).resolve()):
        return
    ids = {g for g in (grade_id(c) for c in nb.cells) if g}
    mine = _graded_ids(lesson) - {"setup"}
    if not ids or ids & mine:
        return  # no metadata at all (restore recognises cells by content), or this lesson's cells
    overlap = {other: len(ids & (_graded_ids(other) - {"setup"})) for other in known if other != lesson}
    best = max(overlap, key=lambda other: overlap[other], default=None)
    if best and overlap[best]:
        raise NotebookError(f"{path.name} is the notebook of lesson {best}, not {lesson}: submit your "
                            f"{lesson}.ipynb in the {lesson} folder (and {best}.ipynb in its own folder).")


def meta(cell) -> dict:
    return cell.get("metadata", {}).get("nbgrader", {})


def grade_id(cell) -> str | None:
    return meta(cell).get("grade_id")


def is_solution(cell) -> bool:
    return bool(meta(cell).get("solution"))


def is_test(cell) -> bool:
    m = meta(cell)
    return bool(m.get("grade")) and not m.get("solution")


def is_written(cell) -> bool:
    """A manually graded answer: a Markdown cell that is both graded and the student's to write (nbgrader's
    "Manually graded answer"). A person grades it in formgrader; the grader only records that it waits."""
    m = meta(cell)
    return cell.get("cell_type") == "markdown" and bool(m.get("grade")) and bool(m.get("solution"))


@dataclass(frozen=True)
class Exercise:
    id: str
    test_id: str
    points: float


def exercises(source: nbformat.NotebookNode) -> list[Exercise]:
    """The auto-graded exercises of a lesson, in notebook order, from its source notebook (written answers,
    graded by a person, are :func:`written`'s)."""
    out = []
    for cell in source.cells:
        if is_test(cell):
            gid = grade_id(cell)
            assert gid is not None  # nbgrader gives every graded cell of a source notebook its grade_id
            ex = gid[: -len(TEST_SUFFIX)] if gid.endswith(TEST_SUFFIX) else gid
            out.append(Exercise(ex, gid, float(meta(cell).get("points", 0))))
    return out


@dataclass(frozen=True)
class Written:
    """A manually graded answer: its grade id (``written_<name>``) and its points."""

    id: str
    points: float


def written(source: nbformat.NotebookNode) -> list[Written]:
    """The written answers of a lesson, in notebook order, from its source notebook."""
    out = []
    for cell in source.cells:
        gid = grade_id(cell)
        if is_written(cell) and gid:
            out.append(Written(gid, float(meta(cell).get("points", 0))))
    return out


# A student's written answer that still reads like this (the release's stub) was not answered.
TEXT_STUB = "YOUR ANSWER HERE"


def stub_of(text: str) -> str:
    """A written answer's text as the release has it: each ``BEGIN SOLUTION`` ... ``END SOLUTION`` region
    replaced by :data:`TEXT_STUB` (as nbgrader's ClearSolutions does), the whole text when there is none."""
    lines, out, inside, found = (text or "").split("\n"), [], False, False
    for line in lines:
        if "BEGIN SOLUTION" in line:
            inside = found = True
            out.append(TEXT_STUB)
        elif "END SOLUTION" in line:
            inside = False
        elif not inside:
            out.append(line)
    return "\n".join(out) if found else TEXT_STUB


def answered(cell, source_cell=None) -> bool:
    """Whether a written answer cell holds anything of the student's: a line that is neither the release's
    stub nor a line of the question the release printed around it (``source_cell``: the source's cell)."""
    given = set(normalized(stub_of(source_cell.get("source", "")) if source_cell is not None else "").split("\n"))
    mine = [ln for ln in normalized(cell.get("source", "")).split("\n") if ln and ln not in given]
    return any(ln.replace(TEXT_STUB, "").strip() for ln in mine)


# ------------------------------------------------------------------------ cell content

# nbval's per-cell markers (``# NBVAL_CHECK_OUTPUT``...) are for the course's own tests: the release drops them,
# and a cell is recognised by its content whether it carries one or not.
NBVAL_MARKER = re.compile(r"^\s*#\s*NBVAL_[A-Z_]+\s*$")


def strip_nbval(text: str) -> str:
    """``text`` without its nbval marker lines."""
    return "\n".join(ln for ln in (text or "").split("\n") if not NBVAL_MARKER.match(ln))


def normalized(text: str) -> str:
    """A cell's text with blank lines and indentation differences gone, to recognise a cell by its content."""
    return "\n".join(ln.strip() for ln in (text or "").splitlines() if ln.strip() and not NBVAL_MARKER.match(ln))
