"""Late work (timestamps, due dates, penalties) and the LMS file, without grading anything."""
import csv
import datetime
import io
import json

import nbformat
import pytest

from autograder import late, notebooks
from autograder.cli import main
from autograder.lms import POINTS_POSSIBLE, RosterError, read_roster, write_lms
from autograder.read import Submission
from autograder.report import render
from autograder.write import write_totals

LESSON = "06_fill_level"
DUE = datetime.datetime(2026, 12, 1, 9, 0)


@pytest.mark.parametrize("text, kind, points, unit", [
    (None, "none", 0, ""), ("none", "none", 0, ""), ("ZERO", "zero", 0, ""), ("1/hour", "per", 1, "hour"),
    ("2.5/day", "per", 2.5, "day"), ("3 per hour", "per", 3, "hour"), ("1 points/days", "per", 1, "day")])
def test_penalty_policies_are_read_from_their_short_forms(text, kind, points, unit):
    policy = late.Policy.parse(text)
    assert (policy.kind, policy.points, policy.unit) == (kind, points, unit)


@pytest.mark.parametrize("text", ["1/week", "-1/hour", "half", "1/"])
def test_an_unknown_policy_is_refused_with_the_forms_it_takes(text):
    with pytest.raises(late.LateError, match="none, zero, N/hour or N/day"):
        late.Policy.parse(text)


def test_penalties_count_each_started_unit_and_never_go_below_zero():
    per_hour, per_day = late.Policy.parse("1/hour"), late.Policy.parse("2/day")
    assert per_hour.penalty(0, 5) == 0 and per_hour.penalty(-60, 5) == 0
    assert per_hour.penalty(1, 5) == 1 and per_hour.penalty(3600, 5) == 1 and per_hour.penalty(3601, 5) == 2
    assert per_hour.penalty(10 * 3600, 5) == 5  # capped at the score: the total never goes below 0
    assert per_day.penalty(25 * 3600, 10) == 4
    assert late.Policy.parse("zero").penalty(1, 7.5) == 7.5 and late.Policy().penalty(10**6, 5) == 0


@pytest.mark.parametrize("text", ["2026-12-01 10:30:00.000000 UTC", "2026-12-01 11:30:00.000000 +0100",
                                  "2026-12-01T10:30:00Z", "2026-12-01 10:30:00"])
def test_nbgraders_timestamps_and_iso_times_read_as_utc(tmp_path, text):
    (tmp_path / "timestamp.txt").write_text(text + "\n")
    assert late.read_timestamp(tmp_path) == datetime.datetime(2026, 12, 1, 10, 30)


def test_a_missing_unreadable_or_linked_timestamp_is_no_time(tmp_path):
    assert late.read_timestamp(tmp_path) is None and late.read_timestamp(None) is None
    (tmp_path / "timestamp.txt").write_text("not a time")
    assert late.read_timestamp(tmp_path) is None
    (tmp_path / "real.txt").write_text("2026-12-01 10:30:00 UTC")
    (tmp_path / "timestamp.txt").unlink()
    (tmp_path / "timestamp.txt").symlink_to(tmp_path / "real.txt")
    assert late.read_timestamp(tmp_path) is None  # links are never followed


def test_due_dates_come_from_the_file_else_the_source_notebook(tmp_path, monkeypatch):
    src = tmp_path / "solutions" / LESSON / f"{LESSON}.ipynb"
    src.parent.mkdir(parents=True)
    nb = nbformat.v4.new_notebook(metadata={"autograder": {"due": "2026-12-01T10:00:00+01:00"}})
    nbformat.write(nb, src)
    monkeypatch.setattr(notebooks, "SOLUTIONS", tmp_path / "solutions")
    assert late.due_dates([LESSON]) == {LESSON: DUE}
    file = tmp_path / "due.json"
    file.write_text(json.dumps({LESSON: "2026-12-02 09:00"}))
    assert late.due_dates([LESSON], file) == {LESSON: DUE + datetime.timedelta(days=1)}
    file.write_text(json.dumps({LESSON: "next tuesday-ish"}))
    with pytest.raises(late.LateError, match=f"the due date of {LESSON}"):
        late.due_dates([LESSON], file)
    file.write_text("[1, 2]")
    with pytest.raises(late.LateError, match="JSON object"):
        late.due_dates([LESSON], file)


def _entries(tmp_path):
    """Three submissions of lesson 06: on time, 90 minutes late, and without a timestamp."""
    rows = lambda s, score: [{"student_id": s, "lesson": LESSON, "exercise": "fill_l1_loss", "score": score,  # noqa: E731
                              "max_score": 4.0, "status": "passed" if score == 4 else "failed", "message": ""}]
    subs, entries = [], []
    for student, score, stamp in (("amy", 4.0, "2026-12-01 08:59:59 UTC"), ("ben", 3.0, "2026-12-01 10:30:00 UTC"),
                                  ("=cmd", 1.0, None)):
        folder = tmp_path / "subs" / student / LESSON
        folder.mkdir(parents=True)
        if stamp:
            (folder / "timestamp.txt").write_text(stamp)
        subs.append(Submission(student, LESSON, folder / f"{LESSON}.ipynb"))
        entries.append({"student_id": student, "lesson": LESSON, "status": "ok", "rows": rows(student, score)})
    return subs, entries


