"""A synthetic BIWI Kinect head-pose set, laid out exactly like fastai's ``URLs.BIWI_HEAD_POSE``.

The real set (``untar_data(URLs.BIWI_HEAD_POSE)``) is 450 MB of Kinect recordings; the lesson
only needs its *format* and a task that behaves like it, so this module draws one offline::

    biwi_head_pose/
        01.obj ... 24.obj            head template mesh of each recording (mm, Wavefront OBJ)
        01/ ... 24/                  one folder per recording
            depth.cal  rgb.cal       camera calibration (same text layout as the real files)
            frame_00003_rgb.jpg      640x480 RGB JPEG
            frame_00003_pose.txt     3x3 head rotation, blank line, head centre ``x y z`` in mm
            ...

fastbook's reading code works unchanged on it::

    cal = np.genfromtxt(path/'01'/'rgb.cal', skip_footer=6)
    def img2pose(x): return Path(f'{str(x)[:-7]}pose.txt')
    def get_ctr(f):
        ctr = np.genfromtxt(img2pose(f), skip_header=3)
        c1 = ctr[0] * cal[0][0]/ctr[2] + cal[0][2]
        c2 = ctr[1] * cal[1][1]/ctr[2] + cal[1][2]
        return tensor([c1,c2])

Each frame shows a rendered head (a skull ellipsoid with nose, ears, eyes, mouth, hair, beard,
glasses or cap depending on the person) above a torso, in front of a room-like background.
The head is rendered with a weak-perspective camera: its centre lands exactly on the pixel
``get_ctr`` computes from the pose file, its size scales with ``f / z``, and its features turn
with the rotation matrix. Like the real set, 20 people make the 24 recordings, four of them
twice (see :func:`person_of`), in different rooms and clothes, so holding out a folder's person
(fastbook holds out ``'13'``) tests generalisation to a new face.

Unlike the real set, the pose is expressed in the RGB camera's frame, so ``get_ctr`` is exact
instead of ignoring the depth-to-RGB extrinsics.
"""
from __future__ import annotations

import argparse
import io
import math
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from course_lib import config
from course_lib.common import read_cal  # noqa: F401 - biwi.read_cal: the reader for the files made here
from course_lib.data.common import build_once, real_dataset

# Frames per recording folder; 24 folders in every profile, like the real set.
PROFILE_SIZES: dict[str, int] = {"ci": 6, "cpu": 40, "gpu": 150}

FOLDERS: tuple[str, ...] = tuple(f"{i:02d}" for i in range(1, 25))
WIDTH, HEIGHT = 640, 480
JPEG_QUALITY = 90
# Bump whenever the drawing changes, so build_once rebuilds stale copies.
FORMAT_VERSION = 2

# The real set's calibration: every folder carries the same intrinsics, which is why fastbook
# can read them from folder 01 only.
RGB_INTRINSICS = np.array([[517.679, 0.0, 320.0], [0.0, 517.679, 240.5], [0.0, 0.0, 1.0]])
DEPTH_INTRINSICS = np.array([[575.816, 0.0, 320.0], [0.0, 575.816, 240.0], [0.0, 0.0, 1.0]])

# Folders that record a person already recorded in an earlier folder (the real set has 20
# people in 24 recordings). Folder 13, which fastbook holds out, is nobody else's.
_REPEATS: dict[str, str] = {"15": "03", "18": "06", "21": "10", "24": "01"}

# How far (px) the camera's view of the room drifts between frames, horizontally and vertically:
# with a fixed backdrop per recording a network can key on the room instead of the head.
_PAN = (48, 32)

# Sensor noise is drawn once per folder and shifted per frame: fresh noise per frame is slow.
_NOISE_PAD = 64

# What to draw for the head: the real thing, or (for tests that locate it) a flat magenta
# skull silhouette, or nothing; every other pixel and random draw stays the same.
_HEAD_MODES = ("full", "silhouette", "none")
# Flat colour of the silhouette.
_MARKER = (255, 0, 255)

_SKIN = [(247, 214, 184), (236, 192, 152), (224, 172, 125), (198, 140, 95), (165, 110, 70),
         (120, 78, 48), (92, 60, 40), (232, 185, 160), (210, 160, 120), (250, 222, 196)]
_HAIR = [(22, 17, 14), (55, 38, 26), (95, 64, 38), (150, 108, 62), (205, 172, 110),
         (130, 58, 30), (118, 112, 108), (200, 196, 190), (40, 30, 25)]
_EYES = [(60, 40, 25), (90, 60, 30), (60, 100, 140), (80, 110, 80), (40, 30, 25)]
_SHIRTS = [(40, 60, 110), (130, 130, 135), (30, 30, 35), (225, 225, 220), (150, 40, 40),
           (60, 100, 60), (20, 40, 70), (190, 150, 60), (90, 120, 160), (110, 80, 60),
           (70, 140, 140), (200, 110, 50)]
_WALLS = [(200, 190, 170), (178, 184, 190), (170, 180, 160), (214, 208, 196), (158, 168, 184),
          (192, 172, 150), (138, 138, 132), (222, 216, 204), (182, 196, 186), (120, 110, 100)]
_WOODS = [(120, 84, 52), (150, 110, 70), (90, 60, 40), (170, 135, 95), (70, 50, 35)]


