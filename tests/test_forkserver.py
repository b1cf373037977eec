"""Kernels forked from a server that imported the heavy libraries once (autograder/forkserver.py).

Each test runs small notebooks through the grader's own `execute`, the path every
submission takes, and checks what a forked kernel must still be: a process of its own,
interruptible, limited, reported faithfully when it dies, and gone when its manager kills it.
These run unsandboxed (``--no-sandbox``), so the server's own work shows; tests/test_pool.py
runs sandboxed kernels. The last tests feed the server junk, as a broken or hostile client
would, and check that it answers, drops the connection and goes on serving.
"""
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from autograder import grade, pool
from autograder.forkserver import READ_DEADLINE, ForkServer

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(not pool.default_mode() == "fork", reason="forking kernels is Linux only")


def _nb(*sources):
    return nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in sources])


def _text(cell):
    return "".join(o.get("text", "") for o in cell.outputs if o.get("output_type") == "stream")


def _error(cell):
    return next((o.get("ename") for o in cell.outputs if o.get("output_type") == "error"), None)


def _gone(pid):
    try:
        return open(f"/proc/{pid}/stat").read().split()[2] == "Z"
    except FileNotFoundError:
        return True


@pytest.fixture
def opts():
    return grade.Options(profile="ci", kernels="fork", cell_timeout=60, memory_mb=3000, threads=1, sandbox=False)


@pytest.fixture
def workdir(tmp_path):
    return tmp_path


@pytest.fixture(autouse=True, scope="module")
def _pools_of_this_module():
    # One fork server for the module's tests (the grader keeps one per worker the same way).
    yield
    pool.close_all()


def _pool(opts):
    return pool.pool_for(opts)


def test_a_forked_kernel_starts_with_the_imports_done_in_a_process_of_its_own(opts, workdir):
    probe = ("import os, sys, resource\n"
             "print('torch' in sys.modules, 'torchvision' in sys.modules, os.getpid(), os.getppid(), os.getcwd(),\n"
             "      resource.getrlimit(resource.RLIMIT_DATA)[0], os.environ['COURSE_GRADING'])")
    nb = _nb(probe, "import matplotlib\nprint(matplotlib.get_backend())",
             "import sys\nprint([p for p in sys.path if p.rstrip('/').endswith('autograder')])")
    run = pool.execute(nb, workdir, opts, warm_modules=("torch", "torchvision"))
    assert run.status == "ok", run.detail
    preloaded, vision, pid, ppid, cwd, limit, grading = _text(nb.cells[0]).split()
    assert (preloaded, vision) == ("True", "True")  # imported by the server, not by this notebook
    server = _pool(opts)._server
    assert server is not None and server.alive()
    assert int(ppid) == server.proc.pid and int(pid) not in (os.getpid(), server.proc.pid)
    assert cwd == str(workdir) and int(limit) == 3000 * 2**20 and grading == "1"
    assert "inline" in _text(nb.cells[1])  # draws like an ordinary kernel
    assert _text(nb.cells[2]).strip() == "[]"  # the server's own folder is not on the student's path


def test_submissions_do_not_see_each_other(opts, workdir):
    cheat = _nb("import torch\ntorch.allclose = lambda *a, **k: True\nimport builtins\nbuiltins.SECRET = 42")
    pool.execute(cheat, workdir, opts, warm_modules=("torch",))
    honest = _nb("import torch, builtins\n"
                 "print(torch.allclose(torch.zeros(1), torch.ones(1)), hasattr(builtins, 'SECRET'))")
    run = pool.execute(honest, workdir, opts, warm_modules=("torch",))
    assert run.status == "ok" and _text(honest.cells[0]).split() == ["False", "False"]


def test_a_hanging_cell_is_interrupted_and_the_kernel_goes_on(opts, workdir):
    nb = _nb("import time\ntime.sleep(600)", "print('after')")
    run = pool.execute(nb, workdir, grade.Options(**{**opts.__dict__, "cell_timeout": 3}), warm_modules=())
    assert run.status == "timeout" and run.failed_at == 0
    assert _text(nb.cells[1]).strip() == "after"


@pytest.mark.parametrize("code, words", [("import ctypes\nctypes.string_at(0)", "SIGSEGV"),
                                         ("import os\nos._exit(3)", "exit code 3")])
