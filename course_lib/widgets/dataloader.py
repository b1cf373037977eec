"""The augmentation explorer: toggle and tune transforms, see what training and validation pipelines make of
one image. Each student's explorer starts from a training pipeline of their own (``explorer_training_steps``), so
the validation pipeline that fits it differs from a classmate's."""
from __future__ import annotations

import html
from pathlib import Path
from typing import Sequence

import ipywidgets as W
import matplotlib.pyplot as plt
import numpy as np
import torch

from course_lib.dataloader import (
    EXPLORER_SIZE,
    IMAGENET_MEAN,
    IMAGENET_STD,
    PIPELINE_STEPS,
    build_pipeline,
    denormalize,
    explorer_training_steps,
    validation_pipeline_problems,
)
from course_lib.widgets.base import GradedWidget, fig_png

N_VALID_RUNS = 4


def _default_image():
    from PIL import Image

    from course_lib.data.flowers import get_flowers

    first = sorted((get_flowers() / "train").glob("*/*.jpg"))[0]
    with Image.open(first) as im:
        return im.convert("RGB")


def to_display(out) -> np.ndarray:
    """An un-normalised pipeline output (PIL image or tensor ``[3,H,W]`` in 0..1) as an HWC array for imshow."""
    if isinstance(out, torch.Tensor):
        return out.detach().cpu().movedim(0, -1).clamp(0, 1).numpy()
    return np.asarray(out.convert("RGB"), dtype=np.float32) / 255


