"""The feedback page a student reads: what they scored, why, and their graded notebook.

A page is written after the grade is decided and never changes it: :func:`write_feedback`
writes a page whatever the notebook holds, falling back to the scores alone.
"""
from __future__ import annotations

import base64
import binascii
import functools
import html
import json
import re
from pathlib import Path
from urllib.parse import unquote

import nbformat

from autograder.status import Status
from autograder.write import write_atomic

STATUS_TEXT = {
    Status.PASSED: "passed",
    Status.FAILED: "wrong answer",
    Status.ERROR: "error",
    Status.TIMEOUT: "timed out",
    Status.KERNEL_DIED: "kernel died",
    Status.NOT_RUN: "not run",
    Status.OUT_OF_MEMORY: "out of memory",
    Status.FLAGGED: "flagged for review",
    Status.MISSING: "missing",
    Status.TO_GRADE: "to grade (by your instructor)",
}


def status_text(status) -> str:
    """The words a student reads for a status; an unknown one (an old journal's) as it is."""
    return STATUS_TEXT.get(status, str(status))


def _status_cell(status) -> str:
    known = status in Status.__members__.values()
    title = f" title='{html.escape(Status(status).__doc__ or '', quote=True)}'" if known else ""
    return f"<td{title}>{html.escape(status_text(status))}</td>"


