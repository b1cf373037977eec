"""Check specs for lesson 05_bbox: cases, judges and known wrong answers."""
from __future__ import annotations

import copy
from typing import Any, Callable

import numpy as np
import torch

from course_lib import bbox as ref
from course_lib.checks import Bands, Case, CheckFailed, Clause, Mistake, Spec, describe


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
        # The text allows a list or a numpy array: every other case is an array (ints or floats).
        arg = np.array(b) if len(out) % 2 else b
        out.append(Case((arg,), {}, f"bbox={b}" + (" (a numpy array)" if len(out) % 2 else "")))
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


def _coco_unchanged(b):
    return np.array(b)


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
        Mistake("unchanged", _coco_unchanged,
                "you returned the json's [x, y, w, h] as it came: the box must be converted to the lesson's "
                "[top, left, bottom, right], rows first, with the last row and column inside the box."),
    ],
    n_visible=5,
    n_hidden=30,
    contract=(
        Clause("shape", "`bbox` is a list or a numpy array of four numbers", arg="bbox", values=(1,)),
        Clause("unchanged", "leave `bbox` as it is", arg="bbox"),
        Clause("exact", "the four numbers exactly (no rounding)"),
    ),
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
        # A list as often as an array: the text allows both.
        as_list = len(out) % 3 == 0
        out.append(Case((b.tolist() if as_list else b,), {},
                        f"a={np.asarray(b).round(2).tolist()}" + (" (a list)" if as_list else "")))
    return out[:max(n, 3)]


def _bbhw_no_swap(a):
    return np.array([a[0], a[1], a[2] - a[0], a[3] - a[1]])


def _bbhw_plus_one(a):
    return np.array([a[1], a[0], a[3] - a[1] + 1, a[2] - a[0] + 1])


def _bbhw_corners(a):
    return np.array([a[1], a[0], a[3], a[2]])


def _bbhw_wh_swapped(a):
    return np.array([a[1], a[0], a[2] - a[0], a[3] - a[1]])


def _bbhw_unchanged(a):
    return np.array(a)


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
        Mistake("unchanged", _bbhw_unchanged,
                "you returned the [top, left, bottom, right] box as it came: Rectangle needs its corner as (x, y), "
                "column first, then a width and a height."),
    ],
    n_visible=5,
    n_hidden=30,
    contract=(
        Clause("shape", "`a` is a list or a numpy array of four numbers", arg="a", values=(1,)),
        Clause("unchanged", "leave `a` as it is", arg="a"),
        Clause("exact", "the four numbers exactly (no rounding)"),
    ),
)

# ------------------------------------------------------------------------------ largest_object

def _area(box) -> float:
    """Pixels covered, both ends included: the lesson's one convention."""
    return float((box[2] - box[0] + 1) * (box[3] - box[1] + 1))


def _anno(rng: np.random.Generator, k: int) -> list[tuple[np.ndarray, int]]:
    return [(_voc_box(rng, floats=False), int(rng.integers(1, 21))) for _ in range(k)]


def _no_objects() -> Case:
    # A new list each time: nothing a call does to it can reach another case.
    return Case(([],), {}, "an image without objects: annotations=[]")


def _largest_cases(rng: np.random.Generator, device, n: int) -> list[Case]:
    # Edge cases first: an image without objects must be refused with an error of the function's own.
    fixed = [
        # The largest area comes last; the first box, the one with the largest bottom*right, the one with the
        # largest height + width and the smallest are four other boxes, so each wrong rule picks its own. Not in
        # order of size, so that sorting the list in place shows.
        [(np.array([0, 0, 30, 30]), 3), (np.array([150, 150, 160, 170]), 15), (np.array([40, 0, 42, 120]), 7),
         (np.array([50, 50, 56, 60]), 1), (np.array([60, 60, 100, 100]), 12)],
        # One object: itself.
        [(np.array([10, 20, 60, 90]), 12)],
        # A one-row box: 1 x 200 = 200 pixels, the largest; without the +1 its area would be 0 * 199 = 0 and the
        # 15 x 10 box would win.
        [(np.array([50, 0, 50, 199]), 4), (np.array([0, 0, 14, 9]), 9)],
        # A tie: the first of the two equal areas.
        [(np.array([100, 100, 110, 120]), 5), (np.array([0, 0, 10, 20]), 6), (np.array([5, 5, 8, 8]), 1)],
    ]
    out = [_no_objects()] + [Case((a,), {}, f"{len(a)} objects, areas {[_area(b) for b, _ in a]}") for a in fixed]
    while len(out) < n:
        a = _anno(rng, int(rng.integers(1, 6)))
        out.append(Case((a,), {}, f"{len(a)} objects, areas {[_area(b) for b, _ in a]}"))
    return out[:max(n, 5)]


