"""course_lib.fill_level: the data, the model, the loop, the checkpoints, prediction."""
import numpy as np
import pytest
import torch

from course_lib import fill_level as fl


@pytest.mark.parametrize("level,size,rows",
                         [(0.47, 900, 423), (0.76, 900, 684), (0.0, 10, 0), (0.999, 10, 9), (0.4999, 900, 449)])
def test_image_matches_the_seed_recipe(level, size, rows):
    img = fl.make_fill_image(level, size)
    assert img.shape == (size, size, 3) and img.dtype == np.uint8
    white = (img == 255).all(axis=(1, 2))
    assert white.sum() == rows and white[:rows].all() and (img[rows:] == 0).all()


def test_batched_maker_equals_single_images():
    levels = torch.rand(20, generator=torch.Generator().manual_seed(0))
    levels[0], levels[1] = 0.5, 1 / 3  # exact row boundaries, where float rounding could differ
    for size in (7, 32, 48):
        want = torch.stack([fl.to_input(fl.make_fill_image(float(lv), size)) for lv in levels])
        assert torch.allclose(fl.make_fill_batch(levels, size), want, atol=1e-6)


def test_dataset_and_loader():
    ds = fl.FillLevelDataset(10, 16, seed=1)
    x, y = ds[3]
    assert x.shape == (3, 16, 16) and y.dtype == torch.float32
    assert np.array_equal(ds.levels, fl.FillLevelDataset(10, 16, seed=1).levels)
    xb, yb = next(iter(fl.fill_dataloader(10, 16, batch_size=4, shuffle=False)))
    assert xb.shape == (4, 3, 16, 16) and yb.shape == (4,)


def test_load_batch_shapes():
    x, y = fl.load_batch(5, 12)
    assert x.shape == (5, 3, 12, 12) and y.shape == (5,) and x.dtype == y.dtype == torch.float32


def test_model_has_one_output_and_offline_message(capsys):
    m = fl.build_fill_model(pretrained=True)
    assert "no ImageNet weights in the torch cache" in capsys.readouterr().out
    assert m(torch.zeros(2, 3, 48, 48)).shape == (2, 1)


def test_cached_imagenet_weights_are_used(tmp_path, monkeypatch, capsys):
    import torchvision

    from course_lib import models

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    weights = torchvision.models.ResNet18_Weights.DEFAULT
    (tmp_path / "checkpoints").mkdir()
    fake = torchvision.models.resnet18(weights=None)
    torch.save(fake.state_dict(), tmp_path / "checkpoints" / weights.url.rsplit("/", 1)[-1])
    m = models.resnet("resnet18", pretrained=True)
    assert "using cached ImageNet weights" in capsys.readouterr().out
    assert torch.equal(m.conv1.weight, fake.conv1.weight)


def test_training_learns_and_checkpoints_resume(tmp_path):
    torch.manual_seed(0)
    model = fl.build_fill_model()
    ckpt = tmp_path / "ck.pth"
    hist = fl.train_fill_model(model, steps=40, batch_size=16, size=32, val_n=64, eval_every=20,
                              checkpoint=ckpt, checkpoint_every=20, progress=False)
    assert ckpt.exists() and not ckpt.with_name("ck.pth.tmp").exists()
    assert len(hist.train_loss) == 40 and hist.val_steps == [20, 40]
    # Predicting the mean level (0.5) scores an MAE of 0.25: the model must beat that.
    assert hist.val_mae[-1] < 0.25
    assert np.mean(hist.train_loss[-5:]) < np.mean(hist.train_loss[:5])
    assert torch.load(ckpt, weights_only=False)["step"] == 40
    # Resuming a finished run does no more steps and keeps the history.
    again = fl.train_fill_model(model, steps=40, batch_size=16, size=32, checkpoint=ckpt, resume=True, progress=False)
    assert again.steps == hist.steps
    # Resuming towards a later step continues the same history.
    more = fl.train_fill_model(model, steps=43, batch_size=16, size=32, val_n=64, eval_every=20, checkpoint=ckpt,
                              resume=True, progress=False)
    assert more.steps == list(range(1, 44)) and more.val_steps == [20, 40, 43]


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    ckpt = tmp_path / "ck.pth"
    fl.save_atomic({"step": 1}, ckpt)

    def broken_save(obj, f, *a, **k):
        open(f, "wb").write(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError):
        fl.save_atomic({"step": 2}, ckpt)
    monkeypatch.undo()
    assert torch.load(ckpt, weights_only=False)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["ck.pth"]  # the half-written temporary file is gone


def test_predict_fill_restores_mode_and_uses_no_grad():
    model = fl.build_fill_model().train()
    p = fl.predict_fill(model, fl.make_fill_image(0.3, 900), size=32)
    assert isinstance(p, float) and 0 <= p <= 1
    assert model.training
    assert all(q.grad is None for q in model.parameters())


# ------------------------------------------------------------------ what the instructions promise, graded as said

from course_lib import checks  # noqa: E402
from course_lib.checks import get_spec, run_check  # noqa: E402


