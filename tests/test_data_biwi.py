"""The synthetic BIWI head-pose set: real layout, fastbook's reading code, honest head centres."""
from __future__ import annotations

import re
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from course_lib.data import biwi
from course_lib.data.common import MANIFEST, DownloadUnavailable

FRAMES = 2  # per folder: 48 frames in all keeps each build to a few seconds


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return biwi.make_biwi(tmp_path_factory.mktemp("a") / "biwi_head_pose", FRAMES, seed=0)


@pytest.fixture(scope="module")
def silhouettes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same frames with the skull drawn flat magenta: the head's outline made measurable."""
    root = tmp_path_factory.mktemp("s") / "biwi_head_pose"
    biwi._build(root, FRAMES, seed=0, head="silhouette")
    return root


def fastbook_reader(path: Path):
    """fastbook's code, verbatim apart from fastai's ``tensor`` -> ``torch.tensor``."""
    cal = np.genfromtxt(path/'01'/'rgb.cal', skip_footer=6)
    def img2pose(x): return Path(f'{str(x)[:-7]}pose.txt')
    def get_ctr(f):
        ctr = np.genfromtxt(img2pose(f), skip_header=3)
        c1 = ctr[0] * cal[0][0]/ctr[2] + cal[0][2]
        c2 = ctr[1] * cal[1][1]/ctr[2] + cal[1][2]
        return torch.tensor([c1,c2])
    return cal, img2pose, get_ctr


def frames(root: Path) -> list[Path]:
    return sorted(root.glob("*/frame_*_rgb.jpg"))


def test_layout_matches_the_real_download(built: Path) -> None:
    assert sorted(p.name for p in built.iterdir() if p.is_dir()) == list(biwi.FOLDERS)
    files = sorted(p.name for p in built.iterdir() if p.is_file())
    assert files == sorted([f"{f}.obj" for f in biwi.FOLDERS] + [MANIFEST])
    for folder in biwi.FOLDERS:
        names = sorted(p.name for p in (built / folder).iterdir())
        assert {"rgb.cal", "depth.cal"} <= set(names)
        jpgs = [n for n in names if n.endswith("_rgb.jpg")]
        poses = [n for n in names if n.endswith("_pose.txt")]
        assert len(jpgs) == len(poses) == FRAMES
        assert len(names) == 2 + 2 * FRAMES
        assert all(re.fullmatch(r"frame_\d{5}_rgb\.jpg", n) for n in jpgs)
        assert [n[:-8] for n in jpgs] == [n[:-9] for n in poses]
    for img in frames(built)[::7]:
        with Image.open(img) as im:
            assert (im.format, im.mode, im.size) == ("JPEG", "RGB", (640, 480))


def test_cal_file_has_the_real_layout(built: Path) -> None:
    lines = (built / "01" / "rgb.cal").read_text().splitlines()
    blank = [i for i, line in enumerate(lines) if not line.strip()]
    assert len(lines) == 13 and blank == [3, 5, 9, 11]
    assert lines[-1].split() == ["640", "480"]
    assert len(lines[4].split()) == 5  # distortion coefficients
    np.testing.assert_array_equal(biwi.read_cal(built / "01" / "rgb.cal"), biwi.RGB_INTRINSICS)
    # Intrinsics are shared (fastbook only reads folder 01); the extrinsics differ per recording.
    cals = {(built / f / "rgb.cal").read_text() for f in biwi.FOLDERS}
    assert len(cals) == len(biwi.FOLDERS)
    for f in biwi.FOLDERS:
        np.testing.assert_array_equal(biwi.read_cal(built / f / "rgb.cal"), biwi.RGB_INTRINSICS)
        assert biwi.read_cal(built / f / "depth.cal").shape == (3, 3)


def test_fastbook_code_parses_every_frame(built: Path) -> None:
    cal, img2pose, get_ctr = fastbook_reader(built)
    assert cal.shape == (3, 3)
    imgs = frames(built)
    assert len(imgs) == 24 * FRAMES
    for img in imgs:
        ctr = get_ctr(img)
        assert ctr.shape == (2,) and torch.isfinite(ctr).all()
        assert 0 < ctr[0] < 640 and 0 < ctr[1] < 480
        rot, t = biwi.read_pose(img2pose(img))
        np.testing.assert_allclose(np.genfromtxt(img2pose(img), skip_header=3), t)
        np.testing.assert_allclose(rot @ rot.T, np.eye(3), atol=1e-4)
        assert np.linalg.det(rot) > 0.999
        assert 700 <= t[2] <= 1200
        np.testing.assert_allclose(biwi.project(t, cal), ctr.numpy(), atol=1e-9)


