"""The autograder against a student who has read its source (issue 17), bad files and noisy stderr.

One class of small submissions is graded once (module fixture), in this process, on a short copy of lesson 06
(its exercises without the training cells). Every cheat is held to one bar: it scores no more than the honest
wrong answer, and it changes no other student's row. The grade comes from a sandboxed judging process that never
ran the notebook, so what a notebook does in its own kernel (patching the checker, swapping the collector,
writing reports, reading files, starting processes) can only cost the feedback page, never earn points.
"""
import copy
import hashlib
import io
import json
import os
import pickle
import time
import zipfile
from pathlib import Path

import nbformat
import pytest
import torch

from autograder import grade, judge, notebooks
from course_lib.checks import get_spec

from grading import personalised, write_short_course

LESSON = "06_fill_level"
ROOT = Path(__file__).resolve().parent.parent
# The cells of lesson 06 that a short lesson keeps: setup, and each exercise with its
# self-check and test, minus the training and the widget (slow, and not what is tested here).
KEEP = ("setup", "make_fill_image", "fill_l1_loss", "predict_fill", "same_image_levels")
WRONG_LOSS = "def fill_l1_loss(pred, target):\n    return torch.abs(pred - target).mean()\n"
MARKER = "vwb-background-marker-7f3a"  # in the command line of every process a cheat leaves behind


def _solution():
    return notebooks.read(notebooks.source_path(LESSON))


def _blank():
    return notebooks.read(notebooks.release_path(LESSON))


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


# Cheats that act in the notebook's own kernel. None can change a grade any more: they are graded as "wrong".
KERNEL_CHEATS = {
    "patch_allclose": ("import torch, numpy\ntorch.allclose = lambda *a, **k: True\n"
                       "numpy.allclose = lambda *a, **k: True"),
    "patch_checker": ("import course_lib.checks as _c\n"
                      "_c.run_check = lambda spec, obj, hidden=False, seed=None: "
                      "_c.CheckResult(spec.id, True, 1, 'ok')\n"
                      "_c.check = lambda *a, **k: None\ncheck = _c.check"),
    "showtraceback": ("ip = get_ipython()\nip.showtraceback = lambda *a, **k: None\n"
                      "ip._showtraceback = lambda *a, **k: None"),
    # the forged report of the old design, written where the kernel runs and in every folder it can reach
    "forged_report": ("import torch, glob, os\nfake = {'passed': True, 'result': {'passed': True}, 'observed': None}\n"
                      "for d in ['.'] + glob.glob('/tmp/*') + glob.glob('/tmp/*/*'):\n"
                      "    try:\n        torch.save(fake, os.path.join(d, 'result.pt'))\n"
                      "    except Exception:\n        pass"),
}

# The five ways around the old audit hook, each trying to read the solutions and the grader's hidden cases.
SECRET_PATHS = [str(notebooks.SOLUTIONS / LESSON / f"{LESSON}.ipynb"), str(ROOT / "autograder" / "judge.py")]
READS_SECRETS = f"""
import ctypes, glob, os, subprocess
paths = {SECRET_PATHS!r}
got = []
for p in paths:
    try:  # a relative path opened with dir_fd
        d = os.open(os.path.dirname(p), os.O_RDONLY)
        got.append(os.read(os.open(os.path.basename(p), os.O_RDONLY, dir_fd=d), 200))
    except Exception as e:
        got.append(repr(e))
    try:  # libc's open, past Python's audit hooks
        libc = ctypes.CDLL(None)
        fd = libc.open(p.encode(), 0)
        buf = ctypes.create_string_buffer(200)
        got.append(buf.raw[:libc.read(fd, buf, 200)] if fd >= 0 else b'no fd')
    except Exception as e:
        got.append(repr(e))
    got.append(subprocess.run(['cat', p], capture_output=True).stdout[:200])  # a shell command
got.append(glob.glob('/tmp/vwb-*/**', recursive=True)[:20])  # the judging processes' folders
got.append(sorted(os.environ))  # a seed, a token, a key in the environment
print('LEAKED:', got)
"""

