import os
from pathlib import Path

import matplotlib
import pytest

# Tests run the small profile on the CPU, whatever machine they are on, unless told otherwise.
os.environ.setdefault("COURSE_PROFILE", "ci")
matplotlib.use("Agg")

if os.environ.get("PYTEST_XDIST_WORKER"):
    # One math thread per test worker: workers that each spin several OpenMP threads on
    # the same cores slow each other down several times over.
    import torch

    torch.set_num_threads(1)


BROWSER = Path(__file__).resolve().parent / "browser"


def _names_browser(config: pytest.Config) -> bool:
    """Whether a path on the command line is tests/browser or inside it (`pytest tests/browser`)."""
    here = config.invocation_params.dir
    for arg in config.args:
        path = (here / arg.split("::", 1)[0]).resolve()
        if path == BROWSER or BROWSER in path.parents:
            return True
    return False


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """The browser tests (JupyterLab and Chromium, minutes) run only when asked for by name: `make browser-test`
    runs `pytest tests/browser`; a plain `pytest tests` leaves them out."""
    if collection_path == BROWSER and not _names_browser(config):
        return True
    return None


@pytest.fixture(autouse=True)
def _course_setup():
    import course_lib

    course_lib.setup(quiet=True, device="cpu")
    yield
