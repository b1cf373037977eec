"""Check specs for lesson 05_bbox: cases, judges and known wrong answers."""
from __future__ import annotations

import copy
from typing import Any, Callable

import numpy as np
import torch

from course_lib import bbox as ref
from course_lib.checks import Case, CheckFailed, Mistake, Spec, describe


def _as_box(x: Any) -> np.ndarray | None:
    """``x`` as a float array of shape [4], or None when it is not a numpy array of 4 numbers."""
    if not isinstance(x, np.ndarray) or x.shape != (4,) or not np.issubdtype(x.dtype, np.number):
        return None
    return x.astype(np.float64)


def _box_judge(case, got, expected):
    """A numpy array of 4 numbers equal to the expected ones (any numeric dtype)."""
    if isinstance(got, torch.Tensor):
        return "expected a numpy array, got a torch tensor: build it with np.array([...])"
    if isinstance(got, (list, tuple)):
        return (f"expected a numpy array, got a {type(got).__name__}: wrap it in np.array([...]) "
                "so that arithmetic works element-wise")
    g = _as_box(got)
    if g is None:
        return f"expected a numpy array of 4 numbers, got {describe(got)}"
    e = np.asarray(expected, dtype=np.float64)
    if not np.allclose(g, e, rtol=0, atol=1e-6):
        return f"expected {np.asarray(expected).tolist()}, got {np.asarray(got).tolist()}"
    return None


# ------------------------------------------------------------------------------ coco_to_voc

def _coco_cases(rng: np.random.Generator, device, n: int) -> list[Case]:
    # A box whose width and height differ, a one-pixel box, and one at the origin come first:
    # they separate x from y, show the -1, and catch w/h returned as bottom/right.
    fixed = [[133, 167, 174, 86], [5, 40, 1, 1], [0, 0, 30, 12]]
    out = [Case((b,), {}, f"bbox={b}") for b in fixed]
    while len(out) < n:
        w, h = int(rng.integers(2, 300)), int(rng.integers(2, 300))
        if w == h:
            continue
        b: list[float] = [int(rng.integers(0, 200)), int(rng.integers(0, 200)), w, h]
        if rng.random() < 0.25:
            b = [float(v) + 0.5 * (i < 2) for i, v in enumerate(b)]  # fractional corners, as a model predicts
        out.append(Case((b,), {}, f"bbox={b}"))
    return out[:max(n, 3)]


def _coco_xy(b):
    x, y, w, h = b
    return np.array([x, y, x + w - 1, y + h - 1])


def _coco_no_minus_one(b):
    x, y, w, h = b
    return np.array([y, x, y + h, x + w])


def _coco_wh(b):
    x, y, w, h = b
    return np.array([y, x, h, w])


def _coco_wh_swapped(b):
    x, y, w, h = b
    return np.array([y, x, y + w - 1, x + h - 1])


def _coco_xyxy(b):
    x, y, w, h = b
    return np.array([x, y, x + w, y + h])


COCO_TO_VOC = Spec(
    id="coco_to_voc",
    reference=ref.coco_to_voc,
    cases=_coco_cases,
    judge=_box_judge,
    mistakes=[
        Mistake("xy_order", _coco_xy,
                "x and y are not swapped: numpy indexes an image as [row, column], so the box starts with the row "
                "(top = y), then the column (left = x): [y, x, y+h-1, x+w-1]."),
        Mistake("no_minus_one", _coco_no_minus_one,
                "forgot the -1: a box w pixels wide starting at column x ends at column x+w-1 (a 1-pixel box "
                "starts and ends on the same column)."),
        Mistake("wh", _coco_wh,
                "the last two numbers are the bottom row and the right column, not the height and width: "
                "bottom = y+h-1, right = x+w-1."),
        Mistake("wh_swapped", _coco_wh_swapped,
                "the width and height are mixed up: the bottom row is y + h - 1 (height goes with y), the right "
                "column x + w - 1."),
        Mistake("xyxy", _coco_xyxy,
                "that is [x1, y1, x2, y2] (corners in x/y order, without the -1); this lesson's boxes are "
                "[top, left, bottom, right] = [y, x, y+h-1, x+w-1]."),
    ],
    n_visible=5,
    n_hidden=30,
)

