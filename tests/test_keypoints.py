"""course_lib.keypoints: references against fastai and fastbook, diagnoses, the explorer, the capstone, and grading
the lesson."""
import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from course_lib import keypoints as K
from course_lib.checks import CheckFailed, check, get_spec, run_check
from course_lib.data import biwi

from grading import lesson_class

LESSON = "04_keypoints"
FORGETS_LO = "def sigmoid_range(x, lo, hi):\n    return torch.sigmoid(x) * (hi - lo)\n"


@pytest.fixture(scope="module")
def ci_biwi() -> Path:
    return biwi.get_biwi("ci")


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


# ------------------------------------------------------------------------------ references

def test_img2pose_and_get_ctr_agree_with_fastbook_on_every_frame(ci_biwi):
    cal, fb_img2pose, fb_get_ctr = fastbook_reader(ci_biwi)
    assert np.array_equal(K.read_cal(ci_biwi / "01" / "rgb.cal"), cal)
    frames = sorted(ci_biwi.glob("*/frame_*_rgb.jpg"))
    assert len(frames) == 24 * biwi.PROFILE_SIZES["ci"]
    for f in frames:
        pose = K.img2pose(f)
        assert isinstance(pose, Path) and pose == fb_img2pose(f) and pose.exists()
        assert K.img2pose(str(f)) == pose
        ctr = K.get_ctr(f, cal)
        assert ctr.dtype == torch.float32 and ctr.shape == (2,)
        assert torch.allclose(ctr.double(), fb_get_ctr(f), atol=1e-4)
        # And it is where the data maker drew the head (course_lib.data.biwi.project).
        _, t = biwi.read_pose(pose)
        assert torch.allclose(ctr.double(), torch.tensor(biwi.project(t, cal), dtype=torch.float64), atol=1e-3)


def test_img2pose_keeps_folders_that_mention_rgb():
    assert K.img2pose("/x/rgb_frames/rgb.jpg_old/13/frame_00003_rgb.jpg") == Path(
        "/x/rgb_frames/rgb.jpg_old/13/frame_00003_pose.txt")


def test_read_cal_parts_reads_every_line(ci_biwi):
    parts = K.read_cal_parts(ci_biwi / "01" / "rgb.cal")
    assert np.array_equal(parts["intrinsics"], biwi.RGB_INTRINSICS)
    assert parts["rotation"].shape == (3, 3) and parts["translation"].shape == (3,)
    assert parts["size"].tolist() == [640, 480]
    with pytest.raises(FileNotFoundError, match="rgb.cal of a BIWI folder"):
        K.read_cal(ci_biwi / "nope" / "rgb.cal")


def test_sigmoid_range_equals_fastai():
    from fastai.layers import SigmoidRange
    from fastai.layers import sigmoid_range as fastai_sigmoid_range

    rng = np.random.default_rng(0)
    for _ in range(50):
        x = torch.from_numpy(rng.normal(0, 4, (int(rng.integers(1, 30)), 2))).float()
        lo, hi = sorted(rng.uniform(-10, 10, 2).tolist())
        got = K.sigmoid_range(x, lo, hi)
        assert torch.allclose(got, fastai_sigmoid_range(x, lo, hi))
        assert torch.allclose(got, SigmoidRange(lo, hi)(x))
        assert bool(((got >= lo) & (got <= hi)).all())


def test_unit_points_match_fastai_point_scaling():
    from fastai.vision.core import _scale_pnts, _unscale_pnts

    rng = np.random.default_rng(1)
    for _ in range(50):
        w, h = (int(v) for v in rng.integers(10, 800, 2))
        p = torch.from_numpy(rng.uniform(0, 1, (int(rng.integers(1, 10)), 2)) * [w, h]).float()
        unit = K.to_unit_points(p, (w, h))
        assert torch.allclose(unit, _scale_pnts(p, (w, h)).as_subclass(torch.Tensor), atol=1e-6)
        assert torch.allclose(K.from_unit_points(unit, (w, h)), _unscale_pnts(unit, (w, h)).as_subclass(torch.Tensor),
                              atol=1e-3)
        assert torch.allclose(K.from_unit_points(unit, [w, h]), p, atol=1e-3)
    # The corners of the image are the corners of the square.
    assert K.to_unit_points(torch.tensor([[0.0, 0.0], [640.0, 480.0]]), (640, 480)).tolist() == [[-1, -1], [1, 1]]


