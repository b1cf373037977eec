"""Check specs: one exercise id, one spec, shared by the self-check and the hidden tests.

A :class:`Spec` knows how to make random cases for an exercise, how to judge a student's
answer against the reference implementation, and which wrong answers students are known
to give, each with a message that names the mistake. The notebook's visible self-check
calls ``check(id, fn)``; the hidden test calls ``check(id, fn, hidden=True)``, which runs
more cases (on the GPU when the kernel has one). Because both go through the same spec,
what a student sees while working is exactly what the grader will hold them to.
"""
from __future__ import annotations

import atexit
import contextlib
import contextvars
import copy
import importlib
import inspect
import os
import shutil
import tempfile
import traceback
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence, cast

import numpy as np
import torch


def spec_modules() -> list[str]:
    """Every ``course_lib/<topic>_checks.py``; each defines ``SPECS: list[Spec]``.

    Found by name, so adding a lesson never means editing a shared list.
    """
    import pkgutil

    import course_lib

    return sorted(f"course_lib.{m.name}" for m in pkgutil.iter_modules(course_lib.__path__)
                  if m.name.endswith("_checks"))


def topic_module(spec: "Spec"):
    """The module holding the reference implementations for ``spec``: ``<topic>_checks`` -> ``<topic>``."""
    return importlib.import_module(spec.module.removesuffix("_checks"))


class CheckFailed(AssertionError):
    """A student's answer disagrees with the reference; the message says how and why."""


@dataclass(frozen=True)
class Case:
    """One call of the exercise: positional and keyword arguments plus a readable label."""

    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    label: str = ""
    # What the judge needs and the student's process must never see (a capstone's held-out labels): the
    # grader strips it before the case leaves its process (see autograder.judge).
    secret: Any = None


@dataclass(frozen=True)
class Mistake:
    """A known wrong answer: an implementation of it, and what to tell a student who made it."""

    name: str
    impl: Callable[..., Any]
    message: str


Judge = Callable[[Case, Any, Any], "str | None"]

# The kinds of promise an exercise's instructions make, each held by hidden cases (tests/contracts.py breaks the
# reference in each way and the check must notice):
#   shape          argument ``arg`` may come in each of the forms ``values`` (their ndim), e.g. pred [B] or [B, 1]
#   optional       the optional argument ``arg`` is honoured (the cases pass it with other values than its default)
#   unchanged      the input ``arg`` is left as it was (no in-place edit)
#   mode           a model passed in is handed back in the mode it came in (train/eval)
#   differentiable the result stays on the autograd graph of the inputs
#   range          every value of the result lies in ``values`` = (low, high)
#   exact          the values are exact: a result off by a small constant fails
#   zero_grad      a training loop zeroes the gradients before each backward pass
#   behaviour      a sentence about what the result does, judged by behaviour (no generic breaker)
CLAUSE_KINDS = ("shape", "optional", "unchanged", "mode", "differentiable", "range", "exact", "zero_grad",
                "behaviour")


@dataclass(frozen=True)
class Clause:
    """One promise of an exercise, in the words its instructions use (``text`` appears there verbatim)."""

    kind: str
    text: str
    arg: str | None = None
    values: tuple = ()

    def __post_init__(self) -> None:
        if self.kind not in CLAUSE_KINDS:
            raise ValueError(f"unknown clause kind {self.kind!r}: use one of {', '.join(CLAUSE_KINDS)}")

    @property
    def name(self) -> str:
        """How the class report counts it: ``contract:<kind>`` (with the argument when there is one)."""
        return f"contract:{self.kind}" + (f":{self.arg}" if self.arg else "")


@dataclass(frozen=True)
class Bands:
    """Partial credit for a capstone, from a metric measured on held-out data.

    ``edges[profile]`` are the metric's thresholds, best first: reaching ``edges[p][k]`` (at most it when
    ``higher_is_better`` is False) earns ``fractions[k]`` of the points; below the last edge, nothing.
    """

    metric: str
    higher_is_better: bool
    edges: dict[str, tuple[float, ...]]
    fractions: tuple[float, ...]

    def __post_init__(self) -> None:
        for profile, edges in self.edges.items():
            if len(edges) != len(self.fractions):
                raise ValueError(f"{profile}: {len(edges)} edges for {len(self.fractions)} fractions")

    def fraction(self, value: float, profile: str) -> tuple[float, int]:
        """The share of the points ``value`` earns in ``profile`` and its band (0: the top; len: the lowest)."""
        edges = self.edges.get(profile) or self.edges["cpu"]
        for k, (edge, frac) in enumerate(zip(edges, self.fractions)):
            if value == value and (value >= edge if self.higher_is_better else value <= edge):  # NaN: no band
                return frac, k
        return 0.0, len(edges)

    def describe(self, profile: str) -> str:
        edges = self.edges.get(profile) or self.edges["cpu"]
        sign = "≥" if self.higher_is_better else "≤"
        return ", ".join(f"{sign} {e:g}: {f:.0%}" for e, f in zip(edges, self.fractions)) + ", else 0"


