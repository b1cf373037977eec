"""Grading a class that misbehaves: hangs, crashes, floods, a killed grader; what the instructor gets.

One small class of lesson 01 (the cheapest to run: its capstone trains nothing) is graded with two workers:
test_dataloader.py's class (alice, bob, carol: graded once for both files), copied, with the students who misbehave
added and graded into it. The tests read what it left behind.
"""
import copy
import csv
import json
import os
import signal
import subprocess
import sys
import time

import nbformat
import pytest

from autograder import grade, notebooks
from autograder.journal import JOURNAL

from grading import (
    GRADER_ENV,
    LIST_COLLATE,
    ROOT,
    answered,
    copy_class,
    grade_more,
    lesson_class,
    personalised,
    release,
    run_grader,
    solution,
)

LESSON = "01_dataloader"


def _solution():
    return solution(LESSON)


def _possible():
    return sum(e.points for e in notebooks.exercises(_solution()))


def _judged(g, student):
    """``student``'s rows of the exercises the judge decides (written answers wait for a person)."""
    auto = {e.id for e in notebooks.exercises(_solution())}
    return {k: r for k, r in g.by[student].items() if k in auto}


def _prefix(nb, gid, code):
    """Put ``code`` at the top of the student's answer cell ``gid``."""
    for cell in nb.cells:
        if notebooks.grade_id(cell) == gid:
            cell.source = code + "\n" + cell.source
    return nb


def _journal(out):
    return [json.loads(line) for line in (out / JOURNAL).read_text().splitlines() if line.strip()]


# Each student hands in the solution with top-level code that misbehaves at the top of one answer cell.
CASES = {
    "hangs": ("denormalize", "import time\ntime.sleep(10_000)"),
    "exits": ("get_y", "import os\nos._exit(3)"),
    "segfaults": ("splitter", "import ctypes\nctypes.string_at(0)"),
    "hogs": ("collate", "hog = bytearray(64 * 2**30)  # more than the kernel's memory limit"),
    # IPython's Image under its own module name: the lesson's `Image` is PIL's.
    "floods": ("get_x", "print('x' * 30_000_000)\n"
                        "import IPython.display as ipd\n"
                        "ipd.display(ipd.Image(data=b'\\x89PNG' + bytes(8_000_000)))"),
}
STUDENTS = set(CASES) | {"alice", "bob", "carol"}


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    base = lesson_class(tmp_path_factory, LESSON, "collate", LIST_COLLATE)
    assert base.returncode == 0, base.stderr[-3000:]
    mine = copy_class(base, tmp_path_factory.mktemp("class"))
    students = {student: _prefix(_solution(), *case) for student, case in CASES.items()}
    return grade_more(mine, students, "--workers", "2")


def test_the_whole_class_is_graded(graded):
    g = graded
    assert g.returncode == 0, g.stderr[-3000:]
    assert set(g.by) == set(g.totals) == STUDENTS
    exercises = [e.id for e in notebooks.exercises(_solution())] + [w.id for w in notebooks.written(_solution())]
    for student in STUDENTS:
        assert list(g.by[student]) == exercises  # one row per exercise, no duplicates, notebook order
    assert len(_journal(g.out)) == len(STUDENTS)
    assert "3 unchanged since the last run" in g.stdout  # alice, bob and carol: test_dataloader.py's grading
    assert float(g.totals["alice"]["score"]) == _possible() and g.totals["alice"]["status"] == "ok"


def test_a_hanging_cell_costs_the_feedback_page_not_the_grade(graded):
    """The grade comes from the student's definitions in a judging process that never runs the notebook's
    top-level code: a cell that hangs in the notebook run is reported, and its exercise is judged as written."""
    assert all(r["status"] == "passed" for r in _judged(graded, "hangs").values())
    assert graded.totals["hangs"]["status"] == "timeout"
    entry = next(e for e in _journal(graded.out) if e["student_id"] == "hangs")
    assert "longer than" in entry["detail"] or "budget" in entry["detail"], entry["detail"]


@pytest.mark.parametrize("student, dies_at", [("exits", "accuracy_multi"), ("segfaults", "best_threshold")])
def test_a_dead_kernel_is_reported_and_costs_no_points(graded, student, dies_at):
    assert graded.totals[student]["status"] == "kernel_died"
    assert all(r["status"] == "passed" for r in _judged(graded, student).values())
    entry = next(e for e in _journal(graded.out) if e["student_id"] == student)
    assert "died" in entry["detail"]
    if student == "segfaults":
        assert "SIGSEGV" in entry["detail"]


def test_memory_exhaustion_is_contained_and_reported(graded):
    assert graded.totals["hogs"]["status"] == "out_of_memory"
    assert all(r["status"] == "passed" for r in _judged(graded, "hogs").values())  # the allocation is top-level code
    assert "out of memory" in (graded.out / "report.html").read_text()


def test_huge_output_is_capped_and_graded(graded):
    assert float(graded.totals["floods"]["score"]) == _possible()
    page = graded.out / "feedback" / "floods" / f"{LESSON}.html"
    assert page.stat().st_size < 12_000_000  # 38 MB printed and displayed; 2 MB kept per cell (escaped in HTML)
    assert "[autograder] output cut" in page.read_text()


