"""Grading on Dask (issue 22): the local pool's grades on a LocalCluster and on separate `dask scheduler` /
`dask worker` processes, through a killed worker and a killed instructor; GPU work routed by resources; a worker
with other course code refuses; a submission that kills two workers is graded kernel_died; no student process
reaches the cluster.

One small class of a short copy of lesson 06 (its exercises without the training cells, as
tests/test_grade_cheating.py makes it) is graded by each engine. Workers are other processes, which a monkeypatch in
this one does not reach: they find the short copy through a ``sitecustomize`` on PYTHONPATH that points
``autograder`` at it (it is invisible inside the sandboxes, whose /tmp is their own).
"""
import copy
import csv
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import nbformat
import pytest

from autograder import cli, cluster, grade, notebooks

from grading import personalised, write_short_course

LESSON = "06_fill_level"
ROOT = Path(__file__).resolve().parent.parent
DASK = str(Path(sys.executable).parent / "dask")
# The cells of lesson 06 that the short copy keeps (as tests/test_grade_cheating.py: setup and each exercise).
KEEP = ("setup", "make_fill_image", "fill_l1_loss", "predict_fill", "same_image_levels")
WRONG_LOSS = "def fill_l1_loss(pred, target):\n    return torch.abs(pred - target).mean()\n"
HANGING_LOSS = "def fill_l1_loss(pred, target):\n    while True:\n        pass\n"
SHOW_GPU = 'import os\nprint("visible GPUs: [" + os.environ.get("CUDA_VISIBLE_DEVICES", "none") + "]")'
# A student cell that tries the cluster's ports on 127.0.0.1 (the scheduler's and the workers').
PROBE = """import socket
for port in {ports!r}:
    s = socket.socket()
    s.settimeout(2)
    try:
        s.connect(("127.0.0.1", port))
        print(f"PROBE {{port}}: connected")
    except OSError as e:
        print(f"PROBE {{port}}: failed ({{e}})")
    finally:
        s.close()
"""
KILLER = "killer"  # the student whose task kills the Dask worker it runs on (see SITE)
SITE = """
import os
_base = os.environ.get("VWB_TEST_COURSE")
if _base:
    from pathlib import Path
    import autograder
    autograder.SOLUTIONS, autograder.LESSONS = Path(_base) / "solutions", Path(_base) / "lessons"
    _killer, _started = os.environ.get("VWB_TEST_KILLER"), os.environ.get("VWB_TEST_STARTED")
    if _killer or _started:
        import signal
        import autograder.grade as _grade
        _task = _grade._grade_task
        def _grade_task(task):
            if _started:  # says which worker process grades which student, for a test that kills it
                (Path(_started) / task["student_id"]).write_text(str(os.getpid()))
            if task.get("student_id") == _killer:  # a worker that dies whenever it is given this student's task
                os.kill(os.getpid(), signal.SIGKILL)
            return _task(task)
        _grade._grade_task = _grade_task
"""
OPTS = grade.Options(profile="ci", memory_mb=3000)


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    """The short lesson, seen by this process (monkeypatch) and by every process it starts (sitecustomize)."""
    base = tmp_path_factory.mktemp("course")
    write_short_course(base, LESSON, KEEP)
    site = base / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITE)
    mp = pytest.MonkeyPatch()
    mp.setattr(notebooks, "SOLUTIONS", base / "solutions")
    mp.setattr(notebooks, "LESSONS", base / "lessons")
    mp.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])))
    mp.setenv("VWB_TEST_COURSE", str(base))
    mp.setenv("OMP_NUM_THREADS", "1")
    mp.setenv("COURSE_PROFILE", "ci")
    mp.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    yield {"base": base, "ports": _free_ports(3)}  # the tcp cluster's scheduler and two workers
    mp.undo()


def _with(nb, gid=None, source=None, extra=()):
    nb = copy.deepcopy(nb)
    for cell in nb.cells:
        if gid and notebooks.grade_id(cell) == gid:
            cell.source = source
    nb.cells += [nbformat.v4.new_code_cell(code) for code in extra]
    return nb


def _write_class(root: Path, students: dict) -> Path:
    for student, nb in students.items():
        path = root / student / LESSON / f"{LESSON}.ipynb"
        path.parent.mkdir(parents=True)
        if isinstance(nb, bytes):
            path.write_bytes(nb)
        else:
            nbformat.write(personalised(nb, student), path)
    return root


