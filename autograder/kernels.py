"""Kernels for grading: one fresh kernel per submission, started early and already warm.

A fresh kernel spends seconds importing torch, torchvision and fastai before a student's
first line runs. Three ways to start kernels (``mode``):

- ``fork`` (the default on Linux): a :mod:`~autograder.forkserver` per grading worker
  imports the lesson's modules once, and each kernel is a fork of it, ready in a fraction
  of a second with the imports done and no CPU spent on them again;
- ``warm``: each kernel is an ordinary process that imports the modules itself, started
  while the previous submission runs; on few cores this hides the import time, it does
  not remove it;
- ``cold``: an ordinary kernel started only when needed (to measure what the others buy).

In every mode a kernel serves exactly one submission and is then shut down: nothing a
student does (monkey-patching a library, filling memory, a background thread) reaches
anyone else.

Every kernel runs under a memory limit (``RLIMIT_DATA``: what it allocates, not the
libraries it maps, so CUDA's address-space reservations still work); a student who
exhausts it gets a ``MemoryError`` or a dead kernel, never a grader killed by the OS.
"""
from __future__ import annotations

import ast
import atexit
import json
import os
import queue
import shutil
import sys
import tempfile
import time
from pathlib import Path

import inspect

from jupyter_client import AsyncKernelManager
from jupyter_core.utils import run_sync
from nbclient import NotebookClient
from nbformat.v4 import new_output
from traitlets import Integer

# Modules worth importing before a submission arrives: the slow ones. A lesson's own
# imports are added by :func:`lesson_imports`.
HEAVY = ("numpy", "matplotlib.pyplot", "torch", "torchvision")

# Sets the memory limit, then becomes the kernel (same pid, so interrupts and the
# kernel's watch on its parent process keep working).
_LIMIT = ("import os, resource, sys; n = int(sys.argv[1]); "
          "resource.setrlimit(resource.RLIMIT_DATA, (n, n)); os.execv(sys.argv[2], sys.argv[2:])")


def lesson_imports(nb) -> list[str]:
    """The modules a notebook imports at top level, in order (``from a.b import c`` gives ``a.b``)."""
    mods: list[str] = []
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        try:
            tree = ast.parse(cell.source)
        except SyntaxError:
            continue
        for node in tree.body:
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names = [node.module]
            else:
                continue
            mods += [n for n in names if n not in mods]
    return mods


def _warm_code(modules) -> str:
    # Runs in the kernel before it answers anyone; leaves no names behind in the
    # student's namespace and never fails (a module that will not import is the
    # student notebook's business, reported when it imports it itself).
    return (
        "def __autograder_warm():\n"
        "    import importlib\n"
        f"    for m in {list(modules)!r}:\n"
        "        try:\n"
        "            importlib.import_module(m)\n"
        "        except BaseException:\n"
        "            pass\n"
        "__autograder_warm()\n"
        "del __autograder_warm\n"
    )


def wait(value):
    """The result of a kernel-manager call, awaited when it is a coroutine (called outside any event loop)."""
    if inspect.isawaitable(value):
        async def _await():
            return await value

        return run_sync(_await)()
    return value


class LimitedKernelManager(AsyncKernelManager):
    """A kernel manager whose kernel runs under ``RLIMIT_DATA`` (bytes; 0 for none).

    Asynchronous, as nbclient expects: with a blocking client, nbclient's wait for output
    blocks its event loop, and a kernel that dies silently is never noticed.
    """

    memory_bytes = 0
    fork_socket: str | None = None  # set: the kernel is forked by this fork server

    def format_kernel_cmd(self, extra_arguments=None):
        cmd = super().format_kernel_cmd(extra_arguments)
        if self.fork_socket:
            from autograder.forkserver import stub_command

            return stub_command(self.fork_socket, self.memory_bytes, cmd)
        if self.memory_bytes and sys.platform.startswith("linux"):
            cmd = [sys.executable, "-c", _LIMIT, str(int(self.memory_bytes))] + cmd
        return cmd


MODES = ("fork", "warm", "cold")


def default_mode() -> str:
    return "fork" if sys.platform.startswith("linux") else "warm"


