"""The student's path through two lessons, in the browser, ending in the autograder (checked in test_99_graded.py).

These tests come first so that the solution notebooks of the lesson tests run in the background meanwhile, and the
grading of the saved notebooks runs while the lesson tests use their widgets. Open the student version from
lessons/, type a wrong implementation into an exercise and see the self-check name the mistake, type a right one
and see it pass, fill in the other exercises, run the lesson to its graded widget, use the widget and paste the
line it shows into the answer cell, save; then grade the saved notebooks with ``python -m autograder grade`` and
find every exercise, the widget answer included, graded full marks. This proves that a widget answer survives save,
submit and a headless autograde.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
from playwright.sync_api import expect

from course_lib.checks import get_spec
from course_lib.dataloader import PREPARATION_STEPS, RANDOM_STEPS, explorer_training_steps

import student as S
from labharness import ART, GRADING, ROOT, STUDENT

SUBMISSIONS = ART / "submissions"
GRADED = ART / "graded"

WRONG = {
    # A batch left as two lists: the lesson's collate must stack.
    "01_dataloader": ("collate",
                      "def collate(items):\n"
                      "    xs, ys = zip(*items)\n"
                      "    return list(xs), list(ys)\n",
                      "you returned lists of tensors"),
    # COCO's x first, where numpy indexes [row, column].
    "05_bbox": ("coco_to_voc",
                "def coco_to_voc(bbox) -> np.ndarray:\n"
                "    x, y, w, h = bbox\n"
                "    return np.array([x, y, x + w - 1, y + h - 1])\n",
                "x and y are not swapped"),
}


def solution_code(lesson: str, grade_id: str) -> str:
    """What a student who got it right types: the solution cell without nbgrader's markers."""
    cells = json.loads((ROOT / "solutions" / lesson / f"{lesson}.ipynb").read_text())["cells"]
    cell = next(c for c in cells if c.get("metadata", {}).get("nbgrader", {}).get("grade_id") == grade_id)
    lines = "".join(cell["source"]).splitlines()
    kept = (line for line in lines if "### BEGIN SOLUTION" not in line and "### END SOLUTION" not in line)
    return "\n".join(kept) + "\n"


def exercise_ids(nb) -> list[str]:
    """The answer cells a student writes code in (written answers, Markdown cells for a person to grade, are left)."""
    return [c["metadata"]["nbgrader"]["grade_id"] for c in nb.cells_json
            if c.get("metadata", {}).get("nbgrader", {}).get("solution") and c.get("cell_type") == "code"]


def walk(nb, lesson: str, widget_cell: str, answer_id: str, use_widget, tick=lambda: None) -> None:
    """The path shared by both lessons; ``use_widget(widget)`` records an answer and returns nothing.

    ``tick()`` between steps lets the runner start the next solution notebooks in the background.
    """
    wrong_id, wrong_code, diagnosis = WRONG[lesson]
    for gid in exercise_ids(nb):
        if gid != answer_id:
            nb.type_into(nb.grade_index(gid), wrong_code if gid == wrong_id else solution_code(lesson, gid))
    k = nb.grade_index(wrong_id)
    nb.run_range(0, k + 1)                                   # up to the wrong exercise's self-check
    tick()
    expect(nb.output(k + 1)).to_contain_text(f"✗ {wrong_id}", timeout=S.TIMEOUT)
    expect(nb.output(k + 1)).to_contain_text(diagnosis)
    nb.type_into(k, solution_code(lesson, wrong_id))      # the fix
    nb.run_range(k, k + 1)
    expect(nb.output(k + 1)).to_contain_text(f"✓ {wrong_id}", timeout=S.TIMEOUT)
    w_index = nb.index(widget_cell)
    nb.run_range(k + 2, w_index)                            # on to the graded widget
    tick()
    nb.assert_no_errors()
    widget = nb.output(w_index).locator(".widget-vbox").first
    expect(widget).to_be_visible()
    use_widget(widget)
    line = widget.locator("code").filter(has_text=f"{answer_id} =").inner_text().strip()
    a = nb.grade_index(answer_id)
    nb.type_into(a, line + "\n")                            # paste the line the widget shows
    nb.run_range(a, a + 1)
    expect(nb.output(a + 1)).to_contain_text(f"✓ {answer_id}", timeout=S.TIMEOUT)
    nb.assert_no_errors()
    nb.save()
    dest = SUBMISSIONS / STUDENT / lesson / f"{lesson}.ipynb"
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(nb.path, dest)
    nb.shot(widget, f"{lesson}-student-widget")


@pytest.fixture(scope="module", autouse=True)
def _fresh_submissions():
    shutil.rmtree(SUBMISSIONS, ignore_errors=True)
    shutil.rmtree(GRADED, ignore_errors=True)


def test_student_01_dataloader(open_notebook, runner):
    lesson = "01_dataloader"
    nb = open_notebook(ROOT / "lessons" / lesson / f"{lesson}.ipynb", "student")

    training = explorer_training_steps(STUDENT)  # the kernel draws this student's pipeline (COURSE_STUDENT)

    def use(w):
        for step in (s for s in training if s in RANDOM_STEPS):
            S.click_checkbox(S.valid_checkbox(w, step), False)
        for step in ("Resize", "CenterCrop"):
            S.click_checkbox(S.valid_checkbox(w, step), True)
        S.expect_text(w, "✓ a correct validation pipeline")
        S.click(w, "Record")
        answer = ("Resize", "CenterCrop", *[s for s in PREPARATION_STEPS if s in training], "ToTensor", "Normalize")
        S.expect_text(w, f"valid_pipeline = {answer!r}")

    walk(nb, lesson, "explorer = AugmentationExplorer(", "valid_pipeline", use, runner.pump)


def test_student_05_bbox(open_notebook, runner):
    lesson = "05_bbox"
    nb = open_notebook(ROOT / "lessons" / lesson / f"{lesson}.ipynb", "student")

    box = tuple(get_spec("borderline_box").answer_for(STUDENT))

    def use(w):
        for label, value in zip(("top", "left", "bottom", "right"), box):
            S.type_slider(w, label, value)
        S.expect_text(w, "PASCAL: found, just")
        S.click(w, "Record")
        S.expect_text(w, f"borderline_box = {box}")

    walk(nb, lesson, "fitter = BoxFitter()", "borderline_box", use, runner.pump)


def test_submit_for_grading():
    """Start ``python -m autograder grade`` on the saved notebooks; test_99_graded.py waits for it and checks."""
    lessons = sorted(p.name for p in (SUBMISSIONS / STUDENT).glob("*")) if SUBMISSIONS.exists() else []
    if not lessons:
        pytest.skip("no notebook was saved by the student tests above")
    log = open(ART / "grading.log", "w")
    GRADING["lessons"] = lessons
    GRADING["proc"] = subprocess.Popen(
        [sys.executable, "-m", "autograder", "grade", str(SUBMISSIONS), "--out", str(GRADED), "--workers", "2"],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    GRADING["log"] = ART / "grading.log"
