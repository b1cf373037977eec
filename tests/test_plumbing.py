"""The grader's plumbing against what a student can put in a submission folder: formula-like
names, links, special files, huge notebooks. Fast: no kernel runs."""
from __future__ import annotations

import csv
import json
import os
import sys
from pathlib import Path

import nbformat
import pytest

from autograder import grade, notebooks, read
from autograder.grade import Row
from autograder.notebooks import NotebookError
from autograder.read import discover, read_bytes, strip_widget_state, student_files
from autograder.report import write_report
from autograder.status import PROBLEMS, Status
from autograder.write import csv_safe, write_grades, write_totals

LESSON = "03_multilabel"
MARKER = "SECRET-MARKER-7f3a"
FORMULAS = ["=2+3*7", "@SUM(1)", "-2+3", "+1", "\tx", "\r=1"]

# --------------------------------------------------------------------------- opens, audited

_OPENS: list[tuple[str, int]] = []


def _audit(event, args):
    if event == "open" and _OPENS is not None and isinstance(args[0], (str, bytes, os.PathLike)):
        _OPENS.append((os.fsdecode(args[0]), args[2] if isinstance(args[2], int) else 0))


sys.addaudithook(_audit)  # hooks cannot be removed; this one only appends to a list


@pytest.fixture
def opens():
    """Every file this process opens during the test, with its flags."""
    _OPENS.clear()
    yield _OPENS
    _OPENS.clear()


def _never_read_through(opens, links):
    """No link in ``links`` was opened without O_NOFOLLOW (which refuses it), nor anything under one."""
    for path, flags in opens:
        for link in map(str, links):
            assert not path.startswith(link + os.sep), f"{path} was opened through the link {link}"
            assert path != link or flags & os.O_NOFOLLOW, f"{path} was opened through the link"


def _marker_anywhere(folder: Path) -> list[str]:
    return [str(p) for p in folder.rglob("*") if p.is_file() and MARKER.encode() in p.read_bytes()]


# ---------------------------------------------------------------------------------- CSV

def _rows(ids):
    return [Row(sid, LESSON, "one_hot", score, 2.0, Status.PASSED if score > 0 else Status.FAILED, "m")
            for sid, score in zip(ids, [2.0, -1.5, 0.0, 1.0, 2.0, 0.0, 1.0])]


def test_formula_like_values_are_quoted_and_numbers_stay_numbers(tmp_path):
    ids = ["alice", *FORMULAS]
    write_grades(_rows(ids), tmp_path / "grades.csv")
    entries = [{"student_id": r.student_id, "lesson": r.lesson, "status": "ok",
                "rows": [{"score": r.score, "max_score": r.max_score}]} for r in _rows(ids)]
    write_totals(entries, tmp_path / "totals.csv")
    for name in ("grades.csv", "totals.csv"):
        with open(tmp_path / name, newline="") as f:
            got = {r["student_id"]: r for r in csv.DictReader(f)}
        assert set(got) == {"alice"} | {"'" + v for v in FORMULAS}, name
        assert got["'=2+3*7"]["score"] in ("-1.5",) and float(got["'=2+3*7"]["score"]) == -1.5
        assert got["alice"]["score"] in ("2.0", "2") and got["alice"]["status"] in ("passed", "ok")
        for r in got.values():  # every number is still a plain number
            float(r["score"]), float(r["max_score"])
    text = (tmp_path / "grades.csv").read_text()
    assert "\n=2+3*7" not in text and "\n'=2+3*7," in text and ",-1.5," in text


@pytest.mark.parametrize("value, safe", [
    ("=1+1", "'=1+1"), ("+1", "'+1"), ("-2+3", "'-2+3"), ("@SUM(1)", "'@SUM(1)"), ("\t=1", "'\t=1"),
    ("\r=1", "'\r=1"), ("-1.5", "-1.5"), ("-3", "-3"), ("-1e-05", "-1e-05"), ("-inf", "'-inf"), ("-nan", "'-nan"),
    ("alice", "alice"), ("a=b", "a=b"), (2.0, 2.0), (-1.5, -1.5), (float("-inf"), "'-inf"), (None, ""),
    (True, "True"), (Status.FAILED, "failed")])
def test_csv_safe(value, safe):
    got = csv_safe(value)
    assert got == safe and type(got) is type(safe)


