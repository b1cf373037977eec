"""course_lib.bbox: references (against the json, torchvision and by counting), diagnoses, the drawing
check, the widgets, the data and models, and grading the lesson."""
import json

import numpy as np
import pytest
import torch

from course_lib import bbox as B
from course_lib import bbox_checks as BC
from course_lib.checks import CheckFailed, check, get_spec, run_check

from grading import check_lesson_class, lesson_class, release

LESSON = "05_bbox"
# The seed's IoU, in this lesson's convention (ends included), still without clamping the overlap at 0.
SEED_IOU_NO_CLAMP = ("def box_iou(a, b) -> float:\n"
                     "    h = min(a[2], b[2]) - max(a[0], b[0]) + 1\n"
                     "    w = min(a[3], b[3]) - max(a[1], b[1]) + 1\n"
                     "    inter = h * w\n"
                     "    return float(inter / ((a[2]-a[0]+1)*(a[3]-a[1]+1) + (b[2]-b[0]+1)*(b[3]-b[1]+1) - inter))\n")


@pytest.fixture(scope="module")
def ci_path():
    from course_lib.data.pascal import get_pascal_2007

    return get_pascal_2007("ci")


# ------------------------------------------------------------------------------ references

def test_coco_to_voc_as_in_the_seed_and_back():
    assert B.coco_to_voc([133, 167, 174, 86]).tolist() == [167, 133, 252, 306]
    assert B.coco_to_voc([5, 40, 1, 1]).tolist() == [40, 5, 40, 5]  # a one-pixel box starts and ends on it
    rng = np.random.default_rng(0)
    for _ in range(200):
        x, y, w, h = (int(v) for v in rng.integers(1, 300, 4))
        voc = B.coco_to_voc([x, y, w, h])
        assert isinstance(voc, np.ndarray) and voc.shape == (4,)
        # bb_hw gives the corner back and sizes one less than w, h (pixel centre to pixel centre).
        assert B.bb_hw(voc).tolist() == [x, y, w - 1, h - 1]


def test_coco_to_voc_slices_exactly_the_object(ci_path):
    j = json.loads((ci_path / "train.json").read_text())
    from PIL import Image

    fnames = {o["id"]: o["file_name"] for o in j["images"]}
    for o in j["annotations"][:10]:
        top, left, bottom, right = B.coco_to_voc(o["bbox"])
        with Image.open(ci_path / "train" / fnames[o["image_id"]]) as im:
            w, h = im.size
        assert 0 <= top <= bottom < h and 0 <= left <= right < w
        assert (bottom - top + 1) * (right - left + 1) == o["area"]


def test_largest_object_by_area_first_on_ties_and_clear_error():
    a = [(np.array([0, 0, 10, 10]), 1), (np.array([0, 0, 5, 40]), 2), (np.array([3, 3, 23, 8]), 3)]
    assert B.largest_object(a)[1] == 2
    assert B.largest_object(a[:1] + [(np.array([50, 50, 60, 60]), 9)])[1] == 1  # tie: the first
    # A one-row box covers 1 x 301 pixels: ends included, it is the largest.
    assert B.largest_object([(np.array([5, 0, 5, 300]), 4), (np.array([0, 0, 2, 2]), 5)])[1] == 4
    with pytest.raises(ValueError, match="no annotations"):
        B.largest_object([])


def test_largest_object_agrees_with_the_seeds_sort():
    rng = np.random.default_rng(1)
    for _ in range(200):
        anno = BC._anno(rng, int(rng.integers(1, 6)))
        seed = sorted(anno, key=lambda x: np.prod(x[0][-2:] - x[0][:2] + 1), reverse=True)[0]
        got = B.largest_object(anno)
        assert got[0] is seed[0] and got[1] == seed[1]


def _xyxy(box):
    # torchvision reads edges: the far edge is one past the last row and column.
    return torch.tensor([[box[1], box[0], box[3] + 1, box[2] + 1]], dtype=torch.float64)