# ------------------------------------------------------------------------------ bb_hw

def _voc_box(rng: np.random.Generator, floats: bool) -> np.ndarray:
    while True:
        top, left = rng.integers(0, 200, 2)
        h, w = rng.integers(1, 250, 2)
        if h != w:
            break
    box = np.array([top, left, top + h, left + w])
    return box + rng.uniform(-0.5, 0.5, 4).round(2) if floats else box


def _bbhw_cases(rng: np.random.Generator, device, n: int) -> list[Case]:
    fixed = [np.array([167, 133, 252, 306]), np.array([10, 20, 10, 20]), np.array([0, 0, 11, 29])]
    out = [Case((b,), {}, f"a={b.tolist()}") for b in fixed]
    while len(out) < n:
        b = _voc_box(rng, floats=bool(rng.random() < 0.4))
        out.append(Case((b,), {}, f"a={b.tolist()}"))
    return out[:max(n, 3)]


def _bbhw_no_swap(a):
    return np.array([a[0], a[1], a[2] - a[0], a[3] - a[1]])


def _bbhw_plus_one(a):
    return np.array([a[1], a[0], a[3] - a[1] + 1, a[2] - a[0] + 1])


def _bbhw_corners(a):
    return np.array([a[1], a[0], a[3], a[2]])


def _bbhw_wh_swapped(a):
    return np.array([a[1], a[0], a[2] - a[0], a[3] - a[1]])


BB_HW = Spec(
    id="bb_hw",
    reference=ref.bb_hw,
    cases=_bbhw_cases,
    judge=_box_judge,
    mistakes=[
        Mistake("no_swap", _bbhw_no_swap,
                "matplotlib wants x (the column, a[1]) before y (the row, a[0]): swap them back, "
                "[a[1], a[0], a[3]-a[1], a[2]-a[0]]."),
        Mistake("plus_one", _bbhw_plus_one,
                "no +1 here: matplotlib puts pixel i's centre at coordinate i, so a rectangle from the centre of "
                "column left to the centre of column right is right - left wide (the seed's bb_hw)."),
        Mistake("corners", _bbhw_corners,
                "Rectangle wants a width and a height, not the bottom-right corner: "
                "w = right - left, h = bottom - top."),
        Mistake("wh_swapped", _bbhw_wh_swapped,
                "width and height are the wrong way round: the width is right - left (a[3] - a[1]) and comes first."),
    ],
    n_visible=5,
    n_hidden=30,
)

# ------------------------------------------------------------------------------ largest_object

def _area(box) -> float:
    return float((box[2] - box[0]) * (box[3] - box[1]))


def _anno(rng: np.random.Generator, k: int) -> list[tuple[np.ndarray, int]]:
    return [(_voc_box(rng, floats=False), int(rng.integers(1, 21))) for _ in range(k)]


def _no_objects() -> Case:
    # A new list each time: nothing a call does to it can reach another case.
    return Case(([],), {}, "an image without objects: annotations=[]")


