"""The fill-level explorer: see an image, what the model predicts, and why resolution limits accuracy."""
from __future__ import annotations

import ipywidgets as W
import matplotlib.pyplot as plt

from course_lib.common import student_id
from course_lib.fill_level import make_fill_image, predict_fill, same_image_target
from course_lib.widgets.base import GradedWidget, fig_png


def _image_png(image, title: str) -> bytes:
    fig, ax = plt.subplots(figsize=(2.6, 2.6))
    ax.imshow(image, interpolation="nearest")
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    return fig_png(fig)


class FillLevelExplorer(GradedWidget):
    """Slider for the fill level, a choice of image size, the image, and the model's guess.

    Record stores the current (level, size). After two records, ``answer`` is
    ``(level_a, level_b, size)`` and the line to paste into the answer cell is shown. The graded question is
    about the student's own target (``same_image_target(student_id())``): a level and a size, shown above the
    slider, whose image the two recorded levels must both give.
    """

    def __init__(self, model=None, model_size: int | None = None, sizes=(8, 16, 32, 64, 128),
                 answer_name: str = "same_image_levels", student: str | None = None):
        self.model, self.model_size, self.answer_name = model, model_size, answer_name
        self.target = same_image_target(student if student is not None else student_id())
        level, size = self.target
        self.task = W.HTML(f"<b>your target:</b> the image of fill level {level:.3f} at size {size}")
        self.level = W.FloatSlider(value=0.5, min=0.0, max=0.999, step=0.001, readout_format=".3f",
                                   description="fill level", continuous_update=True)
        # The target's size joins the choices; the first view stays where it always was.
        self.size = W.Dropdown(options=sorted({*sizes, size}), value=sizes[1] if len(sizes) > 1 else sizes[0],
                               description="size")
        self.image = W.Image(format="png")
        self.info = W.HTML()
        self._add_record_button("record this level and size", recorded="")
        self.clear_button = W.Button(description="Clear")
        self.records: list[tuple[float, int]] = []
        self.level.observe(self._redraw, "value")
        self.size.observe(self._redraw, "value")
        self.clear_button.on_click(self._clear)
        self.widget = W.VBox([
            self.task,
            W.HBox([self.level, self.size]),
            W.HBox([self.image, self.info]),
            W.HBox([self.record_button, self.clear_button]),
            self.recorded,
        ])
        self.widget.add_class("vw-fill-explorer")  # a handle for the browser tests
        self._redraw()

    @property
    def rows(self) -> int:
        return int(self.level.value * self.size.value)

    @property
    def prediction(self) -> float | None:
        if self.model is None:
            return None
        img = make_fill_image(self.level.value, self.model_size or self.size.value)
        return predict_fill(self.model, img, self.model_size)

    @property
    def answer(self) -> tuple[float, float, int] | None:
        if len(self.records) < 2:
            return None
        (a, sa), (b, sb) = self.records[-2:]
        return (a, b, sa) if sa == sb else None

    def _redraw(self, *_):
        size, level = self.size.value, self.level.value
        self.image.value = _image_png(make_fill_image(level, size), f"{size}x{size}")
        lines = [f"<b>white rows:</b> {self.rows} of {size}",
                 f"<b>level the image shows:</b> {self.rows / size:.4f}",
                 f"<b>one row is</b> {1 / size:.4f} of the height"]
        pred = self.prediction
        if pred is not None:
            lines.append(f"<b>model predicts:</b> {pred:.4f} (error {abs(pred - level):.4f})")
        self.info.value = "<br>".join(lines)

    def _record(self, *_):
        self.records.append((round(float(self.level.value), 3), int(self.size.value)))
        self._show_records()

    def _clear(self, *_):
        self.records.clear()
        self._show_records()

    def _show_records(self):
        text = ", ".join(f"({lv:.3f}, size {s})" for lv, s in self.records[-2:]) or "nothing yet"
        self._show_recorded(f"Recorded: {text}", missing="Record two levels at the same size.")