# Routes to the judged exercise's reference (fill_l1_loss): each must be flagged or fail.
REFERENCE_ROUTES = {
    "ref_alias": ("from course_lib.fill_level import fill_l1_loss as l1\n\n"
                  "def fill_l1_loss(pred, target):\n    return l1(pred, target)\n"),
    "ref_spec": ("from course_lib.checks import get_spec\n\n"
                 "def fill_l1_loss(pred, target):\n    return get_spec('fill_l1_loss').reference(pred, target)\n"),
    "ref_partial": ("import functools\nfrom course_lib import fill_level as fl\n\n"
                    "def fill_l1_loss(pred, target, _f=functools.partial(fl.fill_l1_loss)):\n"
                    "    return _f(pred, target)\n"),
    "ref_list": ("from course_lib import fill_level as fl\n\n"
                 "def fill_l1_loss(pred, target, _box=[fl.fill_l1_loss]):\n    return _box[0](pred, target)\n"),
    "ref_callable": ("from course_lib import fill_level as fl\n\nclass _Loss:\n    def __call__(self, p, t):\n"
                     "        return vars(fl)['fill_' + 'l1_loss'](p, t)\n\nfill_l1_loss = None\n\n"
                     "def fill_l1_loss(pred, target):\n    return _Loss()(pred, target)\n"),
    "ref_gc": ("import gc, types\n\ndef fill_l1_loss(pred, target):\n    for o in gc.get_objects():\n"
               "        if isinstance(o, types.FunctionType) and o.__name__ == 'fill_l1_loss'"
               " and o.__module__ != '__main__':\n"
               "            return o(pred, target)\n    return (pred - target).sum() * 0\n"),
    "ref_frames": ("import sys\n\ndef fill_l1_loss(pred, target):\n    f = sys._getframe(1)\n    while f is not None:\n"
                   "        spec = f.f_locals.get('spec')\n"
                   "        if spec is not None and getattr(spec, 'reference', None):\n"
                   "            return spec.reference(pred, target)\n        f = f.f_back\n"
                   "    return (pred - target).sum() * 0\n"),
    "ref_source": ("import course_lib, os\n\ndef fill_l1_loss(pred, target):\n    ns = {}\n"
                   "    exec(open(os.path.join(os.path.dirname(course_lib.__file__), 'fill_level.py')).read(), ns)\n"
                   "    return ns['fill_l1_loss'](pred, target)\n"),
    "lib_torch": ("import torch.nn.functional as F\n\n"
                  "def fill_l1_loss(pred, target):\n    return F.l1_loss(pred.reshape(-1), target)\n"),
    "lib_module": ("from torch import nn\n\n"
                   "def fill_l1_loss(pred, target):\n    return nn.L1Loss()(pred.reshape(-1), target)\n"),
    "lib_c": ("import torch\n\n"
              "def fill_l1_loss(pred, target):\n    return torch._C._nn.l1_loss(pred.reshape(-1), target, 1)\n"),
}

LYING_FLOAT = """class _Lie(float):
    def __sub__(self, other):
        return 0.0
    __rsub__ = __sub__
    def __eq__(self, other):
        return True
    __hash__ = float.__hash__

def predict_fill(model, image, size=None):
    return _Lie(0.123)
"""

# A background process that outlives its cell and tries to reach what other students and the grader own.
BACKGROUND = f"""
import subprocess, sys
code = '''
import glob, os, signal, time
end = time.time() + 120
while time.time() < end:
    for p in glob.glob('/tmp/**/journal.jsonl', recursive=True) + glob.glob('/tmp/**/grades.csv', recursive=True):
        try: open(p, 'a').write('forged\\\\n')
        except Exception: pass
    for p in glob.glob('/tmp/**/alice/**/*.ipynb', recursive=True):
        try: open(p, 'w').write('{{}}')
        except Exception: pass
    for pid in os.listdir('/proc'):
        if pid.isdigit() and int(pid) != os.getpid():
            try: os.kill(int(pid), signal.SIGKILL)
            except Exception: pass
    time.sleep(0.2)
'''
subprocess.Popen([sys.executable, '-c', code, '{MARKER}'], start_new_session=True)
"""

