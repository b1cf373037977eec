"""Sandboxed kernels and their budgets (autograder/pool.py).

Each test runs a tiny notebook the way a submission runs: a kernel from the pool, forked from
the fork server into a sandbox of its own, and checks what the student's code can and cannot
do from a cell: see the grader, its files or another kernel; leave a process running; take
more memory than its cap; run or print past the notebook's budgets.
"""
import json
import os
import time
import uuid
from pathlib import Path

import nbformat
import pytest

from autograder import grade, pool

ROOT = Path(__file__).resolve().parent.parent


def _sandboxes() -> tuple[bool, str]:
    try:
        from autograder.sandbox import available

        return available()
    except Exception as e:  # noqa: BLE001
        return False, repr(e)


pytestmark = pytest.mark.skipif(not _sandboxes()[0], reason=f"no sandbox here: {_sandboxes()[1]}")

MEMORY_MB = 1000


def _nb(*sources):
    return nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in sources])


def _text(cell):
    return "".join(o.get("text", "") for o in cell.outputs if o.get("output_type") == "stream")


def _json(cell):
    return json.loads(_text(cell).strip().splitlines()[-1])


def _running(marker: str) -> list[int]:
    """Host pids whose command line holds ``marker``."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if marker.encode() in f.read():
                    found.append(int(pid))
        except OSError:
            pass
    return found


@pytest.fixture
def opts():
    return grade.Options(profile="ci", kernels="fork", cell_timeout=30, memory_mb=MEMORY_MB, threads=1, sandbox=True)


@pytest.fixture(autouse=True, scope="module")
def _pools_of_this_module():
    yield
    pool.close_all()


def test_a_kernel_sees_neither_the_grader_nor_its_files(opts, tmp_path):
    out = tmp_path / "OUT"
    out.mkdir()
    (out / "grades.csv").write_text("student,score\n")
    km = pool.take(opts)
    try:
        server = pool.pool_for(opts)._server
        hidden = [str(out), str(ROOT / "solutions"), str(ROOT / "autograder"), str(ROOT / ".git"),
                  server.socket_path, str(Path(server.socket_path).parent), str(pool.pool_for(opts).home)]
        nb = _nb("import json, os, socket, sys\n"
                 "print(json.dumps({'uid': os.getuid(), 'euid': os.geteuid(), 'cwd': os.getcwd(),\n"
                 "    'pids': sorted(int(p) for p in os.listdir('/proc') if p.isdigit()),\n"
                 "    'nets': [n for _, n in socket.if_nameindex()], 'torch': 'torch' in sys.modules,\n"
                 f"    'seen': [p for p in {hidden!r} if os.path.exists(p)],\n"
                 f"    'course_lib': os.path.isdir({str(ROOT / 'course_lib')!r})}}))")
        run = pool.execute(nb, None, opts, kernel=km)
    finally:
        pool.release(km)
    assert run.status == "ok", run.detail
    seen = _json(nb.cells[0])
    assert seen["uid"] == seen["euid"] == km.sandbox.uid and seen["uid"] not in (0, os.getuid())
    assert seen["cwd"] == str(km.folder)
    assert os.getpid() not in seen["pids"] and max(seen["pids"]) < 50  # its own pid namespace
    assert seen["nets"] == ["lo"]  # no network
    assert seen["seen"] == [] and seen["course_lib"] and seen["torch"]  # the server's imports are kept


def test_the_notebook_runs_in_the_kernels_folder_with_the_files_put_there(opts):
    km = pool.take(opts)
    try:
        (km.folder / "data.csv").write_text("a,b\n1,2\n")  # as the grader puts a student's files (root's)
        nb = _nb("print(open('data.csv').read().split()[1])\n"
                 "open('made.txt', 'w').write('made')\nimport os\nos.symlink('/etc/hostname', 'link.txt')")
        run = pool.execute(nb, None, opts, kernel=km)
        assert run.status == "ok" and _text(nb.cells[0]).strip() == "1,2"
        assert pool.read_file(km, "made.txt") == b"made"
        assert pool.read_file(km, "link.txt") is None  # the student's link is not followed by the grader
        assert pool.read_file(km, "../../etc/hostname") is None
    finally:
        pool.release(km)
    assert not km.folder.exists()


def test_a_background_process_does_not_outlive_its_submission(opts):
    marker = f"vwb-marker-{uuid.uuid4().hex}"
    nb = _nb("import subprocess, sys, time\n"
             f"p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(1000)', {marker!r}],\n"
             "                     start_new_session=True)\n"
             "time.sleep(0.5)\nprint(p.poll() is None)")
    km = pool.take(opts)
    try:
        run = pool.execute(nb, None, opts, kernel=km)
        assert run.status == "ok" and _text(nb.cells[0]).strip() == "True"
        assert _running(marker)  # it did run, in its own session, until the submission ended
    finally:
        pool.release(km)
    deadline = time.monotonic() + 5
    while _running(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _running(marker)


def test_two_kernels_do_not_see_each_others_folders(opts):
    first, second = pool.take(opts), pool.take(opts)  # the current kernel and the next submission's
    try:
        assert first.sandbox.uid != second.sandbox.uid and first.folder != second.folder
        (second.folder / "secret.txt").write_text("42")
        probe = ("import json, os\n"
                 "print(json.dumps({{'other': os.path.exists({other!r}), 'file': os.path.exists({file!r}),\n"
                 "    'siblings': sorted(os.listdir(os.path.dirname(os.getcwd())))}}))")
        one = _nb(probe.format(other=str(second.folder), file=str(second.folder / "secret.txt")))
        two = _nb(probe.format(other=str(first.folder), file=str(second.folder / "secret.txt")))
        assert pool.execute(one, None, opts, kernel=first).status == "ok"
        assert pool.execute(two, None, opts, kernel=second).status == "ok"
    finally:
        pool.release(first)
        pool.release(second)
    assert _json(one.cells[0]) == {"other": False, "file": False, "siblings": [first.folder.name]}
    assert _json(two.cells[0]) == {"other": False, "file": True, "siblings": [second.folder.name]}


def test_a_shared_mapping_over_the_memory_cap_is_out_of_memory(opts):
    nb = _nb("import mmap\n"
             f"m = mmap.mmap(-1, {2 * MEMORY_MB} * 2**20)  # shared: not the kernel's own heap\n"
             "for i in range(0, len(m), 4096):\n"
             "    m[i] = 1",
             "print('after')")
    run = pool.execute(nb, None, opts)
    assert run.status == "out_of_memory", run
    assert "out of memory" in run.detail


def _timed(nb, opts, **kwargs):
    """The run of ``nb`` and the seconds execute() took (the fork server's start, in the first test to
    take a kernel, excluded)."""
    km = pool.take(opts)
    try:
        t0 = time.monotonic()
        run = pool.execute(nb, None, opts, kernel=km, **kwargs)
        return run, time.monotonic() - t0
    finally:
        pool.release(km)


def test_the_time_budget_stops_the_notebook(opts):
    opts.time_budget = 6
    nb = _nb("x = 1", "while True:\n    pass", "print('later')", "print('later too')")
    run, seconds = _timed(nb, opts)
    assert seconds < 20
    assert run.status == "timeout" and run.failed_at == 1 and "time budget of 6 s" in run.detail
    assert nb.cells[1].outputs[-1]["ename"] == "TimeoutError" and "time budget" in nb.cells[1].outputs[-1]["evalue"]
    for cell in nb.cells[2:]:
        assert cell.execution_count is None and len(cell.outputs) == 1
        assert "the notebook used its time budget of 6 s; this cell was not run by the grader" in _text(cell)


def test_a_cell_over_its_own_limit_is_stopped_and_the_rest_runs(opts):
    nb = _nb("import time\ntime.sleep(600)", "print('after')")
    run, seconds = _timed(nb, opts, cell_limits={0: 2.0})
    assert seconds < 15
    assert run.status == "timeout" and run.failed_at == 0 and "longer than 2 s" in run.detail
    assert _text(nb.cells[1]).strip() == "after"


UPDATES = ("from IPython.display import display\n"
           "h = display({'text/plain': 'start'}, raw=True, display_id=True)\n"
           "for i in range(10000):\n"
           "    h.update({'text/plain': str(i) + 'y' * 1000}, raw=True)")
WIDGETS = ("from ipykernel.comm import Comm\n"
           "state = {'_model_module': '@jupyter-widgets/base', '_model_name': 'DOMWidgetModel'}\n"
           "c = Comm(target_name='jupyter.widget', data={'state': state, 'buffer_paths': []})\n"
           "for i in range(300):\n"
           "    c.send({'method': 'update', 'state': {f'v{i}': 'z' * 1000}, 'buffer_paths': [[f'b{i}']]},\n"
           "           buffers=[b'b' * 10000])")


@pytest.mark.parametrize("flood", [UPDATES, WIDGETS], ids=["display-updates", "widget-messages"])
def test_display_updates_and_widget_traffic_count_against_the_output_budget(opts, monkeypatch, flood):
    made = []

    class Spy(pool.CappedClient):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(pool, "CappedClient", Spy)
    opts.output_budget = 1_000_000
    nb = _nb("print('before')", flood, "print('x' * 500_000)", "1 / 0")
    run = pool.execute(nb, None, opts)
    assert run.status == "ok", run.detail
    client = made[-1]
    assert opts.output_budget - 20_000 < client.total <= opts.output_budget  # counted up to the budget
    kept_widgets = len(json.dumps(client.widget_state)) + sum(
        len(b["data"]) for buffers in client.widget_buffers.values() for b in buffers.values())
    assert kept_widgets <= opts.output_budget
    assert len(nbformat.writes(nb)) < opts.output_budget + 100_000
    assert _text(nb.cells[0]).strip() == "before"
    assert "this notebook sent more than 1 MB of output" in _text(nb.cells[1])  # the one note, where the cut is
    assert "x" * 1000 not in _text(nb.cells[2]) and "sent more than" not in _text(nb.cells[2])
    # What went wrong still shows, without its traceback.
    assert [o["ename"] for o in nb.cells[3].outputs if o["output_type"] == "error"] == ["ZeroDivisionError"]


def test_no_sandbox_here_is_refused_with_a_way_out(monkeypatch):
    from autograder import sandbox

    monkeypatch.setattr(sandbox, "available", lambda: (False, "not root"))
    with pytest.raises(RuntimeError, match="--no-sandbox"):
        pool.WarmPool("python3", dict(os.environ), mode="cold", sandbox=True)


def test_an_ordinary_kernel_is_sandboxed_too(opts):
    """Cold (and warm) kernels are started through the sandbox's launcher: the relay passes the interrupt on."""
    opts.kernels = "cold"
    nb = _nb("import os\nprint(os.getuid(), os.getcwd())", "import time\ntime.sleep(600)", "print('after')")
    run = pool.execute(nb, None, opts, cell_limits={1: 2.0})
    uid, cwd = _text(nb.cells[0]).split()
    assert int(uid) not in (0, os.getuid()) and Path(cwd).parent.name.startswith("vwb-")
    assert run.status == "timeout" and run.failed_at == 1 and _text(nb.cells[2]).strip() == "after"
