"""course_lib's layering: topics stand alone on shared layers, and each shared basic has one home.

A topic is a lesson's module, ``course_lib/<topic>.py``, recognised by its ``<topic>_checks.py``.
Topics may import the shared layers (``common``, ``config``, ``models``, ``backbone``, ``checks``,
``data.*``, ``widgets``) but never another topic: what two lessons both need belongs in a shared
layer, or a seventh lesson would copy it again. Read from the source, without importing it.
"""
from __future__ import annotations

import ast
import importlib
import json
import re
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LIB = ROOT / "course_lib"
TOPICS = sorted(p.name.removesuffix("_checks.py") for p in LIB.glob("*_checks.py"))


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def _imported_modules(tree: ast.Module, package: str = "course_lib") -> set[str]:
    """Every module ``tree`` imports, at any depth (function-local imports too), as dotted names."""
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative to the package: course_lib/<topic>.py lives in course_lib
                base = ".".join([package, *filter(None, [base])])
            out.add(base)
            # `from course_lib import transfer` imports the module course_lib.transfer.
            out.update(f"{base}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module":
            out.update(a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str))
    return out


def _topic_imports(topic: str) -> set[str]:
    mods = _imported_modules(_tree(LIB / f"{topic}.py"))
    return {t for t in TOPICS if t != topic and ({f"course_lib.{t}", f"course_lib.{t}_checks"} & mods)}


def test_topics_are_found():
    assert {"dataloader", "transfer", "multilabel", "keypoints", "bbox", "fill_level"} <= set(TOPICS)


@pytest.mark.parametrize("topic", TOPICS)
def test_no_topic_imports_another_topic(topic):
    others = _topic_imports(topic)
    assert not others, (f"course_lib/{topic}.py imports the topic(s) {sorted(others)}: move what they share into "
                        "course_lib/common.py (or another shared layer) and import it from there in both")


def test_the_architecture_check_sees_a_topic_importing_another(tmp_path):
    # The parser must see every spelling: from-imports, module imports, function-local and relative ones.
    for line in ("from course_lib.transfer import settings", "from course_lib import transfer as T",
                 "import course_lib.transfer", "def f():\n    from .transfer import settings",
                 "importlib.import_module('course_lib.transfer')"):
        assert "course_lib.transfer" in _imported_modules(ast.parse(line)), line


# ------------------------------------------------------------------ one home for each shared basic

# Names that once had a copy per topic. Each may be *defined* in one module only; everyone else imports it.
SHARED_NAMES = {
    "settings", "profile_settings", "IMAGENET_MEAN", "IMAGENET_STD", "_png", "fig_png", "read_cal",
    "read_pascal_csv", "save_checkpoint", "save_atomic", "_save_atomic", "_progress", "progress", "progress_bar",
    "learner_pretrained", "cached_pretrained", "cached_weights", "imagenet_weights_path", "imagenet_weights_cached",
    "paste_line",
}


def _modules() -> list[Path]:
    return sorted(p for p in LIB.rglob("*.py") if "__pycache__" not in p.parts)


def _definitions(tree: ast.Module) -> set[str]:
    """Top-level names a module defines itself: functions, classes, and constants written out in place.

    A name bound to an import, to another name or to a call (``settings = profile_settings(TABLE, ...)``)
    is not a definition: its code lives where that import, name or factory was defined.
    """
    out = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            out.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
            try:
                ast.literal_eval(node.value)
            except ValueError:
                continue
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            out.update(t.id for t in targets if isinstance(t, ast.Name))
    return out


def _calls(node: ast.AST) -> set[str]:
    """What ``node`` calls, anywhere in it: ``os.replace(...)`` gives ``replace`` and ``os.replace``."""
    names = set()
    for n in ast.walk(node):
        if isinstance(n, ast.Call):
            f = n.func
            if isinstance(f, ast.Attribute):
                names.add(f.attr)
                if isinstance(f.value, ast.Name):
                    names.add(f"{f.value.id}.{f.attr}")
            elif isinstance(f, ast.Name):
                names.add(f.id)
    return names


def _keywords(node: ast.AST) -> set[str]:
    return {k.arg for n in ast.walk(node) if isinstance(n, ast.Call) for k in n.keywords if k.arg}


def _strings(node: ast.AST) -> str:
    return " ".join(n.value for n in ast.walk(node) if isinstance(n, ast.Constant) and isinstance(n.value, str))