class WarmPool:
    """Hands out started, warmed kernels, one per submission, and starts the next at once.

    ``env`` is the kernel's whole environment; ``mode`` is one of :data:`MODES`. If the
    fork server cannot start (or refuses, see :mod:`autograder.forkserver`), the pool says
    so once on stderr and goes on in ``warm`` mode.
    """

    def __init__(self, kernel_name: str, env: dict, memory_mb: int = 0, mode: str = "fork"):
        if mode not in MODES:
            raise ValueError(f"kernel mode {mode!r}: choose one of {', '.join(MODES)}")
        self.kernel_name, self.env, self.memory_mb, self.mode = kernel_name, dict(env), memory_mb, mode
        _remove_stale_homes()
        self.home = Path(tempfile.mkdtemp(prefix=f"autograder-kernels-{os.getpid()}-"))
        self._next: AsyncKernelManager | None = None
        self._wanted: tuple | None = None  # modules for the spare kernel, once the current one is ready
        self._server = None
        atexit.register(self.close)

    @property
    def warm(self) -> bool:
        return self.mode != "cold"

    def _fork_server(self, modules, python: str | None = None):
        """This pool's fork server (run by the kernel spec's ``python``), importing ``modules`` too;
        None when forking is off or failed."""
        from autograder.forkserver import ForkServer

        if self.mode != "fork":
            return None
        try:
            if self._server is None or not self._server.alive():
                if self._server is not None:
                    self._server.close()
                self._server = ForkServer(self.home, self.env, modules, python=python)
            else:
                self._server.ensure(modules)
            return self._server
        except Exception as e:
            print(f"[autograder] kernels are started the ordinary way: {e}", file=sys.stderr)
            self.mode, self._server = "warm", None
            return None

    def _start(self, modules) -> AsyncKernelManager:
        km = LimitedKernelManager(kernel_name=self.kernel_name)
        km.memory_bytes = int(self.memory_mb) * 2**20
        # Kernels at once must not share a history database; and the kernel's own log (a warning
        # about unencrypted local TCP for every kernel) is noise in the grader's terminal.
        args = ["--HistoryManager.hist_file=:memory:", "--IPKernelApp.log_level=ERROR"]
        spec_argv = km.kernel_spec.argv if km.kernel_spec else []
        server = self._fork_server(modules, python=spec_argv[0] if spec_argv else None)
        if server is not None:
            km.fork_socket = server.socket_path
            modules = ()  # already imported by the server
        if modules:
            script = self.home / f"warm-{len(list(self.home.iterdir()))}.py"
            script.write_text(_warm_code(modules))
            args.append(f"--IPKernelApp.exec_files={script}")
        # The kernel starts in an empty folder of its own; execute() moves it to the submission's copy.
        cwd = tempfile.mkdtemp(dir=self.home)
        wait(km.start_kernel(extra_arguments=args, env=self.env, cwd=cwd))
        return km

    def take(self, modules=(), spare: bool = True) -> AsyncKernelManager:
        """A started kernel (warmed with ``modules`` when possible). Call :meth:`start_spare`
        once it is ready, so that the next one warms up while this one works (unless ``spare``
        is false: no submission follows)."""
        modules = tuple(dict.fromkeys(HEAVY + tuple(modules))) if self.warm else ()
        km = self._next
        self._next = None
        if km is None or not wait(km.is_alive()):
            if km is not None:
                self._shutdown(km)
            km = self._start(modules)
        self._wanted = modules if (self.warm and spare) else None
        return km

    def start_spare(self) -> None:
        """Start warming the next kernel. Called once the current kernel is ready, so that two
        kernels never import torch at the same time in one worker (on few cores that only
        slows the one a student is waiting for)."""
        wanted, self._wanted = self._wanted, None
        if wanted is not None and self._next is None:
            self._next = self._start(wanted)

    @staticmethod
    def _shutdown(km: AsyncKernelManager) -> None:
        try:
            if km.has_kernel:
                wait(km.shutdown_kernel(now=True))
        except Exception:  # already gone
            pass
        try:
            wait(km.cleanup_resources())
        except Exception:
            pass

    def release(self, km: AsyncKernelManager) -> None:
        """Shut a used kernel down; it never serves another submission."""
        self._shutdown(km)

    def close(self) -> None:
        if self._next is not None:
            self._shutdown(self._next)
            self._next = None
        if self._server is not None:
            self._server.close()
            self._server = None
        shutil.rmtree(self.home, ignore_errors=True)


