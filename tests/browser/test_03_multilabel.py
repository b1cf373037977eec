"""Lesson 03 in the browser: the threshold explorers of the solution notebook."""
from playwright.sync_api import expect

from course_lib.common import student_id
from course_lib.multilabel import explorer_target

import student as S
from labharness import lesson_fixture

LESSON = "03_multilabel"
nb = lesson_fixture(LESSON)
# The graded explorer draws the set of whoever runs the kernel; the kernels inherit this process's environment.
TARGET = explorer_target(student_id())


def test_threshold_explorer_follows_the_slider(nb):
    w = nb.output(nb.index("explorer = ThresholdExplorer()")).locator(".vw-threshold-explorer")
    expect(w).to_be_visible()
    S.expect_text(w, "threshold: 0.50")
    curve = S.Picture(S.images(w).first)
    best_t, best_a = TARGET
    # Drag the handle close to the best threshold, then key it the rest of the way, as a student would.
    S.drag_slider(w, "threshold", (best_t - 0.01) / 0.98)
    expect(S.slider(w, "threshold").locator(".widget-readout")).not_to_have_text("0.50")
    now = float(S.slider_value(w, "threshold"))
    steps = round((now - best_t) / 0.01)
    if steps:
        S.key_slider(w, "threshold", "ArrowLeft" if steps > 0 else "ArrowRight", abs(steps))
    S.expect_text(w, f"threshold: {best_t:.2f}")
    S.expect_text(w, f"accuracy: {best_a:.4f}")   # the number the grader expects of this student
    curve.expect_changed()                         # the marker on the curves moved
    S.click(w, "Record")
    S.expect_text(w, f"chosen_threshold = {TARGET!r}")
    nb.shot(w, "03_multilabel-threshold-explorer")


def test_flips_appear_when_the_threshold_moves(nb):
    w = nb.output(nb.index("ThresholdExplorer(preds, targs")).locator(".vw-threshold-explorer")
    S.expect_text(w, "Images that flip")
    S.key_slider(w, "threshold", "ArrowLeft", 15)
    S.expect_text(w, "threshold: 0.35")
    flips = S.html_with(w, "Images that flip")
    expect(flips).not_to_contain_text("none", timeout=S.TIMEOUT)
    expect(flips.locator("img").first).to_be_visible()   # thumbnails of the images whose labels changed
    nb.shot(w, "03_multilabel-flips")