@dataclass
class Spec:
    """Everything needed to check exercise ``id``.

    cases:    ``cases(rng, device, n)`` returns ``n`` :class:`Case` objects.
    judge:    ``judge(case, got, expected)`` returns None when ``got`` is right, else a sentence
              saying what is wrong. ``expected`` is the reference's answer on the same case.
    mistakes: known wrong answers; when a student's answer matches one, its message is shown.
    kind:     ``"function"`` (call the student's function on each case) or ``"answer"``
              (the student's object is a value, e.g. a widget answer; cases are ignored).
    observe:  ``observe(fn, case)`` replaces the plain call ``fn(*case.args, **case.kwargs)``
              when what matters is not the return value: for an exercise that changes a model
              in place, or a class, it builds fresh inputs, calls ``fn`` and returns what the
              judge should look at. The student's code, the reference and every known mistake
              go through it alike, each on its own fresh inputs.
    forbidden: library functions that would do the whole exercise (see the autograder).
    """

    id: str
    reference: Callable[..., Any] | None
    cases: Callable[[np.random.Generator, torch.device, int], list[Case]] | None = None
    judge: Judge | None = None
    mistakes: Sequence[Mistake] = ()
    n_visible: int = 5
    n_hidden: int = 30
    kind: str = "function"
    hint: str = ""
    module: str = ""  # the *_checks module that defines it; set by the registry
    observe: Callable[[Callable[..., Any], Case], Any] | None = None
    # Dotted names of library functions that do this exercise's whole job (fastai's or
    # torch's): a student function that calls one is flagged by the autograder, not graded.
    forbidden: tuple[str, ...] = ()
    # The promises the instructions make, as data (see Clause): tests compare them with the notebook's text and
    # break the reference in each way, and the judging process probes the generic ones on every case.
    contract: tuple[Clause, ...] = ()
    # A capstone: the one case trains and predicts on held-out data (its labels in ``Case.secret``); ``measure``
    # turns the answer into the metric and ``bands`` into partial credit; ``seconds[profile]`` bounds the case
    # (CPU seconds) instead of a multiple of the reference's time, and ``diagnose(case, got)`` names a known
    # mistake from what was observed, where running every mistake's own training would cost minutes.
    bands: Bands | None = None
    measure: Callable[[Case, Any], float] | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    diagnose: Callable[[Case, Any], "Mistake | None"] | None = None
    # An answer exercise whose right answer depends on the student (see course_lib.common.student_id):
    # ``target(student)`` is what the judge gets as ``expected``, so two students' answers differ.
    target: Callable[[str], Any] | None = None
    # A right answer for a student, as their answer cell's literal holds it (the solution's is "offline"'s): the
    # tests hand a solution in under other names with it, as an honest student who used the widget would.
    answer_for: Callable[[str], Any] | None = None

    @property
    def is_capstone(self) -> bool:
        """A lesson's capstone: graded in bands of a metric on held-out data rather than right or wrong."""
        return self.bands is not None

    def clauses(self, kind: str) -> list[Clause]:
        return [c for c in self.contract if c.kind == kind]

    def mistake(self, name: str) -> Mistake | None:
        """The known mistake called ``name``, or None when the spec lists none by that name."""
        return next((m for m in self.mistakes if m.name == name), None)

    def run(self, fn: Callable[..., Any], case: Case) -> Any:
        """What ``fn`` does on ``case``: its return value, or what ``observe`` reports."""
        if self.observe is not None:
            return self.observe(fn, case)
        return _call(fn, case)

    def expected(self, case: Case) -> Any:
        if self.reference is None:
            raise TypeError(f"{self.id} has no reference: there is no expected answer to compute")
        return self.run(self.reference, case)


@dataclass
class CheckResult:
    id: str
    passed: bool
    n_cases: int
    message: str
    mistake: str = ""  # the name of the known mistake the answer matches, for the class report
    fraction: float = -1.0  # the share of the points (a capstone's band); -1: all when passed, else none

    @property
    def share(self) -> float:
        return self.fraction if self.fraction >= 0 else float(self.passed)

    def __bool__(self) -> bool:
        return self.passed



# ---------------------------------------------------------------------------- registry

_registry: dict[str, Spec] | None = None


def registry() -> dict[str, Spec]:
    """Every spec of every topic, by exercise id. Ids are unique across the course."""
    global _registry
    if _registry is None:
        found: dict[str, Spec] = {}
        for mod_name in spec_modules():
            for spec in importlib.import_module(mod_name).SPECS:
                if spec.id in found:
                    raise RuntimeError(f"exercise id {spec.id!r} is defined twice")
                spec.module = mod_name
                found[spec.id] = spec
        _registry = found
    return _registry


def capstone_of(exercise_ids: Iterable[str]) -> str | None:
    """The capstone among a lesson's ``exercise_ids`` (its exercises in notebook order), or None."""
    return next((e for e in exercise_ids if e in registry() and registry()[e].is_capstone), None)


def get_spec(exercise_id: str) -> Spec:
    try:
        return registry()[exercise_id]
    except KeyError:
        raise KeyError(f"No check spec for exercise {exercise_id!r}. Known: {', '.join(sorted(registry()))}") from None


# ---------------------------------------------------------------------------- comparing

def describe(x: Any) -> str:
    """A short description of a value for messages: type, shape, dtype, a few numbers."""
    if isinstance(x, torch.Tensor):
        shape = list(x.shape)
        body = f"tensor shape {shape} dtype {str(x.dtype).replace('torch.', '')} on {x.device.type}"
        if x.numel() <= 6:
            body += f" = {x.detach().cpu().tolist()}"
        return body
    if isinstance(x, np.ndarray):
        body = f"array shape {list(x.shape)} dtype {x.dtype}"
        if x.size <= 6:
            body += f" = {x.tolist()}"
        return body
    text = repr(x)
    return f"{type(x).__name__} {text if len(text) < 80 else text[:77] + '...'}"


