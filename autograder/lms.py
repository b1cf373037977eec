"""``OUT/lms.csv``: the class's grades in the layout Canvas imports into its gradebook.

Canvas reads a CSV whose first columns say who each row is (``Student``, ``ID``, ``SIS User ID``, ``SIS Login
ID``, ``Section``), then one column per assignment, with a ``Points Possible`` row under the header; a column
named like no assignment of the course becomes a new assignment on import. One row per student here, one column
per lesson; a cell is the lesson's score after any late penalty, with a person's grades from nbgrader's
gradebook counted when one is given (``--gradebook``). A lesson a student has no folder for is left blank (nothing
was handed in to grade); a folder without a readable notebook scores 0.

Who is who: the student's folder name (their hub login) goes in ``Student`` and ``SIS Login ID``, which Canvas
matches against its users' login ids. A roster (``--roster FILE``: a CSV with a ``student_id`` column and any of
the identity columns above) fills in names, Canvas ids and sections instead.
"""
from __future__ import annotations

import csv
from pathlib import Path

from autograder.write import write_csv

IDENTITY = ["Student", "ID", "SIS User ID", "SIS Login ID", "Section"]
# Canvas's own exports write this row's label indented; its import recognises the row by these words.
POINTS_POSSIBLE = "    Points Possible"


class RosterError(ValueError):
    """A roster file the grader cannot use; the message says what is expected."""


def read_roster(path: Path | None) -> dict[str, dict]:
    """student_id -> the identity columns the roster gives for them."""
    if path is None:
        return {}
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise RosterError(f"{path}: not a readable CSV roster ({e})") from None
    if rows and "student_id" not in rows[0]:
        raise RosterError(f"{path}: a roster needs a student_id column (the student's folder name), then any of "
                          + ", ".join(IDENTITY))
    return {r["student_id"]: {k: r[k] for k in IDENTITY if r.get(k)} for r in rows if r.get("student_id")}


def lesson_scores(entries: list[dict], people: dict[tuple[str, str], float] | None = None,
                  policy=None) -> dict[tuple[str, str], float]:
    """(student, lesson) -> the score to report: the gradebook's (``people``, manual grades counted) where it has
    the submission, else the grader's; minus the late penalty under ``policy`` (never below 0)."""
    from autograder.late import Policy

    policy = policy or Policy()
    people = people or {}
    out = {}
    for e in entries:
        key = (str(e["student_id"]), e["lesson"])
        raw = people.get(key, sum(float(r["score"]) for r in e["rows"]))
        seconds = float((e.get("late") or {}).get("seconds_late") or 0.0)
        out[key] = round(max(0.0, raw - policy.penalty(seconds, raw)), 6)
    return out


def write_lms(entries: list[dict], path: Path, roster: dict[str, dict] | None = None,
              people: dict[tuple[str, str], float] | None = None, policy=None) -> None:
    """Write ``lms.csv`` (see the module's docstring) from the journal entries."""
    roster = roster or {}
    scores = lesson_scores(entries, people, policy)
    lessons = sorted({e["lesson"] for e in entries})
    possible = {lesson: max((sum(float(r["max_score"]) for r in e["rows"]) for e in entries
                             if e["lesson"] == lesson), default=0.0) for lesson in lessons}
    students = sorted({str(e["student_id"]) for e in entries} | set(roster))
    rows = [{**dict.fromkeys(IDENTITY, ""), "Student": POINTS_POSSIBLE,
             **{lesson: f"{possible[lesson]:g}" for lesson in lessons}}]
    for student in students:
        who = {"Student": student, "ID": "", "SIS User ID": "", "SIS Login ID": student, "Section": ""}
        who.update(roster.get(student, {}))
        rows.append({**who, **{lesson: (f"{scores[(student, lesson)]:g}" if (student, lesson) in scores else "")
                               for lesson in lessons}})
    write_csv(Path(path), IDENTITY + lessons, rows)