def _same_annotations(a: list, b: list) -> bool:
    return len(a) == len(b) and all(
        isinstance(x, tuple) and len(x) == 2 and isinstance(x[0], np.ndarray) and np.array_equal(x[0], y[0])
        and x[1] == y[1] for x, y in zip(a, b))


def _observe_largest(fn, case) -> Any:
    """``fn(annotations)``; on an image without objects, how the call ended, as plain data.

    With objects: ``{"result": the return value, "changed": whether the list was changed}`` (an error
    propagates, as from a plain call): the text promises to leave the list alone. Without:
    ``{"raised": type name, "is_value_error": bool, "message": str(error)}`` or
    ``{"returned": describe(value)}``: raising is the right answer there, and the grader, in
    another process, must see which error and which words. NotImplementedError propagates, so
    an unfinished exercise gets the usual "not implemented yet".
    """
    args, kwargs = copy.deepcopy(case.args), copy.deepcopy(case.kwargs)
    if len(case.args[0]) != 0:
        got = fn(*args, **kwargs)
        return {"result": got, "changed": not _same_annotations(args[0], case.args[0])}
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
    if type(got) is not dict or "result" not in got:
        return f"expected an observation of largest_object, got {describe(got)}"
    if got.get("changed") and not expected.get("changed"):
        return ("your function changed the list `annotations` it was given (the instructions say \"leave "
                "`annotations` as it is\"): the caller still needs it")
    got, expected = got["result"], expected["result"]
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


def _largest_no_plus_one(annotations):
    return max(annotations, key=lambda a: (a[0][2] - a[0][0]) * (a[0][3] - a[0][1]))


def _largest_sorted_in_place(annotations):
    annotations.sort(key=lambda a: _area(a[0]), reverse=True)  # stable: ties keep their order
    return annotations[0]


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
        Mistake("no_plus_one", _refuses_empty(_largest_no_plus_one),
                "count the pixels, both ends included: a box from row top to row bottom is bottom - top + 1 rows "
                "high (a one-row box has height 1, not 0), and likewise for the width."),
        Mistake("contract:unchanged:annotations", _refuses_empty(_largest_sorted_in_place),
                "annotations.sort(...) (or any other in-place change) reorders the caller's own list; "
                "max(annotations, key=...) or sorted(annotations, ...) give the answer and leave the list alone."),
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
    contract=(
        Clause("behaviour", "`annotations` is a list of `(box, category)` pairs, each `box` a numpy array "
               "`[top, left, bottom, right]`"),
        Clause("unchanged", "leave `annotations` as it is", arg="annotations"),
        Clause("behaviour", "raise `ValueError` with a message saying so"),
    ),
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
        (np.array([0, 0, 10, 10]), np.array([12, 12, 22, 22]), "apart by one pixel in both directions"),
        (np.array([0, 0, 10, 10]), np.array([20, 30, 40, 50]), "apart in both directions"),
        (np.array([0, 0, 10, 10]), np.array([0, 11, 10, 21]), "side by side, no pixel shared"),
        (np.array([0, 0, 10, 10]), np.array([0, 10, 10, 20]), "sharing one column"),
        (np.array([0, 0, 10, 10]), np.array([2, 30, 8, 40]), "overlapping rows, apart columns"),
        (np.array([10, 10, 50, 90]), np.array([20, 30, 30, 40]), "one inside the other"),
        (np.array([3, 4, 20, 30]), np.array([3, 4, 20, 30]), "identical"),
        (np.array([7, 3, 7, 3]), np.array([7, 3, 7, 3]), "a one-pixel object with itself"),
        (np.array([5, 5, 4, 9]), np.array([5, 5, 4, 9]), "two empty boxes (bottom above top)"),
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
    return out[:max(n, 10)]