def output_shape(model: torch.nn.Module, x: torch.Tensor) -> list[int] | str:
    """The shape of ``model(x)`` in eval mode without gradients, or the error it raised in one line.

    Plain data either way, so an observer can send it to the grader; a model of the wrong
    width fails here, and the error is then what the judge reports.
    """
    try:
        with torch.no_grad():
            model.eval()
            return list(model(x).shape)
    except Exception as e:
        first = str(e).splitlines()[0][:120] if str(e) else ""
        return f"{type(e).__name__}: {first}"


def compare(got: Any, expected: Any, rtol: float = 1e-4, atol: float = 1e-5, exact_type: bool = True) -> str | None:
    """None when ``got`` matches ``expected``, else what differs (type, shape, dtype, device, values)."""
    for cls, kind in ((torch.Tensor, "torch tensor"), (np.ndarray, "numpy array")):
        if not isinstance(expected, cls):
            continue
        if not isinstance(got, cls):
            return f"expected a {kind}, got {describe(got)}"
        if got.shape != expected.shape:
            return f"expected shape {list(expected.shape)}, got shape {list(got.shape)}"
        if got.dtype != expected.dtype and exact_type:
            return f"expected dtype {expected.dtype}, got {got.dtype}"
        if isinstance(expected, torch.Tensor):
            g = cast(torch.Tensor, got)  # the same class as expected, checked above
            if g.device.type != expected.device.type:
                return (f"your result is on {g.device.type} but the inputs were on {expected.device.type}: "
                        "keep it on the inputs' device")
            got, expected = g.detach().cpu(), expected.detach().cpu()
        return _values_differ(got, expected, rtol, atol)
    if isinstance(expected, (tuple, list)):
        if not isinstance(got, (tuple, list)) or len(got) != len(expected):
            return f"expected a {type(expected).__name__} of {len(expected)} items, got {describe(got)}"
        for i, (g, e) in enumerate(zip(got, expected)):
            why = compare(g, e, rtol, atol, exact_type)
            if why:
                return f"item {i}: {why}"
        return None
    if isinstance(expected, float):
        if isinstance(got, torch.Tensor) and got.numel() == 1:
            return "expected a Python float, got a one-element tensor: call .item() on it"
        if not isinstance(got, (float, int)) or isinstance(got, bool):
            return f"expected a float, got {describe(got)}"
        if not np.isclose(got, expected, rtol=rtol, atol=atol):
            return f"expected {expected:.6g}, got {got:.6g}"
        return None
    if got != expected:
        return f"expected {describe(expected)}, got {describe(got)}"
    return None


def _values_differ(g: Any, e: Any, rtol: float, atol: float) -> str | None:
    """What differs between two tensors (or two arrays) of the same shape: their values, to a tolerance if float."""
    on_torch = isinstance(e, torch.Tensor)
    if e.dtype.is_floating_point if on_torch else np.issubdtype(e.dtype, np.floating):
        g = g.to(e.dtype) if on_torch else g
        if not (torch.allclose if on_torch else np.allclose)(g, e, rtol=rtol, atol=atol, equal_nan=True):
            return f"values differ (largest difference {float(abs(g - e).max()):.3g})"
    elif not (torch.equal(g, e) if on_torch else np.array_equal(g, e)):
        return f"values differ in {int((g != e).sum())} of {int(np.prod(e.shape))} elements"
    return None


def _clone(x: Any) -> Any:
    """A deep copy of case arguments, so a student's in-place edit cannot poison later cases."""
    if isinstance(x, torch.Tensor):
        c = x.detach().clone()
        # A leaf that asks for gradients keeps asking: it is how a case tests that a result is differentiable.
        return c.requires_grad_() if x.requires_grad and c.is_floating_point() else c
    if isinstance(x, torch.nn.Module):
        return x  # models are shared on purpose: judges look at what the function did to them
    if isinstance(x, (tuple, list)):
        return type(x)(_clone(v) for v in x)
    if isinstance(x, dict):
        return {k: _clone(v) for k, v in x.items()}
    return copy.deepcopy(x)


def _global_names(code: types.CodeType) -> set[str]:
    """Global names a function uses, including inside its comprehensions and inner functions."""
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _global_names(const)
    return names


@contextlib.contextmanager
def isolated(fn: Callable, ids: Iterable[str], own: str = "") -> Iterator[Callable]:
    """Within it, every other exercise ``fn`` can reach is that exercise's reference.

    So each exercise is graded on its own: a wrong ``make_fill_image`` costs its own points once, not
    again in every exercise that calls it, whether directly, through a helper of the student's (the
    names of ``fn``'s module, which its helpers share) or through a default argument bound at ``def``
    time. Everything is put back on the way out: in a kernel, the namespace is the student's.
    """
    glb = getattr(fn, "__globals__", None)
    if not isinstance(fn, types.FunctionType) or not isinstance(glb, dict):
        yield fn
        return
    specs = registry()
    swapped: dict[str, Any] = {}
    by_object: dict[int, Any] = {}
    for name in set(ids) - {own}:
        ref = specs[name].reference if name in specs else None
        # A reference hidden from the judging process (the exercise being judged) is never substituted.
        if ref is None or getattr(ref, "__course_stub__", False) or name not in glb or glb[name] is ref:
            continue
        swapped[name] = glb[name]
        by_object[id(glb[name])] = ref
    defaults: list[tuple[types.FunctionType, Any, Any]] = []
    if by_object:
        for value in list(glb.values()):
            if not isinstance(value, types.FunctionType) or value.__globals__ is not glb:
                continue
            d, kw = value.__defaults__, value.__kwdefaults__
            new_d = tuple(by_object.get(id(v), v) for v in d) if d else d
            new_kw = {k: by_object.get(id(v), v) for k, v in kw.items()} if kw else kw
            if new_d != d or new_kw != kw:
                defaults.append((value, d, kw))
                value.__defaults__, value.__kwdefaults__ = new_d, new_kw
    try:
        for name in swapped:
            glb[name] = specs[name].reference
        yield fn
    finally:
        for value, d, kw in defaults:
            value.__defaults__, value.__kwdefaults__ = d, kw
        for name, student in swapped.items():
            glb[name] = student


