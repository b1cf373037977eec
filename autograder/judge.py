"""Where grading decisions are made: in the grader's own process, never in the student's kernel.

A student's notebook runs in a kernel that their code controls completely: it can patch
``torch.allclose``, ``check``, ``builtins`` or ``sys.modules``, override ``showtraceback`` so
errors vanish, or read files. So the kernel is only asked what the student's functions *do*:

1. :func:`instrument` draws a secret seed, makes each exercise's hidden cases in the grader,
   saves them for the kernel, puts a guard cell before all student code (an audit hook that
   refuses to open ``solutions/``, ``autograder/`` and ``.git/``, plus a snapshot of the functions a
   cheat would patch) and replaces every hidden test cell by a *collect* call, so the hidden
   tests never enter the kernel.
2. At each test cell the kernel runs the student's function on the cases and saves what came
   out as plain data (tensors, numbers, strings, containers), with an integrity report.
3. :func:`verdicts` loads those files with ``torch.load(weights_only=True)`` (no code runs while
   loading) and judges them with the references, judges and known mistakes imported here.

Where a result is an object (a model, a prediction that must run without gradients), the spec's
``observe`` reduces it in the kernel to plain data (layer sizes, flags, numbers) and the grader
judges that. Exercises whose results resist this (a matplotlib Axes, a dataset class) are
checked by ``run_check`` in the kernel, through the copy captured before any student code ran;
that verdict only counts when the integrity report is clean. A static scan (:func:`static_flags`)
and a runtime probe flag a function that calls the course's reference, or a library function
that does the whole job (``Spec.forbidden``), instead of implementing it.
"""
from __future__ import annotations

import ast
import io
import re
import secrets
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from autograder import REPO, SOLUTIONS
from autograder.notebooks import exercises, grade_id

AUTOGRADER_DIR = Path(__file__).resolve().parent
GUARD = "__autograder__"
MAX_REPORT_BYTES = 256 * 1024 * 1024
CHECK_LINE = re.compile(r"""^check\(\s*['"](\w+)['"]\s*,\s*(\w+)\s*,\s*hidden\s*=\s*True\s*\)\s*;?\s*$""")


@dataclass
class ExercisePlan:
    id: str
    test_id: str
    name: str = ""              # the student's object the hidden test checks
    mode: str = "grader"        # grader: judged here; kernel: run_check in the kernel; none: nothing to check
    seed: int = 0
    cases: list = field(default_factory=list)
    extra: list[str] = field(default_factory=list)  # other hidden statements, run in the kernel
    report: Path | None = None


@dataclass
class Plan:
    seed: int
    folder: Path
    exercises: dict[str, ExercisePlan] = field(default_factory=dict)
    flags: dict[str, str] = field(default_factory=dict)  # exercise -> why it is flagged (static scan)
    final_report: Path | None = None


# -------------------------------------------------------------------------- instrumenting

def _hidden_lines(source: str) -> list[str]:
    text = source
    if "### BEGIN HIDDEN TESTS" in text:
        text = text.split("### BEGIN HIDDEN TESTS", 1)[1].split("### END HIDDEN TESTS", 1)[0]
    return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]


def _has_module(x, depth: int = 0) -> bool:
    import torch

    if depth > 6:
        return False
    if isinstance(x, torch.nn.Module):
        return True
    if isinstance(x, (list, tuple)):
        return any(_has_module(v, depth + 1) for v in x)
    if isinstance(x, dict):
        return any(_has_module(v, depth + 1) for v in x.values())
    return False


def _plan_exercise(ex, source_cell, folder: Path, seed: int) -> ExercisePlan:
    import torch

    from course_lib.checks import get_spec, hidden_cases

    plan = ExercisePlan(ex.id, ex.test_id, seed=seed)
    for line in _hidden_lines(source_cell.source):
        m = CHECK_LINE.match(line)
        if m and not plan.name:
            spec_id, plan.name = m.group(1), m.group(2)
            if spec_id != ex.id:
                plan.extra.append(line)
                plan.name = ""
        else:
            plan.extra.append(line)
    plan.report = folder / f"{ex.id}-{secrets.token_hex(8)}.pt"
    if not plan.name:
        plan.mode = "none"
        return plan
    spec = get_spec(ex.id)
    if spec.kind == "answer":
        return plan
    try:
        plan.cases = hidden_cases(spec, seed)
        if any(_has_module((c.args, c.kwargs)) for c in plan.cases):
            raise TypeError("cases hold models the student's function changes in place")
        torch.save(plan.cases, folder / f"{ex.id}.cases.pt")
    except Exception:  # cases that cannot travel (lambdas, models changed in place): check in the kernel
        plan.mode, plan.cases = "kernel", []
        (folder / f"{ex.id}.cases.pt").unlink(missing_ok=True)
    return plan


