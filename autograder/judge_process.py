"""The judging process: one exercise of one submission, judged in a sandbox that never ran the notebook.

The grader (:mod:`autograder.judge`) puts ``request.json`` and ``cases.pt`` in a sandbox's private folder and has
a trusted process that already imported the lesson's libraries (the worker's fork server, or a fresh
``python -m autograder.judge_process SANDBOX_JSON``) fork this process. Before any student code runs it:

1. enters the sandbox (:mod:`autograder.sandbox`): its own uid and namespaces, and a copy of ``course_lib``
   shown at ``course_lib``'s own path in which the judged exercise's reference is a stub;
2. hides the reference in memory too: the reference function's code (every method's, for a class) is replaced
   by the stub's, so every route to it (an alias, ``get_spec(id).reference``, a ``functools.partial``, a default
   argument, ``gc``, a frame walk) reaches the stub, and the original code is no longer referenced. The library
   functions the spec forbids are replaced the same way: a tripwire on the function itself, not a scan for names;
3. runs the lesson's setup cell (the course's text, from the source notebook), then only the student's
   definitions (``def``, ``class``, ``import`` and assignments of literal values), no other top-level code;
4. calls the student's object on the cases, each case under a time limit, and writes ``result.pt`` as plain
   data (:func:`course_lib.checks.to_portable`). It decides nothing: the grader validates and judges the data.

A stub or tripwire that is reached appends a line to ``reached.txt`` and raises, so a forbidden call never
returns an answer; the grader flags the exercise. Nothing here is trusted by the grader: a student can rewrite
these files from their own code, but not produce the reference's answers, which exist only in the grader.
"""
from __future__ import annotations

import json
import os
import signal
import sys
import types
from pathlib import Path

REACHED_FILE = "reached.txt"
RESULT_FILE = "result.pt"
REQUEST_FILE = "request.json"
CASES_FILE = "cases.pt"
_JUDGE_MODULE = "__judge__"


# --------------------------------------------------------------------------------- stubs

def _stub_code(nfree: int, message: str, what: str) -> types.CodeType:
    """The code of a function that reports ``what`` and raises, with ``nfree`` free variables, so that it can
    replace the code of a function whose closure has that many cells."""
    names = [f"_f{i}" for i in range(nfree)]
    body = "".join(f"    {n} = None\n" for n in names)
    touch = f"        ({', '.join(names)},)\n" if names else ""
    src = (f"def _make():\n{body}    def stub(*args, **kwargs):\n{touch}"
           f"        getattr(__import__('sys').modules.get({_JUDGE_MODULE!r}), 'reached', lambda w: None)({what!r})\n"
           f"        raise RuntimeError({message!r})\n    return stub\n")
    scope: dict = {}
    exec(compile(src, "<judge stub>", "exec"), scope)
    return scope["_make"]().__code__


def _functions_of(obj) -> list[types.FunctionType]:
    """The Python functions that make up ``obj``: itself, or a class's own methods."""
    if isinstance(obj, types.FunctionType):
        return [obj]
    if isinstance(obj, type):
        found = []
        for val in vars(obj).values():
            val = getattr(val, "__func__", val)  # staticmethod / classmethod
            if isinstance(val, types.FunctionType):
                found.append(val)
            elif isinstance(val, property):
                found += [f for f in (val.fget, val.fset, val.fdel) if isinstance(f, types.FunctionType)]
        return found
    return []


def replace_with_stub(obj, message: str, what: str) -> int:
    """Give every function of ``obj`` the stub's code, in place; how many were replaced."""
    n = 0
    for fn in _functions_of(obj):
        fn.__code__ = _stub_code(len(fn.__code__.co_freevars), message, what)
        n += 1
    return n


def _resolve(dotted: str):
    """(owner, attribute name, object) for a dotted name, importing modules as needed; None if absent."""
    import importlib

    parts = dotted.split(".")
    for i in range(len(parts) - 1, 0, -1):
        try:
            owner = importlib.import_module(".".join(parts[:i]))
        except Exception:
            continue
        try:
            for p in parts[i:-1]:
                owner = getattr(owner, p)
            return owner, parts[-1], getattr(owner, parts[-1])
        except AttributeError:
            return None
    return None


