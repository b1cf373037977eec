"""Kernels for grading: one fresh, sandboxed kernel per submission, started early and already warm.

The student's notebook runs in a Jupyter kernel to fill the feedback page (and to train what
the lesson trains); nothing it prints decides a grade. The kernel runs the student's code,
so it is confined: each kernel serves exactly one submission, inside a
:class:`~autograder.sandbox.Sandbox` of its own (its own uid, pid, net, ipc and mount
namespaces, a read-only view of the Python install and the course, a private writable
folder, a memory cap), and when the submission is done every process it started is killed
and its folder removed. Nothing a student does (monkey-patching a library, filling memory,
a background process, reading another submission) reaches anyone else or the grader.

A fresh kernel spends seconds importing torch, torchvision and fastai before a student's
first line runs. Three ways to start kernels (``mode``):

- ``fork`` (the default on Linux): a :mod:`~autograder.forkserver` per grading worker
  imports the lesson's modules once, and each kernel is a fork of it that enters its
  sandbox, ready in a fraction of a second with the imports done;
- ``warm``: each kernel is an ordinary process that imports the modules itself, started
  (inside its sandbox) while the previous submission runs; on few cores this hides the
  import time, it does not remove it;
- ``cold``: an ordinary kernel started only when needed (to measure what the others buy).

The grader talks to a sandboxed kernel over ZMQ ``ipc`` sockets in the kernel's private
folder (it has no network), and the connection file lies there too.

Memory: the sandbox's cgroup caps what the kernel and its children use, shared memory
included (where no cgroup can be made, the sandbox sets ``RLIMIT_AS``). An unsandboxed kernel
(``--no-sandbox``) runs under ``RLIMIT_DATA``: what it allocates, not the libraries it maps, so
CUDA's address-space reservations still work. A student who exhausts the cap gets a
``MemoryError`` or a killed kernel, reported as ``out_of_memory``, never a grader killed by the OS.

How a caller runs a submission (the working copy IS the kernel's private folder)::

    km = pool.take(opts, warm_modules)          # a started kernel in its sandbox
    (km.folder / "data.csv").write_bytes(...)   # the files the notebook reads
    run = pool.execute(nb, km.folder, opts, kernel=km, cell_limits={3: 40.0})
    ...                                         # read what the run left in km.folder (see read_file)
    pool.release(km)                            # kernel, its processes and km.folder are gone

or, when nothing needs to be read back, ``pool.execute(nb, workdir, opts)``, which copies
``workdir`` into a kernel's folder, runs and releases.
"""
from __future__ import annotations

import ast
import atexit
import inspect
import itertools
import json
import os
import queue
import shutil
import stat
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, cast

import nbformat
from jupyter_client import AsyncKernelManager
from jupyter_core.utils import run_sync
from nbclient import NotebookClient
from nbformat.v4 import new_output
from traitlets import Integer

if TYPE_CHECKING:
    from jupyter_client.asynchronous import AsyncKernelClient

    from autograder.forkserver import ForkServer

# Modules worth importing before a submission arrives: the slow ones. A lesson's own
# imports are added by :func:`lesson_imports`.
HEAVY = ("numpy", "matplotlib.pyplot", "torch", "torchvision")

KERNEL_NAME = "vision-workbook"

# Sets the memory limit, then becomes the kernel (same pid, so interrupts and the
# kernel's watch on its parent process keep working).
_LIMIT = ("import os, resource, sys; n = int(sys.argv[1]); "
          "resource.setrlimit(resource.RLIMIT_DATA, (n, n)); os.execv(sys.argv[2], sys.argv[2:])")

NO_SANDBOX = ("kernels cannot be sandboxed here ({why}); run the grader as root on Linux with namespaces, "
              "or pass --no-sandbox to run students' notebooks unconfined (only for code you trust)")


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


# ------------------------------------------------------------------------------ sandboxes

def sandbox_check() -> None:
    """Raise a RuntimeError naming ``--no-sandbox`` when kernels cannot be sandboxed here."""
    try:
        from autograder import sandbox
    except Exception as e:
        raise RuntimeError(NO_SANDBOX.format(why=f"autograder.sandbox does not load: {e}")) from e
    ok, why = sandbox.available()
    if not ok:
        raise RuntimeError(NO_SANDBOX.format(why=why))


