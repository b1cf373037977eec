"""How long grading a class takes: plain `nbgrader autograde` against `python -m autograder grade`.

    python benchmarks/grading.py                 # 40 submissions of 03_multilabel, ci profile
    python benchmarks/grading.py --small         # 8 submissions: a quick look
    python benchmarks/grading.py --lesson 06_fill_level --n 60 --variants fork2,warm2,cold2
    python benchmarks/grading.py --no-nbgrader --small --variants fork2,dask2   # Dask's overhead only

The class mixes correct notebooks, partly wrong ones (one answer put back to the stub),
untouched ones and broken files (cut off mid-upload). Prints each wall time, the ratio,
and the overhead per notebook beyond executing the student's own cells, where "the
student's own work" is the time the autograder measured inside the kernel, from the
first cell to the last (kernel start and imports excluded).

Kernel modes (`--kernels` of the grader): `fork` kernels are forked from a server that
imported the libraries once; `warm` kernels import them themselves while the previous
submission runs, which on few cores hides that CPU time but does not remove it; `cold`
kernels start when needed. `daskN` grades with `--scheduler local:N` (a Dask LocalCluster of N worker
processes, forked kernels): next to `forkN` (the local pool, same kernels) it gives Dask's overhead as the ratio
of the two wall times and per notebook. Figures on a shared machine vary with what else runs: the script prints
the load average next to them.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import nbformat  # noqa: E402

from autograder import notebooks  # noqa: E402


def make_class(root: Path, lesson: str, n: int) -> dict[str, str]:
    """``n`` submissions under ``root/<student>/<lesson>/``; returns each student's kind."""
    source = notebooks.read(notebooks.source_path(lesson))
    release = notebooks.read(notebooks.release_path(lesson))
    stubs = {notebooks.grade_id(c): c.source for c in release.cells if notebooks.is_solution(c)}
    answers = [gid for gid in stubs if any(notebooks.grade_id(c) == gid for c in source.cells)]
    kinds = {}
    for i in range(n):
        student = f"s{i:03d}"
        kind = ("correct", "partly_wrong", "untouched", "correct", "partly_wrong", "broken")[i % 6]
        path = root / student / lesson / f"{lesson}.ipynb"
        path.parent.mkdir(parents=True, exist_ok=True)
        if kind == "broken":
            path.write_text(json.dumps(source)[: 4000])  # cut off mid-upload
        elif kind == "untouched":
            nbformat.write(release, path)
        else:
            nb = nbformat.from_dict(json.loads(json.dumps(source)))
            if kind == "partly_wrong":  # one answer (a different one each time) back to the stub
                gid = answers[i % len(answers)]
                for c in nb.cells:
                    if notebooks.grade_id(c) == gid:
                        c.source = stubs[gid]
            nbformat.write(nb, path)
        kinds[student] = kind
    return kinds


