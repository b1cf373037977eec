import os

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


@pytest.fixture(autouse=True)
def _course_setup():
    import course_lib

    course_lib.setup(quiet=True, device="cpu")
    yield
