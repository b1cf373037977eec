"""Our grades in nbgrader's gradebook, read back by nbgrader's own commands (export, generate_feedback).

A short lesson 06 (two exercises and a written answer) is graded once for the module: alice hands in the solution
and a written answer, bob the untouched student notebook, carol a known mistake and a written answer, 90 minutes
after the due date. The notebooks are not run for feedback pages: the gradebook takes the judge's grades only.
"""
import copy
import csv
import io
import json
import subprocess
import sys

import nbformat
import pytest

from autograder import grade, notebooks
from autograder.late import Policy
from autograder.release import student_version
from autograder.status import Status

from grading import short_notebook

LESSON = "06_fill_level"
KEEP = ("setup", "make_fill_image", "fill_l1_loss")
WRONG_LOSS = "def fill_l1_loss(pred, target):\n    return torch.abs(pred - target).mean()\n"
WRITTEN = "written_why_l1"
NBGRADER = [sys.executable, "-m", "nbgrader"]


def _written_cell():
    return nbformat.v4.new_markdown_cell(
        "Why does an average of absolute errors suit fill levels?\n\n<!-- BEGIN SOLUTION -->\n"
        "It is steadier against a few mislabelled images.\n<!-- END SOLUTION -->",
        metadata={"nbgrader": {"grade": True, "solution": True, "locked": False, "points": 2,
                               "grade_id": WRITTEN, "schema_version": 3}})


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    """SOLUTIONS/LESSONS pointing at a short lesson 06 with a written answer; the class's folders."""
    base = tmp_path_factory.mktemp("course")
    source = short_notebook(nbformat.read(notebooks.source_path(LESSON), as_version=4), KEEP)
    source.cells.append(_written_cell())
    release = student_version(source)
    for folder, nb in (("solutions", source), ("lessons", release)):
        (base / folder / LESSON).mkdir(parents=True)
        nbformat.write(nb, base / folder / LESSON / f"{LESSON}.ipynb")
    mp = pytest.MonkeyPatch()
    mp.setattr(notebooks, "SOLUTIONS", base / "solutions")
    mp.setattr(notebooks, "LESSONS", base / "lessons")
    yield base, source, release
    mp.undo()


def _with(nb, gid, text):
    nb = copy.deepcopy(nb)
    for cell in nb.cells:
        if notebooks.grade_id(cell) == gid:
            cell.source = text
    return nb


def _grade(base, **kwargs):
    return grade.grade_all(base / "subs", base / "out", workers=1, progress=False,
                           opts=grade.Options(profile="ci", memory_mb=2000, run_notebook=False), **kwargs)


@pytest.fixture(scope="module")
def graded(course):
    base, source, release = course
    students = {"alice": _with(source, WRITTEN, "Outliers pull a squared error far more than an absolute one."),
                "bob": release,
                "carol": _with(_with(source, "fill_l1_loss", WRONG_LOSS), WRITTEN, "It is robust.")}
    for student, nb in students.items():
        folder = base / "subs" / student / LESSON
        folder.mkdir(parents=True)
        nbformat.write(nb, folder / f"{LESSON}.ipynb")
    # As `nbgrader submit` writes it (and `nbgrader collect` keeps it).
    (base / "subs" / "alice" / LESSON / "timestamp.txt").write_text("2026-12-01 08:00:00.000000 UTC")
    (base / "subs" / "carol" / LESSON / "timestamp.txt").write_text("2026-12-01 10:30:00.000000 UTC")
    (base / "due.json").write_text(json.dumps({LESSON: "2026-12-01 09:00:00"}))
    (base / "nbgrader_config.py").write_text(
        f"c = get_config()\nc.CourseDirectory.root = {str(base)!r}\n"
        f"c.CourseDirectory.db_url = 'sqlite:///{base / 'gradebook.db'}'\n")
    stats: dict = {}
    rows = _grade(base, stats=stats, gradebook=base / "gradebook.db", late_policy=Policy.parse("1/hour"),
                  due_dates=base / "due.json")
    return base, rows, stats


