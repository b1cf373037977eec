"""Grading a class: a pipeline of small steps, one submission at a time, many at once.

    discover -> load -> restore -> execute -> score -> feedback -> write_grades

Each step does one thing. A submission that breaks a step is recorded with a status and a
message that tells the student what to do; the rest of the class is graded regardless.
"""
from __future__ import annotations

import csv
import os
import shutil
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import nbformat

from autograder import notebooks
from autograder.notebooks import NotebookError, grade_id, is_solution, is_test

FIELDS = ["student_id", "lesson", "exercise", "score", "max_score", "status"]
KERNEL_NAME = "vision-workbook"


@dataclass
class Submission:
    student_id: str
    lesson: str
    path: Path | None
    problem: str = ""  # why it cannot be graded, when discover already knows


@dataclass
class Row:
    student_id: str
    lesson: str
    exercise: str
    score: float
    max_score: float
    status: str
    message: str = ""


def _default_kernels() -> str:
    from autograder.kernels import default_mode  # not at import time: it brings jupyter_client

    return default_mode()


@dataclass
class Options:
    profile: str = "ci"
    cell_timeout: int | None = None  # seconds per cell; None: the lesson's own limit (cell_timeout())
    kernel_name: str | None = None
    threads: int | None = None  # CPU threads per kernel; None: the cores shared among the workers
    extra_env: dict = field(default_factory=dict)
    memory_mb: int = 6000  # per kernel (RLIMIT_DATA); 0: no limit
    output_limit: int = 2_000_000  # bytes of output kept per cell; the rest is dropped with a note
    # How kernels start (kernels.MODES): "fork" from a server that did the imports once,
    # "warm" as processes that import while the previous submission runs, or "cold".
    kernels: str = field(default_factory=_default_kernels)
    last: bool = False  # no submission follows in this worker: start no spare kernel


# Per-cell time limits in seconds, per lesson and profile; a lesson's source notebook can
# also set ``metadata.autograder.cell_timeout``; ``--timeout`` overrides both.
CELL_TIMEOUTS = {"default": {"ci": 300, "cpu": 900, "gpu": 900}}


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


# ------------------------------------------------------------------------------ discover

def discover(root: Path, lessons: list[str] | None = None) -> list[Submission]:
    """Every ``<student_id>/<lesson>/`` under ``root``, with the notebook to grade in it."""
    known = set(notebooks.lessons())
    wanted = set(lessons) if lessons else known
    subs: list[Submission] = []
    for student in sorted(p for p in Path(root).iterdir() if p.is_dir() and not p.name.startswith(".")):
        for lesson_dir in sorted(p for p in student.iterdir() if p.is_dir() and not p.name.startswith(".")):
            lesson = lesson_dir.name
            if lesson not in known:
                print(f"warning: {student.name}/{lesson}: no lesson of that name in solutions/, skipped")
                continue
            if lesson not in wanted:
                continue
            expected = lesson_dir / f"{lesson}.ipynb"
            if expected.exists():
                subs.append(Submission(student.name, lesson, expected))
                continue
            others = sorted(lesson_dir.glob("*.ipynb"))
            if len(others) == 1:  # a renamed copy ("06_fill_level (1).ipynb") is still the work
                subs.append(Submission(student.name, lesson, others[0]))
            else:
                found = ", ".join(p.name for p in others) or "no notebook"
                subs.append(Submission(student.name, lesson, None,
                                       f"expected {lesson}.ipynb in {student.name}/{lesson}/, found {found}."))
    return subs


# ------------------------------------------------------------------------------- restore

