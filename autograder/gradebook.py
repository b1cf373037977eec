"""Our grades in nbgrader's gradebook (``--gradebook COURSE/gradebook.db``), for formgrader and nbgrader's exports.

Through nbgrader's own API (:class:`nbgrader.api.Gradebook`), so that formgrader, ``nbgrader export`` and
``nbgrader generate_feedback`` read what we graded as if ``nbgrader autograde`` had:

* each lesson is an assignment with one notebook of the same name; its grade, solution and read-only cells come
  from the source notebook exactly as ``nbgrader generate_assignment`` records them (:func:`save_lesson`), with the
  lesson's due date;
* each student and submission is created when missing, with the time in nbgrader's ``timestamp.txt``;
* each grade cell gets the judge's score as its *auto* score (a capstone's band share too). A written answer
  gets no auto score and waits for a person in formgrader (one left unanswered gets 0, as nbgrader gives it);
  a flagged exercise keeps 0 and is marked for review. A *manual* score a person gave is never touched: it
  counts over the auto score in formgrader and in every export;
* the grader's message for an exercise it did not pass is the answer cell's automatic comment;
* the late penalty under the policy in force is the notebook's ``late_submission_penalty``;
* the notebook as graded (the student's answers, the tests' visible parts, each test's result as its output) is
  written to ``COURSE/autograded/<student>/<lesson>/<lesson>.ipynb`` (COURSE: the gradebook's folder), where
  formgrader and ``generate_feedback`` look for it. Hidden tests never go there.
"""
from __future__ import annotations

import contextlib
import datetime
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from autograder import notebooks
from autograder.status import Status

AUTOGRADED = "autograded"
NBGRADER_FILES = ("timestamp.txt", "submission_secret.txt")


@dataclass
class Recorded:
    """What :func:`record` did: counts, and one line per problem (a submission it could not record)."""

    assignments: int = 0
    students: int = 0
    submissions: int = 0
    grades: int = 0
    kept_manual: int = 0
    to_grade: int = 0
    problems: list[str] = field(default_factory=list)


def db_url(db: Path) -> str:
    return f"sqlite:///{Path(db).resolve()}"


@contextlib.contextmanager
def _alembic_on_path():
    """nbgrader stamps a new gradebook by running the ``alembic`` command, found on PATH: this environment's own
    when the grader runs from a virtual environment that is not activated (``.venv/bin/python -m autograder``)."""
    here = str(Path(sys.executable).parent)
    before = os.environ.get("PATH", "")
    if shutil.which("alembic") is None and (Path(here) / "alembic").exists():
        os.environ["PATH"] = here + os.pathsep + before
    try:
        yield
    finally:
        os.environ["PATH"] = before


def save_lesson(gb, url: str, lesson: str, source: nbformat.NotebookNode,
                due: datetime.datetime | None) -> str | None:
    """The lesson as an nbgrader assignment (created or updated) with its notebook's cells; None, or why its cells
    were left as they were (nbgrader refuses to add or remove cells once there are submissions)."""
    from autograder.release import student_version

    gb.update_or_create_assignment(lesson, duedate=due)
    try:
        student_version(source, gradebook=(url, lesson))
    except RuntimeError as e:
        return f"{lesson}: its cells in the gradebook were kept as they were ({e})"
    return None


def graded_notebook(student: nbformat.NotebookNode, source: nbformat.NotebookNode,
                    release: nbformat.NotebookNode, rows: list[dict]) -> nbformat.NotebookNode:
    """The student's notebook as graded, for formgrader: the graded cells put back (:mod:`autograder.restore`),
    each test cell as the student saw it (no hidden test) with the grader's result as its output."""
    from autograder.restore import restore

    nb = restore(student, source, release).nb
    written = {w.id for w in notebooks.written(source)}
    for i, cell in enumerate(nb.cells):
        if notebooks.grade_id(cell) in written and cell.get("cell_type") != "markdown":
            # A written answer is text, whatever became of its cell: formgrader shows it as the student wrote it.
            nb.cells[i] = nbformat.v4.new_markdown_cell(cell.get("source", ""), metadata=cell.get("metadata", {}))
    visible = {notebooks.grade_id(c): c.source for c in release.cells if notebooks.grade_id(c)}
    by_test = {f"{r['exercise']}{notebooks.TEST_SUFFIX}": r for r in rows}
    for cell in nb.cells:
        gid = notebooks.grade_id(cell)
        if notebooks.is_test(cell) and gid:
            cell.source = visible.get(gid, f"# the tests of {gid} ran in the grader")
            r = by_test.get(gid)
            text = (f"[autograder] {r['status']}: {float(r['score']):g} / {float(r['max_score']):g} points"
                    + (f"\n{r['message']}" if r.get("message") else "") if r else "[autograder] not graded")
            cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=text + "\n")]
            cell.execution_count = None
        elif cell.get("cell_type") == "code":
            cell.outputs, cell.execution_count = [], None
    return nb


def _cell_name(row: dict, written: set[str]) -> tuple[str, str]:
    """(grade cell, answer cell) of a row: ``<id>_test`` and ``<id>`` for an exercise, the cell itself for a
    written answer."""
    ex = row["exercise"]
    return (ex, ex) if ex in written else (f"{ex}{notebooks.TEST_SUFFIX}", ex)