def _largest_cases(rng: np.random.Generator, device, n: int) -> list[Case]:
    # Edge cases first: an image without objects must be refused with an error of the function's own.
    fixed = [
        # One object: itself.
        [(np.array([10, 20, 60, 90]), 12)],
        # The largest area comes last; the first box, the one with the largest bottom*right, the one with the
        # largest height + width and the smallest are four other boxes, so each wrong rule picks its own.
        [(np.array([0, 0, 30, 30]), 3), (np.array([150, 150, 160, 170]), 15), (np.array([40, 0, 42, 120]), 7),
         (np.array([50, 50, 56, 60]), 1), (np.array([60, 60, 100, 100]), 12)],
        # Thin box: 1 x 200 by the json's w*h, but (b-t)*(r-l) = 0 * 199 = 0; the 20 x 10 box wins.
        [(np.array([50, 0, 50, 199]), 4), (np.array([0, 0, 19, 9]), 9)],
        # A tie: the first of the two equal areas.
        [(np.array([100, 100, 110, 120]), 5), (np.array([0, 0, 10, 20]), 6), (np.array([5, 5, 8, 8]), 1)],
    ]
    out = [_no_objects()] + [Case((a,), {}, f"{len(a)} objects, areas {[_area(b) for b, _ in a]}") for a in fixed]
    while len(out) < n:
        a = _anno(rng, int(rng.integers(1, 6)))
        out.append(Case((a,), {}, f"{len(a)} objects, areas {[_area(b) for b, _ in a]}"))
    return out[:max(n, 5)]


def _observe_largest(fn, case) -> Any:
    """``fn(annotations)``; on an image without objects, how the call ended, as plain data.

    With objects: the return value itself (an error propagates, as from a plain call). Without:
    ``{"raised": type name, "is_value_error": bool, "message": str(error)}`` or
    ``{"returned": describe(value)}``: raising is the right answer there, and the grader, in
    another process, must see which error and which words. NotImplementedError propagates, so
    an unfinished exercise gets the usual "not implemented yet".
    """
    args, kwargs = copy.deepcopy(case.args), copy.deepcopy(case.kwargs)
    if len(case.args[0]) != 0:
        return fn(*args, **kwargs)
    try:
        got = fn(*args, **kwargs)
    except NotImplementedError:
        raise
    except Exception as e:
        return {"raised": type(e).__name__, "is_value_error": isinstance(e, ValueError), "message": str(e)}
    return {"returned": describe(got)}


_PYTHON_EMPTY_ERRORS = ("empty", "out of range", "unpack", "NoneType")


def _python_words(text: str) -> bool:
    """Whether a ValueError's message is Python's own (max() of an empty list, unpacking...), not the student's."""
    return not text or any(w in text for w in _PYTHON_EMPTY_ERRORS[1:]) or text.startswith(("max()", "min()"))


def _no_objects_why(obs: Any) -> str | None:
    """What is wrong with how ``largest_object([])`` ended (an observation of :func:`_observe_largest`), or None."""
    if not isinstance(obs, dict) or not ("returned" in obs or "raised" in obs):
        return f"expected an observation of largest_object([]), got {describe(obs)}"
    if "returned" in obs:
        return (f"returned {obs['returned']}; an image without objects has no largest one: "
                "raise ValueError with a message that says so")
    text = str(obs.get("message", ""))
    if obs.get("is_value_error"):
        if _python_words(text):
            return (f"raised ValueError({text!r}), Python's own words, which say nothing about images: check for an "
                    "empty list first and raise ValueError with a message saying the image has no objects")
        return None
    return (f"raised {obs['raised']}({text!r}); check for an empty list first and raise ValueError with a message "
            "saying the image has no objects")


def _largest_judge(case, got, expected):
    if len(case.args[0]) == 0:
        # Judged against the rule, not the reference's words: any message of the student's own will do.
        return _no_objects_why(got)
    if isinstance(got, np.ndarray):
        return "you returned only the box: return the whole (box, category) pair"
    if isinstance(got, (int, np.integer)):
        return "you returned only the category: return the whole (box, category) pair"
    if not isinstance(got, (tuple, list)) or len(got) != 2:
        return f"expected a (box, category) pair, got {describe(got)}"
    box, cat = got
    e_box, e_cat = expected
    if not isinstance(box, np.ndarray) or box.shape != (4,) or not np.array_equal(box, e_box) or cat != e_cat:
        areas = [_area(b) for b, _ in case.args[0]]
        g = next((i for i, (b, c) in enumerate(case.args[0])
                  if isinstance(box, np.ndarray) and box.shape == (4,) and np.array_equal(b, box) and c == cat), None)
        e = next(i for i, (b, c) in enumerate(case.args[0]) if np.array_equal(b, e_box) and c == e_cat)
        if g is None:
            return (f"expected object {e} ({e_box.tolist()}, {e_cat}), got {describe(got)}, "
                    "which is not one of the annotations")
        return f"expected object {e} (area {areas[e]:g}), got object {g} (area {areas[g]:g})"
    return None


