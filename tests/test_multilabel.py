"""course_lib.multilabel: references against PyTorch and fastai, diagnoses, the explorer, and grading the lesson."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from course_lib import multilabel as M
from course_lib.checks import CheckFailed, check, get_spec, run_check
from course_lib.data.pascal import VOC_CLASSES

from grading import check_lesson_class, lesson_class

LESSON = "03_multilabel"
SEED_BCE = ("def binary_cross_entropy(inputs, targets):\n"
            "    inputs = inputs.sigmoid()\n"
            "    return -torch.where(targets==1, 1-inputs, inputs).log().mean()\n")


def _random_logits(rng, scale=3.0):
    b, c = int(rng.integers(1, 65)), int(rng.integers(1, 21))
    x = torch.from_numpy(rng.normal(0, scale, (b, c))).float()
    t = torch.from_numpy((rng.random((b, c)) < rng.uniform(0.05, 0.6)).astype(np.float32))
    return x, t


# ------------------------------------------------------------------------------ references

def test_one_hot_matches_fastai_multicategory_encoding():
    from fastai.data.transforms import MultiCategorize, OneHotEncode

    rng = np.random.default_rng(0)
    for _ in range(100):
        vocab = sorted(rng.choice(VOC_CLASSES, size=int(rng.integers(2, 21)), replace=False).tolist())
        labels = rng.choice(vocab, size=int(rng.integers(0, min(4, len(vocab)) + 1)), replace=False).tolist()
        want = OneHotEncode(len(vocab))(MultiCategorize(vocab=vocab)(labels))
        got = M.one_hot(labels, vocab)
        assert got.dtype == torch.float32 and got.shape == (len(vocab),)
        assert torch.equal(got, torch.as_tensor(want).float())


@pytest.mark.parametrize("scale", [1.0, 3.0, 30.0])
def test_bce_equals_pytorch_with_logits(scale):
    # Scale 30 reaches logits where sigmoid-then-log would give inf; the reference must not.
    rng = np.random.default_rng(int(scale))
    for _ in range(100):
        x, t = _random_logits(rng, scale)
        got = M.binary_cross_entropy(x, t)
        assert got.shape == () and torch.isfinite(got)
        assert torch.allclose(got, F.binary_cross_entropy_with_logits(x, t), rtol=1e-5, atol=1e-6)
        assert torch.allclose(got, torch.nn.BCEWithLogitsLoss()(x, t), rtol=1e-5, atol=1e-6)


def test_bce_is_differentiable_with_pytorch_gradients():
    x, t = _random_logits(np.random.default_rng(5))
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    M.binary_cross_entropy(x1, t).backward()
    F.binary_cross_entropy_with_logits(x2, t).backward()
    assert torch.allclose(x1.grad, x2.grad, atol=1e-7)


def test_accuracy_multi_equals_fastai():
    from fastai.metrics import accuracy_multi as fastai_accuracy_multi

    rng = np.random.default_rng(1)
    for i in range(200):
        x, t = _random_logits(rng)
        thresh = float(rng.choice([0.5, float(rng.uniform(0.05, 0.95)), 0.25]))
        sigmoid = bool(i % 2)
        inp = x if sigmoid else torch.from_numpy(rng.integers(0, 5, tuple(x.shape)) / 4).float()
        got = M.accuracy_multi(inp, t, thresh=thresh, sigmoid=sigmoid)
        want = fastai_accuracy_multi(inp, t, thresh=thresh, sigmoid=sigmoid)
        assert got.shape == () and got.dtype == torch.float32
        assert torch.equal(got, torch.as_tensor(want).as_subclass(torch.Tensor)), (i, thresh, sigmoid)


def test_best_threshold_matches_brute_force():
    rng = np.random.default_rng(2)
    for _ in range(50):
        x, t = _random_logits(rng)
        p = x.sigmoid()
        ths = [round(float(v), 3) for v in np.sort(rng.uniform(0.01, 0.99, int(rng.integers(1, 40))))]
        accs = [((p.numpy() > th) == (t.numpy() == 1)).mean() for th in ths]
        i = int(np.argmax(accs))  # the first of any ties, like torch.argmax
        got_t, got_a = M.best_threshold(p, t, ths)
        assert isinstance(got_t, float) and isinstance(got_a, float)
        assert abs(got_t - ths[i]) < 1e-6 and abs(got_a - accs[i]) < 1e-6


def test_precision_recall_by_counting():
    p = torch.tensor([[0.9, 0.6, 0.1], [0.2, 0.7, 0.4]])
    t = torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 0.0]])
    # At 0.5: predicted (0,0) (0,1) (1,1); right (0,0) (1,1); true (0,0) (1,0) (1,1).
    assert M.precision_recall(p, t, 0.5) == pytest.approx((2 / 3, 2 / 3))
    assert M.precision_recall(p, t, 0.95) == (1.0, 0.0)


def test_reference_predictions_are_fixed():
    # Graded widget answers are checked against this curve: it must never drift.
    p1, t1 = M.reference_predictions()
    p2, t2 = M.reference_predictions()
    assert torch.equal(p1, p2) and torch.equal(t1, t2)
    assert p1.shape == t1.shape == (400, 20)
    assert set(t1.sum(1).tolist()) == {1.0, 2.0, 3.0}
    best_t, best_a = M.best_threshold(p1, t1, M.explorer_thresholds())
    assert best_t == pytest.approx(0.40) and best_a == pytest.approx(0.9621, abs=1e-4)
    assert M.accuracy_multi(p1, t1, 0.5, sigmoid=False).item() == pytest.approx(0.9615, abs=1e-4)
    # A student's set is fixed by the id alone.
    assert all(torch.equal(a, b) for a, b in zip(M.explorer_set("ada"), M.explorer_set("ada")))


def test_settings_per_profile():
    for profile in ("ci", "cpu", "gpu"):
        s = M.settings(profile)
        assert {"size", "batch_size", "epochs", "freeze_epochs", "lr", "thresh"} <= set(s)
    assert M.settings("ci")["size"] <= 64 and M.settings("ci")["epochs"] == 1


# ------------------------------------------------------------------------------ data and learner

def test_dataloaders_on_the_ci_data():
    from course_lib.data.pascal import get_pascal_2007

    path = get_pascal_2007("ci")
    df = M.read_pascal_csv(path)
    dls = M.pascal_dataloaders(path, 32, 8, device="cpu")
    assert list(dls.vocab) == VOC_CLASSES
    assert len(dls.valid_ds) == int(df["is_valid"].sum()) and len(dls.train_ds) == int((~df["is_valid"]).sum())
    xb, yb = dls.valid.one_batch()
    assert tuple(xb.shape) == (8, 3, 32, 32) and tuple(yb.shape) == (8, 20)
    # The targets are the one-hot encoding of the CSV's labels, in the validation order.
    rows = df[df["is_valid"]].head(8)
    want = torch.stack([M.one_hot(r["labels"].split(" "), VOC_CLASSES) for _, r in rows.iterrows()])
    assert torch.equal(yb.as_subclass(torch.Tensor).cpu(), want)


def test_learner_pretrained_is_offline_and_says_so(tmp_path, monkeypatch, capsys):
    import torchvision

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    assert M.learner_pretrained(torchvision.models.resnet18) is False
    assert "pretrained=False" in capsys.readouterr().out
    weights = torchvision.models.ResNet18_Weights.DEFAULT
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / weights.url.rsplit("/", 1)[-1]).write_bytes(b"")
    assert M.learner_pretrained("resnet18") is True
    assert "pretrained=True" in capsys.readouterr().out


def test_pretrained_arch_never_downloads(tmp_path, monkeypatch, capsys):
    import torch
    import torchvision

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    arch = M.pretrained_arch("ci")
    assert arch is not torchvision.models.resnet18 and arch.__name__ == "course_resnet18"
    assert "course_lib's own pretraining" in capsys.readouterr().out
    weights = tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    weights.parent.mkdir(parents=True)
    weights.write_bytes(b"")
    assert M.pretrained_arch("ci") is torchvision.models.resnet18
    assert "ImageNet weights found" in capsys.readouterr().out


def test_fine_tune_kwargs_spare_a_random_body():
    s = M.settings("ci")
    assert M.fine_tune_kwargs(False, s)["lr_mult"] == 1 and M.fine_tune_kwargs(True, s)["lr_mult"] == 100


# ------------------------------------------------------------------------------ diagnoses

def test_seed_swapped_where_is_diagnosed():
    seed = {}
    exec(SEED_BCE, {"torch": torch}, seed)
    with pytest.raises(CheckFailed, match="rewards wrong labels: are the torch.where branches swapped"):
        check("binary_cross_entropy", seed["binary_cross_entropy"], hidden=True)


@pytest.mark.parametrize("spec_id,mistake,words", [
    ("binary_cross_entropy", "no_sigmoid", "apply .sigmoid()"),
    ("binary_cross_entropy", "softmax", "use sigmoid, not softmax"),
    ("binary_cross_entropy", "cross_entropy", "F.cross_entropy"),
    ("accuracy_multi", "no_sigmoid", "apply inp.sigmoid()"),
    ("accuracy_multi", "direction", "wrong way"),
    ("accuracy_multi", "softmax", "not softmax"),
    ("accuracy_multi", "always_sigmoid", "only when sigmoid=True"),
    ("accuracy_multi", "argmax", "single-label accuracy"),
    ("one_hot", "rows", "F.one_hot"),
    ("best_threshold", "argmin", "argmin"),
    ("best_threshold", "sigmoid_again", "sigmoid=False"),
])
def test_mistakes_are_named(spec_id, mistake, words):
    spec = get_spec(spec_id)
    m = spec.mistake(mistake)
    assert m is not None
    msg = run_check(spec, m.impl, hidden=True).message
    assert f"Likely mistake: {m.message}" in msg and words in msg


def test_one_hot_integer_dtype_is_explained():
    spec = get_spec("one_hot")
    msg = run_check(spec, lambda labels, vocab: M.one_hot(labels, vocab).long()).message
    long = spec.mistake("long")
    assert long is not None and "not float32" in msg and f"Likely mistake: {long.message}" in msg
    # A bool target is said plainly, and no known mistake is named for it: none gives a bool.
    msg = run_check(spec, lambda labels, vocab: M.one_hot(labels, vocab).bool()).message
    assert "dtype torch.bool, not float32" in msg and "Likely mistake" not in msg


def test_a_wrong_best_threshold_is_not_blamed_on_a_mistake_it_did_not_make():
    # The threshold just after the best one: wrong, but neither argmin nor any other known mistake.
    def next_one(preds, targs, thresholds):
        ts = torch.as_tensor(thresholds, dtype=torch.float32).reshape(-1)
        accs = M.threshold_sweep(preds, targs, ts)
        i = min(int(accs.argmax()) + 1, len(ts) - 1)
        return float(ts[i]), float(accs[i])

    result = run_check(get_spec("best_threshold"), next_one, hidden=True)
    assert not result.passed and "Likely mistake" not in result.message and result.mistake == ""


def test_naive_bce_passes_and_returning_a_float_accuracy_does_not():
    def naive(inputs, targets):
        p = inputs.sigmoid()
        return -torch.where(targets == 1, p, 1 - p).log().mean()

    assert run_check(get_spec("binary_cross_entropy"), naive, hidden=True).passed
    msg = run_check(get_spec("accuracy_multi"), lambda *a, **k: M.accuracy_multi(*a, **k).item()).message
    assert "not a Python float" in msg


def test_best_threshold_accepts_any_tied_best_and_tensors():
    p = torch.tensor([[0.9, 0.1], [0.8, 0.2]])
    t = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    spec = get_spec("best_threshold")
    ths = [0.3, 0.5, 0.7]  # all three give accuracy 1.0
    case = spec.cases(np.random.default_rng(0), torch.device("cpu"), 1)[0]
    assert spec.judge(case, M.best_threshold(*case.args), M.best_threshold(*case.args)) is None
    from course_lib.checks import Case

    c = Case((p, t, ths))
    assert spec.judge(c, (0.7, 1.0), M.best_threshold(p, t, ths)) is None
    assert spec.judge(c, (torch.tensor(0.5), torch.tensor(1.0)), M.best_threshold(p, t, ths)) is None
    assert "not one of the thresholds" in spec.judge(c, (0.6, 1.0), M.best_threshold(p, t, ths))


# ------------------------------------------------------------------------------ widget

def test_explorer_shows_numbers_and_flips():
    from course_lib.widgets.multilabel import ThresholdExplorer

    p, t = M.reference_predictions()
    ex = ThresholdExplorer(p, t)
    ex.threshold.value = 0.3
    prec, rec = M.precision_recall(p, t, 0.3)
    acc = M.accuracy_multi(p, t, 0.3, sigmoid=False).item()
    assert f"accuracy:</b> {acc:.4f}" in ex.info.value and f"precision:</b> {prec:.3f}" in ex.info.value
    assert f"recall:</b> {rec:.3f}" in ex.info.value
    flipped = ex.flipped()
    assert flipped == torch.nonzero(((p > 0.3) != (p > 0.5)).any(1)).flatten().tolist()
    assert f"{len(flipped)}, first 6" in ex.flips.value
    ex.threshold.value = 0.5
    assert ex.flipped() == [] and "none" in ex.flips.value


def test_flip_description_marks_right_and_wrong_changes():
    from course_lib.widgets.multilabel import ThresholdExplorer

    p = torch.tensor([[0.4, 0.3, 0.6]])
    t = torch.tensor([[1.0, 0.0, 0.0]])
    ex = ThresholdExplorer(p, t, ["cat", "dog", "car"])
    ex.threshold.value = 0.2
    assert ex.describe_flip(0) == "+cat✓ +dog✗ (true: cat)"
    ex.threshold.value = 0.7
    assert ex.describe_flip(0) == "−car✓ (true: cat)"


def test_recording_gives_a_gradable_answer(monkeypatch):
    from course_lib.widgets.multilabel import ThresholdExplorer

    monkeypatch.setenv("COURSE_STUDENT", "ada")
    ex = ThresholdExplorer()
    spec = get_spec("chosen_threshold")
    best_t, best_a = M.explorer_target("ada")
    ex.threshold.value = best_t
    ex.record_button.click()
    assert f"chosen_threshold = {ex.answer!r}" in ex.recorded.value
    assert ex.answer == (best_t, best_a) and run_check(spec, ex.answer).passed
    ex.threshold.value = 0.15
    ex.record_button.click()
    assert ex.answer[0] == 0.15
    assert "try a higher threshold" in run_check(spec, ex.answer).message
    assert "record it with the explorer" in run_check(spec, (best_t, 0.99)).message
    assert "slider position" in run_check(spec, (0.415, 0.96)).message


def test_each_student_is_judged_against_their_own_explorer_set(monkeypatch):
    from course_lib.checks import judge_observations
    from course_lib.widgets.multilabel import ThresholdExplorer

    spec = get_spec("chosen_threshold")

    def verdict(answer, student):
        return judge_observations(spec, [], {"kind": "answer", "value": answer}, student=student).passed

    ada, grace = M.explorer_target("ada"), M.explorer_target("grace")
    assert ada != grace  # two students, two right answers
    assert verdict(ada, "ada") and verdict(grace, "grace")
    assert not verdict(ada, "grace") and not verdict(grace, "ada")
    # The widget draws the set of whoever is working, so each records their own target.
    for student, target in (("ada", ada), ("grace", grace)):
        monkeypatch.setenv("COURSE_STUDENT", student)
        ex = ThresholdExplorer()
        ex.threshold.value = target[0]
        ex.record_button.click()
        assert ex.answer == target


def test_explorer_with_images_shows_thumbnails():
    from course_lib.data.pascal import get_pascal_2007
    from course_lib.widgets.multilabel import ThresholdExplorer

    path = get_pascal_2007("ci")
    items = sorted((path / "train").glob("*.jpg"))[:3]
    p = torch.tensor([[0.45, 0.1], [0.9, 0.2], [0.3, 0.48]])
    t = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    ex = ThresholdExplorer(p, t, ["cat", "dog"], items=items)
    ex.threshold.value = 0.4
    assert ex.flipped() == [0, 2] and ex.flips.value.count("data:image/png;base64") == 2


# ------------------------------------------------------------------------------ grading the lesson

@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    # grading.personalised hands the solution in with each student's own widget answer (Spec.answer_for).
    return lesson_class(tmp_path_factory, LESSON, "binary_cross_entropy", SEED_BCE)


def test_grading_the_lesson(graded):
    exercises = {"one_hot": 1, "binary_cross_entropy": 2, "accuracy_multi": 2, "best_threshold": 2,
                 "chosen_threshold": 1, "train_multilabel": 5}
    check_lesson_class(graded, exercises, "binary_cross_entropy", "torch.where branches swapped")


# ------------------------------------------------------------------------------ capstone

@pytest.fixture(scope="module")
def capstone():
    """The capstone's hidden case on seeds 1-3 (ci sizes), and the reference's verdict on each."""
    from course_lib.checks import hidden_cases, judge_observations, observe_cases
    from course_lib.config import using_profile

    spec = get_spec("train_multilabel")
    with using_profile("ci"):
        cases = {seed: hidden_cases(spec, seed, profile="ci") for seed in (1, 2, 3)}
        verdicts = {seed: judge_observations(spec, c, observe_cases(spec, M.train_multilabel, c), profile="ci")
                    for seed, c in cases.items()}
    return spec, cases, verdicts


def _judged(spec, cases, answer):
    from course_lib.checks import judge_observations, to_portable

    observed = {"kind": "function", "observations": [to_portable(answer)], "device": "cpu", "devices": [["cpu"]]}
    return judge_observations(spec, cases, observed, profile="ci")


def test_capstone_held_out_labels_never_reach_the_student(capstone):
    spec, cases, _ = capstone
    case = cases[1][0]
    train, files = case.args
    held = files[0].parent
    # Only images where the held-out files are: the maker's csv and json went with its folder, and no build manifest
    # is left anywhere (its seed would give the labels away).
    assert {p.suffix for p in held.iterdir()} == {".jpg"} and len(files) == M.capstone_settings("ci")["n_heldout"]
    assert not (held.parent / "made").exists() and not list(held.parent.rglob(".course_manifest.json"))
    assert case.secret.shape == (len(files), 20) and set(case.secret.unique().tolist()) == {0.0, 1.0}
    assert (train / "train.csv").exists() and case.kwargs == {}


def test_capstone_reference_lands_in_the_top_band_on_three_seeds(capstone):
    _, _, verdicts = capstone
    for seed, v in verdicts.items():
        assert v.passed and v.share == 1.0, (seed, v.message)


def test_capstone_constant_untrained_and_logits_land_lower(capstone):
    from fastai.learner import Learner

    spec, cases, _ = capstone
    c = cases[1]
    path, files = c[0].args
    by_name = {m.name: m for m in spec.mistakes}
    # A constant answer (how common each class is) earns nothing, and is named.
    v = _judged(spec, c, by_name["constant"].impl(path, files))
    assert v.share == 0 and v.mistake == "constant"
    # An untrained model, with a threshold chosen on its validation rows: at most the baseline, nothing.
    s = M.capstone_settings("ci")
    dls = M.pascal_dataloaders(path, s["size"], s["batch_size"])
    learn = Learner(dls, M.presence_cnn(s["width"]))
    with learn.no_bar():
        preds, targs = learn.get_preds()
        thresh, _ = M.best_threshold(preds, targs, M.CAPSTONE_THRESHOLDS)
        probs, _ = learn.get_preds(dl=dls.test_dl(files))
    v = _judged(spec, c, (probs.as_subclass(torch.Tensor), thresh))
    assert v.share < 0.25, v.message
    # Logits instead of probabilities: rejected before any band, and named.
    v = _judged(spec, c, (torch.logit(probs.as_subclass(torch.Tensor).clamp(1e-4, 1 - 1e-4)), thresh))
    assert v.share <= 0 and v.mistake == "logits", v.message
    # The seed's swapped BCE, trained with the reference's recipe, lands lower and is named: tests/test_checks.py's
    # test_every_known_mistake_is_diagnosed_as_itself trains it on the hidden case.