HANGING_LOSS = "def fill_l1_loss(pred, target):\n    while True:\n        pass\n"
STUBBORN_LOSS = ("def fill_l1_loss(pred, target):\n    while True:\n        try:\n            while True:\n"
                 "                pass\n        except BaseException:\n            pass\n")
# MAP_SHARED pages, touched one per page in C: the cgroup counts them as the sandbox's memory.
BIG_SHARED_MMAP = ("import mmap\nimport numpy as np\n_m = mmap.mmap(-1, 2600 << 20)\n"
                   "np.frombuffer(_m, dtype=np.uint8)[::4096] = 1\n")
EXIT_IN_DEFAULT = ("import os, torch\n\ndef _forge():\n"
                   "    torch.save({'observed': {'portable': True, 'kind': 'function', 'observations': []}, "
                   "'passed': True}, 'result.pt')\n    os._exit(0)\n\n"
                   "def make_fill_image(fill_level, size=900, _x=_forge()):\n    return None\n")


def _attachment():
    nb = _solution()
    png = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==")
    cell = nbformat.v4.new_markdown_cell("My screenshot:\n\n![shot.png](attachment:shot.png)")
    cell["attachments"] = {"shot.png": {"image/png": png}}
    nb.cells.insert(3, cell)
    return nb


def _students():
    out = {"alice": _solution(), "wrong": _wrong(), "blank": _blank(),
           "swap_collector": _after(_blank(), "setup",
                                    "__autograder__.collect = __autograder__.final = lambda *a, **k: None"),
           "reads_secrets": _after(_wrong(), "setup", READS_SECRETS),
           "background": _after(_wrong(), "setup", BACKGROUND),
           "lying_float": _set(_solution(), "predict_fill", LYING_FLOAT),
           "hangs": _set(_solution(), "fill_l1_loss", HANGING_LOSS),
           "stubborn": _set(_solution(), "fill_l1_loss", STUBBORN_LOSS),
           "mmap_kernel": _after(_solution(), "setup", BIG_SHARED_MMAP),
           "mmap_judged": _set(_solution(), "make_fill_image",
                               "import mmap\nimport numpy as np\n\ndef make_fill_image(fill_level, size=900):\n"
                               + "".join("    " + ln + "\n" for ln in BIG_SHARED_MMAP.splitlines()[2:])
                               + "    return None\n"),
           "exits_while_loading": _set(_wrong(), "make_fill_image", EXIT_IN_DEFAULT),
           "attachment": _attachment(),
           "tampered_cells": _tampered_test_cells(_wrong()),
           "=2+3*7": _solution()}
    for name, code in KERNEL_CHEATS.items():
        out[name] = _after(_wrong(), "setup", code)
    for name, code in REFERENCE_ROUTES.items():
        out[name] = _set(_solution(), "fill_l1_loss", code)
    return out


@pytest.fixture(scope="module")
def short_lesson(tmp_path_factory):
    """SOLUTIONS/LESSONS pointing at a short copy of lesson 06, in this process."""
    base = tmp_path_factory.mktemp("course")
    solutions, lessons = write_short_course(base, LESSON, KEEP)
    mp = pytest.MonkeyPatch()
    mp.setattr(notebooks, "SOLUTIONS", solutions)
    mp.setattr(notebooks, "LESSONS", lessons)
    yield base
    mp.undo()


def _write_class(subs: Path, students: dict) -> None:
    for student, nb in students.items():
        path = subs / student / LESSON / f"{LESSON}.ipynb"
        path.parent.mkdir(parents=True)
        nbformat.write(personalised(nb, student), path)


