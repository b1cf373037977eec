"""The threshold explorer: slide the threshold, watch accuracy, precision and recall, and see which images flip."""
from __future__ import annotations

import io
from pathlib import Path
from typing import Sequence

import ipywidgets as W
import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import Tensor

from course_lib.multilabel import (
    accuracy_multi,
    explorer_set,
    explorer_thresholds,
    precision_recall,
    threshold_sweep,
)
from course_lib.widgets.base import GradedWidget, fig_png

MAX_FLIPS = 6


class ThresholdExplorer(GradedWidget):
    """A slider over thresholds for probabilities ``preds`` ``[N, C]`` and 0/1 targets ``targs`` ``[N, C]``.

    Shows the accuracy, precision and recall curves with the current threshold marked, the numbers
    at that threshold, and the images whose predicted labels differ from those at 0.5 ("flips"),
    as thumbnails when ``items`` (image paths, one per row) are given. Without ``preds``, the graded set of
    the student who is working (:func:`course_lib.multilabel.explorer_set`). Record stores
    ``(threshold, accuracy)``; ``answer`` is the last record and the line to paste is shown.
    """

    def __init__(self, preds: Tensor | None = None, targs: Tensor | None = None, vocab: Sequence[str] | None = None,
                 items: Sequence[Path] | None = None, answer_name: str = "chosen_threshold"):
        if preds is None or targs is None:
            preds, targs = explorer_set()  # the graded set: the student's own
        if vocab is None:
            from course_lib.data.pascal import VOC_CLASSES

            vocab = VOC_CLASSES
        self.preds, self.targs = preds.detach().float().cpu(), targs.detach().float().cpu()
        self.vocab, self.items, self.answer_name = list(vocab), items, answer_name
        self.thresholds = explorer_thresholds()
        self.accs = threshold_sweep(self.preds, self.targs, self.thresholds)
        pr = [precision_recall(self.preds, self.targs, float(t)) for t in self.thresholds]
        self.precisions = np.array([p for p, _ in pr])
        self.recalls = np.array([r for _, r in pr])
        self.threshold = W.FloatSlider(value=0.5, min=0.01, max=0.99, step=0.01, readout_format=".2f",
                                       description="threshold", continuous_update=False)
        self.plot = W.Image(format="png")
        self.info = W.HTML()
        self.flips = W.HTML()
        self._add_record_button("record this threshold and its accuracy")
        self.answer: tuple[float, float] | None = None
        self.threshold.observe(self._redraw, "value")
        self.widget = W.VBox([self.threshold, W.HBox([self.plot, self.info]), self.flips,
                              self.record_button, self.recorded])
        self.widget.add_class("vw-threshold-explorer")  # a handle for the browser tests
        self._redraw()

    @property
    def current(self) -> float:
        return round(float(self.threshold.value), 2)

    @property
    def accuracy(self) -> float:
        return float(accuracy_multi(self.preds, self.targs, thresh=self.current, sigmoid=False))

    def flipped(self, reference: float = 0.5) -> list[int]:
        """Rows whose predicted label set at the current threshold differs from the one at ``reference``."""
        now, before = self.preds > self.current, self.preds > reference
        return torch.nonzero((now != before).any(dim=1)).flatten().tolist()

    def _labels(self, row: Tensor) -> list[str]:
        return [self.vocab[i] for i in torch.nonzero(row).flatten().tolist()]

    def describe_flip(self, i: int, reference: float = 0.5) -> str:
        """``+added −removed (true: ...)`` for row ``i``, against the labels predicted at ``reference``.

        Each change carries ✓ when it agrees with the targets and ✗ when it does not.
        """
        now, before = self.preds[i] > self.current, self.preds[i] > reference
        truth = self.targs[i].bool()
        true = self._labels(truth)
        # ✓ when the change moved the prediction towards the truth, ✗ when away from it.
        added = [f"+{n}{'✓' if n in true else '✗'}" for n in self._labels(now & ~before)]
        removed = [f"−{n}{'✗' if n in true else '✓'}" for n in self._labels(before & ~now)]
        return f"{' '.join(added + removed)} (true: {' '.join(true) or 'none'})"

    def _curve_png(self) -> bytes:
        fig, ax = plt.subplots(figsize=(4.6, 3.0))
        ts = self.thresholds.numpy()
        ax.plot(ts, self.accs.numpy(), label="accuracy")
        ax.plot(ts, self.precisions, "--", label="precision")
        ax.plot(ts, self.recalls, ":", label="recall")
        ax.axvline(self.current, color="C3", lw=1)
        ax.set_xlabel("threshold")
        ax.set_ylim(0, 1.02)
        ax.legend(loc="lower center", fontsize=8)
        return fig_png(fig)

    def _flips_html(self) -> str:
        rows = self.flipped()
        if not rows:
            return "<b>Images that flip</b> (against threshold 0.50): none"
        parts = [f"<b>Images that flip</b> (against threshold 0.50): {len(rows)}, first {min(len(rows), MAX_FLIPS)}:"]
        if self.items is None:
            parts += [f"row {i}: {self.describe_flip(i)}" for i in rows[:MAX_FLIPS]]
            return "<br>".join(parts)
        import base64

        from PIL import Image

        cells = []
        for i in rows[:MAX_FLIPS]:
            img = Image.open(self.items[i]).convert("RGB")
            img.thumbnail((96, 96))
            buf = io.BytesIO()
            img.save(buf, format="PNG")
            src = base64.b64encode(buf.getvalue()).decode()
            cells.append(f"<div style='display:inline-block;width:110px;vertical-align:top;font-size:11px'>"
                         f"<img src='data:image/png;base64,{src}'><br>{self.describe_flip(i)}</div>")
        return parts[0] + "<br>" + "".join(cells)

    def _redraw(self, *_):
        t = self.current
        p, r = precision_recall(self.preds, self.targs, t)
        n_pred = int((self.preds > t).sum())
        self.plot.value = self._curve_png()
        self.info.value = "<br>".join([
            f"<b>threshold:</b> {t:.2f}",
            f"<b>accuracy:</b> {self.accuracy:.4f}",
            f"<b>precision:</b> {p:.3f}",
            f"<b>recall:</b> {r:.3f}",
            f"<b>labels predicted:</b> {n_pred} (true: {int(self.targs.sum())})",
        ])
        self.flips.value = self._flips_html()

    def _record(self, *_):
        self.answer = (self.current, round(self.accuracy, 4))
        self._show_recorded(f"Recorded threshold {self.answer[0]:.2f}, accuracy {self.answer[1]:.4f}.")
