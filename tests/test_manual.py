"""Written answers (nbgrader's "manually graded answer" cells): released as a stub, left to a person to grade."""
import copy

import nbformat
import pytest

from autograder import notebooks
from autograder.grade import Row, score, written_rows
from autograder.read import Submission
from autograder.release import student_version
from autograder.report import render
from autograder.status import Status

LESSON = "06_fill_level"
MODEL = "A loss that averages absolute errors is steadier against a few mislabelled images."


def written_cell(name: str = "written_why_l1", points: float = 2) -> nbformat.NotebookNode:
    return nbformat.v4.new_markdown_cell(
        f"Why this loss?\n\n<!-- BEGIN SOLUTION -->\n{MODEL}\n<!-- END SOLUTION -->\n",
        metadata={"nbgrader": {"grade": True, "solution": True, "locked": False, "points": points,
                               "grade_id": name, "schema_version": 3}})


@pytest.fixture(scope="module")
def source():
    nb = notebooks.read(notebooks.source_path(LESSON))
    nb.cells.insert(len(nb.cells) - 1, written_cell())
    return nb


def test_written_answers_are_not_auto_graded_exercises(source):
    assert "written_why_l1" not in {e.id for e in notebooks.exercises(source)}
    assert notebooks.Written("written_why_l1", 2.0) in notebooks.written(source)
    assert all(w.id.startswith("written_") for w in notebooks.written(source))


def test_release_puts_a_stub_in_place_of_the_model_answer_and_keeps_it_editable(source):
    rel = student_version(source)
    cell = next(c for c in rel.cells if notebooks.grade_id(c) == "written_why_l1")
    assert cell.cell_type == "markdown"
    assert MODEL not in cell.source and "BEGIN SOLUTION" not in cell.source
    assert notebooks.TEXT_STUB in cell.source and cell.source.startswith("Why this loss?")
    assert cell.metadata.get("editable", True) is True


@pytest.mark.parametrize("lesson", notebooks.lessons())
def test_released_lessons_carry_no_nbval_markers(lesson):
    text = notebooks.release_path(lesson).read_text()
    assert "NBVAL_" not in text


def test_a_cell_is_recognised_with_or_without_its_nbval_marker():
    assert notebooks.normalized("# NBVAL_CHECK_OUTPUT\nprint(1)\n") == notebooks.normalized("print(1)")
    assert notebooks.strip_nbval("# NBVAL_CHECK_OUTPUT\nx = 1  # NBVAL_ here stays") == "x = 1  # NBVAL_ here stays"


def _answer(source, text):
    nb = copy.deepcopy(source)
    for cell in nb.cells:
        if notebooks.grade_id(cell) == "written_why_l1":
            cell.source = text
    return nb


def test_a_written_answer_waits_for_a_person_and_an_untouched_one_scores_zero(source):
    sub = Submission("amy", LESSON, None)
    def mine(rows):
        return [r for r in rows if r.exercise == "written_why_l1"]

    waiting = mine(written_rows(sub, source, _answer(source, "Because it is robust.")))
    assert [(r.exercise, r.score, r.max_score, r.status) for r in waiting] == [
        ("written_why_l1", 0.0, 2.0, Status.TO_GRADE)]
    untouched = mine(written_rows(sub, source, _answer(source, f"Why this loss?\n\n{notebooks.TEXT_STUB}\n")))
    assert untouched[0].status == Status.FAILED and "no answer" in untouched[0].message
    rows = score(sub, source, {}, _answer(source, "Because."))
    assert len(mine(rows)) == 1
    assert len(rows) == len(notebooks.exercises(source)) + len(notebooks.written(source))
    assert [r.exercise for r in rows][-len(notebooks.written(source)):] == [w.id for w in notebooks.written(source)]


def test_the_report_shows_written_answers_as_to_grade():
    rows = [Row("amy", LESSON, "written_why_l1", 0.0, 2.0, str(Status.TO_GRADE), "a person grades it")]
    page = render([{"student_id": "amy", "lesson": LESSON, "status": "ok",
                    "rows": [r.__dict__ for r in rows]}])
    assert "1/1 to grade" in page


def test_restore_keeps_a_written_answer_as_text(source):
    from autograder.restore import restore

    release = student_version(source)
    student = _answer(release, "It is robust to outliers.")
    restored = restore(student, source, release)
    cell = next(c for c in restored.nb.cells if notebooks.grade_id(c) == "written_why_l1")
    assert cell.cell_type == "markdown" and cell.source == "It is robust to outliers."
    assert not any("written_why_l1" in change for change in restored.changes)


def test_the_stub_matches_nbgraders_release(source):
    cell = next(c for c in source.cells if notebooks.grade_id(c) == "written_why_l1")
    released = next(c for c in student_version(source).cells if notebooks.grade_id(c) == "written_why_l1")
    assert notebooks.stub_of(cell.source) == released.source
    assert not notebooks.answered(released, cell)
    assert notebooks.answered(nbformat.v4.new_markdown_cell(released.source + "\nBecause."), cell)