def _refuses_empty(pick: Callable) -> Callable:
    """A known wrong picking rule that, like the reference, refuses an image without objects.

    The empty image comes first in the cases; without this every rule would fail there, on
    Python's own error, and never reach the cases that name its mistake.
    """
    def impl(annotations):
        if len(annotations) == 0:
            return ref.largest_object(annotations)
        return pick(annotations)

    impl.__name__ = impl.__qualname__ = pick.__name__
    return impl


def _largest_min(annotations):
    return min(annotations, key=lambda a: _area(a[0]))


def _largest_last_tie(annotations):
    best = annotations[0]
    for a in annotations:
        if _area(a[0]) >= _area(best[0]):
            best = a
    return best


def _largest_plus_one(annotations):
    return max(annotations, key=lambda a: (a[0][2] - a[0][0] + 1) * (a[0][3] - a[0][1] + 1))


def _largest_br(annotations):
    return max(annotations, key=lambda a: a[0][2] * a[0][3])


def _largest_perimeter(annotations):
    return max(annotations, key=lambda a: (a[0][2] - a[0][0]) + (a[0][3] - a[0][1]))


def _largest_first(annotations):
    return annotations[0]


LARGEST_OBJECT = Spec(
    id="largest_object",
    reference=ref.largest_object,
    cases=_largest_cases,
    judge=_largest_judge,
    observe=_observe_largest,
    mistakes=[
        Mistake("plus_one", _refuses_empty(_largest_plus_one),
                "measure the area as the rest of the lesson does, (bottom - top) * (right - left), without +1: "
                "it differs from the json's w*h for thin boxes."),
        Mistake("bottom_right", _refuses_empty(_largest_br),
                "bottom * right is not an area: the height is bottom - top and the width right - left "
                "(in the seed: np.prod(b[-2:] - b[:2]))."),
        Mistake("perimeter", _refuses_empty(_largest_perimeter),
                "you compared height + width; the area is height * width."),
        Mistake("first", _refuses_empty(_largest_first),
                "you returned the first annotation; compare the areas of all of them."),
        Mistake("last_tie", _refuses_empty(_largest_last_tie),
                "on a tie you kept the last object; keep the first "
                "(use > rather than >=, or max/sorted, which keep the first)."),
        Mistake("min", _refuses_empty(_largest_min),
                "you picked the smallest object: sort with reverse=True, or use max instead of min."),
    ],
    n_visible=6,
    n_hidden=30,
)


def check_no_objects(fn: Callable, hidden: bool = False) -> None:
    """Check that ``largest_object`` refuses an image without annotations with a clear error of its own.

    Prints the verdict, or with ``hidden=True`` raises :class:`CheckFailed` when it is wrong. The
    spec's first case is the same check (same words); this one-liner is the self-check's.
    """
    try:
        obs = _observe_largest(fn, _no_objects())
    except NotImplementedError:
        msg = "✗ largest_object([]): not implemented yet."
    else:
        why = _no_objects_why(obs)
        if why is None:
            print(f"✓ largest_object([]): raises ValueError({obs['message']!r}).")
            return
        msg = f"✗ largest_object([]): {why}."
    if hidden:
        raise CheckFailed(msg)
    print(msg)


# ------------------------------------------------------------------------------ box_iou

