"""What a student does with an ipywidget in the browser: drag or key a slider, type into its readout, tick a box,
pick from a dropdown, click a button; and what they see: the text of an HTML output, the pixels of a plot."""
from __future__ import annotations

import re

from playwright.sync_api import Locator, expect

TIMEOUT = 60_000  # ms: a redraw runs in the kernel, which shares two cores with everything else


def _exact(text: str) -> re.Pattern:
    return re.compile(rf"^\s*{re.escape(text)}\s*$")


def slider(widget: Locator, label: str) -> Locator:
    """The slider whose description is ``label``."""
    return widget.locator(".widget-slider").filter(has=widget.page.locator(".widget-label", has_text=_exact(label)))


def slider_value(widget: Locator, label: str) -> str:
    return slider(widget, label).locator(".widget-readout").inner_text().strip()


def key_slider(widget: Locator, label: str, key: str = "ArrowRight", times: int = 1) -> None:
    """Focus the slider's handle and press ``key`` (each press is one step, as with a keyboard)."""
    handle = slider(widget, label).locator(".noUi-handle")
    handle.scroll_into_view_if_needed()
    handle.focus()
    for _ in range(times):
        handle.press(key)


def drag_slider(widget: Locator, label: str, fraction: float) -> None:
    """Drag the slider's handle with the mouse to ``fraction`` (0..1) of the track."""
    s = slider(widget, label)
    handle, track = s.locator(".noUi-handle"), s.locator(".noUi-target")
    handle.scroll_into_view_if_needed()
    hb, tb = handle.bounding_box(), track.bounding_box()
    mouse = widget.page.mouse
    mouse.move(hb["x"] + hb["width"] / 2, hb["y"] + hb["height"] / 2)
    mouse.down()
    x = tb["x"] + fraction * tb["width"]
    mouse.move(x, hb["y"] + hb["height"] / 2, steps=8)
    mouse.up()


def type_slider(widget: Locator, label: str, value) -> None:
    """Click the slider's number, type ``value`` and press Enter (how a student sets an exact value)."""
    readout = slider(widget, label).locator(".widget-readout")
    readout.scroll_into_view_if_needed()
    readout.click()
    widget.page.keyboard.press("Control+a")
    widget.page.keyboard.type(str(value))
    widget.page.keyboard.press("Enter")
    expect(readout).to_have_text(re.compile(rf"^\s*{re.escape(str(value))}"), timeout=TIMEOUT)


def checkbox(widget: Locator, label: str) -> Locator:
    """The checkbox whose description is ``label`` (by its accessible name, what a screen reader says)."""
    return widget.get_by_role("checkbox", name=label, exact=True)


def valid_checkbox(widget: Locator, step: str) -> Locator:
    """Lesson 01's augmentation explorer: the valid-column checkbox of ``step``'s row (a row holds train, then
    valid)."""
    row = widget.locator(".widget-hbox").filter(
        has=widget.page.locator(".widget-html-content", has_text=_exact(step))).last
    return row.locator("input[type=checkbox]").nth(1)


def click_checkbox(box: Locator, checked: bool) -> None:
    box.scroll_into_view_if_needed()
    box.set_checked(checked)


def button(widget: Locator, text: str) -> Locator:
    return widget.locator("button.jupyter-button").filter(has_text=_exact(text))


def settle(page, quiet_ms: int = 700) -> None:
    """Wait until the kernel has been idle for ``quiet_ms``.

    ipywidgets holds back a slider's later values while the kernel is busy with an earlier one, but a button's
    click travels on its own: a Record pressed straight after a few key presses can reach the kernel before the
    slider's last value does. A student glances at the result before pressing Record; this is that glance.
    """
    page.wait_for_function(
        "(q) => { const w = window.__vwPanel && window.__vwPanel();"
        " const k = w && w.sessionContext.session && w.sessionContext.session.kernel; const now = Date.now();"
        " if (window.__vwQuiet === undefined) window.__vwQuiet = now;"
        " if (k && k.status !== 'idle') { window.__vwQuiet = now; return false; }"
        " if (now - window.__vwQuiet > q) { window.__vwQuiet = undefined; return true; } return false; }",
        arg=quiet_ms, polling=100, timeout=TIMEOUT)


def click(widget: Locator, text: str) -> None:
    """Click the widget's button ``text``, once the values already sent have reached the kernel."""
    b = button(widget, text)
    b.scroll_into_view_if_needed()
    settle(widget.page)
    b.click()


def html_outputs(widget: Locator) -> Locator:
    return widget.locator(".widget-html-content")


def html_with(widget: Locator, text: str) -> Locator:
    """The HTML output of the widget that (will) contain ``text``."""
    return html_outputs(widget).filter(has_text=text)


def expect_text(widget: Locator, text: str | re.Pattern) -> None:
    """Wait until one of the widget's HTML outputs shows ``text``."""
    expect(html_outputs(widget).filter(has_text=text).first).to_be_visible(timeout=TIMEOUT)


def images(widget: Locator) -> Locator:
    return widget.locator("img.widget-image")


class Picture:
    """The pixels of one of the widget's plots now, to compare with what it shows after an action."""

    def __init__(self, img: Locator, pixels: bytes | None = None):
        self.img = img
        img.scroll_into_view_if_needed()
        expect(img).to_have_attribute("src", re.compile("."), timeout=TIMEOUT)
        self.src = img.get_attribute("src")
        self.pixels = pixels if pixels is not None else img.screenshot(animations="disabled")

    @classmethod
    def from_pixels(cls, img: Locator, pixels: bytes) -> "Picture":
        """The picture as it is now, whose pixels were just taken (after :meth:`expect_changed`)."""
        return cls(img, pixels)

    def expect_changed(self) -> bytes:
        """Wait for a new image and return its pixels; fails if the picture looks the same."""
        expect(self.img).not_to_have_attribute("src", self.src, timeout=TIMEOUT)
        self.img.evaluate("img => img.decode ? img.decode() : null")
        now = self.img.screenshot(animations="disabled")
        assert now != self.pixels, "the plot was redrawn but looks exactly the same"
        return now
