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
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

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


# A cell the student did not change may take this multiple of the solution's own time plus a margin, and never
# less than the floor: a self-check that calls a function that never returns stops within seconds.
CELL_FACTOR, CELL_MARGIN, CELL_FLOOR = 3.0, 2.0, 5.0


def cell_limits(nb: nbformat.NotebookNode, source: nbformat.NotebookNode, opts: Options) -> dict[int, float]:
    """Per-cell limits for the cells of ``nb`` that are the source's own cells (same text), in the profile the
    source was executed in (ci); the student's own cells keep the uniform per-cell limit."""
    if opts.profile != "ci" or opts.cell_timeout:
        return {}
    ref = {}
    for cell in source.cells:
        t = _recorded_seconds(cell) if cell.get("cell_type") == "code" else None
        if t is not None:
            ref.setdefault(notebooks.normalized(cell.source), t)
    out = {}
    for i, cell in enumerate(nb.cells):
        t = ref.get(notebooks.normalized(cell.get("source", ""))) if cell.get("cell_type") == "code" else None
        if t is not None:
            out[i] = max(CELL_FLOOR, CELL_FACTOR * t + CELL_MARGIN)
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
    recognised by content (see ``notebooks.restore``).
    """
    return notebooks.restore(student, source, release)


# --------------------------------------------------------------------------------- score

def score(sub: Submission, source: nbformat.NotebookNode, verdicts: dict) -> list[Row]:
    """One row per exercise, from the judge's verdicts alone: points only for ``passed``."""
    rows = []
    for ex in notebooks.exercises(source):
        v = verdicts.get(ex.id)
        status, msg = (v.status, v.message) if v is not None else (Status.ERROR, "the grader did not judge this exercise.")
        pts = ex.points if status == Status.PASSED else 0.0
        rows.append(Row(sub.student_id, sub.lesson, ex.id, pts, ex.points, str(status), msg,
                        v.mistake if v is not None else ""))
    return rows


def error_rows(sub: Submission, source: nbformat.NotebookNode, message: str, status: str = Status.ERROR) -> list[Row]:
    return [Row(sub.student_id, sub.lesson, ex.id, 0.0, ex.points, str(status), message)
            for ex in notebooks.exercises(source)]


# --------------------------------------------------------------------------- one and all

def _judging(opts: Options, source: nbformat.NotebookNode):
    """How this worker makes judging processes: forked from a zygote that imported the lesson's libraries
    (``--kernels fork``, the default), or each a fresh Python that imports them itself."""
    from autograder import judge, pool

    env, modules = pool.kernel_env(opts), tuple(pool.lesson_imports(source))
    launch = judge.zygote(env, modules).launch if opts.kernels == "fork" else None
    return judge.Judging(profile=opts.profile, memory_mb=opts.memory_mb, env=env, sandbox=opts.sandbox,
                         launch=launch, modules=modules)


def _run_notebook(sub: Submission, nb, source, opts: Options, info: dict, hanging: set[str] = frozenset()):
    """Run the notebook in a sandboxed kernel for the feedback page: the executed notebook, and the student's
    files that were left out (a link, too large...), each with why.

    ``hanging``: names of the student's functions that the judge had to stop. A cell that calls one is not run
    (it would only wait out its limit): it says why instead."""
    from autograder import judge, pool
    from autograder.read import student_files

    run_nb = judge.blank_tests(nb, source)
    held = judge.hold_calls(run_nb, hanging)
    run_opts = replace(opts, cell_timeout=cell_timeout(sub.lesson, opts, source),
                       time_budget=time_budget(opts, source))
    files, skipped = student_files(sub.path.parent)
    km = pool.take(run_opts, warm_modules=pool.lesson_imports(source))
    try:
        for name, data in files.items():
            (Path(km.folder) / name).write_bytes(data)
        run = pool.execute(run_nb, None, run_opts, kernel=km, cell_limits=cell_limits(run_nb, source, opts))
    finally:
        pool.release(km)
    judge.release_calls(run_nb, held)
    info.update(seconds=run.seconds, wait=run.wait)
    if run.status != Status.OK and run.status != "ok":
        info.update(status=str(run.status), detail=run.detail)
    return run_nb, skipped


