"""What every exercise of the course keeps, written once: test_checks.py and test_release.py run it over the whole
registry and every lesson, test_new_lesson.py over a toy lesson it builds."""
from __future__ import annotations

import inspect

from autograder import notebooks
from course_lib import checks


class Undiagnosed(AssertionError):
    """A known mistake that fails its check, but without its own message."""


def assert_diagnosed(spec: checks.Spec, mistake: checks.Mistake) -> None:
    """The check run on a known mistake (the hidden run: the spec's own cases, as many as the grader uses) fails
    with that mistake's message, so a student who makes it is told which one it is."""
    result = checks.run_check(spec, mistake.impl, hidden=True)
    assert not result.passed, f"{spec.id}: the known mistake {mistake.name!r} passes its check"
    assert result.message.startswith(f"✗ {spec.id}:"), result.message
    # A function's diagnosis follows the judge's sentence; an answer spec's judge must say it itself.
    want = f"Likely mistake: {mistake.message}" if spec.kind == "function" else mistake.message
    if want not in result.message:
        raise Undiagnosed(f"{spec.id}: the known mistake {mistake.name!r} is not named: {result.message}")


def assert_one_exercise_one_id(lesson: str) -> None:
    """Solution cell <id>, then a self-check of <id>, then test cell <id>_test calling the same spec; the reference
    lives in course_lib/<topic>.py under the same name, typed and documented."""
    source = notebooks.read(notebooks.source_path(lesson))
    cells = source.cells
    registry = checks.registry()
    assert notebooks.exercises(source), f"{lesson} has no graded exercise"
    for ex in notebooks.exercises(source):
        assert ex.id in registry, f"{ex.id} has no check spec in course_lib"
        assert ex.points > 0
        sol = next(i for i, c in enumerate(cells) if notebooks.grade_id(c) == ex.id)
        assert notebooks.is_solution(cells[sol])
        assert cells[sol + 1].source.strip().endswith(f"check({ex.id!r}, {ex.id})"), f"self-check after {ex.id}"
        assert notebooks.grade_id(cells[sol + 2]) == ex.test_id
        assert f"check({ex.id!r}, {ex.id}, hidden=True)" in cells[sol + 2].source
        spec = registry[ex.id]
        if spec.kind == "function":
            ref = getattr(checks.topic_module(spec), ex.id)
            assert spec.reference in (None, ref) and ref.__name__ == ex.id
            assert ref.__doc__, f"{ex.id} reference needs a docstring giving shapes"
            assert inspect.signature(ref).return_annotation is not inspect.Signature.empty


def _plain(text: str) -> str:
    return " ".join(text.replace("`", "").split()).lower()


def assert_contract_in_text(lesson: str) -> None:
    """Every clause of every exercise's contract is stated, in the same words, in the instructions a student reads:
    the Markdown between the previous exercise's test cell and this exercise's answer cell (backticks and line
    breaks aside)."""
    source = notebooks.read(notebooks.source_path(lesson))
    cells = source.cells
    registry = checks.registry()
    start = 0
    for ex in notebooks.exercises(source):
        sol = next(i for i, c in enumerate(cells) if notebooks.grade_id(c) == ex.id)
        text = _plain(" ".join(c.source for c in cells[start:sol] if c.cell_type == "markdown"))
        missing = [c.text for c in registry[ex.id].contract if _plain(c.text) not in text]
        assert not missing, f"{lesson}: the instructions of {ex.id} do not state: {missing}"
        start = sol + 1


def assert_release_hides_solutions(lesson: str) -> None:
    """The student version: every answer a stub, no hidden test, no output."""
    text = notebooks.release_path(lesson).read_text()
    assert "BEGIN SOLUTION" not in text and "BEGIN HIDDEN TESTS" not in text and "hidden=True" not in text
    nb = notebooks.read(notebooks.release_path(lesson))
    assert any(notebooks.is_solution(c) for c in nb.cells), f"{lesson}'s release has no answer cell"
    for cell in nb.cells:
        assert cell.get("outputs", []) == []
        if notebooks.is_solution(cell) and cell.cell_type == "code":
            assert "raise NotImplementedError()" in cell.source


# ------------------------------------------------------------------ the contract, broken on purpose
#
# Each clause an exercise's instructions state must be held by its hidden cases. The reference, wrapped so that it
# breaks exactly that clause and nothing else, must then lose its points; wrapped so that it stays correct, it must
# keep them on every seed. The wrappers are generic: a new exercise's contract is tested for free.

import functools  # noqa: E402
import types  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

OFF_BY = 1e-3  # "a result off by a small constant": far outside every judge's tolerance, still plausible


def _bound(ref, args, kwargs):
    sig = inspect.signature(ref)
    bound = sig.bind(*args, **kwargs)
    return bound


def _mutate(x) -> bool:
    """Change ``x`` in place (after the answer was computed); False when it cannot be changed."""
    if isinstance(x, torch.Tensor):
        with torch.no_grad():
            if x.dtype == torch.bool:
                x.logical_not_()
            else:
                x.add_(1)
        return True
    if isinstance(x, np.ndarray) and x.flags.writeable:
        x += (1 if x.dtype != bool else True)
        return True
    if isinstance(x, list) and x:
        x.append(x[0])
        return True
    if isinstance(x, dict):
        x["__changed__"] = 1
        return True
    import pandas as pd

    if isinstance(x, pd.DataFrame) and len(x):
        x.drop(index=x.index[0], inplace=True)
        return True
    if isinstance(x, pd.Series) and len(x):
        x[x.index[0]] = "__changed__"
        return True
    return False


