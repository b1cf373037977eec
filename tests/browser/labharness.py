"""The pieces the browser tests share: paths, the JupyterLab server handle and a notebook open in a page."""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import urllib.request
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ART = ROOT / "build" / "browser"
SHOTS = ART / "screenshots"
FAILURES = ART / "failures"
LOG = ART / "jupyterlab.log"
README_IMG = ROOT / "docs" / "img"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
# Who works in the browser: with no COURSE_STUDENT or JUPYTERHUB_USER, the Lab's kernels draw the widget targets
# of "offline" (as the solutions' answers are), the tests compute the same ones, and test_99_graded.py grades the
# saved notebooks under this name, so the answers are judged against the targets the student saw.
STUDENT = "offline"
# The screenshots the README shows (`make screenshots` copies them to docs/img).
README_SHOTS = ("03_multilabel-threshold-explorer.png", "05_bbox-box-fitter.png",
                "04_keypoints-challenge.png", "01_dataloader-augmentation-explorer.png")

OPTIONS = {"readme_images": False}  # set from the command line by conftest.py
GRADING: dict = {}  # the autograder run started by test_00_student_path.py, checked by test_99_graded.py


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Lab:
    """A running JupyterLab server: ``url(path)`` with the token, ``work`` its root folder."""

    def __init__(self, port: int, token: str, work: Path, proc: subprocess.Popen):
        self.port, self.token, self.work, self.proc = port, token, work, proc

    def url(self, path: str = "lab") -> str:
        sep = "&" if "?" in path else "?"
        return f"http://127.0.0.1:{self.port}/{path}{sep}token={self.token}"

    def api(self, path: str, method: str = "GET"):
        req = urllib.request.Request(self.url(f"api/{path}"), method=method)
        with urllib.request.urlopen(req, timeout=10) as r:
            body = r.read()
        return json.loads(body) if body else None

    def delete_sessions(self, notebook: str | None = None) -> None:
        """Shut down the kernels of ``notebook`` (all when None): kernels outlive the page that started them."""
        for s in self.api("sessions"):
            if notebook is None or s.get("path") == notebook:
                self.api(f"sessions/{s['id']}", method="DELETE")