_BOXES = itertools.count()


def _boxes_root(make: bool = True) -> Path:
    """The folder of this process's sandboxes' private folders: short (AF_UNIX paths in it must fit
    in 107 bytes), root's, and not the pool's home (where the fork server's socket lies)."""
    root = Path("/tmp" if os.path.isdir("/tmp") else tempfile.gettempdir()) / f"vwb-{os.getpid()}"
    if make:
        root.mkdir(mode=0o711, exist_ok=True)
    return root


def _interpreter_home(python: str | None) -> list[str]:
    """The install of the kernel spec's interpreter (when it is not the grader's), to show in its sandbox;
    never a folder that holds the repository (solutions/, autograder/, .git)."""
    if not python:
        return []
    home = Path(python).resolve().parent.parent
    repo = Path(__file__).resolve().parent.parent
    if home == repo or home in repo.parents or str(home) == "/":
        return []
    return [str(home)]


def _new_sandbox(memory_bytes: int, python: str | None = None):
    """A prepared sandbox for one kernel: its own uid, cgroup (memory capped at ``memory_bytes``;
    ``RLIMIT_AS`` where no cgroup can) and private folder."""
    from autograder.sandbox import Sandbox, default_readonly

    readonly = tuple(dict.fromkeys(default_readonly() + _interpreter_home(python)))
    sb = Sandbox(private=_boxes_root() / f"k{next(_BOXES)}", memory_bytes=memory_bytes, readonly=readonly)
    sb.prepare()
    return sb


def _launcher_command(sb, argv: list[str], cwd: Path) -> list[str]:
    """``argv`` run inside ``sb`` by the sandbox's launcher (what ``Sandbox.spawn`` runs), as a kernel
    command jupyter_client can launch, watch and signal: the relay it starts forwards SIGINT to the
    kernel and exits the way the kernel did."""
    spec = {**sb.to_spec(), "cwd": str(cwd), "keep_fds": [], "parent": os.getpid()}
    repo = str(Path(__file__).resolve().parent.parent)
    boot = f"import sys; sys.path.insert(0, {repo!r}); from autograder.sandbox import main; main()"
    return [sys.executable, "-I", "-c", boot, json.dumps(spec), "--", *argv]


def _uid(sb) -> tuple[int, int]:
    return sb.uid, sb.uid


class LimitedKernelManager(AsyncKernelManager):
    """A kernel manager whose kernel runs in a sandbox (``sandbox``) or under ``RLIMIT_DATA``
    (``memory_bytes``; 0 for none).

    Asynchronous, as nbclient expects: with a blocking client, nbclient's wait for output
    blocks its event loop, and a kernel that dies silently is never noticed.

    ``folder`` is the kernel's working folder: with a sandbox, its private folder (the only
    place it can write); without, a temporary folder of the pool's.
    """

    memory_bytes = 0
    fork_socket: str | None = None  # set: the kernel is forked by this fork server
    sandbox = None  # an autograder.sandbox.Sandbox, prepared
    folder: Path | None = None
    pool: WarmPool | None = None  # the pool that started it (and starts the next one)
    handed_over = False  # its folder's files were given to the sandbox's uid

    def format_kernel_cmd(self, extra_arguments=None):
        cmd = super().format_kernel_cmd(extra_arguments)
        if self.fork_socket:
            from autograder.forkserver import stub_command

            box = self.sandbox.to_spec() if self.sandbox is not None else None
            return stub_command(self.fork_socket, self.memory_bytes, cmd, sandbox=box)
        if self.memory_bytes and sys.platform.startswith("linux"):
            cmd = [sys.executable, "-c", _LIMIT, str(int(self.memory_bytes))] + cmd
        if self.sandbox is not None:
            cmd = _launcher_command(self.sandbox, cmd, self.folder)
        return cmd

    def write_connection_file(self, **kwargs):
        super().write_connection_file(**kwargs)
        if self.sandbox is not None:  # the kernel reads it as its own uid
            os.chown(self.connection_file, *_uid(self.sandbox))


