"""lessons/ is generated from solutions/, and every exercise id ties its parts together."""
import subprocess
import sys
from pathlib import Path

import pytest

from autograder import notebooks
from autograder.release import render, student_version

import contracts
from contracts import assert_one_exercise_one_id, assert_release_hides_solutions

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
    assert_release_hides_solutions(lesson)


@pytest.mark.parametrize("lesson", LESSONS)
def test_one_exercise_one_id(lesson):
    assert_one_exercise_one_id(lesson)


@pytest.mark.parametrize("lesson", LESSONS)
def test_each_exercise_states_its_contract(lesson):
    contracts.assert_contract_in_text(lesson)


@pytest.mark.parametrize("lesson", LESSONS)
def test_notebooks_never_copy_course_lib(lesson):
    text = notebooks.source_path(lesson).read_text()
    assert "from course_lib" in text
    assert "import *" not in text