class PipelineExplorer(GradedWidget):
    """Lesson 01's augmentation explorer. Two pipelines over one image: training (shown ``n`` times, each a
    fresh random draw) and validation.

    Each step of ``PIPELINE_STEPS`` has a checkbox per pipeline; sliders tune the random steps.
    The training column starts as ``student``'s own training pipeline (default: ``student_id()``) and the
    validation column as a copy of it, the mistake to fix. The validation row runs its pipeline
    ``N_VALID_RUNS`` times and says whether it is deterministic, at the training size, prepared as that
    training pipeline prepares images and fed what the model expects. Record stores the validation steps
    as a tuple (``answer``) and shows the line to paste into the answer cell.
    """

    def __init__(self, image=None, size: int = EXPLORER_SIZE, n: int = 8, seed: int = 0,
                 answer_name: str = "valid_pipeline", student: str | None = None):
        from PIL import Image

        from course_lib.common import student_id

        self.student = student if student is not None else student_id()
        # What the grader holds the answer to: the pipeline drawn for this student, whatever the train column shows.
        self.training = explorer_training_steps(self.student)

        if image is None:
            image = _default_image()
        elif isinstance(image, (str, Path)):
            with Image.open(image) as im:
                image = im.convert("RGB")
        self.image, self.size, self.n, self.seed, self.answer_name = image, size, n, seed, answer_name
        self.train_boxes = {s: W.Checkbox(value=s in self.training, description="", indent=False,
                                          layout=W.Layout(width="30px")) for s in PIPELINE_STEPS}
        self.valid_boxes = {s: W.Checkbox(value=s in self.training, description="", indent=False,
                                          layout=W.Layout(width="30px")) for s in PIPELINE_STEPS}
        slider = dict(continuous_update=False, style={"description_width": "110px"}, layout=W.Layout(width="330px"))
        self.sliders = {
            "min_scale": W.FloatSlider(value=0.35, min=0.05, max=1.0, step=0.05, description="crop min scale",
                                       **slider),
            "flip_p": W.FloatSlider(value=0.5, min=0.0, max=1.0, step=0.1, description="h-flip p", **slider),
            "vflip_p": W.FloatSlider(value=0.5, min=0.0, max=1.0, step=0.1, description="v-flip p", **slider),
            "degrees": W.FloatSlider(value=15.0, min=0.0, max=180.0, step=5.0, description="rotation °", **slider),
            "jitter": W.FloatSlider(value=0.3, min=0.0, max=1.0, step=0.05, description="colour jitter", **slider),
            "hue": W.FloatSlider(value=0.05, min=0.0, max=0.5, step=0.01, description="hue jitter", **slider),
            "gray_p": W.FloatSlider(value=0.2, min=0.0, max=1.0, step=0.1, description="grayscale p", **slider),
        }
        self.resample = W.Button(description="New draws", icon="refresh", tooltip="new random augmentations")
        self.train_plot, self.valid_plot = W.Image(format="png"), W.Image(format="png")
        self.train_info, self.valid_info = W.HTML(), W.HTML()
        self._add_record_button("record the validation pipeline")
        self.answer: tuple[str, ...] | None = None
        for box in [*self.train_boxes.values(), *self.valid_boxes.values(), *self.sliders.values()]:
            box.observe(self._redraw, "value")
        self.resample.on_click(self._new_draws)
        rows = [W.HBox([W.HTML("<b>train</b>", layout=W.Layout(width="42px")),
                        W.HTML("<b>valid</b>", layout=W.Layout(width="42px")), W.HTML("<b>step</b>")])]
        for s in PIPELINE_STEPS:
            rows.append(W.HBox([self.train_boxes[s], W.HTML("", layout=W.Layout(width="12px")), self.valid_boxes[s],
                                W.HTML("", layout=W.Layout(width="12px")), W.HTML(s)]))
        controls = W.HBox([W.VBox(rows), W.VBox([*self.sliders.values(), self.resample])])
        mine = W.HTML(f"Your training pipeline (student <code>{html.escape(self.student)}</code>; each student's "
                      f"differs): {' → '.join(self.training)}. The validation row is checked against it, "
                      "whatever you tick in the train column while exploring.")
        self.widget = W.VBox([mine, controls, W.HTML("<b>Training pipeline</b>: every picture is a new random draw"),
                              self.train_plot, self.train_info,
                              W.HTML(f"<b>Validation pipeline</b>: run {N_VALID_RUNS} times"),
                              self.valid_plot, self.valid_info, self.record_button, self.recorded])
        self.widget.add_class("vw-augmentation-explorer")  # a handle for the browser tests
        self._redraw()

    # ------------------------------------------------------------------ state

    def steps(self, which: str = "train") -> tuple[str, ...]:
        """The ticked steps of the ``"train"`` or ``"valid"`` pipeline, in the order they run."""
        boxes = self.train_boxes if which == "train" else self.valid_boxes
        return tuple(s for s in PIPELINE_STEPS if boxes[s].value)

    def set_steps(self, which: str, steps: Sequence[str]) -> None:
        """Tick exactly ``steps`` in one pipeline (redraws once)."""
        boxes = self.train_boxes if which == "train" else self.valid_boxes
        self._hold = True
        try:
            for s, box in boxes.items():
                box.value = s in steps
        finally:
            self._hold = False
        self._redraw()

    @property
    def params(self) -> dict:
        return {k: float(s.value) for k, s in self.sliders.items()}

    def run(self, which: str, k: int) -> tuple[object, np.ndarray]:
        """Draw ``k`` of pipeline ``which`` (seeded, so a redraw is reproducible): (raw output, display array)."""
        steps = self.steps(which)
        pipe = build_pipeline(steps, self.size, self.params)
        torch.manual_seed(self.seed * 1000 + k)
        out = pipe(self.image)
        if isinstance(out, torch.Tensor) and "Normalize" in steps:
            return out, denormalize(out, IMAGENET_MEAN, IMAGENET_STD).numpy()
        return out, to_display(out)

    def outputs(self, which: str, n: int) -> tuple[list, list[np.ndarray], str | None]:
        raws, shown = [], []
        try:
            for k in range(n):
                raw, disp = self.run(which, k)
                raws.append(raw)
                shown.append(disp)
        except Exception as e:  # an impossible pipeline (e.g. Normalize without ToTensor) is a lesson, not a crash
            return [], [], f"{type(e).__name__}: {e}"
        return raws, shown, None

    # ------------------------------------------------------------------ drawing

    def _grid(self, images: list[np.ndarray], ncols: int) -> bytes:
        nrows = max(1, -(-len(images) // ncols))
        fig, axes = plt.subplots(nrows, ncols, figsize=(1.6 * ncols, 1.6 * nrows), squeeze=False)
        for i, ax in enumerate(axes.flat):
            ax.axis("off")
            if i < len(images):
                ax.imshow(images[i])
                h, w = images[i].shape[:2]
                ax.set_title(f"{w}x{h}", fontsize=7)
        return fig_png(fig)

    @staticmethod
    def _shape(raw) -> str:
        if isinstance(raw, torch.Tensor):
            return f"tensor {list(raw.shape)}"
        return f"PIL image {raw.size[0]}x{raw.size[1]}"

    def _error_png(self, text: str) -> bytes:
        fig, ax = plt.subplots(figsize=(6, 0.6))
        ax.axis("off")
        ax.text(0, 0.5, text[:110], fontsize=8, color="C3", va="center")
        return fig_png(fig)

    def valid_report(self, runs: tuple | None = None) -> dict:
        """What the validation pipeline does: ``deterministic``, ``shape``, ``problems`` (the grading rule)."""
        raws, _, err = runs if runs is not None else self.outputs("valid", N_VALID_RUNS)
        same = bool(raws) and all(self._equal(raws[0], r) for r in raws[1:])
        return dict(error=err, deterministic=same, shape=self._shape(raws[0]) if raws else None,
                    problems=validation_pipeline_problems(self.steps("valid"), self.training))

    @staticmethod
    def _equal(a, b) -> bool:
        if isinstance(a, torch.Tensor):
            return isinstance(b, torch.Tensor) and a.shape == b.shape and torch.equal(a, b)
        return np.array_equal(np.asarray(a), np.asarray(b))

    def _redraw(self, *_):
        if getattr(self, "_hold", False):
            return
        raws, shown, err = self.outputs("train", self.n)
        if err:
            self.train_plot.value = self._error_png(err)
            self.train_info.value = f"<span style='color:#c00'>The training pipeline fails: {html.escape(err)}</span>"
        else:
            self.train_plot.value = self._grid(shown, ncols=min(self.n, 8))
            shapes = sorted({self._shape(r) for r in raws})
            note = "" if len(shapes) == 1 else " (different sizes cannot be stacked into one batch)"
            self.train_info.value = f"output: {', '.join(shapes)}{note}"
        raws, shown, err = runs = self.outputs("valid", N_VALID_RUNS)
        rep = self.valid_report(runs)
        if err:
            self.valid_plot.value = self._error_png(err)
        else:
            self.valid_plot.value = self._grid(shown, ncols=N_VALID_RUNS)
        lines = []
        if err:
            lines.append(f"✗ fails: {html.escape(err)}")
        else:
            lines.append(f"{'✓' if rep['deterministic'] else '✗'} the same every run"
                         + ("" if rep["deterministic"]
                            else ": the model would be measured on different images each time"))
            lines.append(f"output: {rep['shape']} (training size: {self.size}x{self.size})")
        lines += [f"✗ {html.escape(p)}" for p in rep["problems"]]
        if not rep["problems"]:
            lines.append("✓ a correct validation pipeline")
        self.valid_info.value = "<br>".join(lines)

    def _new_draws(self, *_):
        self.seed += 1
        self._redraw()

    def _record(self, *_):
        self.answer = self.steps("valid")
        verdict = ("✓ this is a correct validation pipeline"
                   if not validation_pipeline_problems(self.answer, self.training)
                   else "✗ not yet right, but you can paste it to see the self-check's message")
        self._show_recorded(f"Recorded validation pipeline: {' → '.join(self.answer) or '(empty)'}. {verdict}.")


# The name lesson 01's notebook imports; widgets.keypoints has an explorer of its own (KeypointExplorer).
AugmentationExplorer = PipelineExplorer
