"""Judge: every exercise's verdict, decided in the grader from what a sandboxed judging process returned.

The notebook's own kernel never decides a grade. For each exercise of a submission:

1. :func:`plan` reads, from the lesson's source notebook, which student object each hidden test checks;
2. the grader draws a secret seed and makes the hidden cases itself (:func:`course_lib.checks.hidden_cases`),
   computes the reference's answers and times them: each case's time limit is a multiple of the reference's;
3. a judging process (:mod:`autograder.judge_process`) runs in a fresh sandbox with a copy of ``course_lib`` whose
   reference for this exercise is a stub (:func:`course_view`), loads the lesson's setup and only the student's
   definitions (:func:`definitions`), calls the student's object on the cases and writes the raw outputs;
4. :func:`load_result` reads them without running code (``torch.load(weights_only=True)``) after checking the file's
   size, its zip entries, and every value's type, shape and size (:func:`validate`); the grader then judges them
   with the references, judges and known mistakes of its own process.

A missing, malformed or oversized result is a failure, never a pass. Widget answers are read from the answer
cell's source as literals (:func:`answer_value`), never executed. A judging process that reaches the judged
exercise's reference or a library function the spec forbids trips a stub: the exercise is ``flagged``.
"""
from __future__ import annotations

import ast
import compileall
import dataclasses
import hashlib
import io
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zipfile
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbformat

from autograder.notebooks import exercises, grade_id, is_test
from autograder.status import Status

CHECK_LINE = re.compile(r"""^check\(\s*['"](\w+)['"]\s*,\s*(\w+)\s*,\s*hidden\s*=\s*True\s*\)\s*;?\s*$""")

# What a judging process may send back. Sizes a correct answer to any exercise stays far below.
MAX_RESULT_BYTES = 64 * 2**20
MAX_ELEMENTS = 16_000_000        # tensor elements in one result, all tensors together
MAX_ITEMS = 100_000              # items in all lists, tuples and dicts together
MAX_DEPTH = 24
MAX_TEXT = 1_000_000             # characters in all strings together
MAX_REACHED_BYTES = 64 * 1024

# Time: a case may take REF_FACTOR times the CPU time the reference took on it, but never less than
# MIN_CASE_SECONDS (so a slower but honest answer passes); the process gets START_SECONDS to start and load.
REF_FACTOR = 50
MIN_CASE_SECONDS = 1.5
START_SECONDS = {"fork": 30.0, "spawn": 120.0}


@dataclass
class Verdict:
    status: Status
    message: str = ""
    seconds: float = 0.0
    mistake: str = ""  # the known mistake the answer matches (its name in the spec), for the class report
    fraction: float = -1.0  # the share of the points earned (a capstone's band); -1: all when passed, else none
    stub: bool = False  # the answer is the release's untouched stub (see untouched_stub)

    @property
    def share(self) -> float:
        if self.fraction >= 0:
            return self.fraction
        return 1.0 if self.status == Status.PASSED else 0.0


@dataclass
class Task:
    """One exercise to judge: the student's object ``name`` against spec ``id``."""

    id: str
    name: str = ""
    problem: str = ""  # why it cannot be judged as planned (a test cell the grader does not understand)


# ---------------------------------------------------------------------------------- plan

def _hidden_lines(source: str) -> list[str]:
    text = source
    if "### BEGIN HIDDEN TESTS" in text:
        text = text.split("### BEGIN HIDDEN TESTS", 1)[1].split("### END HIDDEN TESTS", 1)[0]
    return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]


def plan(source: nbformat.NotebookNode) -> list[Task]:
    """The exercises of a lesson and the student object each one's hidden test checks, from the source notebook.

    A hidden test is one line, ``check('<id>', <name>, hidden=True)``: anything else would have to run in the
    student's namespace, which the grader never does, so it is reported (a test keeps every lesson at one line).
    """
    cells = {grade_id(c): c for c in source.cells if grade_id(c)}
    tasks = []
    for ex in exercises(source):
        lines = _hidden_lines(cells[ex.test_id].source)
        found = [m for m in (CHECK_LINE.match(ln) for ln in lines) if m]
        if len(lines) == 1 and len(found) == 1 and found[0].group(1) == ex.id:
            tasks.append(Task(ex.id, found[0].group(2)))
        else:
            tasks.append(Task(ex.id, problem=f"the hidden test of {ex.id} is not one `check('{ex.id}', name, "
                                             "hidden=True)` line; the course must fix its source notebook."))
    return tasks


