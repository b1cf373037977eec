"""Late work: when a submission was handed in, when it was due, and what lateness costs.

When: nbgrader's ``timestamp.txt`` in the submission folder (``SUBMISSIONS/<student>/<lesson>/``), which
``nbgrader submit`` writes and ``nbgrader collect`` keeps, in its format (``2026-12-01 23:59:30.123456 UTC``;
any text :func:`nbgrader.utils.parse_utc` reads). A folder without one has no known time and is never late.

Due: the lesson's source notebook metadata ``autograder.due`` (an ISO 8601 date and time; UTC when it names no
zone), unless the course's due-date file (``--due-dates FILE``: JSON, ``{"<lesson>": "<date and time>"}``) gives
one. A lesson with neither has no due date.

Cost (``--late-penalty``): ``none`` (the default: late work is marked, not penalised), ``zero`` (a late
submission scores 0), ``N/hour`` or ``N/day`` (N points per hour or day late, each started one counting). The
penalty comes off the lesson's total and never takes it below 0. The grader's own scores (grades.csv, totals.csv's
``score``) stay as judged; totals.csv's ``final_score``, the LMS file and nbgrader's gradebook carry the penalty.
"""
from __future__ import annotations

import datetime
import html
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

TIMESTAMP = "timestamp.txt"
_NUMERIC_ZONE = re.compile(r"\s[+-]\d{2}:?\d{2}$")
_POLICY = re.compile(r"^\s*(?P<points>\d+(?:\.\d+)?)\s*(?:points?\s*)?(?:/|per\s+)\s*(?P<unit>hour|day)s?\s*$", re.I)


class LateError(ValueError):
    """A penalty policy, due date or due-date file the grader cannot read; the message says what is expected."""


@dataclass(frozen=True)
class Policy:
    """What lateness costs: ``kind`` is ``none``, ``zero`` or ``per`` (``points`` per ``unit`` of ``seconds``)."""

    kind: str = "none"
    points: float = 0.0
    unit: str = ""
    seconds: float = 0.0

    @classmethod
    def parse(cls, text: str | None) -> "Policy":
        """``none``, ``zero``, ``N/hour`` or ``N/day`` (also ``N per hour``, ``N points/day``)."""
        word = (text or "none").strip().lower()
        if word in ("none", "zero"):
            return cls(word)
        m = _POLICY.match(word)
        if not m:
            raise LateError(f"--late-penalty {text!r}: expected none, zero, N/hour or N/day (for example 1/hour).")
        unit = m.group("unit").lower()
        return cls("per", float(m.group("points")), unit, 3600.0 if unit == "hour" else 86400.0)

    def penalty(self, seconds_late: float, score: float) -> float:
        """Points taken off a lesson total of ``score`` handed in ``seconds_late`` late (never more than it)."""
        if seconds_late <= 0 or self.kind == "none":
            return 0.0
        if self.kind == "zero":
            return max(0.0, score)
        return min(max(0.0, score), self.points * math.ceil(seconds_late / self.seconds))

    def describe(self) -> str:
        if self.kind == "none":
            return "late work is marked but not penalised"
        if self.kind == "zero":
            return "late work scores 0"
        return f"{self.points:g} point(s) off per {self.unit} late (each started {self.unit} counts), never below 0"


@dataclass(frozen=True)
class Late:
    """One submission's timing: when it was handed in and due (UTC, naive as nbgrader stores them), how late,
    and the penalty under the policy in force."""

    submitted: datetime.datetime | None
    due: datetime.datetime | None
    seconds_late: float
    penalty: float

    @property
    def late(self) -> bool:
        return self.seconds_late > 0

    def as_dict(self) -> dict:
        return {"submitted": self.submitted.isoformat(" ") if self.submitted else "",
                "due": self.due.isoformat(" ") if self.due else "", "seconds_late": self.seconds_late,
                "hours_late": round(self.seconds_late / 3600, 2), "penalty": self.penalty, "late": self.late}


def parse_time(text: str) -> datetime.datetime:
    """A date and time as UTC without a zone (nbgrader's way): nbgrader's timestamp format or ISO 8601."""
    import dateutil.parser
    from nbgrader.utils import parse_utc

    text = text.strip()
    try:
        if _NUMERIC_ZONE.search(text):
            # nbgrader's parse_utc reads "+0100" after a space as 100 seconds: dateutil reads it right.
            value = dateutil.parser.parse(text)
            value = (value - value.utcoffset()).replace(tzinfo=None) if value.utcoffset() is not None else value
        else:
            value = parse_utc(text)
    except (ValueError, OverflowError, TypeError) as e:
        raise LateError(f"{text[:60]!r} is not a date and time ({e})") from None
    if value is None:
        raise LateError(f"{text!r} is not a date and time")
    return value


