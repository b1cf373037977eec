"""Where grading tasks run: this process, a local pool of processes, or a Dask cluster (issue 22).

The grading loop (:func:`autograder.grade.grade_all`) sees one interface, an :class:`Engine`: a
``concurrent.futures`` executor to submit :func:`autograder.grade._grade_task` to, and how many tasks to keep
submitted. Three engines implement it:

* :class:`InlineEngine`: in this process, one submission at a time (``--workers 1``);
* :class:`PoolEngine`: a ``ProcessPoolExecutor`` of ``--workers`` spawned processes (the default);
* :class:`DaskEngine`: ``Client.get_executor()`` of a Dask cluster, ``--scheduler local:N`` (a ``LocalCluster`` of
  N single-threaded worker processes on 127.0.0.1) or ``--scheduler tls://HOST:8786`` (an existing cluster).

A task is plain data both ways (:func:`autograder.grade.make_task`): the notebook's bytes, the student's other
files, the options and the course versions go out; the journal entry, the feedback page's HTML and the worker's
name come back. Workers share no file system with the instructor, whose process alone writes ``OUT/``.

A worker refuses a task when its course code (the grader, course_lib, the lesson's notebooks) differs from the
instructor's (:class:`CourseCodeMismatch`), or when it cannot sandbox student code (:class:`NoSandboxHere`): it
never grades with other tests than the instructor's, nor unconfined.
"""
from __future__ import annotations

import concurrent.futures as cf
import ipaddress
import os
import socket
import sys
import time
from pathlib import Path

# The one command that prepares a grading worker, from a checkout of the instructor's commit.
PREPARE_WORKER = "make install && .venv/bin/python -m course_lib.data --profile {profile}"
# A task whose worker died is retried once elsewhere; dying with a second worker makes it ``kernel_died``.
ALLOWED_FAILURES = 1
# How often the loop asks a Dask scheduler about its workers (seconds): they come and go.
REFRESH_SECONDS = 1.0


class WorkerRefused(RuntimeError):
    """A worker refused a task and graded nothing: the submission is not graded (nor journaled) in this run."""

    def __init__(self, message: str, worker: str = "", differs: tuple = ()):
        super().__init__(message)
        self.worker, self.differs = worker, tuple(differs)

    def __reduce__(self):  # Dask and the local pool send it back pickled: keep the worker and what differs
        return (type(self), (str(self), self.worker, self.differs))


class CourseCodeMismatch(WorkerRefused):
    """The worker's course code (grader, course_lib, the lesson's notebooks) differs from the instructor's."""


class NoSandboxHere(WorkerRefused):
    """The worker cannot make sandboxes (not root, no namespaces) and the run did not ask for --no-sandbox."""


class InsecureScheduler(ValueError):
    """A scheduler address the grader will not use: unencrypted to another machine, or TLS without certificates."""


# ------------------------------------------------------------------------------------ in a worker

def _dask_worker():
    """The Dask worker this task runs in, or None."""
    if "distributed" not in sys.modules:  # never import Dask into a local pool's worker just to ask
        return None
    from distributed import get_worker

    try:
        return get_worker()
    except ValueError:  # not in a Dask worker
        return None


def worker_name() -> str:
    """This worker as the instructor's messages name it: a Dask worker's address, else host and pid."""
    worker = _dask_worker()
    return worker.address if worker is not None else f"{socket.gethostname()} pid {os.getpid()}"


def check_versions(expected: dict, lesson: str, worker: str | None = None) -> None:
    """Raise :class:`CourseCodeMismatch` unless this worker's course versions for ``lesson`` are ``expected``."""
    from autograder.grade import course_versions

    mine = course_versions(lesson)
    differs = tuple(k for k in sorted(set(expected) | set(mine)) if expected.get(k) != mine.get(k))
    if differs:
        worker = worker or worker_name()
        what = ", ".join(f"{k} {mine.get(k)} (instructor: {expected.get(k)})" for k in differs)
        raise CourseCodeMismatch(
            f"worker {worker} refused to grade: its course code differs from the instructor's ({what}). Check out "
            f"the instructor's commit there and run `{PREPARE_WORKER.format(profile='<profile>')}`, then restart "
            "the worker.", worker, differs)


_SANDBOX: tuple[bool, str] | None = None


def check_sandbox(opts, worker: str | None = None) -> None:
    """Raise :class:`NoSandboxHere` when this worker cannot sandbox student code and the run wants it sandboxed:
    grading there would turn every submission into an error (asked once per worker process)."""
    global _SANDBOX
    if not opts.sandbox:
        return
    if _SANDBOX is None:
        from autograder.sandbox import available

        _SANDBOX = available()
    ok, why = _SANDBOX
    if not ok:
        raise NoSandboxHere(f"worker {worker or worker_name()} refused to grade: no sandbox can be made there "
                            f"({why}). Run workers as root on Linux (README: Grading on Dask).", worker or "")


