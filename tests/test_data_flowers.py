"""The synthetic flowers match the tutorial's Oxford 102 layout; the backbone never downloads."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torchvision import datasets, models

from course_lib import backbone, common
from course_lib.data import flowers
from course_lib.data.common import DownloadUnavailable
from course_lib.data.flowers import FLOWER_KINDS, get_flowers, make_flowers

N_CLASSES, TRAIN, VALID, SIZE = 4, 2, 3, 48
# A pretraining budget that only checks the plumbing: a couple of tiny batches.
TINY = {"steps": 2, "batch_size": 4, "image_size": 32}


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_flowers(tmp_path_factory.mktemp("a") / "flowers", N_CLASSES, TRAIN, VALID, seed=0, size=SIZE)


def _files(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def test_layout(made: Path) -> None:
    names = [str(i) for i in range(1, N_CLASSES + 1)]
    assert sorted(p.name for p in made.iterdir()) == ["cat_to_name.json", "train", "valid"]
    numbers = []
    for split, per in (("train", TRAIN), ("valid", VALID)):
        assert sorted(p.name for p in (made / split).iterdir()) == sorted(names)
        for name in names:
            jpgs = sorted((made / split / name).iterdir())
            assert len(jpgs) == per
            for jpg in jpgs:
                assert jpg.name.startswith("image_") and jpg.suffix == ".jpg"
                numbers.append(int(jpg.stem.split("_")[1]))
                with Image.open(jpg) as im:
                    assert (im.format, im.mode, im.size) == ("JPEG", "RGB", (SIZE, SIZE))
    # Image numbers are unique across the whole set, as in the real copy.
    assert sorted(numbers) == list(range(1, N_CLASSES * (TRAIN + VALID) + 1))


def test_imagefolder_reads_it(made: Path) -> None:
    ds = datasets.ImageFolder(made / "train")
    assert len(ds) == N_CLASSES * TRAIN
    assert ds.classes == sorted(str(i) for i in range(1, N_CLASSES + 1))
    img, label = ds[0]
    assert img.size == (SIZE, SIZE) and 0 <= label < N_CLASSES
    assert datasets.ImageFolder(made / "valid").classes == ds.classes


def test_cat_to_name_covers_every_class(made: Path) -> None:
    cat_to_name = json.loads((made / "cat_to_name.json").read_text())
    for split in ("train", "valid"):
        assert set(cat_to_name) == {p.name for p in (made / split).iterdir()}
    assert len(set(cat_to_name.values())) == N_CLASSES
    assert cat_to_name["1"] == FLOWER_KINDS[0].name


def test_deterministic_per_seed(made: Path, tmp_path: Path) -> None:
    again = make_flowers(tmp_path / "same", N_CLASSES, TRAIN, VALID, seed=0, size=SIZE)
    assert _files(again) == _files(made)
    other = make_flowers(tmp_path / "other", N_CLASSES, TRAIN, VALID, seed=1, size=SIZE)
    assert _files(other)["train/1/image_00001.jpg"] != _files(made)["train/1/image_00001.jpg"]


def test_too_many_classes_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="n_classes"):
        make_flowers(tmp_path, len(FLOWER_KINDS) + 1, 1, 1)


def test_get_flowers_builds_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COURSE_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("COURSE_DATA", raising=False)
    monkeypatch.setitem(flowers.PROFILE_SIZES, "ci",
                        {"n_classes": 3, "train_per_class": 1, "valid_per_class": 1, "size": 32})
    path = get_flowers("ci")
    assert path == tmp_path / "ci" / "flowers"
    before = _files(path)

    def no_rebuild(*args: object, **kwargs: object) -> Path:
        raise AssertionError("rebuilt although the data was there")

    monkeypatch.setattr(flowers, "make_flowers", no_rebuild)
    assert get_flowers("ci") == path
    assert _files(path) == before
    assert "3 classes, 3 train / 3 valid" in flowers.summary(path)


def test_real_flowers_are_never_downloaded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COURSE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("COURSE_DATA", "real")
    with pytest.raises(DownloadUnavailable, match="URLs.FLOWERS"):
        get_flowers("ci")
    real = tmp_path / "real" / "flowers"
    make_flowers(real, 2, 1, 1, size=32)  # stands in for an extracted real copy
    assert get_flowers("ci") == real


# ---------------------------------------------------------------------------------------------
# backbone


@pytest.fixture
def caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Empty course and torch-hub caches under tmp_path; returns the hub dir."""
    monkeypatch.setenv("COURSE_DATA_DIR", str(tmp_path / "data"))
    hub = tmp_path / "hub"
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    return hub