def trip(dotted: str, ex_id: str) -> None:
    """Make the library function ``dotted`` unusable in this process: reaching it reports and raises."""
    hit = _resolve(dotted)
    if hit is None:
        return
    owner, attr, obj = hit
    message = (f"`{dotted}` does the whole of `{ex_id}`: it is not available while `{ex_id}` is judged. "
               "Write it yourself.")
    what = f"forbidden {dotted}"
    if isinstance(obj, type):
        from torch import nn

        if issubclass(obj, nn.Module):
            obj = obj.forward  # a loss module: what computes the answer is its forward
    if replace_with_stub(obj, message, what):
        return
    # A builtin (C) function cannot change its code: replace the name where the library keeps it.
    stub = types.FunctionType(_stub_code(0, message, what), {"__builtins__": __builtins__}, attr)
    try:
        setattr(owner, attr, stub)
    except (AttributeError, TypeError):
        pass


def hide_reference(ex_id: str, topic: str) -> None:
    """Replace the reference of ``ex_id`` in the already imported ``topic`` module (if it is) by the stub."""
    mod = sys.modules.get(topic)
    obj = getattr(mod, ex_id, None) if mod is not None else None
    if obj is None:
        return
    message = (f"the course's reference `{ex_id}` is not available while your `{ex_id}` is judged: "
               "implement it yourself.")
    replace_with_stub(obj, message, f"reference {ex_id}")
    try:
        obj.__course_stub__ = True
    except (AttributeError, TypeError):
        pass


def stub_source(name: str, is_class: bool, ex_id: str) -> str:
    """What replaces the reference's definition in the copy of its module the judging process sees."""
    message = (f"the course's reference `{ex_id}` is not available while your `{ex_id}` is judged: "
               "implement it yourself.")
    call = f"getattr(__import__('sys').modules.get({_JUDGE_MODULE!r}), 'reached', lambda w: None)('reference {ex_id}')"
    if is_class:
        return (f"class {name}:\n    __course_stub__ = True\n\n    def __init__(self, *args, **kwargs):\n"
                f"        {call}\n        raise RuntimeError({message!r})\n\n"
                f"    def __init_subclass__(cls, **kwargs):\n        {call}\n        raise RuntimeError({message!r})\n")
    return (f"def {name}(*args, **kwargs):\n    {call}\n    raise RuntimeError({message!r})\n\n\n"
            f"{name}.__course_stub__ = True\n")


# ------------------------------------------------------------------------------ the child

class _Reporter(types.ModuleType):
    """``sys.modules['__judge__']``: what stubs and tripwires call when reached."""

    def __init__(self, path: Path):
        super().__init__(_JUDGE_MODULE)
        self._path = str(path)

    def reached(self, what: str) -> None:
        try:
            fd = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, (str(what)[:200].replace("\n", " ") + "\n").encode())
            finally:
                os.close(fd)
        except OSError:
            pass


PROGRESS_FILE = "progress"


def _alarm_guard(limits: list[float], progress: Path):
    """A context manager per case: CaseTimeout is raised into the student's code past the case's limit."""
    import contextlib

    from course_lib.checks import CaseTimeout

    def on_alarm(signum, frame):
        raise CaseTimeout("ran past its time limit")

    # CPU time, not wall time: on a busy grading machine an honest case is slowed, not stopped.
    signal.signal(signal.SIGPROF, on_alarm)

    @contextlib.contextmanager
    def guard(i: int):
        # The grader watches this file: a case that outlives its limit (its code swallowed the signal, or it
        # waits without using CPU) is killed from outside.
        progress.write_text(f"{i}\n")
        signal.setitimer(signal.ITIMER_PROF, float(limits[min(i, len(limits) - 1)]) if limits else 10.0)
        try:
            yield
        finally:
            signal.setitimer(signal.ITIMER_PROF, 0)

    return guard


def _load(statements, ns: dict) -> list[str]:
    """Run each (cell, line, source) statement in ``ns``; the problems, one line each."""
    problems = []
    for cell, line, src in statements:
        try:
            exec(compile(src, f"<cell {cell}>", "exec"), ns)
        except BaseException as e:  # a broken import or a raising decorator costs only what depends on it
            first = (str(e).splitlines() or [""])[0][:160]
            problems.append(f"cell {cell}, line {line}: {type(e).__name__}: {first}")
    return problems