class Notebook:
    """One notebook open in JupyterLab: a copy of ``src`` under a unique name, its page and its kernel."""

    def __init__(self, lab: Lab, browser, src: Path, tag: str = "", wait: bool = True):
        self.lab, self.src = lab, src
        self.name = f"{src.stem}-{tag + '-' if tag else ''}{uuid.uuid4().hex[:8]}.ipynb"
        shutil.copy(src, lab.work / self.name)
        self.cells_json = json.loads(src.read_text())["cells"]
        self.context = browser.new_context(viewport={"width": 1400, "height": 1000})
        self.page = self.context.new_page()
        self.page.set_default_timeout(60_000)
        # A workspace of its own (and ?reset): JupyterLab otherwise restores every notebook another page opened.
        self.page.goto(lab.url(f"lab/workspaces/vw-{uuid.uuid4().hex[:8]}/tree/{self.name}?reset"))
        # __vwPanel(): this notebook's panel, found by its path, whatever else the page shows.
        self.page.evaluate(
            "name => { window.__vwPanel = () => { const app = window.jupyterapp; if (!app) return null;"
            " for (const w of app.shell.widgets('main')) if (w.context && w.context.path === name) return w;"
            " return null; }; }", self.name)
        if wait:
            self.page.wait_for_function(self._READY, timeout=180_000)

    # The toolbar's "idle" shows before the kernel is connected; sessionContext.isReady is the real signal.
    _READY = ("() => { const w = window.__vwPanel && window.__vwPanel();"
              " const ok = !!(w && w.sessionContext && w.sessionContext.isReady"
              " && w.content && w.content.widgets.length);"
              " if (ok) w.node.setAttribute('data-vw-notebook', '1'); return ok; }")

    def kernel_ready(self) -> bool:
        return bool(self.page.evaluate(self._READY))

    def start_run(self, through: int | None = None) -> None:
        """Start running all cells (or cells 0..``through``) without waiting; see :meth:`run_state`."""
        # The function returns at once: Playwright would otherwise wait for the whole run.
        self.page.evaluate(
            "(i) => { window.__vwRun = 'running'; const app = window.jupyterapp;"
            " const nb = window.__vwPanel().content; app.shell.activateById(window.__vwPanel().id);"
            " (async () => { if (i === null) { await app.commands.execute('notebook:run-all-cells'); }"
            " else { nb.activeCellIndex = 0; nb.deselectAll(); nb.extendContiguousSelectionTo(i);"
            " await app.commands.execute('notebook:run-cell'); } })()"
            ".then(() => { window.__vwRun = 'done'; },"
            " (e) => { window.__vwRun = 'done'; window.__vwRunError = String(e); });"
            " }", through)

    def run_state(self) -> str:
        """'idle' (never started), 'running' or 'done'."""
        return self.page.evaluate("() => window.__vwRun || 'idle'")

    @property
    def path(self) -> Path:
        return self.lab.work / self.name

    # ------------------------------------------------------------------ cells
    def index(self, contains: str, start: int = 0) -> int:
        """The index of the first cell from ``start`` whose source contains ``contains``."""
        for i, c in enumerate(self.cells_json[start:], start):
            if contains in "".join(c["source"]):
                return i
        raise LookupError(f"no cell of {self.src.name} contains {contains!r}")

    def grade_index(self, grade_id: str) -> int:
        for i, c in enumerate(self.cells_json):
            if c.get("metadata", {}).get("nbgrader", {}).get("grade_id") == grade_id:
                return i
        raise LookupError(f"no cell of {self.src.name} has grade_id {grade_id!r}")

    def cell(self, i: int):
        return self.page.locator(".jp-NotebookPanel[data-vw-notebook] .jp-Notebook .jp-Cell").nth(i)

    def output(self, i: int):
        return self.cell(i).locator(".jp-OutputArea")

    def command(self, name: str, args: dict | None = None):
        """Run a JupyterLab command and wait until it resolves (run-all resolves once every cell replied)."""
        return self.page.evaluate("([n, a]) => { window.jupyterapp.shell.activateById(window.__vwPanel().id);"
                                  " return window.jupyterapp.commands.execute(n, a); }", [name, args or {}])

    def select(self, i: int) -> None:
        self.page.evaluate("i => { window.__vwPanel().content.activeCellIndex = i; }", i)

    def run_all(self) -> None:
        self.command("notebook:run-all-cells")
        self.assert_no_errors()

    def run_range(self, a: int, b: int) -> None:
        """Run cells ``a`` to ``b`` (both included), as selecting them and pressing Ctrl+Enter does."""
        self.page.evaluate(
            "([a, b]) => { const nb = window.__vwPanel().content;"
            " nb.activeCellIndex = a; nb.deselectAll(); nb.extendContiguousSelectionTo(b); }", [a, b])
        self.command("notebook:run-cell")

    def run_through(self, i: int) -> None:
        """Run every cell up to and including cell ``i``."""
        self.run_range(0, i)
        self.assert_no_errors()

    def errors(self) -> list:
        return self.page.evaluate(
            "() => { const out = []; window.__vwPanel().content.widgets.forEach((c, i) => {"
            " if (c.model.type !== 'code') return;"
            " for (const o of c.model.outputs.toJSON())"
            " if (o.output_type === 'error') out.push([i, o.ename, o.evalue]); });"
            " return out; }")

    def assert_no_errors(self) -> None:
        errs = self.errors()
        if errs:
            FAILURES.mkdir(parents=True, exist_ok=True)
            shot = FAILURES / f"{self.name}.png"
            self.cell(errs[0][0]).scroll_into_view_if_needed()
            self.page.screenshot(path=str(shot))
            raise AssertionError(f"cells raised in {self.name}: {errs}; screenshot: {shot}; JupyterLab log: {LOG}")

    def type_into(self, i: int, code: str) -> None:
        """Replace cell ``i``'s code by clicking into its editor, selecting all and typing ``code``.

        The text goes in as one insertion (as a paste would), so the editor's auto-indent and bracket
        closing do not rewrite it.
        """
        editor = self.cell(i).locator(".cm-content")
        editor.scroll_into_view_if_needed()
        editor.click()
        self.page.keyboard.press("Control+a")
        self.page.keyboard.press("Delete")
        self.page.keyboard.insert_text(code)
        self.page.keyboard.press("Escape")

    def save(self) -> None:
        self.command("docmanager:save")
        self.page.wait_for_function("() => !window.__vwPanel().context.model.dirty")

    def shot(self, locator, name: str) -> Path:
        """Screenshot ``locator`` to build/browser/screenshots/``name``.png (and docs/img when asked)."""
        SHOTS.mkdir(parents=True, exist_ok=True)
        out = SHOTS / f"{name}.png"
        # A widget taller than the window would be shot under JupyterLab's toolbar: grow the window to fit it.
        size = self.page.viewport_size
        box = locator.bounding_box()
        if box and box["height"] + 300 > size["height"]:
            self.page.set_viewport_size({"width": size["width"], "height": int(box["height"]) + 300})
        try:
            locator.scroll_into_view_if_needed()
            locator.screenshot(path=str(out), animations="disabled")
        finally:
            self.page.set_viewport_size(size)
        if OPTIONS["readme_images"] and out.name in README_SHOTS:
            # The README shows the widget, never a graded answer: the lines that state one are masked.
            README_IMG.mkdir(parents=True, exist_ok=True)
            answers = locator.get_by_text(re.compile(r"^(Recorded|Paste into the answer cell|\w+ = [(\[{'\"0-9])"))
            try:
                locator.scroll_into_view_if_needed()
                locator.screenshot(path=str(README_IMG / out.name), animations="disabled", mask=[answers],
                                   mask_color="#d0d0d0")
            finally:
                self.page.set_viewport_size(size)
        return out

    def close(self) -> None:
        try:
            self.lab.delete_sessions(self.name)
        finally:
            self.context.close()
            self.path.unlink(missing_ok=True)


def lesson_fixture(lesson: str):
    """A module-scoped fixture: the solution notebook of ``lesson``, open and run, shared by the module's tests."""

    @pytest.fixture(scope="module")
    def _fixture(runner):
        nb = runner.wait(lesson)
        yield nb
        runner.done.pop(lesson, None)
        nb.close()

    return _fixture