def test_statuses_round_trip_through_csv_as_plain_words(tmp_path):
    rows = [Row("amy", LESSON, s.value, 0.0, 1.0, s, "") for s in Status]
    write_grades(rows, tmp_path / "grades.csv")
    text = (tmp_path / "grades.csv").read_text()
    assert "Status." not in text
    back = [r["status"] for r in csv.DictReader(open(tmp_path / "grades.csv"))]
    assert back == [s.value for s in Status] and [Status(b) for b in back] == list(Status)
    assert str(Status.OUT_OF_MEMORY) == f"{Status.OUT_OF_MEMORY}" == "out_of_memory"
    assert json.dumps({"s": Status.OK}) == '{"s": "ok"}'
    assert all(s.__doc__ and len(s.__doc__) > 20 for s in Status)
    assert PROBLEMS[0] == Status.FLAGGED and "tampered" not in {s.value for s in Status}


def test_the_class_report_escapes_student_ids_and_lists_the_most_serious_first(tmp_path):
    evil = "<script>alert(1)</script>"
    entries = [{"student_id": sid, "lesson": LESSON, "status": status, "detail": f"{sid} {status}",
                "rows": [{"exercise": "one_hot", "score": 0.0, "max_score": 2.0, "status": "error", "message": evil}]}
               for sid, status in ((evil, "timeout"), ("=1+1", "flagged"), ("bob", "tampered"))]
    write_report(entries, tmp_path / "report.html")
    page = (tmp_path / "report.html").read_text()
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    order = [page.index(f"<td>{s}</td>") for s in ("flagged", "timeout", "tampered")]  # an old status last
    assert order == sorted(order)


# ----------------------------------------------------------------------------- discover

def _notebook_with_marker() -> nbformat.NotebookNode:
    nb = notebooks.read(notebooks.release_path(LESSON))
    nb.cells.append(nbformat.v4.new_markdown_cell(MARKER))
    return nb


def test_links_are_refused_and_never_read_through(tmp_path, opens, capsys):
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / LESSON).mkdir(parents=True)
    target = elsewhere / LESSON / f"{LESSON}.ipynb"
    nbformat.write(_notebook_with_marker(), target)
    root = tmp_path / "class"
    (root / "amy" / LESSON).mkdir(parents=True)
    (root / "amy" / LESSON / f"{LESSON}.ipynb").symlink_to(target)  # the notebook is a link
    (root / "ben").mkdir()
    (root / "ben" / LESSON).symlink_to(elsewhere / LESSON, target_is_directory=True)  # the lesson folder
    (root / "cat").symlink_to(elsewhere, target_is_directory=True)  # the student folder
    links = [root / "amy" / LESSON / f"{LESSON}.ipynb", root / "ben" / LESSON, root / "cat"]
    opens.clear()  # from here on, nothing may open the target

    subs = {s.student_id: s for s in discover(root)}
    assert set(subs) == {"amy", "ben"} and "cat: a link, not a folder" in capsys.readouterr().out
    assert subs["amy"].path is None
    assert subs["amy"].problem == f"amy/{LESSON}/{LESSON}.ipynb is a link, not a file: submit the notebook itself."
    assert subs["ben"].path is None and "is a link, not a folder: submit the folder itself" in subs["ben"].problem

    # Reading the link directly is refused too (O_NOFOLLOW), with the same advice.
    with pytest.raises(NotebookError, match="is a link, not a file: submit the notebook itself"):
        notebooks.read(links[0])

    # What the grader writes for them (rows, CSVs, feedback) never holds what the links point to.
    out = tmp_path / "out"
    opts = grade.Options(kernels="cold")
    entries = []
    for sub in subs.values():
        rows = grade.grade_one(sub, out, opts)
        assert {r.status for r in rows} == {"missing"} and all("is a link" in r.message for r in rows)
        entries.append({"student_id": sub.student_id, "lesson": sub.lesson, "status": "missing",
                        "detail": sub.problem, "rows": [vars(r) for r in rows]})
    write_grades([Row(**r) for e in entries for r in e["rows"]], out / "grades.csv")
    write_totals(entries, out / "totals.csv")
    write_report(entries, out / "report.html")
    assert "is a link" in (out / "feedback" / "amy" / f"{LESSON}.html").read_text()
    assert _marker_anywhere(out) == []
    _never_read_through(opens, links)
    assert not any(p.startswith(str(elsewhere)) for p, _ in opens)