def _by(rows):
    by = {}
    for r in rows:
        by.setdefault(r.student_id, {})[r.exercise] = r
    return by


OPTS = grade.Options(profile="ci", memory_mb=2000)


@pytest.fixture(scope="module")
def graded(short_lesson, tmp_path_factory):
    subs, out = tmp_path_factory.mktemp("subs"), tmp_path_factory.mktemp("out")
    _write_class(subs, _students())
    other_lesson = ROOT / "lessons" / "03_multilabel" / "03_multilabel.ipynb"
    bad = {"empty": b"", "junk": bytes(range(256)) * 8, "cut": json.dumps(_solution())[:3000].encode(),
           "wrong_lesson": nbformat.writes(notebooks.read(other_lesson)).encode()}
    for student, data in bad.items():
        path = subs / student / LESSON / f"{LESSON}.ipynb"
        path.parent.mkdir(parents=True)
        path.write_bytes(data)
    (subs / "absent" / LESSON).mkdir(parents=True)
    alice = subs / "alice" / LESSON / f"{LESSON}.ipynb"
    before = hashlib.sha256(alice.read_bytes()).hexdigest()
    stats: dict = {}
    mp = pytest.MonkeyPatch()
    mp.setenv("VWB_INSTRUCTOR_TOKEN", "s3cr3t-token-of-the-instructor")  # a secret of the grader's environment
    try:
        rows = grade.grade_all(subs, out, workers=1, progress=False, opts=copy.deepcopy(OPTS), stats=stats)
    finally:
        mp.undo()
    time.sleep(1.5)  # a process that survived would keep writing: give it the time to show
    return _by(rows), out, subs, before, stats


def _total(rows):
    return sum(r.score for r in rows.values())


def _journal(out):
    return [json.loads(line) for line in (out / "journal.jsonl").read_text().splitlines() if line.strip()]


def test_honest_notebooks_are_graded_as_before(graded):
    by, out, *_ = graded
    assert all(r.status == "passed" for r in by["alice"].values()), {k: r.message for k, r in by["alice"].items()}
    assert by["wrong"]["fill_l1_loss"].status == "failed" and "broadcasts" in by["wrong"]["fill_l1_loss"].message
    assert _total(by["wrong"]) == _total(by["alice"]) - by["wrong"]["fill_l1_loss"].max_score
    assert _total(by["blank"]) == 0


@pytest.mark.parametrize("cheat", sorted(KERNEL_CHEATS) + ["reads_secrets", "background"])
def test_what_a_notebook_does_in_its_kernel_changes_no_grade(graded, cheat):
    by, out, *_ = graded
    assert {k: (r.status, r.score) for k, r in by[cheat].items()} == \
           {k: (r.status, r.score) for k, r in by["wrong"].items()}
    page = (out / "feedback" / cheat / f"{LESSON}.html").read_text()
    assert "### BEGIN HIDDEN TESTS" not in page and "hidden=True" not in page


def test_swapping_the_old_collector_on_a_blank_notebook_scores_nothing(graded):
    by, *_ = graded
    assert _total(by["swap_collector"]) == 0


def test_no_secret_reaches_the_students_kernel(graded):
    by, out, *_ = graded
    page = (out / "feedback" / "reads_secrets" / f"{LESSON}.html").read_text()
    assert "LEAKED:" in page  # the cell ran, and printed what it found
    leaked = page.rsplit("LEAKED:", 1)[1].split("</pre>", 1)[0]  # the output, not the cell's code
    assert "No such file" in leaked or "FileNotFoundError" in leaked, leaked[:2000]
    for secret in ("cells", "nbgrader", "Judge: every exercise", "cases.pt", "request.json", "VWB_INSTRUCTOR_TOKEN"):
        assert secret not in leaked, (secret, leaked[:2000])


