"""JupyterLab 4 + Chromium, driven like a student: one server and one browser for the whole session.

The server runs on 127.0.0.1 on a free port with its own settings, workspaces and runtime folders, the
project's kernel, ``COURSE_PROFILE=ci`` and ``OMP_NUM_THREADS=1``. Everything it writes lands in
``build/browser/``: ``work/`` (per-test copies of the notebooks), ``jupyterlab.log``, ``screenshots/``
(each lesson's widgets, written on every run) and ``failures/`` (a full-page screenshot of any failing test).
"""
from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from labharness import ART, CHROMIUM, FAILURES, GRADING, LOG, OPTIONS, README_SHOTS, ROOT, Lab, Notebook, _free_port

# JupyterLab's user settings for the tests: no news pop-up, and every cell kept in the DOM (the default
# windowing renders only the cells near the viewport, which a test that walks the notebook cannot rely on).
USER_SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false",
                                                                        "checkForUpdates": False},
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
}


def pytest_addoption(parser):
    parser.addoption("--readme-images", action="store_true",
                     help=f"also copy the README's screenshots ({', '.join(README_SHOTS)}) to docs/img/")


def pytest_configure(config):
    OPTIONS["readme_images"] = bool(config.getoption("--readme-images", default=False))


@pytest.fixture(scope="session")
def lab():
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: run `make browser-deps` (apt-get install -y chromium)")
    ART.mkdir(parents=True, exist_ok=True)
    run = ART / "run"
    shutil.rmtree(run, ignore_errors=True)
    shutil.rmtree(FAILURES, ignore_errors=True)  # only this session's failures, so CI output points to them
    work, settings, workspaces, runtime = (run / d for d in ("work", "settings", "workspaces", "runtime"))
    for d in (work, workspaces, runtime):
        d.mkdir(parents=True)
    for rel, value in USER_SETTINGS.items():
        f = settings / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(json.dumps(value))
    port, token = _free_port(), secrets.token_hex(16)
    env = dict(os.environ, COURSE_PROFILE="ci", OMP_NUM_THREADS="1", JUPYTER_RUNTIME_DIR=str(runtime),
               PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
           "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={work}",
           "--LabApp.expose_app_in_browser=True", f"--LabApp.user_settings_dir={settings}",
           f"--LabApp.workspaces_dir={workspaces}", "--MappingKernelManager.default_kernel_name=vision-workbook"]
    if os.geteuid() == 0:
        cmd.append("--allow-root")  # JupyterLab refuses to start as root without it (CI runs as root)
    log = open(LOG, "w")
    proc = subprocess.Popen(cmd, cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT)
    server = Lab(port, token, work, proc)
    deadline = time.monotonic() + 90
    while True:
        try:
            server.api("status")
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"JupyterLab did not start: see {LOG}")
            time.sleep(0.5)
    yield server
    grading = GRADING.get("proc")
    if grading is not None and grading.poll() is None:
        grading.kill()  # test_99_graded.py was not run: do not leave the autograder behind
    try:
        server.delete_sessions()
    except OSError:
        pass
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                              args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"])
        yield b
        b.close()


_PAGES: dict[str, object] = {}  # test nodeid -> the page it drives, for the failure screenshot


@pytest.fixture
def open_notebook(lab, browser, request):
    """``open_notebook(src, tag)`` opens a fresh copy of ``src``; closed (kernel shut down) after the test."""
    opened = []

    def _open(src: Path, tag: str = "") -> Notebook:
        nb = Notebook(lab, browser, src, tag)
        opened.append(nb)
        _PAGES[request.node.nodeid] = nb.page
        return nb

    yield _open
    for nb in opened:
        nb.close()
    _PAGES.pop(request.node.nodeid, None)


# How much of each solution notebook the browser tests run: every widget they use comes before the capstone, so a
# lesson runs up to it (its training, self-check and pictures are nbval's and the grader's to run; here they would
# only cost time). Lesson 02 stops earlier: the cells below its widget train three models.
RUN_THROUGH = {"02_transfer_learning": "check('freeze_choice', freeze_choice, hidden=True)"}