def _iou_cases(rng: np.random.Generator, device, n: int) -> list[Case]:
    fixed = [
        (np.array([0, 0, 10, 10]), np.array([5, 5, 15, 15]), "overlapping"),
        (np.array([0, 0, 10, 10]), np.array([20, 30, 40, 50]), "apart in both directions"),
        (np.array([0, 0, 10, 10]), np.array([0, 10, 10, 20]), "touching side by side"),
        (np.array([0, 0, 10, 10]), np.array([2, 30, 8, 40]), "overlapping rows, apart columns"),
        (np.array([10, 10, 50, 90]), np.array([20, 30, 30, 40]), "one inside the other"),
        (np.array([3, 4, 20, 30]), np.array([3, 4, 20, 30]), "identical"),
        (np.array([5, 5, 5, 9]), np.array([5, 5, 5, 9]), "two boxes of zero area"),
    ]
    out = [Case((a, b), {}, f"a={a.tolist()}, b={b.tolist()} ({what})") for a, b, what in fixed]
    while len(out) < n:
        a = _voc_box(rng, floats=bool(rng.random() < 0.5))
        if rng.random() < 0.6:  # near a, so that most random pairs overlap
            b = a + rng.normal(0, 0.3 * _area(a) ** 0.5, 4).round(1)
            b = np.array([min(b[0], b[2]), min(b[1], b[3]), max(b[0], b[2]), max(b[1], b[3])])
        else:
            b = _voc_box(rng, floats=bool(rng.random() < 0.5))
        if rng.random() < 0.3:
            a, b = a.tolist(), b.tolist()
        la, lb = np.asarray(a).round(2).tolist(), np.asarray(b).round(2).tolist()
        out.append(Case((a, b), {}, f"a={la}, b={lb}"))
    return out[:max(n, 7)]


def _iou_judge(case, got, expected):
    if isinstance(got, torch.Tensor) and got.numel() == 1:
        return "expected a Python float, got a one-element tensor: call .item() on it (or float(...))"
    if isinstance(got, np.ndarray) and got.size == 1:
        got = got.item()
    if isinstance(got, (np.floating, np.integer)):
        got = float(got)
    if not isinstance(got, (float, int)) or isinstance(got, bool):
        return f"expected a float, got {describe(got)}"
    if np.isnan(got):
        return "got nan: when the union is 0 (boxes of zero area) return 0.0 instead of dividing by it"
    if not np.isclose(got, expected, rtol=1e-6, atol=1e-9):
        return f"expected {expected:.6g}, got {got:.6g}"
    return None


def _iou_parts(a, b, clamp=True, plus=0.0):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    h = min(a[2], b[2]) - max(a[0], b[0]) + plus
    w = min(a[3], b[3]) - max(a[1], b[1]) + plus
    if clamp:
        h, w = max(h, 0.0), max(w, 0.0)
    area_a = (a[2] - a[0] + plus) * (a[3] - a[1] + plus)
    area_b = (b[2] - b[0] + plus) * (b[3] - b[1] + plus)
    return h * w, area_a, area_b


def _div(x, y):
    return float(x / y) if y != 0 else 0.0


def _iou_no_clamp(a, b):
    inter, aa, ab = _iou_parts(a, b, clamp=False)
    return _div(inter, aa + ab - inter)


def _iou_double_count(a, b):
    inter, aa, ab = _iou_parts(a, b)
    return _div(inter, aa + ab)


def _iou_plus_one(a, b):
    inter, aa, ab = _iou_parts(a, b, plus=1.0)
    return _div(inter, aa + ab - inter)