def test_a_background_process_reaches_nothing_and_dies_with_its_submission(graded):
    by, out, subs, before, _ = graded
    alive = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if MARKER.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                alive.append(pid)
        except OSError:
            pass
    assert not alive
    assert "vwb-forged-line" not in (out / "journal.jsonl").read_text()
    assert "vwb-forged-line" not in (out / "grades.csv").read_text()
    assert hashlib.sha256((subs / "alice" / LESSON / f"{LESSON}.ipynb").read_bytes()).hexdigest() == before
    assert all(r.status == "passed" for r in by["alice"].values())


@pytest.mark.parametrize("route", sorted(REFERENCE_ROUTES))
def test_the_judged_exercises_reference_and_forbidden_functions_are_out_of_reach(graded, route):
    by, *_ = graded
    row = by[route]["fill_l1_loss"]
    assert row.score == 0 and row.status in ("flagged", "failed"), (row.status, row.message)
    assert _total(by[route]) <= _total(by["wrong"])
    # only the offending exercise
    assert all(r.status == "passed" for k, r in by[route].items() if k != "fill_l1_loss")


@pytest.mark.parametrize("route", ["ref_alias", "ref_spec", "ref_partial", "ref_source", "lib_torch", "lib_module",
                                   "lib_c"])
def test_reaching_a_stub_or_tripwire_is_flagged_by_name(graded, route):
    by, *_ = graded
    row = by[route]["fill_l1_loss"]
    assert row.status == "flagged", (row.status, row.message)


def test_a_float_that_lies_about_itself_scores_nothing(graded):
    by, *_ = graded
    assert by["lying_float"]["predict_fill"].score == 0


def test_a_hanging_function_costs_seconds_and_only_its_points(graded):
    by, out, *_ = graded
    for student in ("hangs", "stubborn"):
        row = by[student]["fill_l1_loss"]
        assert row.status == "timeout" and row.score == 0, (row.status, row.message)
        assert _total(by[student]) == _total(by["alice"]) - row.max_score
    entries = {e["student_id"]: e for e in _journal(out)}
    assert entries["hangs"]["judge_seconds"] < entries["alice"]["judge_seconds"] + 20


def test_memory_over_the_cap_is_out_of_memory_shared_mappings_included(graded):
    by, out, *_ = graded
    entries = {e["student_id"]: e for e in _journal(out)}
    assert entries["mmap_kernel"]["status"] == "out_of_memory", entries["mmap_kernel"]
    assert all(r.status == "passed" for r in by["mmap_kernel"].values())  # the grade never came from the kernel
    # In the judging process the pages are touched inside one C call: on a busy machine its CPU-time limit may stop
    # it before the cap does. Either way the answer scores nothing and nothing else is touched.
    judged = by["mmap_judged"]["make_fill_image"]
    assert judged.score == 0 and judged.status in ("out_of_memory", "timeout"), (judged.status, judged.message)
    assert by["mmap_judged"]["fill_l1_loss"].status == "passed"


def test_a_process_that_exits_while_loading_forges_nothing(graded):
    by, *_ = graded
    row = by["exits_while_loading"]["make_fill_image"]
    assert row.score == 0 and row.status in ("failed", "error"), (row.status, row.message)


def test_tampered_test_cells_are_graded_as_if_untouched_and_the_student_is_told(graded):
    by, out, *_ = graded
    assert {k: (r.status, r.score) for k, r in by["tampered_cells"].items()} == \
           {k: (r.status, r.score) for k, r in by["wrong"].items()}
    page = (out / "feedback" / "tampered_cells" / f"{LESSON}.html").read_text()
    for said in ("the test cell make_fill_image_test was edited", "the test cell fill_l1_loss_test was deleted",
                 "the test cell same_image_levels_test was turned into text"):
        assert said in page, said


def test_a_pasted_screenshot_costs_nothing(graded):
    by, out, *_ = graded
    assert _total(by["attachment"]) == _total(by["alice"])
    assert "data:image/png;base64" in (out / "feedback" / "attachment" / f"{LESSON}.html").read_text()


