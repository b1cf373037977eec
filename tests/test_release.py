"""lessons/ is generated from solutions/, and every exercise id ties its parts together."""
import inspect
import subprocess
import sys
from pathlib import Path

import pytest

from autograder import notebooks
from autograder.release import render, student_version
from course_lib import checks

ROOT = Path(__file__).resolve().parent.parent
LESSONS = notebooks.lessons()


def test_there_are_lessons():
    assert "06_fill_level" in LESSONS


@pytest.mark.parametrize("lesson", LESSONS)
def test_committed_lessons_are_not_stale(lesson):
    want = render(student_version(notebooks.read(notebooks.source_path(lesson))))
    have = notebooks.release_path(lesson).read_text()
    assert have == want, f"lessons/{lesson} is stale: run `python -m autograder release {lesson}` and commit"


def test_release_check_cli_detects_staleness(tmp_path, monkeypatch):
    assert subprocess.run([sys.executable, "-m", "autograder", "release", "--check"], cwd=ROOT).returncode == 0
    from autograder import release

    target = tmp_path / "lessons" / "06_fill_level" / "06_fill_level.ipynb"
    monkeypatch.setattr(notebooks, "release_path", lambda lesson: target)
    assert release.release("06_fill_level", check=True) is False
    release.release("06_fill_level")
    assert release.release("06_fill_level", check=True) is True


@pytest.mark.parametrize("lesson", LESSONS)
def test_student_version_hides_solutions_and_hidden_tests(lesson):
    nb = notebooks.read(notebooks.release_path(lesson))
    text = notebooks.release_path(lesson).read_text()
    assert "BEGIN SOLUTION" not in text and "BEGIN HIDDEN TESTS" not in text and "hidden=True" not in text
    for cell in nb.cells:
        assert cell.get("outputs", []) == []
        if notebooks.is_solution(cell) and cell.cell_type == "code":
            assert "raise NotImplementedError()" in cell.source


@pytest.mark.parametrize("lesson", LESSONS)
def test_one_exercise_one_id(lesson):
    """Solution cell <id>, then a self-check of <id>, then test cell <id>_test calling the same spec."""
    source = notebooks.read(notebooks.source_path(lesson))
    cells = source.cells
    registry = checks.registry()
    for ex in notebooks.exercises(source):
        assert ex.id in registry, f"{ex.id} has no check spec in course_lib"
        assert ex.points > 0
        sol = next(i for i, c in enumerate(cells) if notebooks.grade_id(c) == ex.id)
        assert notebooks.is_solution(cells[sol])
        assert cells[sol + 1].source.strip().endswith(f"check({ex.id!r}, {ex.id})"), f"self-check after {ex.id}"
        assert notebooks.grade_id(cells[sol + 2]) == ex.test_id
        assert f"check({ex.id!r}, {ex.id}, hidden=True)" in cells[sol + 2].source
        spec = registry[ex.id]
        if spec.kind == "function":
            # The reference lives in course_lib/<topic>.py under the same name, typed and documented.
            ref = getattr(checks.topic_module(spec), ex.id)
            assert spec.reference in (None, ref) and ref.__name__ == ex.id
            assert ref.__doc__, f"{ex.id} reference needs a docstring giving shapes"
            assert inspect.signature(ref).return_annotation is not inspect.Signature.empty


@pytest.mark.parametrize("lesson", LESSONS)
def test_notebooks_never_copy_course_lib(lesson):
    text = notebooks.source_path(lesson).read_text()
    assert "from course_lib" in text
    assert "import *" not in text
