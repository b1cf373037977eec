"""The autograder against cheats, tampering, bad files and noisy stderr (issue 9).

One class of small submissions is graded once (module fixture), in this process, on a short
copy of lesson 06 (its exercises without the training cells), so the whole file runs a
dozen short notebooks. Every cheat must score no more than the honest wrong answer.
"""
import copy
import io
import json
import pickle
from pathlib import Path

import nbformat
import pytest
import torch

from autograder import grade, judge, notebooks

LESSON = "06_fill_level"
ROOT = Path(__file__).resolve().parent.parent
# The cells of lesson 06 that a short lesson keeps: setup, and each exercise with its
# self-check and test, minus the training and the widget (slow, and not what is tested here).
KEEP = ("setup", "make_fill_image", "fill_l1_loss", "predict_fill", "same_image_levels")
WRONG_LOSS = "def fill_l1_loss(pred, target):\n    return torch.abs(pred - target).mean()\n"


def _short(nb):
    """Lesson 06 cut down to the exercises in KEEP (each: solution, self-check, test)."""
    def kept(cell):
        gid = notebooks.grade_id(cell)
        if gid:
            return gid.removesuffix("_test") in KEEP
        return any(f"check('{ex}', {ex})" in cell.source for ex in KEEP)

    out = copy.deepcopy(nb)
    out.cells = [copy.deepcopy(nb.cells[0])] + [copy.deepcopy(c) for c in nb.cells if kept(c)]
    return out


def _solution():
    return notebooks.read(notebooks.source_path(LESSON))


def _set(nb, gid, source):
    for cell in nb.cells:
        if notebooks.grade_id(cell) == gid:
            cell.source = source
    return nb


def _after(nb, gid, source):
    """A student cell inserted right after the cell ``gid`` (as a student would add one)."""
    i = next(k for k, c in enumerate(nb.cells) if notebooks.grade_id(c) == gid)
    nb.cells.insert(i + 1, nbformat.v4.new_code_cell(source))
    return nb


def _wrong():
    return _set(_solution(), "fill_l1_loss", WRONG_LOSS)


CHEATS = {
    # each: the honest wrong answer plus a cheat that would have hidden it from the old grader
    "patch_allclose": "import torch, numpy\ntorch.allclose = lambda *a, **k: True\nnumpy.allclose = lambda *a, **k: True",
    "patch_numpy_testing": "import numpy.testing\nnumpy.testing.assert_allclose = lambda *a, **k: None",
    "patch_checker": ("import course_lib.checks as _c\n"
                      "_c.run_check = lambda spec, obj, hidden=False, seed=None: _c.CheckResult(spec.id, True, 1, 'ok')\n"
                      "_c.check = lambda *a, **k: None\ncheck = _c.check"),
    "patch_builtins": "import builtins\n_isinstance = builtins.isinstance\nbuiltins.isinstance = lambda a, b: _isinstance(a, b)",
    "patch_sys_modules": ("import sys, types\nfake = types.ModuleType('course_lib.checks')\n"
                          "fake.check = lambda *a, **k: None\nsys.modules['course_lib.checks'] = fake"),
    "showtraceback": "ip = get_ipython()\nip.showtraceback = lambda *a, **k: None\nip._showtraceback = lambda *a, **k: None",
    "reads_solutions": (f"import nbformat\nsol = nbformat.read({str(notebooks.source_path(LESSON))!r}, as_version=4)\n"
                        "exec(next(c.source for c in sol.cells if c.metadata.get('nbgrader', {}).get('grade_id') == 'fill_l1_loss'))"),
    "reads_hidden_cases": "import glob\nfor p in glob.glob('.autograder-*/*'):\n    open(p, 'rb').read()",
}


def _tampered_test_cells(nb):
    """Every kind of damage to test cells, on an otherwise honest (one wrong) notebook."""
    cells = nb.cells
    by = {notebooks.grade_id(c): c for c in cells if notebooks.grade_id(c)}

    def index(cell):
        return next(i for i, c in enumerate(cells) if c is cell)

    by["make_fill_image_test"].source = "pass  # edited"
    del cells[index(by["fill_l1_loss_test"])]                                # deleted
    moved = cells.pop(index(by["predict_fill_test"]))                         # moved to the top, and duplicated
    cells.insert(1, moved)
    twin = copy.deepcopy(moved)
    twin.id = "duplicate-test"
    cells.insert(3, twin)
    md = by["same_image_levels_test"]                                         # turned into markdown
    cells[index(md)] = nbformat.v4.new_markdown_cell(md.source, metadata=copy.deepcopy(md.metadata))
    by["fill_l1_loss"].metadata.pop("nbgrader")                              # metadata stripped
    by["make_fill_image"].metadata["nbgrader"]["grade_id"] = "my_image"       # grade_id renamed
    by["predict_fill"].metadata = {}
    by["setup"].metadata = {}
    return nb