def restore(student: nbformat.NotebookNode, source: nbformat.NotebookNode,
            release: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """The student's notebook with every graded cell that is not theirs to edit put back.

    Test cells come from the source (with their hidden tests) and read-only cells too, so
    editing, deleting, duplicating, moving or markdown-ifying a test cannot change a grade;
    cells whose metadata was stripped are recognised by content (see ``notebooks.restore``).
    """
    return notebooks.restore(student, source, release)


# ------------------------------------------------------------------------------- execute

def kernel_name(preferred: str | None = None) -> str:
    """The course's kernel if it is registered, else the Python that runs the grader."""
    from jupyter_client.kernelspec import KernelSpecManager

    names = KernelSpecManager().find_kernel_specs()
    for name in (preferred, KERNEL_NAME):
        if name and name in names:
            return name
    return "python3"


@dataclass
class Execution:
    status: str = "ok"  # ok | timeout | kernel_died | out_of_memory
    failed_at: int | None = None  # index of the cell where execution stopped
    seconds: float = 0.0  # running the notebook's cells, kernel start excluded
    wait: float = 0.0  # waiting for a ready kernel before the first cell
    detail: str = ""  # what happened, for the class report


def kernel_env(opts: Options) -> dict:
    """The whole environment of a grading kernel."""
    # pytest renames PYTEST_CURRENT_TEST for every test; a kernel environment that changes
    # makes a new pool (and fork server) each time, so leave it out.
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"}
    return {**env, "COURSE_PROFILE": opts.profile, "COURSE_GRADING": "1",
            **_thread_env(opts.threads), **opts.extra_env}


def _signal_name(code) -> str:
    import signal

    if code is None:
        return "unknown cause"
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"


def execute(nb: nbformat.NotebookNode, workdir: Path, opts: Options, warm_modules=()) -> Execution:
    """Run every code cell in a fresh kernel, in ``workdir``; errors do not stop the run.

    The kernel comes from this process's :class:`~autograder.kernels.WarmPool` (started
    early, ``warm_modules`` imported) and serves this notebook only. A cell over the time
    limit is interrupted and marked, and the run goes on (a kernel that ignores the
    interrupt is stopped, the rest counts as not run); a dead kernel ends the run, and the
    cells after it count as not run. Each cell keeps at most ``opts.output_limit`` bytes of output.
    """
    from nbclient.exceptions import CellTimeoutError, DeadKernelError

    from autograder import kernels

    limit = opts.cell_timeout or 300
    pool = kernels.pool(kernel_name(opts.kernel_name), kernel_env(opts), opts.memory_mb, opts.kernels)
    result, t0 = Execution(), time.perf_counter()
    km = pool.take(warm_modules, spare=not opts.last)
    client = kernels.CappedClient(nb, km=km, timeout=limit, allow_errors=True, interrupt_on_timeout=False,
                                  record_timing=False, output_limit=opts.output_limit,
                                  resources={"metadata": {"path": str(workdir)}})
    try:
        with client.setup_kernel():
            client.run_quietly(f"import os as _o; _o.chdir({str(workdir)!r}); del _o")
            result.wait = time.perf_counter() - t0
            pool.start_spare()
            t1 = time.perf_counter()
            for index, cell in enumerate(nb.cells):
                if cell.cell_type != "code":
                    continue
                try:
                    client.execute_cell(cell, index)
                except CellTimeoutError:
                    cell.outputs.append(nbformat.v4.new_output(
                        "error", ename="TimeoutError", evalue=f"this cell ran longer than {limit} s and was stopped",
                        traceback=[]))
                    kernels.wait(km.interrupt_kernel())
                    if result.status == "ok":
                        result.status, result.failed_at = "timeout", index
                        result.detail = f"cell {index} ran longer than {limit} s"
                    if not client.responds(within=min(30, limit)):
                        # The interrupt did not land (a loop in C code): stop here, the rest counts as not run.
                        result.detail += "; the kernel ignored the interrupt and was stopped"
                        break
                except DeadKernelError:
                    code = km.provisioner.process.poll() if getattr(km, "provisioner", None) and km.provisioner.process else None
                    result.status, result.failed_at = "kernel_died", index
                    result.detail = f"the kernel died in cell {index} ({_signal_name(code)})"
                    break
            result.seconds = time.perf_counter() - t1
    finally:
        if getattr(client, "kc", None) is not None:  # the client is ours to close (nbclient only closes its own)
            kernels.wait(client.kc.stop_channels())
        pool.release(km)
    if result.status == "ok":
        for index, cell in enumerate(nb.cells):
            if any(o.get("ename") == "MemoryError" for o in cell.get("outputs", [])):
                result.status = "out_of_memory"
                result.detail = f"cell {index} ran out of memory (limit {opts.memory_mb} MB)"
                break
    return result


# --------------------------------------------------------------------------------- score

def _error(cell) -> tuple[str, str] | None:
    for out in cell.get("outputs", []):
        if out.get("output_type") == "error":
            return out.get("ename", ""), out.get("evalue", "")
    return None


def score(sub: Submission, nb: nbformat.NotebookNode, source: nbformat.NotebookNode, run: Execution,
          plan=None) -> list[Row]:
    """One row per exercise, decided in this process.

    With a ``plan`` (see :mod:`autograder.judge`) the verdicts come from judging what the
    kernel observed, never from what it printed or raised: ``tampered`` and ``flagged`` rows
    score 0. Without one, full points when the test cell ran without an error.
    """
    from autograder import judge

    found = judge.verdicts(plan) if plan is not None else {}
    index = {grade_id(c): i for i, c in enumerate(nb.cells) if grade_id(c)}
    rows = []
    for ex in notebooks.exercises(source):
        i = index[ex.test_id]
        cell = nb.cells[i]
        err = _error(cell)
        ran = cell.get("execution_count") is not None or err is not None
        verdict = found.get(ex.id)
        if verdict is not None and verdict.status == "tampered":
            status, msg = verdict.status, verdict.message
        elif run.status == "kernel_died" and run.failed_at is not None and i >= run.failed_at:
            status, msg = "kernel_died", "the kernel died before this exercise was tested (out of memory, or a crash in your code)."
        elif err and err[0] == "TimeoutError":
            status, msg = "timeout", err[1]
        elif verdict is not None:
            status, msg = verdict.status, verdict.message
        elif plan is not None and err:
            status, msg = "error", f"the hidden tests could not collect your answer ({err[0]}: {err[1]})"
        elif err and err[0] in ("CheckFailed", "AssertionError"):
            status, msg = "failed", err[1]
        elif err:
            status, msg = "error", f"{err[0]}: {err[1]}"
        elif not ran:
            status, msg = "not_run", "this test did not run."
        else:
            status, msg = "passed", ""
        pts = ex.points if status == "passed" else 0.0
        rows.append(Row(sub.student_id, sub.lesson, ex.id, pts, ex.points, status, msg))
    if plan is not None:
        judge.finish(nb, plan, found)
    return rows


def error_rows(sub: Submission, source: nbformat.NotebookNode, message: str, status: str = "error") -> list[Row]:
    return [Row(sub.student_id, sub.lesson, ex.id, 0.0, ex.points, status, message) for ex in notebooks.exercises(source)]


# ------------------------------------------------------------------------------ feedback

def feedback(nb: nbformat.NotebookNode | None, rows: list[Row], path: Path) -> None:
    """An HTML page per student and lesson: a score table with the reasons, then the graded notebook."""
    from autograder.feedback import render

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(nb, rows), encoding="utf-8")


