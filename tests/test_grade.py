"""`python -m autograder grade` on a small class: right, untouched, one mistake, broken, missing."""
import json
import re
import shutil
import subprocess
import sys

import nbformat
import pytest

from autograder import grade, notebooks

from grading import ROOT, answered, capstone, grade_class, solution, unanswered

LESSON = "06_fill_level"
SEED_LOSS = "def fill_l1_loss(pred, target):\n    return torch.abs(pred - target).mean()\n"
# The class is graded as if the machine had GPUs 7 and 9; three students print what their kernel was given.
FAKE_GPUS = "7,9"
SHOW_GPU = 'import os\nprint("visible GPUs: [" + os.environ.get("CUDA_VISIBLE_DEVICES", "none") + "]")'


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    students = {"alice": _showing_gpu(solution(LESSON)),
                "bob": _showing_gpu(notebooks.read(notebooks.release_path(LESSON))),
                # the capstone left unanswered, as in tests/grading.py's lesson_class: the class trains it once
                "carol": _showing_gpu(unanswered(answered(LESSON, "fill_l1_loss", SEED_LOSS), LESSON,
                                                 capstone(LESSON))),
                "dave": json.dumps(solution(LESSON))[:5000].encode(),  # a notebook cut off mid-upload
                "erin": None}  # an empty folder
    g = grade_class(tmp_path_factory, LESSON, students, "--workers", "2", env={"CUDA_VISIBLE_DEVICES": FAKE_GPUS})
    return g, g.out, g.by, g.rows


def _showing_gpu(nb):
    nb.cells.append(nbformat.v4.new_code_cell(SHOW_GPU))
    return nb


def _points(kind="exercises") -> float:
    """The lesson's auto-graded points (``exercises``) or the points of its written answers (``written``)."""
    source = notebooks.read(notebooks.source_path(LESSON))
    return sum(e.points for e in getattr(notebooks, kind)(source))


def _total(by, student):
    return sum(float(r["score"]) for r in by[student].values())


def test_grading_completes_with_exit_0(graded):
    g, out, by, rows = graded
    assert g.returncode == 0, g.stderr[-3000:]
    assert "graded 5 submission(s)" in g.stdout
    assert list(rows[0].keys()) == ["student_id", "lesson", "exercise", "score", "max_score", "status"]
    source = notebooks.read(notebooks.source_path(LESSON))
    exercises = [e.id for e in notebooks.exercises(source)] + [w.id for w in notebooks.written(source)]
    for student in ("alice", "bob", "carol", "dave", "erin"):
        assert sorted(by[student]) == sorted(exercises)


def test_solution_gets_full_marks(graded):
    _, _, by, _ = graded
    written = {w.id for w in notebooks.written(notebooks.read(notebooks.source_path(LESSON)))}
    assert all(r["status"] == "passed" and r["score"] == r["max_score"] for k, r in by["alice"].items()
               if k not in written)
    assert all(by["alice"][k]["status"] == "to grade" for k in written)  # a person grades written answers
    assert _total(by, "alice") == _points()


def test_untouched_student_notebook_gets_zero_and_feedback(graded):
    _, out, by, _ = graded
    assert _total(by, "bob") == 0
    assert {r["status"] for r in by["bob"].values()} <= {"failed", "error"}
    page = (out / "feedback" / "bob" / f"{LESSON}.html").read_text()
    assert f"0 / {_points() + _points('written'):g} points" in page and "not implemented yet" in page
    # The cells that use an untouched stub are not run for the page (they would only raise): each says so.
    from autograder.judge import HELD_BECAUSE

    assert HELD_BECAUSE["stub"] in page


def test_one_wrong_function_loses_exactly_its_points(graded):
    _, out, by, _ = graded
    wrong = by["carol"]["fill_l1_loss"]
    assert wrong["status"] == "failed" and float(wrong["score"]) == 0 and float(wrong["max_score"]) == 2
    assert by["carol"][capstone(LESSON)]["status"] == "failed"  # left unanswered
    assert _total(by, "carol") == _points() - 2 - float(by["carol"][capstone(LESSON)]["max_score"])
    page = (out / "feedback" / "carol" / f"{LESSON}.html").read_text()
    assert "broadcasts" in page  # the diagnosis reaches the student


def test_malformed_and_missing_notebooks_are_reported_not_fatal(graded):
    _, out, by, _ = graded
    for student, status, words in (("dave", "error", "not a readable notebook"),
                                   ("erin", "missing", "expected 06_fill_level.ipynb")):
        assert all(r["status"] == status and float(r["score"]) == 0 for r in by[student].values())
        assert words in (out / "feedback" / student / f"{LESSON}.html").read_text()


