"""Lesson 02 in the browser: the freezing explorer of the solution notebook."""
from playwright.sync_api import expect

import student as S
from labharness import lesson_fixture

LESSON = "02_transfer_learning"
nb = lesson_fixture(LESSON)


def test_freezing_explorer_counts_what_trains(nb):
    w = nb.output(nb.index("explorer = FreezingExplorer()")).locator(".vw-freezing-explorer")
    expect(w).to_be_visible()
    S.expect_text(w, "training: fc")
    picture = S.Picture(S.images(w).first)
    S.click_checkbox(S.checkbox(w, "layer4"), True)
    S.expect_text(w, "training: layer4, fc")
    S.expect_text(w, "trainable: 8,446,054")
    picture.expect_changed()                          # layer4's bars and gradient appear
    S.click(w, "Record")
    S.expect_text(w, "freeze_choice = {'train': ['layer4', 'fc'], 'trainable': 8446054}")
    nb.shot(w, "02_transfer_learning-freezing-explorer")
    S.click_checkbox(S.checkbox(w, "fc"), False)
    S.expect_text(w, "training: layer4")
