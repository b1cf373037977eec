"""Vision Workbook's course library: references, check specs, data makers and widgets.

Notebooks start with::

    import course_lib
    cfg = course_lib.setup()

and then import what they need from the topic modules (``course_lib.fill_level``, ...).
"""
from course_lib.checks import check
from course_lib.config import current, setup

__all__ = ["setup", "current", "check"]