def _marker_mask(img: np.ndarray) -> np.ndarray:
    r, g, b = (img[..., i].astype(int) for i in range(3))
    return (r > 160) & (b > 160) & (g < 100)


def test_drawn_head_centre_is_the_pose_centre(built: Path, silhouettes: Path) -> None:
    cal, img2pose, get_ctr = fastbook_reader(built)
    radii, depths = [], []
    for img in frames(built):
        twin = silhouettes / img.relative_to(built)
        # Same random draws: only the pixels of the head may differ between the two builds.
        assert img2pose(twin).read_bytes() == img2pose(img).read_bytes()
        flat = np.asarray(Image.open(twin))
        # Magenta that the normal frame lacks, so a pinkish background object cannot count.
        mask = _marker_mask(flat) & ~_marker_mask(np.asarray(Image.open(img)))
        rows, cols = np.nonzero(mask)
        assert len(rows) > 500, img
        col, row = get_ctr(img).tolist()
        assert abs(cols.mean() - col) < 1.0 and abs(rows.mean() - row) < 1.0, (img, cols.mean(), col, rows.mean(), row)
        radii.append(np.sqrt(mask.sum() / np.pi))
        depths.append(biwi.read_pose(img2pose(img))[1][2])
    radii, depths = np.array(radii), np.array(depths)
    # Size follows depth: radius * z / f is the head's size in mm, whatever the distance.
    size_mm = radii * depths / cal[0][0]
    assert size_mm.min() > 60 and size_mm.max() < 125
    assert np.corrcoef(radii, 1 / depths)[0, 1] > 0.85
    near, far = depths < np.median(depths), depths >= np.median(depths)
    assert radii[near].mean() > radii[far].mean() * 1.1


def test_real_frames_show_the_head_where_the_silhouette_is(built: Path, silhouettes: Path, tmp_path: Path) -> None:
    """The decorated head (hair, ears, nose, ...) covers the skull silhouette and little more."""
    cal, img2pose, get_ctr = fastbook_reader(built)
    headless = tmp_path / "biwi_head_pose"
    yy, xx = np.mgrid[0:480, 0:640]
    checked = 0
    for i in range(0, 24, 4):
        biwi._render_folder((headless, i, FRAMES, 0, "none"))
        for img in sorted((built / biwi.FOLDERS[i]).glob("frame_*_rgb.jpg")):
            rel = img.relative_to(built)
            real = np.asarray(Image.open(img)).astype(int)
            flat = np.asarray(Image.open(silhouettes / rel)).astype(int)
            empty = np.asarray(Image.open(headless / rel)).astype(int)
            # What the head adds to the scene (noise is identical, so small differences count;
            # a head can still match a wall or door in places, as in real rooms).
            drawn = np.abs(real - empty).max(axis=-1) > 12
            skull = _marker_mask(flat.astype(np.uint8)) & ~_marker_mask(empty.astype(np.uint8))
            col, row = get_ctr(img).tolist()
            t = biwi.read_pose(img2pose(img))[1]
            radius = np.sqrt(skull.sum() / np.pi)
            # Away from the head the three renderings are the same bytes (JPEG blocks stay local).
            far = (xx - col) ** 2 + (yy - row) ** 2 > (1.5 * 125 * cal[0][0] / t[2] + 24) ** 2
            assert np.abs(real - empty).max(axis=-1)[far].max() == 0
            assert np.abs(flat - empty).max(axis=-1)[far].max() == 0
            # The drawn head fills the skull silhouette, and its centre is the pose centre.
            assert (drawn & skull).sum() > 0.7 * skull.sum(), img
            rows, cols = np.nonzero(drawn)
            assert np.hypot(cols.mean() - col, rows.mean() - row) < 0.25 * radius, img
            assert drawn.sum() < 1.6 * skull.sum(), img
            checked += 1
    assert checked == 6 * FRAMES