def test_box_iou_equals_torchvision():
    from torchvision.ops import box_iou as tv

    spec = get_spec("box_iou")
    for case in spec.cases(np.random.default_rng(2), torch.device("cpu"), 150):
        a, b = case.args
        want = tv(_xyxy(a), _xyxy(b)).item()
        want = 0.0 if np.isnan(want) else want
        got = B.box_iou(a, b)
        assert isinstance(got, float) and got == pytest.approx(want, abs=1e-9), case.label


@pytest.mark.parametrize("a,b,want", [
    ([0, 0, 10, 10], [0, 0, 10, 10], 1.0),          # identical
    ([7, 3, 7, 3], [7, 3, 7, 3], 1.0),              # a one-pixel object with itself
    ([0, 0, 10, 10], [0, 11, 10, 21], 0.0),         # side by side, no pixel shared
    ([0, 0, 10, 10], [0, 10, 10, 20], 11 / 231),    # sharing one column of 11 pixels
    ([0, 0, 10, 10], [10, 10, 20, 20], 1 / 241),    # sharing the corner pixel
    ([0, 0, 10, 10], [20, 30, 40, 50], 0.0),        # apart both ways: no-clamp would give a positive overlap
    ([0, 0, 10, 10], [2, 30, 8, 40], 0.0),          # rows overlap, columns apart
    ([5, 5, 4, 9], [5, 5, 4, 9], 0.0),              # empty boxes: no division by zero
    ([0, 0, 10, 10], [5, 5, 5, 9], 5 / 121),        # a one-row box inside another
    ([0, 0, 10, 10], [5, 5, 15, 15], 36 / 206),     # overlap 6x6, union 121 + 121 - 36
    ([10, 10, 50, 90], [20, 30, 30, 40], 121 / 3321),
])
def test_box_iou_special_cases(a, b, want):
    assert B.box_iou(a, b) == pytest.approx(want)
    assert B.box_iou(b, a) == pytest.approx(want)
    got = B.box_ious(torch.tensor([a], dtype=torch.float32), torch.tensor([b], dtype=torch.float32)).item()
    assert got == pytest.approx(want, abs=1e-6)


def test_draw_box_adds_an_outlined_rectangle_and_label():
    from matplotlib import patheffects
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    ax = Figure().add_subplot()
    B.draw_box(ax, np.array([10, 20, 50, 90]), "dog")
    (rect,) = ax.patches
    (text,) = ax.texts
    assert isinstance(rect, Rectangle) and tuple(rect.get_xy()) == (20, 10)
    assert (rect.get_width(), rect.get_height()) == (70, 40) and not rect.get_fill()
    for artist in (rect, text):
        kinds = [type(e) for e in artist.get_path_effects()]
        assert kinds == [patheffects.Stroke, patheffects.Normal]
    assert text.get_text() == "dog" and tuple(text.get_position()) == (20, 10)


def test_draw_box_judge_sees_only_the_given_axes():
    def on_gca(ax, box, label):
        import matplotlib.pyplot as plt

        B.draw_box(plt.gca(), box, label)

    import matplotlib.pyplot as plt

    msg = run_check(get_spec("draw_box"), on_gca).message
    plt.close("all")
    assert "no Rectangle was added to ax" in msg


def test_draw_box_accepts_with_stroke_and_other_colours():
    from matplotlib import patches, patheffects

    def variant(ax, box, label):
        x, y, w, h = B.bb_hw(box)
        fx = [patheffects.withStroke(linewidth=3, foreground="k")]
        ax.add_patch(patches.Rectangle((x, y), w, h, fill=False, edgecolor="yellow", path_effects=fx))
        ax.text(x, y, label, path_effects=fx)

    assert run_check(get_spec("draw_box"), variant, hidden=True).passed


def test_settings_per_profile():
    for profile in ("ci", "cpu", "gpu"):
        s = B.settings(profile)
        assert {"arch", "size", "batch_size", "cls_epochs", "box_epochs", "lr"} <= set(s)
    assert B.settings("ci")["cls_epochs"] == 1 and B.settings("ci")["box_epochs"] == 1


