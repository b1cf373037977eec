"""What every lesson widget shares: a figure as PNG bytes for a ``W.Image``, showing itself as the
last expression of a cell, and, for graded widgets, the Record button with its "paste this line".

A widget's state does not survive saving, submitting or a headless autograde, so a graded widget
records its answer as a line of Python the student pastes into an answer cell (lesson 06_fill_level
introduces it); the line is always written the same way, so the browser tests and students find it.
"""
from __future__ import annotations

import io
from typing import Any

import ipywidgets as W
import matplotlib.pyplot as plt


def fig_png(fig, tight: bool = True) -> bytes:
    """``fig`` as PNG bytes for a ``W.Image``; the figure is closed, so it is not shown a second time.

    ``tight``: crop to what is drawn (``bbox_inches="tight"``); otherwise the figure's own size.
    """
    buf = io.BytesIO()
    fig.savefig(buf, format="png", **({"bbox_inches": "tight"} if tight else {}))
    plt.close(fig)
    return buf.getvalue()


def paste_line(answer_name: str, answer: Any) -> str:
    """The HTML line that tells a student what to paste into the answer cell: ``name = repr(answer)``."""
    return f"Paste into the answer cell: <code>{answer_name} = {answer!r}</code>"


class LessonWidget:
    """A wrapper around ``self.widget`` (an ipywidgets box) that displays it when it ends a cell."""

    widget: W.Widget

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)


class GradedWidget(LessonWidget):
    """A widget whose Record button stores ``self.answer`` and shows the line to paste (``self.answer_name = ...``).

    Subclasses call :meth:`_add_record_button` in ``__init__``, put ``self.record_button`` and
    ``self.recorded`` into their layout, and implement ``_record``, which ends with :meth:`_show_recorded`.
    """

    answer_name: str
    answer: Any = None

    def _add_record_button(self, tooltip: str, recorded: str = "Recorded: nothing yet") -> None:
        self.record_button = W.Button(description="Record", icon="check", tooltip=tooltip)
        self.recorded = W.HTML(recorded)
        self.record_button.on_click(self._record)

    def _record(self, *_) -> None:
        raise NotImplementedError

    def _show_recorded(self, summary: str, missing: str = "") -> None:
        """``summary``, then the line to paste; ``missing`` instead of that line while there is no answer yet."""
        line = paste_line(self.answer_name, self.answer) if self.answer is not None else missing
        self.recorded.value = f"{summary}<br>{line}"