def kernel_gpu_env() -> dict:
    """The environment a kernel of this Dask worker gets for its GPU: only the worker's own device.

    A worker sees the GPUs in its ``CUDA_VISIBLE_DEVICES``; dask-cuda lists all of a machine's GPUs with the
    worker's own first, so a kernel is given that first one alone. Outside a Dask worker: nothing to change (the
    local pool's workers each hold one GPU already)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if not visible or "," not in visible or _dask_worker() is None:
        return {}
    return {"CUDA_VISIBLE_DEVICES": visible.split(",")[0].strip()}


# ------------------------------------------------------------------------------------ engines

class Engine:
    """A concurrent.futures executor and the pace to feed it: the grading loop keeps :meth:`window` tasks
    submitted, each of which says whether it is among the last ones (no spare kernel then)."""

    name = "engine"
    executor: cf.Executor

    def slots(self) -> int:
        """Tasks that can run at once now."""
        return 1

    def window(self) -> int:
        """Tasks to keep submitted: a few ahead keep a local pool fed; a Dask cluster gets only what it can run,
        so that a worker that dies takes no queued, innocent task down with it (Dask counts each as suspect)."""
        return self.slots()

    def submit(self, fn, task: dict) -> cf.Future:
        return self.executor.submit(fn, task)

    def avoid(self, worker: str) -> None:
        """Send no more tasks to ``worker`` (it refused one)."""

    def load(self, pending: int) -> tuple[int, int]:
        """(busy, all) workers, for the progress bar."""
        n = self.slots()
        return min(pending, n), n

    def describe(self) -> str:
        return self.name

    def close(self) -> None:
        self.executor.shutdown(wait=True)


class _InlineExecutor(cf.Executor):
    """Runs each task in this process when it is submitted."""

    def submit(self, fn, /, *args, **kwargs):
        fut: cf.Future = cf.Future()
        try:
            fut.set_result(fn(*args, **kwargs))
        except Exception as e:
            fut.set_exception(e)
        return fut


class InlineEngine(Engine):
    name = "this process"

    def __init__(self):
        self.executor = _InlineExecutor()


class PoolEngine(Engine):
    """``workers`` spawned processes; each takes one GPU (round robin) when there are GPUs."""

    def __init__(self, workers: int):
        import multiprocessing as mp

        from autograder import pool as kernels
        from autograder.grade import _init_worker

        ctx = mp.get_context("spawn")
        gpus, ids = kernels.gpu_ids(), ctx.Queue()
        for i in range(workers):
            ids.put(gpus[i % len(gpus)] if gpus else None)
        self.workers = workers
        self.name = f"{workers} local worker processes"
        self.executor = cf.ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker,
                                               initargs=(ids,))

    def slots(self) -> int:
        return self.workers

    def window(self) -> int:
        return 2 * self.workers


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    try:
        found = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except OSError:
        return False
    return bool(found) and all(ipaddress.ip_address(str(a).split("%")[0]).is_loopback for a in found)


def check_address(address: str, security=None) -> None:
    """Refuse a scheduler address that would send student work and grades unprotected: ``tcp://`` is fine only to
    this machine (loopback); anything else must be ``tls://`` with a CA, a certificate and a key."""
    scheme, sep, rest = address.partition("://")
    if not sep:
        raise InsecureScheduler(f"{address!r}: give the protocol, e.g. tls://HOST:8786 (or tcp://127.0.0.1:8786 "
                                "for a scheduler on this machine), or local:N for a cluster started here.")
    hostport = rest.split("/", 1)[0]
    host = hostport[: hostport.index("]") + 1] if hostport.startswith("[") else hostport.rsplit(":", 1)[0]
    if scheme == "tls":
        if security is None:
            raise InsecureScheduler(f"{address}: TLS needs --tls-ca-file, --tls-cert and --tls-key (the CA that "
                                    "signed the cluster's certificates, and this client's certificate and key).")
    elif scheme == "tcp":
        if not _loopback(host):
            raise InsecureScheduler(
                f"refusing {address}: tcp:// is neither encrypted nor authenticated, and {host} is not this "
                "machine; anyone on the network could read the submissions or send the workers code. Start the "
                f"scheduler and workers with TLS and use tls://{hostport} with --tls-ca-file, --tls-cert and "
                "--tls-key (README: Grading on Dask).")
    else:
        raise InsecureScheduler(f"{address}: only tls:// (or tcp:// to this machine) is supported.")