# ----------------------------------------------------------------------------- reading helpers


def read_pose(path: Path | str) -> tuple[np.ndarray, np.ndarray]:
    """The head pose in a ``frame_XXXXX_pose.txt``.

    Returns ``(R, t)``: ``R`` of shape ``(3, 3)`` rotates head coordinates into camera
    coordinates (identity = facing the camera), ``t`` of shape ``(3,)`` is the head centre in
    mm in the RGB camera frame (x right, y down, z away from the camera).
    """
    rows = [line.split() for line in Path(path).read_text().splitlines() if line.strip()]
    if len(rows) != 4 or any(len(r) != 3 for r in rows):
        raise ValueError(f"{path}: expected 3 rotation rows and 1 translation row of 3 numbers")
    values = np.array(rows, dtype=float)
    return values[:3], values[3]


def project(t: np.ndarray, cal: np.ndarray) -> tuple[float, float] | tuple[np.ndarray, np.ndarray]:
    """Pixel ``(col, row)`` of camera-frame point(s) ``t`` (shape ``(3,)`` or ``(N, 3)``, mm).

    Same formula as fastbook's ``get_ctr``; pixel centres sit at integer coordinates.
    """
    t = np.asarray(t, dtype=float)
    col = t[..., 0] * cal[0][0] / t[..., 2] + cal[0][2]
    row = t[..., 1] * cal[1][1] / t[..., 2] + cal[1][2]
    if t.ndim == 1:
        return float(col), float(row)
    return col, row


def person_of(folder: str) -> int:
    """Identity (0..19) of the person recorded in ``folder`` (``'01'``..``'24'``).

    Four people are recorded twice, so some folders share an identity; splitting by folder
    alone can leak a face into validation, splitting by ``person_of`` cannot.
    """
    folder = f"{int(folder):02d}"
    if folder not in FOLDERS:
        raise ValueError(f"BIWI folders are 01..24, not {folder!r}")
    folder = _REPEATS.get(folder, folder)
    firsts = [f for f in FOLDERS if f not in _REPEATS]
    return firsts.index(folder)


def summarize(path: Path | str) -> str:
    """One line describing a BIWI-layout folder: folders, frames, people."""
    path = Path(path)
    folders = sorted(p for p in path.iterdir() if p.is_dir() and p.name.isdigit())
    frames = sum(len(list(f.glob("frame_*_rgb.jpg"))) for f in folders)
    people = len({person_of(f.name) for f in folders if f.name in FOLDERS})
    per = f"{frames / len(folders):.0f}" if folders else "0"
    return (f"biwi_head_pose: {len(folders)} folders ({people} people), {frames} frames "
            f"(~{per}/folder) of {WIDTH}x{HEIGHT} RGB + pose.txt")


# ----------------------------------------------------------------------------- random traits


@dataclass(frozen=True)
class _Person:
    """What makes a face recognisable across recordings."""

    skin: np.ndarray  # (3,) 0..1
    hair: np.ndarray  # (3,) 0..1
    eye: np.ndarray  # (3,) 0..1
    lip: np.ndarray  # (3,) 0..1
    axes: np.ndarray  # (3,) skull semi-axes in mm: half width, half height, half depth
    hair_style: str  # short | long | bald | cap | bun
    hairline: float  # unit-sphere y above which the forehead is hair
    beard: bool
    glasses: str  # none | round | square
    glasses_colour: np.ndarray  # (3,) 0..1
    cap_colour: np.ndarray  # (3,) 0..1
    eye_x: float
    eye_y: float
    nose: float  # size factor
    ear: float  # size factor
    mouth_w: float


@dataclass(frozen=True)
class _Session:
    """What changes between recordings: room, clothes, light, where the chair stands."""

    background: np.ndarray  # (H + 2 pan, W + 2 pan, 3) uint8 room, seen through a shifting window
    noise: np.ndarray  # (H + pad, W + pad) int8 sensor noise, cropped at a random offset per frame
    shirt: tuple[int, int, int]
    shoulders: float  # half shoulder width in head half-widths
    light: np.ndarray  # (3,) unit vector from surface towards the light, camera frame
    ambient: float
    depth: float  # mean head distance from the camera in mm, where the chair stands
    rgb_extrinsics: tuple[np.ndarray, np.ndarray]


def _jitter(rng: np.random.Generator, colour: tuple[int, int, int], amount: float) -> np.ndarray:
    c = np.asarray(colour, dtype=float) / 255.0
    return np.clip(c * rng.uniform(1 - amount, 1 + amount) + rng.normal(0, amount / 3, 3), 0, 1)


