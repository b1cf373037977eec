"""Reading what students submitted without trusting it: no links, no special files, bounded sizes.

A submission folder is made by students (or by unpacking what they uploaded), so anything in it
may be a symbolic link to a file they must not see (another student's work, the solutions, the
grader's keys), a FIFO that blocks a read forever, or a file far too large to load. Everything
here looks at an entry with ``lstat`` (never through a link) and opens files with ``O_NOFOLLOW``,
so that a link is refused even if it appears between the look and the open.
"""
from __future__ import annotations

import errno
import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from autograder import notebooks
from autograder.notebooks import NotebookError

MB = 1_000_000
MAX_NOTEBOOK_BYTES = 50 * MB
CLEAR_OUTPUTS = "clear large outputs (Edit > Clear Outputs of All Cells), save and resubmit"


@dataclass
class Submission:
    student_id: str
    lesson: str
    path: Path | None
    problem: str = ""  # why it cannot be graded, when discover already knows


# ------------------------------------------------------------------------------ discover

def _entries(folder: Path) -> list[os.DirEntry]:
    """The visible entries of ``folder`` by name; hidden ones (``.ipynb_checkpoints``, macOS's
    ``._name`` copies) are clutter that upload tools add, never a student's work."""
    with os.scandir(folder) as it:
        return sorted((e for e in it if not e.name.startswith(".")), key=lambda e: e.name)


def link_message(name: str, kind: str = "notebook") -> str:
    return f"{name} is a link, not a file: submit the {kind} itself."


def discover(root: Path, lessons: list[str] | None = None) -> list[Submission]:
    """Every ``<student_id>/<lesson>/`` under ``root``, with the notebook to grade in it.

    Links are never followed. A student folder that is a link is skipped with a warning (what
    it points to is not theirs to submit); a lesson folder or notebook that is a link becomes a
    submission with a ``problem`` that tells the student to submit the real thing. ``root``
    itself is the instructor's and may be a link.
    """
    known = set(notebooks.lessons())
    wanted = set(lessons) if lessons else known
    subs: list[Submission] = []
    for student in _entries(Path(root)):
        if student.is_symlink():
            print(f"warning: {student.name}: a link, not a folder; links are never followed, skipped")
            continue
        if not student.is_dir(follow_symlinks=False):
            continue
        for lesson_dir in _entries(Path(student.path)):
            lesson = lesson_dir.name
            linked = lesson_dir.is_symlink()
            if not linked and not lesson_dir.is_dir(follow_symlinks=False):
                continue
            if lesson not in known:
                print(f"warning: {student.name}/{lesson}: no lesson of that name in solutions/, skipped")
                continue
            if lesson not in wanted:
                continue
            where = f"{student.name}/{lesson}"
            if linked:
                subs.append(Submission(student.name, lesson, None,
                                       f"{where} is a link, not a folder: submit the folder itself."))
                continue
            subs.append(_notebook_in(student.name, lesson, Path(lesson_dir.path)))
    return subs


def _notebook_in(student: str, lesson: str, folder: Path) -> Submission:
    where = f"{student}/{lesson}"
    found = {e.name: e for e in _entries(folder) if e.name.endswith(".ipynb")}
    expected = f"{lesson}.ipynb"
    if expected in found:
        entry = found[expected]
    elif len(found) == 1:  # a renamed copy ("06_fill_level (1).ipynb") is still the work
        entry = next(iter(found.values()))
    else:
        names = ", ".join(found) or "no notebook"
        return Submission(student, lesson, None, f"expected {expected} in {where}/, found {names}.")
    if entry.is_symlink():
        return Submission(student, lesson, None, f"{where}/{link_message(entry.name)}")
    if not entry.is_file(follow_symlinks=False):
        return Submission(student, lesson, None,
                          f"{where}/{entry.name} is not a file (a folder, or a special file): "
                          "submit the notebook itself.")
    return Submission(student, lesson, Path(entry.path))


# ---------------------------------------------------------------------------- read bytes

class _Link(Exception):
    pass


class _NotRegular(Exception):
    pass


class _TooBig(Exception):
    def __init__(self, size: int):
        super().__init__(size)
        self.size = size


def _mb(n: int) -> str:
    x = n / MB
    return f"{x:.0f}" if x >= 100 else f"{x:.3g}"


def _read_limited(path, limit: int, dir_fd: int | None = None) -> bytes:
    """The bytes of the regular file ``path`` (relative to ``dir_fd`` when given), at most ``limit``.

    O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer that never comes;
    fstat then refuses it like any file that is not regular.
    """
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, dir_fd=dir_fd)
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.EMLINK):  # what O_NOFOLLOW answers for a link
            raise _Link() from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _NotRegular()
        if st.st_size > limit:
            raise _TooBig(st.st_size)
        chunks, n = [], 0
        while n <= limit:  # one byte past the limit tells a file that grew since fstat
            chunk = os.read(fd, min(1 << 20, limit + 1 - n))
            if not chunk:
                break
            chunks.append(chunk)
            n += len(chunk)
        if n > limit:
            raise _TooBig(max(n, st.st_size))
        return b"".join(chunks)
    finally:
        os.close(fd)


