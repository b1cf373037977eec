"""What every exercise of the course keeps, written once: test_checks.py and test_release.py run it over the whole
registry and every lesson, test_new_lesson.py over a toy lesson it builds."""
from __future__ import annotations

import inspect

from autograder import notebooks
from course_lib import checks


class Undiagnosed(AssertionError):
    """A known mistake that fails its check, but without its own message."""


def assert_diagnosed(spec: checks.Spec, mistake: checks.Mistake) -> None:
    """The check run on a known mistake (the hidden run: the spec's own cases, as many as the grader uses) fails
    with that mistake's message, so a student who makes it is told which one it is."""
    result = checks.run_check(spec, mistake.impl, hidden=True)
    assert not result.passed, f"{spec.id}: the known mistake {mistake.name!r} passes its check"
    assert result.message.startswith(f"✗ {spec.id}:"), result.message
    # A function's diagnosis follows the judge's sentence; an answer spec's judge must say it itself.
    want = f"Likely mistake: {mistake.message}" if spec.kind == "function" else mistake.message
    if want not in result.message:
        raise Undiagnosed(f"{spec.id}: the known mistake {mistake.name!r} is not named: {result.message}")


def assert_one_exercise_one_id(lesson: str) -> None:
    """Solution cell <id>, then a self-check of <id>, then test cell <id>_test calling the same spec; the reference
    lives in course_lib/<topic>.py under the same name, typed and documented."""
    source = notebooks.read(notebooks.source_path(lesson))
    cells = source.cells
    registry = checks.registry()
    assert notebooks.exercises(source), f"{lesson} has no graded exercise"
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
            ref = getattr(checks.topic_module(spec), ex.id)
            assert spec.reference in (None, ref) and ref.__name__ == ex.id
            assert ref.__doc__, f"{ex.id} reference needs a docstring giving shapes"
            assert inspect.signature(ref).return_annotation is not inspect.Signature.empty


def assert_release_hides_solutions(lesson: str) -> None:
    """The student version: every answer a stub, no hidden test, no output."""
    text = notebooks.release_path(lesson).read_text()
    assert "BEGIN SOLUTION" not in text and "BEGIN HIDDEN TESTS" not in text and "hidden=True" not in text
    nb = notebooks.read(notebooks.release_path(lesson))
    assert any(notebooks.is_solution(c) for c in nb.cells), f"{lesson}'s release has no answer cell"
    for cell in nb.cells:
        assert cell.get("outputs", []) == []
        if notebooks.is_solution(cell) and cell.cell_type == "code":
            assert "raise NotImplementedError()" in cell.source
