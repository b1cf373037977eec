"""The grading journal: what is already graded, so a run that was killed resumes.

``OUT/journal.jsonl`` gets one line per graded submission, appended (and flushed to
disk) as soon as the submission is done. Each line carries a key: a hash of the
submission's files, the lesson's source notebook, the grader's own code and the options
that change a grade. A later run skips a submission whose key it finds (unchanged work,
unchanged grader) and regrades one whose key changed; the newest line per student and
lesson wins, so ``grades.csv`` rebuilt from the journal never holds duplicates.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from autograder import REPO, notebooks

JOURNAL = "journal.jsonl"
_VERSION: str | None = None


def grader_version() -> str:
    """A hash of the code that decides grades: the autograder and course_lib (checks, references)."""
    global _VERSION
    if _VERSION is None:
        h = hashlib.sha256()
        for folder in ("autograder", "course_lib"):
            for path in sorted((REPO / folder).rglob("*.py")):
                h.update(str(path.relative_to(REPO)).encode() + b"\0" + path.read_bytes())
        _VERSION = h.hexdigest()[:16]
    return _VERSION


def submission_key(sub, opts) -> str:
    """The hash that says whether a submission must be graded again: its files exactly as the grader reads
    them (no links followed, sizes bounded: :func:`autograder.read.student_files`), the lesson's source, the
    grader's code and the options that change a grade (``--no-sandbox`` among them)."""
    from autograder.read import MAX_NOTEBOOK_BYTES, read_bytes, student_files

    h = hashlib.sha256()
    h.update(grader_version().encode())
    h.update(json.dumps([opts.profile, opts.cell_timeout, opts.memory_mb, opts.output_limit,
                         getattr(opts, "sandbox", True)]).encode())
    src = notebooks.source_path(sub.lesson)
    h.update(src.read_bytes() if src.exists() else b"")
    if sub.path is not None:
        try:
            h.update(read_bytes(sub.path, MAX_NOTEBOOK_BYTES))
        except (OSError, notebooks.NotebookError) as e:
            h.update(f"<unreadable: {e}>".encode())
        files, skipped = student_files(sub.path.parent)
        for name in sorted(files):
            h.update(name.encode() + b"\0" + files[name])
        h.update(json.dumps(skipped).encode())
    h.update(sub.problem.encode())
    return h.hexdigest()


class Journal:
    def __init__(self, out: Path, fresh: bool = False):
        self.path = Path(out) / JOURNAL
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if fresh and self.path.exists():
            self.path.unlink()
        self.entries: dict[tuple[str, str], dict] = {}
        if self.path.exists() and self.path.stat().st_size:
            with open(self.path, "rb+") as f:  # a line cut off by a kill must not swallow the next one
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":
                    f.write(b"\n")
            with open(self.path, encoding="utf-8") as f:
                for line in f:
                    try:
                        entry = json.loads(line)
                    except json.JSONDecodeError:  # a line cut off by a kill: that submission is regraded
                        continue
                    self.entries[(entry["student_id"], entry["lesson"])] = entry

    def done(self, sub, key: str) -> dict | None:
        entry = self.entries.get((sub.student_id, sub.lesson))
        return entry if entry is not None and entry.get("key") == key else None

    def record(self, entry: dict) -> None:
        line = json.dumps(entry, sort_keys=True) + "\n"
        # One write of a whole line in append mode, flushed to disk, before the next is started.
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
        self.entries[(entry["student_id"], entry["lesson"])] = entry