# What a copy of each helper does, whatever it is called: (what, test on a function's AST).
FINGERPRINTS = {
    "an atomic write (os.replace)": lambda fn: "os.replace" in _calls(fn),
    "a figure turned into PNG bytes": lambda fn: {"savefig", "BytesIO"} <= _calls(fn),
    "a tqdm progress bar": lambda fn: "tqdm" in _calls(fn),
    "a BIWI calibration reader": lambda fn: "skip_footer" in _keywords(fn),
    "the line a student pastes": lambda fn: "Paste into the answer cell" in _strings(fn),
    "a widget shown as a cell's value": lambda fn: fn.name == "_ipython_display_",
}


def _functions(tree: ast.Module):
    return [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]


def test_each_shared_basic_is_defined_in_one_module_only():
    where = defaultdict(list)
    for path in _modules():
        for name in _definitions(_tree(path)) & SHARED_NAMES:
            where[name].append(str(path.relative_to(ROOT)))
    copies = {name: places for name, places in where.items() if len(places) > 1}
    assert not copies, f"defined in more than one module (define it once in course_lib/common.py): {copies}"


def test_each_shared_helper_has_one_home_whatever_its_name():
    where = defaultdict(set)
    for path in _modules():
        for fn in _functions(_tree(path)):
            for what, matches in FINGERPRINTS.items():
                if matches(fn):
                    where[what].add(f"{path.relative_to(ROOT)}:{fn.name}")
    copies = {what: sorted(places) for what, places in where.items() if len({p.split(':')[0] for p in places}) > 1}
    assert not copies, f"the same helper written in several modules: {copies}"
    assert set(where) == set(FINGERPRINTS), f"a fingerprint matches nothing any more: {set(FINGERPRINTS) - set(where)}"


def test_the_duplicate_check_sees_a_copy():
    copy = ast.parse("IMAGENET_MEAN = (0.485, 0.456, 0.406)\ndef settings(profile=None):\n    return {}\n"
                     "from course_lib.common import read_cal\nsettings_alias = settings\n")
    assert _definitions(copy) == {"IMAGENET_MEAN", "settings"}
    fn = ast.parse("def save_it(obj, path):\n    torch.save(obj, path + '.tmp')\n    os.replace(path + '.tmp', path)\n")
    assert FINGERPRINTS["an atomic write (os.replace)"](fn.body[0])


# ------------------------------------------------------------------ what the notebooks use still exists

def _notebook_code(lesson_dir: Path) -> str:
    nb = json.loads(next(lesson_dir.glob("*.ipynb")).read_text())
    return "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")


def _attributes_used(code: str, module: str) -> set[str]:
    """``attr`` of every ``module.attr`` in ``code``, leaving out file names (``"checkpoints/fill_level.pth"``)."""
    return set(re.findall(rf"(?<![\w./'\"-]){module}\.(\w+)", code))


LESSONS = sorted(p for p in (ROOT / "solutions").iterdir() if p.is_dir() and any(p.glob("*.ipynb")))


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda p: p.name)
def test_every_course_lib_name_a_notebook_uses_exists(lesson):
    code = _notebook_code(lesson)
    missing = []
    for module, names in re.findall(r"^\s*from (course_lib[\w.]*) import ([\w, ]+)$", code, re.M):
        mod = importlib.import_module(module)
        for name in (n.strip().split(" as ")[0] for n in names.split(",")):
            target = getattr(mod, name, None)
            if target is None:
                try:
                    importlib.import_module(f"{module}.{name}")
                except ModuleNotFoundError:
                    missing.append(f"{module}.{name}")
                    continue
            if module == "course_lib" and f"course_lib.{name}" in {f"course_lib.{t}" for t in TOPICS}:
                topic = importlib.import_module(f"course_lib.{name}")
                missing += [f"course_lib.{name}.{attr}" for attr in _attributes_used(code, name)
                            if not hasattr(topic, attr)]
    assert not missing, f"{lesson.name} uses names course_lib no longer has: {sorted(missing)}"


def test_the_two_augmentation_explorers_have_their_own_names():
    from course_lib.widgets import dataloader, keypoints

    assert dataloader.PipelineExplorer is not keypoints.KeypointExplorer
    # Lessons 01 and 04 import them under the old name, which each module keeps as an alias.
    assert dataloader.AugmentationExplorer is dataloader.PipelineExplorer
    assert keypoints.AugmentationExplorer is keypoints.KeypointExplorer
