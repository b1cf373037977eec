"""Kernels forked from a process that has already imported torch, torchvision and fastai.

A fresh kernel spends 5 to 11 s of CPU importing the heavy libraries before a student's
first line runs; on a 2-core machine a warm spare kernel only moves that cost, it does not
remove it. The fork server pays it once per grading worker: it imports the libraries, then
forks a new kernel process for each submission. The child shares the parent's memory
copy-on-write, so it is ready in a fraction of a second, and it is still a process of its
own: nothing one submission does reaches another, or the server.

The server is trusted code: it runs as the grader's user (root, where kernels are
sandboxed), outside any sandbox, and imports libraries only. A request may carry a sandbox
description (``Sandbox.to_spec()`` of :mod:`autograder.sandbox`); the forked child then enters
that sandbox (new namespaces, new root, its own uid) before it becomes the kernel, the way
Android's zygote does, so the imports are kept and the student's code still runs confined.
The child that entered stays outside as a relay: its pid is the one reported, signals sent
to it reach the kernel, and it exits the way the kernel did.

jupyter_client must still be able to start, interrupt, watch and kill "the kernel
process". So the command it launches is a tiny stub (a bare Python, no imports to speak
of) that asks the server for a kernel, hands over its stdin, stdout and stderr, forwards
the signals it gets to the real kernel, and exits the way the kernel exited, so a
segfault still reads as SIGSEGV. When the stub dies (the manager killed it), the server
kills its kernel; when the server dies, its kernels die with it.

The protocol is one JSON line per connection, with the stub's three descriptors. The
server serves every connection from one selector loop, so a client that sends junk,
one byte, or half a request and then nothing can neither crash it nor hold up anyone
else: each request has a size limit and a read deadline, and a malformed one gets an
error reply and is closed. The socket lives in a folder only root can enter (0700).

Forking is only safe before any thread or CUDA context exists in the server, so the server
imports modules and nothing else, serves from its one thread, checks afterwards that CUDA
was not initialised, and refuses to serve if it was (the grader then starts kernels the
ordinary way).
"""
from __future__ import annotations

import ctypes
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import time
from itertools import count
from pathlib import Path
from typing import cast

MAX_REQUEST = 1 << 20  # bytes: a kernel's environment fits many times over
READ_DEADLINE = 5.0  # seconds a client has to send its whole request
REPLY_TIMEOUT = 60.0  # seconds the stub waits for the server's answer

# The kernel command's stand-in: argv is [SOCKET, MEMORY_BYTES, SANDBOX_JSON, kernel argv...].
STUB = r"""
import json, os, signal, socket, sys
path, memory, box, argv = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3]), sys.argv[4:]
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(%(timeout)r)
try:
    s.connect(path)
    req = {"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ), "memory": memory, "sandbox": box}
    socket.send_fds(s, [json.dumps(req).encode() + b"\n"], [0, 1, 2])
    f = s.makefile("r")
    reply = json.loads(f.readline() or "{}")
except (OSError, ValueError) as e:
    reply = {"error": repr(e)}
if not isinstance(reply, dict):
    reply = {"error": "a malformed reply"}
if not isinstance(reply.get("pid"), int):
    sys.stderr.write("fork server: " + str(reply.get("error", "no kernel")) + "\n")
    sys.exit(1)
s.settimeout(None)
pid = reply["pid"]
def forward(sig, frame):
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass
for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2):
    signal.signal(sig, forward)
try:
    status = json.loads(f.readline() or "{}").get("status")
except (OSError, ValueError, AttributeError):
    status = None
if not isinstance(status, int):
    sys.exit(1)
if os.WIFSIGNALED(status):
    sig = os.WTERMSIG(status)
    if sig not in (signal.SIGKILL, signal.SIGSTOP):  # (those two cannot be handled, nor need resetting)
        signal.signal(sig, signal.SIG_DFL)
    os.kill(os.getpid(), sig)
sys.exit(os.waitstatus_to_exitcode(status) if not os.WIFSIGNALED(status) else 1)
""" % {"timeout": REPLY_TIMEOUT}

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent exits."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except Exception:  # not Linux: the server also notices its parent going (see serve())
        pass