def _remove_stale_homes() -> None:
    """Remove the folders of pools whose grader was killed (SIGKILL leaves them behind)."""
    if not sys.platform.startswith("linux"):  # no /proc to tell a live grader from a dead one
        return
    for home in Path(tempfile.gettempdir()).glob("autograder-kernels-*-*"):
        pid = home.name.split("-")[2]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(home, ignore_errors=True)


_POOLS: dict = {}


def pool(kernel_name: str, env: dict, memory_mb: int, mode: str = "fork") -> WarmPool:
    """This process's pool for these settings (one per grading worker)."""
    key = (kernel_name, tuple(sorted(env.items())), memory_mb, mode)
    if key not in _POOLS:
        for other in _POOLS.values():  # settings changed: the old pool's spare kernel is of no use
            other.close()
        _POOLS.clear()
        _POOLS[key] = WarmPool(kernel_name, env, memory_mb, mode)
    return _POOLS[key]


def gpu_ids() -> list[str]:
    """The GPUs this grader may use (``CUDA_VISIBLE_DEVICES``, else ``nvidia-smi -L``), without importing torch."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [d.strip() for d in visible.split(",") if d.strip() and d.strip() != "-1"]
    smi = shutil.which("nvidia-smi")
    if not smi:
        return []
    import subprocess

    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=20).stdout
    except Exception:
        return []
    return [str(i) for i, line in enumerate(l for l in out.splitlines() if l.startswith("GPU "))]


def _size(content: dict) -> int:
    """Rough bytes of one output message: its text, data or traceback."""
    if "text" in content:
        return len(content["text"])
    if "data" in content:
        return sum(len(v) if isinstance(v, str) else len(json.dumps(v)) for v in content["data"].values())
    if "traceback" in content:
        return sum(len(line) for line in content["traceback"])
    return 0


class CappedClient(NotebookClient):
    """A notebook client that keeps at most ``output_limit`` bytes of output per cell.

    What comes after the limit is dropped as it arrives, so a cell printing megabytes or
    drawing a giant image costs the grader no memory; a note says where the cut is.
    """

    output_limit = Integer(2_000_000).tag(config=True)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._used: dict[int, int] = {}

    def output(self, outs, msg, display_id, cell_index):
        if self.output_hook_stack[msg["parent_header"].get("msg_id")]:
            return super().output(outs, msg, display_id, cell_index)
        used = self._used.get(cell_index, 0)
        size = _size(msg.get("content", {}))
        if self.output_limit and used + size > self.output_limit:
            if used <= self.output_limit:  # first overflow: keep what fits of a text, leave a note, once
                content = msg.get("content", {})
                if msg.get("msg_type") == "stream" and used < self.output_limit:
                    part = {**content, "text": content.get("text", "")[: self.output_limit - used]}
                    super().output(outs, {**msg, "content": part}, display_id, cell_index)
                outs.append(new_output("stream", name="stderr", text=(
                    f"\n[autograder] output cut: this cell printed more than {self.output_limit / 1e6:g} MB; "
                    "the rest was dropped. Print less (a summary, a few lines, a smaller figure).\n")))
                self._used[cell_index] = self.output_limit + 1
            return None
        self._used[cell_index] = used + size
        return super().output(outs, msg, display_id, cell_index)

    def run_quietly(self, code: str) -> None:
        """Run code that leaves no trace in the notebook or its execution counts."""
        msg_id = self.kc.execute(code, silent=True, store_history=False)
        self._reply(msg_id, self.startup_timeout)

    def responds(self, within: float) -> bool:
        """Whether the kernel answers a trivial request within ``within`` seconds (after an interrupt)."""
        try:
            msg_id = self.kc.execute("", silent=True, store_history=False)
        except Exception:
            return False
        return self._reply(msg_id, within)

    def _reply(self, msg_id: str, within: float) -> bool:
        deadline = time.monotonic() + within
        while (left := deadline - time.monotonic()) > 0:
            try:
                msg = wait(self.kc.get_shell_msg(timeout=left))
            except queue.Empty:
                return False
            if msg.get("parent_header", {}).get("msg_id") == msg_id:
                return True
        return False


def close_all() -> None:
    """Shut down this process's spare kernels (the grader is done)."""
    for p in _POOLS.values():
        p.close()
    _POOLS.clear()
