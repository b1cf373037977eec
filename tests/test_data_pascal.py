"""The synthetic PASCAL_2007 matches fastai's on-disk format and is cheap, stable and reused."""
from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest
from PIL import Image

from course_lib.data import pascal
from course_lib.data.common import DownloadUnavailable
from course_lib.data.pascal import VOC_CLASSES, get_pascal_2007, make_pascal_2007

N = 40
SIZE = 96  # small images: the format is what is under test, not the looks


@pytest.fixture(scope="module")
def voc(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_pascal_2007(tmp_path_factory.mktemp("a"), N, seed=0, image_size=SIZE)


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path / "train.csv", newline="") as f:
        return list(csv.DictReader(f))


def _json(path: Path, split: str) -> dict:
    return json.loads((path / f"{split}.json").read_text())


def _files(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def test_layout(voc: Path) -> None:
    assert voc.name == "pascal_2007"
    for name in ("train", "test"):
        assert (voc / name).is_dir()
    for name in ("train.csv", "train.json", "valid.json", "test.json"):
        assert (voc / name).is_file()
    jpgs = list((voc / "train").iterdir())
    assert len(jpgs) == N
    assert all(re.fullmatch(r"\d{6}\.jpg", p.name) for p in jpgs + list((voc / "test").iterdir()))
    assert len(list((voc / "test").iterdir())) >= 1


def test_csv_columns_and_values(voc: Path) -> None:
    assert (voc / "train.csv").read_text().splitlines()[0] == "fname,labels,is_valid"
    rows = _rows(voc)
    assert len(rows) == N
    assert len({r["fname"] for r in rows}) == N
    for r in rows:
        assert (voc / "train" / r["fname"]).is_file()
        assert r["is_valid"] in ("True", "False")
        labels = r["labels"].split(" ")
        assert 1 <= len(labels) <= 3
        assert all(label in VOC_CLASSES for label in labels)
        assert labels == sorted(set(labels)), "labels are documented as unique and sorted"
    n_valid = sum(r["is_valid"] == "True" for r in rows)
    assert n_valid == round(0.2 * N)


def test_json_schema_and_categories(voc: Path) -> None:
    for split in ("train", "valid", "test"):
        d = _json(voc, split)
        assert list(d) == ["images", "type", "annotations", "categories"]
        assert d["type"] == "instances"
        assert d["categories"] == [{"supercategory": "none", "id": i + 1, "name": c} for i, c in enumerate(VOC_CLASSES)]
        for im in d["images"]:
            assert set(im) == {"file_name", "height", "width", "id"}
            assert im["file_name"] == f"{im['id']:06d}.jpg"
        for a in d["annotations"]:
            assert set(a) == {"area", "bbox", "category_id", "id", "ignore", "image_id", "iscrowd", "segmentation"}
            assert a["ignore"] == 0 and a["iscrowd"] == 0
            assert 1 <= a["category_id"] <= 20
    assert VOC_CLASSES[:3] == ["aeroplane", "bicycle", "bird"] and VOC_CLASSES[-1] == "tvmonitor"
    assert len(VOC_CLASSES) == 20


def test_csv_and_json_agree(voc: Path) -> None:
    names = {c["id"]: c["name"] for c in _json(voc, "train")["categories"]}
    by_file: dict[str, set[str]] = {}
    for split in ("train", "valid"):
        d = _json(voc, split)
        files = {im["id"]: im["file_name"] for im in d["images"]}
        for a in d["annotations"]:
            by_file.setdefault(files[a["image_id"]], set()).add(names[a["category_id"]])
    assert {r["fname"]: set(r["labels"].split()) for r in _rows(voc)} == by_file


def test_is_valid_matches_json_split(voc: Path) -> None:
    rows = _rows(voc)
    train = {im["file_name"] for im in _json(voc, "train")["images"]}
    valid = {im["file_name"] for im in _json(voc, "valid")["images"]}
    assert train == {r["fname"] for r in rows if r["is_valid"] == "False"}
    assert valid == {r["fname"] for r in rows if r["is_valid"] == "True"}
    test = {im["file_name"] for im in _json(voc, "test")["images"]}
    assert test == {p.name for p in (voc / "test").iterdir()}
    assert not test & (train | valid)


def test_bboxes_fit_images(voc: Path) -> None:
    ann_ids = []
    for split, folder in (("train", "train"), ("valid", "train"), ("test", "test")):
        d = _json(voc, split)
        images = {im["id"]: im for im in d["images"]}
        for a in d["annotations"]:
            im = images[a["image_id"]]
            with Image.open(voc / folder / im["file_name"]) as img:
                assert img.size == (im["width"], im["height"])
            x, y, w, h = a["bbox"]
            assert all(isinstance(v, int) for v in a["bbox"])
            assert x >= 0 and y >= 0 and w >= 2 and h >= 2
            assert x + w <= im["width"] and y + h <= im["height"]
            assert a["area"] == w * h
            assert a["segmentation"] == [[x, y, x, y + h, x + w, y + h, x + w, y]]
            ann_ids.append(a["id"])
    assert len(ann_ids) == len(set(ann_ids))


def test_same_seed_same_bytes_other_seed_differs(voc: Path, tmp_path: Path) -> None:
    again = make_pascal_2007(tmp_path / "b", N, seed=0, image_size=SIZE)
    assert _files(again) == _files(voc)
    other = make_pascal_2007(tmp_path / "c", N, seed=1, image_size=SIZE)
    assert (other / "train.csv").read_bytes() != (voc / "train.csv").read_bytes()
    assert _files(other) != _files(voc)


def test_second_call_reuses(voc: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = {p: p.stat().st_mtime_ns for p in voc.rglob("*")}

    def no_drawing(*args: object, **kwargs: object) -> None:
        raise AssertionError("the dataset was rebuilt")

    monkeypatch.setattr(pascal, "_render", no_drawing)
    assert make_pascal_2007(voc.parent, N, seed=0, image_size=SIZE) == voc
    assert {p: p.stat().st_mtime_ns for p in voc.rglob("*")} == before


def test_profile_folder_and_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setenv("COURSE_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("COURSE_DATA", raising=False)
    path = get_pascal_2007("ci")
    assert path == tmp_path / "ci" / "pascal_2007"
    assert len(_rows(path)) == pascal.PROFILE_SIZES["ci"]
    pascal.main(["--profile", "ci"])
    out = capsys.readouterr().out.splitlines()
    assert out[0] == str(path)
    assert out[1].startswith(f"pascal_2007: {pascal.PROFILE_SIZES['ci']} images")


def test_real_source_fails_clearly_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import fastai.data.external

    def offline(*args: object, **kwargs: object) -> None:
        # What untar_data raises with no network; patched so the test never downloads 1.6 GB.
        raise ConnectionError("Name or service not known")

    monkeypatch.setenv("COURSE_DATA", "real")
    monkeypatch.setenv("COURSE_DATA_DIR", str(tmp_path))
    monkeypatch.setattr(fastai.data.external, "untar_data", offline)
    with pytest.raises(DownloadUnavailable, match="PASCAL_2007.*unset COURSE_DATA"):
        get_pascal_2007("ci")
    assert not (tmp_path / "ci").exists()


def test_too_small_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        make_pascal_2007(tmp_path, 1)


def test_fastai_multilabel_dataloaders(voc: Path) -> None:
    import pandas as pd
    from fastai.vision.all import ColSplitter, DataBlock, ImageBlock, MultiCategoryBlock, Resize

    df = pd.read_csv(voc / "train.csv")
    assert df["is_valid"].dtype == bool
    block = DataBlock(
        blocks=(ImageBlock, MultiCategoryBlock),
        get_x=lambda r: voc / "train" / r["fname"],
        get_y=lambda r: r["labels"].split(" "),
        splitter=ColSplitter("is_valid"),
        item_tfms=Resize(64),
    )
    dls = block.dataloaders(df, bs=4, num_workers=0)
    assert len(dls.valid_ds) == round(0.2 * N)
    x, y = dls.one_batch()
    assert tuple(x.shape) == (4, 3, 64, 64)
    assert tuple(y.shape) == (4, len(dls.vocab))
    assert set(dls.vocab) <= set(VOC_CLASSES)
    assert ((y.sum(1) >= 1) & (y.sum(1) <= 3)).all()


def test_fastai_reads_the_boxes(voc: Path) -> None:
    from fastai.vision.all import get_annotations

    fnames, targets = get_annotations(voc / "train.json")
    assert len(fnames) == N - round(0.2 * N)
    boxes, labels = targets[0]
    assert len(boxes) == len(labels) and all(len(b) == 4 for b in boxes)
    assert all(label in VOC_CLASSES for label in labels)


def test_the_largest_object_is_clearly_the_largest(voc: Path) -> None:
    """Lesson 05's label must be a property of the pixels: the largest box beats the next by a margin."""
    multi = 0
    for split in ("train", "valid", "test"):
        by_image: dict[int, list[int]] = {}
        for a in _json(voc, split)["annotations"]:
            by_image.setdefault(a["image_id"], []).append(a["bbox"][2] * a["bbox"][3])
        for areas in by_image.values():
            if len(areas) > 1:
                multi += 1
                first, second = sorted(areas, reverse=True)[:2]
                assert first >= pascal.LARGEST_MARGIN * second
    assert multi >= N // 4  # scenes with several objects are still common