def _guard_source(plan: Plan) -> str:
    # The solutions, the grader, and the repository's history (which holds every solution too).
    blocked = [str(SOLUTIONS.resolve()), str(AUTOGRADER_DIR), str((REPO / ".git").resolve())]
    return GUARD_TEMPLATE.replace("@BLOCKED@", repr(blocked)).replace("@FOLDER@", repr(str(plan.folder.resolve()))) \
        .replace("@FINAL@", repr(str(plan.final_report)))


def _collect_source(ex: ExercisePlan) -> str:
    args = dict(ex_id=ex.id, name=ex.name, mode=ex.mode, seed=ex.seed, report=str(ex.report),
                cases=f"{ex.id}.cases.pt" if ex.mode == "grader" and ex.cases else "", extra=ex.extra)
    return (f"# hidden tests for {ex.id} run in the grader: this cell only collects what your code does\n"
            f"{GUARD}.collect(globals(), **{args!r})")


def _injected(source: str, role: str) -> nbformat.NotebookNode:
    cell = nbformat.v4.new_code_cell(source)
    cell.metadata["autograder"] = {"injected": True, "role": role}
    cell.metadata["tags"] = ["remove_cell"]
    return cell


def instrument(nb: nbformat.NotebookNode, source: nbformat.NotebookNode, workdir: Path) -> tuple[nbformat.NotebookNode, Plan]:
    """The notebook to execute, and the plan to judge its results by (see the module docstring)."""
    folder = Path(workdir) / f".autograder-{secrets.token_hex(6)}"
    folder.mkdir(parents=True)
    plan = Plan(seed=secrets.randbits(62), folder=folder, final_report=folder / f"final-{secrets.token_hex(8)}.pt")
    plan.flags = static_flags(nb)
    src_cells = {grade_id(c): c for c in source.cells if grade_id(c)}
    out = nbformat.from_dict(dict(nb))
    cells = [nbformat.from_dict(dict(c)) for c in nb.cells]
    for ex in exercises(source):
        seed = (plan.seed + zlib.crc32(ex.id.encode())) % (1 << 62)
        ep = _plan_exercise(ex, src_cells[ex.test_id], folder, seed)
        plan.exercises[ex.id] = ep
        for cell in cells:
            if grade_id(cell) == ex.test_id:
                cell.cell_type = "code"
                cell.source = _collect_source(ep)
                cell.outputs, cell.execution_count = [], None
                cell.metadata["autograder"] = {"collect": ex.id}
    cells.insert(0, _injected(_guard_source(plan), "guard"))
    cells.append(_injected(f"{GUARD}.final(globals())", "final"))
    out.cells = cells
    return out, plan


# ---------------------------------------------------------------------- reading results

def load_report(path: Path):
    """A report the kernel wrote, read without running any code from it.

    ``weights_only=True`` lets the unpickler build only tensors and plain containers, so a
    crafted file cannot call ``os.system`` (or anything else) while it is being read.
    """
    import torch

    path = Path(path)
    if path.stat().st_size > MAX_REPORT_BYTES:
        raise ValueError(f"{path.name} is larger than {MAX_REPORT_BYTES >> 20} MB")
    with open(path, "rb") as f:
        data = f.read()
    return torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")


@dataclass
class Verdict:
    status: str
    message: str = ""


def _tampering(report: dict) -> list[str]:
    out = []
    for key in ("tampering", "attempts"):
        val = report.get(key) or []
        if isinstance(val, (list, tuple)):
            out += [str(v) for v in val]
    return out


