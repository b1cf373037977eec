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


@dataclass(frozen=True)
class Mistake:
    """A known wrong answer: an implementation of it, and what to tell a student who made it."""

    name: str
    impl: Callable[..., Any]
    message: str


Judge = Callable[[Case, Any, Any], "str | None"]


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
    if isinstance(expected, torch.Tensor):
        if not isinstance(got, torch.Tensor):
            return f"expected a torch tensor, got {describe(got)}"
        if got.shape != expected.shape:
            return f"expected shape {list(expected.shape)}, got shape {list(got.shape)}"
        if got.dtype != expected.dtype and exact_type:
            return f"expected dtype {expected.dtype}, got {got.dtype}"
        if got.device.type != expected.device.type:
            return (f"your result is on {got.device.type} but the inputs were on {expected.device.type}: "
                    "keep it on the inputs' device")
        g, e = got.detach().cpu(), expected.detach().cpu()
        if e.dtype.is_floating_point:
            if not torch.allclose(g.to(e.dtype), e, rtol=rtol, atol=atol, equal_nan=True):
                return f"values differ (largest difference {(g.to(e.dtype) - e).abs().max().item():.3g})"
        elif not torch.equal(g, e):
            return f"values differ in {(g != e).sum().item()} of {e.numel()} elements"
        return None
    if isinstance(expected, np.ndarray):
        if not isinstance(got, np.ndarray):
            return f"expected a numpy array, got {describe(got)}"
        if got.shape != expected.shape:
            return f"expected shape {list(expected.shape)}, got shape {list(got.shape)}"
        if got.dtype != expected.dtype and exact_type:
            return f"expected dtype {expected.dtype}, got {got.dtype}"
        if np.issubdtype(expected.dtype, np.floating):
            if not np.allclose(got, expected, rtol=rtol, atol=atol, equal_nan=True):
                return f"values differ (largest difference {np.abs(got - expected).max():.3g})"
        elif not np.array_equal(got, expected):
            return f"values differ in {int((got != expected).sum())} of {expected.size} elements"
        return None
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


def _clone(x: Any) -> Any:
    """A deep copy of case arguments, so a student's in-place edit cannot poison later cases."""
    if isinstance(x, torch.Tensor):
        return x.detach().clone()
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


def isolate(fn: Callable, ids: Iterable[str]) -> Callable:
    """``fn`` with every call to another exercise replaced by that exercise's reference.

    So each exercise is graded on its own: a wrong ``make_fill_image`` costs its own
    points once, not again in every exercise that calls it.
    """
    if not isinstance(fn, types.FunctionType):
        return fn
    names = _global_names(fn.__code__) & set(ids)
    names.discard(fn.__name__)
    if not names:
        return fn
    specs = registry()
    glb = dict(fn.__globals__)
    for name in names:
        ref = specs[name].reference
        # A reference hidden from the judging process (the exercise being judged) is never substituted.
        if ref is not None and not getattr(ref, "__course_stub__", False):
            glb[name] = ref
    new = types.FunctionType(fn.__code__, glb, fn.__name__, fn.__defaults__, fn.__closure__)
    new.__kwdefaults__ = fn.__kwdefaults__
    return new


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


def _answer_result(spec: Spec, judge: Judge, answer: Any) -> CheckResult:
    try:
        why = judge(Case(), answer, None)
    except Exception as e:  # a malformed answer is the student's mistake, not ours
        why = f"could not read your answer ({type(e).__name__}: {e})"
    if why is None:
        return CheckResult(spec.id, True, 1, f"✓ {spec.id}: your answer is right.")
    return CheckResult(spec.id, False, 1, f"✗ {spec.id}: {why}" + (f"\n  Hint: {spec.hint}" if spec.hint else ""))


def _where(i: int, cases: Sequence[Case], case: Case) -> str:
    return f"case {i} of {len(cases)}" + (f" ({case.label})" if case.label else "")


def _not_implemented_result(spec: Spec, i: int) -> CheckResult:
    return CheckResult(spec.id, False, i - 1,
                       f"✗ {spec.id}: not implemented yet: replace `raise NotImplementedError()` with your code.")


def _raised_result(spec: Spec, i: int, where: str, line: str, argument_error: bool) -> CheckResult:
    msg = f"✗ {spec.id}: {where} raised {line}"
    if argument_error and spec.reference is not None:
        msg += f"\n  Hint: the expected signature is {spec.id}{inspect.signature(spec.reference, eval_str=True)}"
    return CheckResult(spec.id, False, i - 1, msg)