# A right answer computed in float32 (a torch tensor, np.float32) is off by up to about 1e-5 on these boxes;
# a result off by 1e-3 is a wrong formula, not rounding.
IOU_ATOL = 1e-4


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
    if not abs(got - expected) <= IOU_ATOL:
        return f"expected {expected:.6g}, got {got:.6g}"
    return None


def _iou_parts(a, b, clamp=True, plus=1.0):
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


def _iou_no_plus_one(a, b):
    inter, aa, ab = _iou_parts(a, b, plus=0.0)
    return _div(inter, aa + ab - inter)


def _iou_as_hw(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    # Reads [top, left, bottom, right] as [top, left, height, width].
    h = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    w = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = h * w
    return _div(inter, a[2] * a[3] + b[2] * b[3] - inter)


def _iou_rounded(a, b):
    return round(ref.box_iou(a, b), 2)


def _iou_over_min(a, b):
    inter, aa, ab = _iou_parts(a, b)
    return _div(inter, min(aa, ab))


def _iou_mixed_axes(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    h = max(0.0, min(a[2], b[2]) - max(a[1], b[1]) + 1)
    w = max(0.0, min(a[3], b[3]) - max(a[0], b[0]) + 1)
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
        Mistake("no_plus_one", _iou_no_plus_one,
                "count pixels with both ends included: a box is bottom - top + 1 rows high and right - left + 1 "
                "columns wide, and the overlap likewise (min of the bottoms - max of the tops + 1); without the +1 "
                "a one-pixel object has area 0 and IoU 0 with itself."),
        Mistake("as_hw", _iou_as_hw,
                "the boxes are [top, left, bottom, right], not [top, left, height, width]: the height is "
                "bottom - top and the width right - left."),
        Mistake("rounded", _iou_rounded,
                "you rounded the IoU: rounding is for printing; return the value itself (the check allows 1e-4)."),
        Mistake("over_min", _iou_over_min,
                "you divided by the smaller box's area; IoU divides by the union: area_a + area_b - inter."),
        Mistake("mixed_axes", _iou_mixed_axes,
                "rows and columns are mixed: the overlap's height uses the tops and bottoms (indices 0 and 2), its "
                "width the lefts and rights (1 and 3)."),
    ],
    n_visible=8,
    n_hidden=40,
    contract=(
        Clause("shape", "`a` and `b` are lists or numpy arrays of four numbers", arg="a", values=(1,)),
        Clause("shape", "`a` and `b` are lists or numpy arrays of four numbers", arg="b", values=(1,)),
        Clause("unchanged", "leave `a` and `b` as they are", arg="a"),
        Clause("unchanged", "leave `a` and `b` as they are", arg="b"),
        Clause("range", "a Python float from 0 to 1", values=(0.0, 1.0)),
        Clause("exact", "within 1e-4 of the exact value"),
    ),
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
    given = np.array(box, copy=True)
    fn(ax, given, label)
    return {**_drawn(ax), "box_changed": not np.array_equal(given, np.asarray(box))}


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
    if got.get("box_changed") and not want.get("box_changed"):
        return ("your function changed the array `box` it was given (the instructions say \"leave `box` as it "
                "is\"): compute the width and height into new variables instead of writing them into `box`")
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


def _draw_in_place(ax, box, label):
    box[2:] -= box[:2]  # height and width written over bottom and right: the caller's box is gone
    _draw_with(ax, (box[1], box[0]), box[3], box[2], label)


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
        Mistake("contract:unchanged:box", _draw_in_place,
                "box[2:] -= box[:2] (or any other in-place edit) overwrites the caller's box; bb_hw(box) gives "
                "the width and height as a new array."),
    ],
    n_visible=3,
    n_hidden=12,
    contract=(
        Clause("shape", "`box` is a numpy array of four numbers", arg="box", values=(1,)),
        Clause("unchanged", "leave `box` as it is", arg="box"),
        Clause("behaviour", "one rectangle at the right place and size, not filled, outlined, and one outlined text"),
    ),
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
    truth = np.asarray(expected if expected is not None else ref.fitter_truth())
    iou = ref.box_iou(box, truth)
    lo, hi = ref.BORDERLINE_BAND
    if iou < lo:
        return (f"the IoU of {box.astype(int).tolist()} with the dog's box is {iou:.3f}: below 0.5, PASCAL would count "
                "it as a miss. Move it back towards the dog")
    if iou >= hi:
        return (f"the IoU of {box.astype(int).tolist()} with the dog's box is {iou:.3f}: PASCAL accepts it easily; "
                f"the exercise asks for a box just over the line, IoU from {lo} to {hi}")
    return None


