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
