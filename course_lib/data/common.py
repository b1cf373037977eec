"""Helpers every data maker shares: build-once caching and the real-data boundary."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Callable

MANIFEST = ".course_manifest.json"


class DownloadUnavailable(RuntimeError):
    """Raised when the real dataset is asked for but cannot be downloaded."""


def build_once(target: Path, params: dict, build: Callable[[Path], None]) -> Path:
    """Make ``target`` with ``build`` unless it already holds data made with the same ``params``.

    The build goes into a sibling temporary folder and is renamed into place at the end,
    so an interrupted build never leaves a half-made dataset that looks complete.
    """
    target = Path(target)
    manifest = target / MANIFEST
    if manifest.exists():
        try:
            if json.loads(manifest.read_text()) == params:
                return target
        except json.JSONDecodeError:
            pass
    tmp = target.with_name(target.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    build(tmp)
    (tmp / MANIFEST).write_text(json.dumps(params, sort_keys=True))
    if target.exists():
        shutil.rmtree(target)
    tmp.rename(target)
    return target


def real_dataset(url_name: str) -> Path:
    """fastai's ``untar_data(URLs.<url_name>)``, with one clear message when it cannot download."""
    try:
        from fastai.data.external import URLs, untar_data
    except ImportError as e:  # pragma: no cover - fastai is a core dependency
        raise DownloadUnavailable("COURSE_DATA=real needs fastai installed (run `make lab`).") from e
    url = getattr(URLs, url_name)
    try:
        return Path(untar_data(url))
    except Exception as e:  # network errors surface as many different types
        raise DownloadUnavailable(
            f"COURSE_DATA=real asked for {url_name} from {url}, but it could not be downloaded "
            f"({type(e).__name__}: {e}). Without internet, unset COURSE_DATA to use the synthetic "
            "copy in the same format, or place the extracted dataset where fastai.data.external "
            "looks for it (fastai's config 'data' path)."
        ) from e