MODES = ("fork", "warm", "cold")


def default_mode() -> str:
    return "fork" if sys.platform.startswith("linux") else "warm"


class WarmPool:
    """Hands out started, warmed kernels, one per submission, and starts the next at once.

    ``env`` is the kernel's whole environment; ``mode`` is one of :data:`MODES`; with
    ``sandbox`` each kernel runs in a sandbox of its own (a RuntimeError naming
    ``--no-sandbox`` when none can be made here). If the fork server cannot start (or refuses,
    see :mod:`autograder.forkserver`), the pool says so once on stderr and goes on in ``warm``
    mode.
    """

    def __init__(self, kernel_name: str, env: dict, memory_mb: int = 0, mode: str = "fork", sandbox: bool = False):
        if mode not in MODES:
            raise ValueError(f"kernel mode {mode!r}: choose one of {', '.join(MODES)}")
        if sandbox:
            sandbox_check()
        self.kernel_name, self.env, self.memory_mb, self.mode = kernel_name, dict(env), memory_mb, mode
        self.sandboxed = sandbox
        _remove_stale_homes()
        # Root's only (mkdtemp makes it 0700) and never bound into a sandbox: the fork server's socket is here.
        self.home = Path(tempfile.mkdtemp(prefix=f"autograder-kernels-{os.getpid()}-"))
        self._next: LimitedKernelManager | None = None
        self._wanted: tuple | None = None  # modules for the spare kernel, once the current one is ready
        self._server: ForkServer | None = None
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

    def _start(self, modules) -> LimitedKernelManager:
        km = LimitedKernelManager(kernel_name=self.kernel_name)
        km.pool = self
        memory = int(self.memory_mb) * 2**20
        env = dict(self.env)
        # Kernels at once must not share a history database; and the kernel's own log (a warning
        # about unencrypted local TCP for every kernel) is noise in the grader's terminal.
        args = ["--HistoryManager.hist_file=:memory:", "--IPKernelApp.log_level=ERROR"]
        spec_argv = km.kernel_spec.argv if km.kernel_spec else []
        if self.sandboxed:
            # Inside, the kernel's parent is outside its pid namespace: ipykernel would take that for its
            # parent having died. The sandbox kills the kernel when the grader goes.
            args.append("--IPKernelApp.parent_handle=1")
            # The sandbox caps memory itself (its cgroup; RLIMIT_AS where there is none).
            sb = _new_sandbox(memory, spec_argv[0] if spec_argv else None)
            km.sandbox, km.folder, km.memory_bytes = sb, Path(sb.private), 0
            # No network in there: the kernel's sockets are files in its private folder (in a hidden
            # folder, out of the student's way), with short names: AF_UNIX paths stop at 107 bytes.
            sockets = km.folder / ".kernel"
            sockets.mkdir()
            os.chown(sockets, *_uid(sb))
            km.transport, km.connection_file, km.ip = "ipc", str(sockets / "k.json"), str(sockets / "k")
            # HOME and TMPDIR as the sandbox sets them (a forked kernel gets this environment after entering
            # it): the grader's home is not in there. The torch weight cache is shown read-only where the
            # grader has it, and IPython's and matplotlib's own files go to the small /tmp tmpfs.
            cache = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
            env.setdefault("TORCH_HOME", os.path.join(cache, "torch"))
            env.update(HOME=str(km.folder), TMPDIR="/tmp", IPYTHONDIR="/tmp/.ipython",
                       MPLCONFIGDIR="/tmp/.matplotlib")
        else:
            km.memory_bytes = memory
            km.folder = Path(tempfile.mkdtemp(dir=self.home))
        server = self._fork_server(modules, python=spec_argv[0] if spec_argv else None)
        if server is not None:
            km.fork_socket = server.socket_path
            modules = ()  # already imported by the server
        if modules:
            # Lines, not a file: a sandboxed kernel sees none of the pool's files.
            args.append(f"--IPKernelApp.exec_lines={json.dumps([_warm_code(modules)])}")
        try:
            wait(km.start_kernel(extra_arguments=args, env=env, cwd=str(km.folder)))
        except BaseException:
            self._shutdown(km)
            raise
        return km

    def take(self, modules=(), spare: bool = True) -> LimitedKernelManager:
        """A started kernel (warmed with ``modules`` when possible); ``km.folder`` is its working
        folder, ``km.sandbox`` its sandbox (None when unsandboxed). Call :meth:`start_spare` once
        it is ready, so that the next one warms up while this one works (unless ``spare`` is
        false: no submission follows)."""
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
    def _shutdown(km: LimitedKernelManager) -> None:
        try:
            if km.has_kernel:
                wait(km.shutdown_kernel(now=True))
        except Exception:  # already gone
            pass
        try:
            wait(km.cleanup_resources())
        except Exception:
            pass
        if km.sandbox is not None:
            # Whatever the kernel started (a background process, a daemon in a new session) dies
            # here, and its folder goes.
            km.sandbox.close()
        elif km.folder is not None:
            shutil.rmtree(km.folder, ignore_errors=True)

    def release(self, km: LimitedKernelManager) -> None:
        """Shut a used kernel down: it never serves another submission; with a sandbox, every process
        it started is killed and its folder removed."""
        self._shutdown(km)

    def close(self) -> None:
        if self._next is not None:
            self._shutdown(self._next)
            self._next = None
        if self._server is not None:
            self._server.close()
            self._server = None
        shutil.rmtree(self.home, ignore_errors=True)
        try:
            _boxes_root(make=False).rmdir()  # once no pool of this process has a sandbox left
        except OSError:
            pass