def test_pixel_errors_and_mse_to_pixels():
    preds = torch.tensor([[0.0, 0.0], [0.5, -0.5]])
    targs = torch.tensor([[[0.0, 0.1]], [[0.5, -0.5]]])  # PointBlock's [N, 1, 2]
    assert K.pixel_errors(preds, targs).tolist() == pytest.approx([24.0, 0.0])  # 0.1 of a 240-px half-height
    assert K.pixel_error(preds, targs) == pytest.approx(12.0)
    # One point off by (du, dv): the MSE is (du^2 + dv^2)/2, the distance sqrt((320 du)^2 + (240 dv)^2).
    # Exact when both coordinates are off by the same amount: sqrt(3.2^2 + 2.4^2) = 4 px.
    assert K.mse_to_pixels((0.01**2 + 0.01**2) / 2) == pytest.approx(4.0)
    assert 2.0 < K.mse_to_pixels(0.000036) < 3.0


def test_person_splitter_holds_out_every_recording_of_the_person(ci_biwi):
    from fastai.data.transforms import get_image_files

    files = get_image_files(ci_biwi)
    train, valid = K.person_splitter("13")(files)
    assert {files[i].parent.name for i in valid} == {"13"} and len(train) + len(valid) == len(files)
    train, valid = K.person_splitter("03")(files)
    assert {files[i].parent.name for i in valid} == {"03", "15"}  # the same person, recorded twice
    assert not {files[i].parent.name for i in train} & {"03", "15"}


def test_dataloaders_give_unit_points_of_get_ctr(ci_biwi):
    s = K.settings("ci")
    dls = K.biwi_dataloaders(ci_biwi, s, device="cpu")
    cal = K.read_cal(ci_biwi / "01" / "rgb.cal")
    xb, yb = dls.valid.one_batch()
    assert tuple(xb.shape[1:]) == (3, *s["size"]) and tuple(yb.shape[1:]) == (1, 2)
    targets = torch.cat([y.reshape(-1, 2) for _, y in dls.valid]).as_subclass(torch.Tensor)
    want = torch.stack([K.to_unit_points(K.get_ctr(f, cal), K.FRAME_SIZE) for f in dls.valid.items])
    assert torch.allclose(targets, want, atol=1e-5)
    assert all(K.is_held_out(f) for f in dls.valid.items) and not any(K.is_held_out(f) for f in dls.train.items)
    with pytest.raises(FileNotFoundError, match="get_biwi"):
        K.biwi_dataloaders(ci_biwi / "01", s)


def test_learner_outputs_points_in_range_with_mse(ci_biwi):
    s = K.settings("ci")
    dls = K.biwi_dataloaders(ci_biwi, s, device="cpu")
    learn = K.make_learner(dls, "resnet18", pretrained=False, quiet=True)
    assert "MSELoss" in str(learn.loss_func)
    xb, yb = dls.train.one_batch()
    learn.model.eval()
    with torch.no_grad():
        out = learn.model(xb)
    assert out.shape == (len(xb), 2) and bool((out.abs() < 1).all())
    assert float(learn.loss_func(out, yb)) > 0
    assert float(K.pixel_error_metric(out, yb)) == pytest.approx(K.pixel_error(out, yb), rel=1e-5)


def _peaked_head(n_in: int = 4) -> K.HeatmapHead:
    """A head whose score is channel 0 of the input and whose shifts are zero."""
    head = K.HeatmapHead(n_in)
    head.eval()
    with torch.no_grad():
        for m in head.modules():
            if isinstance(m, torch.nn.Conv2d):
                m.weight.zero_()
                m.bias.zero_()
        head.trunk[0].weight[:, 0, 1, 1] = 1.0  # the centre tap of the 3x3 conv copies channel 0
        head.score.weight.fill_(1.0)
    return head