def test_same_seed_same_bytes(built: Path, tmp_path: Path) -> None:
    again = biwi.make_biwi(tmp_path / "biwi_head_pose", FRAMES, seed=0, workers=1)
    files = sorted(p.relative_to(built) for p in built.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    for rel in files:
        assert (built / rel).read_bytes() == (again / rel).read_bytes(), rel


def test_other_seed_other_data(tmp_path: Path) -> None:
    a = tmp_path / "a"
    b = tmp_path / "b"
    biwi._render_folder((a, 0, 1, 0, "full"))
    biwi._render_folder((b, 0, 1, 1, "full"))
    assert sorted(a.rglob("*.jpg"))[0].read_bytes() != sorted(b.rglob("*.jpg"))[0].read_bytes()


def test_made_once_then_reused(built: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stamps = {p: p.stat().st_mtime_ns for p in built.rglob("*")}

    def no_rebuild(*args: object, **kwargs: object) -> None:
        raise AssertionError("rebuilt a dataset that was already there")

    monkeypatch.setattr(biwi, "_build", no_rebuild)
    assert biwi.make_biwi(built, FRAMES, seed=0) == built
    assert {p: p.stat().st_mtime_ns for p in built.rglob("*")} == stamps
    with pytest.raises(AssertionError, match="rebuilt"):
        biwi.make_biwi(built, FRAMES, seed=1)  # other parameters must rebuild


def test_some_people_are_recorded_twice(built: Path) -> None:
    people = [biwi.person_of(f) for f in biwi.FOLDERS]
    assert len(set(people)) == 20 and sorted(set(people)) == list(range(20))
    assert people.count(biwi.person_of("13")) == 1  # fastbook's held-out folder is one person
    shared = [f for f in biwi.FOLDERS if people.count(biwi.person_of(f)) == 2]
    assert len(shared) == 8
    assert biwi.person_of("1") == biwi.person_of("01")
    with pytest.raises(ValueError):
        biwi.person_of("25")
    # A person's head template travels with them; different people get different heads.
    objs = {f: (built / f"{f}.obj").read_text() for f in biwi.FOLDERS}
    for f in biwi.FOLDERS:
        for g in biwi.FOLDERS:
            assert (objs[f] == objs[g]) == (biwi.person_of(f) == biwi.person_of(g))
    assert objs["01"].startswith("#") and "\nv " in objs["01"] and "\nf " in objs["01"]


def test_get_biwi_builds_under_data_root_by_profile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    monkeypatch.delenv("COURSE_DATA", raising=False)
    monkeypatch.setenv("COURSE_DATA_DIR", str(tmp_path))
    monkeypatch.setattr(biwi, "make_biwi", lambda root, n, seed=0: calls.append((root, n, seed)) or root)
    assert biwi.get_biwi("ci", seed=3) == tmp_path / "ci" / "biwi_head_pose"
    biwi.get_biwi("gpu")
    assert calls[0][1:] == (biwi.PROFILE_SIZES["ci"], 3)
    assert calls[1] == (tmp_path / "gpu" / "biwi_head_pose", biwi.PROFILE_SIZES["gpu"], 0)
    assert biwi.PROFILE_SIZES["ci"] < biwi.PROFILE_SIZES["cpu"] < biwi.PROFILE_SIZES["gpu"]


def test_cli_prints_path_and_summary(built: Path, monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(biwi, "get_biwi", lambda profile=None, seed=0: built)
    biwi.main(["--profile", "ci"])
    out = capsys.readouterr().out.splitlines()
    assert out[0] == str(built)
    assert "24 folders (20 people)" in out[1] and f"{24 * FRAMES} frames" in out[1]


def test_real_source_offline_raises_clearly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COURSE_DATA", "real")
    monkeypatch.setenv("FASTAI_HOME", str(tmp_path / "fastai"))  # no cached copy to find
    monkeypatch.chdir(tmp_path)  # fastai also looks in ./data

    def offline(*args: object, **kwargs: object) -> None:
        raise OSError("network is unreachable (blocked by the test)")

    # Make "no network" true everywhere, so the test never downloads 450 MB where there is one.
    monkeypatch.setattr(socket, "getaddrinfo", offline)
    monkeypatch.setattr(socket.socket, "connect", offline)
    with pytest.raises(DownloadUnavailable, match="BIWI_HEAD_POSE") as info:
        biwi.get_biwi("ci")
    assert "COURSE_DATA" in str(info.value)