def stub_command(socket_path: str | Path, memory_bytes: int, kernel_cmd: list[str],
                 sandbox: dict | None = None) -> list[str]:
    """The command jupyter_client launches instead of ``kernel_cmd``.

    ``memory_bytes``: the kernel's ``RLIMIT_DATA`` (0: none); ``sandbox``: the sandbox the kernel
    enters (``Sandbox.to_spec()``, prepared by the caller), None for none.
    """
    return ([sys.executable, "-c", STUB, str(socket_path), str(int(memory_bytes)), json.dumps(sandbox)]
            + list(kernel_cmd[1:]))


# ------------------------------------------------------------------------------ server

def _import(modules) -> list[str]:
    import importlib

    failed = []
    for m in modules:
        try:
            importlib.import_module(m)
        except BaseException:  # a module that will not import is the notebook's business
            failed.append(m)
    return failed


def _cuda_initialised() -> bool:
    torch = sys.modules.get("torch")
    try:
        return bool(torch is not None and torch.cuda.is_initialized())
    except Exception:
        return False


def _sandbox_module():
    """autograder/sandbox.py, loaded by path: the server runs the kernel's Python, which need not
    have the autograder on its path (sandbox.py uses the standard library only)."""
    import importlib.util

    name = "autograder_sandbox"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("sandbox.py"))
        assert spec is not None and spec.loader is not None  # a .py file always has a spec and a loader
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up while the class is made
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[name]
            raise
    return sys.modules[name]


class BadRequest(ValueError):
    """A request the server will not serve; its text is the error reply."""


def _check(req) -> dict:
    """The request if it is well-formed, else :class:`BadRequest`."""
    if not isinstance(req, dict):
        raise BadRequest("the request is not a JSON object")
    if "import" in req:
        if not (isinstance(req["import"], list) and all(isinstance(m, str) for m in req["import"])):
            raise BadRequest("'import' must be a list of module names")
        return req
    for key, kind in (("argv", list), ("cwd", str), ("env", dict)):
        if not isinstance(req.get(key), kind):
            raise BadRequest(f"missing or malformed field {key!r}")
    if not all(isinstance(a, str) for a in req["argv"]):
        raise BadRequest("'argv' must be a list of strings")
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in req["env"].items()):
        raise BadRequest("'env' must map strings to strings")
    if not isinstance(req.get("memory", 0), int) or req.get("memory", 0) < 0:
        raise BadRequest("'memory' must be a number of bytes")
    if req.get("sandbox") is not None and not isinstance(req["sandbox"], dict):
        raise BadRequest("'sandbox' must be an object")
    return req


def _child(fds: list[int], req: dict, server: int, sandbox_module=None) -> None:
    """Become the kernel described by ``req`` (runs in the forked child of ``server``; never returns).

    Every descriptor of the server's other than the stub's three is closed first: the kernel
    must not hold the listener or another stub's connection.
    """
    try:
        _die_with_parent()
        if os.getppid() != server:  # it died before the death signal was set: none will come
            os._exit(1)
        for target, fd in zip((0, 1, 2), fds):
            os.dup2(fd, target)
        os.closerange(3, os.sysconf("SC_OPEN_MAX") if hasattr(os, "sysconf") else 4096)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        if req.get("sandbox") is not None:
            # Returns in the sandboxed grandchild; the child stays outside as the relay and never returns.
            sandbox_module.Sandbox.from_spec(req["sandbox"]).enter(parent_pid=server)
        if req.get("memory"):
            import resource

            resource.setrlimit(resource.RLIMIT_DATA, (req["memory"], req["memory"]))
        os.environ.clear()
        os.environ.update(req["env"])
        os.chdir(req["cwd"])
        # As ipykernel_launcher does: the launch folder is not on the path (init_path adds the cwd;
        # serve() already took this file's folder off).
        sys.path[:] = [p for p in sys.path if p != ""]
        # The kernel command is [python, (options,) -m, ipykernel_launcher, -f, FILE, ...]: keep what
        # follows the module. ipykernel read JPY_PARENT_PID when the server imported it, so pass it on.
        argv = list(req["argv"])
        if "ipykernel_launcher" in argv:
            argv = argv[argv.index("ipykernel_launcher") + 1:]
        if req["env"].get("JPY_PARENT_PID") and req.get("sandbox") is None:
            # (Inside a sandbox the parent's pid means nothing: the kernel cannot see it.)
            argv.append(f"--IPKernelApp.parent_handle={int(req['env']['JPY_PARENT_PID'])}")
        import ipykernel_launcher

        sys.argv = [ipykernel_launcher.__file__] + argv
        from ipykernel import kernelapp

        kernelapp.launch_new_instance(argv=argv)
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 0
    except BaseException:
        import traceback

        traceback.print_exc()
        code = 1
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code)


