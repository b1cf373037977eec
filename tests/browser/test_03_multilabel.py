"""Lesson 03 in the browser: the threshold explorers of the solution notebook."""
from playwright.sync_api import expect

import student as S
from labharness import lesson_fixture

LESSON = "03_multilabel"
nb = lesson_fixture(LESSON)


def test_threshold_explorer_follows_the_slider(nb):
    w = nb.output(nb.index("explorer = ThresholdExplorer()")).locator(".vw-threshold-explorer")
    expect(w).to_be_visible()
    S.expect_text(w, "threshold: 0.50")
    curve = S.Picture(S.images(w).first)
    # Drag the handle close to 0.40, then key it the rest of the way, as a student would.
    S.drag_slider(w, "threshold", (0.40 - 0.01) / 0.98)
    expect(S.slider(w, "threshold").locator(".widget-readout")).not_to_have_text("0.50")
    now = float(S.slider_value(w, "threshold"))
    steps = round((now - 0.40) / 0.01)
    if steps:
        S.key_slider(w, "threshold", "ArrowLeft" if steps > 0 else "ArrowRight", abs(steps))
    S.expect_text(w, "threshold: 0.40")
    S.expect_text(w, "accuracy: 0.9621")   # the number the lesson's answer cell holds
    curve.expect_changed()                 # the marker on the curves moved
    S.click(w, "Record")
    S.expect_text(w, "chosen_threshold = (0.4, 0.9621)")
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
