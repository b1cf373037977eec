"""Lesson 02 in the browser: the freezing explorer of the solution notebook, asking this kernel's student."""
from playwright.sync_api import expect

from course_lib import transfer
from course_lib.common import student_id

import student as S
from labharness import lesson_fixture

LESSON = "02_transfer_learning"
nb = lesson_fixture(LESSON)


def test_freezing_explorer_counts_what_trains(nb):
    # The notebook's kernel inherits this process's environment, so it asks the same student's question.
    question, want = transfer.freeze_question(student_id()), transfer.freeze_target(student_id())
    w = nb.output(nb.index("explorer = FreezingExplorer()")).locator(".vw-freezing-explorer")
    expect(w).to_be_visible()
    S.expect_text(w, f"{question['classes']} classes")
    S.expect_text(w, f"{question['budget']:,} trainable parameters")
    S.expect_text(w, "training: fc")
    picture = S.Picture(S.images(w).first)
    for group in want["train"][:-1]:
        S.click_checkbox(S.checkbox(w, group), True)
    S.expect_text(w, f"training: {', '.join(want['train'])}")
    S.expect_text(w, f"trainable: {want['trainable']:,}")
    S.expect_text(w, "within it")
    picture.expect_changed()                          # the unfrozen stages' bars and gradients appear
    S.click(w, "Record")
    S.expect_text(w, f"freeze_choice = {want!r}")
    nb.shot(w, "02_transfer_learning-freezing-explorer")
    S.click_checkbox(S.checkbox(w, "fc"), False)
    S.expect_text(w, f"training: {', '.join(want['train'][:-1])}")