def security(ca_file: str | None, cert: str | None, key: str | None):
    """Dask's ``Security`` for a TLS scheduler, or None when no file was given; all three or none."""
    given = [x for x in (ca_file, cert, key) if x]
    if not given:
        return None
    if len(given) != 3:
        raise InsecureScheduler("TLS needs all three of --tls-ca-file, --tls-cert and --tls-key.")
    for path in (ca_file, cert, key):
        if path is None or not Path(path).is_file():
            raise InsecureScheduler(f"{path}: no such file.")
    from distributed import Security

    return Security(tls_ca_file=ca_file, tls_client_cert=cert, tls_client_key=key, require_encryption=True)


def _gpu_plugin(gpus: list[str]):
    """A worker plugin giving each worker of a LocalCluster one of this machine's GPUs (by its name, round robin),
    as the local pool does; it runs again on a worker that was restarted."""
    from distributed import WorkerPlugin

    class OneGpu(WorkerPlugin):
        name = "autograder-one-gpu"

        def __init__(self, ids):
            self.ids = list(ids)

        def setup(self, worker):
            try:
                i = int(worker.name)
            except (TypeError, ValueError):
                i = sum(map(ord, str(worker.name)))
            os.environ["CUDA_VISIBLE_DEVICES"] = self.ids[i % len(self.ids)]

    return OneGpu(gpus)


class DaskEngine(Engine):
    """A Dask cluster through ``Client.get_executor()``: ``local:N`` starts a LocalCluster of N worker processes
    with one thread each (the grading pools fork from the task's thread) bound to 127.0.0.1; an address connects
    to a running scheduler (see :func:`check_address`). A ``gpu`` run asks each task for ``resources={"GPU": 1}``:
    only workers started with ``--resources GPU=1`` take it."""

    def __init__(self, scheduler: str, profile: str = "ci", security=None, log=print):
        import dask
        from distributed import Client

        self.cluster = None
        self.log = log
        self.gpu = profile == "gpu"
        self.avoided: set[str] = set()
        self._seen: list[str] = []
        self._seen_at, self._busy, self._busy_at = 0.0, 0, 0.0
        self._waiting_said = False
        if scheduler.startswith("local:"):
            from distributed import LocalCluster

            try:
                n = int(scheduler.split(":", 1)[1])
            except ValueError:
                raise InsecureScheduler(f"{scheduler!r}: local:N needs a number of workers, e.g. local:4") from None
            config = {"distributed.scheduler.allowed-failures": ALLOWED_FAILURES,
                      "distributed.scheduler.worker-saturation": 1.0}
            with dask.config.set(config):
                self.cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, host="127.0.0.1",
                                            dashboard_address="127.0.0.1:0", worker_dashboard_address=None,
                                            resources={"GPU": 1} if self.gpu else None)
            self.client = Client(self.cluster)
            from autograder import pool as kernels

            gpus = kernels.gpu_ids()
            if gpus:
                self.client.register_plugin(_gpu_plugin(gpus))
            self.name = f"Dask LocalCluster of {n} worker processes at {self.cluster.scheduler_address}"
        else:
            check_address(scheduler, security)
            try:
                self.client = Client(scheduler, security=security, timeout="30s")
            except (OSError, TimeoutError) as e:
                raise ConnectionError(f"no Dask scheduler answered at {scheduler} ({type(e).__name__}: {e}). "
                                      "Start one (`dask scheduler`) and its workers first (README: Grading on "
                                      "Dask).") from None
            self._allow_one_failure()
            self.name = f"Dask scheduler {scheduler}"
        kwargs: dict[str, object] = {"pure": False}
        if self.gpu:
            kwargs["resources"] = {"GPU": 1}
        self.executor = self.client.get_executor(**kwargs)

    @property
    def scheduler_address(self) -> str:
        return str(getattr(self.client.scheduler, "address", ""))

    def _allow_one_failure(self) -> None:
        """A task is retried once when its worker dies; a second death makes it ``KilledWorker`` (graded
        ``kernel_died``). That is the scheduler's ``allowed-failures``: set it there if it differs (the functions
        sent are lambdas: the scheduler needs no copy of this project)."""
        try:
            old = self.client.run_on_scheduler(lambda dask_scheduler: dask_scheduler.allowed_failures)
            if old != ALLOWED_FAILURES:
                n = ALLOWED_FAILURES
                self.client.run_on_scheduler(lambda dask_scheduler: setattr(dask_scheduler, "allowed_failures", n))
                self.log(f"note: the scheduler's allowed-failures was {old}, set to {n}: a submission that kills "
                         f"{n + 1} workers is graded kernel_died (start the scheduler with "
                         f"DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES={n} to make this its own setting).")
        except Exception as e:  # a scheduler that runs no functions sent to it: say what it means
            self.log(f"warning: could not read or set the scheduler's allowed-failures ({type(e).__name__}: {e}); "
                     "a task that kills workers is retried as often as the scheduler allows.")

    def _workers(self) -> list[str]:
        """The workers that may take our tasks now (GPU runs: those declaring a GPU), asked at most every second."""
        now = time.monotonic()
        if now - self._seen_at >= REFRESH_SECONDS:
            try:
                info = self.client.scheduler_info(n_workers=-1).get("workers", {})
            except Exception:  # the scheduler is gone: the futures say so
                info = {}
            self._seen = [addr for addr, w in info.items() if addr not in self.avoided
                          and (not self.gpu or (w.get("resources") or {}).get("GPU", 0) >= 1)]
            self._seen_at = now
            if not self._seen and not self._waiting_said:
                self._waiting_said = True
                need = "a worker started with --resources GPU=1" if self.gpu else "a worker"
                self.log(f"waiting for {need} to join {self.scheduler_address}")
        return self._seen

    def slots(self) -> int:
        # One task at a time per worker process (the grading pools are per process; see grade._ONE_AT_A_TIME).
        return len(self._workers())

    def window(self) -> int:
        n = self.slots()
        if not n and self.avoided:  # workers there were, and every one that could take the task refused
            raise NoWorkers("every worker refused: none has the instructor's course code")
        return n

    def submit(self, fn, task: dict) -> cf.Future:
        if self.avoided:  # only workers that have not refused
            workers = self._workers()
            if not workers:
                raise NoWorkers("every worker refused: none has the instructor's course code")
            return self.executor.submit(fn, task, workers=workers)
        return self.executor.submit(fn, task)

    def avoid(self, worker: str) -> None:
        self.avoided.add(worker)
        self._seen_at = 0.0

    def load(self, pending: int) -> tuple[int, int]:
        workers = self._workers()
        now = time.monotonic()
        if now - self._busy_at >= 2 * REFRESH_SECONDS:
            try:
                processing = self.client.processing(workers=workers) if workers else {}
                self._busy = sum(1 for keys in processing.values() if keys)
            except Exception:
                self._busy = min(pending, len(workers))
            self._busy_at = now
        return min(self._busy, len(workers)), len(workers)

    def dashboard(self) -> str | None:
        """Dask's dashboard link, when the scheduler serves one (a LocalCluster's only on 127.0.0.1, and only
        with bokeh installed)."""
        if self.cluster is not None:
            try:
                import bokeh  # noqa: F401  -- the dashboard's pages need it
            except ImportError:
                return None
        try:
            if "dashboard" not in self.client.scheduler_info(n_workers=0).get("services", {}):
                return None
            return self.client.dashboard_link
        except Exception:
            return None

    def describe(self) -> str:
        link = self.dashboard()
        return self.name + (f"; dashboard {link}" if link else "")

    def close(self) -> None:
        """Let go of the cluster. A LocalCluster's workers first shut down their pools (spare kernels, fork
        servers, judging zygotes) so nothing is left to kill; a running cluster's workers keep theirs warm for
        the next run."""
        try:
            self.executor.shutdown(wait=False)
        except Exception:
            pass
        try:
            if self.cluster is not None:
                self.client.run(close_pools, on_error="ignore")
        except Exception:
            pass
        try:
            self.client.close(timeout=10)
        finally:
            if self.cluster is not None:
                self.cluster.close(timeout=20)