def test_a_formula_like_student_id_is_quoted(graded):
    by, out, *_ = graded
    assert _total(by["=2+3*7"]) == _total(by["alice"])
    for name in ("grades.csv", "totals.csv"):
        text = (out / name).read_text()
        assert "'=2+3*7" in text and "\n=2+3*7" not in text


def test_warnings_and_stderr_never_fail_a_test(graded):
    by, *_ = graded
    assert all(r.status == "passed" for r in by["attachment"].values())


@pytest.mark.parametrize("student, words", [
    ("empty", "is empty"), ("junk", "not text"), ("cut", "not valid JSON"),
    ("wrong_lesson", "is the notebook of lesson 03_multilabel"), ("absent", "expected 06_fill_level.ipynb")])
def test_bad_files_get_a_message_a_person_understands(graded, student, words):
    by, out, *_ = graded
    rows = by[student]
    assert all(r.score == 0 and r.status in ("error", "missing") for r in rows.values())
    assert all(words in r.message for r in rows.values()), next(iter(rows.values())).message
    assert words in (out / "feedback" / student / f"{LESSON}.html").read_text()


# ---- units: the pieces, without a kernel

class _Evil:
    def __reduce__(self):
        import os
        return (os.system, ("echo pwned > /tmp/autograder-pwned",))


def test_the_result_loader_refuses_a_malicious_pickle(tmp_path):
    path = tmp_path / "result.pt"
    path.write_bytes(pickle.dumps({"observed": _Evil()}, protocol=2))
    with pytest.raises(judge.BadResult):
        judge.load_result(path)
    assert not Path("/tmp/autograder-pwned").exists()
    torch.save({"observed": {"observations": [torch.ones(2), {"__portable__": "ndarray", "data": torch.zeros(2),
                                                              "dtype": "uint8"}]}}, path)
    assert judge.load_result(path)["observed"]["observations"][0].tolist() == [1.0, 1.0]


def test_a_forged_huge_array_never_grows_the_grader(tmp_path):
    """A 1-element storage that claims 400 million elements (a strided view): refused before anything reads it."""
    import resource

    path = tmp_path / "result.pt"
    torch.save({"observed": {"observations": [torch.zeros(1).expand(20000, 20000)]}}, path)
    assert path.stat().st_size < 4096
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(judge.BadResult, match="elements"):
        judge.load_result(path)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200_000  # KB: far below 1.6 GB


def test_a_compressed_or_linked_result_is_refused(tmp_path):
    buf = io.BytesIO()
    torch.save({"x": torch.zeros(10)}, buf)
    packed = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as src, zipfile.ZipFile(packed, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info.filename))
    (tmp_path / "result.pt").write_bytes(packed.getvalue())
    with pytest.raises(judge.BadResult):
        judge.load_result(tmp_path / "result.pt")
    (tmp_path / "linked.pt").symlink_to(tmp_path / "result.pt")
    with pytest.raises(judge.BadResult, match="not a plain file"):
        judge.load_result(tmp_path / "linked.pt")


def test_only_the_students_definitions_are_loaded():
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("import torch\nX = 3\nY = torch.zeros(2)\nprint('side effect')\n"
                                          "def f():\n    return X\n%matplotlib inline\nclass A:\n    pass\n"),
                nbformat.v4.new_code_cell("def broken(:\n")]
    kept, broken = judge.definitions(nb)
    sources = [s for _, _, s in kept]
    assert sources[0] == "import torch" and "X = 3" in sources
    assert not any("print" in s or "zeros" in s for s in sources)
    assert any(s.startswith("def f") for s in sources) and any(s.startswith("class A") for s in sources)
    assert 1 in broken


