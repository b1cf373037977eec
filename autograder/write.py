"""Writing results: ``grades.csv``, ``totals.csv`` and pages, whole or not at all.

Every file is written to a temporary name beside it and renamed into place, so a grader that
is killed never leaves a half-written file where the last good one was.

Instructors open these CSV files in spreadsheets, and a student chooses their folder name,
which becomes their ``student_id``: a value such as ``=HYPERLINK(...)`` would run as a formula.
Every field of every CSV the grader writes passes through :func:`csv_safe`.
"""
from __future__ import annotations

import csv
import math
import os
import re
from collections.abc import Iterable
from dataclasses import asdict, is_dataclass
from pathlib import Path

from autograder.status import Status

FIELDS = ["student_id", "lesson", "exercise", "score", "max_score", "status"]
TOTAL_FIELDS = ["student_id", "lesson", "score", "max_score", "status"]

# OWASP's list (CSV injection): a cell that starts with one of these is read as a formula.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
# A plain number, as the grader writes scores ("2", "-1.5", "1e-05"); "+1" is not one: no score
# is written that way, so a "+" first is always quoted.
_NUMBER = re.compile(r"-?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?")


def csv_safe(value):
    """``value`` as a CSV field that no spreadsheet runs as a formula.

    Text that starts with ``= + - @``, a tab or a carriage return gets a leading ``'`` (the
    spreadsheet then shows it as text, quote hidden), unless it is a plain number such as
    ``-1.5``, which must stay a number. Finite ints and floats pass as they are.
    """
    if value is None:
        return ""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return value
    text = str(value)  # a Status gives its plain word
    if text.startswith(_FORMULA_START) and not _NUMBER.fullmatch(text):
        return "'" + text
    return text


def write_atomic(path: Path, data: str | bytes) -> None:
    """Write ``data`` (text as UTF-8) to ``path`` through a temporary file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # one per process: parallel writers never share it
    try:
        with open(tmp, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_csv(path: Path, fields: list[str], rows: Iterable[dict]) -> None:
    """A CSV with a header of ``fields`` and one line per row, every value through :func:`csv_safe`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
            w.writeheader()
            for row in rows:
                w.writerow({k: csv_safe(row.get(k)) for k in fields})
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _as_dict(row) -> dict:
    return asdict(row) if is_dataclass(row) and not isinstance(row, type) else dict(row)


def write_grades(rows: list, path: Path) -> None:
    """``grades.csv``: one line per student, lesson and exercise (``grade.Row``s or dicts),
    by student and lesson, exercises in notebook order."""
    dicts = [_as_dict(r) for r in rows]
    write_csv(path, FIELDS, sorted(dicts, key=lambda r: (str(r["student_id"]), str(r["lesson"]))))


def totals(entries: list[dict]) -> list[dict]:
    """One row per student and lesson (journal entries): points, possible points (as nbgrader's
    export) and the submission's status."""
    out = []
    for e in entries:
        out.append({"student_id": e["student_id"], "lesson": e["lesson"],
                    "score": round(sum(float(r["score"]) for r in e["rows"]), 6),
                    "max_score": round(sum(float(r["max_score"]) for r in e["rows"]), 6),
                    "status": e.get("status", Status.OK)})
    return sorted(out, key=lambda t: (str(t["student_id"]), str(t["lesson"])))


UNSANDBOXED = "graded_without_sandbox"


def unsandboxed(entries: list[dict]) -> list[dict]:
    """The submissions graded with ``--no-sandbox`` (student code ran as the grader's own user)."""
    return [e for e in entries if e.get("sandbox") is False]


# When a lesson has a due date (autograder.late): whether each submission was late, by how many hours, the
# penalty under the policy in force and the score after it. The grader's own score column stays as judged.
LATE_FIELDS = ["late", "hours_late", "late_penalty", "final_score"]


def has_due_dates(entries: list[dict]) -> bool:
    return any((e.get("late") or {}).get("due") for e in entries)


def write_totals(entries: list[dict], path: Path) -> None:
    """``totals.csv``: :func:`totals`, points written as short numbers ("2", "1.5"). When a lesson has a due
    date, :data:`LATE_FIELDS` follow. When any submission was graded without a sandbox, a last column says which,
    so that no such grade passes for a sandboxed one."""
    dated = has_due_dates(entries)
    fields = TOTAL_FIELDS + (LATE_FIELDS if dated else []) + ([UNSANDBOXED] if unsandboxed(entries) else [])
    bare = {(e["student_id"], e["lesson"]) for e in unsandboxed(entries)}
    late = {(e["student_id"], e["lesson"]): e.get("late") or {} for e in entries}

    def line(t: dict) -> dict:
        info = late.get((t["student_id"], t["lesson"]), {})
        penalty = float(info.get("penalty") or 0.0)
        return {**t, "score": f"{t['score']:g}", "max_score": f"{t['max_score']:g}",
                UNSANDBOXED: "yes" if (t["student_id"], t["lesson"]) in bare else "no",
                "late": "yes" if info.get("late") else "no", "hours_late": f"{float(info.get('hours_late') or 0):g}",
                "late_penalty": f"{penalty:g}", "final_score": f"{max(0.0, t['score'] - penalty):g}"}

    write_csv(path, fields, (line(t) for t in totals(entries)))
