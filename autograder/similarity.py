"""Near-identical answers in a class: pairs of students, and answers close to a known source.

For each function exercise of a lesson, every student's answer cell (the cell whose nbgrader ``grade_id`` is the
exercise's id) is reduced to what the student wrote themselves, then compared with every classmate's and with
the known sources: the course's reference (``course_lib/<topic>.py::<id>``) and the library functions the spec
forbids, where Python has their source. The result informs a person's review; it never changes a score.
Students' code is only parsed, never run.

What is normalised away before comparing, so that renaming or reformatting a copy does not hide it:

* layout, comments, docstrings, string statements, ``print`` calls and type annotations (the cell is parsed
  with :mod:`ast` and unparsed, so quotes, brackets and spacing come out alike);
* identifiers the cell binds itself (arguments, assigned variables, its own functions and classes), all
  replaced by one placeholder, ``_v``; builtins, attributes, dunder methods, imported modules and the lesson's
  names (``np``, ``torch``, ``accuracy_multi``) stay, since they say what the code does. Numbering the
  placeholders by first appearance would tell more apart, but one helper or variable added at the top of a
  copy then renumbers every name after it: a copy of ``box_iou`` with a helper put first scored 0.32 that way
  and 1.0 with one placeholder (two independent answers: 0.03-0.07 that way, 0.20-0.27 with one placeholder);
* the released stub (the signature given and ``raise NotImplementedError()``): the stub's token k-grams are
  removed from every answer, as MOSS removes a base file's.

Two answers are then compared by their remaining k-grams of ``K`` tokens: the similarity is the share of the
smaller answer's k-grams that the other answer also has (1.0 when one contains the other). A cell that does not
parse is compared on its text, split into words and symbols, with comments removed. K-grams that many answers
share are common ground and set aside too (see ``COMMON_MIN``), and an answer with fewer than ``MIN_KGRAMS``
k-grams of its own is not compared: independent answers to a one-line exercise coincide.
Exercises answered with a value (``kind="answer"``, a widget's reading) are left out: the grader already
flags an answer that is right for a classmate's target.
"""
from __future__ import annotations

import ast
import builtins
import html
import importlib
import inspect
import io
import re
import textwrap
import tokenize
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from autograder import notebooks
from autograder.write import write_csv

if TYPE_CHECKING:
    from autograder.read import Submission

FIELDS = ["lesson", "exercise", "student_a", "student_b", "similarity"]
CSV_NAME = "similarity.csv"
COURSE = "course_lib"  # student_b of a pair whose other side is the course's reference

K = 5  # tokens per k-gram: long enough that a shared k-gram is a shared phrase, not a shared `) . mean (`
# An answer with fewer k-grams of its own is too short to tell copying apart: the course's own answers to the
# short exercises (get_y, params_to_update, set_parameter_requires_grad, fill_l1_loss, ...) have 7 to 25, the
# others 31 and up.
MIN_KGRAMS = 30
# A k-gram that more than max(COMMON_MIN, COMMON_SHARE * answers) answers share is the exercise's common ground
# (the natural way to write it), set aside like the stub's, as MOSS's -m option does; in a class of up to 50 it
# takes more than 10 answers.
COMMON_MIN = 10
COMMON_SHARE = 0.2
COMMON_MAX = 50  # bounds the pairs a shared k-gram adds to count (50 * 49 / 2), whatever the class's size
# Disguised copies score 1.0; independent answers to box_iou or make_fill_image 0.20-0.32; an answer that
# rewrites the reference's formula with other names and steps 0.67.
DEFAULT_THRESHOLD = 0.8
MAX_CELL_CHARS = 100_000  # a longer cell is compared on its first characters: the rest would only cost time
MAX_SHOWN = 200  # pairs shown side by side in the page; the CSV has them all
MAX_SHOWN_CHARS = 6_000  # of each side of a pair in the page

_BUILTINS = frozenset(dir(builtins))
_MAGIC = re.compile(r"^\s*[%!]")  # IPython magics and shell lines, which are not Python


# ------------------------------------------------------------------------------ normalising