class _Pending:
    """A connection whose request is still arriving."""

    def __init__(self, conn: socket.socket):
        self.conn, self.data = conn, bytearray()
        self.fds: list[int] = []
        self.deadline = time.monotonic() + READ_DEADLINE

    def drop(self) -> None:
        for fd in self.fds:
            try:
                os.close(fd)
            except OSError:
                pass
        self.fds = []
        self.conn.close()


def _reply(conn: socket.socket, obj: dict) -> None:
    try:
        conn.settimeout(1.0)  # a reply is a few bytes; a client that does not read loses it
        conn.sendall(json.dumps(obj).encode() + b"\n")
    except OSError:
        pass


def serve(socket_path: str, modules: list[str]) -> None:
    """Import ``modules``, then fork a kernel for each stub that connects (until the parent goes)."""
    _die_with_parent()
    parent = os.getppid()
    # Run by path, this file's folder leads sys.path: the autograder's modules must not shadow anything.
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if p != here]
    # Exactly what ipykernel sets before the first import of matplotlib, so a forked kernel
    # draws inline like a fresh one.
    os.environ.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    # torch.cuda.is_available() must not create a CUDA context in a process that will fork.
    os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
    _import(["ipykernel.kernelapp", "ipykernel.ipkernel", "IPython", "zmq", "matplotlib_inline.backend_inline",
             *modules])
    try:
        sandbox_module, sandbox_error = _sandbox_module(), ""
    except BaseException as e:  # kernels without a sandbox are still served
        sandbox_module, sandbox_error = None, f"the sandbox module does not load: {e!r}"
    if _cuda_initialised():
        print("fork server: importing initialised CUDA; not serving", file=sys.stderr, flush=True)
        sys.exit(3)

    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    tmp = socket_path + ".tmp"
    listener.bind(tmp)
    os.chmod(tmp, 0o600)
    listener.listen(64)
    listener.setblocking(False)
    os.rename(tmp, socket_path)  # appears only once the server can serve
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ)
    pending: dict[socket.socket, _Pending] = {}
    kernels: dict[int, socket.socket] = {}  # pid -> its stub's connection

    def forget(conn: socket.socket) -> None:
        try:
            sel.unregister(conn)
        except (KeyError, ValueError):
            pass

    def refuse(p: _Pending, why: str) -> None:
        forget(p.conn)
        pending.pop(p.conn, None)
        _reply(p.conn, {"error": why})
        p.drop()

    def reap() -> None:
        while kernels:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            conn = kernels.pop(pid, None)
            if conn is not None:
                forget(conn)
                _reply(conn, {"status": status})
                conn.close()

    def handle(p: _Pending) -> None:
        """A complete request line has arrived: answer it."""
        forget(p.conn)
        pending.pop(p.conn, None)
        try:
            req = _check(json.loads(bytes(p.data)))
        except (ValueError, RecursionError) as e:  # BadRequest, or not JSON at all
            _reply(p.conn, {"error": f"bad request: {e}"})
            p.drop()
            return
        if "import" in req:
            _reply(p.conn, {"imported": True, "failed": _import(req["import"])})
            p.drop()
            return
        if len(p.fds) != 3:
            _reply(p.conn, {"error": f"a kernel request carries 3 descriptors, not {len(p.fds)}"})
            p.drop()
            return
        if req.get("sandbox") is not None and sandbox_module is None:
            _reply(p.conn, {"error": sandbox_error})
            p.drop()
            return
        server = os.getpid()
        try:
            pid = os.fork()
        except OSError as e:
            _reply(p.conn, {"error": repr(e)})
            p.drop()
            return
        if pid == 0:
            for c in list(pending) + list(kernels.values()):
                c.close()
            p.conn.close()
            listener.close()
            sel.close()
            _child(p.fds, req, server, sandbox_module)
        for fd in p.fds:
            os.close(fd)
        p.fds = []
        _reply(p.conn, {"pid": pid})
        p.conn.setblocking(False)
        kernels[pid] = p.conn
        sel.register(p.conn, selectors.EVENT_READ, pid)

    def receive(p: _Pending) -> None:
        try:
            data, fds, _, _ = socket.recv_fds(p.conn, 65536, 3, socket.MSG_CMSG_CLOEXEC)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            refuse(p, f"could not read the request: {e}")
            return
        p.fds += fds
        if not data:  # the client went away before finishing
            forget(p.conn)
            pending.pop(p.conn, None)
            p.drop()
            return
        p.data += data
        end = p.data.find(b"\n")
        if end >= 0:
            del p.data[end:]
            handle(p)
        elif len(p.data) > MAX_REQUEST or len(p.fds) > 3:
            refuse(p, f"request too long (more than {MAX_REQUEST} bytes)")

    while os.getppid() == parent:
        for key, _ in sel.select(timeout=0.2):
            if key.fileobj is listener:
                try:
                    conn, _ = listener.accept()
                except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                    continue
                conn.setblocking(False)
                pending[conn] = _Pending(conn)
                sel.register(conn, selectors.EVENT_READ, pending[conn])
            elif isinstance(key.data, _Pending):
                receive(key.data)
            else:  # a stub's connection: readable only when the stub has gone (or sends junk, read and ignored)
                stub_conn = cast(socket.socket, key.fileobj)  # what else is registered is a stub's connection
                try:
                    gone = not stub_conn.recv(4096)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    gone = True
                if gone:
                    forget(stub_conn)
                    try:
                        os.kill(key.data, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
        now = time.monotonic()
        for p in [p for p in pending.values() if p.deadline < now]:
            refuse(p, f"the request did not arrive within {READ_DEADLINE:g} s")
        reap()
    for pid in list(kernels):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


# ------------------------------------------------------------------------------ client

_SERVERS = count()


class ForkServer:
    """A running fork server for one environment; ``socket_path`` is what stubs connect to.

    The socket is made in a folder of its own inside ``folder``, which only its owner (root,
    where kernels are sandboxed) can enter, so no sandboxed uid could connect to it even if it
    could see it.
    """

    def __init__(self, folder: Path, env: dict, modules=(), startup_timeout: float = 300, python: str | None = None):
        """``python``: the interpreter of the kernel spec (default: this one). The server runs this file
        by path, so that interpreter needs ipykernel and the lesson's libraries, not the autograder."""
        # Short: the socket's whole path must fit in AF_UNIX's 107 bytes.
        self.folder = Path(folder) / f"fs{os.getpid()}-{next(_SERVERS)}"
        self.folder.mkdir(mode=0o700)
        os.chmod(self.folder, 0o700)  # whatever the umask
        self.socket_path = str(self.folder / "sock")
        self.modules = list(modules)
        with open(self.folder / "log", "wb") as log:
            self.proc = subprocess.Popen(
                [python or sys.executable, str(Path(__file__).resolve()), self.socket_path, json.dumps(self.modules)],
                env=env, cwd=str(self.folder), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log,
                start_new_session=True)
        deadline = time.monotonic() + startup_timeout
        while not os.path.exists(self.socket_path):
            if self.proc.poll() is not None:
                tail = (self.folder / "log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"the fork server exited ({self.proc.returncode}) before serving: {tail}")
            if time.monotonic() > deadline:
                self.close()
                raise RuntimeError("the fork server did not start in time")
            time.sleep(0.05)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def ensure(self, modules, timeout: float = 300) -> None:
        """Have the server import ``modules`` too (a later lesson's), so its kernels start with them."""
        extra = [m for m in modules if m not in self.modules]
        if not extra:
            return
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(self.socket_path)
            s.sendall(json.dumps({"import": extra}).encode() + b"\n")
            reply = json.loads(s.makefile("r").readline() or "{}")
        if not reply.get("imported"):
            raise RuntimeError(f"the fork server did not import {extra}: {reply.get('error', 'no reply')}")
        self.modules += extra

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        import shutil

        shutil.rmtree(self.folder, ignore_errors=True)


if __name__ == "__main__":
    serve(sys.argv[1], json.loads(sys.argv[2]) if len(sys.argv) > 2 else [])