def _set_grade(grade, row: dict, done: Recorded) -> None:
    """The row's score as the auto score; a manual score, if any, is kept (and the grade is marked for review
    when the auto score under it changed, as nbgrader's autograde does)."""
    status = row["status"]
    auto = None if status == Status.TO_GRADE else float(row["score"])
    changed = grade.auto_score != auto
    grade.auto_score = auto
    if grade.manual_score is not None:
        done.kept_manual += 1
        grade.needs_manual_grade = bool(grade.needs_manual_grade or changed)
    else:
        grade.needs_manual_grade = auto is None or status == Status.FLAGGED
    done.to_grade += status == Status.TO_GRADE
    done.grades += 1


def record(db: Path, subs, entries: list[dict], due: dict | None = None, policy=None,
           progress: bool = False) -> Recorded:
    """Record every journal entry (one per submission) in the gradebook ``db``; see the module's docstring.

    ``subs``: the :class:`autograder.read.Submission` s (where each notebook and timestamp is); ``due``: lesson ->
    due date (UTC); ``policy``: the :class:`autograder.late.Policy`. Entries carry ``late`` from
    :func:`autograder.late.annotate` when it ran. Never raises for one submission: its problem is listed."""
    from nbgrader.api import Gradebook, MissingEntry
    from tqdm.auto import tqdm

    from autograder.late import Policy
    from autograder.read import strip_widget_state

    due = due or {}
    policy = policy or Policy()
    db = Path(db)
    db.parent.mkdir(parents=True, exist_ok=True)
    url = db_url(db)
    course = db.parent
    where = {(s.student_id, s.lesson): s for s in subs}
    done = Recorded()
    lessons = sorted({e["lesson"] for e in entries})
    sources = {lesson: notebooks.read(notebooks.source_path(lesson)) for lesson in lessons}
    releases = {lesson: notebooks.read(notebooks.release_path(lesson)) for lesson in lessons}
    with _alembic_on_path(), Gradebook(url) as gb:
        for lesson in lessons:
            why = save_lesson(gb, url, lesson, sources[lesson], due.get(lesson))
            if why:
                done.problems.append(why)
            done.assignments += 1
        students = set()
        for e in tqdm(entries, desc="gradebook", unit="nb", disable=not progress):
            student, lesson = str(e["student_id"]), e["lesson"]
            try:
                written = {w.id for w in notebooks.written(sources[lesson])}
                if student not in students:
                    gb.update_or_create_student(student)
                    students.add(student)
                late = e.get("late") or {}
                stamp = late.get("submitted") or None
                gb.update_or_create_submission(lesson, student, **({"timestamp": stamp} if stamp else {}))
                for row in e["rows"]:
                    grade_cell, answer_cell = _cell_name(row, written)
                    try:
                        _set_grade(gb.find_grade(grade_cell, lesson, lesson, student), row, done)
                    except MissingEntry:
                        done.problems.append(f"{student}/{lesson}: no grade cell {grade_cell} in the gradebook")
                        continue
                    try:
                        comment = gb.find_comment(answer_cell, lesson, lesson, student)
                    except MissingEntry:
                        continue
                    if row["status"] == Status.PASSED or row["status"] == Status.TO_GRADE:
                        comment.auto_comment = None
                    elif answer_cell in written:
                        comment.auto_comment = "No response."
                    else:
                        comment.auto_comment = f"{row['status']}: {row.get('message', '')}"[:4000]
                nb_row = gb.find_submission_notebook(lesson, lesson, student)
                seconds = float(late.get("seconds_late") or 0.0)
                # "zero" takes the whole notebook, manual grades included (nbgrader's export keeps it above 0).
                nb_row.late_submission_penalty = (
                    (nb_row.max_score if seconds > 0 else 0.0) if policy.kind == "zero"
                    else policy.penalty(seconds, float(nb_row.score or 0.0)))
                gb.db.commit()
                done.submissions += 1
                sub = where.get((student, lesson))
                if sub is not None and sub.path is not None and not sub.problem:
                    _write_autograded(course, sub, sources[lesson], releases[lesson], e["rows"], strip_widget_state)
            except Exception as exc:  # noqa: BLE001 -- one submission's problem never stops the rest
                gb.db.rollback()
                done.problems.append(f"{student}/{lesson}: not recorded ({type(exc).__name__}: {exc})")
        done.students = len(students)
    return done


def _write_autograded(course: Path, sub, source, release, rows, strip_widget_state) -> None:
    from autograder.write import write_atomic

    folder = course / AUTOGRADED / sub.student_id / sub.lesson
    try:
        student = notebooks.read(sub.path)
    except notebooks.NotebookError:
        return  # unreadable: formgrader shows the grades without a notebook, as for a missing one
    nb = graded_notebook(student, source, release, rows)
    strip_widget_state(nb)
    write_atomic(folder / f"{sub.lesson}.ipynb", nbformat.writes(nb))
    # nbgrader's own files, as its autograde keeps them: generate_feedback and release_feedback read them there.
    for name in NBGRADER_FILES:
        kept = Path(sub.path).parent / name
        if kept.is_file() and not kept.is_symlink():
            shutil.copyfile(kept, folder / name)


def manual_scores(db: Path) -> dict[tuple[str, str], float]:
    """Each submission's score in the gradebook ``db`` (manual grades counted over auto ones), by (student,
    lesson), before any late penalty; empty when there is no gradebook there yet."""
    from nbgrader.api import Gradebook

    if not Path(db).exists():
        return {}
    out = {}
    with Gradebook(db_url(db)) as gb:
        for assignment in gb.assignments:
            for sub in assignment.submissions:
                out[(sub.student.id, assignment.name)] = float(sub.score or 0.0)
    return out