def test_a_loss_cut_from_the_graph_loses_its_points_by_name():
    def detached(pred, target):
        loss = (pred.reshape(-1) - target).abs().mean()
        return torch.tensor(loss.item())

    result = run_check(get_spec("fill_l1_loss"), detached, hidden=True)
    assert not result.passed and result.mistake == "contract:differentiable", result.message
    assert "Keep it differentiable" in result.message


def test_a_loss_for_column_predictions_only_loses_its_points():
    result = run_check(get_spec("fill_l1_loss"), lambda pred, target: (pred[:, 0] - target).abs().mean(), hidden=True)
    assert not result.passed and "pred [" in result.message and "IndexError" in result.message


def test_predictors_that_break_a_promise_lose_their_points_by_name():
    def left_in_eval(model, image, size=None):
        model.eval()
        with torch.no_grad():
            out = model(fl.to_input(image, size)[None].to(next(model.parameters()).device))
        return float(out.reshape(-1)[0].clamp(0, 1))

    def unclamped(model, image, size=None):
        was = model.training
        model.eval()
        with torch.no_grad():
            out = model(fl.to_input(image, size)[None].to(next(model.parameters()).device))
        model.train(was)
        return float(out.reshape(-1)[0])

    def sizeless(model, image, size=None):
        return fl.predict_fill(model, image)

    spec = get_spec("predict_fill")
    for fn, named in ((left_in_eval, "contract:mode"), (unclamped, "contract:range"), (sizeless, "ignores_size")):
        result = run_check(spec, fn, hidden=True)
        assert not result.passed and result.mistake == named, (named, result.message)


def test_any_head_that_maps_512_features_to_one_output_is_right():
    import torchvision
    from torch import nn

    def dropout_head():
        model = torchvision.models.resnet18(weights=None)
        model.fc = nn.Sequential(nn.Dropout(0.2), nn.Linear(512, 1))
        return model

    assert run_check(get_spec("build_fill_model"), dropout_head, hidden=True).passed

    def frozen():
        model = dropout_head()
        for p in model.parameters():
            p.requires_grad_(False)
        return model

    result = run_check(get_spec("build_fill_model"), frozen, hidden=True)
    assert not result.passed and "do not train" in result.message


# ------------------------------------------------------------------ the widget's target is the student's own

def test_each_student_has_a_target_and_is_judged_against_it():
    from course_lib.widgets.fill_level import FillLevelExplorer

    spec = get_spec("same_image_levels")

    def right_answer(student):
        level, size = fl.same_image_target(student)
        rows = int(level * size)
        # Two levels well inside the target's step: rows/size is its first level, (rows+1)/size the next step's.
        low, high = (rows + 0.1) / size, (rows + 0.9) / size
        return (round(low, 3), round(high, 3), size)

    answers = {s: right_answer(s) for s in ("alice", "bob")}
    assert fl.same_image_target("alice") != fl.same_image_target("bob")
    assert answers["alice"] != answers["bob"]
    for student, answer in answers.items():
        other = "bob" if student == "alice" else "alice"
        assert checks.judge_observations(spec, [], {"kind": "answer", "value": answer}, student=student).passed
        assert not checks.judge_observations(spec, [], {"kind": "answer", "value": answer}, student=other).passed
    # The explorer shows each student their own target, and asks nothing of anyone else's.
    assert FillLevelExplorer(student="alice").target == fl.same_image_target("alice")
    assert f"{fl.same_image_target('bob')[1]}" in FillLevelExplorer(student="bob").task.value


def test_the_widget_answer_must_be_the_image_of_the_target():
    spec = get_spec("same_image_levels")
    level, size = fl.same_image_target("alice")
    rows = int(level * size)
    other_step = ((rows + 2) % size + 0.1) / size, ((rows + 2) % size + 0.9) / size
    verdict = checks.judge_observations(spec, [], {"kind": "answer", "value": (*other_step, size)}, student="alice")
    assert not verdict.passed and "not the image of your target" in verdict.message


# ------------------------------------------------------------------ the capstone: bands on held-out data

CAPSTONE = get_spec("train_fill")


def _capstone(fn, seed):
    cases = checks.hidden_cases(CAPSTONE, seed, profile="ci")
    return checks.judge_observations(CAPSTONE, cases, checks.observe_cases(CAPSTONE, fn, cases, raw=True),
                                     profile="ci")


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_reference_loop_reaches_the_top_band_in_ci(seed):
    result = _capstone(fl.train_fill, seed)
    assert result.passed and result.share == 1.0, result.message


def test_an_untrained_model_and_a_constant_land_in_the_lowest_band():
    case = checks.hidden_cases(CAPSTONE, 5, profile="ci")[0]
    torch.manual_seed(0)
    model = fl.build_fill_model().eval()
    with torch.no_grad():
        untrained = model(torch.stack([fl.to_input(img) for img in case.args[0]])).reshape(-1).clamp(0, 1)
    for pred in (untrained, torch.full((len(case.secret),), 0.5), torch.as_tensor(case.secret).mean().expand(
            len(case.secret))):
        mae = CAPSTONE.measure(case, {"pred": pred})
        assert CAPSTONE.bands.fraction(mae, "ci") == (0.0, len(CAPSTONE.bands.fractions)), mae


# Each known mistake of the loop lands below the top band and is named: tests/test_checks.py's
# test_every_known_mistake_is_diagnosed_as_itself runs each one on the capstone's hidden case.