def grade_one(sub: Submission, out: Path, opts: Options, info: dict | None = None) -> list[Row]:
    """Grade one submission end to end; never raises.

    ``info``, when given, receives the submission's status (``ok``, ``missing``, ``error``,
    ``timeout``, ``kernel_died``, ``out_of_memory``, ...), a detail line and timings.
    """
    from autograder import judge
    from autograder.feedback import write_feedback
    from autograder.read import strip_widget_state

    info = {} if info is None else info
    info.setdefault("status", str(Status.OK))
    source = notebooks.read(notebooks.source_path(sub.lesson))
    fb_path = out / "feedback" / sub.student_id / f"{sub.lesson}.html"
    if sub.problem:
        info.update(status=str(Status.MISSING), detail=sub.problem)
        rows = error_rows(sub, source, sub.problem, status=Status.MISSING)
        write_feedback(None, rows, fb_path)
        return rows
    try:
        student = notebooks.read(sub.path)
    except notebooks.NotebookError as e:
        info.update(status=str(Status.ERROR), detail=str(e))
        rows = error_rows(sub, source, str(e))
        write_feedback(None, rows, fb_path)
        return rows
    release = notebooks.read(notebooks.release_path(sub.lesson))
    nb = restore(student, source, release)
    strip_widget_state(nb)
    t_judge = time.perf_counter()
    verdicts = judge.judge_submission(nb, source, _judging(opts, source))
    info["judge_seconds"] = time.perf_counter() - t_judge
    rows = score(sub, source, verdicts)
    shown, left_out = None, []
    if opts.run_notebook:
        try:
            hanging = {t.name for t in judge.plan(source) if verdicts.get(t.id) is not None
                       and verdicts[t.id].status == Status.TIMEOUT}
            shown, left_out = _run_notebook(sub, nb, source, opts, info, hanging)
            judge.finish(shown, verdicts)
        except Exception as e:  # the feedback run is not the grade: report it, keep the rows
            info.update(status=str(Status.ERROR), detail=f"the notebook could not be run for the feedback page: "
                                                          f"{type(e).__name__}: {e}")
    t_fb = time.perf_counter()
    problem = write_feedback(shown, rows, fb_path, left_out=left_out)
    if problem:
        info["feedback_problem"] = problem
    info["feedback_seconds"] = time.perf_counter() - t_fb
    return rows


def _grade_safely(sub: Submission, out: Path, opts: Options, info: dict | None = None) -> list[Row]:
    info = {} if info is None else info
    try:
        return grade_one(sub, out, opts, info)
    except Exception as e:  # last line of defence: one broken submission never stops the class
        info.update(status=str(Status.ERROR), detail=f"grading failed: {type(e).__name__}: {e}")
        source = notebooks.read(notebooks.source_path(sub.lesson))
        return error_rows(sub, source, f"grading failed: {type(e).__name__}: {e}")


def _grade_task(sub: Submission, out: Path, opts: Options) -> dict:
    """Grade one submission (in a worker); the journal entry for it."""
    info: dict = {}
    t0 = time.perf_counter()
    rows = _grade_safely(sub, out, opts, info)
    status = info.get("status", str(Status.OK))
    if any(r.status == Status.FLAGGED for r in rows):  # decided per exercise by the judge
        status = str(Status.FLAGGED)
    return {"student_id": sub.student_id, "lesson": sub.lesson, "status": status,
            "detail": info.get("detail", ""), "sandbox": opts.sandbox,
            "seconds": round(info.get("seconds", 0.0), 3), "judge_seconds": round(info.get("judge_seconds", 0.0), 3),
            "wait": round(info.get("wait", 0.0), 3), "feedback_seconds": round(info.get("feedback_seconds", 0.0), 3),
            "total_seconds": round(time.perf_counter() - t0, 3),
            "rows": [asdict(r) for r in rows]}