# ------------------------------------------------------------------------------ diagnoses

# The capstone has tests of its own below: each of its runs trains two models.
@pytest.mark.parametrize("spec_id", [s.id for s in BC.SPECS if s.kind == "function" and s.bands is None])
def test_references_pass_and_hard_coded_answers_fail(spec_id):
    spec = get_spec(spec_id)
    assert run_check(spec, spec.reference, hidden=True).passed
    cases = spec.cases(np.random.default_rng(0), torch.device("cpu"), spec.n_visible)
    # largest_object's first case is the image without objects, where the answer is an error: memorise the next.
    first = next(c for c in cases if not (spec_id == "largest_object" and len(c.args[0]) == 0))
    if spec_id != "draw_box":
        memorised = spec.reference(*first.args)
    else:  # judged by what it draws on its Axes, so the memorised return value draws nothing
        memorised = spec.reference(BC._fresh_axes(), *first.args)
    assert not run_check(spec, lambda *a, **k: memorised, hidden=True).passed


def test_seed_like_iou_without_clamp_is_diagnosed():
    ns = {}
    exec(SEED_IOU_NO_CLAMP, {}, ns)
    with pytest.raises(CheckFailed, match="clamped at 0"):
        check("box_iou", ns["box_iou"], hidden=True)


def test_wrong_return_types_are_explained():
    as_list = lambda b: [b[1], b[0], b[1] + b[3] - 1, b[0] + b[2] - 1]  # noqa: E731
    assert "wrap it in np.array" in run_check(get_spec("coco_to_voc"), as_list).message
    assert "call .item()" in run_check(get_spec("box_iou"), lambda a, b: torch.tensor(B.box_iou(a, b))).message
    box_only = lambda a: B.largest_object(a)[0]  # noqa: E731
    assert "the whole (box, category) pair" in run_check(get_spec("largest_object"), box_only).message

    def nan_on_empty(a, b):
        h = max(0, min(a[2], b[2]) - max(a[0], b[0]) + 1)
        w = max(0, min(a[3], b[3]) - max(a[1], b[1]) + 1)
        u = (a[2] - a[0] + 1) * (a[3] - a[1] + 1) + (b[2] - b[0] + 1) * (b[3] - b[1] + 1) - h * w
        return float(np.float64(h * w) / np.float64(u))

    with np.errstate(all="ignore"):
        assert "got nan" in run_check(get_spec("box_iou"), nan_on_empty, hidden=True).message


def _raise(exc):
    raise exc


def test_check_no_objects(capsys):
    """The visible self-check's one-liner, which says the same as the spec's first case."""
    BC.check_no_objects(B.largest_object)
    assert "✓ largest_object([]): raises ValueError(" in capsys.readouterr().out
    with pytest.raises(CheckFailed, match="Python's own words"):
        BC.check_no_objects(lambda a: max(a, key=lambda x: x[0][0]), hidden=True)
    with pytest.raises(CheckFailed, match="IndexError"):
        BC.check_no_objects(lambda a: sorted(a)[0], hidden=True)
    with pytest.raises(CheckFailed, match="returned None"):
        BC.check_no_objects(lambda a: None, hidden=True)
    BC.check_no_objects(lambda a: _raise(NotImplementedError()))
    assert "✗ largest_object([]): not implemented yet." in capsys.readouterr().out


def _picks_largest_unless_empty(on_empty):
    """A right largest_object except on an image without objects, where ``on_empty(annotations)`` decides."""
    return lambda a: on_empty(a) if len(a) == 0 else B.largest_object(a)


NO_OBJECTS_ANSWERS = [
    # (what the function does on [], the words the verdict must contain)
    (lambda a: None, "returned NoneType None; an image without objects has no largest one: raise ValueError"),
    (lambda a: (np.zeros(4), 0), "returned tuple (array("),
    (lambda a: max(a, key=lambda x: x[0][0]), "Python's own words, which say nothing about images"),
    (lambda a: _raise(ValueError("")), "raised ValueError(''), Python's own words"),
    (lambda a: sorted(a)[0], "raised IndexError('list index out of range'); check for an empty list first"),
    (lambda a: _raise(KeyError("boxes")), "raised KeyError(\"'boxes'\"); check for an empty list first"),
]