def _students():
    flag_alias = ("from course_lib.fill_level import fill_l1_loss as l1\n\n"
                  "def fill_l1_loss(pred, target):\n    return l1(pred, target)\n")
    flag_runtime = ("import importlib\n\ndef make_fill_image(fill_level, size=900):\n"
                    "    lib = importlib.import_module('course_lib.' + 'fill_level')\n"
                    "    return vars(lib)['make_fill_' + 'image'](fill_level, size)\n")
    flag_torch = "import torch.nn.functional as F\n\ndef fill_l1_loss(pred, target):\n    return F.l1_loss(pred.reshape(-1), target)\n"
    noisy = ("import sys, warnings\n\ndef fill_l1_loss(pred, target):\n"
             "    warnings.warn('pred will be flattened', UserWarning)\n"
             "    warnings.warn('old API', DeprecationWarning)\n"
             "    print('a note on stderr', file=sys.stderr)\n"
             "    return (pred.reshape(-1) - target).abs().mean()\n\n"
             "warnings.warn('a warning while defining', FutureWarning)\n")
    out = {"alice": _solution(), "wrong": _wrong()}
    for name, code in CHEATS.items():
        out[name] = _after(_wrong(), "setup", code)
    out["flag_alias"] = _set(_set(_solution(), "fill_l1_loss", flag_alias), "make_fill_image", flag_runtime)
    out["flag_torch"] = _set(_solution(), "fill_l1_loss", flag_torch)
    out["tampered_cells"] = _tampered_test_cells(_wrong())
    out["noisy"] = _set(_solution(), "fill_l1_loss", noisy)
    out["kills_guard"] = _after(_wrong(), "setup", "del __autograder__")
    return out


@pytest.fixture(scope="module")
def short_lesson(tmp_path_factory):
    """SOLUTIONS/LESSONS pointing at a short copy of lesson 06, in this process."""
    base = tmp_path_factory.mktemp("course")
    for folder, path in (("solutions", notebooks.source_path(LESSON)), ("lessons", notebooks.release_path(LESSON))):
        dest = base / folder / LESSON / f"{LESSON}.ipynb"
        dest.parent.mkdir(parents=True)
        nbformat.write(_short(nbformat.read(path, as_version=4)), dest)
    for other in notebooks.lessons():  # the other lessons as they are, to recognise their notebooks
        if other != LESSON:
            (base / "solutions" / other).symlink_to(notebooks.SOLUTIONS / other)
            (base / "lessons" / other).symlink_to(notebooks.LESSONS / other)
    mp = pytest.MonkeyPatch()
    mp.setattr(notebooks, "SOLUTIONS", base / "solutions")
    mp.setattr(notebooks, "LESSONS", base / "lessons")
    yield base
    mp.undo()


@pytest.fixture(scope="module")
def graded(short_lesson, tmp_path_factory):
    subs, out = tmp_path_factory.mktemp("subs"), tmp_path_factory.mktemp("out")
    for student, nb in _students().items():
        path = subs / student / LESSON / f"{LESSON}.ipynb"
        path.parent.mkdir(parents=True)
        nbformat.write(nb, path)
    bad = {"empty": b"", "junk": bytes(range(256)) * 8, "cut": json.dumps(_solution())[:3000].encode(),
           "wrong_lesson": nbformat.writes(notebooks.read(ROOT / "lessons" / "03_multilabel" / "03_multilabel.ipynb")).encode()}
    for student, data in bad.items():
        path = subs / student / LESSON / f"{LESSON}.ipynb"
        path.parent.mkdir(parents=True)
        path.write_bytes(data)
    (subs / "absent" / LESSON).mkdir(parents=True)
    rows = grade.grade_all(subs, out, workers=1, progress=False)
    by = {}
    for r in rows:
        by.setdefault(r.student_id, {})[r.exercise] = r
    return by, out


def _total(rows):
    return sum(r.score for r in rows.values())


def test_honest_notebooks_are_graded_as_before(graded):
    by, _ = graded
    assert all(r.status == "passed" for r in by["alice"].values()), {k: r.message for k, r in by["alice"].items()}
    assert by["wrong"]["fill_l1_loss"].status == "failed" and "broadcasts" in by["wrong"]["fill_l1_loss"].message
    assert _total(by["wrong"]) == _total(by["alice"]) - by["wrong"]["fill_l1_loss"].max_score