def test_heatmap_head_returns_the_centre_of_mass_of_its_map():
    head = _peaked_head()
    x = torch.zeros(2, 4, 6, 8)
    # Make the score of cell (row 1, col 6) of image 0, and of cells (4, 0) and (4, 2) of image 1, dominate.
    x[0, 0, 1, 6] = x[1, 0, 4, 0] = x[1, 0, 4, 2] = 100.0
    out = head(x)
    cols, rows = torch.linspace(-1 + 1 / 8, 1 - 1 / 8, 8), torch.linspace(-1 + 1 / 6, 1 - 1 / 6, 6)
    assert torch.allclose(out[0], torch.stack([cols[6], rows[1]]), atol=1e-3)
    assert torch.allclose(out[1], torch.stack([(cols[0] + cols[2]) / 2, rows[4]]), atol=1e-3)
    assert torch.allclose(head.heatmap(x).sum(dim=(1, 2)), torch.ones(2))
    assert bool((K.HeatmapHead(4)(torch.randn(5, 4, 3, 3)).abs() < 1).all())  # a new head: no shift yet


def test_heatmap_head_shifts_within_a_cell():
    head = _peaked_head()
    x = torch.zeros(1, 4, 6, 8)
    x[0, 0, 1, 6] = 100.0
    base = head(x)
    with torch.no_grad():
        head.shift.bias.copy_(torch.tensor([100.0, -100.0]))  # tanh saturates: +1/2 cell right, 1/2 cell up
    moved = head(x)
    cell = torch.tensor([2 / 8, 2 / 6])  # a cell's size in [-1, 1] units, (col, row)
    assert torch.allclose(moved - base, torch.stack([cell[0] / 2, -cell[1] / 2])[None], atol=1e-3)
    with torch.no_grad():
        head.shift.bias.fill_(1e6)
    assert bool((head(torch.randn(3, 4, 6, 8) * 50).abs() <= 1 + 1e-6).all())  # never beyond the frame


