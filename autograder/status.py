"""Every status a grade can carry, as one type.

A row of ``grades.csv`` has the status of one exercise; a line of ``totals.csv`` and of the
journal has the status of a whole submission (``ok`` when it ran through). ``Status`` is a
``str`` Enum so that CSV, JSON and HTML keep showing the same plain words as before
(``str(Status.PASSED) == "passed"``), and a status read back from a file compares equal to
its member (``Status.PASSED == "passed"``).
"""
from __future__ import annotations

from enum import Enum


class Status(str, Enum):
    """What happened to an exercise or a submission; each member's ``__doc__`` says it to the student."""

    def __new__(cls, value: str, doc: str = ""):
        member = str.__new__(cls, value)
        member._value_ = value
        member.__doc__ = doc
        return member

    # The plain word, not "Status.PASSED": files and pages are written with str() and f-strings.
    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)

    PASSED = "passed", "Your answer gave the right result on every hidden test case: full points."
    FAILED = "failed", ("Your answer ran but gave a wrong result on at least one hidden test case; "
                        "the message says which case and, where it can tell, the likely mistake.")
    ERROR = "error", ("Your code raised an error when it was tested, or your notebook could not be read; "
                      "the message says what went wrong and what to do.")
    MISSING = "missing", ("No notebook was found for this lesson where it was expected "
                          "(<student>/<lesson>/<lesson>.ipynb), or what was there was not a notebook file.")
    TIMEOUT = "timeout", ("Your code ran longer than the time limit and was stopped: look for a loop that never "
                          "ends or work far bigger than the exercise asks for.")
    KERNEL_DIED = "kernel_died", ("The Python process running your notebook crashed or exited before this "
                                  "exercise was tested (a crash in your code, os._exit, or running out of memory).")
    OUT_OF_MEMORY = "out_of_memory", ("Your notebook used more memory than it is allowed: look for data or "
                                      "models far bigger than the exercise needs.")
    NOT_RUN = "not_run", "This exercise's test did not run (usually because something before it stopped the run)."
    FLAGGED = "flagged", ("Your submission did something the grader does not allow (such as reading the hidden "
                          "tests); it scores 0 here until an instructor has reviewed it.")
    TO_GRADE = "to grade", ("A written answer: your instructor grades it by hand; it counts 0 points here until "
                            "they have.")
    OK = "ok", "Your notebook ran through; each exercise has its own status."


# Submission statuses the class report lists, most serious first: the instructor reads the
# ones that need a person (flagged, then missing or unreadable work) before plain timeouts.
PROBLEMS: tuple[Status, ...] = (Status.FLAGGED, Status.MISSING, Status.ERROR, Status.KERNEL_DIED,
                                Status.OUT_OF_MEMORY, Status.TIMEOUT)


def seriousness(status: str) -> int:
    """Where ``status`` sorts among :data:`PROBLEMS` (0: most serious); an unknown one, as an
    old journal may hold, sorts after all of them rather than failing the report."""
    try:
        return PROBLEMS.index(Status(status))
    except ValueError:
        return len(PROBLEMS)