@pytest.fixture(scope="module")
def klass(course, tmp_path_factory):
    """Correct (and probing the cluster), wrong, broken, hanging: each running notebook shows its GPUs."""
    solution = notebooks.read(notebooks.source_path(LESSON))
    probe = PROBE.format(ports=course["ports"])
    return _write_class(tmp_path_factory.mktemp("class"), {
        "alice": _with(solution, extra=(probe, SHOW_GPU)),
        "wrong": _with(solution, "fill_l1_loss", WRONG_LOSS, extra=(SHOW_GPU,)),
        "broken": json.dumps(solution)[:3000].encode(),  # cut off mid-upload
        "hangs": _with(solution, "fill_l1_loss", HANGING_LOSS, extra=(SHOW_GPU,)),
    })


def _journal(out: Path) -> list[dict]:
    path = out / "journal.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def _outputs(out: Path) -> dict:
    """grades.csv, totals.csv and the report. The report's diagnoses keep their status and count, not their words:
    a function that never returns is stopped either by its case's CPU-time limit or, on a loaded machine, by the
    judging process's wall-clock limit, and the two say it differently, whatever runs the task."""
    files = {name: (out / name).read_text() for name in ("grades.csv", "totals.csv", "report.html")}
    files["report.html"] = re.sub(r"<td>(\d+)</td><td>(\w+): [^<]*</td>", r"<td>\1</td><td>\2</td>",
                                  files["report.html"])
    return files


def _page(out: Path, student: str) -> str:
    return (out / "feedback" / student / f"{LESSON}.html").read_text()


@pytest.fixture(scope="module")
def pool_run(klass, tmp_path_factory):
    """The reference: the local pool of two worker processes, as without --scheduler."""
    out = tmp_path_factory.mktemp("out-pool")
    stats: dict = {}
    grade.grade_all(klass, out, workers=2, progress=False, opts=copy.deepcopy(OPTS), stats=stats)
    return out, stats


# ------------------------------------------------------------------------------ cheap checks first

def test_a_scheduler_elsewhere_must_use_tls(tmp_path, capsys):
    cluster.check_address("tcp://127.0.0.1:8786")
    cluster.check_address("tcp://localhost:8786")
    cluster.check_address("tcp://[::1]:8786")
    for address in ("tcp://10.1.2.3:8786", "tcp://example.org:8786", "ws://127.0.0.1:8786", "10.1.2.3:8786"):
        with pytest.raises(cluster.InsecureScheduler):
            cluster.check_address(address)
    with pytest.raises(cluster.InsecureScheduler, match="--tls-ca-file"):
        cluster.check_address("tls://10.1.2.3:8786")  # TLS without certificates
    with pytest.raises(cluster.InsecureScheduler, match="all three"):
        cluster.security("ca.pem", None, None)
    (tmp_path / "subs").mkdir()
    code = cli.main(["grade", str(tmp_path / "subs"), "--out", str(tmp_path / "out"),
                     "--scheduler", "tcp://10.1.2.3:8786"])
    err = capsys.readouterr().err
    assert code == 2 and "refusing tcp://10.1.2.3:8786" in err and "tls://10.1.2.3:8786" in err


def test_a_refusal_survives_pickling():
    import pickle

    e = pickle.loads(pickle.dumps(cluster.CourseCodeMismatch("worker w refused", "tcp://w:1", ("grader",))))
    assert (str(e), e.worker, e.differs) == ("worker w refused", "tcp://w:1", ("grader",))


# ------------------------------------------------------------------------------------ LocalCluster

@pytest.fixture(scope="module")
def local_run(klass, pool_run, tmp_path_factory):
    """`--scheduler local:2`, and the worker that grades "hangs" SIGKILLed while it grades it. "hangs" is chosen
    because its judging lasts seconds whatever the load (its loss never returns), and each worker says which student
    it has started (VWB_TEST_STARTED), so the kill cannot miss its moment as one timed on the journal could."""
    from distributed import Client

    out = tmp_path_factory.mktemp("out-local")
    started = tmp_path_factory.mktemp("started")
    stats: dict = {}
    done: dict = {}

    def run():
        try:
            grade.grade_all(klass, out, progress=False, opts=copy.deepcopy(OPTS), stats=stats, scheduler="local:2")
        except BaseException as e:  # noqa: BLE001 -- handed to the test
            done["error"] = e

    mp = pytest.MonkeyPatch()
    mp.setenv("VWB_TEST_STARTED", str(started))  # read by the workers' sitecustomize when the cluster starts them
    thread = threading.Thread(target=run)
    thread.start()
    killed = None
    try:
        deadline = time.monotonic() + 60
        while "scheduler" not in stats and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.1)
        with Client(stats["scheduler"], timeout="20s") as client:
            deadline = time.monotonic() + 240
            while thread.is_alive() and killed is None and time.monotonic() < deadline:
                if (started / "hangs").exists():
                    pid = int((started / "hangs").read_text())
                    worker = next(w for w, p in client.run(os.getpid).items() if p == pid)
                    os.kill(pid, signal.SIGKILL)
                    killed = ("hangs", worker)
                time.sleep(0.05)
        thread.join(300)
    finally:
        mp.undo()
    assert not thread.is_alive() and "error" not in done, done
    return out, stats, killed