# ---------------------------------------------------------------------------- checking

def _device() -> torch.device:
    """Where checks run: the notebook's device (the GPU when the kernel has one; see course_lib.setup())."""
    from course_lib.config import current

    return cast(torch.device, current().device)  # Config types it loosely, to import cheaply


def _call(fn: Callable, case: Case) -> Any:
    return fn(*_clone(case.args), **_clone(case.kwargs))


def _diagnose(spec: Spec, case: Case, got: Any, judge: Judge) -> Mistake | None:
    """The first known mistake whose answer on ``case`` equals the student's."""
    for mistake in spec.mistakes:
        try:
            wrong = spec.run(mistake.impl, case)
        except Exception:
            continue
        try:
            if judge(case, got, wrong) is None:
                return mistake
        except Exception:
            continue
    return None


def _not_implemented(exc: BaseException) -> bool:
    return isinstance(exc, NotImplementedError)


# The verdicts' words, shared by run_check (in the kernel) and judge_observations (in the
# grader), so that a student reads the same message wherever their answer was judged.

def _judge_of(spec: Spec) -> Judge:
    return spec.judge or (lambda case, got, expected: compare(got, expected))


def _answer_result(spec: Spec, judge: Judge, answer: Any, student: str | None = None) -> CheckResult:
    try:
        if spec.target is not None:
            from course_lib.common import student_id

            who = student if student is not None else student_id()
            why = judge(Case(kwargs={"student": who}), answer, spec.target(who))
        else:
            why = judge(Case(), answer, None)
    except Exception as e:  # a malformed answer is the student's mistake, not ours
        why = f"could not read your answer ({type(e).__name__}: {e})"
    if why is None:
        return CheckResult(spec.id, True, 1, f"✓ {spec.id}: your answer is right.")
    return CheckResult(spec.id, False, 1, f"✗ {spec.id}: {why}" + (f"\n  Hint: {spec.hint}" if spec.hint else ""))


def _where(i: int, cases: Sequence[Case], case: Case) -> str:
    return f"case {i} of {len(cases)}" + (f" ({case.label})" if case.label else "")


def not_implemented(spec: Spec, i: int = 1) -> CheckResult:
    """The verdict on a function that still raises ``NotImplementedError`` (the release's stub) at case ``i``."""
    return CheckResult(spec.id, False, i - 1,
                       f"✗ {spec.id}: not implemented yet: replace `raise NotImplementedError()` with your code.")


def _raised_result(spec: Spec, i: int, where: str, line: str, argument_error: bool) -> CheckResult:
    msg = f"✗ {spec.id}: {where} raised {line}"
    if argument_error and spec.reference is not None:
        msg += f"\n  Hint: the expected signature is {spec.id}{inspect.signature(spec.reference, eval_str=True)}"
    return CheckResult(spec.id, False, i - 1, msg)


def _wrong_result(spec: Spec, i: int, where: str, why: str, case: Case, got: Any, judge: Judge,
                  fraction: float = -1.0) -> CheckResult:
    lines = [f"✗ {spec.id}: {where}: {why}."]
    mistake = spec.diagnose(case, got) if spec.diagnose is not None else _diagnose(spec, case, got, judge)
    if mistake:
        lines.append(f"  Likely mistake: {mistake.message}")
    elif spec.hint:
        lines.append(f"  Hint: {spec.hint}")
    return CheckResult(spec.id, False, i - 1, "\n".join(lines), mistake.name if mistake else "", fraction)


def _passed_result(spec: Spec, n: int, device_type: str) -> CheckResult:
    plural = "s" if n != 1 else ""
    return CheckResult(spec.id, True, n, f"✓ {spec.id}: passed {n} case{plural} ({device_type}).")


def run_check(spec: Spec, obj: Any, hidden: bool = False, seed: int | None = None) -> CheckResult:
    """Check ``obj`` (a function, or a value for answer specs) against ``spec``, in this process; never raises.

    The self-check's verdict is the grader's, word for word: the same observation (:func:`observe_cases`),
    then the same judgement (:func:`judge_observations`), only without the trip through plain data."""
    if spec.kind == "answer":
        return judge_observations(spec, [], {"kind": "answer", "value": obj})
    device = _device()
    # No cases for a spec without them, as for the grader (see hidden_cases).
    cases = _check_cases(spec, hidden, seed, device) if callable(obj) and spec.cases is not None else []
    keep = spec.is_capstone and not hidden and seed is None and bool(cases)
    if keep:  # until an answer comes: a self-check that raises or is interrupted leaves this mark
        _SELF_CHECKED[spec.id] = (obj, cases[0], _NO_ANSWER)
    observed = observe_cases(spec, obj, cases, device=device, raw=True)
    if keep:
        first = (observed.get("observations") or [None])[0]
        if first is not None and not _is_raised(first):
            _SELF_CHECKED[spec.id] = (obj, cases[0], from_portable(first))
    return judge_observations(spec, cases, observed)


