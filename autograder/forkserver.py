"""Kernels forked from a process that has already imported torch, torchvision and fastai.

A fresh kernel spends 5 to 11 s of CPU importing the heavy libraries before a student's
first line runs; on a 2-core machine a warm spare kernel only moves that cost, it does not
remove it. The fork server pays it once per grading worker: it imports the libraries, then
forks a new kernel process for each submission. The child shares the parent's memory
copy-on-write, so it is ready in a fraction of a second, and it is still a process of its
own: nothing one submission does reaches another, or the server.

jupyter_client must still be able to start, interrupt, watch and kill "the kernel
process". So the command it launches is a tiny stub (a bare Python, no imports to speak
of) that asks the server for a kernel, hands over its stdin, stdout and stderr, forwards
the signals it gets to the real kernel, and exits the way the kernel exited, so a
segfault still reads as SIGSEGV. When the stub dies (the manager killed it), the server
kills its kernel; when the server dies, its kernels die with it.

Forking is only safe before any thread or CUDA context exists in the server, so the server
imports modules and nothing else, checks afterwards that CUDA was not initialised, and
refuses to serve if it was (the grader then starts kernels the ordinary way).
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
from pathlib import Path

# The kernel command's stand-in: argv is [SOCKET, MEMORY_BYTES, kernel argv...].
STUB = r"""
import json, os, signal, socket, sys
path, memory, argv = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(path)
req = {"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ), "memory": memory}
socket.send_fds(s, [json.dumps(req).encode() + b"\n"], [0, 1, 2])
f = s.makefile("r")
reply = json.loads(f.readline() or "{}")
if "pid" not in reply:
    sys.stderr.write("fork server: " + reply.get("error", "no kernel") + "\n")
    sys.exit(1)
pid = reply["pid"]
def forward(sig, frame):
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass
for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2):
    signal.signal(sig, forward)
line = f.readline()
status = json.loads(line)["status"] if line else None
if status is None:
    sys.exit(1)
if os.WIFSIGNALED(status):
    sig = os.WTERMSIG(status)
    signal.signal(sig, signal.SIG_DFL)
    os.kill(os.getpid(), sig)
sys.exit(os.waitstatus_to_exitcode(status) if not os.WIFSIGNALED(status) else 1)
"""

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent exits."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except Exception:  # not Linux: the server also notices its parent going (see serve())
        pass


def stub_command(socket_path: str | Path, memory_bytes: int, kernel_cmd: list[str]) -> list[str]:
    """The command jupyter_client launches instead of ``kernel_cmd``."""
    return [sys.executable, "-c", STUB, str(socket_path), str(int(memory_bytes))] + list(kernel_cmd[1:])


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


def _child(conn: socket.socket, listener: socket.socket, fds: list[int], req: dict) -> None:
    """Become the kernel described by ``req`` (runs in the forked child; never returns)."""
    try:
        _die_with_parent()
        listener.close()
        conn.close()
        for target, fd in zip((0, 1, 2), fds):
            os.dup2(fd, target)
        for fd in fds:
            os.close(fd)
        signal.signal(signal.SIGINT, signal.default_int_handler)
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
        if req["env"].get("JPY_PARENT_PID"):
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
    if _cuda_initialised():
        print("fork server: importing initialised CUDA; not serving", file=sys.stderr, flush=True)
        sys.exit(3)

    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    tmp = socket_path + ".tmp"
    listener.bind(tmp)
    listener.listen(64)
    os.rename(tmp, socket_path)  # appears only once the server can serve
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ)
    kernels: dict[int, socket.socket] = {}  # pid -> its stub's connection

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
                try:
                    conn.sendall(json.dumps({"status": status}).encode() + b"\n")
                except OSError:
                    pass
                try:
                    sel.unregister(conn)
                except (KeyError, ValueError):
                    pass
                conn.close()

    while os.getppid() == parent:
        for key, _ in sel.select(timeout=0.2):
            if key.fileobj is listener:
                conn, _ = listener.accept()
                msg, fds, _, _ = socket.recv_fds(conn, 1 << 20, 3)
                while not msg.endswith(b"\n"):
                    more = conn.recv(1 << 20)
                    if not more:
                        break
                    msg += more
                try:
                    req = json.loads(msg)
                    if req.get("import"):
                        failed = _import(req["import"])
                        conn.sendall(json.dumps({"imported": True, "failed": failed}).encode() + b"\n")
                        conn.close()
                        continue
                    pid = os.fork()
                except Exception as e:
                    try:
                        conn.sendall(json.dumps({"error": repr(e)}).encode() + b"\n")
                    finally:
                        conn.close()
                        for fd in fds:
                            os.close(fd)
                    continue
                if pid == 0:
                    _child(conn, listener, fds, req)
                for fd in fds:
                    os.close(fd)
                conn.sendall(json.dumps({"pid": pid}).encode() + b"\n")
                kernels[pid] = conn
                sel.register(conn, selectors.EVENT_READ, pid)
            else:  # a stub's connection: readable only when the stub has gone
                pid = key.data
                if not key.fileobj.recv(1):
                    sel.unregister(key.fileobj)
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
        reap()
    for pid in list(kernels):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


# ------------------------------------------------------------------------------ client

class ForkServer:
    """A running fork server for one environment; ``socket_path`` is what stubs connect to."""

    def __init__(self, folder: Path, env: dict, modules=(), startup_timeout: float = 300, python: str | None = None):
        """``python``: the interpreter of the kernel spec (default: this one). The server runs this file
        by path, so that interpreter needs ipykernel and the lesson's libraries, not the autograder."""
        self.socket_path = str(Path(folder) / f"fork-{os.getpid()}-{time.monotonic_ns()}.sock")
        self.modules = list(modules)
        with open(self.socket_path + ".log", "wb") as log:
            self.proc = subprocess.Popen(
                [python or sys.executable, str(Path(__file__).resolve()), self.socket_path, json.dumps(self.modules)],
                env=env, cwd=str(folder), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log,
                start_new_session=True)
        deadline = time.monotonic() + startup_timeout
        while not os.path.exists(self.socket_path):
            if self.proc.poll() is not None:
                log = Path(self.socket_path + ".log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"the fork server exited ({self.proc.returncode}) before serving: {log}")
            if time.monotonic() > deadline:
                self.close()
                raise RuntimeError("the fork server did not start in time")
            time.sleep(0.05)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def ensure(self, modules) -> None:
        """Have the server import ``modules`` too (a later lesson's), so its kernels start with them."""
        extra = [m for m in modules if m not in self.modules]
        if not extra:
            return
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(self.socket_path)
            s.sendall(json.dumps({"import": extra}).encode() + b"\n")
            s.makefile("r").readline()
        self.modules += extra

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        try:
            os.unlink(self.socket_path)
        except FileNotFoundError:
            pass


if __name__ == "__main__":
    serve(sys.argv[1], json.loads(sys.argv[2]) if len(sys.argv) > 2 else [])