def test_each_worker_pins_one_gpu_for_its_kernels(graded):
    """With GPUs 7 and 9, a worker gives all its kernels one of them, and the two workers take different ones.

    No GPU is needed: the kernels only report the CUDA_VISIBLE_DEVICES they were started with.
    """
    _, out, _, _ = graded
    seen = {}
    for student in ("alice", "bob", "carol"):
        page = (out / "feedback" / student / f"{LESSON}.html").read_text()
        seen[student] = re.findall(r"visible GPUs: \[(\w+)\]", page)
    assert all(len(v) == 1 and v[0] in FAKE_GPUS.split(",") for v in seen.values()), seen
    # alice and bob are the first two submissions, graded at once by the two workers.
    assert {seen["alice"][0], seen["bob"][0]} == set(FAKE_GPUS.split(",")), seen


def test_feedback_pages_show_figures(graded):
    _, out, _, _ = graded
    page = (out / "feedback" / "alice" / f"{LESSON}.html").read_text()
    assert f"{_points():g} / {_points() + _points('written'):g} points" in page and "data:image/png;base64" in page


# ---- the restore step on its own: students cannot edit tests or lose graded cells

def _source_release():
    return notebooks.read(notebooks.source_path(LESSON)), notebooks.read(notebooks.release_path(LESSON))


def test_restore_puts_back_edited_tests_and_keeps_answers():
    source, release = _source_release()
    student = nbformat.from_dict(json.loads(json.dumps(release)))
    for cell in student.cells:
        if notebooks.grade_id(cell) == "fill_l1_loss_test":
            cell.source = "pass  # tests removed"
        if notebooks.grade_id(cell) == "fill_l1_loss":
            cell.source = "def fill_l1_loss(p, t): return 'mine'"
            cell.metadata["nbgrader"]["points"] = 100
    fixed = grade.restore(student, source, release)
    cells = {notebooks.grade_id(c): c for c in fixed.cells if notebooks.grade_id(c)}
    assert "check('fill_l1_loss', fill_l1_loss, hidden=True)" in cells["fill_l1_loss_test"].source
    assert cells["fill_l1_loss"].source == "def fill_l1_loss(p, t): return 'mine'"
    assert "points" not in cells["fill_l1_loss"].metadata["nbgrader"]


def test_restore_reinserts_deleted_cells_in_order():
    source, release = _source_release()
    student = nbformat.from_dict(json.loads(json.dumps(release)))
    deleted = ("setup", "load_batch", "load_batch_test")
    student.cells = [c for c in student.cells if notebooks.grade_id(c) not in deleted]
    fixed = grade.restore(student, source, release)
    order = [notebooks.grade_id(c) for c in fixed.cells if notebooks.grade_id(c)]
    assert order == [notebooks.grade_id(c) for c in source.cells if notebooks.grade_id(c)]
    stub = next(c for c in fixed.cells if notebooks.grade_id(c) == "load_batch")
    assert "NotImplementedError" in stub.source


def test_discover_reports_unknown_lessons_and_renamed_copies(tmp_path, capsys):
    (tmp_path / "zed" / "99_nope").mkdir(parents=True)
    (tmp_path / "amy" / LESSON).mkdir(parents=True)
    shutil.copy(notebooks.release_path(LESSON), tmp_path / "amy" / LESSON / f"{LESSON} (1).ipynb")
    subs = grade.discover(tmp_path)
    assert [(s.student_id, s.path.name) for s in subs] == [("amy", f"{LESSON} (1).ipynb")]
    assert "99_nope" in capsys.readouterr().out


def test_cli_rejects_a_missing_folder(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "autograder", "grade", str(tmp_path / "nope"), "--out", str(tmp_path)],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2 and "is not a folder" in proc.stderr


def test_a_widget_answer_is_judged_against_the_students_own_target_and_a_classmates_is_flagged():
    from autograder import judge
    from course_lib.checks import Spec
    from course_lib.common import student_seed

    spec = Spec("toy_pick", reference=None, kind="answer",
                target=lambda student: student_seed(student, "toy_pick") % 1000,
                judge=lambda case, got, want: None if got == want else f"not the one ({got})")
    ada, bea = spec.target("ada"), spec.target("bea")
    assert ada != bea  # two students, two right answers

    def notebook(value):
        nb = nbformat.v4.new_notebook()
        cell = nbformat.v4.new_code_cell(f"pick = {value}")
        cell.metadata["nbgrader"] = {"grade_id": "toy_pick", "solution": True, "grade": False}
        nb.cells = [cell]
        return nb

    task = judge.Task("toy_pick", "pick")
    assert judge.judge_answer(task, spec, notebook(ada), "ada", ("ada", "bea")).status == "passed"
    copied = judge.judge_answer(task, spec, notebook(bea), "ada", ("ada", "bea"))
    assert copied.status == "flagged" and copied.mistake == "answer_of:bea" and copied.share == 0
    wrong = judge.judge_answer(task, spec, notebook(-1), "ada", ("ada", "bea"))
    assert wrong.status == "failed" and "not the one" in wrong.message