def summary_html(rows, left_out=(), restored=()) -> str:
    """The score table: every exercise with its points, status and what to look at; then what the grader put
    back in the notebook (one sentence each, see :mod:`autograder.restore`) and the files of the student's
    folder that were not used (``(name, why)`` pairs), if any."""
    total = sum(r.score for r in rows)
    possible = sum(r.max_score for r in rows)
    lines = [f"<h2>{html.escape(rows[0].lesson)}: {total:g} / {possible:g} points</h2>" if rows
             else "<h2>No exercises</h2>",
             "<table><tr><th>exercise</th><th>score</th><th>status</th><th>what to look at</th></tr>"]
    for r in rows:
        msg = html.escape(r.message).replace("\n", "<br>")
        lines.append(f"<tr><td><code>{html.escape(r.exercise)}</code></td><td>{r.score:g} / {r.max_score:g}</td>"
                     f"{_status_cell(r.status)}<td>{msg}</td></tr>")
    lines.append("</table>")
    if restored:
        lines.append("<p>Cells the grader put back before grading (your notebook was graded as if they were "
                     "untouched):</p><ul>")
        lines += [f"<li>{html.escape(str(change))}</li>" for change in restored]
        lines.append("</ul>")
    if left_out:
        lines.append("<p>Files in your lesson folder that were not used:</p><ul>")
        lines += [f"<li><code>{html.escape(str(name))}</code>: {html.escape(str(why))}</li>" for name, why in left_out]
        lines.append("</ul>")
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
            result = (f"{status_text(r.status)}, {r.score:g} / {r.max_score:g} points"
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
    template would paste into the page as they are, become literal text. A Markdown cell keeps
    the images pasted into it (see :func:`_markdown_cell`).
    """
    kind = cell.get("cell_type")
    source = cell.get("source", "")
    source = "".join(source) if isinstance(source, list) else str(source)
    if kind == "markdown":
        return _markdown_cell(source, cell.get("attachments"))
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
        if mime == "text/markdown" and _refers_to_attachments(value):
            continue  # an output has no attachments: nbconvert would fail the whole page on the reference
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


# ----------------------------------------------------------------- pasted images (attachments)

# Images a page shows inline, with the bytes each format starts with. No SVG: it can hold scripts.
IMAGE_TYPES = {"image/png": (b"\x89PNG\r\n\x1a\n",), "image/jpeg": (b"\xff\xd8\xff",),
               "image/gif": (b"GIF87a", b"GIF89a")}
_ATTACHMENT = "attachment:"
# What a reference to an image that is not shown points to: no data, so the browser shows the alt text.
_NO_IMAGE = {"image/png": ""}


def _attachments(raw) -> tuple[dict, list[str]]:
    """The attachments of a Markdown cell that a page may show, as ``{name: {mime: base64}}``,
    and a note for each one left out: not an image type above, not base64, or not the image
    its type says."""
    if raw is None:
        return {}, []
    if not isinstance(raw, dict):
        return {}, ["the images attached to this cell could not be read"]
    kept, notes = {}, []
    for name, bundle in raw.items():
        why = None
        mime = next((m for m in bundle if m in IMAGE_TYPES), None) if isinstance(bundle, dict) else None
        if not isinstance(bundle, dict) or not bundle:
            why = "it holds no image"
        elif mime is None:
            why = f"it is {next(iter(bundle))}, and a feedback page shows only PNG, JPEG or GIF images"
        else:
            value = "".join(_text(bundle[mime]).split())
            try:
                data = base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError):
                why = "its data is not valid base64"
            else:
                if not data.startswith(IMAGE_TYPES[mime]):
                    why = f"its data is not a {mime.split('/')[1].upper()} image"
                else:
                    kept[str(name)] = {mime: value}
        if why:
            notes.append(f"{name} is not shown: {why}")
    return kept, notes


def _image_urls(markdown: str) -> list[str]:
    """The address of every image in ``markdown``, parsed as nbconvert parses it (inline,
    reference-style, escaped or not), so that no ``attachment:`` reference is missed."""
    if "![" not in markdown:  # every image syntax has it; most cells have no image
        return []
    from nbconvert.filters import markdown_mistune as md

    urls: list[str] = []

    class Recorder(md.IPythonRenderer):
        def image(self, text, url, title=None):
            urls.append(url if getattr(md, "MISTUNE_V3", True) else text)  # mistune 2 swaps the two
            return ""

    md.MarkdownWithMath(renderer=Recorder(escape=False)).render(markdown)
    return urls


def _refers_to_attachments(markdown: str) -> bool:
    """Whether ``markdown`` shows an ``attachment:`` image (or cannot even be parsed: then it is
    not shown either, rather than fail the page)."""
    try:
        return any(u.startswith(_ATTACHMENT) for u in _image_urls(markdown))
    except Exception:
        return True


def _md_text(text: str) -> str:
    """``text`` as literal Markdown: every punctuation mark that could start markup escaped."""
    return re.sub(r"([\\`*_{}\[\]()#+\-.!<>|~&$])", r"\\\1", text)


def _markdown_cell(source: str, attachments) -> nbformat.NotebookNode:
    """A Markdown cell with its pasted images (``![image.png](attachment:image.png)``) kept.

    Images that pass :func:`_attachments` stay attached and show inline (nbconvert makes them
    ``data:`` URLs); the others, and references to images the cell does not have (which would
    make nbconvert fail the whole page), point to no data and get a note under the cell.
    """
    try:
        kept, notes = _attachments(attachments)
        for url in _image_urls(source):
            if not url.startswith(_ATTACHMENT) or url[len(_ATTACHMENT):] in kept:
                continue
            name = url[len(_ATTACHMENT):]
            if unquote(name) in kept:  # written percent-encoded ("my%20plot.png")
                kept[name] = kept[unquote(name)]
                continue
            kept[name] = _NO_IMAGE
            if not any(n.startswith(f"{name} is not shown") or n.startswith(f"{unquote(name)} is not shown")
                       for n in notes):
                notes.append(f"{name} is not shown: it is not attached to this cell")
    except Exception as e:  # a page with the images left out, rather than no page
        kept, notes = {}, [f"the images in this cell could not be shown ({type(e).__name__})"]
        source = "\n".join("    " + line for line in source.splitlines())
    if notes:
        source += "\n\n" + "  \n".join(f"*\\[autograder\\] {_md_text(n)}*" for n in notes)
    cell = nbformat.v4.new_markdown_cell(source)
    if kept:
        cell.attachments = kept
    return cell


# ---------------------------------------------------------------------------------- pages

_PAGE = "<!DOCTYPE html><html><head><meta charset='utf-8'><title>Feedback</title></head><body>{}</body></html>"


def _page(view: nbformat.NotebookNode | None, head: str) -> str:
    if view is None:
        return _PAGE.format(head)
    body, _ = _exporter().from_notebook_node(view)
    marker = "<main>"
    at = body.find(marker)
    if at < 0:
        raise RuntimeError("the nbconvert 'lab' template has no <main>: cannot place the feedback summary")
    at += len(marker)
    return body[:at] + f"\n<div class='autograder-summary'>{head}</div>\n" + body[at:]


def render(nb: nbformat.NotebookNode | None, rows, left_out=(), restored=()) -> str:
    """A standalone HTML page; when the notebook could not be run, the summary alone.

    The summary is the grader's own HTML (escaped where it quotes a student), so it goes into
    the page after the notebook, whose HTML is cleaned, has been converted.
    """
    view = student_view(nbformat.from_dict(dict(nb)), rows) if nb is not None else None
    return _page(view, summary_html(rows, left_out, restored))


def write_feedback(nb: nbformat.NotebookNode | None, rows, path: Path, left_out=(), restored=()) -> str | None:
    """Write the feedback page of one submission to ``path``; None, or what went wrong.

    The grade is decided before this and a page must never change it, so any failure while
    rendering the notebook gives a page with the score table alone and a line that says the
    notebook could not be shown; the error text is returned for the instructor rather than
    raised. ``left_out`` lists the student's files that were not used (see
    :func:`autograder.read.student_files`), ``restored`` what the grader put back (see
    :mod:`autograder.restore`). A failure to write the file itself still raises.
    """
    view = None
    try:
        view = student_view(nbformat.from_dict(dict(nb)), rows) if nb is not None else None
        page = _page(view, summary_html(rows, left_out, restored))
        error = None
    except Exception as e:
        error = f"{type(e).__name__}: {_one_line(str(e))}"
        # Before the student view exists the error may quote any cell, hidden tests included:
        # the student then reads only its kind.
        shown = error if view is not None else type(e).__name__
        page = _minimal_page(rows, left_out, shown, restored)
    write_atomic(path, page)
    return error


def _one_line(text: str, width: int = 300) -> str:
    line = " ".join(text.split())
    return line if len(line) <= width else line[: width - 1] + "…"


def _minimal_page(rows, left_out, error: str, restored=()) -> str:
    try:
        head = summary_html(rows, left_out, restored)
    except Exception:  # rows the table cannot show: each as plain text, escaped
        head = "<ul>" + "".join(f"<li>{html.escape(repr(r))}</li>" for r in rows) + "</ul>"
    return _PAGE.format(f"{head}\n<p>the notebook could not be shown: {html.escape(error)}</p>")


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