def _same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_course_pretraining_is_cached_atomically_and_reused(caches: Path, monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    replaced: list[tuple[Path, Path]] = []
    real_replace = common.os.replace

    def spy(src: str, dst: str) -> None:
        replaced.append((Path(src), Path(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(common.os, "replace", spy)  # the atomic write lives in course_lib.common
    cache = backbone.course_pretrained_path("resnet18", **TINY)
    first = backbone.pretrained_resnet("resnet18", progress=False, **TINY)
    assert "pretraining resnet18" in capsys.readouterr().out
    assert isinstance(first, models.ResNet)
    assert first.fc.out_features == len(backbone.source_task_classes())
    # Written under another name in the same folder, then renamed into place.
    assert replaced == [(replaced[0][0], cache)] and replaced[0][0].parent == cache.parent
    assert sorted(p.name for p in cache.parent.iterdir()) == [cache.name]

    def no_retrain(*args: object, **kwargs: object) -> float:
        raise AssertionError("pretrained again although the cache was there")

    monkeypatch.setattr(backbone, "pretrain_on_source", no_retrain)
    second = backbone.pretrained_resnet("resnet18", progress=False, **TINY)
    assert "loaded from" in capsys.readouterr().out
    assert _same_weights(first, second)


def test_failed_save_leaves_no_cache(caches: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_save(obj: object, f: object) -> None:
        Path(f).write_bytes(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(backbone.torch, "save", broken_save)
    with pytest.raises(OSError):
        backbone.pretrained_resnet("resnet18", progress=False, **TINY)
    folder = backbone.course_pretrained_path("resnet18", **TINY).parent
    assert list(folder.iterdir()) == []


def test_corrupt_cache_is_rebuilt(caches: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cache = backbone.course_pretrained_path("resnet18", **TINY)
    cache.parent.mkdir(parents=True)
    cache.write_bytes(b"the end of a file cut short by a full disk")
    model = backbone.pretrained_resnet("resnet18", progress=False, **TINY)
    assert "pretraining resnet18" in capsys.readouterr().out
    assert backbone._load_cache(cache) is not None
    assert _same_weights(model, backbone.pretrained_resnet("resnet18", progress=False, **TINY))


def test_settings_have_their_own_cache_files() -> None:
    quick = backbone.course_pretrained_path("resnet18", **TINY)
    longer = backbone.course_pretrained_path("resnet18", **{**TINY, "steps": 400})
    assert quick != longer and quick.parent == longer.parent


def test_cached_imagenet_weights_are_used(caches: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    fake = models.resnet18()
    path = backbone.imagenet_weights_path("resnet18")
    assert path == caches / "checkpoints" / "resnet18-f37072fd.pth"
    path.parent.mkdir(parents=True)
    torch.save(fake.state_dict(), path)

    def no_pretraining(*args: object, **kwargs: object) -> float:
        raise AssertionError("pretrained although ImageNet weights were cached")

    monkeypatch.setattr(backbone, "pretrain_on_source", no_pretraining)
    model = backbone.pretrained_resnet("resnet18", progress=False)
    assert "ImageNet" in capsys.readouterr().out
    assert model.fc.out_features == 1000 and _same_weights(model, fake)
    # The tutorial's head swap works on it unchanged.
    model.fc = nn.Linear(model.fc.in_features, N_CLASSES)
    assert model(torch.zeros(2, 3, 64, 64)).shape == (2, N_CLASSES)


def test_source_task_is_not_flowers() -> None:
    source = backbone.source_task_classes()
    assert 20 <= len(source) <= 50 and len(set(source)) == len(source)
    flower_names = {kind.name for kind in FLOWER_KINDS}
    source_values = {name.split(":")[1] for name in source}
    assert not flower_names & source_values
    # Colours are shared words ("purple coneflower"), but no object kind is a flower word.
    flower_words = {w for name in flower_names for w in name.split()}
    assert not flower_words & set(backbone.SOURCE_ATTRIBUTES["shape"])
    x, y = backbone.source_batch(np.random.default_rng(0), 3, 32)
    assert x.shape == (3, 3, 32, 32) and y.shape == (3, len(backbone.SOURCE_ATTRIBUTES))
    sizes = torch.tensor([len(v) for v in backbone.SOURCE_ATTRIBUTES.values()])
    assert bool(((y >= 0) & (y < sizes)).all())
    assert backbone.source_loss(torch.zeros(3, len(source)), y).item() > 0


def test_fastai_arch_behaves_like_a_downloadable_resnet(caches: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from fastai.vision.all import DataLoaders, Normalize, vision_learner

    x, y = torch.rand(4, 3, 32, 32), torch.zeros(4).long()
    ds = torch.utils.data.TensorDataset(x, y)
    dls = DataLoaders.from_dsets(ds, ds, bs=2)
    learn = vision_learner(dls, backbone.fastai_arch(**TINY), pretrained=True, n_out=3, loss_func=nn.CrossEntropyLoss())
    assert "pretraining resnet18" in capsys.readouterr().out
    # The body carries the course weights, as vision_learner's body would carry ImageNet's.
    source = backbone.pretrained_resnet("resnet18", progress=False, **TINY)
    assert torch.equal(learn.model[0][0].weight, source.conv1.weight)
    assert len(learn.opt.param_groups) == 3  # fastai's resnet split: stem..layer2, layer3..4, head
    assert any(isinstance(t, Normalize) for t in dls.after_batch)  # ImageNet statistics added
