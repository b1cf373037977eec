"""Grading a class: a pipeline of small steps, one submission at a time, many at once.

    read -> restore -> judge -> score -> run the notebook -> feedback -> write

Each step has its own module (:mod:`~autograder.read`, :mod:`~autograder.notebooks` (restore),
:mod:`~autograder.judge` and :mod:`~autograder.judge_process` (in a :mod:`~autograder.sandbox`),
:mod:`~autograder.pool` (kernels), :mod:`~autograder.feedback`, :mod:`~autograder.write`,
:mod:`~autograder.journal`); this one puts them in order. The grade comes from the judge alone: the
student's notebook still runs, in a sandboxed kernel, for the feedback page, but nothing it does
decides a score. A submission that breaks a step is recorded with a status and a message that tells
the student what to do; the rest of the class is graded regardless.
"""
from __future__ import annotations

import datetime
import hashlib
import os
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import nbformat

from autograder import notebooks
from autograder.read import Submission, discover
from autograder.status import Status
from autograder.write import FIELDS, write_grades

__all__ = ["FIELDS", "Options", "Row", "Submission", "discover", "grade_all", "grade_one", "restore", "score",
           "write_grades"]


@dataclass
class Row:
    student_id: str
    lesson: str
    exercise: str
    score: float
    max_score: float
    status: str
    message: str = ""
    mistake: str = ""  # the known mistake the answer matches; grades.csv leaves it out, the report groups by it


def _default_kernels() -> str:
    from autograder.pool import default_mode  # not at import time: it brings jupyter_client

    return default_mode()


@dataclass
class Options:
    profile: str = "ci"
    cell_timeout: int | None = None  # seconds per cell; None: the lesson's own limit (cell_timeout())
    kernel_name: str | None = None
    threads: int | None = None  # CPU threads per kernel; None: the cores shared among the workers
    extra_env: dict = field(default_factory=dict)
    memory_mb: int = 6000  # per sandbox (cgroup; RLIMIT_AS/RLIMIT_DATA without one); 0: no limit
    output_limit: int = 2_000_000  # bytes of output kept per cell; the rest is dropped with a note
    output_budget: int = 20_000_000  # bytes of output kept per notebook, display updates and widget traffic included
    # Seconds for the whole notebook run; None: the lesson's own (time_budget()).
    time_budget: float | None = None
    # How kernels start (pool.MODES): "fork" from a server that did the imports once,
    # "warm" as processes that import while the previous submission runs, or "cold".
    kernels: str = field(default_factory=_default_kernels)
    last: bool = False  # no submission follows in this worker: start no spare kernel
    sandbox: bool = True  # False only with --no-sandbox: grades made without one say so
    run_notebook: bool = True  # run the notebook for the feedback page (the grade never depends on it)
    # Every student id of the class: a widget answer right only for one of theirs is flagged (see judge_answer).
    classmates: tuple = ()


# Per-cell time limits in seconds, per lesson and profile; a lesson's source notebook can
# also set ``metadata.autograder.cell_timeout``; ``--timeout`` overrides both.
CELL_TIMEOUTS = {"default": {"ci": 300, "cpu": 900, "gpu": 900}}
# The notebook's whole run: this multiple of the solution's own run plus a margin, where the source notebook
# records its cells' times for the profile it was executed in (ci), else these seconds.
BUDGET_FACTOR, BUDGET_MARGIN = 1.5, 10.0
TIME_BUDGETS = {"ci": 900, "cpu": 1800, "gpu": 1800}


def cell_timeout(lesson: str, opts: Options, source: nbformat.NotebookNode | None = None) -> int:
    if opts.cell_timeout:
        return int(opts.cell_timeout)
    meta = (source.metadata.get("autograder", {}) if source is not None else {}).get("cell_timeout")
    if isinstance(meta, dict):
        meta = meta.get(opts.profile)
    if meta:
        return int(meta)
    table = CELL_TIMEOUTS.get(lesson, CELL_TIMEOUTS["default"])
    return int(table.get(opts.profile, CELL_TIMEOUTS["default"].get(opts.profile, 300)))


def _recorded_seconds(cell) -> float | None:
    """How long a cell of a source notebook took when it was executed (nbclient records it), if recorded."""
    ex = cell.get("metadata", {}).get("execution") or {}
    try:
        t0 = datetime.datetime.fromisoformat(ex["iopub.status.busy"].replace("Z", "+00:00"))
        t1 = datetime.datetime.fromisoformat(ex["shell.execute_reply"].replace("Z", "+00:00"))
    except (KeyError, TypeError, ValueError, AttributeError):
        return None
    return max(0.0, (t1 - t0).total_seconds())