def _offset(out):
    if isinstance(out, torch.Tensor) and out.is_floating_point():
        return out + OFF_BY
    if isinstance(out, np.ndarray) and out.dtype.kind == "f":
        return out + OFF_BY
    if type(out) is float:
        return out + OFF_BY
    return None


def _float_result(spec: checks.Spec) -> bool:
    case = spec.cases(np.random.default_rng(0), torch.device("cpu"), spec.n_visible)[0]
    return _offset(spec.expected(case)) is not None


def breakers(spec: checks.Spec) -> list[tuple[str, object]]:
    """(what it breaks, the reference broken so) for every generic clause of ``spec.contract``, plus the result off
    by a small constant wherever the result is a float (no judge may be that lenient unless its text says so)."""
    ref = spec.reference
    if spec.kind != "function" or ref is None or spec.is_capstone:
        return []
    out: list[tuple[str, object]] = []

    def variant(name, fn):
        out.append((name, functools.wraps(ref)(fn)))

    for clause in spec.contract:
        if clause.kind == "differentiable":
            variant(clause.name, lambda *a, **k: ref(*a, **k).detach())
        elif clause.kind == "unchanged":
            def changed(*a, _arg=clause.arg, **k):
                result = ref(*a, **k)
                _mutate(_bound(ref, a, k).arguments[_arg])
                return result
            variant(clause.name, changed)
        elif clause.kind == "mode":
            def flipped(*a, **k):
                result = ref(*a, **k)
                for m in [v for v in (*a, *k.values()) if isinstance(v, torch.nn.Module)]:
                    m.train(not m.training)
                return result
            variant(clause.name, flipped)
        elif clause.kind == "optional":
            def ignored(*a, _arg=clause.arg, **k):
                bound = _bound(ref, a, k)
                bound.arguments.pop(_arg, None)
                return ref(*bound.args, **bound.kwargs)
            variant(clause.name, ignored)
        elif clause.kind == "shape":
            for ndim in clause.values:
                def refused(*a, _arg=clause.arg, _ndim=ndim, **k):
                    if getattr(_bound(ref, a, k).arguments[_arg], "ndim", None) == _ndim:
                        raise ValueError(f"only some shapes of {_arg} handled")
                    return ref(*a, **k)
                variant(f"{clause.name}:ndim{ndim}", refused)
        elif clause.kind == "range":
            def outside(*a, _hi=clause.values[1], _lo=clause.values[0], **k):
                result = ref(*a, **k)
                if isinstance(result, torch.Tensor):
                    result = result.clone().contiguous()  # reshape(-1) of a strided view would write to a copy
                else:
                    result = np.array(result, dtype=float)
                result.reshape(-1)[0] = _hi + 0.05 * (_hi - _lo)
                return result
            variant(clause.name, outside)
        elif clause.kind == "zero_grad":
            def piling(*a, **k):
                keep = torch.optim.Optimizer.zero_grad, torch.nn.Module.zero_grad
                torch.optim.Optimizer.zero_grad = torch.nn.Module.zero_grad = lambda self, *x, **y: None
                try:
                    return ref(*a, **k)
                finally:
                    torch.optim.Optimizer.zero_grad, torch.nn.Module.zero_grad = keep
            variant(clause.name, piling)
    if spec.cases is not None and _float_result(spec):
        variant("off_by_a_constant", lambda *a, **k: _offset(ref(*a, **k)))
    return out


def renamed(fn):
    """``fn`` with its local variables renamed (its arguments keep their names: cases pass some by keyword)."""
    code = fn.__code__
    n_args = code.co_argcount + code.co_kwonlyargcount + bool(code.co_flags & inspect.CO_VARARGS) + \
        bool(code.co_flags & inspect.CO_VARKEYWORDS)
    keep = set(code.co_varnames[:n_args]) | set(code.co_cellvars) | set(code.co_freevars)
    names = tuple(v if v in keep else f"renamed_{i}" for i, v in enumerate(code.co_varnames))
    new = types.FunctionType(code.replace(co_varnames=names), fn.__globals__, fn.__name__, fn.__defaults__,
                             fn.__closure__)
    new.__kwdefaults__ = fn.__kwdefaults__
    return new


def keepers(spec: checks.Spec) -> list[tuple[str, object]]:
    """Answers that differ from the reference only in ways the instructions do not care about."""
    ref = spec.reference
    # A capstone trains on every call: its topic's tests run the reference on three seeds instead.
    if spec.kind != "function" or ref is None or not isinstance(ref, types.FunctionType) or spec.is_capstone:
        return []

    def chatty(*a, **k):
        print("my answer is running")
        return renamed(ref)(*a, **k)

    return [("renamed_and_chatty", functools.wraps(ref)(chatty))]


PROBED = ("unchanged", "mode", "differentiable", "range")  # clauses the judging process sees and names itself


def assert_loses_points(spec: checks.Spec, what: str, wrong) -> None:
    """The hidden check fails ``wrong``; a probed clause's breach is named as that clause (the class report
    counts diagnoses by clause)."""
    result = checks.run_check(spec, wrong, hidden=True)
    assert not result.passed, f"{spec.id}: the reference with {what} keeps full marks: no hidden case tests it"
    kind = what.split(":")[1] if what.startswith("contract:") else ""
    if kind in PROBED:
        assert result.mistake == what, f"{spec.id}: {what} is caught but not named as such: {result.message}"