# --------------------------------------------------------------------------- one and all

def grade_one(sub: Submission, out: Path, opts: Options, info: dict | None = None) -> list[Row]:
    """Grade one submission end to end, in a private temporary copy; never raises.

    ``info``, when given, receives the submission's status (``ok``, ``missing``, ``error``,
    ``timeout``, ``kernel_died``, ``out_of_memory``, ...), a detail line and timings.
    """
    info = {} if info is None else info
    info.setdefault("status", "ok")
    source = notebooks.read(notebooks.source_path(sub.lesson))
    fb_path = out / "feedback" / sub.student_id / f"{sub.lesson}.html"
    if sub.problem:
        info.update(status="missing", detail=sub.problem)
        rows = error_rows(sub, source, sub.problem, status="missing")
        feedback(None, rows, fb_path)
        return rows
    try:
        student = notebooks.read(sub.path)
    except NotebookError as e:
        info.update(status="error", detail=str(e))
        rows = error_rows(sub, source, str(e))
        feedback(None, rows, fb_path)
        return rows
    release = notebooks.read(notebooks.release_path(sub.lesson))
    nb = restore(student, source, release)
    workdir = Path(tempfile.mkdtemp(prefix=f"grade-{sub.student_id}-{sub.lesson}-"))
    try:
        from autograder import judge  # hidden tests leave the notebook; the grader judges (see judge.py)

        nb, plan = judge.instrument(nb, source, workdir)
        # The student's folder may hold files their notebook reads; they get a copy, never the original.
        for item in sub.path.parent.iterdir():
            if item.is_file() and item.suffix != ".ipynb":
                shutil.copy2(item, workdir / item.name)
        from autograder.kernels import lesson_imports

        run_opts = replace(opts, cell_timeout=cell_timeout(sub.lesson, opts, source))
        try:
            # The next kernel is warmed with the lesson's own imports (from the source, never the student's).
            run = execute(nb, workdir, run_opts, warm_modules=lesson_imports(source))
        except Exception as e:  # a kernel that cannot even start is the grader's problem, reported per row
            info.update(status="error", detail=f"could not execute: {type(e).__name__}: {e}")
            rows = error_rows(sub, source, f"the notebook could not be executed: {type(e).__name__}: {e}")
            feedback(nb, rows, fb_path)
            return rows
        info.update(seconds=run.seconds, wait=run.wait)
        if run.status != "ok":
            info.update(status=run.status, detail=run.detail)
        rows = score(sub, nb, source, run, plan)
        _blame_timeouts(nb, rows, run_opts.cell_timeout)
        t_fb = time.perf_counter()
        feedback(nb, rows, fb_path)
        info["feedback_seconds"] = time.perf_counter() - t_fb
        return rows
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _blame_timeouts(nb: nbformat.NotebookNode, rows: list[Row], limit: int) -> None:
    """An exercise whose answer cell was stopped at the time limit fails as ``timeout``,
    with a message that says so, rather than with the error its test then hits."""
    stopped = {grade_id(c) for c in nb.cells if is_solution(c)
               and any(o.get("ename") == "TimeoutError" for o in c.get("outputs", []))}
    for r in rows:
        if r.exercise in stopped and r.status not in ("passed", "tampered", "flagged"):
            r.status = "timeout"
            r.message = (f"your cell defining {r.exercise} ran longer than {limit} s and was stopped "
                         f"(then: {r.message}). Look for a loop that never ends or work far bigger than asked.")


