"""Lesson 02_transfer_learning: references, diagnoses, the freezing explorer, and grading the lesson."""
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from torchvision import models

import course_lib
from course_lib import checks, transfer
from course_lib import transfer_checks as tc

from grading import lesson_class

LESSON = "02_transfer_learning"


@pytest.fixture(autouse=True)
def _ci():
    course_lib.setup("ci", quiet=True)


def _spec(sid):
    return checks.registry()[sid]


# ------------------------------------------------------------------------------ references

def test_freezing_a_real_resnet_then_replacing_its_head_leaves_only_the_head():
    model = models.resnet18()
    transfer.set_parameter_requires_grad(model, False)
    assert all(p.requires_grad for p in model.parameters())
    transfer.set_parameter_requires_grad(model, True)
    assert not any(p.requires_grad for p in model.parameters())
    out = transfer.replace_head(model, 17)
    assert out is model and model.fc.in_features == 512 and model.fc.out_features == 17
    trainable = transfer.params_to_update(model)
    assert trainable == [model.fc.weight, model.fc.bias]
    assert transfer.count_trainable(model) == 512 * 17 + 17
    assert model(torch.zeros(2, 3, 64, 64)).shape == (2, 17)


def test_replace_head_reads_the_width_of_deeper_resnets():
    model = transfer.replace_head(models.resnet50(), 5)
    assert model.fc.in_features == 2048 and model(torch.zeros(1, 3, 64, 64)).shape == (1, 5)


def test_count_trainable_matches_numel_over_random_freezing():
    for seed in range(5):
        model = tc.tiny_resnet(seed, frozen_share=0.5)
        want = sum(p.numel() for p in model.parameters() if p.requires_grad)
        assert transfer.count_trainable(model) == want
        trainable = [id(p) for p in model.parameters() if p.requires_grad]
        assert [id(p) for p in transfer.params_to_update(model)] == trainable


def _toy_world(seed=0):
    torch.manual_seed(seed)
    x = torch.randn(64, 5)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
    dls = {"train": DataLoader(TensorDataset(x[:48], y[:48]), batch_size=8, shuffle=True),
           "valid": DataLoader(TensorDataset(x[48:], y[48:]), batch_size=8)}
    model = nn.Sequential(nn.Linear(5, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 3))
    return model, dls


def _accuracy(model, dl):
    model.eval()
    with torch.no_grad():
        return sum((model(x).argmax(1) == y).sum().item() for x, y in dl) / len(dl.dataset)


def test_train_model_returns_the_best_epoch_and_saves_it(tmp_path):
    model, dls = _toy_world()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)  # large on purpose: accuracy goes up and down
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.5)
    ckpt = tmp_path / "best.pth"
    model, hist = transfer.train_model(model, dls, nn.CrossEntropyLoss(), opt, sched, num_epochs=8, checkpoint=ckpt)
    assert set(hist) == set(transfer.HISTORY_KEYS) and all(len(v) == 8 for v in hist.values())
    assert hist["lr"][:4] == [0.5, 0.5, 0.5, 0.25]
    assert all(isinstance(v, float) for v in hist["valid_acc"])
    # The returned model is the best epoch: re-measuring it gives the best validation accuracy.
    assert _accuracy(model, dls["valid"]) == pytest.approx(max(hist["valid_acc"]))
    fresh, _ = _toy_world(1)
    assert transfer.load_checkpoint(ckpt, fresh) == pytest.approx(max(hist["valid_acc"]))
    assert _accuracy(fresh, dls["valid"]) == pytest.approx(max(hist["valid_acc"]))


def test_load_checkpoint_says_what_to_do_when_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="run the training cell"):
        transfer.load_checkpoint(tmp_path / "nope.pth", nn.Linear(2, 2))


def test_groups_cover_every_resnet18_parameter():
    model = transfer.question_model()
    by = transfer.trainable_by_group(model)
    assert set(by) == set(transfer.RESNET_GROUPS)
    assert sum(total for _, total in by.values()) == sum(p.numel() for p in model.parameters())
    transfer.freeze_groups(model, ["layer4", "fc"])
    assert transfer.count_trainable(model) == by["layer4"][1] + by["fc"][1]
    grads = transfer.gradient_norms(model, size=32)
    assert grads["layer4"] > 0 and grads["fc"] > 0 and grads["layer1"] == 0 and grads["stem"] == 0
    with pytest.raises(ValueError, match="unknown groups"):
        transfer.freeze_groups(model, ["layer5"])


