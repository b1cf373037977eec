"""Interactive widgets for the lessons. Each graded widget exercise records an answer that
the student pastes into an answer cell, so it survives saving, submitting and a headless
autograde (widget state itself does not re-run in a grader's kernel)."""
