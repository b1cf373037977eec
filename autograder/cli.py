"""Command line: `python -m autograder release|grade ...`."""
from __future__ import annotations

import argparse
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path


def _release(args) -> int:
    from autograder import notebooks
    from autograder.release import release

    lessons = args.lessons or notebooks.lessons()
    unknown = set(lessons) - set(notebooks.lessons())
    if unknown:
        print(f"No such lesson in solutions/: {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    stale = []
    for lesson in lessons:
        ok = release(lesson, check=args.check)
        if args.check and not ok:
            stale.append(lesson)
        elif not args.check:
            print(f"released {notebooks.release_path(lesson).relative_to(notebooks.LESSONS.parent)}")
    if stale:
        print(f"lessons/ is stale for: {', '.join(stale)}. Run `python -m autograder release`.", file=sys.stderr)
        return 1
    return 0


def _grade(args) -> int:
    from autograder.cluster import InsecureScheduler, security
    from autograder.grade import Options, SandboxUnavailable, grade_all

    root = Path(args.submissions)
    if not root.is_dir():
        print(f"{root} is not a folder. Expected SUBMISSIONS/<student_id>/<lesson>/<lesson>.ipynb.", file=sys.stderr)
        return 2
    out = Path(args.out)
    t0 = time.perf_counter()
    opts = Options(profile=args.profile, cell_timeout=args.timeout, memory_mb=args.memory,
                   output_limit=int(args.output_limit * 1e6), output_budget=int(args.output_budget * 1e6),
                   time_budget=args.budget, kernels="cold" if args.cold else args.kernels,
                   sandbox=not args.no_sandbox)
    stats: dict = {}
    from autograder.late import LateError, Policy
    from autograder.lms import RosterError, read_roster

    try:
        policy = Policy.parse(args.late_penalty)
        read_roster(args.roster)  # a roster the LMS file cannot use stops the run before it grades anything
    except (LateError, RosterError) as e:
        print(str(e), file=sys.stderr)
        return 2
    try:
        tls = security(args.tls_ca_file, args.tls_cert, args.tls_key)
        rows = grade_all(root, out, workers=args.workers, lessons=args.lesson, opts=opts, fresh=args.fresh,
                         stats=stats, scheduler=args.scheduler, security=tls, gradebook=args.gradebook,
                         late_policy=policy, due_dates=args.due_dates, roster=args.roster)
    except (SandboxUnavailable, InsecureScheduler, ConnectionError, LateError) as e:
        print(str(e), file=sys.stderr)
        return 2
    per: defaultdict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0, 0.0])
    for r in rows:
        per[(r.student_id, r.lesson)][0] += r.score
        per[(r.student_id, r.lesson)][1] += r.max_score
    problems = sum(1 for r in rows if r.status not in ("passed", "failed"))
    flagged = Counter(e["status"] for e in stats.get("entries", []) if e["status"] != "ok")
    print(f"graded {len(per)} submission(s) in {time.perf_counter() - t0:.1f} s "
          f"({stats.get('reused', 0)} unchanged since the last run, not regraded) -> {out / 'grades.csv'}, "
          f"{out / 'totals.csv'}, {out / 'report.html'}, feedback in {out / 'feedback'}; "
          f"{problems} exercise(s) with errors or timeouts"
          + ("; submissions " + ", ".join(f"{s}: {n}" for s, n in sorted(flagged.items())) if flagged else ""))
    status = 0
    if stats.get("late"):
        print(f"{stats['late']} submission(s) were handed in late ({policy.describe()}); see totals.csv's late "
              "columns and the report.")
    if args.gradebook:
        done = stats.get("gradebook")
        if done is not None:
            print(f"gradebook {args.gradebook}: {done.submissions} submission(s) of {done.students} student(s), "
                  f"{done.grades} grade(s) recorded; {done.to_grade} written answer(s) to grade in formgrader, "
                  f"{done.kept_manual} manual grade(s) kept")
            for problem in done.problems:
                print(f"gradebook: {problem}", file=sys.stderr)
        else:
            print(f"the gradebook {args.gradebook} could not be written ({stats.get('gradebook_error')}); the "
                  f"grades are in {out}. Fix it and run the same command again (nothing is regraded).",
                  file=sys.stderr)
            status = 1
    refused = stats.get("refused") or []
    if refused:
        by_worker = defaultdict(list)
        for r in refused:
            by_worker[(r["worker"], r["reason"])].append(f"{r['student_id']}/{r['lesson']}")
        for (_worker, reason), subs in by_worker.items():
            print(f"{reason} Not graded: {', '.join(subs)}.", file=sys.stderr)
        unsent = stats.get("unsent", 0)
        print(f"{len(refused) + unsent} submission(s) were not graded because workers refused them (above)"
              + (f"; {unsent} were never sent: every worker had refused" if unsent else "")
              + ". Fix those workers and run the same command again to grade them.", file=sys.stderr)
        status = 1
    if stats.get("killed"):
        print(f"{stats['killed']} submission(s) took two grading workers down each and were graded kernel_died "
              "(see report.html).", file=sys.stderr)
    if stats.get("unfinished"):
        why = f" ({stats['stopped']})" if stats.get("stopped") else ""
        print(f"{stats['unfinished']} submission(s) were not graded because a grading worker or the cluster went "
              f"away{why}; run the same command again to finish them.", file=sys.stderr)
        status = 1
    return status