def solution_seconds(source: nbformat.NotebookNode) -> float | None:
    """How long the source notebook's own run took, from its cells' recorded times (None if not recorded)."""
    times = [t for t in map(_recorded_seconds, source.cells) if t is not None]
    return sum(times) if times else None


# A cell the student did not change may take this multiple of the solution's own time plus a margin: a self-check
# that calls a function that never returns stops within seconds, not the 300 s of a cell of theirs. The times are
# recorded once, on whatever machine executed the solution; a grading machine running three notebooks to a core
# pair ran a recorded 3.6 s lr_find past 3 x 3.6 + 2 s, hence the wide factor and margin.
CELL_FACTOR, CELL_MARGIN = 5.0, 10.0


def cell_limits(nb: nbformat.NotebookNode, source: nbformat.NotebookNode, opts: Options) -> dict[int, float]:
    """Per-cell limits for the cells of ``nb`` that are the source's own cells (same text), in the profile the
    source was executed in (ci); the student's own cells keep the uniform per-cell limit."""
    if opts.profile != "ci" or opts.cell_timeout:
        return {}
    ref: dict[str, float] = {}
    for cell in source.cells:
        t = _recorded_seconds(cell) if cell.get("cell_type") == "code" else None
        if t is not None:
            ref.setdefault(notebooks.normalized(cell.source), t)
    out = {}
    for i, cell in enumerate(nb.cells):
        t = ref.get(notebooks.normalized(cell.get("source", ""))) if cell.get("cell_type") == "code" else None
        if t is not None:
            out[i] = CELL_FACTOR * t + CELL_MARGIN
    return out


def time_budget(opts: Options, source: nbformat.NotebookNode) -> float:
    """Seconds the student's notebook may run in all. The solutions are executed in the ci profile, so there a
    notebook gets 1.5 times the solution's own time plus 10 s: a hanging function costs seconds, not the whole
    class's patience, and since the grade never depends on this run, only the feedback page is cut short."""
    if opts.time_budget:
        return float(opts.time_budget)
    ref = solution_seconds(source) if opts.profile == "ci" else None
    if ref is not None:
        return BUDGET_FACTOR * ref + BUDGET_MARGIN
    return float(TIME_BUDGETS.get(opts.profile, TIME_BUDGETS["cpu"]))


# ------------------------------------------------------------------------------- restore