def test_heatmap_learner_cuts_the_body(ci_biwi):
    s = K.settings("ci")
    dls = K.biwi_dataloaders(ci_biwi, s, device="cpu")
    learn = K.make_learner(dls, "resnet18", pretrained=False, quiet=True, head="heatmap")
    assert isinstance(learn.model[1], K.HeatmapHead) and "MSELoss" in str(learn.loss_func)
    xb, yb = dls.valid.one_batch()
    learn.model.eval()
    with torch.no_grad():
        feats = learn.model[0](xb)
        out = learn.model(xb)
    # cut=-5: after layer1, 64 channels at stride 4.
    assert feats.shape[1] == 64 and tuple(feats.shape[-2:]) == (s["size"][0] // 4, s["size"][1] // 4)
    assert out.shape == (len(xb), 2) and bool((out.abs() < 1).all())
    axes = K.plot_heatmaps(learn, n=2)
    assert len(axes) == 2
    with pytest.raises(ValueError, match="head must be"):
        K.make_learner(dls, "resnet18", pretrained=False, quiet=True, head="pooled")


def test_pretrained_heatmap_learner_trains_its_own_head(ci_biwi):
    """vision_learner builds an optimizer for the model it made; the swapped-in model must get its own."""
    import torchvision
    from fastai.vision.learner import model_meta

    def arch(pretrained: bool = True, **kwargs):  # "pretrained" like course_lib.backbone.fastai_arch, no download
        return torchvision.models.resnet18()

    meta = dict(model_meta[torchvision.models.resnet18])
    meta.pop("weights", None)
    model_meta[arch] = meta
    s = K.settings("ci")
    dls = K.biwi_dataloaders(ci_biwi, s, device="cpu")
    learn = K.make_learner(dls, arch, pretrained=True, quiet=True, head="heatmap")
    head_before = [p.detach().clone() for p in learn.model[1].parameters()]
    body_before = [p.detach().clone() for p in learn.model[0].parameters() if p.ndim == 4]
    with learn.no_bar(), learn.no_logging():
        learn.fit(1, 1e-3)
    assert any(not torch.equal(a, b) for a, b in zip(head_before, learn.model[1].parameters()))
    # Frozen: the body's convolutions stay as they were.
    assert all(torch.equal(a, b) for a, b in zip(body_before, [p for p in learn.model[0].parameters() if p.ndim == 4]))


def test_settings_per_profile():
    for profile in ("ci", "cpu", "gpu"):
        s = K.settings(profile)
        assert {"size", "batch_size", "epochs", "lr", "lr_find_iters", "num_workers", "arch", "head"} <= set(s)
        assert s["head"] in ("linear", "heatmap")
        assert len(s["size"]) == 2 and s["size"][0] < s["size"][1]  # (height, width) of a landscape frame
    assert K.settings("ci")["epochs"] == 1 and K.settings("gpu")["size"] == (240, 320)


@pytest.mark.parametrize("flip,rotate,zoom,warp", [(True, 0, 1, 0), (False, 30, 1, 0), (False, 0, 1.5, 0),
                                                   (False, 0, 1, 0.3), (True, -20, 1.3, 0.2)])
def test_augment_moves_the_point_with_the_pixels(flip, rotate, zoom, warp):
    # A bright square drawn around the point must end up around the moved point.
    w, h = 320, 240
    col, row = 200.0, 90.0
    img = torch.zeros(3, h, w)
    img[:, int(row) - 3:int(row) + 4, int(col) - 3:int(col) + 4] = 1.0
    out, p = K.augment(img, torch.tensor([col, row]), flip, rotate, zoom, warp)
    ys, xs = torch.nonzero(out[0] > 0.3 * out[0].max(), as_tuple=True)
    assert abs(xs.float().mean() - p[0]) < 2.0 and abs(ys.float().mean() - p[1]) < 2.0


@pytest.mark.parametrize("student", ["offline", "alice", "bob"])
def test_each_students_challenge_tells_the_conventions_apart(student):
    truth = K.challenge_truth(student)
    assert truth == K.challenge_truth(student)  # the same draw on every machine and every call
    assert 40 <= truth[0] <= 600 and 40 <= truth[1] <= 440
    # Each wrong convention must land clearly elsewhere, or the diagnoses could not tell them apart.
    from course_lib.keypoints_checks import _alternatives

    for alt in _alternatives(student).values():
        assert np.hypot(alt[0] - truth[0], alt[1] - truth[1]) > 2 * K.CHALLENGE_TOLERANCE


def test_two_students_have_different_right_answers_each_judged_against_their_own():
    from course_lib.checks import judge_observations

    spec = get_spec("landing_point")
    amy, ben = K.challenge_truth("amy"), K.challenge_truth("ben")
    assert np.hypot(amy[0] - ben[0], amy[1] - ben[1]) > 2 * K.CHALLENGE_TOLERANCE
    assert spec.target("amy") == amy and spec.target("ben") == ben

    def verdict(answer, student):
        return judge_observations(spec, [], {"portable": True, "kind": "answer", "value": answer}, student=student)

    assert verdict(amy, "amy").passed and verdict(ben, "ben").passed
    assert not verdict(ben, "amy").passed and not verdict(amy, "ben").passed


# ------------------------------------------------------------------------------ diagnoses

@pytest.mark.parametrize("spec_id", ["img2pose", "get_ctr", "sigmoid_range", "to_unit_points", "from_unit_points"])
def test_references_pass_and_hidden_runs_more_cases(spec_id):
    spec = get_spec(spec_id)
    visible, hidden = run_check(spec, getattr(K, spec_id)), run_check(spec, getattr(K, spec_id), hidden=True)
    assert visible.passed and hidden.passed and hidden.n_cases > visible.n_cases


def test_named_mistakes_say_what_is_wrong():
    def msg(spec_id, name):
        spec = get_spec(spec_id)
        return run_check(spec, spec.mistake(name).impl).message

    assert "swapped" in msg("get_ctr", "swapped") and "[col, row]" in msg("get_ctr", "swapped")
    assert "principal point" in msg("get_ctr", "no_principal_point")
    assert "forgot to add lo" in msg("sigmoid_range", "forgets_lo")
    assert "off by one" in msg("to_unit_points", "minus_one") and "off by one" in msg("from_unit_points", "minus_one")
    assert "(width, height)" in msg("to_unit_points", "hw")


def test_seed_style_answers_pass():
    # fastbook's one-liners, as students copy them.
    fb_img2pose = lambda x: Path(f'{str(x)[:-7]}pose.txt')  # noqa: E731
    assert run_check(get_spec("img2pose"), fb_img2pose, hidden=True).passed
    fb_sigmoid_range = lambda x, lo, hi: torch.sigmoid(x) * (hi - lo) + lo  # noqa: E731
    assert run_check(get_spec("sigmoid_range"), fb_sigmoid_range, hidden=True).passed

    def float64_ctr(img_file, cal):  # fastai's tensor() of NumPy floats is float64: fine too
        ctr = np.genfromtxt(K.img2pose(img_file), skip_header=3)
        return torch.tensor([ctr[0] * cal[0][0] / ctr[2] + cal[0][2], ctr[1] * cal[1][1] / ctr[2] + cal[1][2]])

    assert run_check(get_spec("get_ctr"), float64_ctr, hidden=True).passed


def test_wrong_types_get_clear_messages():
    assert "pathlib.Path" in run_check(get_spec("img2pose"), lambda x: str(x)[:-7] + "pose.txt").message
    np_ctr = lambda f, cal: K.get_ctr(f, cal).numpy()  # noqa: E731
    assert "NumPy array" in run_check(get_spec("get_ctr"), np_ctr).message
    assert "float tensor" in run_check(get_spec("get_ctr"), lambda f, cal: K.get_ctr(f, cal).long()).message
    with pytest.raises(CheckFailed, match="forgot to add lo"):
        check("sigmoid_range", lambda x, lo, hi: torch.sigmoid(x) * (hi - lo), hidden=True)


# ------------------------------------------------------------------------------ widget

def test_challenge_never_shows_the_point_and_gives_a_gradable_answer(monkeypatch):
    from course_lib.widgets.keypoints import KeypointExplorer

    monkeypatch.setenv("COURSE_STUDENT", "dana")
    mine = K.challenge_for("dana")
    ex = KeypointExplorer(challenge=True)
    assert ex.flip.disabled and ex.rotate.disabled and ex.reveal.disabled
    assert ex.params == (True, mine["rotate"], mine["zoom"], 0.0) and tuple(ex.point.tolist()) == mine["point"]
    spec = get_spec("landing_point")
    truth = K.challenge_truth("dana")
    assert ex.truth == truth
    ex.pred_col.value, ex.pred_row.value = round(truth[0]) + 5, round(truth[1]) - 4
    ex.record_button.click()
    assert f"landing_point = {ex.answer!r}" in ex.recorded.value
    # Neither the recorded line nor the explorer says where fastai puts the point: that is the answer.
    shown = ex.recorded.value + ex.info.value
    assert "fastai" not in shown and f"{truth[0]:.0f}" not in shown.replace(f"{ex.answer[0]:.0f}", "")
    assert run_check(spec, ex.answer).passed
    ex.pred_col.value, ex.pred_row.value = (int(v) for v in mine["point"])
    ex.record_button.click()
    assert "did not move at all" in run_check(spec, ex.answer).message


@pytest.mark.parametrize("wrong,words", [(dict(flip=False), "without the flip"),
                                         ("turn", "rotation turned the other way"),
                                         ("zoom", "zoom shrank the picture")])
def test_landing_point_names_the_wrong_convention(wrong, words):
    c = K.challenge_for("offline")
    wrong = dict(rotate=-c["rotate"]) if wrong == "turn" else dict(zoom=1 / c["zoom"]) if wrong == "zoom" else wrong
    answer = K.challenge_truth("offline", **wrong)
    assert words in run_check(get_spec("landing_point"), answer).message
    col, row = K.challenge_truth("offline")
    assert "swapped the two numbers" in run_check(get_spec("landing_point"), (row, col)).message
    assert "expected (col, row)" in run_check(get_spec("landing_point"), 177.0).message


def test_free_explorer_reveals_fastais_point_on_a_frame(ci_biwi):
    from course_lib.widgets.keypoints import KeypointExplorer

    f = sorted(ci_biwi.glob("13/*.jpg"))[0]
    ctr = K.get_ctr(f, K.read_cal(ci_biwi / "01" / "rgb.cal"))
    ex = KeypointExplorer(f, ctr)
    assert not ex.flip.disabled and ex.truth == pytest.approx((float(ctr[0]), float(ctr[1])), abs=0.1)
    ex.flip.value = True
    assert ex.truth[0] == pytest.approx(640 - float(ctr[0]), abs=0.1)  # fastai's flip: col -> width - col
    ex.reveal.value = True
    assert "fastai's point" in ex.info.value and ex.plot.value[:4] == b"\x89PNG"
    with pytest.raises(FileNotFoundError):
        KeypointExplorer(ci_biwi / "nope.jpg", ctr)


# ------------------------------------------------------------------------------ capstone

def _held_out_verdict(fn, seed):
    from course_lib.checks import hidden_cases, judge_observations, observe_cases

    spec = get_spec("locate_heads")
    cases = hidden_cases(spec, seed, profile="ci")
    # What the student's process gets: the inputs, never the held-out centres.
    sent = [dataclasses.replace(c, secret=None) for c in cases]
    return judge_observations(spec, cases, observe_cases(spec, fn, sent), profile="ci")


def test_the_held_out_people_come_without_their_poses():
    spec = get_spec("locate_heads")
    case = spec.cases(np.random.default_rng(5), torch.device("cpu"), 1)[0]
    train, images = case.args
    assert train == biwi.get_biwi("ci") and len(images) == case.secret.shape[0] > 0
    folders = {Path(f).parent for f in images}
    assert all((f / "rgb.cal").exists() for f in folders)
    assert not [p for f in folders for p in f.iterdir() if p.name.endswith("pose.txt")]
    # Other faces than the course's own data: the grader's seed draws new people and rooms.
    assert all(Path(f).name.endswith("_rgb.jpg") and not str(f).startswith(str(train)) for f in images)


def test_the_reference_lands_in_the_top_band_on_three_seeds():
    errors = []
    for seed in (1, 2, 3):
        result = _held_out_verdict(K.locate_heads, seed)
        assert result.passed and result.fraction == 1.0, result.message
        errors.append(float(result.message.split("held-out data: ")[1].split(",")[0]))
    print("reference mean errors (px):", errors)


def test_an_untrained_model_and_each_known_mistake_land_lower(monkeypatch):
    from course_lib.keypoints_checks import _LOCATE_MISTAKES

    for mistake in _LOCATE_MISTAKES.values():
        result = _held_out_verdict(mistake.impl, 4)
        assert result.fraction < 1.0 and result.mistake == mistake.name, result.message
    # The reference's own network and loop, not trained a single step: about the middle of the frame every time.
    monkeypatch.setitem(K.CAPSTONE_SETTINGS, "ci", dict(K.CAPSTONE_SETTINGS["ci"], steps=0))
    result = _held_out_verdict(K.locate_heads, 4)
    assert result.fraction == 0.0, result.message


# ------------------------------------------------------------------------------ grading the lesson

@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    # Each student's widget draws a challenge of their own: tests/grading.py hands each notebook in with the answer
    # to its student's own (Spec.answer_for).
    return lesson_class(tmp_path_factory, LESSON, "sigmoid_range", FORGETS_LO)


def test_grading_the_lesson(graded):
    """grading.check_lesson_class's promises, with the written answer left to a person: "to grade", no points yet."""
    g = graded
    exercises = {"img2pose": 1, "get_ctr": 2, "to_unit_points": 1, "from_unit_points": 1, "landing_point": 1,
                 "sigmoid_range": 1, "locate_heads": 5}
    written = {"written_held_out_person": 1}
    auto, full = sum(exercises.values()), sum(exercises.values()) + sum(written.values())
    assert g.returncode == 0, g.stderr[-3000:]
    assert {k: float(r["max_score"]) for k, r in g.by["alice"].items()} == {**exercises, **written}
    assert all(g.by["alice"][k]["status"] == "passed" for k in exercises) and g.total("alice") == auto, g.by["alice"]
    assert g.totals["alice"]["status"] == "ok", g.totals["alice"]
    assert all(g.by[s]["written_held_out_person"]["status"] == "to grade" for s in ("alice", "carol"))
    assert g.total("bob") == 0 and {r["status"] for r in g.by["bob"].values()} <= {"failed", "error"}
    page = g.page("bob")
    assert f"0 / {full:g} points" in page and "not implemented yet" in page
    wrong = g.by["carol"]["sigmoid_range"]
    assert wrong["status"] == "failed" and float(wrong["score"]) == 0
    assert g.by["carol"]["locate_heads"]["status"] == "failed"  # left unanswered (tests/grading.py)
    assert g.total("carol") == auto - exercises["sigmoid_range"] - exercises["locate_heads"]
    assert "forgot to add lo" in g.page("carol")
