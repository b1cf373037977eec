"""The feedback page a student reads: what they scored, why, and their graded notebook."""
from __future__ import annotations

import functools
import html
import json
import re

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
    are left out. Every other cell is rebuilt by :func:`safe_cell`.
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
        safe = safe_cell(cell)
        if safe is not None:
            cells.append(safe)
    out = nbformat.v4.new_notebook()
    # The lexer for highlighting comes from here; everything else in the metadata (widget
    # state above all, which a browser would render with its HTML) stays out.
    for key in ("kernelspec", "language_info"):
        if isinstance(nb.get("metadata", {}).get(key), dict):
            out.metadata[key] = nb.metadata[key]
    out.cells = cells
    return out


# What a feedback page shows of a student's outputs. The instructor opens these pages in a
# browser, so a student must not be able to put a script in them: HTML and Markdown are
# cleaned (`_clean_html`), and what cannot be cleaned (JavaScript, widget views, SVG,
# unknown types) is dropped; the plain-text version of a widget or figure still shows.
SAFE_DATA = ("text/plain", "text/html", "text/markdown", "text/latex", "image/png", "image/jpeg")
_BASE64 = re.compile(r"^[A-Za-z0-9+/=\s]*$")


def safe_cell(cell) -> nbformat.NotebookNode | None:
    """A copy of ``cell`` with only what a feedback page may show, or None for an unknown cell.

    Metadata is dropped (tags and names end up in HTML attributes); raw cells, which the
    template would paste into the page as they are, become literal text.
    """
    kind = cell.get("cell_type")
    source = cell.get("source", "")
    source = "".join(source) if isinstance(source, list) else str(source)
    if kind == "markdown":
        return nbformat.v4.new_markdown_cell(source)
    if kind == "raw":
        return nbformat.v4.new_markdown_cell("\n".join("    " + line for line in source.splitlines()))
    if kind != "code":
        return None
    count = cell.get("execution_count")
    outputs = [o for o in map(_safe_output, cell.get("outputs") or []) if o is not None]
    return nbformat.v4.new_code_cell(source, execution_count=count if isinstance(count, int) else None,
                                     outputs=outputs)


def _text(value) -> str:
    return "".join(map(str, value)) if isinstance(value, list) else str(value)


def _safe_output(out) -> nbformat.NotebookNode | None:
    kind = out.get("output_type")
    if kind == "stream":
        return nbformat.v4.new_output("stream", name="stderr" if out.get("name") == "stderr" else "stdout",
                                      text=_text(out.get("text", "")))
    if kind == "error":
        tb = out.get("traceback")
        return nbformat.v4.new_output("error", ename=str(out.get("ename", "")), evalue=str(out.get("evalue", "")),
                                      traceback=[str(t) for t in tb] if isinstance(tb, list) else [])
    if kind not in ("display_data", "execute_result"):
        return None
    data, metadata = {}, {}
    for mime, value in (out.get("data") or {}).items():
        if mime not in SAFE_DATA:
            continue
        value = _text(value)
        if mime.startswith("image/"):
            if not _BASE64.match(value):
                continue
            # width and height go into the <img> tag unquoted, so only plain numbers pass.
            dims = (out.get("metadata") or {}).get(mime)
            dims = {k: int(v) for k, v in dims.items() if k in ("width", "height") and _is_int(v)} \
                if isinstance(dims, dict) else {}
            if dims:
                metadata[mime] = dims
        data[mime] = value
    if not data:
        return None
    return nbformat.v4.new_output("display_data", data=data, metadata=metadata)


def _is_int(v) -> bool:
    try:
        return not isinstance(v, bool) and float(v) == int(float(v)) and 0 < int(float(v)) < 100_000
    except (TypeError, ValueError, OverflowError):
        return False


def render(nb: nbformat.NotebookNode | None, rows) -> str:
    """A standalone HTML page; when the notebook could not be run, the summary alone.

    The summary is the grader's own HTML (escaped where it quotes a student), so it goes into
    the page after the notebook, whose HTML is cleaned, has been converted.
    """
    head = summary_html(rows)
    if nb is None:
        return f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>Feedback</title></head><body>{head}</body></html>"
    body, _ = _exporter().from_notebook_node(student_view(nbformat.from_dict(dict(nb)), rows))
    marker = "<main>"
    at = body.find(marker)
    if at < 0:
        raise RuntimeError("the nbconvert 'lab' template has no <main>: cannot place the feedback summary")
    at += len(marker)
    return body[:at] + f"\n<div class='autograder-summary'>{head}</div>\n" + body[at:]


# Tags and attributes a lesson's Markdown and a student's HTML output may keep. nbconvert's own
# clean_html list lacks headings, paragraphs and table headers, so lesson text would show as
# escaped tags. No tag here can run code, and no attribute here is an event handler.
_SAFE_TAGS = frozenset({
    "a", "abbr", "b", "blockquote", "br", "code", "dd", "del", "details", "div", "dl", "dt", "em",
    "h1", "h2", "h3", "h4", "h5", "h6", "hr", "i", "img", "kbd", "li", "ol", "p", "pre", "s", "span",
    "strong", "sub", "summary", "sup", "table", "tbody", "td", "tfoot", "th", "thead", "tr", "ul"})


def _safe_attribute(tag: str, name: str, value: str) -> bool:
    if name in ("class", "id", "title", "align", "colspan", "rowspan"):
        return True
    if tag == "a" and name == "href":
        return value.startswith(("http://", "https://", "mailto:", "#"))
    if tag == "img" and name in ("src", "alt", "width", "height"):
        return name != "src" or value.startswith(("data:image/png;", "data:image/jpeg;", "data:image/gif;"))
    return False


def _clean_html(element) -> str:
    import bleach

    element = element.decode() if isinstance(element, bytes) else str(element)
    return bleach.clean(element, tags=_SAFE_TAGS, attributes=_safe_attribute,
                        protocols={"http", "https", "mailto", "data"}, strip_comments=True)


@functools.lru_cache(maxsize=1)
def _exporter():
    """One HTML exporter per grading worker, whose slow filters remember what they did.

    A class's notebooks share most of their cells (the lesson's text and code), and
    sanitising and highlighting them is most of the time a page takes; remembering them
    makes each page after the first cost about half as much.
    """
    from nbconvert import HTMLExporter
    from nbconvert.filters.highlight import Highlight2HTML
    # sanitize_html: the template passes Markdown and HTML outputs through clean_html and leaves
    # JavaScript outputs out.
    exporter = HTMLExporter(template_name="lab", sanitize_html=True)
    highlight = Highlight2HTML(pygments_lexer="ipython3", parent=exporter)

    @functools.lru_cache(maxsize=8192)
    def _highlight(source, language, metadata_json):
        return highlight(source, language=language, metadata=json.loads(metadata_json))

    def highlight_code(source, language=None, metadata=None):
        return _highlight(source, language, json.dumps(metadata or {}, sort_keys=True, default=str))

    exporter.register_filter("clean_html", functools.lru_cache(maxsize=8192)(_clean_html))
    exporter.filters["highlight_code"] = highlight_code  # from_notebook_node takes it from here
    return exporter