def test_how_a_forked_kernel_died_is_reported(opts, workdir, code, words):
    nb = _nb("x = 1", code, "print('never')")
    run = pool.execute(nb, workdir, opts)
    assert run.status == "kernel_died" and run.failed_at == 1
    assert words in run.detail


def test_memory_is_limited_per_kernel(opts, workdir):
    nb = _nb("hog = bytearray(8 * 2**30)", "print('still here')")
    run = pool.execute(nb, workdir, opts)
    assert _error(nb.cells[0]) == "MemoryError" and run.status == "out_of_memory"
    assert _text(nb.cells[1]).strip() == "still here"


def test_a_killed_stub_takes_its_kernel_with_it(opts, workdir):
    warm = _pool(opts)
    first = warm.take((), spare=False)  # make sure the server runs before listing its children
    server = warm._server.proc.pid

    def children():
        return {int(p) for p in open(f"/proc/{server}/task/{server}/children").read().split() if not _gone(int(p))}

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not children():  # the first kernel is forked
        time.sleep(0.05)
    before = children()
    # At least the first kernel; a kernel of an earlier test may still be on its way out on a busy machine.
    assert first.provisioner.process is not None and len(before) >= 1
    km = warm.take((), spare=False)
    stub = km.provisioner.process
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not children() - before:
        time.sleep(0.05)
    (kernel_pid,) = children() - before
    os.kill(stub.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not _gone(kernel_pid):
        time.sleep(0.05)
    assert _gone(kernel_pid)
    warm.release(km)
    warm.release(first)


def test_a_server_that_cannot_start_falls_back_to_ordinary_kernels(opts, workdir, monkeypatch, capfd):
    def refuse(*a, **k):
        raise RuntimeError("the fork server exited (3) before serving: importing initialised CUDA")

    pool.close_all()
    monkeypatch.setattr("autograder.forkserver.ForkServer", refuse)
    nb = _nb("import os\nprint(os.getppid())")
    run = pool.execute(nb, workdir, opts)
    assert run.status == "ok" and int(_text(nb.cells[0])) == os.getpid()  # an ordinary kernel: our child
    assert _pool(opts).mode == "warm"
    assert "started the ordinary way" in capfd.readouterr().err


def test_the_server_and_its_kernels_die_with_a_killed_grader(tmp_path):
    grader = subprocess.Popen(
        [sys.executable, "-c", "import os, sys, time\nfrom autograder.forkserver import ForkServer\n"
         f"s = ForkServer({str(tmp_path)!r}, dict(os.environ), ['json'])\n"
         "print(s.proc.pid, flush=True)\ntime.sleep(600)"],
        stdout=subprocess.PIPE, text=True, cwd=ROOT)
    server = int(grader.stdout.readline())
    assert not _gone(server)
    grader.kill()  # SIGKILL: no atexit, no cleanup
    grader.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not _gone(server):
        time.sleep(0.05)
    assert _gone(server)


def test_close_stops_the_server_and_removes_its_socket(tmp_path):
    server = ForkServer(tmp_path, {**os.environ}, ["json"])
    assert server.alive() and os.path.exists(server.socket_path)
    server.close()
    assert not server.alive() and not os.path.exists(server.socket_path)


def test_folders_left_by_a_killed_grader_are_removed(tmp_path, monkeypatch):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    dead = tmp_path / "autograder-kernels-4194999-abc123"  # above Linux's largest pid: no such process
    live = tmp_path / f"autograder-kernels-{os.getpid()}-def456"
    for d in (dead, live):
        (d / "fork.sock.log").parent.mkdir()
        (d / "fork.sock.log").write_text("x")
    warm = pool.WarmPool("python3", dict(os.environ), mode="cold")
    assert not dead.exists() and live.exists() and warm.home.parent == tmp_path
    warm.close()
    assert not warm.home.exists() and live.exists()


def test_the_server_runs_the_kernel_specs_python(tmp_path):
    wrapper = tmp_path / "python"
    wrapper.write_text(f"#!/bin/sh\ntouch {tmp_path / 'used'}\nexec {sys.executable} \"$@\"\n")
    wrapper.chmod(0o755)
    server = ForkServer(tmp_path, {**os.environ}, ["json"], python=str(wrapper))
    try:
        assert server.alive() and (tmp_path / "used").exists()
    finally:
        server.close()


# ------------------------------------------------------------------------------ junk and slow clients

@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A small server of its own (no torch: it starts in a second), for feeding junk to."""
    s = ForkServer(tmp_path_factory.mktemp("fs"), {**os.environ}, ["json"])
    yield s
    s.close()


def _connect(server) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(READ_DEADLINE + 10)
    s.connect(server.socket_path)
    return s


def _answer(s: socket.socket) -> tuple[dict, bytes]:
    """The server's reply line, and what follows it (b"" once the server has closed the connection)."""
    f = s.makefile("rb")
    line = f.readline()
    return json.loads(line), f.read(1)


def _a_kernel_works(server, opts, base: Path, within: float = 15.0) -> None:
    """A real kernel still starts from ``server`` and runs a cell, within ``within`` seconds."""
    import tempfile

    folder = Path(tempfile.mkdtemp(dir=base))  # release() removes it
    t0 = time.monotonic()
    km = pool.LimitedKernelManager(kernel_name=pool.kernel_name(opts.kernel_name))
    km.fork_socket, km.folder = server.socket_path, folder
    pool.wait(km.start_kernel(env=pool.kernel_env(opts), cwd=str(folder)))
    try:
        nb = _nb("print(6 * 7)")
        run = pool.execute(nb, None, opts, kernel=km)
    finally:
        pool.release(km)
    assert run.status == "ok" and _text(nb.cells[0]).strip() == "42"
    assert time.monotonic() - t0 < within
    assert server.alive()


@pytest.mark.parametrize("junk", [b"not json\n", b"[1, 2]\n", b"\xff\xfe\n", b'{"argv": ["python"]}\n',
                                  b'{"argv": "python", "cwd": "/", "env": {}}\n',
                                  b'{"argv": ["python"], "cwd": "/", "env": {"A": 1}}\n',
                                  b'{"argv": ["python"], "cwd": "/", "env": {}}\n',  # no descriptors
                                  b'{"import": "os"}\n', b"[" * 100000 + b"\n"])
def test_a_malformed_request_gets_an_error_and_is_closed(server, junk):
    with _connect(server) as s:
        s.sendall(junk)
        reply, rest = _answer(s)
    assert "error" in reply and rest == b""
    assert server.alive()


def test_a_request_over_the_size_limit_is_refused(server, opts, tmp_path):
    from autograder.forkserver import MAX_REQUEST

    with _connect(server) as s:
        try:
            s.sendall(b"x" * (MAX_REQUEST + 70000))
            reply, _ = _answer(s)
            assert "too long" in reply["error"]
        except (BrokenPipeError, ConnectionResetError):  # closed with the rest unread: refused all the same
            pass
    _a_kernel_works(server, opts, tmp_path)


def test_slow_and_junk_clients_do_not_jam_the_server(server, opts, tmp_path):
    held = [_connect(server) for _ in range(3)]
    held[0].sendall(b"{")  # one byte, then nothing
    held[1].sendall(b'{"argv": ["python", "-m", "ipykernel_launcher"], "cwd": "/tmp", "en')  # half a request
    # held[2] sends nothing at all
    t0 = time.monotonic()
    _a_kernel_works(server, opts, tmp_path)
    for s in held:  # the deadline ends each of them with an error
        with s:
            reply, rest = _answer(s)
        assert "did not arrive" in reply["error"] and rest == b""
    assert time.monotonic() - t0 < READ_DEADLINE + 15
    _a_kernel_works(server, opts, tmp_path)


def test_a_client_that_goes_away_midway_costs_nothing(server, opts, tmp_path):
    for junk in (b"", b"{", b'{"argv": []'):
        with _connect(server) as s:
            s.sendall(junk)
    _a_kernel_works(server, opts, tmp_path)


def test_the_server_socket_is_in_a_folder_only_its_owner_enters(server):
    folder = os.stat(Path(server.socket_path).parent)
    assert stat.S_IMODE(folder.st_mode) == 0o700 and folder.st_uid == os.getuid()
    assert stat.S_IMODE(os.stat(server.socket_path).st_mode) & 0o077 == 0
