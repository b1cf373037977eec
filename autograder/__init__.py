"""Release student notebooks and grade a class's submissions.

``python -m autograder release`` writes ``lessons/`` from ``solutions/``;
``python -m autograder grade SUBMISSIONS --out OUT`` grades a class.
"""
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SOLUTIONS = REPO / "solutions"
LESSONS = REPO / "lessons"
