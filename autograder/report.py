"""What the instructor reads after grading: a class report (HTML); ``totals.csv`` is :mod:`autograder.write`'s.

The report shows, per lesson and exercise, the score distribution as a plot and the
most common diagnoses, then every submission that timed out, crashed, ran out of memory,
could not be read, was missing, or was flagged. Plots are embedded (base64 PNG), so the
page is one file that can be mailed or archived.
"""
from __future__ import annotations

import base64
import html
import io
import re
from collections import Counter, defaultdict
from pathlib import Path

from autograder.status import Status, seriousness

# totals.csv is written by autograder.write; write_totals is imported from here by grade.py until it
# imports it from there.
from autograder.write import totals, unsandboxed, write_atomic, write_totals  # noqa: F401


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
    return f"<img alt='plot' src='data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}'>"


def _histogram(values: list[float], possible: float, title: str) -> str:
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend

    fig = Figure(figsize=(3.2, 2.0))
    ax = fig.subplots()
    counts = Counter(values)
    xs = sorted(set(counts) | {0.0, possible})
    ax.bar([f"{x:g}" for x in xs], [counts.get(x, 0) for x in xs], color="#4c72b0")
    ax.set_xlabel("points")
    ax.set_ylabel("students")
    ax.set_title(title, fontsize=9)
    return _png(fig)


def _first_line(message: str, width: int = 160) -> str:
    line = (message or "").strip().splitlines()[0] if (message or "").strip() else "(no message)"
    return line if len(line) <= width else line[: width - 1] + "…"


def diagnosis(message: str, mistake: str = "") -> str:
    """What a row's wrong answer was, so that students who made the same mistake on different random cases are
    counted together: the known mistake's name when the judge matched one, else the message without its numbers."""
    if mistake:
        return f"known mistake “{mistake}”"
    lines = [line.strip() for line in (message or "").splitlines() if line.strip()]
    for line in lines:
        if line.lower().startswith("likely mistake"):
            return _first_line(line, 200)
    first = re.sub(r"case \d+ of \d+ \([^)]*\)", "a case", lines[0]) if lines else ""
    first = re.sub(r"\d+\.\d+", "…", first)
    return _first_line(first, 200)


def render(entries: list[dict], sections: tuple[str, ...] | list[str] = (), policy: str = "") -> str:
    """The class report. ``sections``: more HTML sections, each a whole section (its own heading), appended
    after the lessons (the similarity analysis's); ``policy``: the late-work policy in words."""
    by_lesson: dict[str, list[dict]] = defaultdict(list)
    for e in entries:
        by_lesson[e["lesson"]].append(e)
    parts = ["<!DOCTYPE html><html><head><meta charset='utf-8'><title>Class report</title>",
             "<style>body{font-family:sans-serif;max-width:70em;margin:auto}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:2px 6px;text-align:left;vertical-align:top}"
             ".ex{display:inline-block;margin:0 1em 1em 0;vertical-align:top;max-width:33em}</style></head><body>",
             f"<h1>Class report</h1><p>{len({e['student_id'] for e in entries})} students, "
             f"{len(entries)} submissions.</p>"]
    bare = unsandboxed(entries)
    if bare:
        parts.append(f"<p style='border:2px solid #c00;padding:4px'><b>{len(bare)} submission(s) were graded without "
                     "a sandbox</b> (<code>--no-sandbox</code>): student code ran as the grader's own user and could "
                     "read and write what the grader can. Regrade them on a machine where sandboxes can be made "
                     "before relying on these grades.</p>")
    for lesson in sorted(by_lesson):
        subs = by_lesson[lesson]
        tot = totals(subs)
        possible = max((t["max_score"] for t in tot), default=0)
        statuses = Counter(str(t["status"]) for t in tot)
        parts.append(f"<h2>{html.escape(lesson)}</h2><p>{len(subs)} submissions; mean "
                     f"{sum(t['score'] for t in tot) / max(1, len(tot)):.2f} / {possible:g}; "
                     + ", ".join(f"{html.escape(s)}: {n}" for s, n in sorted(statuses.items())) + "</p>")
        parts.append(_histogram([t["score"] for t in tot], possible, "total per student"))
        rows_by_ex: dict[str, list[dict]] = defaultdict(list)
        for e in subs:
            for r in e["rows"]:
                rows_by_ex[r["exercise"]].append(r)
        for ex, rows in rows_by_ex.items():
            pts = max(float(r["max_score"]) for r in rows)
            passed = sum(1 for r in rows if r["status"] == Status.PASSED)
            waiting = sum(1 for r in rows if r["status"] == Status.TO_GRADE)
            common = Counter(f"{r['status']}: {diagnosis(r.get('message', ''), r.get('mistake', ''))}"
                             for r in rows if r["status"] not in (Status.PASSED, Status.TO_GRADE))
            diag = "".join(f"<tr><td>{n}</td><td>{html.escape(m)}</td></tr>" for m, n in common.most_common(5))
            # A written answer's points come from a person (formgrader): until then, how many wait is the news.
            counted = f"{waiting}/{len(rows)} to grade" if waiting else f"{passed}/{len(rows)} passed"
            parts.append(f"<div class='ex'><h3><code>{html.escape(ex)}</code> ({counted})</h3>"
                         + _histogram([float(r["score"]) for r in rows], pts, ex)
                         + (f"<table><tr><th>students</th><th>most common diagnoses</th></tr>{diag}</table>"
                            if diag else "")
                         + "</div>")
        late = [e for e in subs if (e.get("late") or {}).get("late")]
        if late:
            rule = policy or "late work is marked but not penalised"
            parts.append(f"<h3>Handed in late ({len(late)})</h3><p>Due {html.escape(late[0]['late']['due'])} UTC; "
                         f"{html.escape(rule)}.</p><table><tr><th>student</th><th>handed in (UTC)</th>"
                         "<th>hours late</th><th>penalty</th></tr>")
            for e in sorted(late, key=lambda e: str(e["student_id"])):
                info = e["late"]
                parts.append(f"<tr><td>{html.escape(str(e['student_id']))}</td><td>{html.escape(info['submitted'])}"
                             f"</td><td>{float(info['hours_late']):g}</td><td>{float(info['penalty']):g}</td></tr>")
            parts.append("</table>")
        trouble = [e for e in subs if e.get("status", Status.OK) != Status.OK]
        if trouble:
            # Most serious first (status.PROBLEMS): flagged and missing work needs a person before a timeout does.
            parts.append("<h3>Submissions that timed out, crashed, were missing, unreadable or flagged</h3>"
                         "<table><tr><th>student</th><th>status</th><th>what happened</th></tr>")
            for e in sorted(trouble, key=lambda e: (seriousness(e["status"]), str(e["status"]), e["student_id"])):
                parts.append(f"<tr><td>{html.escape(str(e['student_id']))}</td><td>{html.escape(str(e['status']))}</td>"
                             f"<td>{html.escape(_first_line(e.get('detail', ''), 300))}</td></tr>")
            parts.append("</table>")
    parts.extend(str(section) for section in sections if section)
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(entries: list[dict], path: Path, sections: tuple[str, ...] | list[str] = (),
                 policy: str = "") -> None:
    write_atomic(path, render(entries, sections, policy))
