"""Feedback pages are opened by an instructor in a browser: nothing a student writes may run there."""
from __future__ import annotations

import re

import nbformat
import pytest

from autograder.feedback import render, safe_cell
from autograder.grade import Row

PAYLOADS = {
    "html_script": "<script>steal('html')</script>",
    "html_onerror": "<img src=x onerror=\"steal('img')\">",
    "markdown_script": "<script>steal('markdown')</script>",
    "markdown_link": "[click](javascript:steal('link'))",
    "raw": "<script>steal('raw')</script>",
    "js": "steal('js')",
    "svg": "<svg onload=\"steal('svg')\"></svg>",
    "iframe": "<iframe src=\"https://evil.example/\"></iframe>",
}


def _student_notebook() -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {
        "state": {"m": {"model_name": "HTMLModel", "state": {"value": "<img src=x onerror=steal('widget')>"}}}}}
    tiny_png = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
    nb.cells = [
        nbformat.v4.new_markdown_cell("## My notes\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n" + PAYLOADS["markdown_script"]
                                      + "\n\n" + PAYLOADS["markdown_link"]),
        nbformat.v4.new_raw_cell(PAYLOADS["raw"]),
        nbformat.v4.new_code_cell("show()", execution_count=3, outputs=[
            nbformat.v4.new_output("display_data", data={
                "text/html": PAYLOADS["html_script"] + PAYLOADS["html_onerror"] + PAYLOADS["iframe"] + "<b>bold</b>",
                "text/plain": "<IPython.core.display.HTML object>"}),
            nbformat.v4.new_output("display_data", data={"application/javascript": PAYLOADS["js"],
                                                         "text/plain": "<js>"}),
            nbformat.v4.new_output("display_data", data={"image/svg+xml": PAYLOADS["svg"]}),
            nbformat.v4.new_output("display_data", data={
                "application/vnd.jupyter.widget-view+json": {"model_id": "m", "version_major": 2, "version_minor": 0},
                "text/plain": "HTML(value='...')"}),
            nbformat.v4.new_output("display_data", data={"image/png": tiny_png, "text/plain": "<Figure>"},
                                   metadata={"image/png": {"width": "1 onerror=steal('width')", "height": 40}}),
            nbformat.v4.new_output("stream", name="stdout", text="<script>steal('stdout')</script>\n"),
        ]),
    ]
    nb.cells[2].metadata["tags"] = ["x\" onmouseover=\"steal('tag')"]
    return nb


@pytest.fixture(scope="module")
def page() -> str:
    rows = [Row("mallory", "03_multilabel", "one_hot", 0.0, 2.0, "failed", "<script>steal('message')</script>")]
    return render(_student_notebook(), rows)


def _executable(page: str) -> list[str]:
    """Every place in the page where a student's `steal(...)` could run."""
    found = []
    for m in re.finditer(r"<script[^>]*>(.*?)</script>", page, flags=re.S):
        if "steal(" in m.group(1):
            found.append(m.group(0)[:120])
    for m in re.finditer(r"<[a-z][^>]*>", page):
        tag = m.group(0)
        if "steal(" in tag and re.search(r"\son\w+\s*=|javascript:", tag):
            found.append(tag[:120])
    return found


def test_no_student_script_can_run_in_a_feedback_page(page):
    assert _executable(page) == []
    assert "<iframe" not in page
    assert "widget-state+json" not in page and "steal('widget')" not in page


def test_what_is_safe_still_shows(page):
    # The student's text, figures and tables survive, escaped where they were markup.
    assert "<b>bold</b>" in page
    figures = [tag for tag in re.findall(r"<img[^>]*>", page) if "data:image/png;base64,iVBOR" in tag]
    assert len(figures) == 1 and re.search(r"height=\"?40", figures[0]) and "width" not in figures[0]
    assert "<th>a</th>" in page or "<th style" in page
    assert "&lt;script&gt;steal(&#39;stdout&#39;)" in page or "&lt;script&gt;steal('stdout')" in page
    assert "HTML(value=" in page  # a widget shows as its plain-text form
    # The grader's summary is the first thing on the page and quotes the message escaped.
    assert page.index("autograder-summary") < page.index("My notes")
    assert "0 / 2 points" in page and "&lt;script&gt;steal(&#x27;message&#x27;)" in page


def test_safe_cell_drops_metadata_and_unknown_outputs():
    cell = _student_notebook().cells[2]
    safe = safe_cell(cell)
    assert safe.metadata == {} and safe.execution_count == 3
    kinds = [sorted(o.get("data", {})) for o in safe.outputs if o.output_type == "display_data"]
    assert kinds == [["text/html", "text/plain"], ["text/plain"], ["text/plain"], ["image/png", "text/plain"]]
    assert safe.outputs[-2].metadata == {"image/png": {"height": 40}}
    assert safe_cell({"cell_type": "unknown", "source": "x"}) is None


