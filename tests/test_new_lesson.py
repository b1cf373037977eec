"""Adding a lesson, step by step as docs/architecture.md lists them: a toy seventh lesson, built in a temporary
folder, is found by spec discovery, released, graded and held to the contracts every lesson keeps.

The toy's modules live outside the repository: their folder is put on ``course_lib.__path__`` (the judge builds
the judging process's view of course_lib from every folder there), and ``SOLUTIONS``/``LESSONS`` point at a copy
of the course holding the toy beside the real lessons. Everything is put back afterwards.
"""
import sys
import textwrap

import nbformat
import pytest

import course_lib
from autograder import grade, notebooks, release
from course_lib import checks

from contracts import assert_diagnosed, assert_one_exercise_one_id, assert_release_hides_solutions

LESSON = "07_toy"

# Step 1: the topic module, course_lib/<topic>.py, with the reference: typed, documented, named as the exercise.
TOY = '''
"""Lesson 07: a toy."""
import torch


def double(x: torch.Tensor) -> torch.Tensor:
    """``x`` times two: the same shape, dtype and device as ``x``."""
    return x * 2


def fit_line(x: torch.Tensor, y: torch.Tensor, x_new: torch.Tensor) -> torch.Tensor:
    """The least-squares line through ``(x, y)`` (both ``[N]``), evaluated at ``x_new`` (``[M]``): ``[M]``."""
    a = ((x - x.mean()) * (y - y.mean())).sum() / ((x - x.mean()) ** 2).sum()
    return y.mean() + a * (x_new - x.mean())
'''

# Step 2: its specs, course_lib/<topic>_checks.py: cases, and the mistakes students make with their messages.
TOY_CHECKS = '''
"""Check specs for lesson 07_toy."""
import torch

from course_lib import toy
from course_lib.checks import Bands, Case, Clause, Mistake, Spec


def _cases(rng, device, n):
    sizes = rng.integers(1, 6, n)
    return [Case((torch.from_numpy(rng.normal(0, 3, int(k))).float().to(device),), {}, f"{int(k)} numbers")
            for k in sizes]


def _square(x):
    return x * x


def _plus_two(x):
    return x + 2


def _line_cases(rng, device, n):
    x, x_new = (torch.from_numpy(rng.uniform(-5, 5, k)).float() for k in (40, 20))
    noise = torch.from_numpy(rng.normal(0, 0.05, 60)).float()
    y = 3 * torch.cat([x, x_new]) + 1 + noise
    # The labels of x_new are the held-out set: the judge has them, the student's process never does.
    return [Case((x, y[:40], x_new), {}, "40 points, 20 held out", secret=y[40:])]


def _mean_line(x, y, x_new):
    return torch.full_like(x_new, float(y.mean()))


def _mae(case, got):
    return float((got - case.secret).abs().mean())


SPECS = [Spec(id="double", reference=toy.double, cases=_cases,
              contract=(Clause("exact", "Return x times two."),),
              mistakes=[Mistake("square", _square, "you squared x: double it, x * 2."),
                        Mistake("plus_two", _plus_two, "you added 2: double means times 2.")]),
         Spec(id="fit_line", reference=toy.fit_line, cases=_line_cases, n_visible=1, n_hidden=1,
              contract=(Clause("behaviour", "Predict y at x_new."),),
              judge=lambda case, got, expected: None if isinstance(got, torch.Tensor)
              and got.shape == case.args[2].shape else "return one prediction per point of x_new",
              bands=Bands("mean absolute error", False, {p: (0.1, 1.0, 3.0) for p in ("ci", "cpu", "gpu")},
                          (1.0, 0.5, 0.25)),
              measure=_mae, seconds={"ci": 5, "cpu": 5, "gpu": 5},
              mistakes=[Mistake("mean", _mean_line, "you predicted the mean of y: fit the slope too.")],
              diagnose=lambda case, got: next((m for m in SPECS[1].mistakes if float(got.std()) < 1e-6), None))]
'''