class SandboxUnavailable(RuntimeError):
    """No sandbox can be made on this machine, and grading without one was not asked for."""


def _init_worker(gpus) -> None:
    """Each worker takes one GPU (round robin) for all its kernels, when there are GPUs."""
    gpu = gpus.get()
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu


def grade_all(root: Path, out: Path, workers: int = 1, lessons: list[str] | None = None,
              opts: Options | None = None, progress: bool = True, fresh: bool = False,
              stats: dict | None = None) -> list[Row]:
    """Grade every submission under ``root``; writes ``out/grades.csv``, ``out/totals.csv``,
    ``out/report.html`` and ``out/feedback/``.

    Submissions already in ``out/journal.jsonl`` with the same content and grader are not
    graded again (``fresh`` forgets the journal); each one graded is journaled at once.
    """
    from tqdm.auto import tqdm

    from autograder import pool as kernels
    from autograder.journal import Journal, submission_key
    from autograder.judge import close_zygotes
    from autograder.report import write_report
    from autograder.write import write_totals

    opts = opts or Options()
    if opts.sandbox:
        from autograder.sandbox import available

        ok, why = available()
        if not ok:
            raise SandboxUnavailable(f"no sandbox can be made here ({why}); grading runs student code, so it is "
                                     "refused. Run as root on Linux, or pass --no-sandbox to grade without one "
                                     "(the report and totals.csv will say so).")
    if opts.threads is None:
        opts.threads = max(1, (os.cpu_count() or 1) // max(1, workers))
    stats = {} if stats is None else stats
    subs = discover(root, lessons)
    journal = Journal(out, fresh=fresh)
    keys = {(s.student_id, s.lesson): submission_key(s, opts) for s in subs}
    todo = [s for s in subs if journal.done(s, keys[(s.student_id, s.lesson)]) is None]
    stats.update(found=len(subs), reused=len(subs) - len(todo), graded=0, unfinished=0)
    bar = tqdm(total=len(todo), desc="grading", unit="nb", disable=not progress)

    def finish(sub: Submission, entry: dict) -> None:
        entry["key"] = keys[(sub.student_id, sub.lesson)]
        journal.record(entry)
        stats["graded"] += 1
        bar.update()

    if workers <= 1 or len(todo) <= 1:
        try:
            for i, sub in enumerate(todo):
                finish(sub, _grade_task(sub, out, replace(opts, last=i == len(todo) - 1)))
        finally:
            kernels.close_all()
            close_zygotes()
    else:
        import multiprocessing as mp
        from concurrent.futures.process import BrokenProcessPool

        ctx = mp.get_context("spawn")
        gpus, slots = kernels.gpu_ids(), ctx.Queue()
        for i in range(workers):
            slots.put(gpus[i % len(gpus)] if gpus else None)
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker,
                                 initargs=(slots,)) as pool:
            # The last few go to workers that will have nothing after them: no spare kernel there.
            futures = {pool.submit(_grade_task, sub, out, replace(opts, last=i >= len(todo) - workers)): sub
                       for i, sub in enumerate(todo)}
            for fut in as_completed(futures):
                try:
                    entry = fut.result()
                except BrokenProcessPool:  # a grading worker itself died: not the student's fault, not journaled
                    stats["unfinished"] += 1
                    continue
                finish(futures[fut], entry)
    bar.close()
    entries = [journal.entries[k] for k in ((s.student_id, s.lesson) for s in subs) if k in journal.entries]
    rows = [Row(**r) for e in entries for r in e["rows"]]
    write_grades(rows, out / "grades.csv")
    write_totals(entries, out / "totals.csv")
    write_report(entries, out / "report.html")
    stats["entries"] = entries
    return rows
