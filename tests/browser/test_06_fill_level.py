"""Lesson 06 in the browser: the fill-level explorer of the solution notebook."""
from playwright.sync_api import expect

import student as S
from labharness import lesson_fixture

LESSON = "06_fill_level"
nb = lesson_fixture(LESSON)


def test_fill_explorer_size_and_level(nb):
    w = nb.output(nb.index("FillLevelExplorer(model")).locator(".vw-fill-explorer")
    expect(w).to_be_visible()
    S.expect_text(w, "model predicts:")            # the trained model's guess is shown
    picture = S.Picture(S.images(w).first)
    size = w.locator(".widget-dropdown select")
    size.select_option("32")                       # pick a size from the dropdown
    S.expect_text(w, "of 32")
    S.expect_text(w, "one row is 0.0312 of the height")
    picture = S.Picture.from_pixels(picture.img, picture.expect_changed())
    S.type_slider(w, "fill level", "0.500")
    S.expect_text(w, "white rows: 16 of 32")
    S.click(w, "Record")
    S.expect_text(w, "Record two levels at the same size.")
    S.key_slider(w, "fill level", "ArrowRight", 10)  # 0.510: still 16 of 32 rows
    S.expect_text(w, "white rows: 16 of 32")
    S.click(w, "Record")
    S.expect_text(w, "same_image_levels = (0.5, 0.51, 32)")
    nb.shot(w, "06_fill_level-explorer")
    S.key_slider(w, "fill level", "ArrowRight", 30)  # 0.540: one more white row, a different picture
    S.expect_text(w, "white rows: 17 of 32")
    picture.expect_changed()
    S.click(w, "Clear")
    S.expect_text(w, "Recorded: nothing yet")