def read_timestamp(folder: Path | None) -> datetime.datetime | None:
    """The time in ``folder/timestamp.txt`` (UTC), or None when there is none or it cannot be read."""
    from autograder.notebooks import NotebookError
    from autograder.read import read_bytes

    if folder is None:
        return None
    try:
        # Read as the grader reads every student file: no link followed, a few bytes at most.
        raw = read_bytes(Path(folder) / TIMESTAMP, 4096)
        return parse_time(raw.decode("utf-8", "replace")) if raw.strip() else None
    except (OSError, NotebookError, LateError):
        return None


def due_dates(lessons: list[str], file: Path | None = None) -> dict[str, datetime.datetime]:
    """Each lesson's due date (UTC): the due-date file's, else its source notebook's ``autograder.due``."""
    from autograder import notebooks

    given: dict = {}
    if file is not None:
        try:
            given = json.loads(Path(file).read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise LateError(f"{file}: not a readable JSON file of due dates ({e})") from None
        if not isinstance(given, dict):
            raise LateError(f"{file}: expected a JSON object such as {{\"06_fill_level\": \"2026-12-01 23:59\"}}")
    out = {}
    for lesson in lessons:
        text = given.get(lesson)
        if text is None:
            try:
                text = notebooks.read(notebooks.source_path(lesson)).metadata.get("autograder", {}).get("due")
            except (OSError, notebooks.NotebookError):
                text = None
        if text:
            try:
                out[lesson] = parse_time(str(text))
            except LateError as e:
                raise LateError(f"the due date of {lesson}: {e}") from None
    return out


def lateness(folder: Path | None, due: datetime.datetime | None, policy: Policy, score: float) -> Late:
    submitted = read_timestamp(folder)
    seconds = (submitted - due).total_seconds() if submitted is not None and due is not None else 0.0
    seconds = max(0.0, seconds)
    return Late(submitted, due, seconds, policy.penalty(seconds, score))


def folder_of(sub) -> Path | None:
    """The submission's folder, where nbgrader's collect leaves ``timestamp.txt``."""
    return Path(sub.path).parent if getattr(sub, "path", None) is not None else None


def annotate(subs, entries: list[dict], policy: Policy, due: dict[str, datetime.datetime],
             root: Path | None = None) -> None:
    """Give each journal entry (in memory only: the policy may change without regrading) its ``late`` dict."""
    folders = {(s.student_id, s.lesson): folder_of(s) for s in subs}
    for e in entries:
        key = (e["student_id"], e["lesson"])
        folder = folders.get(key)
        if folder is None and root is not None:
            folder = Path(root) / e["student_id"] / e["lesson"]
        score = sum(float(r["score"]) for r in e["rows"])
        e["late"] = lateness(folder, due.get(e["lesson"]), policy, score).as_dict()
    return None


# --------------------------------------------------------------------------------- pages

BEGIN, END = "<!-- autograder:late -->", "<!-- /autograder:late -->"


def note_html(late: dict, policy: Policy) -> str:
    """One paragraph for a feedback page: when it was handed in, how late, and what that cost."""
    if not late or not late.get("late"):
        return ""
    cost = (f"{late['penalty']:g} point(s) were taken off this lesson's total ({policy.describe()})."
            if late.get("penalty") else f"No points were taken off ({policy.describe()}).")
    return (f"{BEGIN}<p class='late' style='border:2px solid #c60;padding:4px'><b>Handed in late</b>: at "
            f"{html.escape(late['submitted'])} UTC, {late['hours_late']:g} hour(s) after the due date "
            f"({html.escape(late['due'])} UTC). {html.escape(cost)}</p>{END}")


def mark_page(path: Path, late: dict, policy: Policy) -> None:
    """Put (or replace, or remove) the lateness note at the top of a written feedback page."""
    from autograder.write import write_atomic

    path = Path(path)
    if not path.exists():
        return
    page = path.read_text(encoding="utf-8")
    bare = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), "", page, flags=re.S)
    note = note_html(late, policy)
    if note:
        at = re.search(r"<body[^>]*>", bare)
        bare = bare[: at.end()] + note + bare[at.end():] if at else note + bare
    if bare != page:
        write_atomic(path, bare)