def test_settings_per_profile():
    ci, cpu = transfer.settings("ci"), transfer.settings("cpu")
    assert ci["pretrain"]["steps"] < cpu["pretrain"]["steps"]
    assert cpu["compare_epochs"] >= ci["compare_epochs"]
    ci["pretrain"]["steps"] = 0  # a copy: the table itself is untouched
    assert transfer.settings("ci")["pretrain"]["steps"] > 0


def test_fastai_learner_groups_follow_freeze_to():
    from fastai.vision.all import DataLoaders

    dls = DataLoaders.from_dsets(TensorDataset(torch.zeros(4, 3, 32, 32), torch.zeros(4).long()),
                                 TensorDataset(torch.zeros(4, 3, 32, 32), torch.zeros(4).long()), bs=2)
    learn = transfer.fastai_learner(dls, lambda: models.resnet18(num_classes=21), 4,
                                   loss_func=nn.CrossEntropyLoss())
    assert len(learn.opt.param_groups) == 3
    frozen = transfer.count_trainable(learn.model)
    learn.freeze_to(-2)
    middle = transfer.count_trainable(learn.model)
    learn.unfreeze()
    everything = transfer.count_trainable(learn.model)
    assert frozen < middle < everything == sum(p.numel() for p in learn.model.parameters())


# ------------------------------------------------------------------------------ checks and diagnoses

@pytest.mark.parametrize("sid", ["set_parameter_requires_grad", "replace_head", "params_to_update",
                                 "count_trainable", "train_model"])
def test_references_pass_their_own_hidden_checks(sid):
    assert checks.run_check(_spec(sid), getattr(transfer, sid), hidden=True).passed


def test_a_live_state_dict_is_caught_as_keeping_the_last_epoch():
    result = checks.run_check(_spec("train_model"), tc._train_variant(live_state=True))
    assert not result.passed and "copy.deepcopy(model.state_dict())" in result.message


def test_hard_coded_answers_fail():
    assert not checks.run_check(_spec("count_trainable"), lambda model: 1636).passed
    assert not checks.run_check(_spec("replace_head"), lambda model, n: transfer.replace_head(model, 10)).passed


def test_train_model_without_scheduler_steps_or_with_too_many_is_explained():
    def per_batch_scheduler(model, dataloaders, criterion, optimizer, scheduler=None, num_epochs=1):
        for _ in range(len(dataloaders["train"]) - 1):
            scheduler.step()
        return transfer.train_model(model, dataloaders, criterion, optimizer, scheduler, num_epochs)

    result = checks.run_check(_spec("train_model"), per_batch_scheduler)
    assert not result.passed and "scheduler.step() was called" in result.message


def test_train_model_that_prints_does_not_flood_the_check(capsys):
    def chatty(*args, **kwargs):
        print("epoch line " * 10)
        return transfer.train_model(*args, **kwargs)

    checks.check("train_model", chatty)
    out = capsys.readouterr().out
    assert "epoch line" not in out and "✓ train_model" in out


def test_in_place_checks_give_each_run_a_fresh_model():
    seen = []

    def spy(model, feature_extracting):
        seen.append(getattr(model, "seen_before", False))
        model.seen_before = True
        transfer.set_parameter_requires_grad(model, feature_extracting)

    assert checks.run_check(_spec("set_parameter_requires_grad"), spy).passed
    assert seen and not any(seen)  # never a model the reference or an earlier case already changed


# ------------------------------------------------------------------------------ the widget

def _over_by_one_stage(target):
    """The target's parts and the stage just before them: one stage more than the budget allows."""
    return [transfer.RESNET_GROUPS[-len(target["train"]) - 1], *target["train"]]