def verdicts(plan: Plan) -> dict[str, Verdict]:
    """One verdict per exercise whose collect cell left a report; decided here, from plain data."""
    from course_lib.checks import get_spec, judge_observations

    reports: dict[str, dict] = {}
    broken: dict[str, str] = {}
    for ex_id, ep in plan.exercises.items():
        if ep.report is None or not ep.report.exists():
            continue
        try:
            rep = load_report(ep.report)
            if not isinstance(rep, dict):
                raise TypeError(f"expected a dict, got {type(rep).__name__}")
            reports[ex_id] = rep
        except Exception as e:
            broken[ex_id] = f"{type(e).__name__}: {str(e)[:200]}"
    final = {}
    if plan.final_report and plan.final_report.exists():
        try:
            final = load_report(plan.final_report)
            final = final if isinstance(final, dict) else {"tampering": ["the final integrity report was not a dict"]}
        except Exception as e:
            final = {"tampering": [f"the final integrity report could not be read ({type(e).__name__})"]}
    # Tampering anywhere taints the whole submission: a patch made in one cell lives on in the kernel.
    evidence = sorted(set(sum((_tampering(r) for r in reports.values()), []) + _tampering(final)))
    out: dict[str, Verdict] = {}
    for ex_id, ep in plan.exercises.items():
        if evidence:
            shown = "; ".join(evidence[:5]) + (f"; and {len(evidence) - 5} more" if len(evidence) > 5 else "")
            out[ex_id] = Verdict("tampered", "your notebook changed the grading environment or read files it may not read, "
                                             f"so this submission scores 0 until an instructor reviews it: {shown}")
            continue
        if ex_id in broken:  # too large, or not plain data: never unpickled, never trusted
            out[ex_id] = Verdict("error", f"what your code returned could not be read back ({broken[ex_id]}).")
            continue
        rep = reports.get(ex_id)
        if rep is None:
            continue
        flag = plan.flags.get(ex_id) or "; ".join(str(f) for f in rep.get("flags") or [])
        if flag:
            out[ex_id] = Verdict("flagged", flag)
            continue
        if rep.get("error"):
            out[ex_id] = Verdict("error", f"the hidden tests could not run: {rep['error']}")
            continue
        if rep.get("missing"):
            out[ex_id] = Verdict("failed", f"✗ {ex_id}: `{ep.name}` is not defined: run the cell that defines it "
                                           "(and the cells before it) without errors.")
            continue
        verdict = _judge_one(ep, rep, get_spec, judge_observations)
        if verdict.status == "passed":
            for ok, msg in rep.get("extra") or []:
                if not ok:
                    verdict = Verdict("failed", str(msg))
                    break
        out[ex_id] = verdict
    return out


def _judge_one(ep: ExercisePlan, rep: dict, get_spec, judge_observations) -> Verdict:
    if ep.mode == "none":
        return Verdict("passed")
    spec = get_spec(ep.id)
    if rep.get("mode") == "grader" and isinstance(rep.get("observed"), dict):
        try:
            result = judge_observations(spec, ep.cases, rep["observed"])
        except Exception as e:
            return Verdict("error", f"the grader could not judge {ep.id}: {type(e).__name__}: {e}")
    elif isinstance(rep.get("result"), dict):
        result = rep["result"]
        return Verdict("passed" if result.get("passed") is True else "failed", "" if result.get("passed") is True
                       else str(result.get("message", "")))
    else:
        return Verdict("error", "the hidden tests left no result.")
    return Verdict("passed" if result.passed else "failed", "" if result.passed else result.message)


def finish(nb: nbformat.NotebookNode, plan: Plan, found: dict[str, Verdict]) -> None:
    """Make the executed notebook fit to show: no injected cells, test cells saying what was decided."""
    nb.cells = [c for c in nb.cells if not c.get("metadata", {}).get("autograder", {}).get("injected")]
    for cell in nb.cells:
        ex_id = cell.get("metadata", {}).get("autograder", {}).get("collect")
        if not ex_id:
            continue
        errors = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
        cell.source = f"# hidden tests for {ex_id} ran in the grader"
        v = found.get(ex_id)
        text = ("✓ passed" if v.status == "passed" else f"{v.status}: {v.message}") if v else ""
        cell.outputs = ([nbformat.v4.new_output("stream", name="stdout", text=text + "\n")] if text else []) + \
                       [e for e in errors if e.get("ename") == "TimeoutError"]


# ----------------------------------------------------------------------------- static scan

def _dotted(node) -> str | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return None


def _parse(source: str):
    lines = [ln for ln in source.splitlines() if not ln.lstrip().startswith(("%", "!"))]
    try:
        return ast.parse("\n".join(lines))
    except SyntaxError:
        return None