def _iou_as_hw(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    # Reads [top, left, bottom, right] as [top, left, height, width].
    h = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    w = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = h * w
    return _div(inter, a[2] * a[3] + b[2] * b[3] - inter)


def _iou_enclosing(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    h = max(a[2], b[2]) - min(a[0], b[0])
    w = max(a[3], b[3]) - min(a[1], b[1])
    _, aa, ab = _iou_parts(a, b)
    return _div(h * w, aa + ab - h * w)


def _iou_over_min(a, b):
    inter, aa, ab = _iou_parts(a, b)
    return _div(inter, min(aa, ab))


def _iou_mixed_axes(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    h = max(0.0, min(a[2], b[2]) - max(a[1], b[1]))
    w = max(0.0, min(a[3], b[3]) - max(a[0], b[0]))
    _, aa, ab = _iou_parts(a, b)
    return _div(h * w, aa + ab - h * w)


BOX_IOU = Spec(
    id="box_iou",
    reference=ref.box_iou,
    cases=_iou_cases,
    judge=_iou_judge,
    mistakes=[
        Mistake("no_clamp", _iou_no_clamp,
                "the overlap's height and width must be clamped at 0: for boxes apart in one direction the "
                "'overlap' is negative there, and apart in both directions two negatives multiply into a positive "
                "area. Use max(0, ...) on each."),
        Mistake("double_count", _iou_double_count,
                "the union counts the overlap twice: area_a + area_b includes the intersection once in each, so "
                "subtract it once (union = area_a + area_b - inter); identical boxes must give 1.0, not 0.5."),
        Mistake("plus_one", _iou_plus_one,
                "no +1: this lesson measures a box as right - left by bottom - top (as matplotlib draws it and "
                "torchvision.ops.box_iou computes it)."),
        Mistake("as_hw", _iou_as_hw,
                "the boxes are [top, left, bottom, right], not [top, left, height, width]: the height is "
                "bottom - top and the width right - left."),
        Mistake("enclosing", _iou_enclosing,
                "min and max are swapped: the overlap runs from the larger of the two tops (max) to the smaller of "
                "the two bottoms (min); what you computed is the box enclosing both."),
        Mistake("over_min", _iou_over_min,
                "you divided by the smaller box's area; IoU divides by the union: area_a + area_b - inter."),
        Mistake("mixed_axes", _iou_mixed_axes,
                "rows and columns are mixed: the overlap's height uses the tops and bottoms (indices 0 and 2), its "
                "width the lefts and rights (1 and 3)."),
    ],
    n_visible=8,
    n_hidden=40,
)

# ------------------------------------------------------------------------------ draw_box

def _fresh_axes() -> Any:
    """A new Axes on a new, pyplot-free Figure (nothing is shown), holding a 300x200 image."""
    from matplotlib.figure import Figure

    ax = Figure(figsize=(3, 3)).add_subplot()
    ax.imshow(np.zeros((200, 300, 3), np.uint8))
    return ax


LABELS = ["dog", "person", "tvmonitor", "car", "pottedplant", "bird"]


def _draw_cases(rng: np.random.Generator, device, n: int) -> list[Case]:
    out = [Case((np.array([40, 10, 150, 290]), "dog"), {}, "box=[40, 10, 150, 290], label='dog'")]
    while len(out) < n:
        b = _voc_box(rng, floats=bool(rng.random() < 0.3))
        label = str(rng.choice(LABELS))
        out.append(Case((b, label), {}, f"box={np.asarray(b).round(2).tolist()}, label={label!r}"))
    return out


def _observe_drawing(fn, case) -> dict:
    """Call ``fn(ax, box, label)`` on a fresh Axes and return what it drew there (see :func:`_drawn`).

    Plain data, so the grader judges it outside the student's kernel; the student's code, the
    reference and every known mistake each draw on their own Axes.
    """
    ax = _fresh_axes()
    box, label = case.args
    fn(ax, np.array(box, copy=True), label)
    return _drawn(ax)


def _outline(artist) -> tuple[bool, bool]:
    """(has a Stroke path effect, the artist itself is still drawn on top of it)."""
    from matplotlib import patheffects

    effects = artist.get_path_effects()
    stroke = any(isinstance(e, patheffects.Stroke) for e in effects)
    normal = any(isinstance(e, (patheffects.Normal, patheffects.withStroke)) for e in effects)
    return stroke, normal


def _drawn(ax) -> dict:
    """What an Axes holds beyond its image: rectangles and texts, with the properties the exercise is about."""
    from matplotlib.patches import Rectangle

    rects = [p for p in ax.patches if isinstance(p, Rectangle)]
    return {
        "rects": [dict(xy=tuple(float(v) for v in r.get_xy()), w=float(r.get_width()), h=float(r.get_height()),
                       fill=bool(r.get_fill()), outline=_outline(r)) for r in rects],
        "texts": [dict(text=t.get_text(), pos=tuple(float(v) for v in t.get_position()), outline=_outline(t))
                  for t in ax.texts],
    }


def _close(a, b) -> bool:
    return bool(np.allclose(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64), atol=1e-6))


def _compare_drawn(got: dict, want: dict) -> str | None:
    if not got["rects"]:
        return ("no Rectangle was added to ax: draw on the Axes you were given with "
                "ax.add_patch(patches.Rectangle(...)) (not plt.gca() or a new figure)")
    if len(got["rects"]) > 1:
        return f"{len(got['rects'])} rectangles were added; draw exactly one"
    g, w = got["rects"][0], want["rects"][0]
    if not _close(g["xy"], w["xy"]):
        return (f"the rectangle's corner is at {tuple(round(v, 3) for v in g['xy'])}, "
                f"expected (x=left, y=top) = {w['xy']}")
    if not _close((g["w"], g["h"]), (w["w"], w["h"])):
        return f"the rectangle is {g['w']:g} wide and {g['h']:g} high, expected {w['w']:g} by {w['h']:g}"
    if g["fill"] != w["fill"]:
        return "the rectangle is filled and hides the object: pass fill=False"
    if g["outline"][0] != w["outline"][0]:
        return ("the rectangle has no outline: a white line vanishes on a white background; add "
                "set_path_effects([patheffects.Stroke(linewidth=4, foreground='black'), patheffects.Normal()])")
    if g["outline"][1] != w["outline"][1]:
        return ("the rectangle's path effects draw only the black Stroke: add patheffects.Normal() after it, "
                "or the rectangle itself is not drawn")
    if len(got["texts"]) != len(want["texts"]):
        return f"expected one text (the label) on ax, found {len(got['texts'])}"
    gt, wt = got["texts"][0], want["texts"][0]
    if gt["text"] != wt["text"]:
        return f"the text says {gt['text']!r}, expected the label {wt['text']!r}"
    if not _close(gt["pos"], wt["pos"]):
        return (f"the label is at {tuple(round(v, 3) for v in gt['pos'])}, "
                f"expected the box's top-left corner {wt['pos']}")
    if gt["outline"][0] != wt["outline"][0]:
        return "the label has no outline: give the text a black patheffects.Stroke too, so it reads on any background"
    if gt["outline"][1] != wt["outline"][1]:
        return "the label's path effects draw only the black Stroke: add patheffects.Normal() after it"
    return None


def _draw_judge(case, got, expected):
    return _compare_drawn(got, expected)


def _draw_with(ax, xy, w, h, label, text_xy=None, fill=False, rect_fx="both", text_fx="both"):
    from matplotlib import patches, patheffects

    def fx(kind, lw):
        return {"both": [patheffects.Stroke(linewidth=lw, foreground="black"), patheffects.Normal()],
                "stroke": [patheffects.Stroke(linewidth=lw, foreground="black")], "none": []}[kind]

    r = ax.add_patch(patches.Rectangle(xy, w, h, fill=fill, edgecolor="white", lw=2))
    r.set_path_effects(fx(rect_fx, 4))
    t = ax.text(*(text_xy if text_xy is not None else xy), label, va="top", color="white")
    t.set_path_effects(fx(text_fx, 1))


def _draw_no_bbhw(ax, box, label):
    _draw_with(ax, (box[0], box[1]), box[2], box[3], label)


def _draw_xy_swapped(ax, box, label):
    _draw_with(ax, (box[0], box[1]), box[3] - box[1], box[2] - box[0], label)


def _draw_wh_is_br(ax, box, label):
    _draw_with(ax, (box[1], box[0]), box[3], box[2], label)


def _draw_filled(ax, box, label):
    x, y, w, h = ref.bb_hw(box)
    _draw_with(ax, (x, y), w, h, label, fill=True)


def _draw_no_outline(ax, box, label):
    x, y, w, h = ref.bb_hw(box)
    _draw_with(ax, (x, y), w, h, label, rect_fx="none", text_fx="none")


def _draw_text_xy_swapped(ax, box, label):
    x, y, w, h = ref.bb_hw(box)
    _draw_with(ax, (x, y), w, h, label, text_xy=(y, x))


DRAW_BOX = Spec(
    id="draw_box",
    reference=ref.draw_box,
    cases=_draw_cases,
    judge=_draw_judge,
    observe=_observe_drawing,
    mistakes=[
        Mistake("no_bb_hw", _draw_no_bbhw,
                "you passed the [top, left, bottom, right] box straight to Rectangle, which wants (x, y), width, "
                "height: convert it with bb_hw first."),
        Mistake("xy_swapped", _draw_xy_swapped,
                "the corner's x and y are swapped: matplotlib's xy is (column, row) = (left, top), which bb_hw "
                "returns first."),
        Mistake("wh_is_br", _draw_wh_is_br,
                "Rectangle's width and height are sizes, not the bottom-right corner: w = right - left, "
                "h = bottom - top (bb_hw's last two numbers)."),
        Mistake("filled", _draw_filled, "pass fill=False: a filled rectangle covers the object it marks."),
        Mistake("no_outline", _draw_no_outline,
                "outline both the rectangle and the text with path effects ([Stroke(...), Normal()]): white on a "
                "white background is invisible."),
        Mistake("text_xy_swapped", _draw_text_xy_swapped,
                "the text's position is (x, y) = (left, top) too; you swapped it."),
    ],
    n_visible=3,
    n_hidden=12,
)

# ------------------------------------------------------------------------------ widget: borderline_box

def _borderline_judge(case, got, expected):
    if not isinstance(got, (tuple, list, np.ndarray)) or len(got) != 4:
        return f"expected (top, left, bottom, right), the four numbers the Record button shows; got {describe(got)}"
    try:
        box = np.array([float(v) for v in got])
    except (TypeError, ValueError):
        return f"all four numbers must be numbers, got {describe(got)}"
    h, w = ref.FITTER_SIZE
    if box[2] <= box[0] or box[3] <= box[1]:
        return f"bottom must be below top and right to the right of left, got {box.tolist()}"
    if box.min() < 0 or box[2] > h - 1 or box[3] > w - 1:
        return f"the box {box.tolist()} does not lie inside the {w} x {h} image"
    iou = ref.box_iou(box, ref.FITTER_TRUTH)
    lo, hi = ref.BORDERLINE_BAND
    if iou < lo:
        return (f"the IoU of {box.astype(int).tolist()} with the dog's box is {iou:.3f}: below 0.5, PASCAL would count "
                "it as a miss. Move it back towards the dog")
    if iou >= hi:
        return (f"the IoU of {box.astype(int).tolist()} with the dog's box is {iou:.3f}: PASCAL accepts it easily; "
                f"the exercise asks for a box just over the line, IoU from {lo} to {hi}")
    return None


BORDERLINE_BOX = Spec(
    id="borderline_box",
    reference=None,
    judge=_borderline_judge,
    kind="answer",
    hint="move the sliders until the IoU shown is between 0.50 and 0.55, press Record and paste the line it shows.",
)

SPECS = [COCO_TO_VOC, BB_HW, LARGEST_OBJECT, BOX_IOU, DRAW_BOX, BORDERLINE_BOX]