def _borderline_target(student: str) -> list[int]:
    """The dog's box in ``student``'s fitter scene: what their recorded box is measured against."""
    return [int(v) for v in ref.fitter_truth(student)]


def _borderline_answer(student: str) -> tuple[int, int, int, int]:
    """A right answer for ``student``: their dog's box slid sideways (or up and down) by the fewest pixels that
    bring its IoU with the truth into the band, as the fitter's sliders would place it."""
    truth = ref.fitter_truth(student)
    h, w = ref.FITTER_SIZE
    lo, hi = ref.BORDERLINE_BAND
    for d in range(1, max(h, w)):
        for dy, dx in ((0, d), (0, -d), (d, 0), (-d, 0)):
            box = truth + np.array([dy, dx, dy, dx])
            if box.min() >= 0 and box[2] <= h - 1 and box[3] <= w - 1 and lo <= ref.box_iou(box, truth) < hi:
                return (int(box[0]), int(box[1]), int(box[2]), int(box[3]))
    raise ValueError(f"no borderline box fits {student}'s scene")


BORDERLINE_BOX = Spec(
    id="borderline_box",
    reference=None,
    judge=_borderline_judge,
    target=_borderline_target,
    answer_for=_borderline_answer,
    kind="answer",
    hint="move the sliders until the IoU shown is between 0.50 and 0.55, press Record and paste the line it shows.",
)

# ------------------------------------------------------------------------------ capstone: detect_largest
#
# The grader draws a PASCAL-style folder from its secret seed with the course's own data maker: train.json and
# valid.json with their images, and a held-out test/ folder whose test.json lists the images and the categories
# but no annotation. The largest object of each held-out image (its category id and box) stays in Case.secret, in
# the grader; the student's function sends back categories and boxes, and `measure` scores them here.

def _capstone_cases(rng: np.random.Generator, device, n: int) -> list[Case]:
    import json
    import shutil

    from course_lib.checks import FILE_MODE, FOLDER_MODE, case_dir
    from course_lib.data.pascal import make_pascal_2007

    s = ref.capstone_settings()
    seed = int(rng.integers(2 ** 31 - 2))
    root = case_dir("bbox_capstone_")
    made = make_pascal_2007(root / "made", s["n_images"], seed=seed, image_size=s["image_size"])
    # The held-out images come from a second draw: every image of its train and valid splits.
    held = make_pascal_2007(root / "held", s["n_heldout"], seed=seed + 1, image_size=s["image_size"])
    out = root / "pascal_2007"
    out.mkdir()
    shutil.copytree(made / "train", out / "train")
    for name in ("train.json", "valid.json", "train.csv"):
        shutil.copy(made / name, out / name)
    (out / "test").mkdir()
    images, categories, boxes = [], [], []
    for split in ("train", "valid"):
        j = json.loads((held / f"{split}.json").read_text())
        anno: dict[int, list] = {}
        for o in j["annotations"]:
            if not o.get("ignore", 0):
                anno.setdefault(o["image_id"], []).append((ref.coco_to_voc(o["bbox"]), o["category_id"]))
        for im in j["images"]:
            if not anno.get(im["id"]):
                continue
            box, cat = ref.largest_object(anno[im["id"]])
            shutil.copy(held / "train" / im["file_name"], out / "test" / im["file_name"])
            images.append(im)
            categories.append(cat)
            boxes.append(box)
        cats_json = j["categories"]
    (out / "test.json").write_text(json.dumps({"images": images, "type": "instances", "annotations": [],
                                               "categories": cats_json}))
    # Nothing the student's process can open may hold the held-out labels.
    shutil.rmtree(root / "made")
    shutil.rmtree(root / "held")
    for q in [out, *out.rglob("*")]:
        q.chmod(FOLDER_MODE if q.is_dir() else FILE_MODE)
    secret = {"categories": np.array(categories, dtype=np.int64), "boxes": np.array(boxes, dtype=np.float64)}
    return [Case((out,), {}, f"a PASCAL folder drawn from seed {seed}, {len(images)} held-out images", secret)]