def _aliases(trees) -> dict[str, str]:
    names: dict[str, str] = {}
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for a in node.names:
                    if a.asname:
                        names[a.asname] = a.name
                    else:
                        names[a.name.split(".")[0]] = a.name.split(".")[0]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for a in node.names:
                    if a.name != "*":
                        names[a.asname or a.name] = f"{node.module}.{a.name}"
    return names


def _same(resolved: str, target: str) -> bool:
    r, t = resolved.split("."), target.split(".")
    return len(r) >= 2 and r[0] == t[0] and r[-1] == t[-1]


def _targets(spec) -> list[tuple[str, str]]:
    """(dotted name, what to call it in a message) of everything the exercise may not call."""
    out = [(f"{spec.module.removesuffix('_checks')}.{spec.id}", "the course's reference")]
    out += [(name, "a library function that does the whole exercise") for name in spec.forbidden]
    return out


def scan_cell(source: str, spec, aliases: dict[str, str]) -> str | None:
    """Why the functions defined in a solution cell are flagged, or None."""
    tree = _parse(source)
    if tree is None:
        return None
    targets = _targets(spec)
    for fn in [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef))]:
        for node in ast.walk(fn):
            resolved = None
            if isinstance(node, (ast.Attribute, ast.Name)) and isinstance(getattr(node, "ctx", None), ast.Load):
                d = _dotted(node)
                if d:
                    head, _, rest = d.partition(".")
                    resolved = aliases.get(head, head) + (f".{rest}" if rest else "")
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "getattr" \
                    and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str):
                base = _dotted(node.args[0])
                if base:
                    head, _, rest = base.partition(".")
                    resolved = aliases.get(head, head) + (f".{rest}" if rest else "") + f".{node.args[1].value}"
            if not resolved:
                continue
            for target, what in targets:
                if _same(resolved, target):
                    return (f"your `{spec.id}` uses {what}, `{resolved}`, instead of implementing it: "
                            "write the computation yourself (an instructor will review this flag).")
    return None


def static_flags(nb: nbformat.NotebookNode) -> dict[str, str]:
    """Exercise id -> why its solution cell is flagged, for every flagged solution cell."""
    from course_lib.checks import registry

    specs = registry()
    code = [c for c in nb.cells if c.get("cell_type") == "code"]
    trees = [t for t in (_parse(c.source) for c in code) if t is not None]
    aliases = _aliases(trees)
    out = {}
    for cell in code:
        gid = grade_id(cell)
        if gid in specs and specs[gid].kind != "answer":
            why = scan_cell(cell.source, specs[gid], aliases)
            if why:
                out[gid] = why
    return out


# --------------------------------------------------------------------- the kernel's side

