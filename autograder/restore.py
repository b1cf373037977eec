"""Restore: the student's notebook with every graded cell that is not theirs to edit put back.

nbgrader-style, in small steps that each do one job and report what they changed, so the feedback page can
tell a student "your edited test cell fill_l1_loss_test was put back":

1. :func:`identify` recognises each student cell: by its nbgrader ``grade_id``, or, when the metadata was
   stripped or the id renamed, by its content (the source's or the release's text of the cell, a hidden test
   line, or for a solution, the exercise it defines);
2. :func:`keep_answers` keeps each solution cell's code (the last copy that carries its id wins, as it runs
   last) under the source's metadata, as code;
3. :func:`put_back_read_only` puts back read-only graded cells from the source, one copy each;
4. :func:`put_back_tests` puts each test cell back from the source (with its hidden tests), right after its
   solution cell and that cell's self-check, wherever the student moved, edited, duplicated, deleted or
   markdown-ified it;
5. :func:`put_back_missing` re-inserts graded cells the student deleted after the graded cell before them
   (a deleted solution comes back as the release's stub).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field

import nbformat

from autograder.notebooks import TEST_SUFFIX, grade_id, is_solution, is_test, normalized


@dataclass
class _Lesson:
    """What the source and release notebooks say about the graded cells."""

    src: dict
    rel: dict
    order: list[str]
    tests: list[str]
    solutions: list[str]
    test_of: dict[str, str]  # solution id -> its test id
    texts: dict[str, str]    # normalised text of a graded cell (source or release) -> its id
    hidden: dict[str, str]   # a hidden test line -> its test id

    @classmethod
    def of(cls, source: nbformat.NotebookNode, release: nbformat.NotebookNode) -> "_Lesson":
        order = [g for c in source.cells if (g := grade_id(c))]
        src = {g: c for c in source.cells if (g := grade_id(c))}
        rel = {g: c for c in release.cells if (g := grade_id(c))}
        tests = [g for g in order if is_test(src[g])]
        solutions = [g for g in order if is_solution(src[g])]
        test_of = {g[: -len(TEST_SUFFIX)]: g for g in tests
                   if g.endswith(TEST_SUFFIX) and g[: -len(TEST_SUFFIX)] in solutions}
        texts: dict[str, str] = {}
        for g in order:
            for c in (src[g], rel.get(g)):
                if c is not None and normalized(c.source):
                    texts.setdefault(normalized(c.source), g)
        hidden = {line: g for g in tests for line in _hidden_checks(src[g])}
        return cls(src, rel, order, tests, solutions, test_of, texts, hidden)


def _hidden_checks(cell) -> list[str]:
    text = cell.get("source", "")
    if "### BEGIN HIDDEN TESTS" in text:
        text = text.split("### BEGIN HIDDEN TESTS", 1)[1].split("### END HIDDEN TESTS", 1)[0]
    return [normalized(ln) for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]


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


def is_selfcheck(cell, ex_id: str) -> bool:
    src = cell.get("source", "")
    return (cell.get("cell_type") == "code" and not grade_id(cell) and "hidden" not in src
            and (f"check('{ex_id}'" in src or f'check("{ex_id}"' in src))


@dataclass
class Restored:
    """The notebook to grade and, one sentence each, what was put back."""

    nb: nbformat.NotebookNode
    changes: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------------- steps

def identify(cells: list, lesson: _Lesson) -> list[tuple[str | None, str]]:
    """``(grade id, how)`` for each student cell; how: ``meta``, ``content``, ``defines`` or empty."""
    out = []
    for cell in cells:
        g = grade_id(cell)
        if g in lesson.src:
            out.append((g, "meta"))
            continue
        text = normalized(cell.get("source", ""))
        if text in lesson.texts:
            out.append((lesson.texts[text], "content"))
            continue
        lines = [normalized(ln) for ln in cell.get("source", "").splitlines()
                 if ln.strip() and not ln.strip().startswith("#")]
        if lines and all(line in lesson.hidden for line in lines) and len({lesson.hidden[ln] for ln in lines}) == 1:
            out.append((lesson.hidden[lines[0]], "content"))  # a test cell whose metadata is gone
            continue
        found = [g for g in lesson.solutions if g in _defines(cell)] if cell.get("cell_type") == "code" else []
        out.append((found[0], "defines") if len(found) == 1 else (None, ""))
    return out


def _chosen(ids, lesson: _Lesson) -> dict[str, int]:
    """For each graded id that is not a test, the student cell that stands for it."""
    chosen = {}
    for g in lesson.order:
        if g in lesson.tests:
            continue
        by_meta = [i for i, (gid, how) in enumerate(ids) if gid == g and how == "meta"]
        anyhow = [i for i, (gid, _) in enumerate(ids) if gid == g]
        picks = by_meta or anyhow
        if picks:
            chosen[g] = picks[-1] if g in lesson.solutions else picks[0]
    return chosen


def put_back_read_only(cells, ids, lesson: _Lesson, changes: list[str]) -> tuple[list, list]:
    """Each read-only graded cell as the source has it, once, where the student's first copy stands;
    the cells and their ids (test cells are left for :func:`put_back_tests`)."""
    out, out_ids, seen = [], [], set()
    for cell, (gid, how) in zip(cells, ids):
        if gid in lesson.src and gid not in lesson.solutions and gid not in lesson.tests:
            if gid in seen:
                changes.append(f"the read-only cell {gid} appeared more than once: one copy was kept.")
                continue
            seen.add(gid)
            if normalized(cell.get("source", "")) != normalized(lesson.src[gid].source):
                changes.append(f"the read-only cell {gid} was edited: it was put back as it was.")
            cell = copy.deepcopy(lesson.src[gid])
        out.append(cell)
        out_ids.append((gid, how))
    return out, out_ids


def keep_answers(cells, ids, lesson: _Lesson, changes: list[str]) -> list:
    """The cells without test cells, each solution's chosen copy as code under the source's metadata; other
    copies of graded cells lose their grade id (they still run)."""
    chosen = _chosen(ids, lesson)
    out = []
    for i, (cell, (gid, how)) in enumerate(zip(cells, ids)):
        if gid in lesson.tests:
            continue
        if gid in lesson.src and gid not in lesson.solutions:
            out.append(cell)  # read-only, already put back
            continue
        cell = copy.deepcopy(cell)
        if gid in lesson.solutions and chosen.get(gid) == i:
            text_answer = lesson.src[gid].get("cell_type") == "markdown"  # a written answer, graded by a person
            if text_answer and cell.get("cell_type") != "markdown":
                cell = nbformat.v4.new_markdown_cell(cell.get("source", ""), metadata=cell.get("metadata", {}))
                changes.append(f"your written answer {gid} was not a text cell: it was kept as text.")
            elif not text_answer and cell.get("cell_type") != "code":
                cell = nbformat.v4.new_code_cell(cell.get("source", ""), metadata=cell.get("metadata", {}))
                changes.append(f"your answer cell {gid} was not a code cell: it was run as code.")
            if how != "meta":
                changes.append(f"your answer cell {gid} had lost its grading metadata: it was recognised by its "
                               "content and graded.")
            cell.metadata["nbgrader"] = dict(lesson.src[gid].metadata["nbgrader"])
        elif gid in lesson.solutions and how == "meta":
            cell.metadata.pop("nbgrader")
            changes.append(f"your answer cell {gid} appeared more than once: the last copy is graded.")
        elif "nbgrader" in cell.get("metadata", {}) and grade_id(cell):
            cell.metadata.pop("nbgrader")  # a stale id: it runs, but is not a graded cell
        out.append(cell)
    return out


def put_back_tests(cells, student_tests: dict[str, list], lesson: _Lesson, changes: list[str]) -> list:
    """Each test cell from the source, once, right after its solution cell and that cell's self-check."""
    out = list(cells)
    for solution, test in lesson.test_of.items():
        at = next((k for k, c in enumerate(out) if grade_id(c) == solution), None)
        if at is None:
            continue  # the solution was deleted too: put_back_missing brings both back
        mine = student_tests.get(test, [])
        visible = {normalized(c.source) for c in (lesson.src[test], lesson.rel.get(test)) if c is not None}
        if not mine:
            changes.append(f"the test cell {test} was deleted: it was put back.")
        elif len(mine) > 1:
            changes.append(f"the test cell {test} appeared more than once: one copy was kept.")
        elif mine[0].get("cell_type") != "code":
            changes.append(f"the test cell {test} was turned into text: it was put back as code.")
        elif normalized(mine[0].get("source", "")) not in visible:
            changes.append(f"the test cell {test} was edited: it was put back as it was.")
        at += 1
        while at < len(out) and is_selfcheck(out[at], solution):
            at += 1
        out.insert(at, copy.deepcopy(lesson.src[test]))
    return out