def close_pools() -> None:
    """In a worker: shut down this process's kernels, fork server and judging zygotes."""
    from autograder import pool
    from autograder.judge import close_zygotes

    pool.close_all()
    close_zygotes()


class NoWorkers(RuntimeError):
    """No worker may take the next task (every one refused)."""


def open_engine(scheduler: str | None, workers: int, tasks: int, profile: str = "ci", security=None,
                log=print) -> Engine:
    """The engine for a run: Dask when ``scheduler`` is given, else a local pool of ``workers`` processes, or this
    process when one worker (or one task) is enough."""
    if scheduler:
        return DaskEngine(scheduler, profile=profile, security=security, log=log)
    if workers <= 1 or tasks <= 1:
        return InlineEngine()
    return PoolEngine(workers)


def failure(exc: BaseException) -> str:
    """What a task's exception means to the loop: ``refused`` (the worker's course code differs, or it has no
    sandbox: not graded),
    ``killed`` (it took workers down with it: graded ``kernel_died``) or ``lost`` (the worker pool or the cluster
    went away: not graded, the next run grades it)."""
    if isinstance(exc, WorkerRefused):
        return "refused"
    if "distributed" in sys.modules:
        from distributed import KilledWorker

        if isinstance(exc, KilledWorker):
            return "killed"
    return "lost"
