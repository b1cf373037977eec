"""Grading a small class with `python -m autograder grade`, for the tests that check what a lesson's grades are.

:func:`grade_class` writes ``SUBMISSIONS/<student>/<lesson>/<lesson>.ipynb`` for each student, runs the grader once
and returns a :class:`Graded`: the grader's exit status and output, grades.csv's rows by student and exercise,
totals.csv's rows by student and the feedback pages. :func:`lesson_class` is the class every topic test grades:
alice hands in the solution, bob the untouched student notebook, carol the solution with one known mistake.

A class is graded once per test run, however many test files ask for it and whichever pytest-xdist worker runs
them: the first to ask grades it under a file lock in the run's shared temporary folder, the others read what it
left (test_dataloader.py and test_grade_ops.py grade lesson 01's class this way). So a class's folders are shared:
read them and never change them; :func:`copy_class` gives a copy of one's own to change.
"""
from __future__ import annotations

import csv
import fcntl
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from autograder import notebooks

ROOT = Path(__file__).resolve().parent.parent
# Lesson 01's class mistake (carol's), shared by the two files that grade that class: a batch left as lists.
LIST_COLLATE = ("def collate(items):\n"
                "    xs, ys = zip(*items)\n"
                "    return list(xs), list(ys)\n")
# One math thread per grading process: each test worker grades with two workers on a machine of two cores.
GRADER_ENV = {"OMP_NUM_THREADS": "1"}


def solution(lesson: str) -> nbformat.NotebookNode:
    return notebooks.read(notebooks.source_path(lesson))


def release(lesson: str) -> nbformat.NotebookNode:
    return notebooks.read(notebooks.release_path(lesson))


def answered(lesson: str, grade_id: str, source: str) -> nbformat.NotebookNode:
    """The solution with the answer cell ``grade_id`` replaced by ``source``."""
    nb = solution(lesson)
    cells = [c for c in nb.cells if notebooks.grade_id(c) == grade_id]
    assert cells, f"{lesson} has no cell {grade_id}"
    for cell in cells:
        cell.source = source
    return nb


@dataclass
class Graded:
    returncode: int
    stdout: str
    stderr: str
    subs: Path
    out: Path
    lesson: str
    rows: list[dict] = field(default_factory=list)  # grades.csv, in its order
    by: dict[str, dict[str, dict]] = field(default_factory=dict)  # student -> exercise -> grades.csv row
    totals: dict[str, dict] = field(default_factory=dict)  # student -> totals.csv row

    @classmethod
    def read(cls, folder: Path, lesson: str) -> "Graded":
        run = json.loads((folder / "run.json").read_text())
        g = cls(run["returncode"], run["stdout"], run["stderr"], folder / "subs", folder / "out", lesson)
        if (g.out / "grades.csv").exists():
            g.rows = _csv(g.out / "grades.csv")
            g.totals = {r["student_id"]: r for r in _csv(g.out / "totals.csv")}
        for r in g.rows:
            g.by.setdefault(r["student_id"], {})[r["exercise"]] = r
        return g

    def total(self, student: str) -> float:
        return sum(float(r["score"]) for r in self.by[student].values())

    def page(self, student: str) -> str:
        return (self.out / "feedback" / student / f"{self.lesson}.html").read_text()


def _csv(path: Path) -> list[dict]:
    return list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"), newline="")))


