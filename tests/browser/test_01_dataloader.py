"""Lesson 01 in the browser: the augmentation explorer of the solution notebook."""
from playwright.sync_api import expect

import student as S
from labharness import lesson_fixture

LESSON = "01_dataloader"
nb = lesson_fixture(LESSON)

RANDOM = ("RandomResizedCrop", "RandomHorizontalFlip", "RandomRotation", "ColorJitter")


def _valid_box(w, step):
    """The valid-column checkbox of ``step``'s row (the row holds train, then valid)."""
    row = w.locator(".widget-hbox").filter(has=w.page.locator(".widget-html-content", has_text=S._exact(step))).last
    return row.locator("input[type=checkbox]").nth(1)


def test_augmentation_explorer_fixes_the_validation_pipeline(nb):
    w = nb.output(nb.index("AugmentationExplorer(items")).locator(".vw-augmentation-explorer")
    expect(w).to_be_visible()
    S.expect_text(w, "RandomResizedCrop crops a random part")
    train = S.Picture(S.images(w).first)
    S.click(w, "New draws")
    train = S.Picture.from_pixels(train.img, train.expect_changed())   # eight new random draws
    S.drag_slider(w, "rotation °", 0.9)
    train.expect_changed()
    for step in RANDOM:
        S.click_checkbox(_valid_box(w, step), False)
    for step in ("Resize", "CenterCrop"):
        S.click_checkbox(_valid_box(w, step), True)
    S.expect_text(w, "✓ a correct validation pipeline")
    S.expect_text(w, "✓ the same every run")
    S.click(w, "Record")
    S.expect_text(w, "valid_pipeline = ('Resize', 'CenterCrop', 'ToTensor', 'Normalize')")
    nb.shot(w, "01_dataloader-augmentation-explorer")
