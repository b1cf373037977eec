"""Lesson 05 in the browser: the box fitter and the prediction browser of the solution notebook."""
from playwright.sync_api import expect

from course_lib.checks import get_spec
from course_lib.common import student_id

import student as S
from labharness import lesson_fixture

LESSON = "05_bbox"
nb = lesson_fixture(LESSON)


def test_box_fitter_redraws_and_grades_the_box(nb):
    # The kernel draws the scene of whoever runs it (COURSE_STUDENT, else "offline"), as this process does.
    box = list(get_spec("borderline_box").answer_for(student_id()))
    w = nb.output(nb.index("fitter = BoxFitter()")).locator(".vw-box-fitter")
    expect(w).to_be_visible()
    S.expect_text(w, "your box: [20, 20, 60, 70]")
    S.expect_text(w, "PASCAL: missed")
    picture = S.Picture(S.images(w).first)
    for label, value in zip(("top", "left", "bottom", "right"), box):
        S.type_slider(w, label, value)
    S.expect_text(w, f"your box: {box}")
    S.expect_text(w, "PASCAL: found, just")
    picture.expect_changed()                         # the box is redrawn where the sliders put it
    S.click(w, "Record")
    S.expect_text(w, f"borderline_box = {tuple(box)}")
    nb.shot(w, "05_bbox-box-fitter")
    S.key_slider(w, "bottom", "ArrowLeft", box[2] - box[0] + 5)  # bottom above top: not a box any more
    S.expect_text(w, "not a box")


def test_prediction_browser_pages(nb):
    w = nb.output(nb.index("PredictionBrowser(val.images")).locator(".vw-prediction-browser")
    S.expect_text(w, "Showing ranks 1 to 6")
    picture = S.Picture(S.images(w).first)
    S.key_slider(w, "from rank", "ArrowRight")
    S.expect_text(w, "Showing ranks 7 to 12")
    picture.expect_changed()
    nb.shot(w, "05_bbox-prediction-browser")