def _make_person(seed: int, person: int) -> _Person:
    # Seeded by person, not folder, so a repeated person looks the same in both recordings.
    rng = np.random.default_rng([seed, 1, person])
    skin = _jitter(rng, _SKIN[rng.integers(len(_SKIN))], 0.06)
    style = ["short", "short", "long", "bald", "cap", "bun"][rng.integers(6)]
    hair = _jitter(rng, _HAIR[rng.integers(len(_HAIR))], 0.08)
    width = rng.uniform(68, 82)
    return _Person(
        skin=skin,
        hair=hair,
        eye=_jitter(rng, _EYES[rng.integers(len(_EYES))], 0.1),
        lip=np.clip(skin * np.array([0.85, 0.55, 0.55]) + np.array([0.08, 0.0, 0.0]), 0, 1),
        axes=np.array([width, width * rng.uniform(1.25, 1.48), width * rng.uniform(1.12, 1.28)]),
        hair_style=style,
        hairline=float(rng.uniform(-0.62, -0.35)),
        beard=bool(rng.random() < 0.3),
        glasses=["none", "none", "round", "square"][rng.integers(4)],
        glasses_colour=np.asarray([(20, 20, 20), (90, 60, 30), (150, 150, 160)][rng.integers(3)]) / 255.0,
        cap_colour=_jitter(rng, _SHIRTS[rng.integers(len(_SHIRTS))], 0.1),
        eye_x=float(rng.uniform(0.30, 0.40)),
        eye_y=float(rng.uniform(-0.16, -0.06)),
        nose=float(rng.uniform(0.85, 1.2)),
        ear=float(rng.uniform(0.85, 1.2)),
        mouth_w=float(rng.uniform(0.14, 0.22)),
    )