def test_discover_keeps_renamed_copies_and_ignores_clutter(tmp_path, capsys):
    (tmp_path / "zed" / "99_nope").mkdir(parents=True)
    folder = tmp_path / "amy" / LESSON
    folder.mkdir(parents=True)
    nbformat.write(notebooks.read(notebooks.release_path(LESSON)), folder / f"{LESSON} (1).ipynb")
    (folder / f"._{LESSON}.ipynb").write_bytes(b"\0\5\26\7")  # macOS's resource-fork copy in a zip
    (folder / ".ipynb_checkpoints").mkdir()
    (tmp_path / "bob" / LESSON / f"{LESSON}.ipynb").mkdir(parents=True)  # a folder with a notebook's name
    subs = discover(tmp_path)
    assert [(s.student_id, s.path.name if s.path else s.problem) for s in subs] == [
        ("amy", f"{LESSON} (1).ipynb"),
        ("bob", f"bob/{LESSON}/{LESSON}.ipynb is not a file (a folder, or a special file): "
                "submit the notebook itself.")]
    assert "99_nope" in capsys.readouterr().out


# ---------------------------------------------------------------------------- read_bytes

def test_an_oversized_notebook_gets_the_size_message(tmp_path):
    path = tmp_path / "amy" / LESSON / f"{LESSON}.ipynb"
    path.parent.mkdir(parents=True)
    with open(path, "wb") as f:
        f.truncate(80_000_000)  # sparse: 80 MB on paper, nothing on disk
    message = (f"{LESSON}.ipynb is 80 MB, over the 50 MB limit for a notebook: clear large outputs "
               "(Edit > Clear Outputs of All Cells), save and resubmit.")
    with pytest.raises(NotebookError) as e:
        notebooks.read(path)
    assert str(e.value) == message
    [sub] = discover(tmp_path)
    rows = grade.grade_one(sub, tmp_path / "out", grade.Options(kernels="cold"))
    assert {r.status for r in rows} == {"error"} and {r.message for r in rows} == {message}

    small = tmp_path / "small.ipynb"
    nbformat.write(notebooks.read(notebooks.release_path(LESSON)), small)
    with pytest.raises(NotebookError, match=r"is 0\.\d+ MB, over the 0\.001 MB limit"):
        notebooks.read(small, max_bytes=1000)
    assert notebooks.read(small).cells  # under the default limit


def test_read_bytes_refuses_special_files_without_blocking(tmp_path):
    fifo = tmp_path / "pipe.ipynb"
    os.mkfifo(fifo)  # opening it for reading without O_NONBLOCK would wait for a writer forever
    with pytest.raises(NotebookError, match="pipe.ipynb is not a file"):
        read_bytes(fifo, 1000)
    with pytest.raises(NotebookError, match="is not a file"):
        read_bytes(tmp_path, 1000)
    with pytest.raises(NotebookError, match="nope.ipynb was not found"):
        read_bytes(tmp_path / "nope.ipynb", 1000)
    (tmp_path / "ok.bin").write_bytes(b"x" * 1000)
    assert read_bytes(tmp_path / "ok.bin", 1000) == b"x" * 1000
    with pytest.raises(NotebookError, match="over the 0.000999 MB limit"):
        read_bytes(tmp_path / "ok.bin", 999)


# ------------------------------------------------------------------------- student files

