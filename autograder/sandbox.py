"""Run student code as an unprivileged process that sees and reaches only what it needs.

A sandbox is a set of processes that all run as one uid of their own (unique among the live
sandboxes of this machine) in their own pid, mount, network, IPC and UTS namespaces, under a
cgroup that caps memory and the number of processes. :meth:`Sandbox.enter` turns the calling
process into such a process without exec, so a child forked from a server that has already
imported torch keeps those imports (the way Android's and Chromium's zygotes do it);
:meth:`Sandbox.spawn` runs a program inside (``python -m autograder.sandbox SPEC -- argv``).

What it stops:

* reading anything that is not shown: the new root is a tmpfs that holds only read-only binds
  of the Python install, site-packages, ``course_lib``, the course data, ``/usr`` ``/etc`` and
  the like, plus the private folder. Submissions, grader output, ``solutions/``,
  ``autograder/``, ``.git``, other sandboxes and every socket of the host are not there;
* writing anywhere but the private folder and the small ``/tmp`` and ``/dev/shm`` tmpfs;
* seeing or signalling other processes (a fresh pid namespace and ``/proc``; another uid);
* the network: a new network namespace holds only its own loopback;
* outliving the run: when the sandboxed process exits, the pid namespace's init goes, and the
  kernel kills everything left inside; :meth:`Sandbox.close` also kills the cgroup;
* taking the machine's memory (shared and anonymous mappings and tmpfs included, as the
  cgroup counts them) or forking without end (cgroup ``pids.max``);
* getting privileges back: ``setresuid`` clears every capability, ``no_new_privs`` keeps
  setuid binaries from giving any, and the process has no controlling terminal (a new
  session), so it cannot push keystrokes into the grader's terminal.

What it does not stop:

* CPU time and wall time: the caller's time limits end a run (:meth:`Sandbox.kill_all`);
* kernel exploits: there is no seccomp filter; the whole system call surface is reachable;
* reading what the forking server held in memory at fork time: a forked child is a copy of
  it, so a server must not hold secrets before it forks;
* reading world-readable files inside the shown folders (they are shown to be used);
* filling the disk through the private folder (no quota), or using the GPU beyond its memory.

Without root, namespaces or ``pivot_root`` no sandbox can be made: :func:`available` says
why, and the grader refuses to run student code unless told ``--no-sandbox``.
"""
from __future__ import annotations

import ctypes
import errno
import fcntl
import json
import os
import platform
import random
import resource
import shutil
import signal
import site
import socket
import stat
import struct
import subprocess
import sys
import time
from dataclasses import dataclass, field
from functools import lru_cache
from importlib.util import find_spec
from pathlib import Path

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
MNT_DETACH = 0x2

# mount_setattr(2) (Linux 5.12) makes a whole bound tree read-only in one call; MS_REMOUNT
# only changes the top mount of a recursive bind and leaves the ones below it writable.
MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4
MOUNT_ATTR_NOEXEC = 0x8
AT_FDCWD = -100
AT_RECURSIVE = 0x8000
SYS_MOUNT_SETATTR = 442  # one number on every architecture since 5.1

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_NO_NEW_PRIVS = 38

_SYSCALLS = {  # architecture: (pivot_root, keyctl)
    "x86_64": (155, 250),
    "aarch64": (41, 219),
    "riscv64": (41, 219),
}
KEYCTL_JOIN_SESSION_KEYRING = 1

UID_LOW, UID_HIGH = 200000, 300000
STATE_DIR = Path(os.environ.get("AUTOGRADER_SANDBOX_DIR") or "/run/autograder-sandbox")
REPO = Path(__file__).resolve().parent.parent

# Signals the relay passes on to the sandboxed process. SIGTERM is not among them: the relay
# answers it with SIGKILL of the whole sandbox.
FORWARDED = (signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2, signal.SIGHUP, signal.SIGQUIT)
# Pid 1 of a sandbox (see Sandbox.enter): reaps orphans until the relay, which holds the other end
# of fd 3, goes. Chrooted into an empty folder so its /proc/1/mountinfo (readable by anyone)
# shows nothing of the host. _signal, not signal: no enum import at every start.
REAPER = """
import os, sys, _signal
os.chroot(sys.argv[1])
os.chdir("/")
os.closerange(4, 2 ** 31 - 1)
def reap(*_):
    try:
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass
    except ChildProcessError:
        pass
_signal.signal(_signal.SIGCHLD, reap)
reap()
while os.read(3, 1):
    pass
"""
EXIT_ENTER_FAILED = 70  # EX_SOFTWARE: the sandbox could not be made, nothing ran
EXIT_EXEC_FAILED = 127

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.unshare.argtypes = [ctypes.c_int]
_libc.sethostname.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
_libc.syscall.restype = ctypes.c_long


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