def test_an_untouched_stub_fails_without_a_judging_process_and_a_later_definition_is_judged():
    """An answer cell left as the release hands it out is "not implemented yet" at once (no process, no held-out set
    drawn); the shortcut never hides a definition the student wrote in another cell."""
    source, release = notebooks.read(notebooks.source_path(LESSON)), notebooks.read(notebooks.release_path(LESSON))
    launched = []

    def launch(spec):
        launched.append(spec)
        raise RuntimeError("no judging process in this test")

    judging = judge.Judging(sandbox=False, launch=launch)
    found = judge.judge_submission(copy.deepcopy(release), source, judging, release=release)
    functions = [t.id for t in judge.plan(source) if get_spec(t.id).kind != "answer"]
    assert functions and launched == []
    for ex in functions:
        assert found[ex].status == "failed" and "not implemented yet" in found[ex].message, (ex, found[ex])
    later = copy.deepcopy(release)
    later.cells.append(nbformat.v4.new_code_cell("def fill_l1_loss(pred, target):\n"
                                                 "    return (pred - target).abs().mean()"))
    found = judge.judge_submission(later, source, judging, release=release)
    assert len(launched) == 1 and "not implemented" not in found["fill_l1_loss"].message


def test_widget_answers_are_read_as_literals_never_run():
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("same_image_levels = (0.5, 0.51, 32)")
    cell.metadata["nbgrader"] = {"grade_id": "same_image_levels", "solution": True}
    nb.cells = [cell]
    assert judge.answer_value(nb, "same_image_levels", "same_image_levels") == ((0.5, 0.51, 32), None)
    cell.source = "same_image_levels = __import__('os').system('touch /tmp/vwb-ran')"
    value, why = judge.answer_value(nb, "same_image_levels", "same_image_levels")
    assert value is None and "plain value" in why and not Path("/tmp/vwb-ran").exists()


def test_the_reference_is_a_stub_in_the_judging_processs_copy_of_course_lib():
    view = judge.course_view("fill_l1_loss")
    text = (view / "fill_level.py").read_text()
    assert "is not available while your `fill_l1_loss` is judged" in text
    assert "def make_fill_image" in text  # only the judged exercise is replaced
    assert (view / "fill_level_checks.py").exists()


def _graded_cells(nb):
    return [(notebooks.grade_id(c), c.cell_type, c.source) for c in nb.cells if notebooks.grade_id(c)]


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


def test_restore_undoes_every_kind_of_test_cell_tampering():
    source = notebooks.read(ROOT / "solutions" / LESSON / f"{LESSON}.ipynb")
    release = notebooks.read(ROOT / "lessons" / LESSON / f"{LESSON}.ipynb")
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
    nbformat.write(nbformat.convert(notebooks.read(ROOT / "solutions" / LESSON / f"{LESSON}.ipynb"), 3), path)
    assert json.loads(path.read_text())["nbformat"] == 3
    nb = notebooks.read(path)
    assert nb.nbformat == 4 and "fill_l1_loss_test" in [notebooks.grade_id(c) for c in nb.cells]


def test_every_lessons_hidden_tests_are_one_check_line_judged_in_the_grader():
    """Where each exercise of every lesson is decided: the plan of every lesson names one student object per
    exercise, and nothing is left to run in the student's namespace."""
    for lesson in sorted(p.name for p in (ROOT / "solutions").iterdir() if p.is_dir()):
        source = notebooks.read(ROOT / "solutions" / lesson / f"{lesson}.ipynb")
        tasks = judge.plan(source)
        assert tasks and all(not t.problem and t.name for t in tasks), [(t.id, t.problem) for t in tasks]


def test_without_a_sandbox_a_correct_notebook_still_gets_full_marks_and_the_grade_says_how(short_lesson, tmp_path):
    subs, out = tmp_path / "subs", tmp_path / "out"
    _write_class(subs, {"alice": _solution(), "wrong": _wrong()})
    rows = _by(grade.grade_all(subs, out, workers=1, progress=False,
                               opts=grade.Options(profile="ci", memory_mb=2000, sandbox=False)))
    assert all(r.status == "passed" for r in rows["alice"].values())
    assert rows["wrong"]["fill_l1_loss"].status == "failed"
    assert "graded_without_sandbox" in (out / "totals.csv").read_text().splitlines()[0]
    assert "graded without a sandbox" in (out / "report.html").read_text()