@pytest.mark.parametrize("cheat", sorted(CHEATS))
def test_cheats_from_inside_the_kernel_never_raise_the_score(graded, cheat):
    by, out = graded
    rows = by[cheat]
    assert _total(rows) <= _total(by["wrong"])
    assert rows["fill_l1_loss"].score == 0
    assert {r.status for r in rows.values()} == {"tampered"}, {k: (r.status, r.message) for k, r in rows.items()}
    page = (out / "feedback" / cheat / f"{LESSON}.html").read_text()
    assert "### BEGIN HIDDEN TESTS" not in page and "hidden=True" not in page


def test_removing_the_collector_scores_nothing(graded):
    by, _ = graded
    assert _total(by["kills_guard"]) == 0
    assert all(r.status == "error" for r in by["kills_guard"].values())


def test_reading_the_solutions_is_refused_and_named(graded):
    by, _ = graded
    assert "solutions" in by["reads_solutions"]["fill_l1_loss"].message


def test_calling_the_reference_or_the_library_is_flagged(graded):
    by, _ = graded
    alias, runtime = by["flag_alias"]["fill_l1_loss"], by["flag_alias"]["make_fill_image"]
    assert alias.status == "flagged" and alias.score == 0 and "course_lib.fill_level.fill_l1_loss" in alias.message
    assert runtime.status == "flagged" and runtime.score == 0 and "reference" in runtime.message
    lib = by["flag_torch"]["fill_l1_loss"]
    assert lib.status == "flagged" and "torch.nn.functional.l1_loss" in lib.message
    assert by["flag_torch"]["predict_fill"].status == "passed"  # only the offending exercise


def test_tampered_test_cells_are_graded_as_if_untouched(graded):
    by, _ = graded
    assert {k: (r.status, r.score) for k, r in by["tampered_cells"].items()} == \
           {k: (r.status, r.score) for k, r in by["wrong"].items()}


def test_warnings_and_stderr_never_fail_a_test(graded):
    by, _ = graded
    assert all(r.status == "passed" for r in by["noisy"].values()), {k: r.message for k, r in by["noisy"].items()}


@pytest.mark.parametrize("student, words", [
    ("empty", "is empty"), ("junk", "not text"), ("cut", "not valid JSON"),
    ("wrong_lesson", "is the notebook of lesson 03_multilabel"), ("absent", "expected 06_fill_level.ipynb")])
def test_bad_files_get_a_message_a_person_understands(graded, student, words):
    by, out = graded
    rows = by[student]
    assert all(r.score == 0 and r.status in ("error", "missing") for r in rows.values())
    assert all(words in r.message for r in rows.values()), next(iter(rows.values())).message
    assert words in (out / "feedback" / student / f"{LESSON}.html").read_text()


# ---- units: the pieces, without a kernel

class _Evil:
    def __reduce__(self):
        import os
        return (os.system, ("echo pwned > /tmp/autograder-pwned",))


def test_the_report_loader_refuses_a_malicious_pickle(tmp_path):
    path = tmp_path / "report.pt"
    path.write_bytes(pickle.dumps({"observed": _Evil()}, protocol=2))
    with pytest.raises(Exception):
        judge.load_report(path)
    assert not Path("/tmp/autograder-pwned").exists()
    torch.save({"observed": {"observations": [torch.ones(2), {"__portable__": "ndarray", "data": torch.zeros(2), "dtype": "uint8"}]}},
               path)
    assert judge.load_report(path)["observed"]["observations"][0].tolist() == [1.0, 1.0]


def test_observations_are_judged_with_run_checks_words():
    from course_lib import fill_level
    from course_lib.checks import get_spec, hidden_cases, judge_observations, observe_cases, run_check

    spec = get_spec("fill_l1_loss")
    cases = hidden_cases(spec, 1234)
    wrong = lambda pred, target: torch.abs(pred - target).mean()  # noqa: E731
    buf = io.BytesIO()
    torch.save(observe_cases(spec, wrong, cases), buf)
    buf.seek(0)
    observed = torch.load(buf, weights_only=True)
    verdict = judge_observations(spec, cases, observed)
    assert not verdict.passed and "broadcasts" in verdict.message
    assert judge_observations(spec, cases, observe_cases(spec, fill_level.fill_l1_loss, cases)).passed
    # the same words as the self-check for an unfinished exercise
    def stub(pred, target):
        raise NotImplementedError()
    assert judge_observations(spec, cases, observe_cases(spec, stub, cases)).message == run_check(spec, stub).message