def main(argv: list[str] | None = None) -> int:
    from autograder import pool as kernels

    p = argparse.ArgumentParser(prog="python -m autograder", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("release", help="regenerate lessons/ (student versions) from solutions/")
    r.add_argument("lessons", nargs="*", help="lessons to release (default: all)")
    r.add_argument("--check", action="store_true", help="only check that lessons/ is up to date (exit 1 if not)")
    r.set_defaults(func=_release)
    g = sub.add_parser("grade", help="grade SUBMISSIONS/<student_id>/<lesson>/<lesson>.ipynb")
    g.add_argument("submissions")
    g.add_argument("--out", required=True, help="folder for grades.csv and feedback/")
    g.add_argument("--workers", type=int, default=1,
                   help="notebooks graded at once on this machine (without --scheduler)")
    g.add_argument("--lesson", action="append", help="grade only this lesson (repeatable)")
    g.add_argument("--profile", default="ci", choices=["ci", "cpu", "gpu"], help="course profile the notebooks run in")
    g.add_argument("--timeout", type=int, default=None,
                   help="per-cell time limit in seconds "
                        "(default: the lesson's own, see autograder/grade.py CELL_TIMEOUTS)")
    g.add_argument("--memory", type=int, default=6000, help="memory limit per kernel in MB (0: none; default 6000)")
    g.add_argument("--output-limit", type=float, default=2.0, help="MB of output kept per cell (default 2)")
    g.add_argument("--output-budget", type=float, default=20.0,
                   help="MB of output kept per notebook, display updates and widget traffic included (default 20)")
    g.add_argument("--budget", type=float, default=None,
                   help="seconds the whole notebook may run (default: 1.5x the solution's own time + 10 s in ci, "
                        "else 1800); the grade never depends on this run, only the feedback page does")
    g.add_argument("--no-sandbox", action="store_true",
                   help="grade without the per-student sandbox where none can be made (not root, no namespaces); "
                        "the report and totals.csv then say the grades were made without one")
    g.add_argument("--kernels", choices=kernels.MODES, default=kernels.default_mode(),
                   help="fork: each kernel forked from one that imported the lesson's libraries (default on Linux); "
                        "warm: ordinary kernels started ahead, importing while the previous submission runs; "
                        "cold: ordinary kernels started when needed")
    g.add_argument("--cold", action="store_true", help="the same as --kernels cold")
    g.add_argument("--fresh", action="store_true", help="forget OUT/journal.jsonl and regrade everything")
    g.add_argument("--scheduler", metavar="ADDRESS",
                   help="grade on Dask instead of --workers local processes: local:N starts a LocalCluster of N "
                        "worker processes on 127.0.0.1; tls://HOST:8786 uses a running cluster (tcp:// only to "
                        "this machine); see the README, Grading on Dask")
    g.add_argument("--tls-ca-file", help="with a tls:// scheduler: the CA that signed the cluster's certificates")
    g.add_argument("--tls-cert", help="with a tls:// scheduler: this client's certificate")
    g.add_argument("--tls-key", help="with a tls:// scheduler: this client's private key")
    g.add_argument("--gradebook", type=Path, metavar="COURSE/gradebook.db",
                   help="also record every submission in this nbgrader gradebook (created if missing), for "
                        "formgrader and nbgrader export; graded notebooks go to COURSE/autograded/")
    g.add_argument("--late-penalty", default="none", metavar="POLICY",
                   help="none (default: late work is marked only), zero, N/hour or N/day (points off the lesson "
                        "per started hour or day late, never below 0)")
    g.add_argument("--due-dates", type=Path, metavar="FILE",
                   help='JSON {"<lesson>": "<date and time, UTC unless it says>"}; default: each source '
                        "notebook's metadata autograder.due")
    g.add_argument("--roster", type=Path, metavar="FILE",
                   help="CSV with student_id and any of Student, ID, SIS User ID, SIS Login ID, Section, for lms.csv")
    g.set_defaults(func=_grade)
    args = p.parse_args(argv)
    return args.func(args)
