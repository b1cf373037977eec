"""Widgets for lesson 05_bbox: a box fitter (sliders, live IoU) and a browser of predictions sorted by IoU."""
from __future__ import annotations

from typing import Sequence

import ipywidgets as W
import matplotlib.pyplot as plt
import numpy as np
from matplotlib import patches

from course_lib.bbox import BORDERLINE_BAND, PASCAL_IOU, box_iou, draw_box, fitter_scene, l1_px
from course_lib.widgets.base import GradedWidget, LessonWidget, fig_png


def _truth_rect(ax, box, color="lime") -> None:
    top, left, bottom, right = box
    ax.add_patch(patches.Rectangle((left, top), right - left, bottom - top,
                                   fill=False, edgecolor=color, lw=1.5, ls="--"))


class BoxFitter(GradedWidget):
    """Four sliders place a box ``[top, left, bottom, right]`` on the fitter's scene; the IoU with the true
    box (dashed) and the L1 distance in pixels update as they move. Record stores the box in ``answer``
    and shows the line to paste.
    """

    def __init__(self, start: Sequence[int] = (20, 20, 60, 70), answer_name: str = "borderline_box"):
        self.image, self.truth, self.label = fitter_scene()
        self.answer_name = answer_name
        h, w = self.image.shape[:2]
        opts = dict(continuous_update=False, layout=W.Layout(width="320px"))
        self.top = W.IntSlider(value=start[0], min=0, max=h - 1, description="top", **opts)
        self.left = W.IntSlider(value=start[1], min=0, max=w - 1, description="left", **opts)
        self.bottom = W.IntSlider(value=start[2], min=0, max=h - 1, description="bottom", **opts)
        self.right = W.IntSlider(value=start[3], min=0, max=w - 1, description="right", **opts)
        self.plot = W.Image(format="png")
        self.info = W.HTML()
        self._add_record_button("record this box")
        self.answer: tuple[int, int, int, int] | None = None
        for s in (self.top, self.left, self.bottom, self.right):
            s.observe(self._redraw, "value")
        sliders = W.VBox([self.top, self.left, self.bottom, self.right])
        self.widget = W.VBox([W.HBox([self.plot, W.VBox([sliders, self.info])]), self.record_button, self.recorded])
        self.widget.add_class("vw-box-fitter")  # a handle for the browser tests
        self._redraw()

    @property
    def box(self) -> tuple[int, int, int, int]:
        return (int(self.top.value), int(self.left.value), int(self.bottom.value), int(self.right.value))

    @property
    def iou(self) -> float:
        return box_iou(self.box, self.truth)

    def verdict(self) -> str:
        """What PASCAL's detection challenge would say about the current box."""
        top, left, bottom, right = self.box
        if bottom <= top or right <= left:
            return "not a box: bottom must be below top, right right of left"
        lo, hi = BORDERLINE_BAND
        if self.iou >= hi:
            return "found (IoU ≥ 0.5), comfortably"
        if self.iou >= lo:
            return "found, just: IoU in [0.50, 0.55)"
        return f"missed (IoU < {PASCAL_IOU})"

    def _scene_png(self) -> bytes:
        fig, ax = plt.subplots(figsize=(4.0, 3.0))
        ax.imshow(self.image)
        _truth_rect(ax, self.truth)
        top, left, bottom, right = self.box
        if bottom > top and right > left:
            draw_box(ax, self.box, "yours")
        ax.set_axis_off()
        return fig_png(fig)

    def _redraw(self, *_):
        self.plot.value = self._scene_png()
        self.info.value = "<br>".join([
            f"<b>your box:</b> {list(self.box)}",
            f"<b>true box</b> (dashed): {self.truth.tolist()}",
            f"<b>IoU:</b> {self.iou:.3f}",
            f"<b>L1:</b> {l1_px(self.box, self.truth):.1f} px",
            f"<b>PASCAL:</b> {self.verdict()}",
        ])

    def _record(self, *_):
        self.answer = self.box
        self._show_recorded(f"Recorded {list(self.answer)} (IoU {self.iou:.3f}).")


class PredictionBrowser(LessonWidget):
    """Validation images ranked by the IoU of the predicted box, worst first; a slider moves through them.

    ``images`` uint8 ``[N,3,S,S]``, ``pred_boxes``/``true_boxes`` ``[N,4]`` in the same pixels,
    ``labels``/``pred_labels`` class indices into ``vocab``, ``n_objects`` per image (optional).
    """

    def __init__(self, images, pred_boxes, true_boxes, labels, pred_labels, vocab: Sequence[str],
                 n_objects: Sequence[int] | None = None, per_page: int = 6):
        self.images = np.asarray(images).transpose(0, 2, 3, 1)
        self.pred, self.true = np.asarray(pred_boxes, dtype=np.float64), np.asarray(true_boxes, dtype=np.float64)
        self.labels, self.pred_labels = np.asarray(labels), np.asarray(pred_labels)
        self.vocab, self.n_objects, self.per_page = list(vocab), n_objects, per_page
        self.ious = np.array([box_iou(p, t) for p, t in zip(self.pred, self.true)])
        self.order = np.argsort(self.ious, kind="stable")
        self.start = W.IntSlider(value=0, min=0, max=max(0, len(self.order) - per_page), step=per_page,
                                 description="from rank", continuous_update=False)
        self.plot = W.Image(format="png")
        self.info = W.HTML()
        self.start.observe(self._redraw, "value")
        self.widget = W.VBox([self.start, self.info, self.plot])
        self.widget.add_class("vw-prediction-browser")  # a handle for the browser tests
        self._redraw()

    def page(self) -> list[int]:
        """Indices of the images shown now, worst IoU first."""
        return self.order[self.start.value:self.start.value + self.per_page].tolist()

    def _redraw(self, *_):
        idx = self.page()
        cols = 3
        rows = max(1, -(-len(idx) // cols))
        fig, axes = plt.subplots(rows, cols, figsize=(3.0 * cols, 3.1 * rows), squeeze=False)
        for ax in axes.flat:
            ax.set_axis_off()
        for ax, i in zip(axes.flat, idx):
            ax.imshow(self.images[i])
            _truth_rect(ax, self.true[i])
            draw_box(ax, self.pred[i], self.vocab[int(self.pred_labels[i])])
            title = f"IoU {self.ious[i]:.2f}, true: {self.vocab[int(self.labels[i])]}"
            if self.n_objects is not None:
                title += f", {self.n_objects[i]} obj."
            ax.set_title(title, fontsize=9)
        fig.tight_layout()
        self.plot.value = fig_png(fig)
        n = len(self.ious)
        self.info.value = (f"{n} validation images, mean IoU {self.ious.mean():.3f}; "
                           f"{(self.ious >= PASCAL_IOU).mean():.0%} at IoU ≥ {PASCAL_IOU}. "
                           f"Showing ranks {self.start.value + 1} to {min(n, self.start.value + self.per_page)} "
                           "(1 = worst). Dashed: the truth; white: the prediction.")
