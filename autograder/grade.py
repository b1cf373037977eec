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
from dataclasses import asdict, dataclass, field
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


@dataclass
class Options:
    profile: str = "ci"
    cell_timeout: int = 300
    kernel_name: str | None = None
    threads: int | None = None  # CPU threads per kernel; None: the cores shared among the workers
    extra_env: dict = field(default_factory=dict)


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
    editing a test cannot change a grade. Graded cells the student deleted are re-inserted
    after the graded cell that precedes them (solution cells as the release's stub).
    """
    src = {grade_id(c): c for c in source.cells if grade_id(c)}
    rel = {grade_id(c): c for c in release.cells if grade_id(c)}
    cells = []
    for cell in student.cells:
        gid = grade_id(cell)
        if gid in src and not is_solution(src[gid]):
            cell = nbformat.from_dict(dict(src[gid]))
        elif gid in src:
            cell.metadata["nbgrader"] = dict(src[gid].metadata["nbgrader"])
        cells.append(cell)
    present = {grade_id(c) for c in cells}
    order = [grade_id(c) for c in source.cells if grade_id(c)]
    for i, gid in enumerate(order):
        if gid in present:
            continue
        new = nbformat.from_dict(dict(rel.get(gid) if is_solution(src[gid]) else src[gid]))
        before = next((order[j] for j in range(i - 1, -1, -1) if order[j] in present), None)
        at = 0 if before is None else next(k for k, c in enumerate(cells) if grade_id(c) == before) + 1
        cells.insert(at, new)
        present.add(gid)
    out = nbformat.from_dict(dict(student))
    out.cells = cells
    out.metadata["kernelspec"] = source.metadata.get("kernelspec", out.metadata.get("kernelspec", {}))
    return out


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
    status: str = "ok"  # ok | timeout | kernel_died
    failed_at: int | None = None  # index of the cell where execution stopped
    seconds: float = 0.0


def execute(nb: nbformat.NotebookNode, workdir: Path, opts: Options) -> Execution:
    """Run every code cell in a fresh kernel, in ``workdir``; errors do not stop the run.

    A cell over the time limit is interrupted and marked, and the run goes on; a dead
    kernel ends the run, and the cells after it count as not run.
    """
    from nbclient import NotebookClient
    from nbclient.exceptions import CellTimeoutError, DeadKernelError

    client = NotebookClient(nb, timeout=opts.cell_timeout, kernel_name=kernel_name(opts.kernel_name),
                            allow_errors=True, interrupt_on_timeout=False, record_timing=False,
                            resources={"metadata": {"path": str(workdir)}})
    result, t0 = Execution(), time.perf_counter()
    with client.setup_kernel(cwd=str(workdir)):
        for index, cell in enumerate(nb.cells):
            if cell.cell_type != "code":
                continue
            try:
                client.execute_cell(cell, index)
            except CellTimeoutError:
                cell.outputs.append(nbformat.v4.new_output(
                    "error", ename="TimeoutError", evalue=f"this cell ran longer than {opts.cell_timeout} s and was stopped",
                    traceback=[]))
                client.km.interrupt_kernel()
                result.status, result.failed_at = "timeout", index
            except DeadKernelError:
                result.status, result.failed_at = "kernel_died", index
                break
    result.seconds = time.perf_counter() - t0
    return result


# --------------------------------------------------------------------------------- score

def _error(cell) -> tuple[str, str] | None:
    for out in cell.get("outputs", []):
        if out.get("output_type") == "error":
            return out.get("ename", ""), out.get("evalue", "")
    return None


def score(sub: Submission, nb: nbformat.NotebookNode, source: nbformat.NotebookNode, run: Execution) -> list[Row]:
    """One row per exercise: full points when its test cell ran without an error, else 0."""
    index = {grade_id(c): i for i, c in enumerate(nb.cells) if grade_id(c)}
    rows = []
    for ex in notebooks.exercises(source):
        i = index[ex.test_id]
        cell = nb.cells[i]
        err = _error(cell)
        ran = cell.get("execution_count") is not None or err is not None
        if run.status == "kernel_died" and run.failed_at is not None and i >= run.failed_at:
            status, msg = "kernel_died", "the kernel died before this exercise was tested (out of memory, or a crash in your code)."
        elif err and err[0] == "TimeoutError":
            status, msg = "timeout", err[1]
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
    return rows


def error_rows(sub: Submission, source: nbformat.NotebookNode, message: str) -> list[Row]:
    return [Row(sub.student_id, sub.lesson, ex.id, 0.0, ex.points, "error", message) for ex in notebooks.exercises(source)]


# ------------------------------------------------------------------------------ feedback

def feedback(nb: nbformat.NotebookNode | None, rows: list[Row], path: Path) -> None:
    """An HTML page per student and lesson: a score table with the reasons, then the graded notebook."""
    from autograder.feedback import render

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(nb, rows), encoding="utf-8")


# --------------------------------------------------------------------------- one and all

def grade_one(sub: Submission, out: Path, opts: Options) -> list[Row]:
    """Grade one submission end to end, in a private temporary copy; never raises."""
    source = notebooks.read(notebooks.source_path(sub.lesson))
    fb_path = out / "feedback" / sub.student_id / f"{sub.lesson}.html"
    if sub.problem:
        rows = error_rows(sub, source, sub.problem)
        feedback(None, rows, fb_path)
        return rows
    try:
        student = notebooks.read(sub.path)
    except NotebookError as e:
        rows = error_rows(sub, source, str(e))
        feedback(None, rows, fb_path)
        return rows
    release = notebooks.read(notebooks.release_path(sub.lesson))
    nb = restore(student, source, release)
    workdir = Path(tempfile.mkdtemp(prefix=f"grade-{sub.student_id}-{sub.lesson}-"))
    try:
        # The student's folder may hold files their notebook reads; they get a copy, never the original.
        for item in sub.path.parent.iterdir():
            if item.is_file() and item.suffix != ".ipynb":
                shutil.copy2(item, workdir / item.name)
        env = {"COURSE_PROFILE": opts.profile, "COURSE_GRADING": "1", **_thread_env(opts.threads), **opts.extra_env}
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            run = execute(nb, workdir, opts)
        except Exception as e:  # a kernel that cannot even start is the grader's problem, reported per row
            rows = error_rows(sub, source, f"the notebook could not be executed: {type(e).__name__}: {e}")
            feedback(nb, rows, fb_path)
            return rows
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        rows = score(sub, nb, source, run)
        feedback(nb, rows, fb_path)
        return rows
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


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


def _grade_safely(sub: Submission, out: Path, opts: Options) -> list[Row]:
    try:
        return grade_one(sub, out, opts)
    except Exception as e:  # last line of defence: one broken submission never stops the class
        source = notebooks.read(notebooks.source_path(sub.lesson))
        return error_rows(sub, source, f"grading failed: {type(e).__name__}: {e}")


def grade_all(root: Path, out: Path, workers: int = 1, lessons: list[str] | None = None,
              opts: Options | None = None, progress: bool = True) -> list[Row]:
    """Grade every submission under ``root``; writes ``out/grades.csv`` and ``out/feedback/``."""
    from tqdm.auto import tqdm

    opts = opts or Options()
    if opts.threads is None:
        opts.threads = max(1, (os.cpu_count() or 1) // max(1, workers))
    subs = discover(root, lessons)
    rows: list[Row] = []
    bar = tqdm(total=len(subs), desc="grading", unit="nb", disable=not progress)
    if workers <= 1:
        for sub in subs:
            rows.extend(_grade_safely(sub, out, opts))
            bar.update()
    else:
        import multiprocessing as mp

        with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
            futures = {pool.submit(_grade_safely, sub, out, opts): sub for sub in subs}
            for fut in as_completed(futures):
                rows.extend(fut.result())
                bar.update()
    bar.close()
    write_grades(rows, out / "grades.csv")
    return rows