class _Bound(ast.NodeVisitor):
    """The names a piece of code binds itself, and those it imports (which name modules and stay)."""

    def __init__(self) -> None:
        self.bound: set[str] = set()
        self.imported: set[str] = set()

    def visit_Name(self, node: ast.Name) -> None:
        if isinstance(node.ctx, (ast.Store, ast.Del)):
            self.bound.add(node.id)

    def visit_arg(self, node: ast.arg) -> None:
        self.bound.add(node.arg)
        self.generic_visit(node)

    def _named(self, node) -> None:
        self.bound.add(node.name)
        self.generic_visit(node)

    visit_FunctionDef = visit_AsyncFunctionDef = visit_ClassDef = _named

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> None:
        if node.name:
            self.bound.add(node.name)
        self.generic_visit(node)

    def visit_MatchAs(self, node: ast.MatchAs) -> None:
        if node.name:
            self.bound.add(node.name)
        self.generic_visit(node)

    def visit_MatchStar(self, node: ast.MatchStar) -> None:
        if node.name:
            self.bound.add(node.name)

    def visit_alias(self, node: ast.alias) -> None:
        self.imported.add(node.asname or node.name.split(".")[0])


def _is_noise(stmt: ast.stmt) -> bool:
    """A statement that changes nothing a reviewer compares: a docstring or other bare string, a ``print``."""
    if not isinstance(stmt, ast.Expr):
        return False
    v = stmt.value
    if isinstance(v, ast.Constant) and isinstance(v.value, str):
        return True
    return isinstance(v, ast.Call) and isinstance(v.func, ast.Name) and v.func.id == "print"


class _Canonical(ast.NodeTransformer):
    """Replaces the code's own names by one placeholder; drops annotations, docstrings and prints."""

    def __init__(self, own: set[str]) -> None:
        self.own = own

    def _name(self, name: str) -> str:
        return "_v" if name in self.own else name

    def generic_visit(self, node: ast.AST) -> ast.AST:
        for fname in ("body", "orelse", "finalbody"):
            stmts = getattr(node, fname, None)
            if isinstance(stmts, list) and stmts and all(isinstance(s, ast.stmt) for s in stmts):
                setattr(node, fname, [s for s in stmts if not _is_noise(s)])
        return super().generic_visit(node)

    def visit_Name(self, node: ast.Name) -> ast.AST:
        node.id = self._name(node.id)
        return node

    def visit_arg(self, node: ast.arg) -> ast.AST:
        node.arg = self._name(node.arg)
        node.annotation = None
        return node

    def _def(self, node):
        node.name = self._name(node.name)
        if hasattr(node, "returns"):
            node.returns = None
        return self.generic_visit(node)

    visit_FunctionDef = visit_AsyncFunctionDef = visit_ClassDef = _def

    def visit_AnnAssign(self, node: ast.AnnAssign) -> ast.AST:
        self.generic_visit(node)
        if node.value is None:
            return ast.Pass()
        return ast.Assign(targets=[node.target], value=node.value, lineno=node.lineno)

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> ast.AST:
        if node.name:
            node.name = self._name(node.name)
        return self.generic_visit(node)

    def visit_Global(self, node: ast.Global) -> ast.AST:
        node.names = [self._name(n) for n in node.names]
        return node

    def visit_Nonlocal(self, node: ast.Nonlocal) -> ast.AST:
        node.names = [self._name(n) for n in node.names]
        return node

    def visit_MatchAs(self, node: ast.MatchAs) -> ast.AST:
        if node.name:
            node.name = self._name(node.name)
        return self.generic_visit(node)

    def visit_MatchStar(self, node: ast.MatchStar) -> ast.AST:
        if node.name:
            node.name = self._name(node.name)
        return node


def _python_tokens(text: str) -> list[str]:
    """The tokens of (unparsed, hence well-formed) Python, with the block structure as tokens of its own."""
    out = []
    for tok in tokenize.generate_tokens(io.StringIO(text).readline):
        if tok.type in (tokenize.COMMENT, tokenize.NL, tokenize.ENCODING, tokenize.ENDMARKER):
            continue
        out.append({tokenize.NEWLINE: "\n", tokenize.INDENT: "<in>", tokenize.DEDENT: "<de>"}.get(tok.type, tok.string))
    return out


def _without_magics(text: str) -> str:
    return "\n".join("" if _MAGIC.match(line) else line for line in text.splitlines())


def parsed_tokens(text: str) -> list[str] | None:
    """``text`` parsed and normalised (see the module's docstring) as tokens; None when it is not Python."""
    try:
        tree = ast.parse(_without_magics(text))
        found = _Bound()
        found.visit(tree)
        # Dunder methods are the protocol a class must implement, not a name the student chose.
        own = {n for n in found.bound - found.imported - _BUILTINS if not (n.startswith("__") and n.endswith("__"))}
        tree = ast.fix_missing_locations(_Canonical(own).visit(tree))
        return _python_tokens(ast.unparse(tree))
    except Exception:  # SyntaxError, and the RecursionError/MemoryError of a hostile nesting
        return None


_WORD = re.compile(r"\w+|[^\w\s]")


