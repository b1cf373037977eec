"""The freezing explorer: choose which parts of a resnet train, see what that costs and where gradients flow."""
from __future__ import annotations

from typing import Sequence

import ipywidgets as W
import matplotlib.pyplot as plt
import numpy as np
from torch import nn

from course_lib.transfer import (
    QUESTION_ID,
    RESNET_GROUPS,
    count_trainable,
    freeze_groups,
    freeze_question,
    gradient_norms,
    question_model,
    trainable_by_group,
)
from course_lib.widgets.base import GradedWidget, fig_png


class FreezingExplorer(GradedWidget):
    """A checkbox per part of a resnet (``stem``, ``layer1`` ... ``layer4``, ``fc``).

    For the ticked parts it shows the trainable parameters per part against all of them, the
    total and whether it fits the budget, and the gradient each part receives from one backward
    pass (frozen parts receive none). Record stores ``{"train": [...], "trainable": N}`` as
    ``answer`` and shows the line to paste. The question (a head size and a budget) is the
    student's own: ``freeze_question(student)``, by default for ``student_id()``; ``model``
    defaults to resnet18 with a head of the question's size.
    """

    def __init__(self, model: nn.Module | None = None, train: Sequence[str] = ("fc",),
                 answer_name: str = QUESTION_ID, image_size: int = 64, student: str | None = None):
        from course_lib.common import student_id

        self.question = freeze_question(student if student is not None else student_id())
        self.model = model if model is not None else question_model(self.question["classes"])
        self.answer_name, self.image_size = answer_name, image_size
        self.boxes = {g: W.Checkbox(value=g in train, description=g, indent=False, layout=W.Layout(width="90px"))
                      for g in RESNET_GROUPS}
        self.plot = W.Image(format="png")
        self.info = W.HTML()
        self._add_record_button("record this choice and its count")
        self.answer: dict | None = None
        for box in self.boxes.values():
            box.observe(self._redraw, "value")
        asked = (f"<b>Your dataset:</b> {self.question['classes']} classes. <b>Your budget:</b> at most "
                 f"{self.question['budget']:,} trainable parameters.")
        self.widget = W.VBox([W.HTML(asked), W.HTML("<b>Train these parts</b> (unticked parts are frozen):"),
                              W.HBox(list(self.boxes.values())), W.HBox([self.plot, self.info]),
                              self.record_button, self.recorded])
        self.widget.add_class("vw-freezing-explorer")  # a handle for the browser tests
        self._redraw()

    @property
    def chosen(self) -> list[str]:
        return [g for g in RESNET_GROUPS if self.boxes[g].value]

    @property
    def trainable(self) -> int:
        return count_trainable(self.model)

    def _figure(self, by_group: dict[str, tuple[int, int]], grads: dict[str, float]) -> bytes:
        fig, (ax, ax2) = plt.subplots(1, 2, figsize=(7.5, 2.8), sharey=True, gridspec_kw={"width_ratios": [3, 2]})
        y = np.arange(len(RESNET_GROUPS))
        total = np.array([by_group[g][1] for g in RESNET_GROUPS]) / 1e6
        train = np.array([by_group[g][0] for g in RESNET_GROUPS]) / 1e6
        ax.barh(y, total, color="lightgray", label="all")
        ax.barh(y, train, color="C0", label="trainable")
        ax.set_yticks(y, RESNET_GROUPS)
        ax.invert_yaxis()
        ax.set_xlabel("parameters (millions)")
        ax.legend(fontsize=8, loc="lower right")
        g = np.array([grads[k] for k in RESNET_GROUPS])
        ax2.barh(y, g, color="C2")
        ax2.set_xlabel("gradient norm, one batch")
        for yi, gi in zip(y, g):
            if gi == 0:
                ax2.text(0, yi, " none (frozen)", va="center", fontsize=8, color="gray")
        return fig_png(fig)

    def _redraw(self, *_):
        freeze_groups(self.model, self.chosen)
        by_group = trainable_by_group(self.model)
        grads = gradient_norms(self.model, size=self.image_size)
        n, total = self.trainable, sum(b for _, b in by_group.values())
        self.plot.value = self._figure(by_group, grads)
        budget = self.question["budget"]
        self.info.value = "<br>".join([
            f"<b>training:</b> {', '.join(self.chosen) or 'nothing'}",
            f"<b>trainable:</b> {n:,} of {total:,}",
            f"<b>share:</b> {n / total:.1%}",
            f"<b>head:</b> {self.model.fc.out_features} classes",
            f"<b>budget:</b> {budget:,} ({'within it' if n <= budget else 'over it'})",
        ])

    def _record(self, *_):
        self.answer = {"train": self.chosen, "trainable": self.trainable}
        self._show_recorded(f"Recorded: training {', '.join(self.chosen) or 'nothing'}, "
                            f"{self.answer['trainable']:,} trainable parameters.")
