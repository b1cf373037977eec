# nbgrader's view of this course: `solutions/` is the source, `lessons/` the release.
# Instructors who prefer nbgrader's own commands can run them with this file
# (`nbgrader generate_assignment 06_fill_level --config autograder/nbgrader_config.py`);
# `python -m autograder release` reads the same settings.
from pathlib import Path

c = get_config()  # type: ignore[name-defined]  # noqa: F821 - injected by traitlets when nbgrader loads this file

c.CourseDirectory.root = str(Path(__file__).resolve().parent.parent)
c.CourseDirectory.source_directory = "solutions"
c.CourseDirectory.release_directory = "lessons"
c.CourseDirectory.submitted_directory = "submitted"
c.CourseDirectory.autograded_directory = "autograded"
c.CourseDirectory.feedback_directory = "feedback"
c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}
c.ClearSolutions.text_stub = "YOUR ANSWER HERE"
c.Execute.timeout = 600