def _remove_stale_homes() -> None:
    """Remove the folders of pools whose grader was killed (SIGKILL leaves them behind)."""
    if not sys.platform.startswith("linux"):  # no /proc to tell a live grader from a dead one
        return
    found = [(h, h.name.split("-")[2]) for h in Path(tempfile.gettempdir()).glob("autograder-kernels-*-*")]
    found += [(h, h.name.split("-")[1]) for h in Path("/tmp").glob("vwb-*") if h.name.count("-") == 1]
    for home, pid in found:
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(home, ignore_errors=True)


_POOLS: dict = {}


def pool(kernel_name: str, env: dict, memory_mb: int, mode: str = "fork", sandbox: bool = False) -> WarmPool:
    """This process's pool for these settings (one per grading worker)."""
    key = (kernel_name, tuple(sorted(env.items())), memory_mb, mode, sandbox)
    if key not in _POOLS:
        for other in _POOLS.values():  # settings changed: the old pool's spare kernel is of no use
            other.close()
        _POOLS.clear()
        _POOLS[key] = WarmPool(kernel_name, env, memory_mb, mode, sandbox=sandbox)
    return _POOLS[key]


def pool_for(opts) -> WarmPool:
    """This process's pool for a run with ``opts`` (a :class:`autograder.grade.Options`)."""
    return pool(kernel_name(opts.kernel_name), kernel_env(opts), opts.memory_mb, opts.kernels,
                sandbox=getattr(opts, "sandbox", True))


def take(opts, warm_modules=()) -> LimitedKernelManager:
    """A started kernel for one submission run with ``opts``; ``km.folder`` is the folder the notebook
    will run in (the sandbox's private folder): put the files it reads there, then :func:`execute`
    with ``kernel=km``, and :func:`release` it when done. The pool's next kernel warms with
    ``warm_modules`` (unless ``opts.last``)."""
    return pool_for(opts).take(warm_modules, spare=not opts.last)


def release(km: LimitedKernelManager) -> None:
    """Shut down a kernel from :func:`take`: with a sandbox, its processes are killed and its folder removed."""
    WarmPool._shutdown(km)


