"""Reading notebooks and their nbgrader cells: the vocabulary every step shares."""
from __future__ import annotations

import json
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
    best = max(overlap, key=overlap.get, default=None)
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


@dataclass(frozen=True)
class Exercise:
    id: str
    test_id: str
    points: float


def exercises(source: nbformat.NotebookNode) -> list[Exercise]:
    """The graded exercises of a lesson, in notebook order, from its source notebook."""
    out = []
    for cell in source.cells:
        if is_test(cell):
            gid = grade_id(cell)
            ex = gid[: -len(TEST_SUFFIX)] if gid.endswith(TEST_SUFFIX) else gid
            out.append(Exercise(ex, gid, float(meta(cell).get("points", 0))))
    return out


# ------------------------------------------------------------------------------- restore

def normalized(text: str) -> str:
    """A cell's text with blank lines and indentation differences gone, to recognise a cell by its content."""
    return "\n".join(ln.strip() for ln in (text or "").splitlines() if ln.strip())


def _defines(cell) -> set[str]:
    """Names a code cell defines at its top level (functions, classes, assignments)."""
    import ast

    lines = [ln for ln in cell.get("source", "").splitlines() if not ln.lstrip().startswith(("%", "!"))]
    try:
        tree = ast.parse("\n".join(lines))
    except SyntaxError:
        return set()
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            for t in (node.targets if isinstance(node, ast.Assign) else [node.target]):
                if isinstance(t, ast.Name):
                    names.add(t.id)
    return names


def _hidden_checks(cell) -> list[str]:
    text = cell.get("source", "")
    if "### BEGIN HIDDEN TESTS" in text:
        text = text.split("### BEGIN HIDDEN TESTS", 1)[1].split("### END HIDDEN TESTS", 1)[0]
    return [normalized(ln) for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]


def _is_selfcheck(cell, ex_id: str) -> bool:
    src = cell.get("source", "")
    return (cell.get("cell_type") == "code" and not grade_id(cell) and "hidden" not in src
            and (f"check('{ex_id}'" in src or f'check("{ex_id}"' in src))


def restore(student: nbformat.NotebookNode, source: nbformat.NotebookNode,
            release: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """The student's notebook with every graded cell that is not theirs to edit put back.

    Graded cells are recognised by their nbgrader ``grade_id``, or, when the metadata was
    stripped or the id renamed, by their content: the source's or the release's text of the
    cell, a hidden test line, or (for a solution) the exercise it defines. Then:

    * test cells come from the source (with their hidden tests), one copy each, as code,
      right after their solution cell and its self-check, wherever the student moved them;
    * read-only graded cells come from the source, one copy each;
    * a solution cell keeps the student's code under the source's metadata (the last cell
      that carries its id wins, as it is the one that runs last; a markdown one becomes code);
    * graded cells the student deleted are re-inserted after the graded cell that precedes
      them (solution cells as the release's stub).
    """
    import copy

    src_cells = [c for c in source.cells if grade_id(c)]
    src = {grade_id(c): c for c in src_cells}
    rel = {grade_id(c): c for c in release.cells if grade_id(c)}
    order = [grade_id(c) for c in src_cells]
    tests = [g for g in order if is_test(src[g])]
    solutions = [g for g in order if is_solution(src[g])]
    test_of = {g[: -len(TEST_SUFFIX)]: g for g in tests if g.endswith(TEST_SUFFIX) and g[: -len(TEST_SUFFIX)] in solutions}
    texts = {}
    for g in order:
        for c in (src[g], rel.get(g)):
            if c is not None and normalized(c.source):
                texts.setdefault(normalized(c.source), g)
    hidden = {line: g for g in tests for line in _hidden_checks(src[g])}

    def identify(cell) -> tuple[str | None, str]:
        g = grade_id(cell)
        if g in src:
            return g, "meta"
        text = normalized(cell.get("source", ""))
        if text in texts:
            return texts[text], "content"
        lines = [normalized(ln) for ln in cell.get("source", "").splitlines() if ln.strip() and not ln.strip().startswith("#")]
        if lines and all(line in hidden for line in lines) and len({hidden[line] for line in lines}) == 1:
            return hidden[lines[0]], "content"  # a test cell whose metadata is gone
        if cell.get("cell_type") == "code":
            found = [g for g in solutions if g in _defines(cell)]
            if len(found) == 1:
                return found[0], "defines"
        return None, ""

    ids = [identify(c) for c in student.cells]
    chosen: dict[str, int] = {}
    for g in order:
        if g in tests:
            continue
        by_meta = [i for i, (gid, how) in enumerate(ids) if gid == g and how == "meta"]
        anyhow = [i for i, (gid, _) in enumerate(ids) if gid == g]
        picks = by_meta or anyhow
        if picks:
            chosen[g] = picks[-1] if g in solutions else picks[0]

    cells = []
    for i, cell in enumerate(student.cells):
        gid = ids[i][0]
        if gid in tests:
            continue  # put back from the source below, exactly once
        if gid in src and gid not in solutions:
            if chosen.get(gid) == i:
                cells.append(copy.deepcopy(src[gid]))
            continue  # a duplicate of a read-only cell
        cell = copy.deepcopy(cell)
        if gid in solutions and chosen.get(gid) == i:
            if cell.get("cell_type") != "code":
                cell = nbformat.v4.new_code_cell(cell.get("source", ""), metadata=cell.get("metadata", {}))
            cell.metadata["nbgrader"] = dict(src[gid].metadata["nbgrader"])
        elif "nbgrader" in cell.get("metadata", {}) and grade_id(cell):
            cell.metadata.pop("nbgrader")  # a stale copy: it runs, but is not the graded cell
        cells.append(cell)

    def pos(g):
        return next((k for k, c in enumerate(cells) if grade_id(c) == g), None)

    for k, g in enumerate(order):
        solution = next((s for s, t in test_of.items() if t == g), None)
        if solution is not None and pos(solution) is not None:
            at = pos(solution) + 1
            while at < len(cells) and _is_selfcheck(cells[at], solution):
                at += 1
            cells.insert(at, copy.deepcopy(src[g]))
            continue
        if pos(g) is not None:
            continue
        new = copy.deepcopy(rel.get(g, src[g]) if g in solutions else src[g])
        before = next((order[j] for j in range(k - 1, -1, -1) if pos(order[j]) is not None), None)
        at = 0 if before is None else pos(before) + 1
        cells.insert(at, new)
    out = nbformat.from_dict(copy.deepcopy(dict(student)))
    out.cells = cells
    out.metadata["kernelspec"] = source.metadata.get("kernelspec", out.metadata.get("kernelspec", {}))
    return out
