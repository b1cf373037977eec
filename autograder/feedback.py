"""The feedback page a student reads: what they scored, why, and their graded notebook."""
from __future__ import annotations

import functools
import html
import json

import nbformat

STATUS_TEXT = {
    "passed": "passed",
    "failed": "wrong answer",
    "error": "error",
    "timeout": "timed out",
    "kernel_died": "kernel died",
    "not_run": "not run",
    "out_of_memory": "out of memory",
    "tampered": "tampered with grading",
    "flagged": "flagged for review",
    "missing": "missing",
}


def summary_html(rows) -> str:
    total = sum(r.score for r in rows)
    possible = sum(r.max_score for r in rows)
    lines = [f"<h2>{html.escape(rows[0].lesson)}: {total:g} / {possible:g} points</h2>" if rows else "<h2>No exercises</h2>",
             "<table><tr><th>exercise</th><th>score</th><th>status</th><th>what to look at</th></tr>"]
    for r in rows:
        msg = html.escape(r.message).replace("\n", "<br>")
        lines.append(f"<tr><td><code>{html.escape(r.exercise)}</code></td><td>{r.score:g} / {r.max_score:g}</td>"
                     f"<td>{STATUS_TEXT.get(r.status, r.status)}</td><td>{msg}</td></tr>")
    lines.append("</table>")
    return "\n".join(lines)


def student_view(nb: nbformat.NotebookNode, rows) -> nbformat.NotebookNode:
    """The graded notebook as the student may see it: never the hidden tests.

    Test cells keep their place but their source and outputs (tracebacks quote the test
    code) are replaced by the exercise's result and diagnosis; cells the grader injected
    are left out.
    """
    from autograder.notebooks import TEST_SUFFIX, grade_id, is_test

    by_ex = {r.exercise: r for r in rows}
    cells = []
    for cell in nb.cells:
        if cell.get("metadata", {}).get("autograder", {}).get("injected"):
            continue
        if is_test(cell):
            gid = grade_id(cell) or ""
            ex = gid[: -len(TEST_SUFFIX)] if gid.endswith(TEST_SUFFIX) else gid
            r = by_ex.get(ex)
            result = (f"{STATUS_TEXT.get(r.status, r.status)}, {r.score:g} / {r.max_score:g} points"
                      + (f": {r.message}" if r.message else "")) if r else "no result"
            cell = nbformat.v4.new_code_cell(
                f"# Tests for {ex} (hidden tests are run by the grader and not shown)",
                outputs=[nbformat.v4.new_output("stream", name="stdout", text=result + "\n")])
        cells.append(cell)
    out = nbformat.from_dict(dict(nb))
    out.cells = cells
    return out


def render(nb: nbformat.NotebookNode | None, rows) -> str:
    """A standalone HTML page; when the notebook could not be run, the summary alone."""
    head = summary_html(rows)
    if nb is None:
        return f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>Feedback</title></head><body>{head}</body></html>"
    nb = student_view(nbformat.from_dict(dict(nb)), rows)
    nb.cells.insert(0, nbformat.v4.new_markdown_cell(head))
    body, _ = _exporter().from_notebook_node(nb)
    return body


@functools.lru_cache(maxsize=1)
def _exporter():
    """One HTML exporter per grading worker, whose slow filters remember what they did.

    A class's notebooks share most of their cells (the lesson's text and code), and
    sanitising and highlighting them is most of the time a page takes; remembering them
    makes each page after the first cost about half as much.
    """
    from nbconvert import HTMLExporter
    from nbconvert.filters.highlight import Highlight2HTML
    from nbconvert.filters.strings import clean_html

    exporter = HTMLExporter(template_name="lab")
    highlight = Highlight2HTML(pygments_lexer="ipython3", parent=exporter)

    @functools.lru_cache(maxsize=8192)
    def _highlight(source, language, metadata_json):
        return highlight(source, language=language, metadata=json.loads(metadata_json))

    def highlight_code(source, language=None, metadata=None):
        return _highlight(source, language, json.dumps(metadata or {}, sort_keys=True, default=str))

    exporter.register_filter("clean_html", functools.lru_cache(maxsize=8192)(clean_html))
    exporter.filters["highlight_code"] = highlight_code  # from_notebook_node takes it from here
    return exporter