def read_bytes(path: Path | str, limit: int, *, kind: str = "notebook", advice: str = CLEAR_OUTPUTS) -> bytes:
    """The contents of a submitted file, read without following a link and at most ``limit`` bytes.

    Raises :class:`NotebookError` with one sentence for the student when the file is missing,
    a link, not a regular file, larger than ``limit`` or unreadable.
    """
    name = Path(path).name
    try:
        return _read_limited(path, limit)
    except FileNotFoundError:
        raise NotebookError(f"{name} was not found.") from None
    except _Link:
        raise NotebookError(link_message(name, kind)) from None
    except _NotRegular:
        raise NotebookError(f"{name} is not a file (a folder, or a special file): submit the {kind} itself.") from None
    except _TooBig as e:
        raise NotebookError(f"{name} is {_mb(e.size)} MB, over the {_mb(limit)} MB limit for a {kind}: "
                            f"{advice}.") from None
    except OSError as e:
        raise NotebookError(f"{name} could not be read ({type(e).__name__}: {e}).") from None


# ------------------------------------------------------------------------- student files

_NAME_PUNCTUATION = frozenset(" ._-()+,")
MAX_LEFT_OUT = 200  # files left out that get a reason each; the rest are counted


def safe_name(name: str) -> bool:
    """A file name that is letters (any script), digits, spaces and ``._-()+,`` only, and does not
    start with a dot, a dash or a space: no path separators, control or direction-changing
    characters, nothing a shell or a spreadsheet reads as an option or a formula."""
    return (0 < len(name) <= 255 and name[0] not in ".- "
            and all(ch.isalnum() or ch in _NAME_PUNCTUATION for ch in name))


def student_files(folder: Path, limit_each: int = 20 * MB, limit_total: int = 100 * MB,
                  max_files: int = 200) -> tuple[dict[str, bytes], list[tuple[str, str]]]:
    """The student's other files in their lesson folder (data their notebook reads), by name.

    Only regular files directly in ``folder`` whose names pass :func:`safe_name`; never a
    notebook, a link, a subfolder or a special file. Returns the files and, for the feedback
    page, a ``(name, why)`` for each file left out. Hidden files (``.DS_Store``,
    ``.ipynb_checkpoints``) are left out without a word: upload tools make them, not students.
    The folder is opened once, without following a link, and every file is opened relative to
    it, so nothing can be swapped for a link between the look and the read.
    """
    files: dict[str, bytes] = {}
    skipped: list[tuple[str, str]] = []
    try:
        dir_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        what = ("a link, not a folder" if os.path.islink(folder)  # O_NOFOLLOW with O_DIRECTORY answers ENOTDIR
                else "not a folder" if e.errno == errno.ENOTDIR else f"unreadable ({e.strerror})")
        return files, [(Path(folder).name, f"the folder is {what}: none of its files were used")]
    total, over = 0, 0

    def over_total(used: int) -> str:
        return f"the files before it (by name) already use {_mb(used)} of the {_mb(limit_total)} MB allowed"

    try:
        with os.scandir(dir_fd) as it:
            entries = sorted((e for e in it if not e.name.startswith(".")), key=lambda e: e.name)
        for entry in entries:
            name = entry.name
            if name.lower().endswith(".ipynb"):
                continue
            why = _why_not(entry)
            if why is None and len(files) >= max_files:
                why = f"only the first {max_files} files (by name) are used"
            if why is None:
                size = entry.stat(follow_symlinks=False).st_size
                if size > limit_each:
                    why = f"{_mb(size)} MB, over the {_mb(limit_each)} MB limit for one file"
                elif total + size > limit_total:
                    why = over_total(total)
            if why is None:
                try:
                    data = _read_limited(name, limit_each, dir_fd=dir_fd)
                except _Link:
                    why = "a link, not a file: submit the file itself"
                except _NotRegular:
                    why = "not a regular file"
                except _TooBig as e:
                    why = f"{_mb(e.size)} MB, over the {_mb(limit_each)} MB limit for one file"
                except OSError as e:
                    why = f"could not be read ({e.strerror or type(e).__name__})"
                else:
                    if total + len(data) > limit_total:  # it grew since it was looked at
                        why = over_total(total)
                    else:
                        files[name] = data
                        total += len(data)
            if why is not None and len(skipped) >= MAX_LEFT_OUT:  # a page of reasons, not one per entry
                over += 1
            elif why is not None:
                skipped.append((name, why))
    finally:
        os.close(dir_fd)
    if over:
        skipped.append((f"{over} more", "left out without a reason each: too many files in the folder"))
    return files, skipped


def _why_not(entry: os.DirEntry) -> str | None:
    """Why a folder entry is not a file the grader may copy, or None."""
    if entry.is_symlink():
        return "a link, not a file: submit the file itself"
    if entry.is_dir(follow_symlinks=False):
        return "a folder: only files directly in your lesson folder are used"
    if not entry.is_file(follow_symlinks=False):
        return "not a regular file"
    if not safe_name(entry.name):
        return "its name may only have letters, digits, spaces and . _ - ( ) + , in it: rename it"
    return None


# ---------------------------------------------------------------------------- widget state

def _size(value) -> int:
    return len(json.dumps(value, separators=(",", ":"), default=str).encode())


def strip_widget_state(nb) -> int:
    """Drop the saved widget state of a notebook and of its cells; the bytes of JSON removed.

    ``metadata.widgets`` (and a cell's ``metadata.widgets``) holds every widget model the
    student's browser had, often many megabytes; the grader runs the notebook again, which
    makes the widgets anew, and a feedback page never shows saved state.
    """
    removed = 0
    meta = nb.get("metadata")
    if isinstance(meta, dict) and "widgets" in meta:
        removed += _size(meta.pop("widgets"))
    for cell in nb.get("cells") or []:
        meta = cell.get("metadata") if isinstance(cell, dict) else None
        if isinstance(meta, dict) and "widgets" in meta:
            removed += _size(meta.pop("widgets"))
    return removed