def test_explorer_asks_the_students_own_question_and_records_a_gradable_answer(monkeypatch):
    from course_lib.widgets.transfer import FreezingExplorer

    monkeypatch.setenv("COURSE_STUDENT", "alice")
    question, want = transfer.freeze_question("alice"), transfer.freeze_target("alice")
    ex = FreezingExplorer(image_size=32)
    assert ex.question == question and ex.model.fc.out_features == question["classes"]
    assert f"{question['budget']:,}" in ex.widget.children[0].value
    sizes = transfer.group_sizes(question["classes"])
    assert ex.chosen == ["fc"] and f"trainable:</b> {sizes['fc']:,}" in ex.info.value
    first_png = ex.plot.value
    for group in want["train"]:
        ex.boxes[group].value = True
    assert ex.chosen == want["train"] and f"{want['trainable']:,}" in ex.info.value and "within it" in ex.info.value
    assert ex.plot.value != first_png
    ex.record_button.click()
    assert ex.answer == want
    assert f"freeze_choice = {want!r}" in ex.recorded.value
    assert checks.run_check(_spec("freeze_choice"), ex.answer).passed
    ex.boxes[_over_by_one_stage(want)[0]].value = True
    assert "over it" in ex.info.value
    ex.record_button.click()
    result = checks.run_check(_spec("freeze_choice"), ex.answer)
    assert not result.passed and "over your budget" in result.message


def test_every_question_has_one_right_run_of_last_stages():
    for k in range(40):
        question, target = transfer.freeze_question(f"student{k}"), transfer.freeze_target(f"student{k}")
        sizes = transfer.group_sizes(question["classes"])
        assert target["train"][-1] == "fc" and 2 <= len(target["train"]) <= 4
        assert target["trainable"] == sum(sizes[g] for g in target["train"]) <= question["budget"]
        assert sum(sizes[g] for g in _over_by_one_stage(target)) > question["budget"]


def test_two_students_get_different_right_answers_each_judged_against_their_own(monkeypatch):
    from course_lib.checks import judge_observations

    spec = _spec("freeze_choice")
    answers = {s: transfer.freeze_target(s) for s in ("alice", "bob", "carol", "dave")}
    assert len({repr(a) for a in answers.values()}) == len(answers)
    assert len({len(a["train"]) for a in answers.values()}) > 1  # the parts differ, not only the counts
    for student in answers:
        for other, theirs in answers.items():
            verdict = judge_observations(spec, [], {"kind": "answer", "value": theirs}, student=student)
            assert verdict.passed == (other == student), (student, other, verdict.message)
    # The self-check in a kernel judges against the kernel's student.
    monkeypatch.setenv("COURSE_STUDENT", "bob")
    assert checks.run_check(spec, answers["bob"]).passed and not checks.run_check(spec, answers["alice"]).passed


def test_wrong_choices_are_told_what_differs_without_the_answer(monkeypatch):
    monkeypatch.setenv("COURSE_STUDENT", "alice")
    spec, want = _spec("freeze_choice"), transfer.freeze_target("alice")
    sizes = transfer.group_sizes(transfer.freeze_question("alice")["classes"])

    def message(train):
        return checks.run_check(spec, {"train": train, "trainable": sum(sizes[g] for g in train)}).message

    assert "room for more" in message(["fc"])
    assert "cannot come pretrained" in message(want["train"][:-1])
    assert "every stage after it" in message(["layer1", "fc"])
    result = checks.run_check(spec, {"train": want["train"], "trainable": want["trainable"] + 1000})
    assert not result.passed and "record it with the explorer" in result.message
    assert not checks.run_check(spec, "layer4 and fc").passed


# ------------------------------------------------------------------------------ the capstone

@pytest.fixture(scope="module")
def capstone_cases(tmp_path_factory):
    """Three held-out folders drawn as the grader draws them (ci sizes), each with its labels in ``secret``."""
    course_lib.setup("ci", quiet=True)
    spec = _spec("classify_flowers")
    return [checks.hidden_cases(spec, seed, folder=tmp_path_factory.mktemp(f"capstone{seed}"), profile="ci")[0]
            for seed in (1, 2, 3)]


def _graded(case, got):
    """The grader's verdict on predictions ``got``: observed in a process that never saw the labels."""
    from course_lib.checks import judge_observations

    observed = {"portable": True, "kind": "function", "observations": [checks.to_portable(got)], "device": "cpu",
                "devices": [[]], "probes": [{}]}
    return judge_observations(_spec("classify_flowers"), [case], observed, profile="ci")


def test_the_held_out_photos_travel_without_their_labels(capstone_cases):
    for case in capstone_cases:
        train, images = case.args
        files = sorted(images.glob("*.jpg"))
        assert len(files) == len(case.secret) == 6 * transfer.settings("ci")["heldout_per_class"]
        assert (train / "train").is_dir() and not any((images / c).exists() for c in ("train", "valid", "1"))
        assert list(case.secret) != sorted(case.secret)  # the names' order says nothing about the classes
        assert not case.kwargs and case.secret is not None