GUARD_TEMPLATE = r'''# Injected by the autograder before any student code: it records what the notebook does to
# the grading environment. The grade itself is decided outside this kernel.
def __autograder_make_guard__():
    import builtins, os, re, sys, types, traceback
    import numpy, numpy.testing, torch
    import course_lib.checks as checks

    blocked = tuple(os.path.join(p, "") for p in @BLOCKED@)
    folder = os.path.join(@FOLDER@, "")
    state = {"allow": 0, "attempts": []}

    def hook(event, args):
        if event == "open":
            target = args[0] if args else None
            if isinstance(target, int) or target is None:
                return
            try:
                path = os.path.realpath(os.fsdecode(target))
            except Exception:
                return
            if path.startswith(blocked) or (path.startswith(folder) and not state["allow"]):
                state["attempts"].append(f"tried to open {path}")
                raise PermissionError(f"the autograder does not let notebooks open {path}")
        elif event in ("os.system", "subprocess.Popen", "os.posix_spawn", "os.exec", "os.spawn") and not state["allow"]:
            text = repr(args)
            if ("solutions" in text or "autograder" in text or folder.rstrip(os.sep) in text
                    or re.search(r"\bgit\b", text)):
                state["attempts"].append(f"tried to run {text[:120]}")
                raise PermissionError("the autograder does not let notebooks run that command")
        elif event in ("os.remove", "os.rename", "os.rmdir", "shutil.rmtree", "shutil.move", "os.truncate") and not state["allow"]:
            if any(isinstance(a, (str, bytes, os.PathLike)) and os.path.realpath(os.fsdecode(a)).startswith(folder) for a in args):
                state["attempts"].append(f"tried {event} in the grader's folder")
                raise PermissionError("the autograder does not let notebooks change its files")

    sys.addaudithook(hook)

    # ipykernel swaps these for every request (stdin forwarding) or owns them.
    ipython_managed = {"input", "raw_input", "getpass", "display", "get_ipython", "exit", "quit", "help",
                       "copyright", "credits", "license"}

    def snapshot():
        checks.registry()
        snap = {}
        for name in ("allclose", "isclose", "equal", "save", "load", "is_tensor"):
            snap[f"torch.{name}"] = getattr(torch, name, None)
        for name in ("allclose", "equal", "__eq__", "__ne__", "isclose", "tolist", "item"):
            snap[f"torch.Tensor.{name}"] = getattr(torch.Tensor, name, None)
        for name in ("allclose", "isclose", "array_equal"):
            snap[f"numpy.{name}"] = getattr(numpy, name, None)
        for name in dir(numpy.testing):
            if name.startswith("assert"):
                snap[f"numpy.testing.{name}"] = getattr(numpy.testing, name)
        for name, val in vars(builtins).items():
            if not name.startswith("_") and name not in ipython_managed:
                snap[f"builtins.{name}"] = val
        snap["builtins.__import__"] = builtins.__import__
        for name, val in vars(checks).items():
            if isinstance(val, (types.FunctionType, type)) or name == "_registry":
                snap[f"course_lib.checks.{name}"] = val
        for spec_id, spec in checks.registry().items():
            for attr in ("reference", "cases", "judge", "observe", "mistakes", "n_hidden", "kind"):
                snap[f"spec {spec_id}.{attr}"] = getattr(spec, attr)
        for mod in list(sys.modules):
            if mod in ("torch", "numpy", "numpy.testing", "builtins", "traceback") or mod.startswith("course_lib"):
                snap[f"sys.modules[{mod!r}]"] = sys.modules[mod]
        try:
            ip = get_ipython()  # noqa: F821 - IPython's builtin
            for name in ("showtraceback", "_showtraceback", "showsyntaxerror", "run_cell", "run_code"):
                snap[f"IPython {name}"] = getattr(type(ip), name, None)
                snap[f"IPython instance {name}"] = ip.__dict__.get(name)
        except NameError:
            pass
        return snap

    def current(key):
        if key.startswith("IPython instance "):
            return get_ipython().__dict__.get(key.rsplit(" ", 1)[1])  # noqa: F821
        if key.startswith("IPython "):
            return getattr(type(get_ipython()), key.rsplit(" ", 1)[1], None)  # noqa: F821
        if key.startswith("sys.modules["):
            return sys.modules.get(key[len("sys.modules['"):-2])
        if key.startswith("spec "):
            spec_id, attr = key[5:].rsplit(".", 1)
            return getattr(registry().get(spec_id), attr, None)
        if key.startswith("builtins."):
            return vars(builtins).get(key[9:])
        owner, _, attr = key.rpartition(".")
        obj = {"torch": torch, "torch.Tensor": torch.Tensor, "numpy": numpy, "numpy.testing": numpy.testing,
               "course_lib.checks": checks}[owner]
        return getattr(obj, attr, None)

    original = snapshot()
    registry, get_spec, run_check = checks.registry, checks.get_spec, checks.run_check
    observe_cases, global_names, topic_module = checks.observe_cases, checks._global_names, checks.topic_module
    CheckFailed, t_save, t_load, realpath = checks.CheckFailed, torch.save, torch.load, os.path.realpath
    import course_lib.config as _config
    current_config = _config.current

    def tampering():
        found = []
        for key, val in original.items():
            try:
                now = current(key)
            except Exception:
                now = None
            if now is not val:
                found.append(f"{key} was replaced")
        return found

    def resolve(dotted):
        parts = dotted.split(".")
        for i in range(len(parts) - 1, 0, -1):
            mod = sys.modules.get(".".join(parts[:i]))
            if mod is None:
                continue
            owner = mod
            try:
                for p in parts[i:-1]:
                    owner = getattr(owner, p)
                return owner, parts[-1], getattr(owner, parts[-1])
            except AttributeError:
                return None
        return None

    def runtime_flags(spec, obj):
        found, names = [], [(f"{spec.module.removesuffix('_checks')}.{spec.id}", "the course's reference")]
        names += [(n, "a library function that does the whole exercise") for n in spec.forbidden]
        ref = spec.reference
        if ref is not None and (obj is ref or getattr(obj, "__code__", None) is getattr(ref, "__code__", 0)):
            found.append(f"your `{spec.id}` is the course's reference itself: implement it yourself.")
        code = getattr(obj, "__code__", None)
        if code is not None:
            values = [getattr(obj, "__globals__", {}).get(n) for n in global_names(code)]
            values += [c.cell_contents for c in (getattr(obj, "__closure__", None) or ()) if c.cell_contents is not None]
            for dotted, what in names:
                hit = resolve(dotted)
                if hit and any(v is hit[2] for v in values if v is not None) and not isinstance(hit[2], type):
                    found.append(f"your `{spec.id}` uses {what}, `{dotted}`, instead of implementing it.")
        return found, names

    class Probe:
        """Swaps the reference and forbidden functions for wrappers that note a call."""

        def __init__(self, names):
            self.names, self.calls, self.undo = names, [], []

        def __enter__(self):
            for dotted, what in self.names:
                hit = resolve(dotted)
                if not hit or isinstance(hit[2], type) or not callable(hit[2]):
                    continue
                owner, attr, fn = hit
                calls = self.calls

                def spy(*a, _fn=fn, _d=dotted, _w=what, _id=self.ex_id, **k):
                    calls.append(f"your `{_id}` called {_w}, `{_d}`, instead of implementing it.")
                    return _fn(*a, **k)

                try:
                    setattr(owner, attr, spy)
                    self.undo.append((owner, attr, fn))
                except Exception:
                    pass
            return self

        def __exit__(self, *exc):
            for owner, attr, fn in reversed(self.undo):
                setattr(owner, attr, fn)

    def safe_save(report, path):
        state["allow"] += 1
        try:
            t_save(report, path)
        finally:
            state["allow"] -= 1

    def collect(ns, ex_id, name, mode, seed, report, cases, extra):
        out = {"id": ex_id, "mode": mode, "flags": [], "extra": []}
        try:
            out["tampering"] = tampering()
            spec = registry()[ex_id]
            obj = ns.get(name, collect)
            if mode == "none":
                pass
            elif obj is collect:
                out["missing"] = True
            else:
                flags, names = runtime_flags(spec, obj) if spec.kind != "answer" else ([], [])
                out["flags"] += flags
                if mode == "grader" and spec.kind != "answer":
                    state["allow"] += 1
                    try:
                        case_list = t_load(os.path.join(folder, cases), weights_only=False) if cases else []
                    finally:
                        state["allow"] -= 1
                    probe = Probe(names)
                    probe.ex_id = ex_id
                    try:  # the hidden cases run where the lesson runs: the GPU when the kernel has one
                        device = current_config().device
                    except Exception:
                        device = None
                    with probe:
                        observed = observe_cases(spec, obj, case_list, device=device)
                    out["flags"] += sorted(set(probe.calls))
                elif mode == "grader":
                    observed = observe_cases(spec, obj)
                if mode == "grader" and observed.get("portable"):
                    out["observed"] = observed
                else:
                    out["mode"] = "kernel"
                    result = run_check(spec, obj, hidden=True, seed=seed)
                    out["result"] = {"passed": bool(result.passed), "message": str(result.message)}
            for stmt in extra:
                try:
                    exec(stmt, ns)
                    out["extra"].append((True, ""))
                except CheckFailed as e:
                    out["extra"].append((False, str(e)))
                except Exception as e:
                    out["extra"].append((False, traceback.format_exception_only(type(e), e)[-1].strip()))
            out["tampering"] = sorted(set(out["tampering"] + tampering()))
        except Exception as e:
            out["error"] = traceback.format_exception_only(type(e), e)[-1].strip()
        out["attempts"] = list(state["attempts"])
        safe_save(out, report)
        print(f"collected {ex_id}: the grader decides the result.")

    def final(ns):
        safe_save({"tampering": tampering(), "attempts": list(state["attempts"])}, @FINAL@)

    return types.SimpleNamespace(collect=collect, final=final)


__autograder__ = __autograder_make_guard__()
del __autograder_make_guard__
'''