def test_student_files_are_regular_files_only(tmp_path, opens, monkeypatch):
    secret = tmp_path / "secret.txt"
    secret.write_text(MARKER)
    folder = tmp_path / "amy" / LESSON
    folder.mkdir(parents=True)
    (folder / f"{LESSON}.ipynb").write_text("{}")
    (folder / "data.csv").write_text("a,b\n1,2\n")
    (folder / "données (1).txt").write_text("ok")
    (folder / "link.csv").symlink_to(secret)
    (folder / "sub").mkdir()
    (folder / "sub" / "inner.csv").write_text("x")
    os.mkfifo(folder / "pipe")
    (folder / "a;b.txt").write_text("x")
    (folder / "-rf").write_text("x")
    (folder / ".DS_Store").write_text("x")
    (folder / "big.bin").write_bytes(b"x" * 3000)
    (folder / "m1.bin").write_bytes(b"x" * 900)
    (folder / "m2.bin").write_bytes(b"x" * 900)

    opens.clear()
    files, skipped = student_files(folder, limit_each=2000, limit_total=1500, max_files=200)
    why = dict(skipped)
    assert files == {"data.csv": b"a,b\n1,2\n", "données (1).txt": b"ok", "m1.bin": b"x" * 900}
    assert why["link.csv"] == "a link, not a file: submit the file itself"
    assert why["sub"].startswith("a folder") and why["pipe"] == "not a regular file"
    assert why["a;b.txt"].startswith("its name may only have") and why["-rf"].startswith("its name")
    assert why["big.bin"] == "0.003 MB, over the 0.002 MB limit for one file"
    assert why["m2.bin"].startswith("the files before it (by name) already use")
    assert ".DS_Store" not in why and f"{LESSON}.ipynb" not in why and "inner.csv" not in why
    _never_read_through(opens, [folder / "link.csv"])
    assert not any(p == str(secret) for p, _ in opens)
    assert MARKER.encode() not in b"".join(files.values()) and MARKER not in repr(skipped)

    files, skipped = student_files(folder, max_files=2)
    assert list(files) == ["big.bin", "data.csv"]
    assert dict(skipped)["m1.bin"] == "only the first 2 files (by name) are used"

    monkeypatch.setattr(read, "MAX_LEFT_OUT", 2)  # a huge folder gets a page of reasons, then a count
    _, skipped = student_files(folder)
    assert [name for name, _ in skipped] == ["-rf", "a;b.txt", "3 more"]

    linked = tmp_path / "linked"
    linked.symlink_to(folder, target_is_directory=True)
    assert student_files(linked) == ({}, [("linked", "the folder is a link, not a folder: "
                                                     "none of its files were used")])


# ---------------------------------------------------------------------------- widget state

def test_strip_widget_state_removes_saved_widgets():
    nb = nbformat.v4.new_notebook()
    state = {"application/vnd.jupyter.widget-state+json": {
        "state": {f"m{i}": {"model_name": "FloatSliderModel", "state": {"value": i}} for i in range(500)},
        "version_major": 2, "version_minor": 0}}
    nb.metadata["widgets"] = state
    nb.cells = [nbformat.v4.new_code_cell("slider", metadata={"widgets": {"x": "y" * 1000}, "tags": ["t"]}),
                nbformat.v4.new_markdown_cell("text")]
    removed = strip_widget_state(nb)
    assert removed > len(json.dumps(state)) * 0.9 + 1000
    assert "widgets" not in nb.metadata and "widgets" not in nb.cells[0].metadata
    assert nb.cells[0].metadata == {"tags": ["t"]}
    nbformat.validate(nb)
    assert strip_widget_state(nb) == 0


def test_read_keeps_grade_py_working():
    """grade.py still has its own discover and write_grades until the lead switches to these."""
    assert read.Submission.__dataclass_fields__.keys() == grade.Submission.__dataclass_fields__.keys()


# ---- grading without a sandbox is refused unless asked for, and then marked

def test_grading_is_refused_where_no_sandbox_can_be_made(monkeypatch, tmp_path):
    from autograder import grade, sandbox

    monkeypatch.setattr(sandbox, "available", lambda: (False, "not root"))
    with pytest.raises(grade.SandboxUnavailable, match="--no-sandbox"):
        grade.grade_all(tmp_path, tmp_path / "out", opts=grade.Options(sandbox=True), progress=False)


def test_grades_made_without_a_sandbox_say_so(tmp_path):
    from autograder.report import render
    from autograder.write import UNSANDBOXED, write_totals

    rows = [{"student_id": "s", "lesson": "l", "exercise": "e", "score": 1.0, "max_score": 1.0, "status": "passed"}]
    boxed = {"student_id": "a", "lesson": "l", "status": "ok", "rows": rows, "sandbox": True}
    bare = {**boxed, "student_id": "b", "sandbox": False}
    write_totals([boxed], tmp_path / "boxed.csv")
    assert UNSANDBOXED not in (tmp_path / "boxed.csv").read_text() and "without a sandbox" not in render([boxed])
    write_totals([boxed, bare], tmp_path / "bare.csv")
    lines = (tmp_path / "bare.csv").read_text().splitlines()
    assert lines[0].endswith(UNSANDBOXED) and lines[1].endswith(",no") and lines[2].endswith(",yes")
    assert "1 submission(s) were graded without a sandbox" in render([boxed, bare])