@pytest.mark.parametrize("on_empty,words", NO_OBJECTS_ANSWERS)
def test_the_spec_judges_the_image_without_objects_first(on_empty, words):
    """The empty image is the spec's first case, visible and hidden, and is judged from plain data in the grader."""
    from course_lib.checks import hidden_cases, judge_observations, observe_cases

    spec = get_spec("largest_object")
    fn = _picks_largest_unless_empty(on_empty)
    for hidden in (False, True):
        result = run_check(spec, fn, hidden=hidden)
        assert not result.passed and result.n_cases == 0
        assert result.message.startswith("✗ largest_object: case 1 of ")
        assert "(an image without objects" in result.message
        assert words in result.message, result.message
    cases = hidden_cases(spec, 3)
    assert len(cases[0].args[0]) == 0
    observed = observe_cases(spec, fn, cases)
    assert observed["portable"] and len(observed["observations"]) == len(cases)  # how it ended, as plain data
    assert set(observed["observations"][0]) & {"raised", "returned"}
    verdict = judge_observations(spec, cases, observed)
    assert not verdict.passed and words in verdict.message
    # Word for word what the kernel's check says on the same cases (run_check adds 7919 to a hidden seed).
    assert verdict.message == run_check(spec, fn, hidden=True, seed=3 - 7919).message


def test_an_error_of_ones_own_passes_the_image_without_objects():
    from course_lib.checks import hidden_cases, judge_observations, observe_cases

    spec = get_spec("largest_object")
    own = _picks_largest_unless_empty(lambda a: _raise(ValueError("no objects in this image")))
    assert run_check(spec, own, hidden=True).passed
    subclass = type("NoObjects", (ValueError,), {})  # a ValueError of the student's own kind counts too
    kind_of_its_own = _picks_largest_unless_empty(lambda a: _raise(subclass("nothing to pick")))
    assert run_check(spec, kind_of_its_own, hidden=True).passed
    cases = hidden_cases(spec, 4)
    observed = observe_cases(spec, own, cases)
    assert observed["observations"][0] == {"raised": "ValueError", "is_value_error": True,
                                           "message": "no objects in this image"}
    assert judge_observations(spec, cases, observed).passed
    # An unfinished exercise is told so, not judged on its NotImplementedError.
    stub = lambda a: _raise(NotImplementedError())  # noqa: E731
    assert "not implemented yet" in run_check(spec, stub, hidden=True).message
    assert "not implemented yet" in judge_observations(spec, cases, observe_cases(spec, stub, cases)).message


# ------------------------------------------------------------------------------ widgets

def borderline_for(student):
    """A box in the borderline band for ``student``'s scene, as their fitter would give it."""
    box = get_spec("borderline_box").answer_for(student)
    assert 0.5 <= B.box_iou(box, B.fitter_truth(student)) < 0.55
    return box


@pytest.fixture
def offline(monkeypatch):
    from course_lib.common import OFFLINE_STUDENT

    for name in ("COURSE_STUDENT", "JUPYTERHUB_USER"):
        monkeypatch.delenv(name, raising=False)
    return OFFLINE_STUDENT