TINY_PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
ROWS = [Row("amy", "03_multilabel", "one_hot", 1.0, 2.0, "failed", "case 1 of 4: wrong shape")]


def _screenshot_notebook() -> nbformat.NotebookNode:
    """A screenshot pasted into a Markdown cell, as JupyterLab saves it, next to attachments that
    must not show (SVG, broken base64, a PNG that is not one) and references to images never attached."""
    nb = nbformat.v4.new_notebook()
    pasted = nbformat.v4.new_markdown_cell("My plot:\n\n![image.png](attachment:image.png)")
    pasted.attachments = {"image.png": {"image/png": TINY_PNG}}
    bad = nbformat.v4.new_markdown_cell("![a](attachment:evil.svg) ![b](attachment:broken.png) "
                                        "![c](attachment:liar.png) ![d](attachment:never.png) ![e][ref]\n\n"
                                        "[ref]: attachment:also-never.png\n")
    bad.attachments = {"evil.svg": {"image/svg+xml": "<svg onload=\"steal('svg')\"></svg>"},
                       "broken.png": {"image/png": "not base64 at all!"},
                       "liar.png": {"image/png": "PHNjcmlwdD5zdGVhbCgncG5nJyk8L3NjcmlwdD4="}}
    output = nbformat.v4.new_code_cell("show()", outputs=[nbformat.v4.new_output(
        "display_data", data={"text/markdown": "![x](attachment:image.png)", "text/plain": "<Markdown>"})])
    nb.cells = [pasted, bad, output]
    nbformat.validate(nb)
    return nb


def test_a_pasted_screenshot_shows_and_bad_attachments_are_dropped_with_a_note():
    page = render(_screenshot_notebook(), ROWS)
    images = re.findall(r"<img[^>]*>", page)
    assert any(f'src="data:image/png;base64,{TINY_PNG}"' in tag for tag in images)
    assert not any("svg" in tag or "PHNjcmlwd" in tag or "not base64" in tag for tag in images)
    assert "evil.svg is not shown: it is image/svg+xml" in page
    assert "broken.png is not shown: its data is not valid base64" in page
    assert "liar.png is not shown: its data is not a PNG image" in page
    assert "never.png is not shown: it is not attached to this cell" in page
    assert "also-never.png is not shown" in page
    assert _executable(page) == []
    assert "&lt;Markdown&gt;" in page  # an output cannot have attachments: its plain text shows instead


def test_a_renderer_failure_still_writes_a_page_with_the_scores(tmp_path, monkeypatch):
    from autograder import feedback

    class Broken:
        def from_notebook_node(self, nb):
            raise RuntimeError("boom <b>")

    monkeypatch.setattr(feedback, "_exporter", lambda: Broken())
    path = tmp_path / "fb" / "amy" / "03_multilabel.html"
    error = feedback.write_feedback(_screenshot_notebook(), ROWS, path)
    assert error == "RuntimeError: boom <b>"
    page = path.read_text()
    assert "1 / 2 points" in page and "case 1 of 4: wrong shape" in page and "wrong answer" in page
    assert "the notebook could not be shown: RuntimeError: boom &lt;b&gt;" in page
    assert list(path.parent.iterdir()) == [path]  # no temporary file left behind


def test_write_feedback_returns_none_and_lists_left_out_files(tmp_path):
    from autograder.feedback import write_feedback

    path = tmp_path / "page.html"
    assert write_feedback(_screenshot_notebook(), ROWS, path, left_out=[("<x>.csv", "a link, not a file")]) is None
    page = path.read_text()
    assert "Files in your lesson folder that were not used" in page and "&lt;x&gt;.csv" in page
    assert write_feedback(None, ROWS, path) is None and "1 / 2 points" in path.read_text()


def test_a_failure_before_the_student_view_shows_the_student_only_its_kind(tmp_path, monkeypatch):
    """The notebook holds the hidden tests until the student view leaves them out: an error
    quoting one must not reach the page."""
    from autograder import feedback

    def leak(nb, rows):
        raise ValueError("assert one_hot(x) == SECRET")

    monkeypatch.setattr(feedback, "student_view", leak)
    path = tmp_path / "page.html"
    assert "SECRET" in feedback.write_feedback(_screenshot_notebook(), ROWS, path)
    page = path.read_text()
    assert "SECRET" not in page and "the notebook could not be shown: ValueError" in page


def test_statuses_read_as_words_and_unknown_ones_are_escaped():
    from autograder.feedback import summary_html
    from autograder.status import Status

    rows = [Row("amy", "03_multilabel", "a", 0.0, 1.0, Status.KERNEL_DIED, ""),
            Row("amy", "03_multilabel", "b", 0.0, 1.0, "<b>odd</b>", "")]
    head = summary_html(rows)
    assert ">kernel died</td>" in head and Status.KERNEL_DIED.__doc__[:20] in head
    assert "&lt;b&gt;odd&lt;/b&gt;" in head and "<b>odd" not in head