def _check_cases(spec: Spec, hidden: bool, seed: int | None, device: torch.device) -> list[Case]:
    """The cases :func:`run_check` draws. Hidden runs use other cases than the visible self-check, so a memorised
    answer fails."""
    rng = np.random.default_rng((seed if seed is not None else 0) + (7919 if hidden else 0))
    return cast(Callable, spec.cases)(rng, device, spec.n_hidden if hidden else spec.n_visible)


# A capstone's last self-check in this kernel, by exercise id: (the function checked, its public case, its answer).
_SELF_CHECKED: dict[str, tuple[Any, Case, Any]] = {}
_NO_ANSWER = object()


def self_check_run(exercise_id: str, fn: Callable[..., Any]) -> tuple[Case, Any]:
    """A capstone's public case (its held-out labels in ``Case.secret``) and ``fn``'s answer on it, for the pictures
    after the self-check (lessons 02-06): the self-check's own answer when it last checked this very ``fn`` in
    this kernel, so a model is not trained a second time only to be looked at; else ``fn`` runs on the case now
    (a redefined function, a restarted kernel, a skipped self-check). Raises RuntimeError when the self-check of
    this very ``fn`` raised or was stopped: running it again would take as long, to fail the same way."""
    spec = get_spec(exercise_id)
    if not spec.is_capstone or spec.cases is None:
        raise ValueError(f"{exercise_id} is not a capstone: its self-check keeps no answer to look at")
    kept = _SELF_CHECKED.get(exercise_id)
    if kept is not None and kept[0] is fn:
        if kept[2] is _NO_ANSWER:
            raise RuntimeError(f"the self-check got no answer from this {exercise_id} (it raised or was stopped): "
                               "fix it, run its self-check again, then this cell")
        return kept[1], kept[2]
    case = _check_cases(spec, False, None, _device())[0]  # the self-check's own public case
    return case, spec.run(fn, case)


def check(exercise_id: str, obj: Any, hidden: bool = False, seed: int | None = None) -> None:
    """Check a student's answer to ``exercise_id`` and print the verdict.

    The visible self-check only prints, so "Run All" carries on past an unfinished exercise.
    The hidden test (``hidden=True``) raises :class:`CheckFailed` on a wrong answer, which is
    what costs the exercise its points when the notebook is graded.
    """
    result = run_check(get_spec(exercise_id), obj, hidden=hidden, seed=seed)
    if hidden and not result.passed:
        raise CheckFailed(result.message)
    print(result.message)


# ------------------------------------------------------------------ grading in two processes
#
# The autograder does not trust what a student's kernel says about itself. The kernel only
# *observes*: it runs the student's function on cases the grader made and sends back what came
# out, in a plain form (tensors, numbers, strings, containers) that can be loaded without
# running any code. The grader *judges* those observations in its own process, with the
# references, judges and known mistakes it imported itself, so nothing the student's code
# changed in the kernel (a patched ``torch.allclose``, ``check``, ``builtins``...) takes part.
# The messages are those of :func:`run_check`, word for word.

PORTABLE_KEY = "__portable__"


class NotPortable(TypeError):
    """A value that cannot travel from the kernel to the grader as plain data."""


def to_portable(x: Any, _depth: int = 0) -> Any:
    """``x`` as plain data that ``torch.load(weights_only=True)`` reads back; raises NotPortable."""
    import pathlib

    if _depth > 20:
        raise NotPortable("nested too deeply")
    if x is None or type(x) in (bool, int, float, str, complex):
        return x
    if isinstance(x, torch.Tensor):
        t = x.detach()
        if type(t) is not torch.Tensor:
            t = t.as_subclass(torch.Tensor)
        return t.cpu().clone()
    if isinstance(x, np.ndarray):
        if x.dtype == object or x.dtype.kind in "USVOMm":
            raise NotPortable(f"numpy array of dtype {x.dtype}")
        return {PORTABLE_KEY: "ndarray", "data": torch.from_numpy(np.ascontiguousarray(x).copy()),
                "dtype": str(x.dtype)}
    if isinstance(x, np.generic):
        return {PORTABLE_KEY: "npscalar", "dtype": str(x.dtype), "value": x.item()}
    if isinstance(x, pathlib.PurePath):
        return {PORTABLE_KEY: "path", "value": str(x), "cls": type(x).__name__}
    if isinstance(x, torch.Size):
        return {PORTABLE_KEY: "size", "value": list(x)}
    if isinstance(x, (list, tuple)):  # a namedtuple travels as a plain tuple
        return (list if isinstance(x, list) else tuple)(to_portable(v, _depth + 1) for v in x)
    if isinstance(x, dict) and all(type(k) in (str, int) for k in x):
        return {k: to_portable(v, _depth + 1) for k, v in x.items()}
    raise NotPortable(type(x).__name__)


def from_portable(x: Any) -> Any:
    """The inverse of :func:`to_portable`."""
    import pathlib

    if type(x) is dict and x.get(PORTABLE_KEY):
        kind = x[PORTABLE_KEY]
        if kind == "ndarray":
            return x["data"].numpy().astype(np.dtype(x["dtype"]), copy=False)
        if kind == "npscalar":
            return np.dtype(x["dtype"]).type(x["value"])
        if kind == "path":
            if x.get("cls", "").startswith("PurePosix"):
                return pathlib.PurePosixPath(x["value"])
            return pathlib.Path(x["value"])
        if kind == "size":
            return torch.Size(x["value"])
        return x
    if type(x) in (list, tuple):
        return type(x)(from_portable(v) for v in x)
    if type(x) is dict:
        return {k: from_portable(v) for k, v in x.items()}
    return x


