"""Lesson 04 in the browser: the keypoint augmentation explorers of the solution notebook."""
import re

from playwright.sync_api import expect

import student as S
from labharness import lesson_fixture

LESSON = "04_keypoints"
nb = lesson_fixture(LESSON)


def _fastai_point(w):
    text = S.html_with(w, "fastai's point").inner_text()
    return [float(v) for v in re.search(r"fastai's point:\s*\(([-\d.]+), ([-\d.]+)\)", text).groups()]


def test_flip_moves_the_point(nb):
    w = nb.output(nb.index("AugmentationExplorer(frame")).locator(".vw-keypoint-explorer")
    expect(w).to_be_visible()
    picture = S.Picture(S.images(w).first)
    S.click_checkbox(S.checkbox(w, "reveal where fastai puts it"), True)
    S.expect_text(w, "fastai's point")
    picture = S.Picture.from_pixels(picture.img, picture.expect_changed())   # the red point appears
    col, row = _fastai_point(w)
    S.click_checkbox(S.checkbox(w, "flip"), True)
    expect(S.html_with(w, "fastai's point")).not_to_contain_text(f"({col:.1f}, {row:.1f})", timeout=S.TIMEOUT)
    col2, row2 = _fastai_point(w)
    assert abs(col2 - (640 - col)) <= 2 and abs(row2 - row) <= 2, "a flip mirrors the column and keeps the row"
    picture.expect_changed()
    S.key_slider(w, "your col", "ArrowLeft", 5)
    S.expect_text(w, "your prediction:")
    nb.shot(w, "04_keypoints-explorer")


def test_challenge_records_the_prediction_and_never_shows_the_answer(nb):
    from course_lib.common import student_id
    from course_lib.keypoints import challenge_truth

    col, row = (round(v) for v in challenge_truth(student_id()))  # the lab's student: this process's
    w = nb.output(nb.index("AugmentationExplorer(challenge=True)")).locator(".vw-keypoint-explorer")
    expect(S.slider(w, "rotate °").locator(".noUi-target")).to_have_attribute("disabled", re.compile(".*"))
    picture = S.Picture(S.images(w).first)
    S.type_slider(w, "your col", col)
    S.type_slider(w, "your row", row)
    S.expect_text(w, f"your prediction: ({col}, {row})")
    picture.expect_changed()                           # the blue cross moved
    S.click(w, "Record")
    S.expect_text(w, f"landing_point = ({col:.1f}, {row:.1f})")
    S.expect_text(w, "Recorded your prediction")
    expect(w).not_to_contain_text("fastai puts the point")
    expect(w).not_to_contain_text("fastai's point")
    nb.shot(w, "04_keypoints-challenge")
