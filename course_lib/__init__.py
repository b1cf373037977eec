"""Vision Workbook's course library: references, check specs, data makers and widgets.

Notebooks start with::

    import course_lib
    cfg = course_lib.setup()

and then import what they need from the topic modules (``course_lib.fill_level``, ...).

A topic module (one per lesson, next to its ``<topic>_checks.py``) never imports another topic: what
lessons share lives in the shared layers, ``common`` (ImageNet statistics, settings per profile, atomic
saves, readers, progress bars), ``config``, ``models``, ``backbone``, ``data`` and ``widgets``
(``widgets.base``: the pieces every widget uses). ``tests/test_architecture.py`` holds to this.
"""
from course_lib.checks import check
from course_lib.config import current, setup

__all__ = ["setup", "current", "check"]