def run_autograder(subs: Path, out: Path, workers: int, mode: str, env: dict) -> float:
    """Wall seconds of one `python -m autograder grade` run; ``mode`` "dask" is forked kernels on a LocalCluster."""
    cmd = [sys.executable, "-m", "autograder", "grade", str(subs), "--out", str(out), "--fresh",
           "--workers", str(workers), "--kernels", "fork" if mode == "dask" else mode]
    if mode == "dask":
        cmd += ["--scheduler", f"local:{workers}"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"autograder failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return wall


def _overhead_breakdown(entries: list[dict]) -> str:
    """Per executed notebook, what grading adds to the student's cells, as the workers timed it.

    The median is the steady state; each worker's first notebook also pays the worker's
    start (imports, and in fork mode the fork server's imports), which the mean includes.
    """
    import statistics as st

    ran = [e for e in entries if e.get("seconds", 0) > 0]
    if not ran:
        return "no notebook was executed"
    over = [e["total_seconds"] - e["seconds"] for e in ran]
    parts = {"kernel ready": [e["wait"] for e in ran], "feedback page": [e["feedback_seconds"] for e in ran],
             "the rest": [e["total_seconds"] - e["seconds"] - e["wait"] - e["feedback_seconds"] for e in ran]}
    return (f"per executed notebook ({len(ran)}): overhead median {st.median(over):.2f} s, mean {st.mean(over):.2f} s, "
            f"largest {max(over):.1f} s (a worker's first); medians: "
            + ", ".join(f"{k} {st.median(v):.2f} s" for k, v in parts.items()))


def engine_overhead(base: Path, lesson: str, workers: int, env: dict, k: int = 40) -> tuple[float, float]:
    """Wall seconds for ``k`` submissions that need no kernel (lesson folders without a notebook: graded
    ``missing`` at once) on the local pool and on Dask: what each engine costs per task, start and stop
    included, with almost no grading in it."""
    subs = base / "empty-class"
    for i in range(k):
        (subs / f"e{i:03d}" / lesson).mkdir(parents=True, exist_ok=True)
    return (run_autograder(subs, base / "out-empty-fork", workers, "fork", env),
            run_autograder(subs, base / "out-empty-dask", workers, "dask", env))


def _median(values: list[float]) -> float:
    import statistics

    return statistics.median(values) if values else float("nan")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lesson", default="03_multilabel", help="lesson to grade (default: 03_multilabel, the cheapest)")
    p.add_argument("--n", type=int, default=40, help="submissions in the class (default 40)")
    p.add_argument("--small", action="store_true", help="8 submissions")
    p.add_argument("--variants", default="fork2,warm2,dask2",
                   help="autograder runs, comma-separated: forkN / warmN / coldN (N local workers) / daskN (a Dask "
                        "LocalCluster of N workers); default fork2,warm2,dask2")
    p.add_argument("--no-nbgrader", action="store_true", help="skip plain nbgrader")
    p.add_argument("--profile", default="ci")
    p.add_argument("--keep", help="folder to keep the class and outputs in (default: a temporary one)")
    args = p.parse_args(argv)
    n = 8 if args.small else args.n
    env = {**os.environ, "COURSE_PROFILE": args.profile, "OMP_NUM_THREADS": "1"}
    base = Path(args.keep or tempfile.mkdtemp(prefix="bench-grading-"))
    subs = base / "class"
    kinds = make_class(subs, args.lesson, n)
    mix = ", ".join(f"{k}: {list(kinds.values()).count(k)}" for k in sorted(set(kinds.values())))
    print(f"class: {n} submissions of {args.lesson} ({mix}), "
          f"profile {args.profile}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")

    results, journal, medians = {}, None, {}
    for variant in [v.strip() for v in args.variants.split(",") if v.strip()]:
        mode = variant.rstrip("0123456789")
        workers = int(variant[len(mode):] or 1)
        out = base / f"out-{variant}"
        wall = run_autograder(subs, out, workers, mode, env)
        entries = [json.loads(line) for line in (out / "journal.jsonl").read_text().splitlines() if line.strip()]
        work = sum(e.get("seconds", 0.0) for e in entries)
        wait = sum(e.get("wait", 0.0) for e in entries)
        results[variant] = (wall, workers, work, wait)
        journal = journal or out
        print(f"autograder {variant}: {wall:.1f} s wall, {wall / n:.2f} s per notebook; student cells "
              f"{work / n:.2f} s per notebook; "
              f"overhead beyond them {(wall * workers - work) / n:.2f} worker-s per notebook "
              f"(waiting for a ready kernel {wait / n:.2f} s); load average {os.getloadavg()[0]:.1f}")
        print("  " + _overhead_breakdown(entries))
        medians[variant] = _median([e["total_seconds"] for e in entries if e.get("seconds", 0) > 0])
    for variant in results:
        pool = "fork" + variant[4:]
        if variant.startswith("dask") and pool in results:
            dwall, pwall = results[variant][0], results[pool][0]
            print(f"Dask against the local pool ({variant[4:]} workers each): {dwall:.1f} s against {pwall:.1f} s "
                  f"wall, ratio {dwall / pwall:.3f} (Dask's overhead {100 * (dwall / pwall - 1):+.1f}%), "
                  f"{(dwall - pwall) / n:+.2f} s per notebook; inside the workers the median executed notebook "
                  f"took {medians[variant]:.2f} s on Dask against {medians[pool]:.2f} s in the pool")
            same = all((base / f"out-{variant}" / f).read_text() == (base / f"out-{pool}" / f).read_text()
                       for f in ("grades.csv", "totals.csv"))
            print(f"  grades.csv and totals.csv {'identical' if same else 'DIFFER'} between {variant} and {pool}")
            k = 40
            epool, edask = engine_overhead(base, args.lesson, int(variant[4:]), env, k)
            print(f"  the engines alone ({k} submissions needing no kernel): pool {epool:.1f} s, Dask {edask:.1f} s "
                  f"wall; Dask adds {edask - epool:+.1f} s per run, {(edask - epool) / k * 1000:+.0f} ms per "
                  f"submission; load average {os.getloadavg()[0]:.1f}")

    if not args.no_nbgrader:
        from autograder.nbgrader_compare import autograde

        students = {s: subs / s / args.lesson / f"{args.lesson}.ipynb" for s in kinds}
        totals, wall = autograde(base / "nbgrader-course", args.lesson, students, env=env)
        print(f"nbgrader autograde (serial): {wall:.1f} s wall, {wall / n:.2f} s per notebook; "
              f"load average {os.getloadavg()[0]:.1f}")
        if results:
            first = next(iter(results))
            fwall, fworkers, work, _ = results[first]
            print(f"  overhead beyond the student cells: {(wall - work) / n:.2f} s per notebook "
                  f"(student cells timed by the autograder run '{first}')")
            for variant, (vwall, _, _, _) in results.items():
                print(f"  ratio nbgrader / autograder {variant}: {wall / vwall:.2f}")
            import csv

            ours = {r["student_id"]: float(r["score"]) for r in csv.DictReader(open(journal / "totals.csv"))}
            same = sum(1 for s in ours if s in totals and abs(ours[s] - totals[s]) < 1e-9)
            print(f"  totals equal to nbgrader export for {same} of {len(ours)} students"
                  + ("" if same == len(ours)
                     else f"; differ: {sorted(s for s in ours if abs(ours[s] - totals.get(s, -1)) > 1e-9)}"))
    print(f"files in {base}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
