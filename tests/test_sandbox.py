"""The sandbox that student code runs in: what it can see, reach and keep running, as the kernel enforces it."""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from autograder import sandbox
from autograder.sandbox import Sandbox, allocate_uid, default_readonly, release_uid

OK, WHY = sandbox.available()
pytestmark = pytest.mark.skipif(not OK, reason=f"no sandbox can be made here: {WHY}")

REPO = Path(__file__).resolve().parent.parent
PY = sys.executable  # the venv's python: it can import course_lib


@pytest.fixture
def make(tmp_path):
    made = []

    def _make(name="private", **kw):
        kw.setdefault("readonly", tuple(default_readonly()))
        sb = Sandbox(tmp_path / name, **kw).prepare()
        made.append(sb)
        return sb

    yield _make
    for sb in made:
        sb.close()


@pytest.fixture
def host_dir():
    """A folder in the host's /tmp that anyone may enter and read: only the sandbox can hide it."""
    path = Path(tempfile.mkdtemp(prefix="sandbox-test-", dir="/tmp"))
    path.chmod(0o777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def run(sb, code, *args, timeout=60, **kw):
    proc = sb.spawn([PY, "-c", code, *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out.decode(), err.decode()


def run_json(sb, code, *args):
    rc, out, err = run(sb, code, *args)
    assert rc == 0, err
    return json.loads(out.strip().splitlines()[-1])


WHO = """
import json, os
status = dict(line.split(":\\t", 1) for line in open("/proc/self/status").read().splitlines() if ":\\t" in line)
print(json.dumps({"ids": [os.getuid(), os.geteuid(), os.getgid(), os.getegid()], "groups": os.getgroups(),
                  "cap_eff": status["CapEff"].strip(), "no_new_privs": status["NoNewPrivs"].strip(),
                  "cwd": os.getcwd(), "home": os.environ["HOME"], "tmpdir": os.environ["TMPDIR"]}))
"""


def test_runs_as_a_uid_of_its_own_without_capabilities(make):
    one, two = make("one"), make("two")
    assert one.uid != two.uid and 0 not in (one.uid, two.uid)
    for sb in (one, two):
        who = run_json(sb, WHO)
        assert who["ids"] == [sb.uid] * 4
        assert who["groups"] == []
        assert int(who["cap_eff"], 16) == 0 and who["no_new_privs"] == "1"
        assert who["cwd"] == who["home"] == str(sb.private) and who["tmpdir"] == "/tmp"


def test_uids_are_unique_across_processes_and_come_back_when_the_owner_dies():
    low = 299000 + os.getpid() % 900
    holder = subprocess.Popen(
        [PY, "-c", f"from autograder.sandbox import allocate_uid; print(allocate_uid({low}, {low + 1}), flush=True);"
                   "input()"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert int(holder.stdout.readline()) == low
        mine = allocate_uid(low, low + 2)
        assert mine == low + 1
        with pytest.raises(RuntimeError):
            allocate_uid(low, low + 2)
        release_uid(mine)
    finally:
        holder.kill()
        holder.wait()
    uid = allocate_uid(low, low + 1)  # the dead holder's lock went with it
    assert uid == low
    release_uid(uid)


def test_proc_shows_only_the_sandboxes_processes(make):
    seen = run_json(make(), """
import json, os
procs = {p: open(f"/proc/{p}/cmdline", "rb").read().decode(errors="replace")
         for p in os.listdir("/proc") if p.isdigit()}
try:  # pid 1 stays root and out of reach: its root is not a way out
    reaper_root = os.readlink("/proc/1/root")
except OSError as e:
    reaper_root = type(e).__name__
print(json.dumps({"pid": os.getpid(), "ppid": os.getppid(), "procs": procs, "reaper_root": reaper_root}))
""")
    assert seen["reaper_root"] == "PermissionError"
    assert seen["pid"] == 2  # pid 1 is the sandbox's reaper
    assert seen["ppid"] == 0  # the parent, the relay, is outside the namespace
    assert sorted(seen["procs"]) == ["1", "2"]
    mine = open("/proc/self/cmdline", "rb").read().decode(errors="replace")
    assert mine not in seen["procs"].values()  # the test runner is not there
    assert len([p for p in os.listdir("/proc") if p.isdigit()]) > 2  # the host has more


def test_sees_only_what_it_is_shown(make, host_dir):
    submissions = host_dir / "SUBMISSIONS"
    submissions.mkdir(mode=0o755)
    (submissions / "alice.ipynb").write_text("{}")
    (submissions / "alice.ipynb").chmod(0o644)
    shown_ro = host_dir / "shown"
    shown_ro.mkdir()
    shown_ro.chmod(0o777)  # anyone may write here on the host: only the read-only mount stops it
    hidden = [submissions / "alice.ipynb", submissions, REPO / "solutions", REPO / "autograder", REPO / ".git"]
    assert all(p.exists() for p in hidden)
    other = make("other")
    sb = make(readonly=tuple(default_readonly()) + (str(shown_ro),))
    marker = f"sandbox-test-{uuid.uuid4().hex}"
    seen = run_json(sb, """
import errno, json, os, sys
hidden, other, shown, marker = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
def state(p):
    try:
        os.stat(p)
        return "visible"
    except OSError as e:
        return errno.errorcode[e.errno]
def write(p):
    try:
        with open(p, "w") as f:
            f.write("x")
        return "written"
    except OSError as e:
        return errno.errorcode[e.errno]
import course_lib
print(json.dumps({"hidden": [state(p) for p in hidden], "other": state(other), "course_lib": course_lib.__file__,
                  "shown": write(os.path.join(shown, "x")), "usr": write("/usr/x"), "root": write("/x"),
                  "private": write("mine.txt"), "tmp": write("/tmp/" + marker), "shm": write("/dev/shm/" + marker)}))
""", json.dumps([str(p) for p in hidden]), other.private, shown_ro, marker)
    assert seen["hidden"] == ["ENOENT"] * len(hidden)
    assert seen["other"] == "ENOENT"
    assert seen["course_lib"] == str(REPO / "course_lib" / "__init__.py")
    assert seen["shown"] == seen["usr"] == seen["root"] == "EROFS"
    assert seen["private"] == seen["tmp"] == seen["shm"] == "written"
    assert (sb.private / "mine.txt").stat().st_uid == sb.uid
    assert not (shown_ro / "x").exists()
    assert not Path("/tmp", marker).exists() and not Path("/dev/shm", marker).exists()


def test_binds_show_a_read_only_copy_at_another_path(make, host_dir):
    copy = host_dir / "course_lib"
    copy.mkdir()
    copy.chmod(0o777)
    (copy / "MARKER").write_text("the modified copy")
    (copy / "MARKER").chmod(0o666)
    sb = make(binds={str(copy): str(REPO / "course_lib")})
    seen = run_json(sb, """
import errno, json, os, sys
lib = sys.argv[1]
try:
    open(os.path.join(lib, "MARKER"), "w")
    wrote = "written"
except OSError as e:
    wrote = errno.errorcode[e.errno]
print(json.dumps({"marker": open(os.path.join(lib, "MARKER")).read(), "wrote": wrote,
                  "original": os.path.exists(os.path.join(lib, "checks.py"))}))
""", REPO / "course_lib")
    assert seen == {"marker": "the modified copy", "wrote": "EROFS", "original": False}


def test_no_network(make):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(0.3)
    with server:
        seen = run_json(make(), """
import json, socket, sys
def connect(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        return "connected"
    except OSError as e:
        return type(e).__name__
inner = socket.socket()
inner.bind(("127.0.0.1", 0))
inner.listen()
print(json.dumps({"host": connect(int(sys.argv[1])), "own": connect(inner.getsockname()[1])}))
""", server.getsockname()[1])
        assert seen == {"host": "ConnectionRefusedError", "own": "connected"}  # its own loopback only
        with pytest.raises(socket.timeout):
            server.accept()


def _host_pids_with(marker):
    pids = []
    for p in os.listdir("/proc"):
        try:
            if p.isdigit() and marker.encode() in open(f"/proc/{p}/cmdline", "rb").read():
                pids.append(int(p))
        except OSError:
            pass
    return pids


def test_background_processes_die_with_the_sandboxed_process(make):
    marker = f"sandbox-bg-{uuid.uuid4().hex}"
    proc = make().spawn([PY, "-c", """
import subprocess, sys, time
subprocess.Popen([sys.executable, "-c", "import time; open('bg-up', 'w').close(); time.sleep(1000)", sys.argv[1]],
                 start_new_session=True)
while True:
    try:
        open("bg-up").close()
        break
    except FileNotFoundError:
        time.sleep(0.01)
print("ready", flush=True)
sys.stdin.readline()
""", marker], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    assert _host_pids_with(marker)  # it runs, and the host can find it
    proc.stdin.close()
    assert proc.wait(timeout=20) == 0
    assert _host_pids_with(marker) == []


def test_killing_the_relay_kills_everything_inside(make):
    marker = f"sandbox-kill-{uuid.uuid4().hex}"
    proc = make().spawn([PY, "-c", """
import subprocess, sys, time
subprocess.Popen(["sleep", "1000"], start_new_session=True)
print("ready", flush=True)
time.sleep(1000)
""", marker], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    assert _host_pids_with(marker)
    proc.kill()  # what jupyter_client does to a kernel: SIGKILL of the process it started, the relay
    assert proc.wait(timeout=10) == -signal.SIGKILL
    deadline = time.monotonic() + 5
    while _host_pids_with(marker) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _host_pids_with(marker) == []


def test_process_count_is_capped(make):
    seen = run_json(make(pids_max=16), """
import errno, json, os, time
made, error = 0, None
for _ in range(40):
    try:
        pid = os.fork()
    except OSError as e:
        error = errno.errorcode[e.errno]
        break
    if pid == 0:
        time.sleep(30)
        os._exit(0)
    made += 1
print(json.dumps({"made": made, "error": error}))
""")
    assert seen["error"] == "EAGAIN" and seen["made"] < 16


SHARED_MMAP = """
import mmap, sys
n = int(sys.argv[1])
m = mmap.mmap(-1, n)  # MAP_SHARED: shmem, which RLIMIT_AS-style accounting of private memory misses
for i in range(0, n, 4096):
    m[i] = 1
print("touched", n, flush=True)
"""


def test_memory_cap_counts_shared_mappings(make):
    limit = 128 << 20
    over = make("over", memory_bytes=limit)
    if not over.enforcement["memory"].startswith("cgroup"):
        pytest.skip(f"no memory cgroup here ({over.enforcement['memory']})")
    rc, out, _ = run(over, SHARED_MMAP, 2 * limit)
    assert rc == -signal.SIGKILL and "touched" not in out
    assert over.out_of_memory()
    under = make("under", memory_bytes=limit)
    rc, out, err = run(under, SHARED_MMAP, 32 << 20)
    assert rc == 0 and "touched" in out, err
    assert not under.out_of_memory()


def test_without_cgroups_limits_fall_back_to_rlimits(make, monkeypatch):
    monkeypatch.setattr(sandbox, "_cgroup_mounts", lambda: ({}, None))
    sb = make(memory_bytes=256 << 20, pids_max=16)
    assert sb.enforcement == {"memory": "rlimit-as", "pids": "rlimit-nproc"} and not sb._cgroups
    seen = run_json(sb, """
import errno, json, mmap, resource, os
try:
    mmap.mmap(-1, 512 << 20)
    mapped = "mapped"
except OSError as e:
    mapped = errno.errorcode[e.errno]
print(json.dumps({"mapped": mapped, "as": resource.getrlimit(resource.RLIMIT_AS)[0],
                  "nproc": resource.getrlimit(resource.RLIMIT_NPROC)[0]}))
""")
    assert seen == {"mapped": "ENOMEM", "as": 256 << 20, "nproc": 16}
    marker = f"sandbox-nocg-{uuid.uuid4().hex}"
    proc = sb.spawn([PY, "-c", "import time; print('up', flush=True); time.sleep(1000)", marker],
                    stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "up" and _host_pids_with(marker)
    sb.close()  # no cgroup to empty: the relay and every process of the sandbox's uid are killed
    assert proc.returncode == -signal.SIGKILL and _host_pids_with(marker) == []


def _fork_enter(sb, then, keep_fds=()):
    """Fork a child of this test process that enters ``sb`` and runs ``then()``; never returns in the child."""
    pid = os.fork()
    if pid == 0:
        try:
            sb.enter(keep_fds=keep_fds, parent_pid=os.getppid())
            then()
        finally:
            os._exit(99)
    return pid


def test_enter_in_a_forked_child_exits_like_the_sandboxed_process(make):
    sb = make()
    _, status = os.waitpid(_fork_enter(sb, lambda: os._exit(7)), 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 7

    def die_by_signal():
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(10)

    _, status = os.waitpid(_fork_enter(sb, die_by_signal), 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGTERM

    def uid_then_wait(write_fd):
        def then():
            signal.signal(signal.SIGUSR1, lambda *_: os._exit(5))
            os.write(write_fd, str(os.getuid()).encode())
            time.sleep(30)
            os._exit(0)
        return then

    for sig, expect in ((signal.SIGUSR1, ("exit", 5)), (signal.SIGTERM, ("signal", signal.SIGKILL))):
        read_fd, write_fd = os.pipe()
        pid = _fork_enter(sb, uid_then_wait(write_fd), keep_fds=(write_fd,))
        os.close(write_fd)
        assert os.read(read_fd, 100).decode() == str(sb.uid)  # inside, running as the sandbox's uid
        os.close(read_fd)
        os.kill(pid, sig)  # the relay passes SIGUSR1 on and answers SIGTERM with SIGKILL
        _, status = os.waitpid(pid, 0)
        got = ("exit", os.WEXITSTATUS(status)) if os.WIFEXITED(status) else ("signal", os.WTERMSIG(status))
        assert got == expect


def test_enter_cost(make, capsys):
    sb = make()
    rounds = 5
    start = time.perf_counter()
    for _ in range(rounds):
        _, status = os.waitpid(_fork_enter(sb, lambda: os._exit(0)), 0)
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    ms = (time.perf_counter() - start) / rounds * 1000
    with capsys.disabled():
        print(f"\nfork + enter + exit: {ms:.1f} ms")
    assert ms < 2000


def test_enter_without_prepare_exits_70_instead_of_running_unsandboxed(tmp_path):
    sb = Sandbox(tmp_path / "never-prepared", uid=299999)
    _, status = os.waitpid(_fork_enter(sb, lambda: os._exit(0)), 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == sandbox.EXIT_ENTER_FAILED


def test_close_removes_everything(make):
    sb = make(memory_bytes=64 << 20)
    cgroups = list(sb._cgroups)
    assert cgroups and all(os.path.isdir(c) for c in cgroups)
    proc = sb.spawn([PY, "-c", "import time; time.sleep(100)"])
    time.sleep(0.3)
    uid = sb.uid
    sb.close()
    assert proc.poll() == -signal.SIGKILL
    assert not sb.private.exists() and not any(os.path.isdir(c) for c in cgroups)
    assert uid not in sandbox._held_uids