def test_the_reference_lands_in_the_top_band_on_three_seeds(capstone_cases):
    spec = _spec("classify_flowers")
    for case in capstone_cases:
        got = tc._reference_once(*case.args)  # the mistakes below reuse this training
        verdict = _graded(case, got)
        assert verdict.passed and verdict.fraction == 1.0, verdict.message
        assert spec.bands.fraction(spec.measure(case, got), "ci")[1] == 0


def test_an_untrained_model_and_each_known_mistake_land_lower(capstone_cases):
    from PIL import Image

    spec = _spec("classify_flowers")
    for case in capstone_cases:
        train, images = case.args
        torch.manual_seed(0)
        untrained = transfer.replace_head(transfer.backbone(progress=False), 6)
        _, valid_tf = transfer.flower_transforms(transfer.settings("ci")["capstone"]["size"])
        photos = torch.stack([valid_tf(Image.open(f).convert("RGB")) for f in sorted(images.glob("*.jpg"))])
        verdict = _graded(case, transfer.predict(untrained, photos).tolist())
        assert not verdict.passed and verdict.fraction < 1.0, verdict.message
        for mistake in spec.mistakes:
            verdict = _graded(case, mistake.impl(train, images))
            assert not verdict.passed and verdict.share < 1.0, (mistake.name, verdict.message)
            assert verdict.mistake == mistake.name and mistake.message in verdict.message, verdict.message
        constant = _graded(case, [0] * len(case.secret))
        assert constant.share == 0.0, constant.message  # a constant answer earns nothing


# ------------------------------------------------------------------------------ grading the lesson

WRONG_TRAIN = '''import copy


def train_model(model, dataloaders, criterion, optimizer, scheduler=None, num_epochs=1):
    history = {"train_loss": [], "train_acc": [], "valid_loss": [], "valid_acc": [], "lr": []}
    for epoch in range(num_epochs):
        history["lr"].append(optimizer.param_groups[0]["lr"])
        for phase in ("train", "valid"):
            model.train(phase == "train")
            total, correct, seen = 0.0, 0, 0
            for x, y in dataloaders[phase]:
                with torch.set_grad_enabled(phase == "train"):
                    out = model(x)
                    loss = criterion(out, y)
                if phase == "train":
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
                total += loss.item() * len(x)
                correct += (out.argmax(1) == y).sum().item()
                seen += len(x)
            history[phase + "_loss"].append(total / seen)
            history[phase + "_acc"].append(correct / seen)
        if scheduler is not None:
            scheduler.step()
    return model, history
'''


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    # tests/grading.py hands each student's notebook in with their own widget answer (Spec.answer_for).
    return lesson_class(tmp_path_factory, LESSON, "train_model", WRONG_TRAIN)


def test_grading_the_lesson(graded):
    """What tests/grading.py's check_lesson_class holds, with the written answer waiting for a person."""
    auto = {"set_parameter_requires_grad": 1, "replace_head": 1, "params_to_update": 1, "count_trainable": 1,
            "freeze_choice": 1, "train_model": 3, "classify_flowers": 5}
    written = "written_validation_role"
    full = sum(auto.values()) + 1
    assert graded.returncode == 0, graded.stderr[-3000:]
    for student in ("alice", "bob", "carol"):
        assert {k: float(r["max_score"]) for k, r in graded.by[student].items()} == {**auto, written: 1.0}
    assert all(graded.by["alice"][k]["status"] == "passed" for k in auto) and graded.total("alice") == full - 1
    assert graded.by["alice"][written]["status"] == graded.by["carol"][written]["status"] == "to grade"
    assert graded.totals["alice"]["status"] == "ok"
    assert "top-1 accuracy on held-out data" in graded.page("alice")
    assert graded.total("bob") == 0 and {r["status"] for r in graded.by["bob"].values()} <= {"failed", "error"}
    page = graded.page("bob")
    assert f"0 / {full:g} points" in page and "not implemented yet" in page
    wrong = graded.by["carol"]["train_model"]
    assert wrong["status"] == "failed" and float(wrong["score"]) == 0
    assert graded.by["carol"]["classify_flowers"]["status"] == "failed"  # left unanswered (tests/grading.py)
    assert graded.total("carol") == full - 1 - auto["train_model"] - auto["classify_flowers"]
    assert "the weights of the last epoch" in graded.page("carol")