SQUARE = "def double(x):\n    return x * x\n"
ROUGH_LINE = "def fit_line(x, y, x_new):\n    return 2.8 * x_new + 1\n"
# Looks in its own process for the held-out labels, which the grader kept.
PEEKING_LINE = """def fit_line(x, y, x_new):
    import gc
    from course_lib.checks import Case
    for o in gc.get_objects():
        if isinstance(o, Case) and o.secret is not None:
            return o.secret
    return x_new * 0
"""


def _cell(source: str, **nbgrader) -> nbformat.NotebookNode:
    cell = nbformat.v4.new_code_cell(source)
    if nbgrader:
        cell.metadata["nbgrader"] = {"schema_version": 3, "task": False, **nbgrader}
    return cell


def _source_notebook() -> nbformat.NotebookNode:
    """Step 3: solutions/07_toy/07_toy.ipynb: the setup, then per exercise its answer cell (the solution between
    BEGIN/END SOLUTION), its self-check and its test cell, one hidden line that calls the same spec."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"display_name": "Vision Workbook (Python 3.11)", "language": "python",
                                 "name": "vision-workbook"}
    nb.cells = [
        nbformat.v4.new_markdown_cell("# Lesson 7 · A toy"),
        _cell("import torch\n\nfrom course_lib import toy\nfrom course_lib.checks import check",
              grade_id="setup", grade=False, solution=False, locked=True),
        _cell("def double(x: torch.Tensor) -> torch.Tensor:\n    ### BEGIN SOLUTION\n    return x * 2\n"
              "    ### END SOLUTION", grade_id="double", grade=False, solution=True, locked=False),
        _cell("check('double', double)"),
        _cell("# Hidden tests: double on more random cases.\n### BEGIN HIDDEN TESTS\n"
              "check('double', double, hidden=True)\n### END HIDDEN TESTS",
              grade_id="double_test", grade=True, solution=False, locked=True, points=2),
        nbformat.v4.new_markdown_cell("## Capstone\nPredict y at x_new."),
        _cell("def fit_line(x, y, x_new):\n    ### BEGIN SOLUTION\n"
              "    a = ((x - x.mean()) * (y - y.mean())).sum() / ((x - x.mean()) ** 2).sum()\n"
              "    return y.mean() + a * (x_new - x.mean())\n"
              "    ### END SOLUTION", grade_id="fit_line", grade=False, solution=True, locked=False),
        _cell("check('fit_line', fit_line)"),
        _cell("### BEGIN HIDDEN TESTS\ncheck('fit_line', fit_line, hidden=True)\n### END HIDDEN TESTS",
              grade_id="fit_line_test", grade=True, solution=False, locked=True, points=4),
    ]
    return nb


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """The toy lesson in place: its modules on course_lib's path, the course folders holding it; undone after."""
    base = tmp_path_factory.mktemp("toy")
    modules = base / "modules"
    modules.mkdir()
    (modules / "toy.py").write_text(textwrap.dedent(TOY).lstrip())
    (modules / "toy_checks.py").write_text(textwrap.dedent(TOY_CHECKS).lstrip())
    source = base / "solutions" / LESSON / f"{LESSON}.ipynb"
    source.parent.mkdir(parents=True)
    nbformat.write(_source_notebook(), source)
    (base / "lessons").mkdir()
    for lesson in notebooks.lessons():  # the real lessons beside it, as they are
        (base / "solutions" / lesson).symlink_to(notebooks.SOLUTIONS / lesson)
        (base / "lessons" / lesson).symlink_to(notebooks.LESSONS / lesson)
    saved = checks._registry
    mp = pytest.MonkeyPatch()
    mp.setattr(notebooks, "SOLUTIONS", base / "solutions")
    mp.setattr(notebooks, "LESSONS", base / "lessons")
    course_lib.__path__.append(str(modules))
    checks._registry = None  # discovery runs again, now with the toy's folder
    try:
        yield base
    finally:
        course_lib.__path__.remove(str(modules))
        for name in ("toy", "toy_checks"):
            sys.modules.pop(f"course_lib.{name}", None)
            if hasattr(course_lib, name):
                delattr(course_lib, name)
        checks._registry = saved
        mp.undo()