def restore(student: nbformat.NotebookNode, source: nbformat.NotebookNode,
            release: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """The student's notebook with every graded cell that is not theirs to edit put back.

    Test cells come from the source and read-only cells too, so editing, deleting, duplicating,
    moving or markdown-ifying a test cannot change a grade; cells whose metadata was stripped are
    recognised by content (see :mod:`autograder.restore`, which also says what it put back).
    """
    from autograder.restore import restore as put_back

    return put_back(student, source, release).nb


# --------------------------------------------------------------------------------- score

def score(sub: Submission, source: nbformat.NotebookNode, verdicts: dict,
          nb: nbformat.NotebookNode | None = None) -> list[Row]:
    """One row per exercise, from the judge's verdicts alone: all the points for ``passed``, a capstone's band's
    share of them, none otherwise; then one row per written answer of the (restored) notebook ``nb``."""
    rows = []
    for ex in notebooks.exercises(source):
        v = verdicts.get(ex.id)
        status, msg = ((v.status, v.message) if v is not None
                       else (Status.ERROR, "the grader did not judge this exercise."))
        pts = round(ex.points * v.share, 2) if v is not None else 0.0
        rows.append(Row(sub.student_id, sub.lesson, ex.id, pts, ex.points, str(status), msg,
                        v.mistake if v is not None else ""))
    return rows + written_rows(sub, source, nb)


# --- written answers (manually graded) -----------------------------------------------------------------------
WRITTEN_WAITS = "a person grades this written answer; it counts 0 points until they have."
WRITTEN_EMPTY = f"no answer was written (the cell is empty or still says {notebooks.TEXT_STUB}): 0 points."


def written_rows(sub: Submission, source: nbformat.NotebookNode, nb: nbformat.NotebookNode | None) -> list[Row]:
    """One row per written answer: ``to grade`` with 0 points until a person grades it (formgrader), or ``failed``
    when the student left it unanswered, as nbgrader's autograder scores an untouched manual cell 0 at once."""
    wanted = notebooks.written(source)
    ids = {w.id for w in wanted}
    # By grade id whatever the cell's type: the student's cell may have been made code (by them, or by restore).
    cells = {gid: c for c in (nb.cells if nb is not None else []) if (gid := notebooks.grade_id(c)) in ids}
    asked = {notebooks.grade_id(c): c for c in source.cells}
    rows = []
    for w in wanted:
        cell = cells.get(w.id)
        if cell is not None and not notebooks.answered(cell, asked.get(w.id)):
            rows.append(Row(sub.student_id, sub.lesson, w.id, 0.0, w.points, str(Status.FAILED), WRITTEN_EMPTY))
        else:
            rows.append(Row(sub.student_id, sub.lesson, w.id, 0.0, w.points, str(Status.TO_GRADE), WRITTEN_WAITS))
    return rows


def error_rows(sub: Submission, source: nbformat.NotebookNode, message: str, status: str = Status.ERROR) -> list[Row]:
    parts = [(e.id, e.points) for e in notebooks.exercises(source)]
    parts += [(w.id, w.points) for w in notebooks.written(source)]
    return [Row(sub.student_id, sub.lesson, ex, 0.0, points, str(status), message) for ex, points in parts]
# --- end written answers -------------------------------------------------------------------------------------


# --------------------------------------------------------------------------- one and all

def _judging(opts: Options, source: nbformat.NotebookNode):
    """How this worker makes judging processes: forked from a zygote that imported the lesson's libraries
    (``--kernels fork``, the default), or each a fresh Python that imports them itself."""
    from autograder import judge, pool

    env, modules = pool.kernel_env(opts), tuple(pool.lesson_imports(source))
    launch = judge.zygote(env, modules).launch if opts.kernels == "fork" else None
    return judge.Judging(profile=opts.profile, memory_mb=opts.memory_mb, env=env, sandbox=opts.sandbox,
                         launch=launch, modules=modules)


def _run_notebook(sub: Submission, nb, source, opts: Options, info: dict, hanging: frozenset[str] = frozenset(),
                  stubs: frozenset[str] = frozenset()):
    """Run the notebook in a sandboxed kernel for the feedback page: the executed notebook, and the student's
    files that were left out (a link, too large...), each with why.

    ``hanging``: names of the student's functions that the judge had to stop; ``stubs``: those still the release's
    stub. A cell that uses one is not run (it would only wait out its limit, or raise NotImplementedError): it says
    why instead."""
    from autograder import judge, pool
    from autograder.read import student_files

    assert sub.path is not None  # a submission without a notebook is not run
    run_nb = judge.blank_tests(nb, source)
    held = judge.hold_calls(run_nb, set(hanging))
    held_stubs = judge.hold_calls(run_nb, set(stubs))
    run_opts = replace(opts, cell_timeout=cell_timeout(sub.lesson, opts, source),
                       time_budget=time_budget(opts, source))
    files, skipped = student_files(sub.path.parent)
    km = pool.take(run_opts, warm_modules=pool.lesson_imports(source))
    try:
        for name, data in files.items():
            (Path(str(km.folder)) / name).write_bytes(data)
        run = pool.execute(run_nb, None, run_opts, kernel=km, cell_limits=cell_limits(run_nb, source, opts))
    finally:
        pool.release(km)
    judge.release_calls(run_nb, held)
    judge.release_calls(run_nb, held_stubs, because="stub")
    info.update(seconds=run.seconds, wait=run.wait)
    if run.status != Status.OK and run.status != "ok":
        info.update(status=str(run.status), detail=run.detail)
    return run_nb, skipped


def render_page(nb: nbformat.NotebookNode | None, rows: list[Row], left_out=(), **extras) -> tuple[str, str | None]:
    """The feedback page as HTML text, and None or what went wrong rendering it.

    :func:`autograder.feedback.write_feedback` renders with its fallbacks (a page that cannot be shown becomes the
    score table); it writes to a private temporary file here, read back, so a worker on another machine returns
    the page as data and the instructor's process writes ``OUT/feedback/`` itself. ``extras`` go to
    ``write_feedback`` as they are (``restored``...)."""
    from autograder.feedback import write_feedback

    with tempfile.TemporaryDirectory(prefix="autograder-page-") as folder:
        path = Path(folder) / "page.html"
        problem = write_feedback(nb, rows, path, left_out=left_out, **extras)
        return path.read_text(encoding="utf-8"), problem


def feedback_path(out: Path, student_id: str, lesson: str) -> Path:
    return Path(out) / "feedback" / student_id / f"{lesson}.html"


def _page(nb, rows: list[Row], left_out, sub: Submission, out: Path | None, info: dict, **extras) -> None:
    """Render the page into ``info["page"]``; write it under ``out`` too when a caller gave one."""
    page, problem = render_page(nb, rows, left_out, **extras)
    info["page"] = page
    if problem:
        info["feedback_problem"] = problem
    if out is not None:
        from autograder.write import write_atomic

        write_atomic(feedback_path(out, sub.student_id, sub.lesson), page)


def grade_one(sub: Submission, out: Path | None, opts: Options, info: dict | None = None, *,
              left_out=()) -> list[Row]:
    """Grade one submission end to end; never raises.

    ``info``, when given, receives the submission's status (``ok``, ``missing``, ``error``,
    ``timeout``, ``kernel_died``, ``out_of_memory``, ...), a detail line, timings and the feedback
    page as HTML text (``page``). The page is written to ``out/feedback/<student>/<lesson>.html``
    only when ``out`` is given: :func:`grade_all` passes None and writes pages itself, so that a
    worker on another machine (Dask) never needs the instructor's file system. ``left_out``: the
    student's files the caller already left out when it read the submission, as ``(name, why)``,
    shown on the page with any the run leaves out.
    """
    from autograder import judge
    from autograder.read import strip_widget_state

    info = {} if info is None else info
    info.setdefault("status", str(Status.OK))
    source = notebooks.read(notebooks.source_path(sub.lesson))
    if sub.problem:
        info.update(status=str(Status.MISSING), detail=sub.problem)
        rows = error_rows(sub, source, sub.problem, status=Status.MISSING)
        _page(None, rows, left_out, sub, out, info)
        return rows
    try:
        if sub.path is None:
            raise notebooks.NotebookError("no notebook was found for this lesson.")
        student = notebooks.read(sub.path)
    except notebooks.NotebookError as e:
        info.update(status=str(Status.ERROR), detail=str(e))
        rows = error_rows(sub, source, str(e))
        _page(None, rows, left_out, sub, out, info)
        return rows
    from autograder.restore import restore as put_back

    release = notebooks.read(notebooks.release_path(sub.lesson))
    restored = put_back(student, source, release)
    nb = restored.nb
    strip_widget_state(nb)
    t_judge = time.perf_counter()
    verdicts = judge.judge_submission(nb, source, _judging(opts, source), student=sub.student_id,
                                      classmates=tuple(opts.classmates), release=release)
    info["judge_seconds"] = time.perf_counter() - t_judge
    rows = score(sub, source, verdicts, nb)
    shown, run_left_out = None, []
    if opts.run_notebook:
        try:
            judged = [(t.name, verdicts[t.id]) for t in judge.plan(source) if verdicts.get(t.id) is not None]
            hanging = frozenset(name for name, v in judged if v.status == Status.TIMEOUT)
            stubs = frozenset(name for name, v in judged if v.stub)
            shown, run_left_out = _run_notebook(sub, nb, source, opts, info, hanging, stubs)
            judge.finish(shown, verdicts)
        except Exception as e:  # the feedback run is not the grade: report it, keep the rows
            info.update(status=str(Status.ERROR), detail=f"the notebook could not be run for the feedback page: "
                                                          f"{type(e).__name__}: {e}")
    t_fb = time.perf_counter()
    _page(shown, rows, list(left_out) + list(run_left_out), sub, out, info, restored=restored.changes)
    info["feedback_seconds"] = time.perf_counter() - t_fb
    return rows


# ------------------------------------------------------------------------- one task

# The grading options a task carries as plain data (Options' fields), and what a task returns:
# {"entry": the journal entry (rows included), "page": the feedback page's HTML, "worker": who graded it}.


def _grade_safely(sub: Submission, opts: Options, info: dict, left_out=(), unreadable: str = "") -> list[Row]:
    """:func:`grade_one`, and error rows with a page for whatever escapes it: one broken submission never stops
    the class. ``unreadable``: why the instructor's side could not read the notebook (too large, vanished...),
    graded exactly as :func:`grade_one` grades a notebook it cannot read."""
    try:
        if unreadable:
            info.update(status=str(Status.ERROR), detail=unreadable)
            source = notebooks.read(notebooks.source_path(sub.lesson))
            rows = error_rows(sub, source, unreadable)
            _page(None, rows, left_out, sub, None, info)
            return rows
        return grade_one(sub, None, opts, info, left_out=left_out)
    except Exception as e:  # last line of defence
        info.update(status=str(Status.ERROR), detail=f"grading failed: {type(e).__name__}: {e}")
        source = notebooks.read(notebooks.source_path(sub.lesson))
        rows = error_rows(sub, source, f"grading failed: {type(e).__name__}: {e}")
        try:
            info["page"], _ = render_page(None, rows, left_out)
        except Exception:
            info["page"] = None
        return rows


def course_versions(lesson: str) -> dict:
    """What a worker must share with the instructor to grade ``lesson`` as the instructor would: the grader's
    code (:func:`autograder.journal.grader_version`: autograder and course_lib) and the lesson's source and
    student notebooks (the hidden tests, the points, the cells put back)."""
    from autograder.journal import grader_version

    def digest(path: Path) -> str:
        return hashlib.sha256(path.read_bytes()).hexdigest()[:16] if path.exists() else "absent"

    return {"grader": grader_version(), "source": digest(notebooks.source_path(lesson)),
            "release": digest(notebooks.release_path(lesson))}


def make_task(sub: Submission, opts: Options, versions: dict) -> dict:
    """One submission as plain data for a worker that sees none of the instructor's files: the notebook's bytes
    and the student's other files, read here as the grader always reads them (no links followed, sizes bounded),
    the options and the course versions the worker must have."""
    from autograder.read import MAX_NOTEBOOK_BYTES, read_bytes, student_files

    task: dict[str, Any] = {"student_id": sub.student_id, "lesson": sub.lesson, "problem": sub.problem, "name": None,
            "notebook": None, "unreadable": "", "files": {}, "left_out": [], "options": asdict(opts),
            "versions": versions}
    if sub.problem or sub.path is None:
        return task
    task["name"] = sub.path.name
    try:
        task["notebook"] = read_bytes(sub.path, MAX_NOTEBOOK_BYTES)
    except notebooks.NotebookError as e:
        task["unreadable"] = str(e)
        return task
    if opts.run_notebook:  # the files are for the notebook run only
        files, skipped = student_files(sub.path.parent)
        task["files"], task["left_out"] = files, [list(s) for s in skipped]
    return task


def _plain_name(name: str | None, default: str) -> str:
    """``name`` if it is a single file name (it came from a folder listing), else ``default``."""
    if not name or name in (".", "..") or "/" in name or "\0" in name or len(name.encode()) > 255:
        return default
    return name


def _materialize(task: dict, folder: Path) -> Submission:
    """The task's submission written into ``folder`` (private to this task), as a :class:`Submission` there."""
    from autograder.read import safe_name

    if task["problem"] or task["notebook"] is None:
        return Submission(task["student_id"], task["lesson"], None, task["problem"])
    # In a folder named after the lesson, as in SUBMISSIONS: notebooks.read() checks the notebook against it.
    here = folder / "submission" / _plain_name(task["lesson"], "lesson")
    here.mkdir(mode=0o700, parents=True)
    for name, data in task["files"].items():
        if safe_name(name) and not name.lower().endswith(".ipynb"):
            (here / name).write_bytes(data)
    path = here / _plain_name(task["name"], f"{task['lesson']}.ipynb")
    path.write_bytes(task["notebook"])
    return Submission(task["student_id"], task["lesson"], path)


# One submission at a time per process: the pools (fork server, spare kernel, judging zygote) are process-global.
# A Dask worker started with several threads would otherwise run two tasks on them at once.
_ONE_AT_A_TIME = threading.Lock()


def _grade_task(task: dict) -> dict:
    """Grade one submission in a worker (a local pool process, a Dask worker, or this process) from plain data;
    returns plain data: the journal entry, the feedback page and the worker's name.

    The worker first checks that its course code is the instructor's and that it can make sandboxes: if not, it
    raises :class:`autograder.cluster.WorkerRefused` and grades nothing, rather than grade with other tests or
    unconfined."""
    from autograder import cluster

    worker = cluster.worker_name()
    cluster.check_versions(task["versions"], task["lesson"], worker)
    opts = Options(**task["options"])
    cluster.check_sandbox(opts, worker)
    opts = replace(opts, extra_env={**opts.extra_env, **cluster.kernel_gpu_env()})
    with _ONE_AT_A_TIME, tempfile.TemporaryDirectory(prefix="autograder-task-") as folder:
        info: dict = {}
        t0 = time.perf_counter()
        sub = _materialize(task, Path(folder))
        rows = _grade_safely(sub, opts, info, left_out=[tuple(x) for x in task["left_out"]],
                             unreadable=task["unreadable"])
        status = info.get("status", str(Status.OK))
        if any(r.status == Status.FLAGGED for r in rows):  # decided per exercise by the judge
            status = str(Status.FLAGGED)
        entry = {"student_id": task["student_id"], "lesson": task["lesson"], "status": status,
                 "detail": info.get("detail", ""), "sandbox": opts.sandbox, "worker": worker,
                 "seconds": round(info.get("seconds", 0.0), 3),
                 "judge_seconds": round(info.get("judge_seconds", 0.0), 3),
                 "wait": round(info.get("wait", 0.0), 3),
                 "feedback_seconds": round(info.get("feedback_seconds", 0.0), 3),
                 "total_seconds": round(time.perf_counter() - t0, 3),
                 "rows": [asdict(r) for r in rows]}
    return {"entry": entry, "page": info.get("page"), "worker": worker}


class SandboxUnavailable(RuntimeError):
    """No sandbox can be made on this machine, and grading without one was not asked for."""


def _init_worker(gpus) -> None:
    """Each worker takes one GPU (round robin) for all its kernels, when there are GPUs."""
    gpu = gpus.get()
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu


# Seconds the grading loop waits for a result before it looks at the workers again (progress, new workers).
REFRESH_WAIT = 2.0


def _eta(done: int, left: int, t0: float) -> str:
    """When the rest will be done at the pace so far (per graded submission, all workers together)."""
    if not done:
        return "?"
    seconds = int(left * (time.perf_counter() - t0) / done)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def grade_all(root: Path, out: Path, workers: int = 1, lessons: list[str] | None = None,
              opts: Options | None = None, progress: bool = True, fresh: bool = False,
              stats: dict | None = None, scheduler: str | None = None, security=None,
              gradebook: Path | None = None, late_policy=None, due_dates: Path | None = None,
              roster: Path | None = None) -> list[Row]:
    """Grade every submission under ``root``; writes ``out/grades.csv``, ``out/totals.csv``,
    ``out/report.html``, ``out/lms.csv`` and ``out/feedback/``.

    After grading (see :func:`_afterwards`): lateness from each folder's ``timestamp.txt`` against the lesson's due
    date (``due_dates``: a JSON file, else the source notebook's ``autograder.due``) under ``late_policy`` (an
    :class:`autograder.late.Policy`; none by default); every submission recorded in nbgrader's ``gradebook`` when
    one is given; ``lms.csv`` for Canvas (``roster``: who is who); the similarity analysis's report section.

    Submissions already in ``out/journal.jsonl`` with the same content and grader are not
    graded again (``fresh`` forgets the journal); each one graded is journaled at once.

    Where: ``workers`` local processes (one: this process), or a Dask cluster when ``scheduler`` is given
    (``local:N``, or a scheduler's address with ``security`` for TLS; see :mod:`autograder.cluster`). Either way
    each submission is one task (:func:`_grade_task`) that gets plain data and returns plain data, and only this
    process writes ``out/``: a page as its result arrives, then its journal line. ``stats`` receives counts:
    ``found``, ``reused``, ``graded``, ``unfinished`` (not graded: a worker pool or the cluster went away),
    ``refused`` (one dict per submission a worker refused: worker, reason), ``unsent`` (not sent because every
    worker had refused), ``killed`` (graded ``kernel_died`` after killing two workers), ``engine`` (where it ran)
    and, on Dask, ``scheduler`` (its address, as soon as it is known).
    """
    from collections import deque
    from concurrent.futures import FIRST_COMPLETED, wait

    from tqdm.auto import tqdm

    from autograder import cluster
    from autograder import pool as kernels
    from autograder.journal import Journal, submission_key
    from autograder.judge import close_zygotes
    from autograder.report import write_report
    from autograder.write import write_atomic, write_totals

    opts = opts or Options()
    # --- issue 21: late work is read before grading, so that a bad due date stops the run before it starts.
    from autograder import late as lateness

    policy = late_policy or lateness.Policy()
    due = lateness.due_dates(sorted(set(lessons or notebooks.lessons())), due_dates)
    # --- end issue 21
    if scheduler and not scheduler.startswith("local:"):
        cluster.check_address(scheduler, security)  # before anything else: an unsafe address is refused at once
    if opts.sandbox and not scheduler:  # Dask workers check their own machine (the task refuses)
        from autograder.sandbox import available

        ok, why = available()
        if not ok:
            raise SandboxUnavailable(f"no sandbox can be made here ({why}); grading runs student code, so it is "
                                     "refused. Run as root on Linux, or pass --no-sandbox to grade without one "
                                     "(the report and totals.csv will say so).")
    if opts.threads is None and (not scheduler or scheduler.startswith("local:")):
        n = int(scheduler.split(":", 1)[1]) if scheduler else workers
        opts.threads = max(1, (os.cpu_count() or 1) // max(1, n))
    stats = {} if stats is None else stats
    subs = discover(root, lessons)
    opts = replace(opts, classmates=tuple(sorted({s.student_id for s in subs})))
    journal = Journal(out, fresh=fresh)
    keys = {(s.student_id, s.lesson): submission_key(s, opts) for s in subs}
    todo = [s for s in subs if journal.done(s, keys[(s.student_id, s.lesson)]) is None]
    # Lesson by lesson (students in order within each): a worker's judging zygote imports one lesson's libraries and
    # is made anew when the lesson changes, so a class sent student by student would pay that at every task.
    todo.sort(key=lambda s: s.lesson)
    stats.update(found=len(subs), reused=len(subs) - len(todo), graded=0, unfinished=0, refused=[], killed=0)
    versions: dict[str, dict] = {}

    def task(sub: Submission, last: bool) -> dict:
        if sub.lesson not in versions:
            versions[sub.lesson] = course_versions(sub.lesson)
        return make_task(sub, replace(opts, last=last), versions[sub.lesson])

    def finish(sub: Submission, entry: dict, page: str | None) -> None:
        if page is None:  # the worker could not even render the score table: do it here
            page, _ = render_page(None, [Row(**r) for r in entry["rows"]])
        write_atomic(feedback_path(out, sub.student_id, sub.lesson), page)  # the page first: journaled => shown
        entry["key"] = keys[(sub.student_id, sub.lesson)]
        journal.record(entry)
        stats["graded"] += 1
        bar.update()

    def killed(sub: Submission, exc: BaseException) -> dict:
        message = ("grading this notebook stopped the grader's worker process twice (on two workers), so it was "
                   "not graded further; your instructor will look at it.")
        source = notebooks.read(notebooks.source_path(sub.lesson))
        rows = error_rows(sub, source, message, status=Status.KERNEL_DIED)
        return {"student_id": sub.student_id, "lesson": sub.lesson, "status": str(Status.KERNEL_DIED),
                "detail": f"two grading workers died while grading it ({type(exc).__name__}: {exc})",
                "sandbox": opts.sandbox, "worker": getattr(getattr(exc, "last_worker", None), "address", ""),
                "seconds": 0.0, "judge_seconds": 0.0, "wait": 0.0, "feedback_seconds": 0.0, "total_seconds": 0.0,
                "rows": [asdict(r) for r in rows]}

    # The ETA is the postfix's (at the pace of all workers together), next to how many workers are busy.
    bar = tqdm(total=len(todo), desc="grading", unit="nb", disable=not progress,
               bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]")
    if not todo:
        engine = None
    else:
        engine = cluster.open_engine(scheduler, workers, len(todo), profile=opts.profile, security=security,
                                     log=tqdm.write if progress else (lambda *_: None))
        stats["engine"] = engine.describe()
        if isinstance(engine, cluster.DaskEngine):
            stats["scheduler"] = engine.scheduler_address
        if progress and scheduler:
            tqdm.write(f"grading on {stats['engine']}")
    try:
        queue = deque(todo)
        pending: dict = {}
        stopped: Exception | None = None
        t0 = time.perf_counter()
        while engine is not None and (queue or pending):
            try:
                room = engine.window() - len(pending) if queue and stopped is None else 0
            except cluster.NoWorkers as e:
                stopped, room = e, 0
            while room > 0 and queue:
                sub = queue[0]
                try:  # the last ones go to workers that will have nothing after them: no spare kernel there
                    fut = engine.submit(_grade_task, task(sub, last=len(queue) - 1 < max(1, engine.slots())))
                except Exception as e:  # the pool or the client is gone, or every worker refused
                    stopped = e
                    break
                queue.popleft()
                pending[fut] = sub
                room -= 1
            if not pending:
                if stopped is not None or not queue:
                    break
                time.sleep(REFRESH_WAIT)  # no worker may take a task yet (say, none with a GPU has joined)
                continue
            done, _ = wait(list(pending), timeout=REFRESH_WAIT, return_when=FIRST_COMPLETED)
            for fut in done:
                sub = pending.pop(fut)
                try:
                    result = fut.result()
                except BaseException as e:  # noqa: BLE001 -- cancelled futures raise CancelledError
                    kind = cluster.failure(e)
                    if kind == "refused":  # not journaled: the next run, on the right code, grades it
                        stats["refused"].append({"student_id": sub.student_id, "lesson": sub.lesson,
                                                 "worker": getattr(e, "worker", ""), "reason": str(e)})
                        engine.avoid(getattr(e, "worker", ""))
                    elif kind == "killed":
                        stats["killed"] += 1
                        finish(sub, killed(sub, e), None)
                    else:  # a grading worker pool or the cluster itself went away: not the student's fault
                        stats["unfinished"] += 1
                    continue
                finish(sub, result["entry"], result["page"])
            if progress:
                busy, total = engine.load(len(pending))
                bar.set_postfix_str(f"workers {busy} busy/{max(0, total - busy)} idle, "
                                    f"eta {_eta(stats['graded'], len(queue) + len(pending), t0)}", refresh=False)
        if isinstance(stopped, cluster.NoWorkers):  # every worker refused: the rest were never sent
            stats["unsent"] = len(queue)
        else:
            stats["unfinished"] += len(queue)
            if stopped is not None and queue:
                stats["stopped"] = f"{type(stopped).__name__}: {stopped}"
    finally:
        bar.close()
        if engine is not None:
            engine.close()
        if isinstance(engine, cluster.InlineEngine):
            kernels.close_all()
            close_zygotes()
    entries = [journal.entries[k] for k in ((s.student_id, s.lesson) for s in subs) if k in journal.entries]
    rows = [Row(**r) for e in entries for r in e["rows"]]
    write_grades(rows, out / "grades.csv")
    sections = _afterwards(root, out, subs, entries, lessons, stats, policy, due, gradebook, roster, progress)
    write_totals(entries, out / "totals.csv")
    write_report(entries, out / "report.html", sections=sections, policy=policy.describe())
    stats["entries"] = entries
    return rows


# --- issue 21: what the instructor's process does once every submission is graded -----------------------------

def _afterwards(root: Path, out: Path, subs: list[Submission], entries: list[dict], lessons, stats: dict, policy,
                due: dict, gradebook: Path | None, roster: Path | None, progress: bool) -> list[str]:
    """Lateness (each entry's ``late``, in memory: the policy may change without regrading; and a note on each
    late feedback page), nbgrader's gradebook, ``lms.csv`` and the similarity analysis; the report's extra
    sections. Never raises: a gradebook that cannot be written is ``stats["gradebook_error"]``."""
    from autograder import late as lateness
    from autograder.lms import read_roster, write_lms

    lateness.annotate(subs, entries, policy, due, root)
    for e in entries:
        lateness.mark_page(feedback_path(out, e["student_id"], e["lesson"]), e["late"], policy)
    stats["late"] = sum(1 for e in entries if e["late"]["late"])
    people: dict = {}
    if gradebook is not None:
        from autograder.gradebook import manual_scores, record

        try:
            stats["gradebook"] = record(gradebook, subs, entries, due, policy, progress=progress)
            people = manual_scores(gradebook)
        except Exception as e:  # noqa: BLE001 -- the grades are written regardless; the command says it failed
            stats["gradebook_error"] = f"{type(e).__name__}: {e}"
    write_lms(entries, out / "lms.csv", read_roster(roster), people, policy)
    sections = []
    try:
        from autograder import similarity  # written alongside; grading works before it exists

        sections.append(similarity.analyse(subs, out, lessons or sorted({s.lesson for s in subs})))
    except ModuleNotFoundError as e:
        if e.name != "autograder.similarity":
            stats["similarity"] = f"{type(e).__name__}: {e}"
    except Exception as e:  # noqa: BLE001 -- the analysis is advice, never a reason to lose the grades
        stats["similarity"] = f"{type(e).__name__}: {e}"
    return [s for s in sections if s]
# --- end issue 21

