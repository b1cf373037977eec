"""Make the student version of a lesson from its source, with nbgrader's own preprocessors."""
from __future__ import annotations

import json
from pathlib import Path

import nbformat
from nbconvert.exporters.exporter import ResourcesDict
from nbgrader.preprocessors import (
    CheckCellMetadata,
    ClearHiddenTests,
    ClearMarkScheme,
    ClearOutput,
    ClearSolutions,
    ComputeChecksums,
    LockCells,
    SaveCells,
)
from traitlets.config.loader import PyFileConfigLoader

from autograder import notebooks

# The same steps and order as `nbgrader generate_assignment`, minus the gradebook database:
# checksums are computed before and after hiding the tests, as nbgrader does.
STEPS = (LockCells, ClearSolutions, ClearOutput, CheckCellMetadata, ComputeChecksums,
         ClearHiddenTests, ClearMarkScheme, ComputeChecksums, CheckCellMetadata)


def _config():
    return PyFileConfigLoader("nbgrader_config.py", path=str(Path(__file__).parent)).load_config()


def student_version(source: nbformat.NotebookNode, gradebook: tuple[str, str] | None = None) -> nbformat.NotebookNode:
    """The release notebook: solutions replaced by stubs (a written answer by nbgrader's "YOUR ANSWER HERE", left
    editable), hidden tests, outputs and nbval's markers removed.

    ``gradebook``: ``(database URL, lesson)``; the lesson's cells are then also recorded in that nbgrader gradebook
    where ``nbgrader generate_assignment`` records them (its SaveCells step, between the first checksums and the
    hiding of the tests); the assignment must exist there."""
    nb = nbformat.from_dict(json.loads(json.dumps(source)))  # deep copy; steps edit in place
    for cell in nb.cells:
        # Before the checksums are computed, so that nbgrader's own validation of the release still agrees.
        if cell.get("cell_type") == "code":
            cell.source = notebooks.strip_nbval(cell.source)
    config = _config()
    resources = ResourcesDict()
    steps: list = list(STEPS)
    if gradebook is not None:
        url, lesson = gradebook
        resources["nbgrader"] = {"db_url": url, "assignment": lesson, "notebook": lesson}
        steps.insert(steps.index(ComputeChecksums) + 1, SaveCells)
    for step in steps:
        nb, resources = step(config=config).preprocess(nb, resources)
    for cell in nb.cells:
        cell.get("metadata", {}).pop("execution", None)
    nb.metadata.pop("widgets", None)
    return nb


def render(nb: nbformat.NotebookNode) -> str:
    return nbformat.writes(nb) + "\n"


def release(lesson: str, check: bool = False) -> bool:
    """Write ``lessons/<lesson>/<lesson>.ipynb``; with ``check``, only report whether it is up to date."""
    text = render(student_version(notebooks.read(notebooks.source_path(lesson))))
    target = notebooks.release_path(lesson)
    current = target.read_text() if target.exists() else None
    if check:
        return current == text
    if current != text:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    return True
