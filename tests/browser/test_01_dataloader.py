"""Lesson 01 in the browser: the augmentation explorer of the solution notebook."""
from playwright.sync_api import expect

from course_lib.common import student_id
from course_lib.dataloader import PREPARATION_STEPS, RANDOM_STEPS, explorer_training_steps

import student as S
from labharness import lesson_fixture

LESSON = "01_dataloader"
nb = lesson_fixture(LESSON)


def test_augmentation_explorer_fixes_the_validation_pipeline(nb):
    # The kernel draws the training pipeline of whoever runs it (COURSE_STUDENT, else "offline"), as this process does.
    training = explorer_training_steps(student_id())
    w = nb.output(nb.index("AugmentationExplorer(items")).locator(".vw-augmentation-explorer")
    expect(w).to_be_visible()
    S.expect_text(w, "RandomResizedCrop crops a random part")
    S.expect_text(w, "Your training pipeline")
    train = S.Picture(S.images(w).first)
    S.click(w, "New draws")
    train = S.Picture.from_pixels(train.img, train.expect_changed())   # eight new random draws
    S.drag_slider(w, "crop min scale", 0.9)   # every training pipeline starts with a random crop
    train.expect_changed()
    for step in (s for s in training if s in RANDOM_STEPS):
        S.click_checkbox(S.valid_checkbox(w, step), False)
    for step in ("Resize", "CenterCrop"):
        S.click_checkbox(S.valid_checkbox(w, step), True)
    S.expect_text(w, "✓ a correct validation pipeline")
    S.expect_text(w, "✓ the same every run")
    S.click(w, "Record")
    answer = ("Resize", "CenterCrop", *[s for s in PREPARATION_STEPS if s in training], "ToTensor", "Normalize")
    S.expect_text(w, f"valid_pipeline = {answer!r}")
    nb.shot(w, "01_dataloader-augmentation-explorer")