def _wrong_result(spec: Spec, i: int, where: str, why: str, case: Case, got: Any, judge: Judge) -> CheckResult:
    lines = [f"✗ {spec.id}: {where}: {why}."]
    mistake = _diagnose(spec, case, got, judge)
    if mistake:
        lines.append(f"  Likely mistake: {mistake.message}")
    elif spec.hint:
        lines.append(f"  Hint: {spec.hint}")
    return CheckResult(spec.id, False, i - 1, "\n".join(lines), mistake.name if mistake else "")


def _passed_result(spec: Spec, n: int, device_type: str) -> CheckResult:
    plural = "s" if n != 1 else ""
    return CheckResult(spec.id, True, n, f"✓ {spec.id}: passed {n} case{plural} ({device_type}).")


def run_check(spec: Spec, obj: Any, hidden: bool = False, seed: int | None = None) -> CheckResult:
    """Check ``obj`` (a function, or a value for answer specs) against ``spec``, in this process; never raises.

    The self-check's verdict is the grader's, word for word: the same observation (:func:`observe_cases`),
    then the same judgement (:func:`judge_observations`), only without the trip through plain data."""
    if spec.kind == "answer":
        return judge_observations(spec, [], {"kind": "answer", "value": obj})
    n = spec.n_hidden if hidden else spec.n_visible
    # Hidden runs use other cases than the visible self-check, so a memorised answer fails.
    rng = np.random.default_rng((seed if seed is not None else 0) + (7919 if hidden else 0))
    device = _device()
    # No cases for a spec without them, as for the grader (see hidden_cases).
    cases = spec.cases(rng, device, n) if callable(obj) and spec.cases is not None else []
    return judge_observations(spec, cases, observe_cases(spec, obj, cases, device=device, raw=True))


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
    fn = isolate(obj, registry().keys())
    # The grader makes the cases on its CPU; the student's function runs them on the kernel's
    # device (the GPU when there is one), and the grader is told where each result was left.
    device = torch.device(device) if device is not None else torch.device("cpu")
    out: list[Any] = []
    devices: list[list[str]] = []
    for case in cases or ():
        if device.type != "cpu":
            case = Case(_to_device(case.args, device), _to_device(case.kwargs, device), case.label)
        try:
            with guard(len(out)) if guard is not None else contextlib.nullcontext():
                got = spec.run(fn, case)
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
    return {"portable": True, "kind": "function", "observations": out, "device": device.type, "devices": devices}


def judge_observations(spec: Spec, cases: Sequence[Case], observed: dict, device_type: str = "cpu",
                       expected: Sequence[Any] | None = None) -> CheckResult:
    """Grader side: the verdict :func:`run_check` would give, from what :func:`observe_cases` saw.

    ``expected``: the reference's answers on ``cases``, when the caller already has them (the grader
    times the reference on each case to set the student's time limits).
    """
    judge = _judge_of(spec)
    if spec.kind == "answer":
        return _answer_result(spec, judge, from_portable(observed.get("value")))
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
                return _not_implemented_result(spec, i)
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
        if expected is not None:
            want = expected[i - 1]
        else:
            want = spec.expected(case) if spec.reference is not None else None
        try:
            why = judge(case, got, want)
        except Exception as e:  # a judge tripping over a strange answer: the answer is wrong
            why = f"could not judge your result ({type(e).__name__}: {e}); got {describe(got)}"
        if why is not None:
            return _wrong_result(spec, i, where, why, case, got, judge)
    return _passed_result(spec, len(cases), observed.get("device", device_type))


def hidden_cases(spec: Spec, seed: int, device: torch.device | None = None,
                 folder: str | os.PathLike | None = None) -> list[Case]:
    """The hidden cases of ``spec`` for a secret ``seed`` (drawn by the grader for each run).

    ``folder``: where cases that need files (images, pose files) write them, through
    :func:`case_dir`; the grader passes a folder the judging process can read. Without it, a
    temporary folder of this process, removed when it exits.
    """
    if spec.kind == "answer" or spec.cases is None:
        return []
    rng = np.random.default_rng(seed)
    with case_folder(folder) if folder is not None else contextlib.nullcontext():
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