def test_box_fitter_shows_iou_and_records_a_gradable_answer(offline):
    from course_lib.widgets.bbox import BoxFitter

    fitter = BoxFitter()
    spec = get_spec("borderline_box")
    truth = B.fitter_truth(offline)
    assert fitter.truth.tolist() == truth.tolist()
    box = borderline_for(offline)
    fitter.top.value, fitter.left.value, fitter.bottom.value, fitter.right.value = box
    assert fitter.iou == pytest.approx(B.box_iou(box, truth))
    assert f"IoU:</b> {fitter.iou:.3f}" in fitter.info.value and "found, just" in fitter.info.value
    fitter.record_button.click()
    assert fitter.answer == box
    assert f"borderline_box = {fitter.answer!r}" in fitter.recorded.value
    assert run_check(spec, fitter.answer).passed
    # The truth itself is found too easily; a box further off is a miss.
    assert "accepts it easily" in run_check(spec, tuple(truth.tolist())).message
    top, left, bottom, right = truth.tolist()
    assert "below 0.5" in run_check(spec, (top, left + 45, bottom, right + 45)).message
    assert "inside" in run_check(spec, (top, left, bottom, 500)).message
    assert "(top, left, bottom, right)" in run_check(spec, 0.52).message


def test_the_solution_holds_the_offline_students_answer():
    from autograder import notebooks

    from grading import solution

    (cell,) = [c for c in solution(LESSON).cells if notebooks.grade_id(c) == "borderline_box"]
    assert f"borderline_box = {borderline_for('offline')!r}" in cell.source


def test_each_student_is_judged_against_their_own_dog():
    from course_lib.checks import judge_observations

    spec = get_spec("borderline_box")
    amy, ben = spec.target("amy"), spec.target("ben")
    assert amy != ben and amy == B.fitter_truth("amy").tolist()  # two students, two scenes
    box_amy, box_ben = borderline_for("amy"), borderline_for("ben")
    assert box_amy != box_ben
    judged = {(box, who): judge_observations(spec, [], {"kind": "answer", "value": box}, student=who).passed
              for box in (box_amy, box_ben) for who in ("amy", "ben")}
    assert judged == {(box_amy, "amy"): True, (box_ben, "ben"): True, (box_amy, "ben"): False, (box_ben, "amy"): False}


def test_fitter_scene_is_fixed_per_student():
    img1, truth, label = B.fitter_scene("ada")
    img2, _, _ = B.fitter_scene("ada")
    assert np.array_equal(img1, img2) and img1.shape == (*B.FITTER_SIZE, 3) and label == "dog"
    assert not np.array_equal(img1, B.fitter_scene("bea")[0])
    # The painted dog fills its box: its first and last rows and columns are the box's.
    rows, cols = np.nonzero((img1 == (120, 15, 40)).all(-1))
    assert [rows.min(), cols.min(), rows.max(), cols.max()] == truth.tolist()


def test_no_cell_states_the_widget_answer_before_the_student_answers():
    from autograder import notebooks

    nb = release(LESSON)
    cells = nb.cells[:next(i for i, c in enumerate(nb.cells) if notebooks.grade_id(c) == "borderline_box") + 1]
    text = " ".join(c.source for c in cells)
    assert "0.5" in text and not any(str(list(B.fitter_truth(s))) in text for s in ("offline", "alice"))
    for c in cells:
        assert not c.get("outputs")  # the student's version holds no output that could show a box


def test_prediction_browser_sorts_worst_first():
    from course_lib.widgets.bbox import PredictionBrowser

    images = np.zeros((7, 3, 32, 32), np.uint8)
    true = np.tile([4.0, 4.0, 20.0, 20.0], (7, 1))
    pred = true + np.arange(7)[:, None] * np.array([0, 2.0, 0, 2.0])   # shifted more and more
    pred = pred[[3, 0, 6, 1, 5, 2, 4]]
    br = PredictionBrowser(images, pred, true, [0] * 7, [1] * 7, ["a", "b"], per_page=3)
    assert br.page() == [2, 4, 6]
    br.start.value = 3
    assert br.page() == [0, 5, 3]
    assert "7 validation images" in br.info.value


# ------------------------------------------------------------------------------ data and models

