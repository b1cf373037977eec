"""environment.yml (conda users) and pyproject.toml (make lab) must describe the same environment."""
import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def _norm(req: str) -> str:
    return re.sub(r"\s+", "", req).lower()


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {_norm(r) for r in project["dependencies"] + project["optional-dependencies"]["dev"]}
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    listed = {_norm(r) for r in pip_section if not r.startswith("-e")}
    assert listed == declared, f"only in environment.yml: {listed - declared}; only in pyproject: {declared - listed}"
    assert any(r.startswith("-e") for r in pip_section), "environment.yml must install the project itself"
    py = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python="))
    assert py == "python=3.11" and ">=3.11" in project["requires-python"]