def _thread_env(threads: int | None) -> dict:
    """Cap each kernel's math threads. Two kernels each spinning two OpenMP threads on two
    cores run several times slower than two kernels with one thread each."""
    if not threads:
        return {}
    return {name: str(threads) for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}


def write_grades(rows: list[Row], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS, extrasaction="ignore")
        w.writeheader()
        for r in sorted(rows, key=lambda r: (r.student_id, r.lesson)):
            w.writerow({k: v for k, v in asdict(r).items()})
    os.replace(tmp, path)


def _grade_safely(sub: Submission, out: Path, opts: Options, info: dict | None = None) -> list[Row]:
    info = {} if info is None else info
    try:
        return grade_one(sub, out, opts, info)
    except Exception as e:  # last line of defence: one broken submission never stops the class
        info.update(status="error", detail=f"grading failed: {type(e).__name__}: {e}")
        source = notebooks.read(notebooks.source_path(sub.lesson))
        return error_rows(sub, source, f"grading failed: {type(e).__name__}: {e}")


# Submission statuses that the class report lists, most serious first.
PROBLEMS = ("tampered", "flagged", "missing", "error", "kernel_died", "out_of_memory", "timeout")


def _grade_task(sub: Submission, out: Path, opts: Options) -> dict:
    """Grade one submission (in a worker); the journal entry for it."""
    info: dict = {}
    t0 = time.perf_counter()
    rows = _grade_safely(sub, out, opts, info)
    status = info.get("status", "ok")
    found = {r.status for r in rows}
    for s in ("tampered", "flagged"):  # decided per exercise by the scoring step
        if s in found:
            status = s
            break
    return {"student_id": sub.student_id, "lesson": sub.lesson, "status": status,
            "detail": info.get("detail", ""), "seconds": round(info.get("seconds", 0.0), 3),
            "wait": round(info.get("wait", 0.0), 3), "feedback_seconds": round(info.get("feedback_seconds", 0.0), 3),
            "total_seconds": round(time.perf_counter() - t0, 3),
            "rows": [asdict(r) for r in rows]}


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

    from autograder import kernels
    from autograder.journal import Journal, submission_key
    from autograder.report import write_report, write_totals

    opts = opts or Options()
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