def test_static_scan_sees_aliases_getattr_and_forbidden_calls():
    from course_lib.checks import get_spec

    spec = get_spec("fill_l1_loss")
    aliases = {"fl": "course_lib.fill_level", "F": "torch.nn.functional", "nn": "torch.nn"}
    assert judge.scan_cell("def fill_l1_loss(p, t):\n    return fl.fill_l1_loss(p, t)", spec, aliases)
    assert judge.scan_cell("def fill_l1_loss(p, t):\n    return getattr(fl, 'fill_l1_loss')(p, t)", spec, aliases)
    assert judge.scan_cell("def fill_l1_loss(p, t):\n    return nn.L1Loss()(p.reshape(-1), t)", spec, aliases)
    assert judge.scan_cell("def fill_l1_loss(p, t):\n    return (p.reshape(-1) - t).abs().mean()", spec, aliases) is None
    # the reference used outside the function (to compare, say) is not a flag
    assert judge.scan_cell("print(fl.fill_l1_loss)\ndef fill_l1_loss(p, t):\n    return (p - t).abs().mean()", spec, aliases) is None


def _graded_cells(nb):
    return [(notebooks.grade_id(c), c.cell_type, c.source) for c in nb.cells if notebooks.grade_id(c)]


def test_restore_undoes_every_kind_of_test_cell_tampering():
    source = notebooks.read(notebooks.source_path(LESSON))
    release = notebooks.read(notebooks.release_path(LESSON))
    untouched = grade.restore(copy.deepcopy(release), source, release)
    fixed = grade.restore(_tampered_test_cells(copy.deepcopy(release)), source, release)
    assert _graded_cells(fixed) == _graded_cells(untouched)
    ids = [notebooks.grade_id(c) for c in fixed.cells]
    for ex in notebooks.exercises(source):  # each test right after its solution (and its self-check)
        i, j = ids.index(ex.id), ids.index(ex.test_id)
        assert i < j and all(ids[k] is None and "check(" in fixed.cells[k].source for k in range(i + 1, j))
    assert ids.count("setup") == 1 and ids.index("setup") < ids.index("make_fill_image")


def test_an_old_notebook_format_is_converted_and_graded(tmp_path):
    path = tmp_path / LESSON / f"{LESSON}.ipynb"
    path.parent.mkdir()
    nbformat.write(nbformat.convert(notebooks.read(notebooks.source_path(LESSON)), 3), path)
    assert json.loads(path.read_text())["nbformat"] == 3
    nb = notebooks.read(path)
    assert nb.nbformat == 4 and "fill_l1_loss_test" in [notebooks.grade_id(c) for c in nb.cells]


def test_only_a_dataset_class_is_still_judged_in_the_kernel(tmp_path):
    """Where each exercise of every lesson is decided. The plan sends the hidden cases to the kernel
    unless they cannot travel; the kernel sends back plain data unless the answer cannot be reduced
    to it (then run_check decides in the kernel, behind the guard). Both steps are replayed here with
    the course's own implementation, course_lib/<topic>.py::<id>, in the student's place."""
    import importlib

    from course_lib.checks import get_spec, observe_cases

    where = {}
    for lesson in sorted(p.name for p in (ROOT / "solutions").iterdir() if p.is_dir()):
        # The full lessons, not the short copy this module's fixture puts in notebooks.SOLUTIONS.
        source = notebooks.read(ROOT / "solutions" / lesson / f"{lesson}.ipynb")
        _, plan = judge.instrument(copy.deepcopy(source), source, tmp_path / lesson)
        for ex_id, ep in plan.exercises.items():
            spec = get_spec(ex_id)
            if ep.mode != "grader" or spec.kind == "answer":
                where[ex_id] = ep.mode
                continue
            impl = getattr(importlib.import_module(spec.module.removesuffix("_checks")), ex_id)
            where[ex_id] = "grader" if observe_cases(spec, impl, ep.cases)["portable"] else "kernel"
    assert {ex_id for ex_id, w in where.items() if w == "kernel"} == {"ImageListDataset"}, where
    # Models, a prediction that must run without gradients and a drawing are reduced to plain data.
    for ex_id in ("replace_head", "train_model", "build_fill_model", "predict_fill", "draw_box"):
        assert where[ex_id] == "grader", (ex_id, where[ex_id])