def test_feedback_never_shows_hidden_tests(graded):
    hidden = [c.source for c in _solution().cells if notebooks.is_test(c)]
    assert any("hidden=True" in s for s in hidden)
    for student in ("alice", "bob", "carol"):
        page = graded.page(student)
        assert "hidden=True" not in page
        for src in hidden:
            for line in src.splitlines():
                if line.strip() and not line.startswith("#") and len(line.strip()) > 12:
                    assert line not in page, line
    assert "you returned lists of tensors" in graded.page("carol")  # the diagnosis still reaches the student


def test_class_report_shows_distributions_diagnoses_and_problems(graded):
    page = (graded.out / "report.html").read_text()
    assert page.count("data:image/png;base64") >= 1 + len(notebooks.exercises(_solution()))
    assert "known mistake “lists”" in page  # carol's diagnosis, among the most common, by its name
    for student, status in (("hangs", "timeout"), ("exits", "kernel_died"), ("segfaults", "kernel_died"),
                            ("hogs", "out_of_memory")):
        assert f"<td>{student}</td><td>{status}</td>" in page


def test_totals_match_nbgrader_export(graded, tmp_path):
    """Plain `nbgrader autograde` + `nbgrader export` on the same notebooks gives the same totals: full marks, and
    one mistake with the capstone left (bob's zeros would show nothing more, at the cost of a third kernel)."""
    from autograder.nbgrader_compare import autograde

    students = ("alice", "carol")
    handed_in = {s: graded.subs / s / LESSON / f"{LESSON}.ipynb" for s in students}
    theirs, _ = autograde(tmp_path / "course", LESSON, handed_in,
                          env={"OMP_NUM_THREADS": "1", "COURSE_PROFILE": "ci"})
    assert theirs == {s: float(graded.totals[s]["score"]) for s in students}


def test_a_second_run_regrades_only_what_changed(graded):
    subs, out = graded.subs, graded.out  # this module's own copy of the class: the last test to read it
    before = _journal(out)
    nbformat.write(personalised(answered(LESSON, "collate", LIST_COLLATE), "alice"),  # resubmitted, wrong
                   subs / "alice" / LESSON / f"{LESSON}.ipynb")
    proc = run_grader(subs, out, "--workers", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    after = _journal(out)
    assert after[: len(before)] == before and [e["student_id"] for e in after[len(before):]] == ["alice"]
    totals = {r["student_id"]: r for r in csv.DictReader(open(out / "totals.csv"))}
    assert float(totals["alice"]["score"]) == _possible() - 2 and len(totals) == len(STUDENTS)
    rows = list(csv.DictReader(open(out / "grades.csv")))
    assert len(rows) == len(totals) * (len(notebooks.exercises(_solution())) + len(notebooks.written(_solution())))


def test_a_killed_grader_resumes_without_regrading(tmp_path):
    subs, out = tmp_path / "class", tmp_path / "out"
    for student, nb in (("amy", _solution()), ("ben", release(LESSON))):
        (subs / student / LESSON).mkdir(parents=True)
        nbformat.write(personalised(nb, student), subs / student / LESSON / f"{LESSON}.ipynb")
    proc = subprocess.Popen([sys.executable, "-m", "autograder", "grade", str(subs), "--out", str(out)],
                            cwd=ROOT, env={**os.environ, **GRADER_ENV}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline and not ((out / JOURNAL).exists() and (out / JOURNAL).read_text().strip()):
        time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)  # half-way: one submission journaled, the next one running
    proc.wait()
    first = _journal(out)
    assert len(first) == 1
    result = run_grader(subs, out)
    assert result.returncode == 0, result.stderr[-3000:]
    entries = _journal(out)
    assert entries[: len(first)] == first  # nothing graded before the kill was graded again
    assert sorted(e["student_id"] for e in entries) == ["amy", "ben"]
    assert f"{len(first)} unchanged since the last run" in result.stdout
    totals = {r["student_id"]: r["score"] for r in csv.DictReader(open(out / "totals.csv"))}
    assert {s: float(v) for s, v in totals.items()} == {"amy": _possible(), "ben": 0}


def test_cell_time_limits_per_lesson(monkeypatch):
    nb = _solution()
    opts = grade.Options(profile="ci")
    assert grade.cell_timeout(LESSON, opts, nb) == grade.CELL_TIMEOUTS["default"]["ci"]
    monkeypatch.setitem(grade.CELL_TIMEOUTS, LESSON, {"ci": 77})
    assert grade.cell_timeout(LESSON, opts, nb) == 77
    nb.metadata["autograder"] = {"cell_timeout": {"ci": 33}}
    assert grade.cell_timeout(LESSON, opts, nb) == 33
    assert grade.cell_timeout(LESSON, grade.Options(profile="ci", cell_timeout=5), nb) == 5


def test_an_unchanged_cell_gets_a_multiple_of_its_recorded_time_and_the_students_own_cells_none():
    source = _solution()
    nb = copy.deepcopy(source)
    code = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and grade._recorded_seconds(c) is not None]
    first, second = code[:2]
    nb.cells[second].source += "\nprint('mine')"  # the student's own text: the uniform per-cell limit
    limits = grade.cell_limits(nb, source, grade.Options(profile="ci"))
    recorded = grade._recorded_seconds(source.cells[first])
    assert limits[first] == pytest.approx(grade.CELL_FACTOR * recorded + grade.CELL_MARGIN)
    assert limits[first] >= 3 * recorded + 8  # the margin a loaded grading machine needed (lr_find, lesson 03)
    assert second not in limits
    assert grade.cell_limits(nb, source, grade.Options(profile="cpu")) == {}  # times are recorded in ci only