def test_late_entries_are_marked_in_totals_with_the_penalty_and_the_score_after_it(tmp_path):
    subs, entries = _entries(tmp_path)
    policy = late.Policy.parse("1/hour")
    late.annotate(subs, entries, policy, {LESSON: DUE})
    write_totals(entries, tmp_path / "totals.csv")
    text = (tmp_path / "totals.csv").read_text()
    assert text.splitlines()[0] == "student_id,lesson,score,max_score,status,late,hours_late,late_penalty,final_score"
    by = {r["student_id"]: r for r in csv.DictReader(io.StringIO(text))}
    assert (by["amy"]["late"], by["amy"]["final_score"]) == ("no", "4")
    assert (by["ben"]["late"], by["ben"]["hours_late"], by["ben"]["late_penalty"], by["ben"]["final_score"]) == \
        ("yes", "1.5", "2", "1")
    assert by["'=cmd"]["late"] == "no"  # no timestamp: no known time, never late
    page = render(entries, policy=policy.describe())
    assert "Handed in late (1)" in page and "1 point(s) off per hour" in page and "ben" in page


def test_without_due_dates_totals_keep_their_columns(tmp_path):
    subs, entries = _entries(tmp_path)
    late.annotate(subs, entries, late.Policy.parse("zero"), {})
    write_totals(entries, tmp_path / "totals.csv")
    assert (tmp_path / "totals.csv").read_text().splitlines()[0] == "student_id,lesson,score,max_score,status"


def test_the_feedback_page_says_how_late_and_what_it_cost_once(tmp_path):
    subs, entries = _entries(tmp_path)
    policy = late.Policy.parse("1/hour")
    late.annotate(subs, entries, policy, {LESSON: DUE})
    page = tmp_path / "page.html"
    page.write_text("<html><body><h2>06</h2></body></html>")
    for _ in range(2):  # a second run replaces the note, never stacks it
        late.mark_page(page, entries[1]["late"], policy)
    text = page.read_text()
    assert text.count("Handed in late") == 1 and "2 point(s) were taken off" in text and "1.5 hour(s)" in text
    late.mark_page(page, entries[0]["late"], policy)  # now on time (a new timestamp, say): the note goes
    assert page.read_text() == "<html><body><h2>06</h2></body></html>"


def test_the_lms_file_is_in_canvass_import_layout(tmp_path):
    subs, entries = _entries(tmp_path)
    policy = late.Policy.parse("1/hour")
    late.annotate(subs, entries, policy, {LESSON: DUE})
    entries.append({"student_id": "amy", "lesson": "02_transfer_learning", "status": "ok",
                    "rows": [{"score": 5.0, "max_score": 5.0}]})
    roster = tmp_path / "roster.csv"
    roster.write_text("student_id,Student,ID,SIS User ID,SIS Login ID,Section\n"
                      "amy,\"Lee, Amy\",101,S1,alee,Lab A\n")
    write_lms(entries, tmp_path / "lms.csv", read_roster(roster), policy=policy)
    lines = list(csv.reader(io.StringIO((tmp_path / "lms.csv").read_text())))
    assert lines[0] == ["Student", "ID", "SIS User ID", "SIS Login ID", "Section", "02_transfer_learning", LESSON]
    assert lines[1] == [POINTS_POSSIBLE, "", "", "", "", "5", "4"]
    assert lines[2] == ["'=cmd", "", "", "'=cmd", "", "", "1"]  # no 02 folder: blank, nothing to grade
    assert lines[3] == ["Lee, Amy", "101", "S1", "alee", "Lab A", "5", "4"]
    assert lines[4] == ["ben", "", "", "ben", "", "", "1"]  # 3 points, 2 off for 90 minutes late


def test_a_bad_policy_or_roster_stops_the_command_before_grading(tmp_path, capsys):
    (tmp_path / "subs").mkdir()
    assert main(["grade", str(tmp_path / "subs"), "--out", str(tmp_path / "out"), "--late-penalty", "1/week"]) == 2
    assert "N/hour or N/day" in capsys.readouterr().err
    (tmp_path / "roster.csv").write_text("name,section\nx,y\n")
    assert main(["grade", str(tmp_path / "subs"), "--out", str(tmp_path / "out"),
                 "--roster", str(tmp_path / "roster.csv")]) == 2
    assert "student_id column" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    with pytest.raises(RosterError):
        read_roster(tmp_path / "missing.csv")


def test_the_similarity_analysis_adds_its_section_and_never_stops_grading(tmp_path, monkeypatch):
    import sys
    import types

    import autograder
    from autograder import grade

    try:  # the real module imported first, when there is one: the stand-in must still win over it
        from autograder import similarity  # noqa: F401
    except ImportError:
        pass

    subs, entries = _entries(tmp_path)
    calls = []

    def analyse(subs_, out, lessons):
        calls.append((len(subs_), out, lessons))
        return "<h2>Similar answers</h2>"

    def use(module):  # in place of the real module, whether or not this process imported it already
        monkeypatch.setitem(sys.modules, "autograder.similarity", module)
        monkeypatch.setattr(autograder, "similarity", module, raising=False)

    use(types.SimpleNamespace(analyse=analyse))
    stats: dict = {}
    sections = grade._afterwards(tmp_path / "subs", tmp_path / "out", subs, entries, None, stats, late.Policy(), {},
                                 None, None, False)
    assert sections == ["<h2>Similar answers</h2>"] and calls == [(3, tmp_path / "out", [LESSON])]
    assert "<h2>Similar answers</h2>" in render(entries, sections)
    assert (tmp_path / "out" / "lms.csv").exists()

    def broken(*_):
        raise RuntimeError("no")

    use(types.SimpleNamespace(analyse=broken))
    assert grade._afterwards(tmp_path / "subs", tmp_path / "out", subs, entries, None, stats, late.Policy(), {},
                             None, None, False) == []
    assert stats["similarity"] == "RuntimeError: no"