def _check(ret: int, what: str) -> int:
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return ret


def _mount(src: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    enc = lambda s: None if s is None else os.fsencode(s)  # noqa: E731
    _check(_libc.mount(enc(src), enc(target), enc(fstype), flags, enc(data)), f"mount {src} on {target}")


def _unshare(flags: int) -> None:
    _check(_libc.unshare(flags), "unshare")


def _prctl(option: int, arg: int) -> None:
    _check(_libc.prctl(option, arg, 0, 0, 0), f"prctl {option}")


def _syscall_number(index: int) -> int | None:
    numbers = _SYSCALLS.get(platform.machine())
    return numbers[index] if numbers else None


def _pivot_root(new_root: str, put_old: str) -> None:
    nr = _syscall_number(0)
    if nr is None:
        raise OSError(errno.ENOSYS, f"pivot_root: unknown architecture {platform.machine()}")
    _check(_libc.syscall(ctypes.c_long(nr), os.fsencode(new_root), os.fsencode(put_old)), "pivot_root")


def _set_mount_attrs(target: str, attrs: int, ms_flags: int) -> None:
    """Set ``attrs`` on the mount at ``target`` and every mount below it."""
    attr = _MountAttr(attrs, 0, 0, 0)
    ret = _libc.syscall(ctypes.c_long(SYS_MOUNT_SETATTR), ctypes.c_int(AT_FDCWD), os.fsencode(target),
                        ctypes.c_uint(AT_RECURSIVE), ctypes.byref(attr), ctypes.c_size_t(ctypes.sizeof(attr)))
    if ret == 0:
        return
    if ctypes.get_errno() not in (errno.ENOSYS, errno.EINVAL):
        _check(ret, f"mount_setattr {target}")
    # Older kernels: remount each mount of the tree, top first, as /proc/self/mountinfo lists them.
    with open("/proc/self/mountinfo", "rb") as f:
        points = [_unescape(line.split()[4].decode()) for line in f]
    for point in points:
        if point == target or point.startswith(target.rstrip("/") + "/"):
            _mount(None, point, None, MS_REMOUNT | MS_BIND | ms_flags)


def _close_fds_except(keep) -> None:
    keep = sorted({fd for fd in keep if fd >= 3})
    low = 3
    for fd in keep + [2 ** 31 - 1]:
        if fd > low:
            os.closerange(low, fd)
        low = fd + 1


def _die(message: str) -> None:
    """Leave a process that could not be sandboxed: it must never go on running unsandboxed."""
    try:
        os.write(2, (f"sandbox: {message}"[:2000].replace("\n", " ") + "\n").encode(errors="replace"))
    finally:
        os._exit(EXIT_ENTER_FAILED)


def _exit_like(status: int) -> None:
    """End this process the way the process with wait ``status`` ended."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        # The relay is a copy of the server: a core dump of it would be large and hold its memory.
        _prctl(PR_SET_DUMPABLE, 0)
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if sig not in (signal.SIGKILL, signal.SIGSTOP):
            signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, [sig])
        os.kill(os.getpid(), sig)
        os._exit(128 + sig)
    os._exit(os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else EXIT_ENTER_FAILED)


# ----------------------------------------------------------------------------------------------
# uids


def _state_dir(*parts: str) -> Path:
    """A folder under STATE_DIR that only root can write (the uid locks and the new root's mount point)."""
    path = STATE_DIR.joinpath(*parts)
    for p in [STATE_DIR, path]:
        p.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = os.lstat(p)
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != 0 or st.st_mode & 0o022:
            raise PermissionError(f"{p} must be a folder owned by root that no one else can write")
    return path


_held_uids: dict[int, int] = {}  # uid -> fd of its lock file, held while the sandbox lives


def allocate_uid(low: int = UID_LOW, high: int = UID_HIGH) -> int:
    """A uid in [low, high) that no live sandbox on this machine uses, until :func:`release_uid`.

    Each uid has a lock file; its owner holds an ``flock`` on it, which the kernel drops when
    the owner dies, so a crashed grader's uids come back by themselves.
    """
    folder = _state_dir("uids")
    span = high - low
    start = random.randrange(span)
    for i in range(span):
        uid = low + (start + i) % span
        if uid in _held_uids:
            continue
        path = folder / str(uid)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            # Its owner may have released it (unlinked the file) between our open and flock.
            st = os.fstat(fd)
            now = os.stat(path, follow_symlinks=False)
            if (st.st_dev, st.st_ino) != (now.st_dev, now.st_ino):
                raise BlockingIOError
        except (BlockingIOError, FileNotFoundError):
            os.close(fd)
            continue
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        _held_uids[uid] = fd
        return uid
    raise RuntimeError(f"no free sandbox uid in [{low}, {high})")


def release_uid(uid: int) -> None:
    fd = _held_uids.pop(uid, None)
    if fd is None:
        return
    # Unlink while still locked: whoever opened the old file sees it is gone and tries again.
    try:
        os.unlink(_state_dir("uids") / str(uid))
    except FileNotFoundError:
        pass
    os.close(fd)


# ----------------------------------------------------------------------------------------------
# cgroups


def _unescape(field_: str) -> str:
    return field_.encode().decode("unicode_escape").encode("latin-1").decode()


def _cgroup_mounts() -> tuple[dict[str, str], str | None]:
    """({controller: v1 mount point} for memory and pids, the cgroup2 mount point or None)."""
    v1: dict[str, str] = {}
    v2 = None
    with open("/proc/self/mounts") as f:
        for line in f:
            _dev, point, fstype, opts = line.split()[:4]
            if fstype == "cgroup":
                for opt in opts.split(","):
                    if opt in ("memory", "pids"):
                        v1.setdefault(opt, _unescape(point))
            elif fstype == "cgroup2" and v2 is None:
                v2 = _unescape(point)
    return v1, v2


def _write(path: Path, value) -> None:
    with open(path, "w") as f:
        f.write(str(value))


def _read(path: Path) -> str:
    with open(path) as f:
        return f.read()


def _cgroup_pids(folder: Path) -> list[int]:
    try:
        return [int(x) for x in _read(folder / "cgroup.procs").split()]
    except OSError:
        return []


def _make_cgroup(folder: Path) -> None:
    """Make ``folder``, emptying it first if a dead grader left it behind with the same uid."""
    if folder.is_dir():
        for _ in range(100):
            pids = _cgroup_pids(folder)
            if not pids:
                break
            for pid in pids:
                _kill(pid, signal.SIGKILL)
            time.sleep(0.01)
        try:  # start from a fresh one: old limits could refuse the new ones (memsw < limit)
            folder.rmdir()
        except OSError:
            pass
    folder.mkdir(parents=True, exist_ok=True)


def _rmdir(folder) -> None:
    """Remove an empty cgroup, waiting a little for the last exiting tasks to leave it."""
    for _ in range(100):
        try:
            os.rmdir(folder)
            return
        except FileNotFoundError:
            return
        except OSError:  # EBUSY
            time.sleep(0.01)


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


# ----------------------------------------------------------------------------------------------
# the sandbox


@dataclass
class Sandbox:
    """One sandbox: a uid, a private folder, cgroup limits; see the module docstring."""

    private: Path
    uid: int | None = None
    memory_bytes: int = 0
    pids_max: int = 256
    readonly: tuple = ()
    binds: dict = field(default_factory=dict)
    gpu: bool = True
    tmpfs_mb: int = 512
    # How each limit is enforced after prepare(): {"memory": "cgroup-v1"|"cgroup-v2"|"rlimit-as"|"none",
    # "pids": "cgroup-v1"|"cgroup-v2"|"rlimit-nproc"|"none"}.
    enforcement: dict = field(default_factory=dict, init=False)
    _cgroups: list = field(default_factory=list, init=False, repr=False)  # folders to join
    _memory_cgroup: str | None = field(default=None, init=False, repr=False)
    _memory_v2: bool = field(default=False, init=False, repr=False)
    _owns_uid: bool = field(default=False, init=False, repr=False)
    _prepared: bool = field(default=False, init=False, repr=False)
    _relays: list = field(default_factory=list, init=False, repr=False)
    _oom: bool = field(default=False, init=False, repr=False)
    _lifeline: int = field(default=-1, init=False, repr=False)  # the relay's end of the reaper's pipe

    def __post_init__(self):
        self.private = Path(os.path.abspath(self.private))
        self.readonly = tuple(str(p) for p in self.readonly)
        self.binds = {str(k): str(v) for k, v in dict(self.binds).items()}

    # ---- in the parent

    def prepare(self) -> "Sandbox":
        """Make the private folder and the cgroups (as root, in the parent). Idempotent."""
        if self._prepared:
            return self
        if os.geteuid() != 0:
            raise PermissionError("a sandbox needs root")
        if "/" in {os.path.normpath(p) for p in self.readonly}:
            raise ValueError("the host root cannot be shown in a sandbox")
        if self.uid is None:
            self.uid = allocate_uid()
            self._owns_uid = True
        elif self.uid <= 0:
            raise ValueError("a sandbox uid must not be root")
        try:
            self.private.mkdir(parents=True, exist_ok=True)
            if not stat.S_ISDIR(os.lstat(self.private).st_mode):
                raise ValueError(f"{self.private} is not a folder")
            os.chown(self.private, self.uid, self.uid)
            os.chmod(self.private, 0o700)
            _state_dir("root")
            _state_dir("empty")
            self._make_cgroups()
        except BaseException:
            if self._owns_uid:
                release_uid(self.uid)
                self.uid, self._owns_uid = None, False
            raise
        self._prepared = True
        return self

    def _make_cgroups(self) -> None:
        name = f"sandbox-{self.uid}"
        v1, v2 = _cgroup_mounts()
        self.enforcement = {"memory": "none", "pids": "none"}
        if v2 and "memory" in _read(Path(v2) / "cgroup.controllers").split():
            folder = Path(v2) / "autograder" / name
            try:
                folder.parent.mkdir(exist_ok=True)
                for parent in (Path(v2), folder.parent):
                    wanted = {"memory", "pids"} & set(_read(parent / "cgroup.controllers").split())
                    have = set(_read(parent / "cgroup.subtree_control").split())
                    if wanted - have:
                        _write(parent / "cgroup.subtree_control", " ".join("+" + c for c in wanted - have))
                _make_cgroup(folder)
                if self.memory_bytes:
                    _write(folder / "memory.max", self.memory_bytes)
                    if (folder / "memory.swap.max").exists():
                        _write(folder / "memory.swap.max", 0)
                if (folder / "pids.max").exists():
                    _write(folder / "pids.max", self.pids_max or "max")
                    self.enforcement["pids"] = "cgroup-v2"
                self._cgroups = [str(folder)]
                self._memory_cgroup = str(folder)
                self._memory_v2 = True
                self.enforcement["memory"] = "cgroup-v2" if self.memory_bytes else "none"
            except OSError:  # e.g. a container whose cgroup2 root holds processes: try v1, then rlimits
                _rmdir(folder)
        if not self._memory_v2:
            for controller in ("memory", "pids"):
                if controller not in v1 or (controller == "memory" and not self.memory_bytes):
                    continue
                folder = Path(v1[controller]) / "autograder" / name
                try:
                    _make_cgroup(folder)
                    if controller == "memory":
                        _write(folder / "memory.limit_in_bytes", self.memory_bytes)
                        if (folder / "memory.memsw.limit_in_bytes").exists():
                            _write(folder / "memory.memsw.limit_in_bytes", self.memory_bytes)
                        self._memory_cgroup = str(folder)
                    else:
                        _write(folder / "pids.max", self.pids_max or "max")
                    self._cgroups.append(str(folder))
                    self.enforcement[controller] = "cgroup-v1"
                except OSError:
                    _rmdir(folder)
        if self.memory_bytes and self.enforcement["memory"] == "none":
            self.enforcement["memory"] = "rlimit-as"
        if self.pids_max and self.enforcement["pids"] == "none":
            self.enforcement["pids"] = "rlimit-nproc"

    def spawn(self, argv, env=None, cwd=None, **popen_kwargs) -> subprocess.Popen:
        """Start ``argv`` inside (``cwd`` is a path inside; the private folder by default).

        The returned process is the relay: its exit status is the program's, and the signals
        it gets reach the program (SIGTERM kills the whole sandbox).
        """
        self.prepare()
        spec = self.to_spec()
        spec.update(cwd=None if cwd is None else str(cwd), keep_fds=list(popen_kwargs.get("pass_fds", ())),
                    parent=os.getpid())
        # -I: the trusted runner ignores PYTHON* variables and the current folder of the caller's env.
        boot = f"import sys; sys.path.insert(0, {str(REPO)!r}); from autograder.sandbox import main; main()"
        cmd = [sys.executable, "-I", "-c", boot, json.dumps(spec), "--", *[os.fspath(a) for a in argv]]
        proc = subprocess.Popen(cmd, env=env, **popen_kwargs)
        self._relays.append(proc)
        return proc

    def to_spec(self) -> dict:
        return {"private": str(self.private), "uid": self.uid, "memory_bytes": self.memory_bytes,
                "pids_max": self.pids_max, "readonly": list(self.readonly), "binds": self.binds, "gpu": self.gpu,
                "tmpfs_mb": self.tmpfs_mb, "enforcement": self.enforcement, "cgroups": self._cgroups,
                "memory_cgroup": self._memory_cgroup, "memory_v2": self._memory_v2}

    @classmethod
    def from_spec(cls, spec: dict) -> "Sandbox":
        """The prepared sandbox ``spec`` describes (made by :meth:`to_spec` in the preparing process)."""
        sb = cls(private=spec["private"], uid=spec["uid"], memory_bytes=spec["memory_bytes"],
                 pids_max=spec["pids_max"], readonly=tuple(spec["readonly"]), binds=spec["binds"],
                 gpu=spec["gpu"], tmpfs_mb=spec["tmpfs_mb"])
        sb.enforcement = dict(spec["enforcement"])
        sb._cgroups = list(spec["cgroups"])
        sb._memory_cgroup = spec["memory_cgroup"]
        sb._memory_v2 = spec["memory_v2"]
        sb._prepared = True
        return sb

    def kill_all(self) -> None:
        """SIGKILL every process of the sandbox."""
        for proc in self._relays:
            if proc.poll() is None:
                _kill(proc.pid, signal.SIGKILL)
        folders = [Path(f) for f in self._cgroups]
        if self._memory_v2 and folders and (folders[0] / "cgroup.kill").exists():
            try:
                _write(folders[0] / "cgroup.kill", 1)
            except OSError:
                pass
        deadline = time.monotonic() + 5
        while folders and time.monotonic() < deadline:
            pids = [pid for f in folders for pid in _cgroup_pids(f)]
            if not pids:
                break
            for pid in pids:
                _kill(pid, signal.SIGKILL)
            time.sleep(0.005)
        if not folders and self.uid is not None:
            self._kill_uid()

    def _kill_uid(self) -> None:
        """Without a cgroup: the uid is this sandbox's alone, so every process running as it is ours."""
        for _ in range(50):
            found = False
            for entry in os.listdir("/proc"):
                if not entry.isdigit():
                    continue
                try:  # the real uid from status: /proc/PID of a non-dumpable process belongs to root
                    uids = next(line for line in _read(Path("/proc", entry, "status")).splitlines()
                                if line.startswith("Uid:")).split()[1:]
                except (OSError, StopIteration):
                    continue
                if str(self.uid) in uids:
                    found = True
                    _kill(int(entry), signal.SIGKILL)
            if not found:
                return
            time.sleep(0.01)

    def out_of_memory(self) -> bool:
        """Did the memory cgroup run out and kill (or have to refuse) something?"""
        if self._oom or not self._memory_cgroup:
            return self._oom
        folder = Path(self._memory_cgroup)
        try:
            if self._memory_v2:
                events = dict(line.split() for line in _read(folder / "memory.events").splitlines())
                self._oom = int(events.get("oom_kill", 0)) > 0 or int(events.get("oom", 0)) > 0
            else:
                control = dict(line.split() for line in _read(folder / "memory.oom_control").splitlines())
                if "oom_kill" in control:
                    self._oom = int(control["oom_kill"]) > 0 or control.get("under_oom") == "1"
                else:
                    self._oom = int(_read(folder / "memory.failcnt")) > 0
        except OSError:
            pass
        return self._oom

    def close(self, keep: bool = False) -> None:
        """Kill everything inside, remove the cgroups, give back the uid, and (unless ``keep``) the private folder."""
        if not self._prepared:
            return
        self.kill_all()
        for proc in self._relays:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        self.out_of_memory()  # read it while the cgroup is there
        for folder in self._cgroups:
            _rmdir(folder)
        self._cgroups = []
        self._memory_cgroup = None
        if self._owns_uid:
            assert self.uid is not None  # a uid of its own is one it was given in __post_init__
            release_uid(self.uid)
            self._owns_uid = False
        if not keep:
            shutil.rmtree(self.private, ignore_errors=True)
        self._prepared = False

    def __enter__(self) -> "Sandbox":
        return self.prepare()

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- in the forked child

    def enter(self, keep_fds=(), parent_pid: int | None = None) -> None:
        """Turn this (forked, root) process into the sandboxed process; returns only in there.

        Three processes come out of it:

        * the relay: this process. It stays in the host's mount namespace and runs only this
          module's code. It forwards SIGINT, SIGUSR1, SIGUSR2, SIGHUP and SIGQUIT, answers
          SIGTERM with SIGKILL of the whole sandbox, and exits the way the sandboxed process
          did (same exit code, or killed by the same signal). It dies with its parent
          (PR_SET_PDEATHSIG, which fires when the parent *thread* exits: fork or spawn from a
          thread that outlives the sandbox).
        * pid 1 of the new pid namespace, a reaper: a tiny ``python -I -S`` that the relay
          spawns (vfork + exec: no copy of a large server's page tables), chrooted into an
          empty folder, still root so the sandbox cannot signal or trace it. It reaps the
          orphans the sandboxed process leaves and exits when the relay goes; when pid 1 goes,
          the kernel kills everything left in the namespace. The relay kills it as soon as the
          sandboxed process has ended.
        * pid 2, the sandboxed process, forked from the relay, in which this method returns.
          It is not pid 1, so signals keep their default actions, and its parent (the relay)
          is outside the namespace: ``os.getppid()`` is 0. It runs as ``self.uid`` with no
          capabilities and ``no_new_privs``, its cwd and HOME the private folder, TMPDIR=/tmp,
          every fd >= 3 closed except ``keep_fds`` (Python objects that wrapped the closed fds
          must not be used or closed afterwards), signal handlers and mask as they were.

        ``parent_pid``: the pid the caller expects as this process's parent; if that one is
        already gone, the death signal would never come, so the process exits instead.
        Any failure ends the process with a line on stderr and exit code 70: never unsandboxed.
        """
        try:
            self._enter(tuple(keep_fds), parent_pid)
        except BaseException as exc:  # noqa: BLE001 -- whatever it was, the process must not go on
            _die(f"cannot enter the sandbox: {exc!r}")

    def _enter(self, keep_fds: tuple, parent_pid: int | None) -> None:
        if not self._prepared:
            raise RuntimeError("prepare() the sandbox in the parent first")
        _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if parent_pid is not None and os.getppid() != parent_pid:
            raise RuntimeError("the parent is gone")
        for folder in self._cgroups:
            _write(Path(folder) / "cgroup.procs", os.getpid())
        saved_handlers = {sig: signal.getsignal(sig) for sig in FORWARDED + (signal.SIGTERM, signal.SIGCHLD)}
        # Signals wait until each process has its handlers; SIG_DFL for SIGCHLD so that waitpid
        # sees the children even if the server ignores SIGCHLD.
        saved_mask = signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED + (signal.SIGTERM,))
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        # The relay takes the new network, IPC and UTS namespaces too (it needs none of the host's),
        # so that the reaper is in them; only the sandboxed process gets the new mount namespace.
        _unshare(CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS)
        _check(_libc.sethostname(b"sandbox", 7), "sethostname")
        _loopback_up()
        reaper = self._spawn_reaper()
        worker = os.fork()
        if worker == 0:
            self._worker(keep_fds, saved_handlers, saved_mask)
            return
        self._relay(worker, reaper)

    def _spawn_reaper(self) -> int:
        read_end, self._lifeline = os.pipe()
        try:
            actions = [(os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
                       (os.POSIX_SPAWN_OPEN, 1, "/dev/null", os.O_WRONLY, 0),
                       (os.POSIX_SPAWN_DUP2, read_end, 3)]
            argv = [sys.executable, "-I", "-S", "-c", REAPER, str(_state_dir("empty"))]
            return os.posix_spawn(sys.executable, argv, {}, file_actions=actions, setsid=True,
                                  setsigmask=(), setsigdef=FORWARDED + (signal.SIGTERM, signal.SIGCHLD))
        finally:
            os.close(read_end)

    def _relay(self, worker: int, reaper: int) -> None:
        try:
            def forward(sig, _frame):
                _kill(worker, sig)

            for sig in FORWARDED:
                signal.signal(sig, forward)
            # SIGKILL of pid 1 takes the whole namespace with it.
            signal.signal(signal.SIGTERM, lambda _sig, _frame: _kill(reaper, signal.SIGKILL))
            _close_fds_except({self._lifeline})
            signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED + (signal.SIGTERM,))
            _, status = os.waitpid(worker, 0)
            done, reaper_status = os.waitpid(reaper, os.WNOHANG)
            if done and os.WIFEXITED(reaper_status) and os.WEXITSTATUS(reaper_status):
                _die(f"the sandbox's pid 1 failed (exit code {os.WEXITSTATUS(reaper_status)})")
            _kill(reaper, signal.SIGKILL)
            if not done:
                os.waitpid(reaper, 0)  # returns once the kernel has killed all that was left inside
            _exit_like(status)
        finally:
            os._exit(EXIT_ENTER_FAILED)

    def _worker(self, keep_fds: tuple, saved_handlers: dict, saved_mask) -> None:
        try:
            _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
            os.setsid()  # no controlling terminal: no TIOCSTI into the grader's terminal
            _unshare(CLONE_NEWNS)
            self._build_root()
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
            for sig, handler in saved_handlers.items():
                if handler is not None:
                    signal.signal(sig, handler)
            _close_fds_except(keep_fds)
            os.chdir(self.private)
            self._drop_privileges()
            if self.memory_bytes and not self._memory_cgroup:
                resource.setrlimit(resource.RLIMIT_AS, (self.memory_bytes, self.memory_bytes))
            if self.pids_max and self.enforcement.get("pids") == "rlimit-nproc":
                # The uid is this sandbox's alone, so its process count is the sandbox's.
                resource.setrlimit(resource.RLIMIT_NPROC, (self.pids_max, self.pids_max))
            os.environ["HOME"] = str(self.private)
            os.environ["TMPDIR"] = "/tmp"
            signal.pthread_sigmask(signal.SIG_SETMASK, saved_mask)
        except BaseException as exc:  # noqa: BLE001
            _die(f"cannot make the sandbox: {exc!r}")

    def _drop_privileges(self) -> None:
        assert self.uid is not None  # __post_init__ gives every sandbox a uid
        os.setgroups([])
        os.setresgid(self.uid, self.uid, self.uid)
        os.setresuid(self.uid, self.uid, self.uid)  # all three non-zero: every capability goes
        if os.getuid() != self.uid or os.geteuid() != self.uid:
            raise PermissionError("setresuid did not take")
        _prctl(PR_SET_NO_NEW_PRIVS, 1)
        _prctl(PR_SET_DUMPABLE, 1)  # the uid change made it non-dumpable: it could not read its own /proc/self
        _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # the uid change cleared it
        nr = _syscall_number(1)
        if nr is not None:  # a session keyring of its own, not the server's
            _libc.syscall(ctypes.c_long(nr), ctypes.c_long(KEYCTL_JOIN_SESSION_KEYRING), ctypes.c_void_p(None))

    def _build_root(self) -> None:
        """Mount the new root on a tmpfs, pivot into it and drop the host's tree."""
        _mount(None, "/", None, MS_REC | MS_PRIVATE)
        root = str(_state_dir("root"))
        _mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "size=4m,mode=0755")
        at = lambda inside: root + inside  # noqa: E731
        tmpfs_opts = f"size={int(self.tmpfs_mb)}m,mode=1777"
        for inside in ("/tmp", "/dev/shm"):
            os.makedirs(at(inside), exist_ok=True)
            _mount("tmpfs", at(inside), "tmpfs", MS_NOSUID | MS_NODEV, tmpfs_opts)
        # Read-only paths: nested ones are already shown by their parent, and symlinks on the way
        # (/bin -> usr/bin) are made again as symlinks, so that nothing is bound through them.
        real_paths = []
        for path in self.readonly:
            links, real = _plan(path)
            if not os.path.exists(real):
                continue
            for link, target in links:
                if not os.path.lexists(at(link)):
                    os.makedirs(os.path.dirname(at(link)), exist_ok=True)
                    os.symlink(target, at(link))
            real_paths.append(real)
        kept: list[str] = []
        for real in sorted(set(real_paths), key=lambda p: (p.count("/"), p)):
            if not any(real == k or real.startswith(k.rstrip("/") + "/") for k in kept):
                kept.append(real)
        ro = (MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV, MS_RDONLY | MS_NOSUID | MS_NODEV)
        rw = (MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV, MS_NOSUID | MS_NODEV)
        for real in kept:
            _bind(real, at(real), *ro)
        for src, inside in sorted(self.binds.items(), key=lambda kv: os.path.normpath(kv[1]).count("/")):
            _bind(os.path.realpath(src), at(os.path.normpath(inside)), *ro)
        _bind(str(self.private), at(str(self.private)), *rw)
        os.makedirs(at("/proc"), exist_ok=True)
        _mount("proc", at("/proc"), "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
        devices = [f"/dev/{name}" for name in ("null", "zero", "full", "random", "urandom", "tty")]
        if self.gpu:
            devices += sorted(f"/dev/{n}" for n in os.listdir("/dev") if n.startswith("nvidia"))
        for dev in devices:
            if os.path.exists(dev):
                _bind(dev, at(dev), MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC, MS_NOSUID | MS_NOEXEC)
        for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                             ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")):
            os.symlink(target, at(f"/dev/{name}"))
        os.chdir(root)
        _pivot_root(".", ".")  # the old root is stacked under the new one...
        _check(_libc.umount2(b".", MNT_DETACH), "umount old root")  # ...and goes here
        os.chdir("/")
        _mount(None, "/", None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)


def _plan(path: str) -> tuple[list[tuple[str, str]], str]:
    """([(symlink, its target)] met on the way, the real path) for a host ``path``."""
    links = []
    parts = list(Path(os.path.normpath(os.path.abspath(path))).parts[1:])
    cur, i, hops = "/", 0, 0
    while i < len(parts):
        nxt = os.path.join(cur, parts[i])
        if os.path.islink(nxt) and hops < 40:
            hops += 1
            target = os.readlink(nxt)
            links.append((nxt, target))
            parts = list(Path(os.path.normpath(os.path.join(cur, target))).parts[1:]) + parts[i + 1:]
            cur, i = "/", 0
            continue
        cur, i = nxt, i + 1
    return links, cur


def _bind(src: str, target: str, attrs: int, ms_flags: int) -> None:
    """Bind ``src`` (with the mounts below it) at ``target`` and set ``attrs`` on all of them."""
    if os.path.isdir(src):
        if not os.path.isdir(target):
            os.makedirs(target)
    elif not os.path.exists(target):
        os.makedirs(os.path.dirname(target), exist_ok=True)
        os.close(os.open(target, os.O_CREAT | os.O_WRONLY | os.O_NOFOLLOW, 0o644))
    _mount(src, target, None, MS_BIND | MS_REC)
    _set_mount_attrs(target, attrs, ms_flags)


def _loopback_up() -> None:
    """Bring up ``lo`` of the new network namespace: programs that talk to themselves over 127.0.0.1 work."""
    siocgifflags, siocsifflags, iff_up = 0x8913, 0x8914, 0x1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        flags = struct.unpack("16sH", fcntl.ioctl(s, siocgifflags, struct.pack("16sH22x", b"lo", 0))[:18])[1]
        fcntl.ioctl(s, siocsifflags, struct.pack("16sH22x", b"lo", flags | iff_up))


# ----------------------------------------------------------------------------------------------
# what a course process needs, and whether sandboxes can be made here


def default_readonly() -> list[str]:
    """The host paths a course process needs to see, read-only, at their own paths.

    Not the repository root: it holds ``solutions/``, ``autograder/`` and ``.git``.
    """
    paths = [sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix, *site.getsitepackages()]
    user_site = site.getusersitepackages()
    if user_site in sys.path:
        paths.append(user_site)
    spec = find_spec("course_lib")  # finds the package without running it (it imports torch)
    locations = spec.submodule_search_locations if spec else None
    course_lib = Path(list(locations)[0]) if locations is not None else REPO / "course_lib"
    paths.append(str(course_lib))
    config = sys.modules.get("course_lib.config")
    if config is not None:
        paths.append(str(config.data_root()))
    else:  # what course_lib.config.data_root() says, without importing course_lib
        paths.append(os.path.expanduser(os.environ.get("COURSE_DATA_DIR") or str(course_lib.parent / "data")))
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    paths.append(os.environ.get("TORCH_HOME") or os.path.join(cache, "torch"))
    paths += ["/usr", "/bin", "/lib", "/lib64", "/sbin", "/etc", "/sys", "/opt"]
    out: list[str] = []
    for p in paths:
        p = os.path.abspath(p)
        if p not in out and os.path.lexists(p):
            out.append(p)
    return out


@lru_cache(maxsize=1)
def available() -> tuple[bool, str]:
    """(True, "") when sandboxes can be made here, else (False, why not)."""
    if not sys.platform.startswith("linux"):
        return False, "sandboxes need Linux"
    if os.geteuid() != 0:
        return False, "sandboxes need root (the grader makes namespaces and drops to a uid of their own)"
    if _syscall_number(0) is None:
        return False, f"unknown architecture {platform.machine()} (pivot_root's system call number)"
    try:
        root = str(_state_dir("root"))
    except OSError as exc:
        return False, f"no state folder: {exc}"
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # try the namespaces and pivot_root in a child, which then just exits
        try:
            os.close(read)
            _unshare(CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS)
            _mount(None, "/", None, MS_REC | MS_PRIVATE)
            _mount("tmpfs", root, "tmpfs", 0, "size=1m")
            os.chdir(root)
            _pivot_root(".", ".")
            os._exit(0)
        except BaseException as exc:  # noqa: BLE001
            os.write(write, str(exc).encode()[:500])
            os._exit(1)
    os.close(write)
    with os.fdopen(read, "rb") as f:
        reason = f.read().decode(errors="replace")
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        return False, f"cannot make namespaces or pivot_root here: {reason or 'status %d' % status}"
    return True, ""


def main(argv: list[str] | None = None) -> None:
    """``SPEC_JSON -- PROGRAM ARGS...``: run PROGRAM inside the prepared sandbox SPEC_JSON describes.

    ``--check`` says whether sandboxes can be made here.
    """
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--check"]:
        ok, why = available()
        print("sandboxes work here" if ok else f"no sandbox: {why}")
        sys.exit(0 if ok else 1)
    if len(argv) < 3 or argv[1] != "--":
        sys.exit("usage: python -m autograder.sandbox SPEC_JSON -- PROGRAM [ARGS...] | --check")
    try:
        spec = json.loads(argv[0])
        sb = Sandbox.from_spec(spec)
    except Exception as exc:  # noqa: BLE001
        _die(f"bad sandbox spec: {exc!r}")
    sb.enter(keep_fds=spec.get("keep_fds") or (), parent_pid=spec.get("parent"))
    program = argv[2:]
    try:
        if spec.get("cwd"):
            os.chdir(spec["cwd"])
        os.execvpe(program[0], program, os.environ)
    except OSError as exc:
        os.write(2, f"sandbox: cannot run {program[0]}: {exc.strerror}\n".encode(errors="replace"))
        os._exit(EXIT_EXEC_FAILED)


if __name__ == "__main__":
    main()