def run(private: Path) -> dict:
    """Judge-side work in the sandbox (see the module docstring); returns what was written to result.pt."""
    import torch

    req = json.loads((private / REQUEST_FILE).read_text())
    sys.modules[_JUDGE_MODULE] = _Reporter(private / REACHED_FILE)
    import linecache

    linecache.clearcache()  # the zygote may have cached the real module's source
    ex_id = req["exercise"]
    hide_reference(ex_id, req["topic"])
    for dotted in req.get("forbidden", []):
        trip(dotted, ex_id)

    import course_lib.checks
    from course_lib.checks import get_spec, observe_cases, to_portable

    # The zygote listed the specs of the course it saw; the sandbox shows the course as the grader sees it now
    # (a lesson added since, a course_lib folder of its own): list them again.
    course_lib.checks._registry = None
    spec = get_spec(ex_id)
    ns: dict = {"__name__": "__main__", "__builtins__": __builtins__}
    problems = _load([(req.get("setup_cell", 0), 1, req["setup"])], ns) if req.get("setup") else []
    problems = [f"the lesson's setup: {p}" for p in problems]
    problems += _load(req["statements"], ns)
    name = req["name"]
    result: dict = {"problems": problems[:20]}
    if name not in ns:
        result["missing"] = True
    else:
        cases = torch.load(private / CASES_FILE, weights_only=False)
        device = torch.device(req.get("device") or "cpu")
        if device.type == "cuda" and not torch.cuda.is_available():
            device = torch.device("cpu")
        guard = _alarm_guard(req.get("limits") or [], private / PROGRESS_FILE)
        observed = observe_cases(spec, ns[name], cases, device=device, guard=guard)
        try:
            result["observed"] = to_portable(observed)
        except Exception as e:
            result["observed"] = {"portable": False, "why": f"{type(e).__name__}: {e}"[:200]}
    torch.save(result, private / RESULT_FILE)
    return result


def child(sandbox: dict, private: str, env: dict | None = None) -> None:
    """Enter the sandbox and judge; for a process forked from a trusted server. Never returns."""
    code = 1
    try:
        from autograder.sandbox import Sandbox

        # Nothing of the server's must reach the student: stdin empty, output to a file in the private folder.
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        if sandbox.get("unsandboxed"):  # --no-sandbox: a process of its own, capped where the OS allows
            import resource

            if sandbox.get("memory_bytes"):
                resource.setrlimit(resource.RLIMIT_DATA, (sandbox["memory_bytes"],) * 2)
        else:
            Sandbox.from_spec(sandbox).enter()
        log = os.open(os.path.join(private, "judge.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(log)
        if env is not None:
            os.environ.clear()
            os.environ.update(env)
        os.chdir(private)
        run(Path(private))
        code = 0
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


HEAVY = ("numpy", "torch", "torchvision", "matplotlib", "PIL.Image", "pandas", "fastai.vision.all")


def preload(modules=()) -> None:
    """What a zygote imports before forking judging processes: the libraries, and the whole course library."""
    import importlib

    os.environ.setdefault("MPLBACKEND", "Agg")
    os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
    for m in (*HEAVY, *modules, "course_lib", "course_lib.checks"):
        try:
            importlib.import_module(m)
        except BaseException:
            pass
    try:
        from course_lib.checks import registry

        registry()
    except BaseException:
        pass


def serve(modules) -> None:
    """A zygote for one grading worker: import once, then fork one judging process per request.

    Requests are JSON lines on stdin (``{"sandbox": ..., "env": ...}``); for each, a line ``{"pid": PID}``
    once forked and ``{"pid": PID, "status": WAITSTATUS}`` once it has ended, on stdout. Only the grader
    holds these pipes: sandboxed processes cannot reach them (their fds are closed by the sandbox). It dies
    with the grader (PDEATHSIG) and never holds a secret: hidden cases are read by each child from its own
    folder, after the fork."""
    import ctypes

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    except Exception:
        pass
    preload(modules)
    out = os.fdopen(os.dup(1), "w", buffering=1)
    for line in sys.stdin:
        try:
            req = json.loads(line)
            pid = os.fork()
        except Exception as e:
            out.write(json.dumps({"error": f"{type(e).__name__}: {e}"}) + "\n")
            continue
        if pid == 0:
            out.close()
            child(req["sandbox"], req["sandbox"]["private"], req.get("env"))
        out.write(json.dumps({"pid": pid}) + "\n")
        _, status = os.waitpid(pid, 0)
        out.write(json.dumps({"pid": pid, "status": status}) + "\n")


if __name__ == "__main__":
    if sys.argv[1] == "--serve":  # python -m autograder.judge_process --serve MODULES_JSON
        serve(json.loads(sys.argv[2]))
    else:  # python -m autograder.judge_process SPEC_JSON: a one-off zygote for one judging process
        spec = json.loads(sys.argv[1])
        preload(spec.get("modules", ()))
        child(spec["sandbox"], spec["sandbox"]["private"], spec.get("env"))