def test_read_pascal_json_and_largest_data(ci_path):
    pj = B.read_pascal_json(ci_path, "valid")
    j = json.loads((ci_path / "valid.json").read_text())
    assert len(pj.cats) == 20 and sum(len(v) for v in pj.anno.values()) == len(j["annotations"])
    data = B.load_largest(ci_path, "valid", 32, progress=False)
    assert tuple(data.images.shape) == (len(pj.ids), 3, 32, 32) and data.images.dtype == torch.uint8
    i = pj.ids[0]
    box, cat = B.largest_object(pj.anno[i])
    h, w = pj.sizes[i]
    assert data.labels[0].item() == cat - 1 and data.vocab[cat - 1] == pj.cats[cat]
    assert torch.allclose(data.boxes[0], torch.tensor(B.scale_box(box, (h, w), (32, 32)), dtype=torch.float32))
    assert (data.boxes >= -0.5).all() and (data.boxes <= 31.5).all()
    assert data.n_objects[0] == len(pj.anno[i])


def test_missing_json_says_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="get_pascal_2007"):
        B.read_pascal_json(tmp_path, "train")


def test_flip_moves_the_box_with_the_image():
    img = torch.zeros(1, 10, 16)
    box = torch.tensor([2.0, 3.0, 5.0, 7.0])
    img[:, 2:6, 3:8] = 1
    flipped, fbox = img.flip(-1), B.flip_box(box, 16)
    rows, cols = torch.nonzero(flipped[0], as_tuple=True)
    assert fbox.tolist() == [2.0, cols.min().item(), 5.0, cols.max().item()]
    assert torch.equal(B.flip_box(fbox, 16), box)


def test_random_crop_keeps_the_object_and_moves_its_box():
    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        img = torch.zeros(3, 64, 64)
        top, left = int(torch.randint(0, 40, (1,), generator=g)), int(torch.randint(0, 40, (1,), generator=g))
        h, w = int(torch.randint(6, 24, (1,), generator=g)), int(torch.randint(6, 24, (1,), generator=g))
        img[:, top:top + h, left:left + w] = 1
        box = torch.tensor([top, left, top + h - 1, left + w - 1], dtype=torch.float32)
        out, moved = B.random_crop(img, box, generator=g)
        assert out.shape == img.shape
        # The object is whole (nothing of it touches a cut edge) and the new box bounds it to within a pixel.
        rows, cols = torch.nonzero(out[0] > 0.5, as_tuple=True)
        assert abs(rows.min() - moved[0]) <= 1 and abs(rows.max() - moved[2]) <= 1
        assert abs(cols.min() - moved[1]) <= 1 and abs(cols.max() - moved[3]) <= 1
        assert (moved[2] - moved[0]) >= (box[2] - box[0]) - 1e-4  # never shrinks


def test_box_head_input_size_follows_the_image_size():
    body = B.resnet_body("resnet34", pretrained=False, quiet=True)
    assert B.body_output_shape(body, 224) == (512, 7, 7)
    assert B.box_head((512, 7, 7))[1].in_features == 25088
    with pytest.raises(RuntimeError):
        B.box_head((512, 7, 7))(body(torch.zeros(1, 3, 128, 128)))
    model = B.make_model("box", 64, "resnet18", pretrained=False, quiet=True)
    out = model(torch.rand(3, 3, 64, 64))
    assert out.shape == (3, 4) and (out >= 0).all() and (out <= 64).all()
    assert B.make_model("classifier", 64, pretrained=False, quiet=True)(torch.rand(2, 3, 64, 64)).shape == (2, 20)


def test_one_training_step_lowers_nothing_but_runs_and_reports(ci_path):
    train = B.load_largest(ci_path, "train", 32, progress=False)
    valid = B.load_largest(ci_path, "valid", 32, progress=False)
    tdl, vdl = B.dataloaders(train, valid, 16)
    cls = B.make_model("classifier", 32, pretrained=False, quiet=True)
    box = B.make_model("box", 32, pretrained=False, quiet=True)
    h = B.fit(box, tdl, vdl, "box", 1, 1e-3, device="cpu", progress=False)
    assert {"epoch", "train_loss", "valid_l1_px", "mean_iou"} <= set(h[0])
    r = B.report(cls, box, valid, device="cpu")
    assert r["n_valid"] == len(valid) and 0 <= r["mean_iou"] <= 1 and 0 <= r["accuracy"] <= 1
    assert r["l1_px_original"] > r["l1_px"]  # the originals are larger than 32 px