class CaseTimeout(BaseException):
    """Raised into a student's function that ran past its case's time limit (a BaseException, so that a
    student's ``except Exception`` does not swallow it; one that catches everything is stopped from outside)."""


def _raised(e: BaseException) -> dict:
    return {PORTABLE_KEY: "raised", "type": type(e).__name__,
            "line": traceback.format_exception_only(type(e), e)[-1].strip(),
            "not_implemented": _not_implemented(e),
            "timeout": isinstance(e, CaseTimeout),
            "type_error_argument": isinstance(e, TypeError) and "argument" in str(e)}


def _is_raised(obs: Any) -> bool:
    return type(obs) is dict and obs.get(PORTABLE_KEY) == "raised"


def _to_device(x: Any, device: torch.device) -> Any:
    if isinstance(x, torch.Tensor):
        return x.to(device)
    if isinstance(x, (tuple, list)):
        return type(x)(_to_device(v, device) for v in x)
    if isinstance(x, dict):
        return {k: _to_device(v, device) for k, v in x.items()}
    return x


def _tensor_devices(x: Any, _depth: int = 0) -> set[str]:
    if isinstance(x, torch.Tensor):
        return {x.device.type}
    if _depth < 20 and isinstance(x, (tuple, list)):
        return set().union(*(_tensor_devices(v, _depth + 1) for v in x)) if x else set()
    if _depth < 20 and isinstance(x, dict):
        return set().union(*(_tensor_devices(v, _depth + 1) for v in x.values())) if x else set()
    return set()


def observe_cases(spec: Spec, obj: Any, cases: Sequence[Case] | None = None,
                  device: torch.device | str | None = None, guard: Callable[[int], Any] | None = None,
                  raw: bool = False) -> dict:
    """What the student's ``obj`` gives on each case, as plain data (the judging process sends it to the grader).

    Stops at the first case that raises. ``{"portable": False}`` when an answer cannot be sent as plain data;
    with ``raw`` (a check judged in this same process) such an answer is kept as it is instead. ``guard(i)``,
    when given, is a context manager around the call on case ``i`` (the judging process's time limit).
    """
    if spec.kind == "answer":
        try:
            return {"portable": True, "kind": "answer", "value": to_portable(obj)}
        except NotPortable as e:
            return {"portable": False, "why": str(e)}
    if obj is None or not callable(obj):
        return {"portable": True, "kind": "not_callable", "describe": describe(obj)}
    # The grader makes the cases on its CPU; the student's function runs them on the kernel's
    # device (the GPU when there is one), and the grader is told where each result was left.
    device = torch.device(device) if device is not None else torch.device("cpu")
    out: list[Any] = []
    devices: list[list[str]] = []
    probes: list[dict] = []
    with isolated(obj, registry().keys(), own=spec.id) as fn:
        for case in cases or ():
            if device.type != "cpu":
                case = Case(_to_device(case.args, device), _to_device(case.kwargs, device), case.label)
            try:
                with guard(len(out)) if guard is not None else contextlib.nullcontext():
                    got, probe = _probed_run(spec, fn, case)
            except (Exception, SystemExit, CaseTimeout) as e:  # whatever stops the call is its result (not Ctrl-C)
                out.append(_raised(e))
                break
            try:
                out.append(to_portable(got))
            except NotPortable as e:
                if not raw:
                    return {"portable": False, "why": str(e)}
                out.append(got)
            devices.append(sorted(_tensor_devices(got)))
            probes.append(probe)
    return {"portable": True, "kind": "function", "observations": out, "device": device.type, "devices": devices,
            "probes": probes}


# ------------------------------------------------------------------ probing the contract
#
# Some promises cannot be seen in a result that travels as plain data: whether the inputs were left
# alone, whether the result was still on the autograd graph, whether a model came back in its mode.
# The process that calls the student's function looks, and sends what it saw next to the result.

def _same(a: Any, b: Any) -> bool:
    if type(a).__module__.startswith("pandas") and hasattr(a, "equals"):
        return type(a) is type(b) and bool(a.equals(b))
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.shape == b.shape and a.dtype == b.dtype and \
            bool(torch.equal(a.detach().cpu().nan_to_num(0.5), b.detach().cpu().nan_to_num(0.5)))
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.shape == b.shape and np.array_equal(a, b, equal_nan=a.dtype.kind == "f")
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return type(b) is dict and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, torch.nn.Module):
        return True  # a model's own promise is its mode, probed separately
    try:
        return bool(a == b)
    except Exception:
        return True


def _modes(x: Any) -> list[bool]:
    if isinstance(x, torch.nn.Module):
        return [m.training for m in x.modules()]
    if isinstance(x, (list, tuple)):
        return [m for v in x for m in _modes(v)]
    if isinstance(x, dict):
        return [m for v in x.values() for m in _modes(v)]
    return []


def _needs_grad(x: Any) -> bool:
    if isinstance(x, torch.Tensor):
        return x.requires_grad
    if isinstance(x, (list, tuple)):
        return any(_needs_grad(v) for v in x)
    if isinstance(x, dict):
        return any(_needs_grad(v) for v in x.values())
    return False