def _export(base) -> dict[str, dict]:
    proc = subprocess.run([*NBGRADER, "export"], cwd=base, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {r["student_id"]: r for r in csv.DictReader(io.StringIO((base / "grades.csv").read_text()))}


def test_the_gradebook_holds_every_submission_as_nbgraders_export_reads_it(graded):
    base, rows, stats = graded
    assert "gradebook" in stats, stats.get("gradebook_error")
    assert not stats["gradebook"].problems, stats["gradebook"].problems
    exported = _export(base)
    assert set(exported) == {"alice", "bob", "carol"}
    ours = {s: sum(r.score for r in rows if r.student_id == s) for s in exported}
    possible = sum(r.max_score for r in rows if r.student_id == "alice")
    for student, row in exported.items():
        assert row["assignment"] == LESSON and float(row["max_score"]) == possible
        assert float(row["raw_score"]) == ours[student]
    assert ours["alice"] == possible - 2 and ours["bob"] == 0  # the written answer waits for a person
    # carol: 90 minutes late at 1 point per started hour
    assert float(exported["carol"]["late_submission_penalty"]) == 2
    assert float(exported["carol"]["score"]) == ours["carol"] - 2
    assert exported["carol"]["timestamp"].startswith("2026-12-01 10:30")


def test_written_answers_wait_for_manual_grading_and_flagged_work_for_review(graded):
    from nbgrader.api import Gradebook

    base, rows, _ = graded
    by = {(r.student_id, r.exercise): r for r in rows}
    assert by[("alice", WRITTEN)].status == Status.TO_GRADE and by[("bob", WRITTEN)].status == Status.FAILED
    with Gradebook(f"sqlite:///{base / 'gradebook.db'}") as gb:
        alice = gb.find_grade(WRITTEN, LESSON, LESSON, "alice")
        assert alice.auto_score is None and alice.needs_manual_grade and alice.max_score == 2
        bob = gb.find_grade(WRITTEN, LESSON, LESSON, "bob")
        assert bob.auto_score == 0 and not bob.needs_manual_grade
        assert gb.find_comment(WRITTEN, LESSON, LESSON, "bob").auto_comment == "No response."
        wrong = gb.find_comment("fill_l1_loss", LESSON, LESSON, "carol").auto_comment
        assert wrong.startswith("failed:") and by[("carol", "fill_l1_loss")].message[:40] in wrong
        assert gb.find_grade("fill_l1_loss_test", LESSON, LESSON, "alice").auto_score == 2
        assert gb.find_assignment(LESSON).duedate.isoformat(" ").startswith("2026-12-01 09:00")


def test_the_autograded_notebooks_show_results_never_hidden_tests(graded, course):
    base, *_ = graded
    path = base / "autograded" / "carol" / LESSON / f"{LESSON}.ipynb"
    nb = nbformat.read(path, as_version=4)
    text = path.read_text()
    assert "hidden=True" not in text and "BEGIN HIDDEN TESTS" not in text
    test = next(c for c in nb.cells if notebooks.grade_id(c) == "fill_l1_loss_test")
    assert test.outputs[0]["text"].startswith("[autograder] failed: 0 / 2 points")
    written = next(c for c in nb.cells if notebooks.grade_id(c) == WRITTEN)
    assert written.cell_type == "markdown" and written.source == "It is robust."
    assert (base / "autograded" / "carol" / LESSON / "timestamp.txt").exists()
    proc = subprocess.run([*NBGRADER, "generate_feedback", LESSON], cwd=base, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    page = (base / "feedback" / "carol" / LESSON / f"{LESSON}.html").read_text()
    assert "It is robust." in page and "hidden=True" not in page


def test_a_manual_grade_is_never_overwritten_and_reaches_the_lms_file(graded):
    from nbgrader.api import Gradebook

    base, rows, _ = graded
    url = f"sqlite:///{base / 'gradebook.db'}"
    with Gradebook(url) as gb:
        grade_row = gb.find_grade(WRITTEN, LESSON, LESSON, "alice")
        grade_row.manual_score = 1.5
        gb.db.commit()
    stats: dict = {}
    again = _grade(base, stats=stats, gradebook=base / "gradebook.db", late_policy=Policy.parse("1/hour"),
                   due_dates=base / "due.json")
    assert stats["reused"] == 3 and stats["graded"] == 0  # the journal: nothing regraded
    assert [(r.student_id, r.exercise, r.score) for r in again] == [(r.student_id, r.exercise, r.score) for r in rows]
    with Gradebook(url) as gb:
        assert gb.find_grade(WRITTEN, LESSON, LESSON, "alice").manual_score == 1.5
    assert float(_export(base)["alice"]["score"]) == sum(r.score for r in rows if r.student_id == "alice") + 1.5
    lms = list(csv.reader(io.StringIO((base / "out" / "lms.csv").read_text())))
    assert lms[0] == ["Student", "ID", "SIS User ID", "SIS Login ID", "Section", LESSON]
    assert lms[1][0].strip() == "Points Possible"
    alice = next(r for r in lms if r[0] == "alice")
    assert float(alice[5]) == sum(r.score for r in rows if r.student_id == "alice") + 1.5


def test_totals_mark_late_work_and_the_report_and_feedback_say_so(graded):
    base, rows, _ = graded
    out = base / "out"
    totals = {r["student_id"]: r for r in csv.DictReader(io.StringIO((out / "totals.csv").read_text()))}
    assert list(totals["carol"])[:5] == ["student_id", "lesson", "score", "max_score", "status"]
    assert totals["carol"]["late"] == "yes" and totals["carol"]["hours_late"] == "1.5"
    assert totals["carol"]["late_penalty"] == "2"
    assert float(totals["carol"]["final_score"]) == float(totals["carol"]["score"]) - 2
    assert totals["alice"]["late"] == "no" and totals["bob"]["late"] == "no"
    report = (out / "report.html").read_text()
    assert "Handed in late (1)" in report and "1 point(s) off per hour" in report and "to grade" in report
    page = (out / "feedback" / "carol" / f"{LESSON}.html").read_text()
    assert "Handed in late" in page and "2 point(s) were taken off" in page
    assert "Handed in late" not in (out / "feedback" / "alice" / f"{LESSON}.html").read_text()