# ------------------------------------------------------------------------------ grading the lesson

@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    # tests/grading.py hands each student's notebook in with their own fitter's answer (Spec.answer_for).
    return lesson_class(tmp_path_factory, LESSON, "box_iou", SEED_IOU_NO_CLAMP)


def test_grading_the_lesson(graded):
    exercises = {"coco_to_voc": 1, "bb_hw": 1, "draw_box": 2, "largest_object": 2, "box_iou": 2, "borderline_box": 1,
                 "detect_largest": 5}
    check_lesson_class(graded, exercises, "box_iou", "clamped at 0")


# ------------------------------------------------------------------------------ the capstone

@pytest.fixture(scope="module")
def capstone_runs(tmp_path_factory):
    """Three held-out folders drawn in the ci profile, the reference trained once on each (the known mistakes
    are the reference's predictions, transformed, so they cost no training of their own)."""
    from course_lib.checks import hidden_cases

    spec = get_spec("detect_largest")
    runs = []
    for seed in (1, 2, 3):
        torch.manual_seed(seed)
        (case,) = hidden_cases(spec, seed, folder=tmp_path_factory.mktemp(f"capstone{seed}"), profile="ci")
        runs.append((case, BC._reference_once(case.args[0])))
    return spec, runs


def test_capstone_held_out_labels_stay_in_the_grader(capstone_runs):
    spec, runs = capstone_runs
    for case, _ in runs:
        path = case.args[0]
        test = json.loads((path / "test.json").read_text())
        assert test["annotations"] == [] and len(test["images"]) == len(case.secret["categories"])
        assert sorted(p.name for p in path.iterdir()) == ["test", "test.json", "train", "train.csv", "train.json",
                                                          "valid.json"]
        assert len(list((path / "test").iterdir())) == len(test["images"])


def test_capstone_reference_lands_in_the_top_band_and_mistakes_lower(capstone_runs):
    spec, runs = capstone_runs
    for case, got in runs:
        assert spec.judge(case, got, None) is None
        score = spec.measure(case, got)
        assert spec.bands.fraction(score, "ci") == (1.0, 0), score
        for mistake in spec.mistakes:
            wrong = mistake.impl(case.args[0])
            share, band = spec.bands.fraction(spec.measure(case, wrong), "ci")
            assert band > 0 and share < 1.0, (mistake.name, spec.measure(case, wrong))
            assert spec.diagnose(case, wrong) is mistake, mistake.name
        assert spec.diagnose(case, got) is None


def test_capstone_untrained_and_constant_models_earn_nothing(capstone_runs):
    spec, runs = capstone_runs
    case, _ = runs[0]
    path = case.args[0]
    s = B.capstone_settings("ci")
    torch.manual_seed(0)
    cls, box = B.make_model("classifier", s["size"], "small"), B.make_model("box", s["size"], "small")
    images, sizes = B.load_test_images(path, s["size"])
    batches = [(images.float() / 255, None, None)]
    untrained = (B.predict(cls, batches, "cpu").argmax(1) + 1,
                 B.boxes_to_original(B.predict(box, batches, "cpu"), s["size"], sizes).float())
    for got in (untrained, BC._constant(path)):
        assert spec.judge(case, got, None) is None
        assert spec.bands.fraction(spec.measure(case, got), "ci") == (0.0, 4)


def test_capstone_judge_explains_malformed_predictions(capstone_runs):
    spec, runs = capstone_runs
    case, (cats, boxes) = runs[0]
    assert "pair (categories, boxes)" in spec.judge(case, cats, None)
    assert "shape" in spec.judge(case, (cats[:-1], boxes), None)
    assert "whole numbers" in spec.judge(case, (cats.float(), boxes), None)
    assert "1 to 20" in spec.judge(case, (cats - 1 + 0 * cats.min(), boxes), None) or (cats - 1).min() >= 1