def _last_cell_to_run(nb: Notebook, lesson: str) -> int:
    if lesson in RUN_THROUGH:
        return nb.index(RUN_THROUGH[lesson])
    from autograder import notebooks
    from course_lib.checks import capstone_of

    capstone = capstone_of(e.id for e in notebooks.exercises(notebooks.read(nb.src)))
    assert capstone is not None, f"{lesson} has no capstone to stop before"
    return nb.grade_index(capstone) - 1


MAX_RUNNING = 2  # notebooks executing at once: one per core
_ORDER: list[str] = []  # the lessons of the selected tests, in the order the tests will use them


def pytest_collection_modifyitems(config, items):
    for item in items:
        lesson = getattr(item.module, "LESSON", None)
        if lesson and "nb" in item.fixturenames and lesson not in _ORDER:
            _ORDER.append(lesson)


class Runner:
    """Runs the selected lessons' solution notebooks ahead of their tests, ``MAX_RUNNING`` at a time, so both cores
    work while a test drives the widgets of a notebook that has already run."""

    def __init__(self, lab: Lab, browser):
        self.lab, self.browser = lab, browser
        self.queue = list(_ORDER)
        self.running: dict[str, Notebook] = {}
        self.done: dict[str, Notebook] = {}
        self.started: dict[str, float] = {}
        self.seconds: dict[str, float] = {}

    def _start(self, lesson: str) -> None:
        nb = Notebook(self.lab, self.browser, ROOT / "solutions" / lesson / f"{lesson}.ipynb", "solution", wait=False)
        self.started[lesson] = time.monotonic()
        self.running[lesson] = nb

    def pump(self) -> None:
        """Start runs as notebooks become ready and cores free up; note the finished ones."""
        for lesson, nb in list(self.running.items()):
            state = nb.run_state()
            if state == "idle" and nb.kernel_ready():
                nb.start_run(_last_cell_to_run(nb, lesson))
            elif state == "done":
                self.seconds[lesson] = time.monotonic() - self.started[lesson]
                self.done[lesson] = self.running.pop(lesson)
        while self.queue and len(self.running) < MAX_RUNNING:
            self._start(self.queue.pop(0))

    def wait(self, lesson: str, timeout: float = 900) -> Notebook:
        if lesson not in self.done and lesson not in self.running and lesson in self.queue:
            self.queue.remove(lesson)
            self.queue.insert(0, lesson)
        elif lesson not in self.done and lesson not in self.running:
            self.queue.insert(0, lesson)
        deadline = time.monotonic() + timeout
        while lesson not in self.done:
            self.pump()
            if time.monotonic() > deadline:
                raise TimeoutError(f"{lesson} did not finish running in {timeout:.0f} s")
            time.sleep(0.25)
        self.pump()  # start the next notebooks before this one's tests begin
        nb = self.done[lesson]
        print(f"\n{lesson}: notebook opened and run in {self.seconds[lesson]:.0f} s (including waiting for a core)")
        nb.assert_no_errors()
        return nb

    def close(self) -> None:
        for nb in [*self.running.values(), *self.done.values()]:
            nb.close()


@pytest.fixture(scope="session")
def runner(lab, browser):
    r = Runner(lab, browser)
    r.pump()  # the first notebooks start running now, whatever test comes first
    yield r
    r.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.when != "call" or not rep.failed:
        return
    page = _PAGES.get(item.nodeid)
    if page is None:
        nb = next((v for v in item.funcargs.values() if isinstance(v, Notebook)), None)
        page = nb.page if nb else None
    lines = [f"JupyterLab log: {LOG}"]
    if page is not None:
        FAILURES.mkdir(parents=True, exist_ok=True)
        out = FAILURES / (re.sub(r"[^\w.-]+", "_", item.nodeid) + ".png")
        try:
            page.screenshot(path=str(out), full_page=True)
            lines.insert(0, f"screenshot: {out}")
        except Exception as e:  # a crashed page must not hide the test's own failure
            lines.insert(0, f"screenshot failed: {e}")
    rep.sections.append(("browser artifacts", "\n".join(lines)))
