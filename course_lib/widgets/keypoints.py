"""The augmentation explorer: flip, warp, rotate and zoom an image and predict where its keypoint lands."""
from __future__ import annotations

from pathlib import Path

import ipywidgets as W
import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import Tensor

from course_lib.keypoints import augment, challenge_for, grid_image, to_unit_points
from course_lib.widgets.base import GradedWidget, fig_png


def _as_image(img) -> Tensor:
    """A path, PIL image, HxWx3 uint8 array or [3,H,W] float tensor -> float tensor [3,H,W] in 0..1."""
    if isinstance(img, Tensor):
        return img.detach().float().cpu()
    if isinstance(img, (str, Path)):
        from PIL import Image

        path = Path(img)
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist: pass an image file of the BIWI folder.")
        img = Image.open(path).convert("RGB")
    arr = np.asarray(img, dtype=np.float32)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"expected an RGB image of shape [H, W, 3], got shape {list(arr.shape)}")
    return torch.from_numpy(arr / 255.0).permute(2, 0, 1)


class KeypointExplorer(GradedWidget):
    """Lesson 04's augmentation explorer. Sliders for fastai's flip, warp, rotate and zoom, the image before
    and after, and its keypoint.

    ``img`` is an image (path, PIL, array or ``[3,H,W]`` tensor) and ``point`` its keypoint
    ``[col, row]`` in pixels. The prediction sliders place a blue cross where you think the point
    lands; "reveal" shows where fastai actually moves it (red). With ``challenge=True`` the image is
    a labelled grid, the point and the augmentation are the student's own
    (:func:`~course_lib.keypoints.challenge_for`, drawn from their id) and where fastai puts the point is never
    shown: Record stores ``answer = (col, row)`` (your prediction) and shows the line to paste into the answer
    cell; the grader judges it.
    """

    def __init__(self, img=None, point=None, challenge: bool = False, answer_name: str = "landing_point"):
        self.challenge, self.answer_name = challenge, answer_name
        mine = challenge_for() if challenge or img is None else None
        if mine is not None:
            img, point = grid_image(), mine["point"]
        if point is None:
            raise ValueError("give the keypoint [col, row] of the image, e.g. get_ctr(img_file, cal)")
        self.img = _as_image(img)
        self.point = torch.as_tensor(point, dtype=torch.float32).reshape(-1)[:2].as_subclass(Tensor)
        _, self.h, self.w = self.img.shape
        c = mine if challenge and mine is not None else dict(flip=False, rotate=0.0, zoom=1.0, warp=0.0)
        style = {"description_width": "70px"}
        self.flip = W.Checkbox(value=bool(c["flip"]), description="flip", style=style)
        self.warp = W.FloatSlider(value=float(c["warp"]), min=-0.4, max=0.4, step=0.05, description="warp",
                                  continuous_update=False, style=style)
        self.rotate = W.FloatSlider(value=float(c["rotate"]), min=-45, max=45, step=5, description="rotate °",
                                    continuous_update=False, style=style)
        self.zoom = W.FloatSlider(value=float(c["zoom"]), min=1.0, max=2.0, step=0.05, description="zoom",
                                  continuous_update=False, style=style)
        for control in (self.flip, self.warp, self.rotate, self.zoom):
            control.disabled = challenge
            control.observe(self._redraw, "value")
        self.pred_col = W.IntSlider(value=self.w // 2, min=0, max=self.w, description="your col",
                                    continuous_update=False, style=style)
        self.pred_row = W.IntSlider(value=self.h // 2, min=0, max=self.h, description="your row",
                                    continuous_update=False, style=style)
        self.reveal = W.Checkbox(value=False, description="reveal where fastai puts it",
                                 style={"description_width": "0px"})
        for control in (self.pred_col, self.pred_row, self.reveal):
            control.observe(self._redraw, "value")
        self.reveal.disabled = challenge
        self.plot = W.Image(format="png")
        self.info = W.HTML()
        self._add_record_button("record your predicted (col, row)",
                                recorded="Recorded: nothing yet" if challenge else "")
        self.answer: tuple[float, float] | None = None
        self._cache: dict = {}
        rows = [W.HBox([W.VBox([self.flip, self.warp, self.rotate, self.zoom]),
                        W.VBox([self.pred_col, self.pred_row, self.reveal])]), self.plot, self.info]
        if challenge:
            rows += [self.record_button, self.recorded]
        self.widget = W.VBox(rows)
        self.widget.add_class("vw-keypoint-explorer")  # a handle for the browser tests
        self._redraw()

    @property
    def params(self) -> tuple[bool, float, float, float]:
        return (bool(self.flip.value), float(self.rotate.value),
                round(float(self.zoom.value), 2), round(float(self.warp.value), 2))

    def transformed(self) -> tuple[Tensor, Tensor]:
        """(augmented image [3,H,W], where fastai moved the point [col, row]) for the current settings."""
        key = self.params
        if key not in self._cache:
            flip, rotate, zoom, warp = key
            self._cache[key] = augment(self.img, self.point, flip=flip, rotate=rotate, zoom=zoom, warp=warp)
        return self._cache[key]

    @property
    def truth(self) -> tuple[float, float]:
        _, p = self.transformed()
        return round(float(p[0]), 1), round(float(p[1]), 1)

    @property
    def prediction(self) -> tuple[float, float]:
        return float(self.pred_col.value), float(self.pred_row.value)

    def _figure_png(self) -> bytes:
        aug, _ = self.transformed()
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
        axes[0].imshow(self.img.permute(1, 2, 0).clamp(0, 1).numpy())
        axes[0].scatter([float(self.point[0])], [float(self.point[1])], s=90, c="red", edgecolors="white")
        axes[0].set_title(f"before: point at ({self.point[0]:.0f}, {self.point[1]:.0f})", fontsize=9)
        axes[1].imshow(aug.permute(1, 2, 0).clamp(0, 1).numpy())
        pc, pr = self.prediction
        axes[1].scatter([pc], [pr], s=220, c="blue", marker="+", linewidths=2.5, label="your prediction")
        if self.reveal.value:
            tc, tr = self.truth
            axes[1].scatter([tc], [tr], s=90, c="red", edgecolors="white", label="fastai's point")
        flip, rotate, zoom, warp = self.params
        axes[1].set_title(f"after flip={flip}, warp={warp:g}, rotate={rotate:g}°, zoom={zoom:g}", fontsize=9)
        axes[1].legend(loc="lower right", fontsize=7)
        for ax in axes:
            ax.set_xlim(0, self.w)
            ax.set_ylim(self.h, 0)
            ax.set_xticks([0, self.w // 2, self.w])
            ax.set_yticks([0, self.h // 2, self.h])
            ax.tick_params(labelsize=7)
        fig.tight_layout()
        return fig_png(fig, tight=False)

    def _info_html(self) -> str:
        pc, pr = self.prediction
        lines = [f"<b>your prediction:</b> ({pc:.0f}, {pr:.0f})"]
        if self.reveal.value:
            tc, tr = self.truth
            u = to_unit_points(torch.tensor([tc, tr]), (self.w, self.h))
            off = float(np.hypot(pc - tc, pr - tr))
            lines += [f"<b>fastai's point:</b> ({tc:.1f}, {tr:.1f}) px = ({u[0]:.3f}, {u[1]:.3f}) in [-1, 1]",
                      f"<b>you were</b> {off:.0f} px off"]
        return "<br>".join(lines)

    def _redraw(self, *_):
        self.plot.value = self._figure_png()
        self.info.value = self._info_html()

    def _record(self, *_):
        self.answer = self.prediction
        # Where fastai puts the point stays hidden: shown here, a first wild guess would give the answer away.
        self._show_recorded(f"Recorded your prediction ({self.answer[0]:.0f}, {self.answer[1]:.0f}). Run the "
                            "self-check below the answer cell to see whether it is right.")


# The name lesson 04's notebook imports; widgets.dataloader has an explorer of its own (PipelineExplorer).
AugmentationExplorer = KeypointExplorer