def _draw_room(rng: np.random.Generator) -> np.ndarray:
    """A wall with furniture, a floor and uneven light: (H + 2 pan, W + 2 pan, 3) uint8.

    Drawn larger than a frame: each frame sees it through a slightly shifted window.
    """
    cw, ch = WIDTH + 2 * _PAN[0], HEIGHT + 2 * _PAN[1]
    wall = tuple(int(v) for v in np.clip(np.array(_WALLS[rng.integers(len(_WALLS))]) + rng.normal(0, 8, 3), 0, 255))
    img = Image.new("RGB", (cw, ch), wall)
    draw = ImageDraw.Draw(img)
    floor_y = int(rng.uniform(330, 420)) + _PAN[1]
    floor = tuple(int(v) for v in np.array(_WOODS[rng.integers(len(_WOODS))]) * rng.uniform(0.7, 1.1))
    draw.rectangle([0, floor_y, cw, ch], fill=floor)
    draw.line([0, floor_y, cw, floor_y], fill=tuple(int(v * 0.6) for v in wall), width=3)

    def colour(base: tuple[int, int, int], spread: float = 20) -> tuple[int, int, int]:
        return tuple(int(v) for v in np.clip(np.array(base) + rng.normal(0, spread, 3), 0, 255))

    for _ in range(int(rng.integers(3, 7))):
        kind = ["window", "door", "shelf", "picture", "board", "plant", "cabinet", "lamp"][rng.integers(8)]
        x = int(rng.uniform(-60, cw - 40))
        if kind == "window":
            w, h, y = int(rng.uniform(120, 220)), int(rng.uniform(110, 180)), int(rng.uniform(20, 90)) + _PAN[1]
            draw.rectangle([x, y, x + w, y + h], fill=colour((235, 235, 230), 8))
            draw.rectangle([x + 8, y + 8, x + w - 8, y + h - 8], fill=colour((175, 205, 235), 18))
            draw.line([x + w // 2, y, x + w // 2, y + h], fill=(235, 235, 230), width=6)
            draw.line([x, y + h // 2, x + w, y + h // 2], fill=(235, 235, 230), width=6)
        elif kind == "door":
            w = int(rng.uniform(90, 130))
            draw.rectangle([x, floor_y - 300, x + w, floor_y], fill=colour(_WOODS[rng.integers(len(_WOODS))]))
            draw.ellipse([x + w - 22, floor_y - 160, x + w - 10, floor_y - 148], fill=(200, 190, 120))
        elif kind == "shelf":
            w, top = int(rng.uniform(110, 200)), int(rng.uniform(40, 180)) + _PAN[1]
            draw.rectangle([x, top, x + w, floor_y], fill=colour(_WOODS[rng.integers(len(_WOODS))]))
            for shelf_y in range(top + 10, floor_y - 30, 55):
                bx = x + 6
                while bx < x + w - 12:
                    bw, bh = int(rng.uniform(6, 16)), int(rng.uniform(30, 48))
                    draw.rectangle([bx, shelf_y + 48 - bh, bx + bw, shelf_y + 48], fill=colour((128, 110, 100), 60))
                    bx += bw + 1
                draw.rectangle([x, shelf_y + 48, x + w, shelf_y + 53], fill=colour((60, 45, 30), 10))
        elif kind == "picture":
            w, h, y = int(rng.uniform(50, 120)), int(rng.uniform(40, 100)), int(rng.uniform(30, 200)) + _PAN[1]
            draw.rectangle([x, y, x + w, y + h], fill=colour((50, 40, 30), 20))
            draw.rectangle([x + 5, y + 5, x + w - 5, y + h - 5], fill=colour((130, 140, 120), 50))
            for _ in range(3):
                cx, cy = x + rng.uniform(8, w - 8), y + rng.uniform(8, h - 8)
                r = rng.uniform(4, 18)
                draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour((120, 120, 120), 60))
        elif kind == "board":
            w, h, y = int(rng.uniform(150, 260)), int(rng.uniform(90, 150)), int(rng.uniform(40, 140)) + _PAN[1]
            draw.rectangle([x, y, x + w, y + h], fill=(160, 160, 165))
            draw.rectangle([x + 4, y + 4, x + w - 4, y + h - 4], fill=colour((240, 240, 238), 5))
            for _ in range(int(rng.integers(2, 6))):
                ly = y + rng.uniform(15, h - 15)
                draw.line([x + rng.uniform(10, 40), ly, x + rng.uniform(60, w - 10), ly + rng.normal(0, 5)],
                          fill=colour((60, 60, 140), 60), width=3)
        elif kind == "plant":
            pot_y = floor_y - int(rng.uniform(0, 20))
            draw.rectangle([x + 15, pot_y - 45, x + 55, pot_y], fill=colour((150, 80, 50), 20))
            for _ in range(10):
                cx, cy = x + 35 + rng.normal(0, 22), pot_y - 70 - abs(rng.normal(0, 50))
                r = rng.uniform(10, 22)
                draw.ellipse([cx - r, cy - r * 0.6, cx + r, cy + r * 0.6], fill=colour((60, 110, 50), 20))
        elif kind == "cabinet":
            w, h = int(rng.uniform(120, 220)), int(rng.uniform(80, 160))
            draw.rectangle([x, floor_y - h, x + w, floor_y], fill=colour((170, 165, 155), 30))
            draw.line([x + w // 2, floor_y - h + 5, x + w // 2, floor_y - 5], fill=(80, 80, 80), width=2)
        else:  # lamp
            y = int(rng.uniform(60, 160)) + _PAN[1]
            draw.line([x + 30, y + 40, x + 30, floor_y], fill=(60, 60, 60), width=4)
            draw.polygon([(x + 5, y + 40), (x + 55, y + 40), (x + 42, y), (x + 18, y)],
                         fill=colour((230, 220, 180), 15))

    img = img.filter(ImageFilter.BoxBlur(1))
    # A window or lamp off to one side: light falls off across the room and towards the floor.
    yy = np.arange(ch, dtype=np.float32)[:, None] / ch
    xx = np.arange(cw, dtype=np.float32)[None, :] / cw
    side = rng.uniform(-1, 1)
    gain = (1.0 + 0.44 * side * (xx - 0.5) - 0.12 * yy) * np.float32(rng.uniform(0.8, 1.1))
    return np.clip(np.asarray(img, dtype=np.float32) * gain[..., None], 0, 255).astype(np.uint8)


def _make_session(seed: int, folder_index: int) -> _Session:
    rng = np.random.default_rng([seed, 2, folder_index])
    background = _draw_room(rng)
    noise = (3.5 * rng.standard_normal((HEIGHT + _NOISE_PAD, WIDTH + _NOISE_PAD), dtype=np.float32))
    noise = noise.round().astype(np.int8)
    light = np.array([rng.uniform(-0.7, 0.7), rng.uniform(-0.8, -0.2), -1.0])
    angles = rng.normal(0, 0.004, 3)
    extr_r = _rotation(*angles)
    extr_t = np.array([-24.0, 5.9, -13.2]) + rng.normal(0, 1.5, 3)
    return _Session(
        background=background,
        noise=noise,
        shirt=tuple(int(v) for v in np.clip(np.array(_SHIRTS[rng.integers(len(_SHIRTS))]) + rng.normal(0, 12, 3),
                                            0, 255)),
        shoulders=float(rng.uniform(1.9, 2.4)),
        light=light / np.linalg.norm(light),
        ambient=float(rng.uniform(0.35, 0.5)),
        depth=float(rng.uniform(800, 1100)),
        rgb_extrinsics=(extr_r, extr_t),
    )


def _rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """``Rz(roll) @ Ry(yaw) @ Rx(pitch)``; angles in radians, positive pitch looks down."""
    cy, sy = math.cos(yaw), math.sin(yaw)
    cp, sp = math.cos(pitch), math.sin(pitch)
    cr, sr = math.cos(roll), math.sin(roll)
    rz = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rx = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    return rz @ ry @ rx


def _g(x: float) -> str:
    # The real files print ~6 significant digits with a trailing space.
    return f"{x:.6g}"


def _roundtrip(a: np.ndarray) -> np.ndarray:
    # Draw with the numbers as written, so reading the file back reproduces the drawn centre.
    return np.array([float(_g(v)) for v in np.ravel(a)]).reshape(np.shape(a))


def _cal_text(intrinsics: np.ndarray, extr_r: np.ndarray, extr_t: np.ndarray) -> str:
    # Layout of the real rgb.cal: genfromtxt skips blank lines, so skip_footer=6 drops the
    # distortion, 3 extrinsic rotation rows, translation and image size, leaving the intrinsics.
    rows = [" ".join(_g(v) for v in r) + " " for r in intrinsics]
    rows += ["", "0 0 0 0 0 ", ""]
    rows += [" ".join(_g(v) for v in r) + " " for r in extr_r]
    rows += ["", " ".join(_g(v) for v in extr_t) + " ", "", f"{WIDTH} {HEIGHT} "]
    return "\n".join(rows) + "\n"


def _pose_text(rot: np.ndarray, t: np.ndarray) -> str:
    rows = [" ".join(_g(v) for v in r) + " " for r in rot]
    return "\n".join(rows + ["", " ".join(_g(v) for v in t) + " "]) + "\n"


def _obj_text(person: _Person) -> str:
    """A coarse mesh of the person's skull ellipsoid, in mm, like the real per-recording ``.obj``."""
    semi_axes = " ".join(_g(a) for a in person.axes[:3])
    lines = [f"# synthetic BIWI head template, semi-axes {semi_axes} mm"]
    n_lat, n_lon = 9, 16
    lines.append(f"v {_g(0)} {_g(-person.axes[1])} {_g(0)}")
    for i in range(1, n_lat):
        th = math.pi * i / n_lat
        for j in range(n_lon):
            ph = 2 * math.pi * j / n_lon
            x, y, z = math.sin(th) * math.sin(ph), -math.cos(th), math.sin(th) * math.cos(ph)
            lines.append(f"v {_g(x * person.axes[0])} {_g(y * person.axes[1])} {_g(z * person.axes[2])}")
    lines.append(f"v {_g(0)} {_g(person.axes[1])} {_g(0)}")
    bottom = 2 + (n_lat - 1) * n_lon

    def ring(i: int, j: int) -> int:
        return 2 + (i - 1) * n_lon + j % n_lon

    for j in range(n_lon):
        lines.append(f"f 1 {ring(1, j + 1)} {ring(1, j)}")
    for i in range(1, n_lat - 1):
        for j in range(n_lon):
            a, b, c, d = ring(i, j), ring(i, j + 1), ring(i + 1, j + 1), ring(i + 1, j)
            lines.append(f"f {a} {b} {c}")
            lines.append(f"f {a} {c} {d}")
    for j in range(n_lon):
        lines.append(f"f {ring(n_lat - 1, j)} {ring(n_lat - 1, j + 1)} {bottom}")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- drawing a head

# A 3x3 binomial blur (about a 0.7 px Gaussian): several times cheaper than GaussianBlur.
_SOFTEN = ImageFilter.Kernel((3, 3), (1, 2, 1, 2, 4, 2, 1, 2, 1), 16)
_FLIP = np.diag([1.0, 1.0, -1.0])  # head frame: x right, y down, z out of the face (towards the camera)


def _hit(o: np.ndarray, d: np.ndarray, centre: np.ndarray, axes: np.ndarray) -> np.ndarray:
    """Distance along the ray to the near side of an ellipsoid, ``inf`` on a miss; o: (N, 3)."""
    q0 = (o - centre) / axes
    dq = d / axes
    a = float(dq @ dq)
    b = 2.0 * (q0 @ dq)
    c = np.einsum("ij,ij->i", q0, q0) - 1.0
    disc = b * b - 4.0 * a * c
    lam = np.full(len(o), np.inf)
    ok = disc >= 0
    lam[ok] = (-b[ok] - np.sqrt(disc[ok])) / (2.0 * a)
    return lam


def _ellipse_mask(q: np.ndarray, cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
    return ((q[:, 0] - cx) / rx) ** 2 + ((q[:, 1] - cy) / ry) ** 2 < 1.0


def _shade_head(person: _Person, session: _Session, rot: np.ndarray, scale: float, ox: np.ndarray,
                oy: np.ndarray, gaze: np.ndarray, silhouette: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Colour and coverage of the head at image offsets ``(ox, oy)`` px from its centre.

    Weak perspective: rays run parallel to the optical axis through ``(ox, oy) / scale`` mm, so
    the skull's outline is centred exactly on the projected head centre and scales with f/z.
    Returns ``rgb`` (N, 3) in 0..1 and ``hit`` (N,) bool.
    """
    to_local = _FLIP @ rot.T
    o = np.stack([ox / scale, oy / scale, np.zeros_like(ox)], axis=1) @ to_local.T
    d = to_local @ np.array([0.0, 0.0, 1.0])
    ax = person.axes
    rgb = np.zeros((len(ox), 3))
    if silhouette:
        hit = np.isfinite(_hit(o, d, np.zeros(3), ax))
        rgb[hit] = np.asarray(_MARKER) / 255.0
        return rgb, hit

    parts: list[tuple[str, np.ndarray, np.ndarray]] = [
        ("skin", np.zeros(3), ax),
        ("nose", np.array([0.0, 0.12, 0.80]) * ax, np.array([0.15, 0.26, 0.34]) * ax * person.nose),
    ]
    for sx in (-1.0, 1.0):
        parts.append(("ear", np.array([sx * 0.96, 0.05, -0.05]) * ax, np.array([0.13, 0.27, 0.20]) * ax * person.ear))
    if person.hair_style in ("short", "long", "bun"):
        parts.append(("hair", np.array([0.0, -0.03, -0.03]) * ax, ax * np.array([1.07, 1.06, 1.06])))
    if person.hair_style == "bun":
        parts.append(("bun", np.array([0.0, -0.75, -0.75]) * ax, ax * 0.33))
    if person.hair_style == "cap":
        parts.append(("cap", np.array([0.0, -0.03, 0.0]) * ax, ax * np.array([1.05, 1.05, 1.05])))
        parts.append(("brim", np.array([0.0, -0.45, 0.85]) * ax, ax * np.array([0.62, 0.05, 0.5])))

    rot_flip = rot @ _FLIP
    lams = []
    for kind, centre, axes in parts:
        # Only rays near the part's outline can hit it; small parts then cost almost nothing.
        cx, cy = (rot_flip @ centre)[:2] * scale
        reach = float(axes.max()) * scale + 1.0
        idx = np.flatnonzero((ox - cx) ** 2 + (oy - cy) ** 2 <= reach * reach)
        lam = np.full(len(ox), np.inf)
        sub = _hit(o[idx], d, centre, axes)
        if kind in ("hair", "cap"):
            # A shell only where the scalp is covered; elsewhere the ray sees the skull inside.
            q = o[idx] + np.where(np.isfinite(sub), sub, 0.0)[:, None] * d
            q = q / ax
            q /= np.linalg.norm(q, axis=1, keepdims=True) + 1e-12
            if kind == "cap":
                keep = q[:, 1] < -0.42 + 0.25 * np.clip(-q[:, 2], 0, 1)
            else:
                keep = (q[:, 1] < person.hairline + 0.2 * q[:, 0] ** 2) | (q[:, 2] < -0.15)
                if person.hair_style == "long":
                    keep |= (q[:, 2] < 0.25) & (q[:, 1] < 0.45)
                keep &= q[:, 1] < 0.75
            sub = np.where(keep, sub, np.inf)
        lam[idx] = sub
        lams.append(lam)
    lam_all = np.stack(lams)
    which = np.argmin(lam_all, axis=0)
    hit = np.isfinite(lam_all.min(axis=0))

    for i, (kind, centre, axes) in enumerate(parts):
        sel = hit & (which == i)
        if not sel.any():
            continue
        p = o[sel] + lam_all[i, sel][:, None] * d
        normal = ((p - centre) / axes**2) @ rot_flip.T
        normal /= np.linalg.norm(normal, axis=1, keepdims=True)
        lambert = np.clip(normal @ session.light, 0, 1)
        shade = session.ambient + (1 - session.ambient) * lambert
        q = p / ax
        q /= np.linalg.norm(q, axis=1, keepdims=True)
        if kind in ("hair", "bun"):
            streak = 0.93 + 0.07 * np.sin(90 * q[:, 0] + 25 * q[:, 1] ** 2)
            col = person.hair[None] * streak[:, None]
        elif kind == "cap":
            col = np.repeat(person.cap_colour[None], len(p), 0)
        elif kind == "brim":
            col = np.repeat(person.cap_colour[None] * 0.8, len(p), 0)
        elif kind == "ear":
            col = np.repeat(person.skin[None] * 0.93, len(p), 0)
            qe = (p - centre) / axes
            inner = (qe[:, 0] ** 2 < 0.9) & (np.abs(qe[:, 1]) < 0.55) & (np.abs(qe[:, 2]) < 0.5)
            col[inner] *= 0.78
        else:
            col = _face_colour(person, q, gaze, rot_flip)
            if kind == "nose":
                qn = (p - centre) / axes
                nostril = (qn[:, 1] > 0.6) & (np.abs(qn[:, 0]) > 0.2) & (np.abs(qn[:, 0]) < 0.7)
                col[nostril] *= 0.45
        col = col * shade[:, None]
        if kind in ("skin", "nose", "ear"):
            col = col + 0.12 * lambert[:, None] ** 12  # skin shines a little where lit head-on
        rgb[sel] = np.clip(col, 0, 1)
    return rgb, hit


def _face_colour(person: _Person, q: np.ndarray, gaze: np.ndarray, rot_flip: np.ndarray) -> np.ndarray:
    """Skin with eyes, brows, mouth, beard and glasses painted on the unit-sphere directions q."""
    col = np.repeat(person.skin[None], len(q), 0)
    front = q[:, 2] > 0.2
    if person.beard:
        beard = front & (q[:, 1] > 0.28) & (np.abs(q[:, 0]) < 0.85)
        beard |= front & _ellipse_mask(q, 0.0, 0.36, 0.22, 0.05)
        stubble = 0.75 + 0.25 * np.sin(170 * q[:, 0]) * np.sin(150 * q[:, 1])
        col[beard] = person.hair * stubble[beard, None]
    mouth = front & _ellipse_mask(q, 0.0, 0.47, person.mouth_w, 0.045)
    col[mouth] = person.lip
    col[front & _ellipse_mask(q, 0.0, 0.47, person.mouth_w * 0.9, 0.008)] = person.lip * 0.4
    for sx in (-1.0, 1.0):
        ex, ey = sx * person.eye_x, person.eye_y
        col[front & _ellipse_mask(q, ex, ey - 0.12, 0.13, 0.025)] = person.hair * 0.8
        sclera = front & _ellipse_mask(q, ex, ey, 0.10, 0.05)
        col[sclera] = (0.92, 0.9, 0.88)
        col[sclera & _ellipse_mask(q, ex + gaze[0], ey + gaze[1], 0.042, 0.042)] = person.eye
        col[sclera & _ellipse_mask(q, ex + gaze[0], ey + gaze[1], 0.018, 0.018)] = (0.05, 0.05, 0.05)
        col[front & _ellipse_mask(q, ex, ey - 0.045, 0.105, 0.012)] = person.skin * 0.55
    if person.glasses != "none":
        ex, ey = person.eye_x, person.eye_y
        for sx in (-1.0, 1.0):
            dx, dy = np.abs(q[:, 0] - sx * ex) / 0.16, np.abs(q[:, 1] - ey) / 0.11
            r = np.sqrt(dx**2 + dy**2) if person.glasses == "round" else np.maximum(dx, dy)
            col[front & (r < 0.88)] = col[front & (r < 0.88)] * 0.85 + 0.1
            col[front & (r >= 0.88) & (r < 1.0)] = person.glasses_colour
        bridge = front & (np.abs(q[:, 0]) < ex - 0.14) & (np.abs(q[:, 1] - ey + 0.03) < 0.015)
        temple = (np.abs(q[:, 0]) > ex + 0.14) & (np.abs(q[:, 1] - ey + 0.03) < 0.015) & (q[:, 2] > -0.3)
        col[bridge | temple] = person.glasses_colour
    return col


# ----------------------------------------------------------------------------- drawing a frame


def _draw_frame(person: _Person, session: _Session, rot: np.ndarray, t: np.ndarray, cal: np.ndarray,
                gaze: np.ndarray, gain: float, noise_at: tuple[int, int], pan: tuple[int, int],
                head: str = "full") -> Image.Image:
    """One 640x480 frame with the head centred on ``project(t, cal)``."""
    u, v = project(t, cal)
    scale = cal[0][0] / t[2]  # px per mm at the head's depth
    ax = person.axes * scale
    px, py = pan
    img = Image.fromarray(np.ascontiguousarray(session.background[py:py + HEIGHT, px:px + WIDTH]))
    draw = ImageDraw.Draw(img)

    # Torso and neck sit below the head; the body stays upright while the head turns.
    top = v + 1.15 * ax[1]
    shoulders = session.shoulders * ax[0]
    draw.ellipse([u - shoulders, top, u + shoulders, top + 2.4 * ax[1]], fill=session.shirt)
    if top + 1.2 * ax[1] < HEIGHT:
        draw.rectangle([u - shoulders, top + 1.2 * ax[1], u + shoulders, HEIGHT], fill=session.shirt)
    collar = tuple(int(c * 0.75) for c in session.shirt)
    draw.ellipse([u - 0.75 * ax[0], top - 0.1 * ax[1], u + 0.75 * ax[0], top + 0.45 * ax[1]], fill=collar)
    neck = tuple(int(255 * c * 0.72) for c in person.skin)
    draw.rectangle([u - 0.5 * ax[0], v + 0.3 * ax[1], u + 0.5 * ax[0], top + 0.15 * ax[1]], fill=neck)
    if person.hair_style == "long":
        hair = tuple(int(255 * c * 0.8) for c in person.hair)
        draw.ellipse([u - 1.12 * ax[0], v - 1.0 * ax[1], u + 1.12 * ax[0], v + 1.0 * ax[1]], fill=hair)
        draw.rectangle([u - 1.12 * ax[0], v, u + 1.12 * ax[0], v + 1.45 * ax[1]], fill=hair)

    arr = np.asarray(img, dtype=np.float32)
    # Ray-cast one ray per pixel in a box around the head, then soften the box like a camera
    # lens would; this is what keeps a frame at a few tens of milliseconds.
    reach = 1.5 * float(person.axes.max()) * scale
    x0, x1 = max(0, int(u - reach)), min(WIDTH, int(u + reach) + 2)
    y0, y1 = max(0, int(v - reach)), min(HEIGHT, int(v + reach) + 2)
    gx, gy = np.meshgrid(np.arange(x0, x1) - u, np.arange(y0, y1) - v)
    rgb, hit = _shade_head(person, session, rot, scale, gx.ravel(), gy.ravel(), gaze, head == "silhouette")
    if head == "none":
        hit[:] = False
    h, w = y1 - y0, x1 - x0
    box = arr[y0:y1, x0:x1].reshape(-1, 3)
    box[hit] = rgb[hit] * 255.0
    box = Image.fromarray(np.clip(box.reshape(h, w, 3) + 0.5, 0, 255).astype(np.uint8))
    arr[y0:y1, x0:x1] = np.asarray(box.filter(_SOFTEN), dtype=np.float32)

    ny, nx = noise_at
    arr = arr * gain + session.noise[ny:ny + HEIGHT, nx:nx + WIDTH, None]
    return Image.fromarray(np.clip(arr + 0.5, 0, 255).astype(np.uint8))


def _sample_pose(rng: np.random.Generator, depth: float, cal: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A head rotation and a centre translation (mm) whose projection stays inside the frame."""
    # The head wanders over the whole frame in every recording: were it parked in one spot per
    # room, a network could learn "this room -> that spot" instead of finding the head, and fail
    # on the held-out person's room.
    col = float(rng.uniform(135, 505))
    row = float(rng.uniform(125, 320))
    z = float(np.clip(depth + rng.normal(0, 90), 700, 1200))
    yaw = math.radians(float(np.clip(rng.normal(0, 30), -70, 70)))
    pitch = math.radians(float(np.clip(rng.normal(0, 15), -40, 40)))
    roll = math.radians(float(np.clip(rng.normal(0, 9), -25, 25)))
    t = np.array([(col - cal[0][2]) * z / cal[0][0], (row - cal[1][2]) * z / cal[1][1], z])
    return _rotation(yaw, pitch, roll), t


def _render_folder(args: tuple[Path, int, int, int, str]) -> None:
    """Write one recording folder: calibration files and ``frames`` frame/pose pairs."""
    root, folder_index, frames, seed, head = args
    folder = FOLDERS[folder_index]
    out = root / folder
    out.mkdir(parents=True, exist_ok=True)
    person = _make_person(seed, person_of(folder))
    session = _make_session(seed, folder_index)
    cal = RGB_INTRINSICS
    (out / "rgb.cal").write_text(_cal_text(cal, *session.rgb_extrinsics))
    (out / "depth.cal").write_text(_cal_text(DEPTH_INTRINSICS, np.eye(3), np.zeros(3)))
    (root / f"{folder}.obj").write_text(_obj_text(person))

    rng = np.random.default_rng([seed, 3, folder_index])
    number = int(rng.integers(3, 8))
    for _ in range(frames):
        rot, t = _sample_pose(rng, session.depth, cal)
        rot, t = _roundtrip(rot), _roundtrip(t)
        gaze = rng.normal(0, 0.02, 2)
        gain = float(rng.uniform(0.9, 1.1))
        noise_at = (int(rng.integers(0, _NOISE_PAD)), int(rng.integers(0, _NOISE_PAD)))
        pan = (int(rng.integers(0, 2 * _PAN[0] + 1)), int(rng.integers(0, 2 * _PAN[1] + 1)))
        img = _draw_frame(person, session, rot, t, cal, gaze, gain, noise_at, pan, head)
        stem = f"frame_{number:05d}"
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=JPEG_QUALITY)
        (out / f"{stem}_rgb.jpg").write_bytes(buf.getvalue())
        (out / f"{stem}_pose.txt").write_text(_pose_text(rot, t))
        # Frames are a subsampled video: numbers climb with occasional gaps, like the real set.
        number += int(rng.choice([1, 1, 1, 2, 3, 5]))



def render_recording(root: Path, folder: str, frames: int, seed: int) -> Path:
    """Draw one recording (``folder``'s person and room, for ``seed``) under ``root``; returns its folder.

    Lesson 04's capstone draws held-out people with it, in the same on-disk format as the dataset.
    """
    _render_folder((Path(root), FOLDERS.index(folder), frames, seed, "full"))
    return Path(root) / folder

def _build(root: Path, frames_per_folder: int, seed: int, head: str = "full",
           workers: int | None = None) -> None:
    """Draw all 24 folders into ``root``; folders are independent, so they render in parallel."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    if head not in _HEAD_MODES:
        raise ValueError(f"head must be one of {_HEAD_MODES}")
    jobs = [(root, i, frames_per_folder, seed, head) for i in range(len(FOLDERS))]
    if workers is None:
        workers = min(os.cpu_count() or 1, 8)
    if workers <= 1:
        for job in jobs:
            _render_folder(job)
        return
    # Threads, not processes: numpy and PIL release the GIL in the heavy parts, and a process
    # pool would need the caller's script to be import-safe (spawn) or risk fork after torch.
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(_render_folder, jobs))


# ----------------------------------------------------------------------------- public makers


def make_biwi(root: Path, frames_per_folder: int, seed: int = 0, *, workers: int | None = None) -> Path:
    """Make (once) a synthetic ``biwi_head_pose`` folder at ``root`` and return ``root``.

    ``root`` gets 24 folders ``01``..``24`` of ``frames_per_folder`` frames each (640x480 RGB
    JPEG ``frame_XXXXX_rgb.jpg`` + ``frame_XXXXX_pose.txt``), ``rgb.cal``/``depth.cal`` in each
    folder and ``01.obj``..``24.obj`` beside them. The same ``seed`` gives identical bytes; a
    folder already made with the same arguments is reused. ``workers`` only changes speed.
    """
    if frames_per_folder < 1:
        raise ValueError("frames_per_folder must be at least 1")
    params = {"dataset": "biwi_head_pose", "version": FORMAT_VERSION,
              "frames_per_folder": int(frames_per_folder), "seed": int(seed)}
    return build_once(Path(root), params,
                      lambda tmp: _build(tmp, int(frames_per_folder), int(seed), workers=workers))


def get_biwi(profile: str | None = None, seed: int = 0) -> Path:
    """The BIWI head-pose folder for this course run, in the layout of ``URLs.BIWI_HEAD_POSE``.

    ``COURSE_DATA=real`` downloads the real set through fastai (raising
    :class:`~course_lib.data.common.DownloadUnavailable` offline); otherwise the synthetic copy
    under ``data_root()/<profile>/biwi_head_pose`` with ``PROFILE_SIZES[profile]`` frames per
    folder is made on first use and reused after.
    """
    if config.data_source() == "real":
        return real_dataset("BIWI_HEAD_POSE")
    prof = config.resolve_profile(profile)
    return make_biwi(config.data_root() / prof / "biwi_head_pose", PROFILE_SIZES[prof], seed)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Make the synthetic BIWI head-pose set.")
    parser.add_argument("--profile", choices=config.PROFILES, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    path = get_biwi(args.profile, args.seed)
    print(path)
    print(f"{summarize(path)} [{time.perf_counter() - start:.1f} s]")


if __name__ == "__main__":
    main()