def text_tokens(text: str) -> list[str]:
    """The words and symbols of ``text`` with ``#`` comments gone: for a cell that does not parse."""
    lines = (line.split("#", 1)[0] for line in text.splitlines() if not _MAGIC.match(line))
    return _WORD.findall("\n".join(lines))


def kgrams(tokens: list[str], k: int = K) -> set[tuple[str, ...]]:
    if len(tokens) < k:
        return {tuple(tokens)} if tokens else set()
    return {tuple(tokens[i:i + k]) for i in range(len(tokens) - k + 1)}


@dataclass
class Stub:
    """The released cell of an exercise, in both ways an answer may be tokenised."""

    parsed: set[tuple[str, ...]] = field(default_factory=set)
    text: set[tuple[str, ...]] = field(default_factory=set)

    @classmethod
    def of(cls, source: str) -> Stub:
        return cls(kgrams(parsed_tokens(source) or []), kgrams(text_tokens(source)))


def fingerprint(source: str, stub: Stub) -> frozenset[tuple[str, ...]]:
    """The k-grams of an answer that are its own: normalised, with the stub's k-grams taken out.

    An answer that parses and one that does not are tokenised differently, so they share nothing; a copy
    that no longer parses is still found against another copy of itself.
    """
    source = source[:MAX_CELL_CHARS]
    tokens = parsed_tokens(source)
    if tokens is not None:
        return frozenset(kgrams(tokens) - stub.parsed)
    return frozenset(kgrams(text_tokens(source)) - stub.text)


def similarity(a: frozenset, b: frozenset) -> float:
    """The share of the smaller fingerprint that the other has: 1.0 when one answer holds the other."""
    if not a or not b:
        return 0.0
    return len(a & b) / min(len(a), len(b))


# --------------------------------------------------------------------------- known sources