def _predictions(got: Any) -> tuple[np.ndarray, np.ndarray]:
    cats, boxes = got
    return (np.asarray(cats.cpu() if isinstance(cats, torch.Tensor) else cats).astype(np.int64).reshape(-1),
            np.asarray(boxes.detach().cpu() if isinstance(boxes, torch.Tensor) else boxes, dtype=np.float64))


def _scores(categories: np.ndarray, boxes: np.ndarray, secret: dict) -> np.ndarray:
    """Per held-out image: the IoU of the predicted box when the predicted class is right, else 0."""
    ious = ref.box_ious(torch.as_tensor(boxes), torch.as_tensor(secret["boxes"])).numpy()
    return ious * (categories == secret["categories"])


def _capstone_measure(case: Case, got: Any) -> float:
    cats, boxes = _predictions(got)
    return float(_scores(cats, boxes, case.secret).mean())


def _capstone_judge(case, got, expected):
    n = len(case.secret["categories"]) if case.secret is not None else None
    if not isinstance(got, (tuple, list)) or len(got) != 2:
        return f"expected a pair (categories, boxes), got {describe(got)}"
    cats, boxes = got
    if not isinstance(cats, (torch.Tensor, np.ndarray)) or not isinstance(boxes, (torch.Tensor, np.ndarray)):
        return f"expected two tensors (categories [N], boxes [N, 4]), got {describe(cats)} and {describe(boxes)}"
    if cats.dtype.is_floating_point if isinstance(cats, torch.Tensor) else np.issubdtype(cats.dtype, np.floating):
        return f"the categories must be whole numbers (category ids), got {describe(cats)}"
    if tuple(cats.shape) != (n,) or tuple(boxes.shape) != (n, 4):
        return (f"expected categories of shape [{n}] and boxes of shape [{n}, 4], one per image of test.json, got "
                f"{list(cats.shape)} and {list(boxes.shape)}")
    c, b = _predictions(got)
    if not np.isfinite(b).all():
        return "some boxes hold nan or inf"
    if c.min() < 1 or c.max() > 20:
        return (f"category ids run from 1 to 20 (the json's ids), got values from {c.min()} to {c.max()}")
    return None


def _majority_and_mean(path) -> tuple[int, np.ndarray]:
    """The most common largest-object category of path's training split, and its mean box relative to the image."""
    pj = ref.read_pascal_json(path, "train")
    cats, rel = [], []
    for i in pj.ids:
        box, cat = ref.largest_object(pj.anno[i])
        h, w = pj.sizes[i]
        cats.append(cat)
        rel.append(np.asarray(box, dtype=np.float64) / np.array([h, w, h, w]))
    return int(np.bincount(cats).argmax()), np.mean(rel, axis=0)


def _test_sizes(path) -> np.ndarray:
    import json
    from pathlib import Path

    return np.array([[o["height"], o["width"]] for o in json.loads((Path(path) / "test.json").read_text())["images"]])


def _constant(path):
    cat, rel = _majority_and_mean(path)
    hw = _test_sizes(path)
    boxes = rel[None] * np.concatenate([hw, hw], 1)
    return torch.full((len(hw),), cat, dtype=torch.long), torch.tensor(boxes, dtype=torch.float32)


_trained: dict[str, tuple] = {}


def _reference_once(path):
    """The reference's predictions on ``path``, trained once per drawn folder (the mistakes below reuse them)."""
    import hashlib
    from pathlib import Path

    key = hashlib.sha256((Path(path) / "train.json").read_bytes() + (Path(path) / "test.json").read_bytes()).hexdigest()
    if key not in _trained:
        _trained[key] = tuple(t.clone() for t in ref.detect_largest(path))
    return tuple(t.clone() for t in _trained[key])


