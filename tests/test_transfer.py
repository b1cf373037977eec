"""Lesson 02_transfer_learning: references, diagnoses, the freezing explorer, and grading the lesson."""
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from torchvision import models

import course_lib
from course_lib import checks, transfer
from course_lib import transfer_checks as tc

from grading import check_lesson_class, lesson_class

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
        seen.append(all(p.requires_grad for p in model.parameters()))
        transfer.set_parameter_requires_grad(model, feature_extracting)

    assert checks.run_check(_spec("set_parameter_requires_grad"), spy).passed
    assert all(seen)  # never a model already frozen by the reference or an earlier case


# ------------------------------------------------------------------------------ the widget

def test_explorer_counts_groups_and_records_a_gradable_answer():
    from course_lib.widgets.transfer import FreezingExplorer

    ex = FreezingExplorer(image_size=32)
    assert ex.chosen == ["fc"] and "52,326" in ex.info.value
    first_png = ex.plot.value
    ex.boxes["layer4"].value = True
    assert ex.chosen == ["layer4", "fc"] and "8,446,054" in ex.info.value and ex.plot.value != first_png
    ex.record_button.click()
    assert ex.answer == {"train": ["layer4", "fc"], "trainable": 8446054}
    assert "freeze_choice = {'train': ['layer4', 'fc'], 'trainable': 8446054}" in ex.recorded.value
    assert checks.run_check(_spec("freeze_choice"), ex.answer).passed
    ex.boxes["layer3"].value = True
    ex.record_button.click()
    result = checks.run_check(_spec("freeze_choice"), ex.answer)
    assert not result.passed and "last block" in result.message


def test_a_typed_count_is_refused():
    result = checks.run_check(_spec("freeze_choice"), {"train": ["layer4", "fc"], "trainable": 8_400_000})
    assert not result.passed and "record it with the explorer" in result.message
    assert not checks.run_check(_spec("freeze_choice"), "layer4 and fc").passed


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
    return lesson_class(tmp_path_factory, LESSON, "train_model", WRONG_TRAIN)


def test_grading_the_lesson(graded):
    exercises = {"set_parameter_requires_grad": 1, "replace_head": 1, "params_to_update": 1, "count_trainable": 1,
                 "freeze_choice": 1, "train_model": 3}
    check_lesson_class(graded, exercises, "train_model", "the weights of the last epoch")