def test_a_local_cluster_grades_as_the_local_pool_does(pool_run, local_run):
    (pool_out, _), (out, stats, _) = pool_run, local_run
    by = {r["student_id"]: r for r in csv.DictReader(open(pool_out / "totals.csv"))}
    assert {s: (r["score"], r["status"]) for s, r in by.items()} == {
        "alice": ("7", "ok"), "wrong": ("5", "ok"), "broken": ("0", "error"), "hangs": ("5", "ok")}
    assert _outputs(out) == _outputs(pool_out)  # grades.csv, totals.csv and the report, row for row
    assert "LocalCluster of 2" in stats["engine"] and stats["scheduler"].startswith("tcp://127.0.0.1:")
    for student in ("alice", "wrong", "hangs"):
        assert "visible GPUs: [none]" in _page(out, student)
    assert "is not a readable notebook" in _page(out, "broken")


def test_a_killed_worker_loses_nothing_and_grades_nothing_twice(local_run):
    out, stats, killed = local_run
    assert killed is not None, "no worker was killed while it graded"
    entries = _journal(out)
    assert sorted(e["student_id"] for e in entries) == ["alice", "broken", "hangs", "wrong"]  # once each
    assert stats["graded"] == 4 and stats["unfinished"] == 0 and not stats["refused"] and stats["killed"] == 0
    student, worker = killed
    (entry,) = [e for e in entries if e["student_id"] == student]
    assert entry["worker"] and entry["worker"] != worker  # graded again, by a worker that was alive
    assert entry["status"] == "ok" and sum(r["score"] for r in entry["rows"]) == 5  # as the local pool graded it


# --------------------------------------------------------------------------- dask scheduler / dask worker