def _probed_run(spec: Spec, fn: Callable, case: Case) -> tuple[Any, dict]:
    """``spec.run(fn, case)`` and, for a plain call with a contract, what the call did besides returning."""
    kinds = {c.kind for c in spec.contract}
    if spec.observe is not None or not kinds & {"unchanged", "mode", "differentiable"}:
        return spec.run(fn, case), {}
    args, kwargs = _clone(case.args), _clone(case.kwargs)
    pristine = _clone((args, kwargs))
    modes = _modes((args, kwargs))
    got = fn(*args, **kwargs)
    probe: dict = {}
    if "unchanged" in kinds:
        try:
            bound = inspect.signature(spec.reference).bind(*args, **kwargs).arguments if spec.reference else {}
            before = inspect.signature(spec.reference).bind(*pristine[0], **pristine[1]).arguments \
                if spec.reference else {}
        except (TypeError, ValueError):
            bound, before = {}, {}
        probe["changed"] = [name for name in bound if not _same(bound[name], before.get(name))]
    if "mode" in kinds:
        probe["mode_changed"] = _modes((args, kwargs)) != modes
    if "differentiable" in kinds and _needs_grad((case.args, case.kwargs)):
        probe["on_graph"] = bool(isinstance(got, torch.Tensor) and got.requires_grad and got.grad_fn is not None)
    return got, probe


def _broken_clause(spec: Spec, probe: Any, got: Any) -> tuple[str, Clause] | None:
    """The first promise of ``spec.contract`` that a case's probe or result shows broken, in words."""
    probe = probe if type(probe) is dict else {}
    for clause in spec.contract:
        said = f"the instructions say \"{clause.text}\""
        if clause.kind == "unchanged" and clause.arg in (probe.get("changed") or ()):
            return (f"your function changed its input `{clause.arg}` in place ({said}): compute on a copy "
                    "or with operations that return new tensors (x = x + 1, not x += 1)", clause)
        if clause.kind == "mode" and probe.get("mode_changed"):
            return (f"your function handed the model back in another mode than it came in ({said}): note "
                    "`model.training` first and put it back with `model.train(was_training)`", clause)
        if clause.kind == "differentiable" and probe.get("on_graph") is False:
            return (f"your result is not differentiable ({said}): `.item()`, `.detach()`, `.numpy()` or "
                    "`torch.tensor(...)` of a computed value cut it from the graph; compute it with torch "
                    "operations on the inputs", clause)
        if clause.kind == "range" and len(clause.values) == 2:
            lo, hi = clause.values
            values = got.detach().float() if isinstance(got, torch.Tensor) else \
                torch.as_tensor(got, dtype=torch.float64) if isinstance(got, (float, int, np.ndarray)) else None
            if values is not None and values.numel() and (float(values.min()) < lo or float(values.max()) > hi):
                return (f"your result leaves the range [{lo:g}, {hi:g}] (from {float(values.min()):.4g} to "
                        f"{float(values.max()):.4g}; {said})", clause)
    return None


def judge_observations(spec: Spec, cases: Sequence[Case], observed: dict, device_type: str = "cpu",
                       expected: Sequence[Any] | None = None, profile: str | None = None,
                       student: str | None = None) -> CheckResult:
    """Grader side: the verdict :func:`run_check` would give, from what :func:`observe_cases` saw.

    ``expected``: the reference's answers on ``cases``, when the caller already has them (the grader
    times the reference on each case to set the student's time limits). ``profile``: whose bands a
    capstone is held to (the kernel's own by default); ``student``: whose target an answer is judged
    against (see :func:`course_lib.common.student_id`).
    """
    judge = _judge_of(spec)
    if spec.kind == "answer":
        return _answer_result(spec, judge, from_portable(observed.get("value")), student)
    if observed.get("kind") == "not_callable":
        return CheckResult(spec.id, False, 0, f"✗ {spec.id}: expected a function, got {observed.get('describe', '')}.")
    observations = list(observed.get("observations", []))
    for i, case in enumerate(cases, 1):
        where = _where(i, cases, case)
        if i > len(observations):
            return CheckResult(spec.id, False, i - 1, f"✗ {spec.id}: {where}: no result came back from your function.")
        obs = observations[i - 1]
        if _is_raised(obs):
            if obs.get("not_implemented"):
                return not_implemented(spec, i)
            if obs.get("timeout"):
                return CheckResult(spec.id, False, i - 1,
                                   f"✗ {spec.id}: {where} ran past its time limit and was stopped: "
                                   "look for a loop that never ends, or work far bigger than the case needs.")
            return _raised_result(spec, i, where, obs.get("line", ""), bool(obs.get("type_error_argument")))
        got = from_portable(obs)
        ran_on = observed.get("device", "cpu")
        left_on = (observed.get("devices") or [[]] * len(observations))[i - 1]
        # Only inputs that are tensors say where a result belongs: a tensor made from a file, a
        # list or an int (get_ctr, one_hot, load_batch, a Dataset's items) rightly starts on the CPU.
        if ran_on != "cpu" and _tensor_devices((case.args, case.kwargs)) and any(d != ran_on for d in left_on):
            return CheckResult(spec.id, False, i - 1, f"✗ {spec.id}: {where}: your result is on "
                               f"{', '.join(d for d in left_on if d != ran_on)} but the inputs were on {ran_on}: "
                               "keep it on the inputs' device.")
        probes = observed.get("probes") or []
        broken = _broken_clause(spec, probes[i - 1] if i <= len(probes) else None, got)
        if broken:
            msg = f"✗ {spec.id}: {where}: {broken[0]}."
            # A value out of range is often a known mistake's signature: name it too (the clause stays the count).
            known = _diagnose(spec, case, got, judge) if broken[1].kind == "range" and spec.observe is None else None
            if known:
                msg += f"\n  Likely mistake: {known.message}"
            return CheckResult(spec.id, False, i - 1, msg, broken[1].name)
        if expected is not None:
            want = expected[i - 1]
        else:
            want = spec.expected(case) if spec.reference is not None and spec.bands is None else None
        try:
            why = judge(case, got, want)
        except Exception as e:  # a judge tripping over a strange answer: the answer is wrong
            why = f"could not judge your result ({type(e).__name__}: {e}); got {describe(got)}"
        if why is not None:
            return _wrong_result(spec, i, where, why, case, got, judge)
        if spec.bands is not None and spec.measure is not None:
            return _banded_result(spec, i, where, case, got, judge, profile)
    return _passed_result(spec, len(cases), observed.get("device", device_type))


