"""The fill-level explorer, driven from Python as a student's clicks would drive it."""
import torch

from course_lib import fill_level
from course_lib.checks import get_spec, run_check
from course_lib.common import student_id
from course_lib.widgets.fill_level import FillLevelExplorer


def test_explorer_redraws_and_counts_rows():
    ex = FillLevelExplorer()
    ex.size.value = 16
    ex.level.value = 0.5
    first = ex.image.value
    assert "8 of 16" in ex.info.value and "0.0625" in ex.info.value
    ex.level.value = 0.7
    assert "11 of 16" in ex.info.value and ex.image.value != first
    assert "model predicts" not in ex.info.value


def test_explorer_shows_model_prediction_and_error():
    torch.manual_seed(0)
    model = fill_level.build_fill_model()
    ex = FillLevelExplorer(model, model_size=32)
    ex.level.value = 0.25
    want = fill_level.predict_fill(model, fill_level.make_fill_image(0.25, 32), 32)
    assert f"model predicts:</b> {want:.4f}" in ex.info.value
    assert f"error {abs(want - 0.25):.4f}" in ex.info.value


def test_recording_two_levels_gives_a_gradable_answer():
    ex = FillLevelExplorer()
    low, high, size = get_spec("same_image_levels").answer_for(student_id())  # two levels inside the target's step
    ex.size.value = size
    ex.level.value = low
    ex.record_button.click()
    assert ex.answer is None and "Record two levels" in ex.recorded.value
    ex.level.value = high
    ex.record_button.click()
    assert ex.answer == (low, high, size)
    assert f"same_image_levels = {(low, high, size)!r}" in ex.recorded.value
    assert run_check(get_spec("same_image_levels"), ex.answer).passed
    # A pair in different steps is recorded faithfully and graded wrong.
    ex.level.value = min(1.0, high + 3 / size)
    ex.record_button.click()
    assert not run_check(get_spec("same_image_levels"), ex.answer).passed
    ex.clear_button.click()
    assert ex.records == [] and ex.answer is None


def test_records_at_different_sizes_are_not_an_answer():
    ex = FillLevelExplorer()
    ex.size.value = 16
    ex.record_button.click()
    ex.size.value = 32
    ex.record_button.click()
    assert ex.answer is None
