import os

import matplotlib
import pytest

# Tests run the small profile on the CPU, whatever machine they are on, unless told otherwise.
os.environ.setdefault("COURSE_PROFILE", "ci")
matplotlib.use("Agg")


@pytest.fixture(autouse=True)
def _course_setup():
    import course_lib

    course_lib.setup(quiet=True, device="cpu")
    yield