def test_discovery_finds_the_new_spec(toy):
    assert "course_lib.toy_checks" in checks.spec_modules()
    spec = checks.get_spec("double")
    assert spec.module == "course_lib.toy_checks" and checks.topic_module(spec).double is spec.reference
    assert LESSON in notebooks.lessons()
    assert "fill_l1_loss" in checks.registry()  # the course's own specs are still there


def test_release_writes_the_student_version(toy):
    release.release(LESSON)  # Step 4: `python -m autograder release 07_toy`
    path = notebooks.release_path(LESSON)
    assert path.is_relative_to(toy) and release.release(LESSON, check=True)
    answer = next(c for c in notebooks.read(path).cells if notebooks.grade_id(c) == "double")
    assert "x * 2" not in answer.source and "raise NotImplementedError()" in answer.source
    assert_release_hides_solutions(LESSON)


def test_the_contracts_of_every_lesson_hold(toy):
    """Step 5: the registry-wide tests (test_release.py, test_checks.py) over the new lesson."""
    assert_one_exercise_one_id(LESSON)
    spec = checks.get_spec("double")
    for hidden in (False, True):
        assert checks.run_check(spec, spec.reference, hidden=hidden).passed
    assert [m.name for m in spec.mistakes] == ["square", "plus_two"]
    for mistake in spec.mistakes:
        assert_diagnosed(spec, mistake)
    capstone = checks.get_spec("fit_line")
    top = checks.run_check(capstone, capstone.reference, hidden=True)
    assert top.passed and top.share == 1.0 and "mean absolute error" in top.message, top.message
    low = checks.run_check(capstone, capstone.mistakes[0].impl, hidden=True)
    assert not low.passed and low.share == 0.0 and low.mistake == "mean", low.message


def test_grading_gives_full_marks_nothing_and_the_mistakes_message(toy, tmp_path):
    """Step 6: grade the solution, the student version and a known mistake."""
    release.release(LESSON)
    subs = tmp_path / "subs"
    students = {"alice": notebooks.read(notebooks.source_path(LESSON)),
                "bob": notebooks.read(notebooks.release_path(LESSON)),
                "carol": notebooks.read(notebooks.source_path(LESSON)),
                "dan": notebooks.read(notebooks.source_path(LESSON)),
                "erin": notebooks.read(notebooks.source_path(LESSON))}
    next(c for c in students["carol"].cells if notebooks.grade_id(c) == "double").source = SQUARE
    next(c for c in students["dan"].cells if notebooks.grade_id(c) == "fit_line").source = ROUGH_LINE
    next(c for c in students["erin"].cells if notebooks.grade_id(c) == "fit_line").source = PEEKING_LINE
    for student, nb in students.items():
        (subs / student / LESSON).mkdir(parents=True)
        nbformat.write(nb, subs / student / LESSON / f"{LESSON}.ipynb")
    # The grade comes from the judge alone; the notebook run (the feedback page) is left out: the kernels' view
    # of course_lib is the repository's, without the toy's temporary folder.
    opts = grade.Options(profile="ci", run_notebook=False)
    rows = grade.grade_all(subs, tmp_path / "out", workers=1, lessons=[LESSON], opts=opts, progress=False)
    by = {(r.student_id, r.exercise): r for r in rows}
    assert set(by) == {(s, ex) for s in students for ex in ("double", "fit_line")}
    alice, bob, carol = by["alice", "double"], by["bob", "double"], by["carol", "double"]
    assert (alice.status, alice.score, alice.max_score) == ("passed", 2, 2), alice.message
    assert bob.score == 0 and "not implemented yet" in bob.message
    assert (carol.status, carol.score) == ("failed", 0)
    assert "Likely mistake: you squared x: double it, x * 2." in carol.message
    # The capstone: full points for the fit, a band's share for a rough line, nothing for the labels it never got.
    assert (by["alice", "fit_line"].status, by["alice", "fit_line"].score) == ("passed", 4), by["alice", "fit_line"]
    rough = by["dan", "fit_line"]
    assert rough.status == "failed" and 0 < rough.score < 4 and "mean absolute error" in rough.message, rough
    peek = by["erin", "fit_line"]
    assert (peek.status, peek.score) == ("failed", 0), peek  # found no labels, predicted 0: below every band