def _shared_root(tmp_path_factory) -> Path:
    """The run's temporary folder that every pytest-xdist worker sees (a worker's own is a folder inside it)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def personalised(nb: nbformat.NotebookNode, student: str) -> nbformat.NotebookNode:
    """``nb`` as ``student`` would hand it in after using the widgets: every widget answer that is right for the
    "offline" student (the solution's) becomes ``student``'s own right answer (``Spec.answer_for``); any other answer
    is left as it is. Each student's widget draws its own target, so a copied solution's answer would be flagged."""
    import ast
    import copy

    from course_lib.checks import judge_observations, registry
    from course_lib.common import OFFLINE_STUDENT

    out = copy.deepcopy(nb)
    for cell in out.cells:
        spec = registry().get(notebooks.grade_id(cell) or "")
        if spec is None or spec.answer_for is None:
            continue
        own = spec.answer_for(student)
        lines = cell.source.splitlines()
        for i, line in enumerate(lines):
            try:
                node = ast.parse(line.strip()).body[0]
                value = ast.literal_eval(node.value) if isinstance(node, ast.Assign) else None
            except (SyntaxError, ValueError, IndexError, TypeError):
                continue
            if value is not None and judge_observations(spec, [], {"kind": "answer", "value": value},
                                                        student=OFFLINE_STUDENT).passed:
                lines[i] = f"{line.split('=', 1)[0].rstrip()} = {own!r}"
        cell.source = "\n".join(lines)
    return out


def _write(subs: Path, lesson: str, students: dict) -> None:
    for student, nb in students.items():
        folder = subs / student / lesson
        folder.mkdir(parents=True)
        if isinstance(nb, nbformat.NotebookNode):
            nb = personalised(nb, student)
        if isinstance(nb, bytes):
            (folder / f"{lesson}.ipynb").write_bytes(nb)
        elif nb is not None:  # None: a student who submitted nothing (an empty folder)
            nbformat.write(nb, folder / f"{lesson}.ipynb")


def _key(lesson: str, students: dict, args: tuple, env: dict) -> str:
    h = hashlib.sha256(json.dumps([lesson, list(args), sorted(env.items())]).encode())
    for student, nb in sorted(students.items()):
        body = nb if isinstance(nb, bytes) else b"" if nb is None else nbformat.writes(nb).encode()
        h.update(student.encode() + b"\0" + hashlib.sha256(body).digest())
    return h.hexdigest()[:16]


def run_grader(subs: Path, out: Path, *args: str, env: dict | None = None,
               timeout: float = 1500) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "autograder", "grade", str(subs), "--out", str(out), *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=timeout,
                          env={**os.environ, **GRADER_ENV, **(env or {})})


def grade_class(tmp_path_factory, lesson: str, students: dict, *args: str, env: dict | None = None) -> Graded:
    """Grade ``students`` (name -> notebook, raw bytes, or None for an empty folder) of ``lesson`` once per test
    run: ``python -m autograder grade SUBS --out OUT *args``, with ``env`` added to the environment."""
    env = dict(env or {})
    folder = _shared_root(tmp_path_factory) / "graded-classes" / f"{lesson}-{_key(lesson, students, args, env)}"
    folder.parent.mkdir(exist_ok=True)
    with open(folder.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, even if grading raises
        if not (folder / "run.json").exists():
            shutil.rmtree(folder, ignore_errors=True)  # what an interrupted attempt left
            _write(folder / "subs", lesson, students)
            proc = run_grader(folder / "subs", folder / "out", *args, env=env)
            run = {"returncode": proc.returncode, "stdout": proc.stdout, "stderr": proc.stderr}
            (folder / "run.json").write_text(json.dumps(run))
    return Graded.read(folder, lesson)


def capstone(lesson: str) -> str:
    """The id of ``lesson``'s capstone: the exercise graded in bands on held-out data."""
    from course_lib.checks import capstone_of

    found = capstone_of(e.id for e in notebooks.exercises(solution(lesson)))
    assert found is not None, f"{lesson} has no capstone"
    return found


def unanswered(nb: nbformat.NotebookNode, lesson: str, grade_id: str) -> nbformat.NotebookNode:
    """``nb`` with the answer cell ``grade_id`` as the student version hands it out: its stub."""
    stub = next(c.source for c in release(lesson).cells if notebooks.grade_id(c) == grade_id)
    for cell in nb.cells:
        if notebooks.grade_id(cell) == grade_id:
            cell.source = stub
    return nb


def lesson_class(tmp_path_factory, lesson: str, wrong_id: str, wrong_source: str) -> Graded:
    """alice: the solution; bob: the untouched student notebook; carol: the solution with ``wrong_source`` as her
    answer to ``wrong_id`` and the capstone left unanswered (so the class trains it once, alice's: the capstone's
    own tests judge what it gives). Graded by two workers."""
    carol = unanswered(answered(lesson, wrong_id, wrong_source), lesson, capstone(lesson))
    students = {"alice": solution(lesson), "bob": release(lesson), "carol": carol}
    return grade_class(tmp_path_factory, lesson, students, "--workers", "2")


def copy_class(graded: Graded, dest: Path) -> Graded:
    """A copy of a graded class in ``dest``, to grade again or change."""
    for name in ("subs", "out"):
        shutil.copytree(getattr(graded, name), dest / name, symlinks=True)
    (dest / "run.json").write_text(json.dumps({"returncode": graded.returncode, "stdout": graded.stdout,
                                               "stderr": graded.stderr}))
    return Graded.read(dest, graded.lesson)


def grade_more(graded: Graded, students: dict, *args: str, env: dict | None = None) -> Graded:
    """Add ``students`` to a class of one's own (a :func:`copy_class`) and run the grader on it again: the journal
    keeps those graded before, if ``args`` change nothing that decides a grade."""
    _write(graded.subs, graded.lesson, students)
    proc = run_grader(graded.subs, graded.out, *args, env=env)
    folder = graded.subs.parent
    (folder / "run.json").write_text(json.dumps({"returncode": proc.returncode, "stdout": proc.stdout,
                                                 "stderr": proc.stderr}))
    return Graded.read(folder, graded.lesson)


def check_lesson_class(g: Graded, exercises: dict[str, float], wrong_id: str, diagnosis: str) -> None:
    """What grading :func:`lesson_class` must give: every exercise with its points; the solution full marks (and
    its notebook run in the grader's kernel without trouble); the untouched notebook nothing, with a feedback
    page that says why; the known mistake loses exactly its exercise (and carol the capstone she left unanswered),
    and the feedback names the mistake."""
    assert g.returncode == 0, g.stderr[-3000:]
    from autograder import notebooks

    full = sum(exercises.values())
    # Written answers wait for a person: a row "to grade" with 0 points, their points in the possible total.
    written = {w.id: w.points for w in notebooks.written(solution(g.lesson))}
    assert {k: float(r["max_score"]) for k, r in g.by["alice"].items()} == {**exercises, **written}
    assert all(g.by["alice"][k]["status"] == "passed" for k in exercises) and g.total("alice") == full
    assert all(g.by["alice"][k]["status"] == "to grade" for k in written)
    assert g.totals["alice"]["status"] == "ok", g.totals["alice"]
    assert g.total("bob") == 0 and {r["status"] for r in g.by["bob"].values()} <= {"failed", "error"}
    page = g.page("bob")
    assert f"0 / {full + sum(written.values()):g} points" in page and "not implemented yet" in page
    wrong = g.by["carol"][wrong_id]
    assert wrong["status"] == "failed" and float(wrong["score"]) == 0
    left = capstone(g.lesson)
    assert g.by["carol"][left]["status"] == "failed" and float(g.by["carol"][left]["score"]) == 0
    assert g.total("carol") == full - exercises[wrong_id] - exercises[left]
    assert diagnosis in g.page("carol")


def short_notebook(nb, keep):
    """The notebook cut down to the exercises in ``keep`` (each: solution, self-check, test) after its first cell."""
    import copy

    from autograder import notebooks

    def kept(cell):
        gid = notebooks.grade_id(cell)
        if gid:
            return gid.removesuffix("_test") in keep
        return any(f"check('{ex}', {ex})" in cell.source for ex in keep)

    out = copy.deepcopy(nb)
    out.cells = [copy.deepcopy(nb.cells[0])] + [copy.deepcopy(c) for c in nb.cells if kept(c)]
    return out


def write_short_course(base: Path, lesson: str, keep) -> tuple[Path, Path]:
    """A course folder under ``base`` whose ``lesson`` keeps only the exercises in ``keep`` (source and student
    version, :func:`short_notebook`) and whose other lessons are the real ones (links, so that another lesson's
    notebook is still recognised); returns its solutions and lessons folders, for ``notebooks.SOLUTIONS`` and
    ``notebooks.LESSONS``."""
    import nbformat

    from autograder import notebooks

    for folder, path in (("solutions", notebooks.source_path(lesson)), ("lessons", notebooks.release_path(lesson))):
        dest = base / folder / lesson / f"{lesson}.ipynb"
        dest.parent.mkdir(parents=True)
        nbformat.write(short_notebook(nbformat.read(path, as_version=4), keep), dest)
    for other in notebooks.lessons():
        if other != lesson:
            (base / "solutions" / other).symlink_to(notebooks.SOLUTIONS / other)
            (base / "lessons" / other).symlink_to(notebooks.LESSONS / other)
    return base / "solutions", base / "lessons"