@pytest.fixture(scope="module")
def tcp_cluster(course, tmp_path_factory):
    """`dask scheduler` and two `dask worker` processes on 127.0.0.1: one declares GPU=1 and sees device 7, the other
    neither; both die on the KILLER student's task."""
    from distributed import Client

    logs = tmp_path_factory.mktemp("dask-logs")
    port, port_gpu, port_cpu = course["ports"]
    address = f"tcp://127.0.0.1:{port}"
    env = {**os.environ, "VWB_TEST_KILLER": KILLER, "DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "1"}
    procs = []

    def start(name, cmd, extra_env=None, drop=()):
        e = {k: v for k, v in {**env, **(extra_env or {})}.items() if k not in drop}
        procs.append(subprocess.Popen(cmd, cwd=ROOT, env=e, start_new_session=True,
                                      stdout=open(logs / f"{name}.log", "wb"), stderr=subprocess.STDOUT))

    worker = [DASK, "worker", address, "--host", "127.0.0.1", "--nthreads", "1", "--nworkers", "1", "--no-dashboard"]
    start("scheduler", [DASK, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"])
    start("gpu", worker + ["--worker-port", str(port_gpu), "--name", "gpu7", "--resources", "GPU=1"],
          {"CUDA_VISIBLE_DEVICES": "7"})
    start("cpu", worker + ["--worker-port", str(port_cpu), "--name", "cpu"], drop=("CUDA_VISIBLE_DEVICES",))
    try:
        with Client(address, timeout="60s") as client:
            client.wait_for_workers(2, timeout=90)
        yield {"address": address, "gpu": f"tcp://127.0.0.1:{port_gpu}", "cpu": f"tcp://127.0.0.1:{port_cpu}",
               "logs": logs}
    finally:
        try:  # workers a test killed come back; then all shut their pools down before they are stopped
            with Client(address, timeout="10s") as client:
                client.wait_for_workers(2, timeout=30)
                client.run(cluster.close_pools, on_error="ignore")
        except Exception:
            pass
        for p in reversed(procs):  # workers first (their nannies close them), the scheduler last
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in reversed(procs):
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()


def _grade_cmd(subs: Path, out: Path, address: str) -> list[str]:
    return [sys.executable, "-m", "autograder", "grade", str(subs), "--out", str(out), "--scheduler", address,
            "--memory", "3000"]


@pytest.fixture(scope="module")
def tcp_run(klass, tcp_cluster, tmp_path_factory):
    """The CLI on the separate cluster; its process is SIGKILLed half-way, then the same command runs again."""
    out, logs = tmp_path_factory.mktemp("out-tcp"), tmp_path_factory.mktemp("tcp-logs")
    cmd = _grade_cmd(klass, out, tcp_cluster["address"])
    with open(logs / "first.log", "wb") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and len(_journal(out)) < 2 and proc.poll() is None:
            time.sleep(0.05)
        proc.kill()
        proc.wait()
    first = _journal(out)
    again = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    return out, first, again, (logs / "first.log").read_text()


def test_separate_scheduler_and_workers_grade_the_same_after_the_instructor_is_killed(pool_run, tcp_cluster,
                                                                                      tcp_run):
    """The same command after a SIGKILL grades only what is missing; the result is the local pool's, row for row."""
    out, first, again, log = tcp_run
    assert 2 <= len(first) < 4, log[-3000:]
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"({len(first)} unchanged since the last run" in again.stdout
    entries = _journal(out)
    assert entries[: len(first)] == first  # nothing graded before the kill was graded again
    assert sorted(e["student_id"] for e in entries) == ["alice", "broken", "hangs", "wrong"]
    assert _outputs(out) == _outputs(pool_run[0])
    # Each kernel saw its worker's device: 7 on the worker started with CUDA_VISIBLE_DEVICES=7, none on the other.
    for e in entries:
        if e["student_id"] != "broken":
            shown = {tcp_cluster["gpu"]: "[7]", tcp_cluster["cpu"]: "[none]"}[e["worker"]]
            assert f"visible GPUs: {shown}" in _page(out, e["student_id"]), e["worker"]


def test_no_student_process_reaches_the_cluster(course, tcp_cluster, tcp_run):
    """Alice's notebook tried the scheduler's and both workers' ports on 127.0.0.1: all failed (the sandbox has its
    own network namespace), although they answer this process; her grade is full marks all the same."""
    out = tcp_run[0]
    for port in course["ports"]:
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass
    found = dict(re.findall(r"PROBE (\d+): (connected|failed)", _page(out, "alice")))
    assert found == {str(port): "failed" for port in course["ports"]}, found
    totals = {r["student_id"]: r for r in csv.DictReader(open(out / "totals.csv"))}
    assert (totals["alice"]["score"], totals["alice"]["status"]) == ("7", "ok")


def test_gpu_work_goes_only_to_workers_that_declare_a_gpu(course, tcp_cluster, tmp_path):
    solution = notebooks.read(notebooks.source_path(LESSON))
    subs = _write_class(tmp_path / "subs", {
        "amy": _with(solution, extra=(SHOW_GPU,)),
        "ben": _with(solution, "fill_l1_loss", WRONG_LOSS, extra=(SHOW_GPU,)),
        "cut": json.dumps(solution)[:2000].encode()})
    out = tmp_path / "out"
    stats: dict = {}
    grade.grade_all(subs, out, progress=False, opts=grade.Options(profile="gpu", memory_mb=3000), stats=stats,
                    scheduler=tcp_cluster["address"])
    entries = _journal(out)
    assert sorted(e["student_id"] for e in entries) == ["amy", "ben", "cut"]
    assert {e["worker"] for e in entries} == {tcp_cluster["gpu"]}  # never the worker without GPU=1
    for student in ("amy", "ben"):
        assert "visible GPUs: [7]" in _page(out, student)
    totals = {r["student_id"]: r["score"] for r in csv.DictReader(open(out / "totals.csv"))}
    assert totals == {"amy": "7", "ben": "5", "cut": "0"}


def test_a_worker_with_other_course_code_refuses(course, tcp_cluster, tmp_path, monkeypatch, capsys):
    solution = notebooks.read(notebooks.source_path(LESSON))
    subs = _write_class(tmp_path / "subs", {f"s{i}": solution for i in range(4)})
    real = grade.course_versions
    # The instructor's task carries a grader version no worker has: as if the workers ran other code.
    monkeypatch.setattr(grade, "course_versions", lambda lesson: {**real(lesson), "grader": "0123456789abcdef"})
    code = cli.main(["grade", str(subs), "--out", str(tmp_path / "out"), "--scheduler", tcp_cluster["address"]])
    err = capsys.readouterr().err
    assert code == 1, err
    assert f"worker {tcp_cluster['gpu']} refused to grade" in err or f"worker {tcp_cluster['cpu']} refused" in err
    assert "course code differs" in err and "grader" in err and "course_lib.data --profile" in err
    assert "4 submission(s) were not graded" in err
    assert _journal(tmp_path / "out") == []  # nothing graded with other code, nothing journaled


def test_a_submission_that_kills_two_workers_is_graded_kernel_died(course, tcp_cluster, tmp_path):
    solution = notebooks.read(notebooks.source_path(LESSON))
    subs = _write_class(tmp_path / "subs", {KILLER: solution, "zoe": json.dumps(solution)[:2000].encode()})
    out = tmp_path / "out"
    stats: dict = {}
    grade.grade_all(subs, out, progress=False, opts=copy.deepcopy(OPTS), stats=stats,
                    scheduler=tcp_cluster["address"])
    entries = {e["student_id"]: e for e in _journal(out)}
    assert set(entries) == {KILLER, "zoe"} and stats["killed"] == 1
    assert entries[KILLER]["status"] == "kernel_died" and entries["zoe"]["status"] == "error"  # the rest went on
    assert {r["status"] for r in entries[KILLER]["rows"]} == {"kernel_died"}
    assert "worker process twice" in _page(out, KILLER)


def _certificates(folder: Path) -> tuple[str, str, str]:
    """A CA and one certificate it signed for 127.0.0.1, used by the scheduler, the worker and the client alike."""
    def run(*args):
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "1",
        "-subj", "/CN=vwb-test-ca")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "node.key", "-out", "node.csr", "-subj", "/CN=127.0.0.1")
    (folder / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    run("x509", "-req", "-in", "node.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out",
        "node.pem", "-days", "1", "-extfile", "san.ext")
    return str(folder / "ca.pem"), str(folder / "node.pem"), str(folder / "node.key")


@pytest.mark.skipif(not shutil.which("openssl"), reason="the openssl command makes the test certificates")
def test_a_tls_cluster_grades_with_the_certificates_given(course, tmp_path, capsys):
    """`dask scheduler --protocol tls` and a worker with certificates; the CLI's --tls-* options reach them. The
    class is cheap (nothing to run): what is tested is the way there."""
    from distributed import Client, Security

    ca, cert, key = _certificates(tmp_path)
    tls = ["--tls-ca-file", ca, "--tls-cert", cert, "--tls-key", key]
    [port] = _free_ports(1)
    address = f"tls://127.0.0.1:{port}"
    procs = [subprocess.Popen([DASK, "scheduler", "--protocol", "tls", "--host", "127.0.0.1", "--port", str(port),
                               "--no-dashboard", *tls], cwd=ROOT, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    procs.append(subprocess.Popen([DASK, "worker", address, "--host", "127.0.0.1", "--nthreads", "1",
                                   "--no-dashboard", *tls], cwd=ROOT, start_new_session=True,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    try:
        security = Security(tls_ca_file=ca, tls_client_cert=cert, tls_client_key=key, require_encryption=True)
        with Client(address, security=security, timeout="60s") as client:
            client.wait_for_workers(1, timeout=90)
        solution = notebooks.read(notebooks.source_path(LESSON))
        subs = _write_class(tmp_path / "subs", {"cut": json.dumps(solution)[:2000].encode()})
        (subs / "gone" / LESSON).mkdir(parents=True)  # a lesson folder without a notebook
        out = tmp_path / "out"
        assert cli.main(["grade", str(subs), "--out", str(out), "--scheduler", address]) == 2  # no certificates
        assert "--tls-ca-file" in capsys.readouterr().err
        code = cli.main(["grade", str(subs), "--out", str(out), "--scheduler", address, *tls])
        assert code == 0, capsys.readouterr().err
        entries = {e["student_id"]: e for e in _journal(out)}
        assert {s: e["status"] for s, e in entries.items()} == {"cut": "error", "gone": "missing"}
        assert all(e["worker"].startswith("tls://127.0.0.1:") for e in entries.values())
    finally:
        for p in reversed(procs):
            p.send_signal(signal.SIGTERM)
        for p in reversed(procs):
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