def _resolve(dotted: str):
    """The object a dotted name such as ``torch.nn.functional.l1_loss`` names, or None."""
    parts = dotted.split(".")
    for i in range(len(parts) - 1, 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except Exception:
            continue
        try:
            for p in parts[i:]:
                obj = getattr(obj, p)
        except AttributeError:
            return None
        return obj
    return None


def _source_of(obj) -> str | None:
    try:
        return textwrap.dedent(inspect.getsource(obj))
    except (TypeError, OSError):  # a C function, or a module without its source files
        return None


def known_sources(exercise: str) -> dict[str, str]:
    """The sources an answer to ``exercise`` may be copied from, by the name the report gives them:
    ``course_lib`` (the reference) and each forbidden library function with Python source."""
    return dict(_known_sources(exercise))


@lru_cache(maxsize=128)  # a class has one answer per student and exercise, but the sources are the same
def _known_sources(exercise: str) -> tuple[tuple[str, str], ...]:
    from course_lib import checks

    try:
        spec = checks.get_spec(exercise)
    except KeyError:
        return ()
    out: dict[str, str] = {}
    try:
        ref = _source_of(getattr(checks.topic_module(spec), exercise))
    except Exception:
        ref = None
    if ref:
        out[COURSE] = ref
    for dotted in spec.forbidden:
        try:
            src = _source_of(_resolve(dotted))
        except Exception:
            src = None
        if src and src not in out.values():  # torch.nn.L1Loss and a re-export of it are one source
            out[dotted] = src
    return tuple(out.items())


# ---------------------------------------------------------------------------------- analysis

@dataclass(frozen=True)
class Pair:
    lesson: str
    exercise: str
    a: str
    b: str
    score: float
    code_a: str
    code_b: str
    known: bool = False  # b is a known source (course_lib or a library function), not a classmate

    def row(self) -> dict:
        return {"lesson": self.lesson, "exercise": self.exercise, "student_a": self.a, "student_b": self.b,
                "similarity": f"{self.score:.3f}"}


def _function_exercises(source) -> list[str]:
    from course_lib import checks

    out = []
    for ex in notebooks.exercises(source):
        try:
            if checks.get_spec(ex.id).kind == "answer":
                continue
        except KeyError:
            pass  # no spec: compare it as code all the same
        out.append(ex.id)
    return out


def _cells(nb) -> dict[str, str]:
    """The first code cell of each grade id in a notebook."""
    out: dict[str, str] = {}
    for cell in nb.cells:
        gid = notebooks.grade_id(cell)
        if gid and cell.get("cell_type") == "code" and gid not in out:
            src = cell.get("source", "")
            out[gid] = src if isinstance(src, str) else "".join(src)
    return out


def compare_lesson(lesson: str, answers: dict[str, dict[str, str]], threshold: float,
                   notes: list[str], common_notes: list[str]) -> list[Pair]:
    """The pairs at or above ``threshold`` in one lesson; ``answers`` maps student -> grade id -> cell source.
    What could not be compared is added to ``notes``; answers set aside as common ground, to ``common_notes``."""
    source = notebooks.read(notebooks.source_path(lesson))
    stubs = _cells(notebooks.read(notebooks.release_path(lesson)))
    pairs: list[Pair] = []
    for ex in _function_exercises(source):
        try:
            pairs += _compare_exercise(lesson, ex, Stub.of(stubs.get(ex, "")), answers, threshold, common_notes)
        except Exception as e:
            notes.append(f"{lesson} {ex}: not compared ({type(e).__name__}: {str(e)[:200]}).")
    return pairs


def common_limit(n: int) -> int:
    """How many of ``n`` answers may share a k-gram before it counts as common ground, like the stub's."""
    return max(COMMON_MIN, min(COMMON_MAX, int(COMMON_SHARE * n)))


def _compare_exercise(lesson: str, ex: str, stub: Stub, answers: dict[str, dict[str, str]],
                      threshold: float, common_notes: list[str]) -> list[Pair]:
    raw = {student: fingerprint(cells[ex], stub) for student, cells in answers.items() if ex in cells}
    counts = Counter(g for fp in raw.values() for g in fp)
    limit = common_limit(len(raw))
    common = frozenset(g for g, n in counts.items() if n > limit)
    prints: dict[str, frozenset] = {}
    drowned = []  # long enough to compare, but mostly common ground
    for student, fp in raw.items():
        if len(fp - common) >= MIN_KGRAMS:
            prints[student] = fp - common
        elif len(fp) >= MIN_KGRAMS:
            drowned.append(student)
    # An index from k-gram to students: only pairs that share something are ever counted.
    holders: dict[tuple[str, ...], list[str]] = defaultdict(list)
    for student in sorted(prints):
        for g in prints[student]:
            holders[g].append(student)
    shared: Counter[tuple[str, str]] = Counter()
    for group in holders.values():
        for i, a in enumerate(group):
            for b in group[i + 1:]:
                shared[(a, b)] += 1
    out = []
    for (a, b), n in shared.items():
        score = n / min(len(prints[a]), len(prints[b]))
        if score >= threshold:
            out.append(Pair(lesson, ex, a, b, score, answers[a][ex], answers[b][ex]))
    texts = known_sources(ex)
    sources = {name: fingerprint(src, stub) for name, src in texts.items()}
    for name, full in sources.items():
        fp = full - common
        if len(fp) < MIN_KGRAMS:
            continue
        for student, mine in prints.items():
            score = similarity(mine, fp)
            if score >= threshold:
                out.append(Pair(lesson, ex, student, name, score, answers[student][ex], texts[name], known=True))
    if drowned:
        # Many answers alike is either the natural way to write it or one source many copied: say how many
        # of them match a known source in full, so that a reviewer can tell which.
        close = {name: sum(similarity(raw[s], full) >= threshold for s in drowned) for name, full in sources.items()}
        told = "; ".join(f"{n} match {name}" for name, n in close.items() if n)
        common_notes.append(f"{lesson} {ex}: {len(drowned)} of {len(raw)} answers were not compared, being mostly "
                            f"phrases that more than {limit} answers share" + (f" ({told})." if told else "."))
    return out


def _ordered(pairs: list[Pair]) -> list[Pair]:
    return sorted(pairs, key=lambda p: (-round(p.score, 3), p.lesson, p.exercise, p.a, p.b))


def analyse(subs: list[Submission], out: Path, lessons: list[str] | None = None,
            threshold: float = DEFAULT_THRESHOLD) -> str:
    """Write ``out/similarity.csv`` and return the class report's HTML section on near-identical answers.

    ``subs`` are the class's submissions (``autograder.grade.Submission``); ``lessons`` limits the analysis to
    those lessons (default: every lesson a submission is for). Pairs at or above ``threshold`` are reported,
    most similar first; a pair's ``student_b`` is ``course_lib`` or a library function's dotted name when the
    answer matches a known source. Never raises: what cannot be read or compared becomes a note in the section.
    """
    notes: list[str] = []
    common_notes: list[str] = []
    pairs: list[Pair] = []
    try:
        pairs = _analyse(subs, lessons, threshold, notes, common_notes)
    except Exception as e:  # the report must come out whatever this step meets
        notes.append(f"The comparison stopped early ({type(e).__name__}: {str(e)[:200]}).")
    pairs = _ordered(pairs)
    try:
        write_csv(Path(out) / CSV_NAME, FIELDS, (p.row() for p in pairs))
    except Exception as e:
        notes.append(f"{CSV_NAME} could not be written ({type(e).__name__}: {str(e)[:200]}).")
    try:
        return section(pairs, notes, threshold, common_notes)
    except Exception as e:
        return ("<section class=\"similarity\"><h2>Similar answers</h2><p>The section could not be made "
                f"({html.escape(type(e).__name__)}).</p></section>")


def _analyse(subs: list[Submission], lessons: list[str] | None, threshold: float, notes: list[str],
             common_notes: list[str]) -> list[Pair]:
    known = set(notebooks.lessons())
    wanted = list(lessons) if lessons is not None else sorted({s.lesson for s in subs})
    by_lesson: dict[str, dict[str, dict[str, str]]] = {lesson: {} for lesson in wanted}
    for sub in subs:
        if sub.lesson not in by_lesson:
            continue
        where = f"{sub.student_id}/{sub.lesson}"
        if sub.path is None or sub.problem:
            notes.append(f"{where}: not compared ({sub.problem or 'no notebook'}).")
            continue
        if sub.student_id in by_lesson[sub.lesson]:
            notes.append(f"{where}: a second submission, not compared.")
            continue
        try:
            by_lesson[sub.lesson][sub.student_id] = _cells(notebooks.read(sub.path))
        except Exception as e:  # NotebookError says why in a sentence; anything else is named
            why = str(e) if isinstance(e, notebooks.NotebookError) else f"{type(e).__name__}: {e}"
            notes.append(f"{where}: not compared, the notebook could not be read: {why[:300]}")
    pairs: list[Pair] = []
    for lesson, answers in by_lesson.items():
        if lesson not in known:
            notes.append(f"{lesson}: no lesson of that name, not compared.")
            continue
        try:
            pairs += compare_lesson(lesson, answers, threshold, notes, common_notes)
        except Exception as e:
            notes.append(f"{lesson}: not compared ({type(e).__name__}: {str(e)[:200]}).")
    return pairs


# -------------------------------------------------------------------------------------- page

_SIDE = "margin:0;padding:.5em;overflow:auto;max-height:30em;background:#f6f6f6;font-size:.85em;white-space:pre"


def _code(text: str) -> str:
    if len(text) > MAX_SHOWN_CHARS:
        text = text[:MAX_SHOWN_CHARS] + f"\n… ({len(text) - MAX_SHOWN_CHARS} more characters)"
    return f'<pre style="{_SIDE}">{html.escape(text)}</pre>'


def _who(p: Pair) -> str:
    """The caption over a pair's second answer: a classmate, or which known source."""
    if not p.known:
        return p.b
    return f"{COURSE}: the course's reference" if p.b == COURSE else f"{p.b}: a library function the exercise forbids"


def section(pairs: list[Pair], notes: list[str], threshold: float = DEFAULT_THRESHOLD,
            common_notes: Sequence[str] = ()) -> str:
    """The HTML section for the class report: every pair's two cells side by side, then the notes."""
    e = html.escape
    parts = ['<section class="similarity">', "<h2>Similar answers</h2>",
             f"<p>Pairs of answers that are near-identical once names, comments, layout and the given stub are set "
             f"aside (similarity at or above {threshold:.2f}), and answers close to the course's reference or to a "
             "library function the exercise forbids. This list informs review and never changes a score: "
             "read both answers before concluding anything. Answers of a line or two are not compared, since "
             f"independent answers to a short exercise coincide. All pairs are in <code>{CSV_NAME}</code>.</p>"]
    if not pairs:
        parts.append("<p>No similar answers were found in this class.</p>")
    for p in pairs[:MAX_SHOWN]:
        parts.append(f"<h3>{e(p.lesson)} · {e(p.exercise)}: {e(p.a)} and {e(p.b)}, similarity {p.score:.3f}</h3>")
        parts.append('<div style="display:grid;grid-template-columns:1fr 1fr;gap:1em">'
                     f"<div><p>{e(p.a)}</p>{_code(p.code_a)}</div><div><p>{e(_who(p))}</p>{_code(p.code_b)}</div></div>")
    if len(pairs) > MAX_SHOWN:
        parts.append(f"<p>{len(pairs) - MAX_SHOWN} more pairs, less similar, are only in "
                     f"<code>{CSV_NAME}</code>.</p>")
    if common_notes:
        parts.append("<h3>Common ground</h3><ul>" + "".join(f"<li>{e(n)}</li>" for n in common_notes) + "</ul>")
    if notes:
        parts.append("<h3>Not compared</h3><ul>" + "".join(f"<li>{e(n)}</li>" for n in notes) + "</ul>")
    parts.append("</section>")
    return "\n".join(parts)
