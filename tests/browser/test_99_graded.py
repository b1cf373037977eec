"""The notebooks that test_00_student_path.py saved, graded headless by ``python -m autograder grade``: every
exercise passes, the widget answers included, so a widget answer survives save, submit and autograde."""
import csv

import pytest

from autograder import notebooks

from labharness import GRADING
from test_00_student_path import GRADED, STUDENT

WIDGET_ANSWERS = {"01_dataloader": "valid_pipeline", "05_bbox": "borderline_box"}


def test_saved_notebooks_are_graded():
    if "proc" not in GRADING:
        pytest.skip("nothing was submitted for grading (run test_00_student_path.py in the same session)")
    rc = GRADING["proc"].wait(timeout=900)
    assert rc == 0, f"autograder grade exited {rc}: see {GRADING['log']}"
    rows = list(csv.DictReader(open(GRADED / "grades.csv")))
    for lesson in GRADING["lessons"]:
        mine = {r["exercise"]: r for r in rows if r["lesson"] == lesson and r["student_id"] == STUDENT}
        answer_id = WIDGET_ANSWERS[lesson]
        assert answer_id in mine, f"{lesson}: the widget answer was not graded: {sorted(mine)}"
        got = mine[answer_id]
        assert got["status"] == "passed" and float(got["score"]) == float(got["max_score"]) > 0, got
        # The written answers wait for a person (this student left them blank); every other exercise keeps its points.
        written = {w.id for w in notebooks.written(notebooks.read(notebooks.source_path(lesson)))}
        lost = {k: r for k, r in mine.items() if float(r["score"]) < float(r["max_score"]) and k not in written}
        assert not lost, f"{lesson}: points lost in the saved notebook: {lost}"
    print(f"\ngraded {', '.join(GRADING['lessons'])}: see {GRADED / 'grades.csv'} and {GRADED / 'feedback'}")