def put_back_missing(cells, lesson: _Lesson, changes: list[str]) -> list:
    """Graded cells the student deleted, each after the graded cell that precedes it in the source."""
    out = list(cells)

    def pos(g):
        return next((k for k, c in enumerate(out) if grade_id(c) == g), None)

    for k, g in enumerate(lesson.order):
        if pos(g) is not None:
            continue
        is_answer = g in lesson.solutions
        new = copy.deepcopy(lesson.rel.get(g, lesson.src[g]) if is_answer else lesson.src[g])
        changes.append(f"the cell {g} was deleted: " + ("it was put back as the unfilled exercise, so it scores 0."
                                                        if is_answer else "it was put back."))
        before = next((lesson.order[j] for j in range(k - 1, -1, -1) if pos(lesson.order[j]) is not None), None)
        out.insert(0 if before is None else pos(before) + 1, new)
    return out


# ------------------------------------------------------------------------------ all steps

def restore(student: nbformat.NotebookNode, source: nbformat.NotebookNode,
            release: nbformat.NotebookNode) -> Restored:
    """Every step above, in order; the notebook to grade and what was changed, one sentence each."""
    lesson = _Lesson.of(source, release)
    ids = identify(student.cells, lesson)
    student_tests: dict[str, list] = {}
    for cell, (gid, _) in zip(student.cells, ids):
        if gid in lesson.tests:
            student_tests.setdefault(gid, []).append(cell)
    changes: list[str] = []
    cells, ids = put_back_read_only(student.cells, ids, lesson, changes)
    cells = keep_answers(cells, ids, lesson, changes)
    cells = put_back_tests(cells, student_tests, lesson, changes)
    cells = put_back_missing(cells, lesson, changes)
    out = nbformat.from_dict(copy.deepcopy(dict(student)))
    out.cells = cells
    out.metadata["kernelspec"] = source.metadata.get("kernelspec", out.metadata.get("kernelspec", {}))
    return Restored(out, list(dict.fromkeys(changes)))