def _banded_result(spec: Spec, i: int, where: str, case: Case, got: Any, judge: Judge,
                   profile: str | None) -> CheckResult:
    """A capstone's verdict: its metric on the held-out data, and the share of the points that band earns."""
    from course_lib.config import current

    bands = cast(Bands, spec.bands)
    profile = profile or current().profile
    try:
        value = float(cast(Callable, spec.measure)(case, got))
    except Exception as e:
        return _wrong_result(spec, i, where, f"could not measure your predictions ({type(e).__name__}: {e})",
                             case, got, judge, 0.0)
    fraction, band = bands.fraction(value, profile)
    said = f"{bands.metric} on held-out data: {value:.4g}"
    if fraction >= 1.0:
        return CheckResult(spec.id, True, 1, f"✓ {spec.id}: {said}, the top band (full points).", "", 1.0)
    why = (f"{said}: {fraction:.0%} of the points (band {band + 1} of {len(bands.fractions) + 1}; in the "
           f"{profile} profile {bands.describe(profile)})")
    return _wrong_result(spec, i, where, why, case, got, judge, fraction)


def hidden_cases(spec: Spec, seed: int, device: torch.device | None = None,
                 folder: str | os.PathLike | None = None, profile: str | None = None) -> list[Case]:
    """The hidden cases of ``spec`` for a secret ``seed`` (drawn by the grader for each run).

    ``folder``: where cases that need files (images, pose files) write them, through
    :func:`case_dir`; the grader passes a folder the judging process can read. Without it, a
    temporary folder of this process, removed when it exits.
    """
    if spec.kind == "answer" or spec.cases is None:
        return []
    from course_lib.config import using_profile

    rng = np.random.default_rng(seed)
    # ``profile``: the grading run's, which sizes a capstone's held-out data (the grader's own process has none).
    with case_folder(folder) if folder is not None else contextlib.nullcontext(), \
            using_profile(profile) if profile else contextlib.nullcontext():
        return spec.cases(rng, device or torch.device("cpu"), spec.n_hidden)


# ------------------------------------------------------------------ files that cases need
#
# Some cases are files (images for a Dataset, pose files for get_ctr). The grader makes the
# cases in its own process and the judging process, under another uid, opens the files; so
# the grader chooses where they go (``case_folder``) and they are written readable by all.

_CASE_FOLDER: contextvars.ContextVar[Path | None] = contextvars.ContextVar("course_case_folder", default=None)
_process_tmp: dict[int, Path] = {}  # pid -> its own temporary folder; a forked child makes its own
FOLDER_MODE, FILE_MODE = 0o755, 0o644


@contextlib.contextmanager
def case_folder(path: str | os.PathLike) -> Iterator[Path]:
    """Within it, :func:`case_dir` makes its folders under ``path``.

    ``path`` and any missing parent are created 0755 (an existing folder keeps its mode). Nothing
    there is removed afterwards: the folder belongs to whoever chose it.
    """
    folder = Path(path)
    for missing in reversed([p for p in (folder, *folder.parents) if not p.exists()]):
        missing.mkdir(exist_ok=True)
        missing.chmod(FOLDER_MODE)  # whatever the umask: the judging process's uid walks through it
    token = _CASE_FOLDER.set(folder)
    try:
        yield folder
    finally:
        _CASE_FOLDER.reset(token)


def _remove_process_tmp(pid: int) -> None:
    # A forked child inherits this handler: only the process that made the folder removes it.
    if os.getpid() == pid and pid in _process_tmp:
        shutil.rmtree(_process_tmp.pop(pid), ignore_errors=True)


def _tmp_root() -> Path:
    pid = os.getpid()
    root = _process_tmp.get(pid)
    if root is None or not root.is_dir():
        root = Path(tempfile.mkdtemp(prefix=f"course_cases_{pid}_"))
        root.chmod(FOLDER_MODE)
        if pid not in _process_tmp:
            atexit.register(_remove_process_tmp, pid)
        _process_tmp[pid] = root
    return root


def case_dir(prefix: str) -> Path:
    """A fresh, empty folder (mode 0755) for one call of a case generator.

    Under the folder of the innermost :func:`case_folder`, else under a temporary folder of
    this process that is removed when it exits. Generators write their files there with
    mode 0644, so that a judging process running under another uid can read them.
    """
    base = _CASE_FOLDER.get() or _tmp_root()
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=base))
    path.chmod(FOLDER_MODE)
    return path