def read_file(km: LimitedKernelManager, name: str, limit: int = 256 * 2**20) -> bytes | None:
    """The bytes of ``name`` (a path relative to ``km.folder``) as the kernel left it, without following
    any link the student made (a link to /etc/shadow reads as nothing); None when it is missing, not a
    regular file, or longer than ``limit``."""
    parts = [p for p in Path(name).parts if p not in ("", ".")]
    if not parts or ".." in parts or Path(name).is_absolute():
        return None
    assert km.folder is not None  # every kernel from take() has its folder
    fd = os.open(km.folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        for part in parts[:-1]:
            nxt = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = nxt
        f = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=fd)
    except OSError:
        return None
    finally:
        os.close(fd)
    with os.fdopen(f, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
            return None
        data = fh.read(limit + 1)
    return data if len(data) <= limit else None


def _hand_over(km: LimitedKernelManager) -> None:
    """Give the sandbox's uid what the grader put in its folder, once, before the first cell.

    Through directory descriptors, never following a link: even if something in the folder were
    the student's, no chown could be steered outside it.
    """
    if km.sandbox is None or km.handed_over:
        return
    km.handed_over = True
    uid, gid = _uid(km.sandbox)
    for _top, dirs, files, dirfd in os.fwalk(km.folder, follow_symlinks=False):
        for name in dirs + files:
            if os.stat(name, dir_fd=dirfd, follow_symlinks=False).st_uid != uid:
                os.chown(name, uid, gid, dir_fd=dirfd, follow_symlinks=False)


def _copy_into(src: Path, dst: Path) -> None:
    """Copy the files and folders of ``src`` into ``dst`` (links are not followed, nor copied)."""
    for item in Path(src).iterdir():
        if item.is_symlink():
            continue
        if item.is_dir():
            shutil.copytree(item, dst / item.name, symlinks=True, dirs_exist_ok=True,
                            ignore=lambda d, names: [n for n in names if os.path.islink(os.path.join(d, n))])
        elif item.is_file():
            shutil.copy2(item, dst / item.name)


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
    return [str(i) for i, line in enumerate(ln for ln in out.splitlines() if ln.startswith("GPU "))]


# ------------------------------------------------------------------------------ the client

def _size(content: dict) -> int:
    """Rough bytes of one output message: its text, data or traceback."""
    if "text" in content:
        return len(content["text"])
    if "data" in content:
        return sum(len(v) if isinstance(v, str) else len(json.dumps(v)) for v in content["data"].values())
    if "traceback" in content:
        return sum(len(line) for line in content["traceback"]) + len(str(content.get("evalue", "")))
    return 0


def _comm_size(msg: dict) -> int:
    """Bytes of a widget comm message as nbclient keeps it: its data, and its binary buffers in base64."""
    try:
        data = len(json.dumps(msg.get("content", {}).get("data", {})))
    except (TypeError, ValueError):
        data = 0
    return data + sum(4 * ((len(b) + 2) // 3) for b in msg.get("buffers") or ())


_COUNTED = ("stream", "display_data", "execute_result", "error", "update_display_data")


class CappedClient(NotebookClient):
    """A notebook client that keeps at most ``output_limit`` bytes of output per cell, and at most
    ``output_budget`` bytes over the whole notebook.

    What comes after a limit is dropped as it arrives, so a cell printing megabytes or drawing
    a giant image costs the grader no memory; a note says where the cut is. The budget counts
    everything the client would keep: outputs, display updates (which nbclient applies apart
    from outputs) and widget comm traffic (whose state and buffers nbclient keeps); past it,
    outputs, updates and widget messages are dropped, except a short line per cell for an error.
    """

    output_limit = Integer(2_000_000).tag(config=True)
    output_budget = Integer(20_000_000).tag(config=True)

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._used: dict[int, int] = {}
        self.total = 0  # bytes counted against the budget, dropped ones excluded
        self._spent = False
        self._errors_kept: set[int] = set()

    def process_message(self, msg, cell, cell_index):
        msg_type = msg.get("msg_type", "")
        if self.output_budget and (msg_type in _COUNTED or msg_type.startswith("comm")):
            size = _comm_size(msg) if msg_type.startswith("comm") else _size(msg.get("content", {}))
            if self._spent or self.total + size > self.output_budget:
                self._over_budget(msg, cell, cell_index)
                return None
            self.total += size
        return super().process_message(msg, cell, cell_index)

    def _over_budget(self, msg, cell, cell_index) -> None:
        if not self._spent:
            self._spent = True
            cell.outputs.append(new_output("stream", name="stderr", text=(
                f"\n[autograder] output cut: this notebook sent more than {self.output_budget / 1e6:g} MB of output "
                "(text, images, display updates, widgets); everything after this was dropped.\n")))
        content = msg.get("content", {})
        if msg.get("msg_type") == "error" and cell_index not in self._errors_kept:
            # What went wrong still shows, without its traceback.
            self._errors_kept.add(cell_index)
            cell.outputs.append(new_output("error", ename=str(content.get("ename", ""))[:200],
                                           evalue=str(content.get("evalue", ""))[:1000], traceback=[]))

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

    def _client(self) -> AsyncKernelClient:
        """The kernel client while the kernel is set up: nbclient makes an AsyncKernelClient, and types it loosely."""
        assert self.kc is not None, "the kernel is not set up"
        return cast("AsyncKernelClient", self.kc)

    def run_quietly(self, code: str) -> None:
        """Run code that leaves no trace in the notebook or its execution counts."""
        msg_id = self._client().execute(code, silent=True, store_history=False)
        self._reply(msg_id, self.startup_timeout)

    def responds(self, within: float) -> bool:
        """Whether the kernel answers a trivial request within ``within`` seconds (after an interrupt)."""
        try:
            msg_id = self._client().execute("", silent=True, store_history=False)
        except Exception:
            return False
        return self._reply(msg_id, within)

    def _reply(self, msg_id: str, within: float) -> bool:
        deadline = time.monotonic() + within
        while (left := deadline - time.monotonic()) > 0:
            try:
                msg = wait(self._client().get_shell_msg(timeout=left))
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


# ------------------------------------------------------------------------------- execute

def kernel_name(preferred: str | None = None) -> str:
    """The course's kernel if it is registered, else the Python that runs the grader."""
    from jupyter_client.kernelspec import KernelSpecManager

    names = KernelSpecManager().find_kernel_specs()
    for name in (preferred, KERNEL_NAME):
        if name and name in names:
            return name
    return "python3"


@dataclass
class Execution:
    status: str = "ok"  # ok | timeout | kernel_died | out_of_memory
    failed_at: int | None = None  # index of the cell where execution stopped
    seconds: float = 0.0  # running the notebook's cells, kernel start excluded
    wait: float = 0.0  # waiting for a ready kernel before the first cell
    detail: str = ""  # what happened, for the class report
    output_bytes: int = 0  # output counted against the notebook's output budget


# What of the grader's environment a kernel or judging process may see: what the course, the math libraries,
# CUDA and Jupyter need. Anything else (a token, a cloud key, the instructor's own settings) stays with the grader.
ENV_NAMES = frozenset({"PATH", "LANG", "LANGUAGE", "TZ", "TERM", "LD_LIBRARY_PATH", "VIRTUAL_ENV", "PYTHONHASHSEED",
                       "KMP_DUPLICATE_LIB_OK", "MPLBACKEND"})
ENV_PREFIXES = ("COURSE_", "OMP_", "MKL_", "OPENBLAS_", "CUDA_", "NVIDIA_", "PYTORCH_", "TORCH_", "LC_", "JPY_")


def kernel_env(opts) -> dict:
    """The whole environment of a grading kernel (and of the processes that fork kernels and judges).

    Only the names in :data:`ENV_NAMES` and :data:`ENV_PREFIXES` pass from the grader's environment, so no
    secret of the grader's reaches a student's process. pytest renames PYTEST_CURRENT_TEST for every test; it
    is not passed, so the kernel environment (a pool's key) stays the same."""
    env = {k: v for k, v in os.environ.items() if k in ENV_NAMES or k.startswith(ENV_PREFIXES)}
    env.pop("COURSE_STUDENT", None)  # the instructor's own identity is nobody's target
    return {**env, "COURSE_PROFILE": opts.profile, "COURSE_GRADING": "1",
            **_thread_env(opts.threads), **opts.extra_env}


def _thread_env(threads: int | None) -> dict:
    """Cap each kernel's math threads. Two kernels each spinning two OpenMP threads on two
    cores run several times slower than two kernels with one thread each."""
    if not threads:
        return {}
    return {name: str(threads) for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}


def _signal_name(code) -> str:
    import signal

    if code is None:
        return "unknown cause"
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"


def _not_run(nb, cells, why: str) -> None:
    """Leave one note in each of ``cells`` (indices) saying why the grader did not run it."""
    for index in cells:
        nb.cells[index].outputs = [new_output("stream", name="stderr", text=f"[autograder] {why}; "
                                                                              "this cell was not run by the grader.\n")]
        nb.cells[index].execution_count = None


def execute(nb: nbformat.NotebookNode, workdir: Path | None, opts, warm_modules=(), *,
            kernel: LimitedKernelManager | None = None, cell_limits: dict[int, float] | None = None) -> Execution:
    """Run every code cell in a fresh kernel; errors do not stop the run.

    Where: with ``kernel`` (from :func:`take`), in ``kernel.folder``, where the caller has put the
    files the notebook reads; the caller reads what it needs from there, then :func:`release`\\ s
    the kernel (``workdir`` is then None or ``kernel.folder``). Without, a kernel comes from this
    process's pool (started early, ``warm_modules`` imported) and is released at the end: in a
    sandbox the contents of ``workdir`` are copied into the kernel's folder first and nothing
    comes back; unsandboxed (``opts.sandbox`` false) the notebook runs in ``workdir`` itself.
    Files in the kernel's folder are handed to the sandbox's uid before the first cell.

    Limits: each cell may run ``cell_limits[index]`` seconds where given, else ``opts.cell_timeout``
    (300 when unset), and never more than what is left of ``opts.time_budget`` (seconds for all
    the notebook's cells, the kernel's start excluded; None: no budget). A cell over its limit is
    interrupted and marked, and the run goes on (a kernel that ignores the interrupt is stopped;
    the rest counts as not run);
    once the budget is spent the remaining cells are not run, each saying so, and the status is
    ``timeout``. A dead kernel ends the run, and the cells after it count as not run. Each cell
    keeps at most ``opts.output_limit`` bytes of output and the notebook ``opts.output_budget``
    (see :class:`CappedClient`). A kernel that ran out of memory (its cgroup says so, a cell
    raised ``MemoryError``, or it was killed for it) gives ``out_of_memory``.
    """
    from nbclient.exceptions import CellTimeoutError, DeadKernelError

    limit = opts.cell_timeout or 300
    budget = getattr(opts, "time_budget", None)
    cell_limits = cell_limits or {}
    result, t0 = Execution(), time.perf_counter()
    own = kernel is None
    pool_: WarmPool | None
    if kernel is None:
        pool_ = pool_for(opts)
        km = pool_.take(warm_modules, spare=not opts.last)
    else:
        pool_, km = kernel.pool, kernel
    try:
        assert km.folder is not None  # every kernel from take() has its folder
        if km.sandbox is not None:
            if own and workdir is not None:
                _copy_into(Path(workdir), km.folder)
            workdir = km.folder
        elif workdir is None:
            workdir = km.folder
        _hand_over(km)
        client = CappedClient(nb, km=km, timeout=None, allow_errors=True, interrupt_on_timeout=False,
                              record_timing=False, output_limit=opts.output_limit,
                              output_budget=int(getattr(opts, "output_budget", 20_000_000) or 0),
                              resources={"metadata": {"path": str(workdir)}})
        current = [float(limit)]
        # nbclient annotates timeout_func as returning an int; it takes any number of seconds
        client.timeout_func = lambda cell: current[0]  # type: ignore[assignment]
        try:
            with client.setup_kernel():
                client.run_quietly(f"import os as _o; _o.chdir({str(workdir)!r}); del _o")
                result.wait = time.perf_counter() - t0
                if pool_ is not None:
                    pool_.start_spare()  # the next submission's kernel, now that this one is ready (see take())
                t1 = time.perf_counter()
                code = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"]
                for n, index in enumerate(code):
                    cell = nb.cells[index]
                    own_limit = float(cell_limits.get(index, limit))
                    left = None if budget is None else budget - (time.perf_counter() - t1)
                    if left is not None and left <= 0:
                        assert budget is not None  # left is only counted down from a budget
                        _budget_spent(nb, code[n:], budget, result, stopped=None)
                        break
                    current[0] = own_limit if left is None else min(own_limit, left)
                    try:
                        client.execute_cell(cell, index)
                    except CellTimeoutError:
                        by_budget = left is not None and left < own_limit
                        cell.outputs.append(nbformat.v4.new_output(
                            "error", ename="TimeoutError", traceback=[],
                            evalue=(f"the notebook used its time budget of {budget:g} s; this cell was stopped"
                                    if by_budget else f"this cell ran longer than {own_limit:g} s and was stopped")))
                        wait(km.interrupt_kernel())
                        if by_budget:  # nothing more runs: no need to wait for the interrupt to land
                            assert budget is not None  # by_budget: left was counted down from a budget
                            _budget_spent(nb, code[n + 1:], budget, result, stopped=index)
                            break
                        if result.status == "ok":
                            result.status, result.failed_at = "timeout", index
                            result.detail = f"cell {index} ran longer than {own_limit:g} s"
                        within = min(30.0, own_limit)
                        if budget is not None:
                            within = min(within, max(1.0, budget - (time.perf_counter() - t1)))
                        if not client.responds(within=within):
                            if budget is not None and time.perf_counter() - t1 >= budget:
                                _budget_spent(nb, code[n + 1:], budget, result, stopped=None)
                                break
                            # The interrupt did not land (a loop in C code): stop here, the rest counts as not run.
                            result.detail += "; the kernel ignored the interrupt and was stopped"
                            _not_run(nb, code[n + 1:], f"the kernel did not stop after cell {index} was interrupted")
                            break
                    except DeadKernelError:
                        process = getattr(getattr(km, "provisioner", None), "process", None)
                        code_ = process.poll() if process is not None else None
                        result.status, result.failed_at = "kernel_died", index
                        result.detail = f"the kernel died in cell {index} ({_signal_name(code_)})"
                        _not_run(nb, code[n + 1:], f"the kernel died in cell {index}")
                        break
                result.seconds = time.perf_counter() - t1
        finally:
            kc = getattr(client, "kc", None)
            if kc is not None:  # the client is ours to close (nbclient only closes its own)
                wait(kc.stop_channels())
        result.output_bytes = client.total
        _memory_verdict(nb, km, opts, result)
    finally:
        if own:
            assert pool_ is not None  # own: pool_ is pool_for(opts), which gave km
            pool_.release(km)
    return result


def _budget_spent(nb, cells: list[int], budget: float, result: Execution, stopped: int | None) -> None:
    """The notebook's time budget ran out: in cell ``stopped`` (stopped there), or between cells (None);
    ``cells`` are not run."""
    _not_run(nb, cells, f"the notebook used its time budget of {budget:g} s")
    what = f"the notebook used its time budget of {budget:g} s"
    parts = ([f"cell {stopped} was stopped"] if stopped is not None else []) + (
        [f"{len(cells)} cell(s) not run"] if cells else [])
    what += f" ({'; '.join(parts)})" if parts else ""
    if result.status == "ok":
        result.status = "timeout"
        result.failed_at = stopped if stopped is not None else (cells[0] if cells else None)
        result.detail = what
    else:
        result.detail = f"{result.detail}; {what}" if result.detail else what


def _memory_verdict(nb, km: LimitedKernelManager, opts, result: Execution) -> None:
    """``out_of_memory`` when the kernel hit its memory cap: the cgroup counted it, a cell raised
    MemoryError, or the kernel died of it."""
    oom = False
    if km.sandbox is not None:
        try:
            oom = bool(km.sandbox.out_of_memory())
        except Exception:
            oom = False
    cell = next((i for i, c in enumerate(nb.cells)
                 if any(o.get("ename") == "MemoryError" for o in c.get("outputs", []))), None)
    if not oom and cell is None:
        return
    if result.status in ("ok", "kernel_died"):
        where = result.failed_at if result.status == "kernel_died" else cell
        died = result.status == "kernel_died"
        result.status = "out_of_memory"
        result.detail = (f"cell {where} ran out of memory (limit {opts.memory_mb} MB)"
                         + ("; the kernel was killed" if died else "") if where is not None else
                         f"the notebook ran out of memory (limit {opts.memory_mb} MB)")