# --------------------------------------------------------------------------- definitions

def _parse(source: str) -> ast.Module:
    # IPython magics and shell lines are not Python: blank them, keeping line numbers.
    lines = ["" if ln.lstrip().startswith(("%", "!")) else ln for ln in source.splitlines()]
    return ast.parse("\n".join(lines))


def _literal(node: ast.AST) -> bool:
    try:
        ast.literal_eval(node)
        return True
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return False


def _kept(node: ast.stmt) -> bool:
    """A top-level statement the judging process runs: a definition, an import, or a name bound to a literal."""
    if isinstance(node, (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return True
    if isinstance(node, ast.Assign):
        return all(isinstance(t, ast.Name) for t in node.targets) and _literal(node.value)
    if isinstance(node, ast.AnnAssign):
        return isinstance(node.target, ast.Name) and node.value is not None and _literal(node.value)
    return False


def definitions(nb: nbformat.NotebookNode) -> tuple[list[tuple[int, int, str]], dict[int, str]]:
    """The student's definitions, in notebook order: ``(cell index, line, source)`` per kept statement, and the
    cells that could not be parsed (index -> the syntax error). Test cells and the setup cell are not the
    student's (the setup comes from the source notebook)."""
    kept, broken = [], {}
    for i, cell in enumerate(nb.cells):
        gid = grade_id(cell)
        if cell.get("cell_type") != "code" or gid == "setup" or is_test(cell):
            continue
        try:
            tree = _parse(cell.source)
        except SyntaxError as e:
            broken[i] = f"line {e.lineno}: {e.msg}"
            continue
        except (ValueError, MemoryError, RecursionError) as e:
            broken[i] = f"{type(e).__name__}"
            continue
        for node in tree.body:
            if _kept(node):
                kept.append((i, node.lineno, ast.unparse(node)))
    return kept, broken


def answer_value(nb: nbformat.NotebookNode, ex_id: str, name: str):
    """The literal the student assigned to ``name`` (their answer cell first, then any cell: the last one wins).

    Returns ``(value, None)``, or ``(None, why)`` when there is no such literal."""
    cells = sorted(range(len(nb.cells)), key=lambda i: grade_id(nb.cells[i]) == ex_id)
    found: tuple[Any] | None = None
    why: str | None = f"`{name}` is not assigned in your answer cell: paste the line the widget shows."
    for i in cells:
        cell = nb.cells[i]
        if cell.get("cell_type") != "code" or is_test(cell):
            continue
        try:
            tree = _parse(cell.source)
        except (SyntaxError, ValueError, MemoryError, RecursionError):
            if grade_id(cell) == ex_id:
                why = "your answer cell is not valid Python: paste the line the widget shows, as it is."
            continue
        for node in tree.body:
            if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
                try:
                    found, why = (ast.literal_eval(node.value),), None
                except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
                    if grade_id(cell) == ex_id:
                        found = None
                        why = (f"`{name}` must be a plain value (numbers, strings, tuples), as the widget prints it; "
                               "a computed expression is not read.")
    return (found[0], None) if found else (None, why)


# --------------------------------------------------------------------------------- views

_VIEWS: dict[tuple, Path] = {}


def _course_lib() -> Path:
    import course_lib

    return Path(course_lib.__file__).resolve().parent


def _package_dirs() -> list[Path]:
    """Every folder of the ``course_lib`` package: its own, then any a course adds to ``course_lib.__path__``
    (a test's toy lesson does)."""
    import course_lib

    return list(dict.fromkeys(Path(p).resolve() for p in course_lib.__path__))


def _source_hash(roots: list[Path]) -> str:
    h = hashlib.sha256()
    for root in roots:
        for p in sorted(root.rglob("*.py")):
            h.update(str(p.relative_to(root)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()[:16]


def views_root() -> Path:
    """Where this machine's course views live: a folder only root writes (sandboxes see just the one bound)."""
    root = Path(tempfile.gettempdir()) / f"vwb-views-{os.getuid()}"
    root.mkdir(mode=0o755, exist_ok=True)
    return root


def course_view(ex_id: str) -> Path:
    """A copy of ``course_lib`` in which the definition of ``ex_id`` in its topic module is a stub.

    It is shown to the judging process at ``course_lib``'s own path, so the reference can be neither imported
    nor read there. Built once per machine and course version (cached by a hash of ``course_lib``'s sources)."""
    from course_lib.checks import get_spec

    roots = _package_dirs()
    if (ex_id, tuple(roots)) in _VIEWS:
        return _VIEWS[(ex_id, tuple(roots))]
    dest = views_root() / f"{_source_hash(roots)}-{ex_id}" / "course_lib"
    if not (dest.parent / ".done").exists():
        tmp = Path(tempfile.mkdtemp(dir=views_root(), prefix=".build-"))
        for root in roots:  # one folder: what the judging process sees at course_lib's own path
            shutil.copytree(root, tmp / "course_lib", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
                            dirs_exist_ok=True)
        topic = get_spec(ex_id).module.removesuffix("_checks").split(".")[1:]
        path = (tmp / "course_lib").joinpath(*topic).with_suffix(".py")
        _stub_in_file(path, ex_id)
        compileall.compile_dir(str(tmp / "course_lib"), quiet=2)
        for p in [tmp, *tmp.rglob("*")]:
            p.chmod(0o755 if p.is_dir() else 0o644)
        (tmp / ".done").touch()
        try:
            os.rename(tmp, dest.parent)
        except OSError:  # another worker built it first
            shutil.rmtree(tmp, ignore_errors=True)
    _VIEWS[(ex_id, tuple(roots))] = dest
    return dest


def _stub_in_file(path: Path, ex_id: str) -> None:
    from autograder.judge_process import stub_source

    text = path.read_text()
    lines = text.splitlines(keepends=True)
    for node in ast.parse(text).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name == ex_id:
            start = min([node.lineno] + [d.lineno for d in node.decorator_list]) - 1
            stub = stub_source(ex_id, isinstance(node, ast.ClassDef), ex_id)
            lines[start:node.end_lineno] = [stub]
    path.write_text("".join(lines))


# ------------------------------------------------------------------------------ results

class BadResult(ValueError):
    """What a judging process sent back cannot be trusted as an answer."""


def _read_file(path: Path, limit: int) -> bytes:
    """At most ``limit`` bytes of a regular file, never through a link (the folder is the student's)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        st = os.fstat(fd)
        if not (st.st_mode & 0o170000 == 0o100000):
            raise BadResult(f"{path.name} is not a plain file")
        if st.st_size > limit:
            raise BadResult(f"{path.name} is {st.st_size >> 20} MB, over the {limit >> 20} MB limit")
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(limit + 1)
    finally:
        os.close(fd)
    if len(data) > limit:
        raise BadResult(f"{path.name} is over the {limit >> 20} MB limit")
    return data


def validate(x, budget: dict | None = None, depth: int = 0) -> None:
    """Raise BadResult unless ``x`` is plain data within the size limits: every tensor's element count is
    checked before anything reads it, so a small file that claims a huge (strided) tensor costs nothing."""
    import torch

    b = budget if budget is not None else {"elements": MAX_ELEMENTS, "items": MAX_ITEMS, "text": MAX_TEXT}
    if depth > MAX_DEPTH:
        raise BadResult("nested too deeply")
    if x is None or type(x) in (bool, int, float, complex):
        return
    if type(x) is str:
        b["text"] -= len(x)
        if b["text"] < 0:
            raise BadResult("too much text")
        return
    if isinstance(x, torch.Tensor):
        if type(x) is not torch.Tensor and not isinstance(x, torch.nn.Parameter):
            raise BadResult(f"a tensor subclass ({type(x).__name__})")
        if x.layout != torch.strided or x.is_quantized:
            raise BadResult("a tensor that is not a plain dense tensor")
        b["elements"] -= x.numel()
        if b["elements"] < 0:
            raise BadResult(f"tensors of more than {MAX_ELEMENTS} elements in all")
        return
    if type(x) in (list, tuple, dict):
        b["items"] -= len(x)
        if b["items"] < 0:
            raise BadResult("too many items")
        values = x.values() if type(x) is dict else x
        if type(x) is dict and not all(type(k) in (str, int) for k in x):
            raise BadResult("a dict with keys that are not strings or numbers")
        for v in values:
            validate(v, b, depth + 1)
        return
    raise BadResult(f"a value of type {type(x).__name__}")


def load_result(path: Path):
    """The judging process's ``result.pt``: size-checked, its zip entries checked, loaded as plain data
    (``weights_only=True`` builds tensors and containers only, so no code runs), then validated."""
    import torch

    try:
        data = _read_file(path, MAX_RESULT_BYTES)
    except FileNotFoundError:
        raise
    except OSError as e:  # a link (ELOOP), a folder, a FIFO: the student's doing
        raise BadResult(f"{path.name} is not a plain file ({e.strerror})") from None
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            total = sum(i.file_size for i in z.infolist())
            if total > MAX_RESULT_BYTES or any(i.compress_type != zipfile.ZIP_STORED for i in z.infolist()):
                raise BadResult("its archive expands past the size limit or is compressed")
    except zipfile.BadZipFile as e:
        raise BadResult(f"not a result file ({e})") from None
    try:
        out = torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
    except Exception as e:
        raise BadResult(f"it could not be read as plain data ({type(e).__name__}: {str(e)[:160]})") from None
    validate(out)
    if type(out) is not dict:
        raise BadResult("it is not a dict")
    return out


def reached(folder: Path) -> list[str]:
    """The stubs and tripwires the judging process reached (lines of ``reached.txt``)."""
    try:
        text = _read_file(folder / "reached.txt", MAX_REACHED_BYTES).decode("utf-8", "replace")
    except (FileNotFoundError, BadResult):
        return []
    return sorted({ln.strip() for ln in text.splitlines() if ln.strip()})


# -------------------------------------------------------------------------------- judging

@dataclass
class Judging:
    """How judging processes are made for one grading worker (see :mod:`autograder.judge_process`)."""

    profile: str = "ci"
    memory_mb: int = 6000
    env: dict = field(default_factory=dict)
    sandbox: bool = True
    # launch(spec) -> a process handle with wait(timeout)/kill(); None: a fresh process
    launch: Callable[[dict], Any] | None = None
    modules: tuple = ()

    def start_seconds(self) -> float:
        return START_SECONDS["fork" if self.launch is not None else "spawn"]


def _device() -> str:
    try:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    except Exception:
        return "cpu"


def _time_reference(spec, cases) -> tuple[list, list[float]]:
    expected, seconds = [], []
    for case in cases:
        t0 = time.process_time()
        expected.append(spec.expected(case) if spec.reference is not None else None)
        seconds.append(time.process_time() - t0)
    return expected, seconds


def _spawn(spec: dict) -> subprocess.Popen:
    """A one-off zygote: a fresh trusted Python imports the libraries, then enters the sandbox and judges."""
    # Its own errors (before the sandbox) go to the grader's log folder, never to the student.
    log = open(os.environ.get("AUTOGRADER_JUDGE_LOG", os.devnull), "ab")
    try:
        return subprocess.Popen([sys.executable, "-m", "autograder.judge_process", json.dumps(spec)],
                                stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd="/", start_new_session=True)
    finally:
        log.close()


@dataclass
class Unsandboxed:
    """``--no-sandbox``: the judging process is still a process of its own with the reference out of memory,
    but it runs as the grader's user and sees what the grader sees (so the grades say they were made so)."""

    private: Path
    memory_bytes: int = 0
    unsandboxed: bool = True

    def prepare(self) -> "Unsandboxed":
        Path(self.private).mkdir(parents=True, exist_ok=True)
        return self

    def kill_all(self) -> None:
        pass

    def out_of_memory(self) -> bool:
        return False

    def close(self) -> None:
        shutil.rmtree(self.private, ignore_errors=True)


class Zygote:
    """The worker's judging zygote (:func:`autograder.judge_process.serve`): forks judging processes in
    milliseconds instead of starting a Python that imports torch for each. ``launch(spec)`` returns a handle
    with ``wait(timeout)``, ``kill()``, ``pid`` and ``returncode``, like a Popen."""

    def __init__(self, env: dict, modules=(), python: str | None = None):
        log = open(os.environ.get("AUTOGRADER_JUDGE_LOG", os.devnull), "ab")
        try:
            self.proc = subprocess.Popen([python or sys.executable, "-m", "autograder.judge_process", "--serve",
                                          json.dumps(list(modules))], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=log, env=env, cwd="/", start_new_session=True)
        finally:
            log.close()
        self.modules = tuple(modules)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def _line(self, timeout: float | None) -> dict | None:
        import select

        stdout = self.proc.stdout
        assert stdout is not None  # Popen(stdout=PIPE)
        if timeout is not None and not select.select([stdout], [], [], max(0.0, timeout))[0]:
            return None
        line = stdout.readline()
        if not line:
            raise RuntimeError("the judging zygote exited")
        return json.loads(line)

    def launch(self, spec: dict) -> "_Forked":
        stdin = self.proc.stdin
        assert stdin is not None  # Popen(stdin=PIPE)
        stdin.write((json.dumps({"sandbox": spec["sandbox"], "env": spec["env"]}) + "\n").encode())
        stdin.flush()
        reply = self._line(START_SECONDS["spawn"])  # the first request waits for the zygote's imports
        if not reply or "pid" not in reply:
            raise RuntimeError(f"the judging zygote did not fork: {reply}")
        return _Forked(self, reply["pid"])

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class _Forked:
    def __init__(self, zygote: Zygote, pid: int):
        self.zygote, self.pid = zygote, pid
        self.returncode: int | None = None

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            reply = self.zygote._line(timeout)
            if reply is None:  # only after a timeout: without one, _line waits for the reply
                raise subprocess.TimeoutExpired("judging process", timeout or 0.0)
            status = reply.get("status", 0)
            self.returncode = os.waitstatus_to_exitcode(status) if status is not None else -1
        return self.returncode

    def kill(self) -> None:
        if self.returncode is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


_ZYGOTES: dict = {}


def zygote(env: dict, modules=()) -> Zygote:
    """This worker's zygote for ``env`` (a new one when the environment or the lesson's modules change)."""
    key = (tuple(sorted(env.items())), tuple(modules))
    z = _ZYGOTES.get(key)
    if z is None or not z.alive():
        for other in _ZYGOTES.values():
            other.close()
        _ZYGOTES.clear()
        z = _ZYGOTES[key] = Zygote(env, modules)
    return z


def close_zygotes() -> None:
    for z in _ZYGOTES.values():
        z.close()
    _ZYGOTES.clear()


def _sandbox_dict(sb) -> dict:
    if isinstance(sb, Unsandboxed):
        return {"unsandboxed": True, "private": str(sb.private), "memory_bytes": sb.memory_bytes}
    return sb.to_spec()


def judge_one(task: Task, spec, nb_defs, setup_source: str, judging: Judging, seed: int) -> Verdict:
    """Run one exercise's judging process and judge what it returned."""
    import torch

    from autograder.sandbox import Sandbox, default_readonly
    from course_lib.checks import hidden_cases, judge_observations

    t_start = time.perf_counter()
    root = Path(tempfile.mkdtemp(prefix="vwb-j-", dir=_short_tmp()))
    os.chmod(root, 0o711)
    private = root / "p"
    memory = judging.memory_mb * 2**20 if judging.memory_mb else 0
    sb: Sandbox | Unsandboxed
    if judging.sandbox:
        view = course_view(task.id)
        sb = Sandbox(private=private, memory_bytes=memory, readonly=tuple(default_readonly()),
                     binds={str(view): str(_course_lib())})
    else:
        sb = Unsandboxed(private=private, memory_bytes=memory)
    try:
        sb.prepare()
        cases = hidden_cases(spec, seed, folder=private / "cases", profile=judging.profile)
        # A capstone's held-out labels stay here: the judging process gets the inputs only.
        torch.save([dataclasses.replace(c, secret=None) for c in cases], private / "cases.pt")
        if spec.seconds:  # a capstone trains: its budget is the profile's, not a multiple of the reference's
            expected = [None] * len(cases)
            limits = [float(spec.seconds.get(judging.profile) or max(spec.seconds.values()))] * len(cases)
        else:
            expected, ref_seconds = _time_reference(spec, cases)
            limits = [max(MIN_CASE_SECONDS, REF_FACTOR * s) for s in ref_seconds]
        topic = spec.module.removesuffix("_checks")
        statements, _ = nb_defs
        request = {"exercise": task.id, "name": task.name, "topic": topic, "setup": setup_source,
                   "statements": statements, "limits": limits, "device": _device(),
                   "forbidden": list(spec.forbidden)}
        (private / "request.json").write_text(json.dumps(request))
        for p in private.rglob("*"):
            p.chmod(0o755 if p.is_dir() else 0o644)
        launch = {"sandbox": _sandbox_dict(sb), "env": _child_env(judging), "modules": list(judging.modules)}
        proc = (judging.launch or _spawn)(launch)
        deadline = judging.start_seconds() + sum(limits) + 10
        try:
            timed_out = _watch(proc, private, limits, deadline)
        finally:
            sb.kill_all()
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # its session: what it started goes too (unsandboxed)
            except (ProcessLookupError, PermissionError, AttributeError):
                pass
            try:
                proc.kill()
                proc.wait(timeout=10)
            except Exception:
                pass
        oom = sb.out_of_memory()
        trips = reached(private)
        verdict = _decide(task, spec, private, cases, expected, trips, timed_out, oom, proc, judging,
                          judge_observations, deadline)
    finally:
        sb.close()
        shutil.rmtree(root, ignore_errors=True)
    verdict.seconds = time.perf_counter() - t_start
    return verdict


# A case's limit counts CPU seconds (the judging process's own timer stops it); from outside, a case is killed once
# its wall time passes WALL_FACTOR times its limit plus CASE_GRACE: its code swallowed the signal, or it waits
# without using CPU.
WALL_FACTOR, CASE_GRACE = 2.0, 1.5


def _watch(proc, private: Path, limits: list[float], deadline: float) -> bool:
    """Wait for the judging process; True when it had to be stopped: a case ran ``CASE_GRACE`` past its
    limit (its code caught the alarm), or the whole process outlived ``deadline``."""
    t0 = time.monotonic()
    progress = private / "progress"
    while True:
        try:
            proc.wait(timeout=0.1)
            return False
        except subprocess.TimeoutExpired:
            pass
        now = time.monotonic()
        if now - t0 > deadline:
            return True
        try:
            st = os.lstat(progress)
            index = int(_read_file(progress, 64).decode().strip() or 0)
            limit = limits[min(max(index, 0), len(limits) - 1)] if limits else MIN_CASE_SECONDS
            if time.time() - st.st_mtime > WALL_FACTOR * limit + CASE_GRACE:
                return True
        except (OSError, ValueError, BadResult):
            pass


def _decide(task, spec, private, cases, expected, trips, timed_out, oom, proc, judging, judge_observations,
            deadline) -> Verdict:
    own = [t for t in trips if t == f"reference {task.id}" or t.startswith("forbidden ")]
    if own:
        names = ", ".join(f"`{t.split(' ', 1)[1]}`" for t in own)
        what = "the course's reference" if any(t.startswith("reference") for t in own) else \
            "a library function that does the whole exercise"
        return Verdict(Status.FLAGGED, f"your `{task.id}` uses {what} ({names}) instead of implementing it: write the "
                                       "computation yourself (an instructor will review this flag).")
    try:
        result = load_result(private / "result.pt")
    except FileNotFoundError:
        result = None
    except BadResult as e:
        return Verdict(Status.ERROR, f"what your code returned could not be read back ({e}).")
    if result is None:
        if oom:
            return Verdict(Status.OUT_OF_MEMORY, f"your `{task.name}` used more than the {judging.memory_mb} MB "
                                                 "this exercise may use, and was stopped.")
        if timed_out:
            return Verdict(Status.TIMEOUT, f"your `{task.name}` kept running past its time limit and was stopped: "
                                           "look for a loop that never ends, or work far bigger than the case needs.")
        code = getattr(proc, "returncode", None)
        return Verdict(Status.ERROR, f"the judging of your `{task.name}` ended without a result (exit status {code}): "
                                     "does your code end Python (exit(), os._exit) or crash it?")
    problems = [str(p) for p in result.get("problems") or []][:5]
    note = ("\n  While loading your definitions: " + "; ".join(problems)) if problems else ""
    if result.get("missing"):
        return Verdict(Status.FAILED, f"✗ {task.id}: `{task.name}` is not defined: run the cell that defines it "
                                      f"(and the cells before it) without errors.{note}")
    observed = result.get("observed")
    if type(observed) is not dict or not observed.get("portable"):
        why = observed.get("why", "") if type(observed) is dict else ""
        return Verdict(Status.FAILED, f"✗ {task.id}: your answer could not be sent as plain data ({why}).{note}")
    try:
        verdict = judge_observations(spec, cases, observed, expected=expected, profile=judging.profile)
    except Exception as e:
        return Verdict(Status.ERROR, f"the grader could not judge {task.id}: {type(e).__name__}: {e}")
    if verdict.passed:
        # A capstone's pass still says which metric it reached; a small function's needs no words.
        return Verdict(Status.PASSED, verdict.message if spec.is_capstone else "")
    raised = [o for o in observed.get("observations") or [] if type(o) is dict and o.get("timeout")]
    return Verdict(Status.TIMEOUT if raised else Status.FAILED, verdict.message + note, mistake=verdict.mistake,
                   fraction=verdict.fraction)


def _child_env(judging: Judging) -> dict:
    env = {k: v for k, v in judging.env.items()}
    env.update({"COURSE_PROFILE": judging.profile, "COURSE_GRADING": "1", "MPLBACKEND": "Agg",
                "PYTHONDONTWRITEBYTECODE": "1"})
    return env


def _short_tmp() -> str:
    # AF_UNIX paths and long mount paths stay short under /tmp whatever TMPDIR a test sets.
    return "/tmp" if os.path.isdir("/tmp") else tempfile.gettempdir()


def judge_answer(task: Task, spec, nb, student: str = "", classmates: Sequence[str] = ()) -> Verdict:
    """A widget answer, read as a literal and judged against ``student``'s own target; an answer that is
    right only for a classmate's target is flagged for review (it was passed around), never scored."""
    from course_lib.checks import judge_observations, to_portable
    from course_lib.common import OFFLINE_STUDENT

    value, why = answer_value(nb, task.id, task.name)
    if why:
        return Verdict(Status.FAILED, f"✗ {task.id}: {why}")
    who = student or OFFLINE_STUDENT
    try:
        observed = {"portable": True, "kind": "answer", "value": to_portable(value)}
        result = judge_observations(spec, [], observed, student=who)
    except Exception as e:
        return Verdict(Status.FAILED, f"✗ {task.id}: your answer could not be read ({type(e).__name__}: {e}).")
    if result.passed:
        return Verdict(Status.PASSED)
    if spec.target is not None:
        for other in (*(c for c in classmates if c != who), OFFLINE_STUDENT):
            if other != who and judge_observations(spec, [], observed, student=other).passed:
                return Verdict(Status.FLAGGED, f"✗ {task.id}: your answer is right for another student's version "
                                               "of this exercise, not for yours (each student's widget draws its own "
                                               "target): an instructor will review it.", mistake=f"answer_of:{other}")
    return Verdict(Status.FAILED, result.message, mistake=result.mistake)


def _bound_names(statement: str) -> set[str]:
    """The names a kept statement (see :func:`_kept`) binds at the top level."""
    node = ast.parse(statement).body[0]
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return {node.name}
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        return {(a.asname or a.name).split(".")[0] for a in node.names}
    targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
    return {t.id for t in targets if isinstance(t, ast.Name)}


def untouched_stub(nb: nbformat.NotebookNode, release: nbformat.NotebookNode, task: Task,
                   statements: Sequence[tuple[int, int, str]]) -> bool:
    """Whether ``task``'s object is still the release's stub: its answer cell reads as the release hands it out, the
    stub raises ``NotImplementedError``, and no other cell binds the name. Its verdict is then known without a
    judging process (and without drawing the cases: a capstone's held-out set takes seconds to make). This can
    only ever fail an answer, never pass one."""
    from autograder.notebooks import normalized

    stub = next((c.source for c in release.cells if grade_id(c) == task.id), None)
    mine = [i for i, c in enumerate(nb.cells) if grade_id(c) == task.id]
    if stub is None or "NotImplementedError" not in stub or len(mine) != 1:
        return False
    if normalized(nb.cells[mine[0]].source) != normalized(stub):
        return False
    return all(cell == mine[0] or task.name not in _bound_names(text) for cell, _, text in statements)


def judge_submission(nb: nbformat.NotebookNode, source: nbformat.NotebookNode, judging: Judging,
                     seed: int | None = None, student: str = "", classmates: Sequence[str] = (),
                     release: nbformat.NotebookNode | None = None) -> dict[str, Verdict]:
    """A verdict for every exercise of the lesson (see the module docstring). ``seed``: secret, drawn here;
    ``student``/``classmates``: whose widget targets the answers are judged against (see :func:`judge_answer`);
    ``release``: the student version handed out, whose untouched stubs fail without a judging process."""
    from course_lib.checks import get_spec, not_implemented

    seed = secrets.randbits(62) if seed is None else seed
    setup = next((c.source for c in source.cells if grade_id(c) == "setup"), "")
    defs = definitions(nb)
    solution_cells = {grade_id(c): i for i, c in enumerate(nb.cells) if grade_id(c)}
    out: dict[str, Verdict] = {}
    for task in plan(source):
        if task.problem:
            out[task.id] = Verdict(Status.ERROR, task.problem)
            continue
        try:
            spec = get_spec(task.id)
        except KeyError as e:
            out[task.id] = Verdict(Status.ERROR, str(e))
            continue
        if spec.kind == "answer":
            out[task.id] = judge_answer(task, spec, nb, student, classmates)
            continue
        if release is not None and untouched_stub(nb, release, task, defs[0]):
            out[task.id] = Verdict(Status.FAILED, not_implemented(spec).message, stub=True)
            continue
        broken = defs[1].get(solution_cells.get(task.id, -1))
        ex_seed = (seed + zlib.crc32(task.id.encode())) % (1 << 62)
        try:
            verdict = judge_one(task, spec, defs, setup, judging, ex_seed)
        except Exception as e:  # the grader's own failure: say so, never pass
            verdict = Verdict(Status.ERROR, f"the grader could not judge {task.id}: {type(e).__name__}: {e}")
        if broken and verdict.status != Status.PASSED:
            verdict.message += f"\n  Your answer cell has a syntax error ({broken}), so nothing in it was defined."
        out[task.id] = verdict
    return out


def finish(nb: nbformat.NotebookNode, found: dict[str, Verdict]) -> None:
    """The executed notebook made fit to show: each test cell says what the grader decided, nothing more."""
    for cell in nb.cells:
        ex_id = cell.get("metadata", {}).get("autograder", {}).get("test")
        if not ex_id:
            continue
        v = found.get(ex_id)
        text = ("✓ passed" if v.status == Status.PASSED else f"{v.status}: {v.message}") if v else ""
        cell.source = f"# hidden tests for {ex_id} ran in the grader"
        timeouts = [o for o in cell.get("outputs", []) if o.get("ename") == "TimeoutError"]
        cell.outputs = ([nbformat.v4.new_output("stream", name="stdout", text=text + "\n")] if text else []) + timeouts


# Why a held cell was not run, by what its function is (see hold_calls).
HELD_BECAUSE = {
    "stopped": "it calls a function of yours that the grader had to stop when judging it (see its exercise above)",
    "stub": "it uses a function you have not written yet (still the stub you were handed; see its exercise above)",
}


def hold_calls(nb: nbformat.NotebookNode, names: set[str]) -> dict[int, str]:
    """Blank, in place, the code cells that call or pass one of ``names``: functions the judge had to stop (in the
    notebook they would only wait out their time limit), or untouched stubs (they would only raise
    ``NotImplementedError``, after a capstone's self-check drew its data); the original sources by cell index."""
    held: dict[int, str] = {}
    if not names:
        return held
    for i, cell in enumerate(nb.cells):
        if cell.get("cell_type") != "code":
            continue
        try:
            tree = _parse(cell.source)
        except (SyntaxError, ValueError, MemoryError, RecursionError):
            continue
        called = {n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
        passed = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
        if (called | passed) & names:
            held[i] = cell.source
            cell.source = "pass"
    return held


def release_calls(nb: nbformat.NotebookNode, held: dict[int, str], because: str = "stopped") -> None:
    """Put back the cells :func:`hold_calls` blanked, each with a note saying why it was not run
    (:data:`HELD_BECAUSE`)."""
    for i, text in held.items():
        cell = nb.cells[i]
        cell.source = text
        cell.execution_count = None
        cell.outputs = [nbformat.v4.new_output("stream", name="stderr",
                                               text=f"[autograder] not run: {HELD_BECAUSE[because]}.\n")]


def blank_tests(nb: nbformat.NotebookNode, source: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """The notebook the kernel runs: each test cell is a comment, so no hidden test enters the student's process."""
    out = nbformat.from_dict(dict(nb))
    cells = []
    tests = {ex.test_id: ex.id for ex in exercises(source)}
    for cell in nb.cells:
        cell = nbformat.from_dict(dict(cell))
        gid = grade_id(cell)
        if gid in tests:
            cell.cell_type = "code"
            cell.source = f"# hidden tests for {tests[gid]} run in the grader, not in this notebook"
            cell.outputs, cell.execution_count = [], None
            cell.metadata["autograder"] = {"test": tests[gid]}
        cells.append(cell)
    out.cells = cells
    return out