def _zero_based(path):
    cats, boxes = _reference_once(path)
    return cats - 1, boxes


def _xy_order(path):
    cats, boxes = _reference_once(path)
    return cats, boxes[:, [1, 0, 3, 2]]


def _model_pixels(path):
    cats, boxes = _reference_once(path)
    size = ref.capstone_settings()["size"]
    hw = torch.as_tensor(_test_sizes(path), dtype=torch.float64)
    s = torch.cat([hw, hw], 1) / size
    return cats, ((boxes.double() + 0.5) / s - 0.5).float()  # back in the model's input pixels


CONSTANT = Mistake("constant", _constant,
                   "every image gets the same class (and the same box, relative to the image): that is what a model "
                   "that learned nothing predicts. Check that the training loop steps the optimiser and that the "
                   "predictions come from the trained models, in eval mode, on each test image.")
ZERO_BASED = Mistake("zero_based", _zero_based,
                     "your categories are one less than the truth: argmax gives an index into the vocab (0 to 19), "
                     "and the json's category ids run from 1 to 20: add 1.")
XY_ORDER = Mistake("xy_order", _xy_order,
                   "your boxes fit much better with rows and columns swapped: return [top, left, bottom, right] "
                   "(row first, as coco_to_voc does), not [x1, y1, x2, y2].")
MODEL_PIXELS = Mistake("model_pixels", _model_pixels,
                       "your boxes are in the pixels of the model's square input, not of each original image: scale "
                       "them back with the image's own height and width (bbox.boxes_to_original).")


def _capstone_diagnose(case: Case, got: Any) -> Mistake | None:
    """Which known mistake the predictions show, read from them and the held-out truth (no training)."""
    try:
        cats, boxes = _predictions(got)
        secret = case.secret
        base = _scores(cats, boxes, secret).mean()
    except Exception:
        return None
    if len(np.unique(cats)) == 1 and len(cats) > 4:
        return CONSTANT
    right, shifted = (cats == secret["categories"]).mean(), (cats + 1 == secret["categories"]).mean()
    if shifted > max(2 * right, right + 0.1):
        return ZERO_BASED
    swapped = _scores(cats, boxes[:, [1, 0, 3, 2]], secret).mean()
    if swapped > max(1.3 * base, base + 0.05):
        return XY_ORDER
    true_extent = (secret["boxes"][:, 2:] - secret["boxes"][:, :2] + 1).mean()
    if (boxes[:, 2:] - boxes[:, :2] + 1).mean() < 0.6 * true_extent:
        return MODEL_PIXELS
    return None


DETECT_LARGEST = Spec(
    id="detect_largest",
    reference=ref.detect_largest,
    cases=_capstone_cases,
    judge=_capstone_judge,
    mistakes=[CONSTANT, ZERO_BASED, XY_ORDER, MODEL_PIXELS],
    n_visible=1,
    n_hidden=1,
    bands=Bands(
        metric="mean IoU with the right class",
        higher_is_better=True,
        # ci: the reference scored 0.23-0.29 on three drawn folders, a constant model 0.02-0.03 and the known
        # mistakes 0.01-0.12 (tests/test_bbox.py); cpu: the reference 0.585-0.661 on three folders, a constant model
        # 0.02-0.03 (benchmarks/capstone.py detect_largest); gpu: unmeasured guesses.
        edges={"ci": (0.17, 0.13, 0.09, 0.06), "cpu": (0.5, 0.4, 0.3, 0.15), "gpu": (0.55, 0.45, 0.35, 0.2)},
        fractions=(1.0, 0.75, 0.5, 0.25),
    ),
    measure=_capstone_measure,
    diagnose=_capstone_diagnose,
    seconds={"ci": 30.0, "cpu": 900.0, "gpu": 900.0},
    contract=(
        Clause("behaviour", "the category ids of `test.json` (1 to 20)"),
        Clause("behaviour", "in the pixels of each original test image"),
        Clause("behaviour", "in the order of `test.json`"),
    ),
)

SPECS = [COCO_TO_VOC, BB_HW, LARGEST_OBJECT, BOX_IOU, DRAW_BOX, BORDERLINE_BOX, DETECT_LARGEST]
