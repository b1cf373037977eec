"""Check specs for lesson 02_transfer_learning.

Most of these exercises change a model in place, so their specs ``observe``: each run (the
student's function, the reference, every known mistake) gets a fresh tiny resnet and returns
what happened to it. The tiny resnets have random widths and head sizes, so an answer that
types in 512 or 1000 fails, and random freezing patterns, so one that guesses by name fails.

``train_model`` is checked with a scripted optimizer: each epoch's "training" sets weights
chosen in advance, so the validation accuracy of every epoch, and therefore which epoch is
the best, is known exactly, and a loop that keeps the last epoch (or a live ``state_dict``)
is caught. A probe layer records whether validation ran in eval mode without gradients, and the
optimizer whether each step found the gradient of its own batch alone.

Every exercise that takes a model also promises to hand it back in the mode it came in: the cases
pass models in training and in evaluation mode, and a flipped mode is named as the contract's breach.
``freeze_choice`` is judged against the student's own question (``transfer.freeze_target``), and the
capstone ``classify_flowers`` on new photos the grader draws, its labels kept in ``Case.secret``.
"""
from __future__ import annotations

import contextlib
import copy
import io
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from course_lib import transfer as ref
from course_lib.checks import Bands, Case, Clause, Mistake, Spec, case_dir, describe, output_shape

# ------------------------------------------------------------------ tiny resnets


class _Block(nn.Module):
    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Conv2d(c_in, c_out, 1, bias=False)

    def forward(self, x):
        return torch.relu(self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))) + self.shortcut(x))


class TinyResNet(nn.Module):
    """The same attribute names as torchvision's ResNet (``conv1`` ... ``layer4``, ``fc``), a few hundred weights
    wide."""

    # Made by the loop in __init__; named here for the type checker.
    layer1: nn.Sequential
    layer2: nn.Sequential
    layer3: nn.Sequential
    layer4: nn.Sequential

    def __init__(self, widths: tuple[int, ...], num_classes: int):  # five: the stem's, then layer1..layer4's
        super().__init__()
        self.conv1 = nn.Conv2d(3, widths[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(2)
        for i in range(4):
            setattr(self, f"layer{i + 1}", nn.Sequential(_Block(widths[i], widths[i + 1])))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[4], num_classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def tiny_resnet(seed: int, frozen_share: float = 0.0) -> TinyResNet:
    """A TinyResNet with widths and head size drawn from ``seed``, a ``frozen_share`` of its parameters frozen."""
    rng = np.random.default_rng(seed)
    widths = tuple(int(w) for w in rng.integers(2, 9, size=5))
    torch.manual_seed(seed)
    model = TinyResNet(widths, int(rng.integers(3, 40)))
    for p in model.parameters():
        p.requires_grad = bool(rng.random() >= frozen_share)
    return model


def _grad_flags(model: nn.Module) -> dict[str, bool]:
    return {name: p.requires_grad for name, p in model.named_parameters()}


def _device():
    from course_lib.config import current

    return current().device


def _modes(model: nn.Module, skip: str = "") -> list[bool]:
    """The train/eval flag of every module of ``model`` (those under ``skip``, a new head, left out)."""
    return [m.training for name, m in model.named_modules() if not (skip and name.startswith(skip))]


def _mode_word(training: bool) -> str:
    return "training" if training else "evaluation"


def _mode_message(case) -> str:
    came = _mode_word(case.kwargs["training"])
    return (f"the model came in {came} mode and went back in another one; the instructions say \"the model comes "
            "back in the mode it came in\". Nothing here needs model.train() or model.eval()")


MODE_TEXT = "the model comes back in the mode it came in"


def _mode_flipped(fn):
    """A known mistake for every exercise that takes a model: ``fn``, then the model's mode flipped."""

    def wrong(model, *args):
        out = fn(model, *args)
        model.train(not model.training)
        return out

    return wrong


MODE_MISTAKE_MESSAGE = ("your function changes the model's mode (train/eval). Leave it alone: whoever calls it "
                        "decides when the model trains and when it is evaluated.")


def _model_cases(rng, device, n, edges):
    """``edges`` (the cases every run starts with) as kwargs, then random ones: seed, frozen_share, mode."""
    out = []
    for i in range(n):
        if i < len(edges):
            extra = dict(edges[i])
        else:
            extra = dict(frozen_share=float(rng.choice([0.0, 1.0, rng.uniform(0.2, 0.9)])),
                         training=bool(rng.integers(2)))
        extra.setdefault("seed", int(rng.integers(1 << 30)))
        out.append(Case(kwargs=dict(device=str(device), **extra)))
    return out


def _share_label(share: float) -> str:
    return "nothing frozen" if share == 0 else "everything frozen" if share == 1 else f"{share:.0%} frozen"


def _fresh_model(k) -> TinyResNet:
    model = tiny_resnet(k["seed"], k["frozen_share"]).to(k["device"])
    model.train(k["training"])
    return model


def _weights(model: nn.Module, skip: str = "") -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if not (skip and n.startswith(skip))}


def _same_weights(before: dict[str, torch.Tensor], model: nn.Module, skip: str = "") -> bool:
    after = {n: p for n, p in model.named_parameters() if not (skip and n.startswith(skip))}
    return after.keys() == before.keys() and all(torch.equal(after[n].detach(), before[n]) for n in after)


# ------------------------------------------------------------------ set_parameter_requires_grad

def _freeze_cases(rng, device, n):
    # First the cases that tell the known mistakes apart: a fresh model frozen (in training mode, so that
    # model.eval() instead of freezing shows), left alone, and a half-frozen one that must stay half-frozen.
    edges = [dict(feature_extracting=True, frozen_share=0.0, training=True),
             dict(feature_extracting=False, frozen_share=0.0, training=False),
             dict(feature_extracting=False, frozen_share=0.5, training=True),
             dict(feature_extracting=True, frozen_share=0.5, training=False)]
    cases = _model_cases(rng, device, n, edges)
    out = []
    for i, c in enumerate(cases):
        k = dict(c.kwargs)
        k.setdefault("feature_extracting", bool(i % 2 == 0))
        out.append(Case(kwargs=k, label=f"feature_extracting={k['feature_extracting']}, "
                                         f"{_share_label(k['frozen_share'])}, {_mode_word(k['training'])} mode"))
    return out


def _observe_freeze(fn, case):
    k = case.kwargs
    model = _fresh_model(k)
    modes, weights = _modes(model), _weights(model)
    fn(model, k["feature_extracting"])
    return {"flags": _grad_flags(model), "weights_same": _same_weights(weights, model),
            "mode_kept": _modes(model) == modes}


def _freeze_judge(case, got, expected):
    if got == expected:  # also how a known mistake is recognised: the same observation
        return None
    fe = case.kwargs["feature_extracting"]
    have, want = got["flags"], expected["flags"]
    if have != want:
        still = [n for n, f in have.items() if f]
        if fe:
            return (f"with feature_extracting=True every parameter must end up frozen, but {len(still)} of "
                    f"{len(have)} still require grad (for example {still[0]!r})")
        frozen = [n for n in want if want[n] and not have.get(n)]
        thawed = [n for n in want if not want[n] and have.get(n)]
        if frozen:
            return (f"with feature_extracting=False the model must keep its flags, but {len(frozen)} trainable "
                    f"parameters were frozen (for example {frozen[0]!r})")
        return (f"with feature_extracting=False the model must keep its flags, but {len(thawed)} parameters that "
                f"were frozen before the call now require grad (for example {thawed[0]!r})")
    if not got["weights_same"]:
        return "the weights changed: freezing changes only which parameters require grad, never their values"
    if not got["mode_kept"]:
        return _mode_message(case)
    return f"the model is not what was expected: {describe(got)}"


def _freeze_only_fc(model, feature_extracting):
    if feature_extracting:
        for p in model.fc.parameters():
            p.requires_grad = False


def _freeze_weights_only(model, feature_extracting):
    if feature_extracting:
        for name, p in model.named_parameters():
            if name.endswith("weight"):
                p.requires_grad = False


def _freeze_with_method_name(model, feature_extracting):
    if feature_extracting:
        for p in model.parameters():
            p.requires_grad_ = False  # an attribute named like the method: freezes nothing


def _freeze_sets_flag_to_the_opposite(model, feature_extracting):
    for p in model.parameters():
        p.requires_grad = not feature_extracting


def _freeze_with_eval(model, feature_extracting):
    if feature_extracting:
        model.eval()


SET_PARAMETER_REQUIRES_GRAD = Spec(
    id="set_parameter_requires_grad",
    reference=ref.set_parameter_requires_grad,
    cases=_freeze_cases,
    observe=_observe_freeze,
    judge=_freeze_judge,
    mistakes=[
        Mistake("only fc", _freeze_only_fc,
                "you froze only the head. Feature extraction freezes the whole pretrained body: every "
                "parameter of the model; the new head is added (trainable) afterwards."),
        Mistake("weights only", _freeze_weights_only,
                "biases are parameters too (and so are BatchNorm's weight and bias): freeze every tensor in "
                "model.parameters(), not only those whose name ends in 'weight'."),
        Mistake("requires_grad_ attribute", _freeze_with_method_name,
                "nothing was frozen. Set the attribute `param.requires_grad = False` (or call the method "
                "`param.requires_grad_(False)`); assigning to `param.requires_grad_` only hides the method."),
        Mistake("flag set to the opposite", _freeze_sets_flag_to_the_opposite,
                "with feature_extracting=False your function unfreezes every parameter (requires_grad = "
                "not feature_extracting). False means \"leave the model alone\": a part frozen before must "
                "stay frozen, so touch the flags only when feature_extracting is true."),
        Mistake("eval instead of freezing", _freeze_with_eval,
                "model.eval() does not freeze anything: it switches BatchNorm and Dropout to their evaluation "
                "behaviour, and every parameter still gets gradients. Freezing is requires_grad = False."),
        Mistake("contract:mode:model", _mode_flipped(ref.set_parameter_requires_grad), MODE_MISTAKE_MESSAGE),
    ],
    contract=(
        Clause("behaviour", "with `feature_extracting` true, every parameter of `model` ends up frozen"),
        Clause("behaviour", "with `feature_extracting` false, every parameter keeps the flag it had"),
        Clause("behaviour", "the weights stay as they were"),
        Clause("mode", MODE_TEXT, arg="model"),
    ),
    hint="a frozen parameter is one whose requires_grad is False; touch nothing else.",
)


# ------------------------------------------------------------------ replace_head

def _head_cases(rng, device, n):
    # On the CPU even in hidden runs: a new nn.Linear is made on the CPU, and moving the model to
    # the GPU is the caller's job after the head is replaced, not replace_head's.
    edges = [dict(frozen_share=1.0, training=True), dict(frozen_share=0.0, training=False),
             dict(frozen_share=0.5, training=True)]
    out = []
    for c in _model_cases(rng, torch.device("cpu"), n, edges):
        k = dict(c.kwargs, num_classes=int(rng.integers(2, 120)))
        out.append(Case(kwargs=k, label=f"num_classes={k['num_classes']}, body {_share_label(k['frozen_share'])}, "
                                         f"{_mode_word(k['training'])} mode"))
    return out


def _observe_head(fn, case):
    k = case.kwargs
    model = _fresh_model(k)
    modes, weights, flags = _modes(model, "fc"), _weights(model, "fc."), _grad_flags(model)
    returned = fn(model, k["num_classes"])
    if not isinstance(returned, nn.Module):
        return {"returned": describe(returned)}
    fc = getattr(returned, "fc", None)
    head = [p.requires_grad for p in fc.parameters()] if isinstance(fc, nn.Module) else []
    body_flags = {n: f for n, f in _grad_flags(returned).items() if not n.startswith("fc.")}
    out: dict[str, Any] = {
        "returned": "model" if returned is model else "another module",
        "fc": type(fc).__name__,
        "head_trainable": bool(head) and all(head),
        "body_flags_same": body_flags == {n: f for n, f in flags.items() if not n.startswith("fc.")},
        "body_same": _same_weights(weights, returned, "fc."),
        "mode_kept": _modes(returned, "fc") == modes,  # a new layer starts in training mode: only the rest counts
    }
    if isinstance(fc, nn.Linear):
        out.update(in_features=fc.in_features, out_features=fc.out_features)
    out["logits"] = output_shape(returned, torch.zeros(2, 3, 16, 16))  # last: it switches the model to eval
    return out


def _head_judge(case, got, expected):
    if got == expected:  # also how a known mistake is recognised: the same observation
        return None
    n = case.kwargs["num_classes"]
    if "fc" not in got:
        return f"replace_head must return the model, got {got['returned']}"
    if got["returned"] != "model":
        return "replace_head returned another module: change the model it was given and return that model"
    if got["logits"] != expected["logits"]:
        if isinstance(got["logits"], str):
            return (f"a batch of images no longer goes through the model ({got['logits']}): the new head must take "
                    f"the {expected['in_features']} features this body gives")
        return f"a batch of 2 images gives logits of shape {got['logits']}, expected [2, {n}]"
    if got["fc"] != "Linear":
        return f"model.fc should be one new nn.Linear layer, got {got['fc']}"
    if not got["head_trainable"]:
        return "the new head is frozen: its parameters must require grad, or nothing will learn"
    if not got["body_flags_same"]:
        return ("replace_head changed which parameters of the body are frozen; leave the rest of the model as it "
                "is (freezing is set_parameter_requires_grad's job, before the head is replaced)")
    if not got["body_same"]:
        return "the body's weights changed: replace only model.fc, keep the pretrained layers as they are"
    if not got["mode_kept"]:
        return _mode_message(case)
    return f"the model is not what was expected: {describe(got)}"


def _head_512(model, num_classes):
    model.fc = nn.Linear(512, num_classes)
    return model


def _head_no_return(model, num_classes):
    model.fc = nn.Linear(model.fc.in_features, num_classes)


def _head_frozen(model, num_classes):
    model.fc = nn.Linear(model.fc.in_features, num_classes)
    ref.set_parameter_requires_grad(model, True)
    return model


def _head_kept_outputs(model, num_classes):
    model.fc = nn.Linear(model.fc.in_features, model.fc.out_features)
    return model


def _head_102(model, num_classes):
    model.fc = nn.Linear(model.fc.in_features, 102)
    return model


def _head_freezes_body(model, num_classes):
    ref.set_parameter_requires_grad(model, True)
    model.fc = nn.Linear(model.fc.in_features, num_classes)
    return model


def _head_unfreezes_body(model, num_classes):
    model.requires_grad_(True)
    model.fc = nn.Linear(model.fc.in_features, num_classes)
    return model


REPLACE_HEAD = Spec(
    id="replace_head",
    reference=ref.replace_head,
    cases=_head_cases,
    observe=_observe_head,
    judge=_head_judge,
    mistakes=[
        Mistake("typed 512", _head_512,
                "the head's input size is typed in. 512 is right for resnet18/34 only (2048 for resnet50): "
                "read it from the old head, which knows how many features the body gives."),
        Mistake("no return", _head_no_return, "you replaced the head but did not return the model."),
        Mistake("frozen head", _head_frozen,
                "the new head was frozen along with the body. Freeze first, then replace the head: a new "
                "layer requires grad by default."),
        Mistake("kept outputs", _head_kept_outputs,
                "the new head still has the old number of outputs; it needs num_classes outputs."),
        Mistake("typed 102", _head_102,
                "the number of classes is typed in (102, the real flower set's): use the num_classes "
                "argument, so that the same function serves any dataset."),
        Mistake("freezes the body", _head_freezes_body,
                "replace_head froze the body. Whether the body trains is the caller's choice (feature extraction "
                "or fine-tuning): replace the head and leave every other flag as it was."),
        Mistake("unfreezes the body", _head_unfreezes_body,
                "replace_head unfroze the body. Whether the body trains is the caller's choice: replace the "
                "head and leave every other flag as it was."),
        Mistake("contract:mode:model", _mode_flipped(ref.replace_head), MODE_MISTAKE_MESSAGE),
    ],
    contract=(
        Clause("behaviour", "`model.fc` becomes one new `nn.Linear` layer"),
        Clause("behaviour", "a batch of images `[N, 3, H, W]` gives logits `[N, num_classes]`"),
        Clause("behaviour", "the new head is trainable"),
        Clause("behaviour", "the rest of the model is left as it is"),
        Clause("mode", MODE_TEXT, arg="model"),
    ),
    hint="the old head knows how many features the body gives; a new layer is trainable as it is made.",
)


# ------------------------------------------------------------------ params_to_update / count_trainable

def _mixed_cases(rng, device, n):
    edges = [dict(frozen_share=0.0, training=True), dict(frozen_share=1.0, training=False),
             dict(frozen_share=0.5, training=True)]
    return [Case(kwargs=c.kwargs, label=f"{_share_label(c.kwargs['frozen_share'])}, "
                                        f"{_mode_word(c.kwargs['training'])} mode")
            for c in _model_cases(rng, device, n, edges)]


def _observe_params(fn, case):
    k = case.kwargs
    model = _fresh_model(k)
    modes = _modes(model)
    got = fn(model)
    out: dict[str, Any] = {"mode_kept": _modes(model) == modes, "is_list": isinstance(got, list)}
    try:
        items = list(got)
    except TypeError:
        return dict(out, error=f"expected a list of parameters, got {describe(got)}")
    names = {id(p): n for n, p in model.named_parameters()}
    if any(not isinstance(p, torch.Tensor) for p in items):
        kinds = sorted({type(p).__name__ for p in items if not isinstance(p, torch.Tensor)})
        return dict(out, error=f"expected parameters (tensors), got items of type {', '.join(kinds)}",
                    names=[p if isinstance(p, str) else None for p in items])
    if any(id(p) not in names for p in items):
        return dict(out, error="some items are not parameters of the model (copies or detached tensors?): the "
                               "optimizer must get the model's own parameters to change them")
    return dict(out, names=[names[id(p)] for p in items])


def _params_judge(case, got, expected):
    if got == expected:  # also how a known mistake is recognised: the same observation
        return None
    if "error" in got:
        return got["error"]
    want, have = expected["names"], got["names"]
    if have != want:
        missing = [n for n in want if n not in have]
        extra = [n for n in have if n not in want]
        if missing:
            return f"{len(missing)} trainable parameters are missing, for example {missing[0]!r}"
        if extra:
            return f"{len(extra)} frozen parameters are included, for example {extra[0]!r}"
        if len(have) != len(set(have)):
            return "some parameters appear twice"
        return "the parameters are not in model.parameters() order"
    if not got["is_list"]:
        return ("the right parameters, but not as a Python list: a generator or filter can be read only once "
                "(len() fails on it, and a second pass finds it empty)")
    if not got["mode_kept"]:
        return _mode_message(case)
    return f"the answer is not what was expected: {describe(got)}"


def _params_all(model):
    return list(model.parameters())


def _params_names(model):
    return [name for name, p in model.named_parameters() if p.requires_grad]


def _params_fc(model):
    return list(model.fc.parameters())


def _params_generator(model):
    return (p for p in model.parameters() if p.requires_grad)


PARAMS_TO_UPDATE = Spec(
    id="params_to_update",
    reference=ref.params_to_update,
    cases=_mixed_cases,
    observe=_observe_params,
    judge=_params_judge,
    mistakes=[
        Mistake("all", _params_all,
                "you returned every parameter. The optimizer would skip the frozen ones (they get no gradient), "
                "but this list is meant to say what trains: keep only the parameters that require grad."),
        Mistake("names", _params_names,
                "you returned the parameters' names. The optimizer needs the parameter tensors themselves."),
        Mistake("fc only", _params_fc,
                "you returned the head's parameters. Which parameters train is decided by requires_grad, "
                "not by the layer's name: after unfreezing, the body must be included too."),
        Mistake("generator", _params_generator,
                "you returned a generator. It is used up by the first loop over it: `len()` fails on it and an "
                "optimizer made from it a second time would get no parameters. Return a list."),
        Mistake("contract:mode:model", _mode_flipped(ref.params_to_update), MODE_MISTAKE_MESSAGE),
    ],
    contract=(
        Clause("behaviour", "a Python `list` of the model's parameters that require grad"),
        Clause("behaviour", "the parameter objects themselves"),
        Clause("behaviour", "in the order `model.parameters()` gives them"),
        Clause("mode", MODE_TEXT, arg="model"),
    ),
    hint="which parameters are trainable is written on each of them; keep the model's own order.",
)


def _observe_count(fn, case):
    k = case.kwargs
    model = _fresh_model(k)
    modes = _modes(model)
    got = fn(model)
    plain = isinstance(got, (int, float, np.integer, np.floating, torch.Tensor)) and \
        not (isinstance(got, torch.Tensor) and got.numel() > 1)
    return {"value": got if plain else describe(got), "plain": plain, "mode_kept": _modes(model) == modes}


def _count_judge(case, got, expected):
    value, want = got["value"], expected["value"]
    try:  # also how a known mistake is recognised: the same observation, down to the type
        if type(value) is type(want) and got == expected:
            return None
    except (RuntimeError, TypeError):
        pass
    if isinstance(value, torch.Tensor):
        return "expected a Python int, got a one-element tensor: call .item() on it, or sum p.numel() values"
    if not got["plain"]:
        return f"expected an int, got {value}"
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
        return f"expected a Python int, got {describe(value)}"
    if int(value) != want:
        return f"expected {want:,} trainable scalars, got {int(value):,}"
    if not got["mode_kept"]:
        return _mode_message(case)
    return None


def _count_tensors(model):
    return len([p for p in model.parameters() if p.requires_grad])


def _count_all(model):
    return sum(p.numel() for p in model.parameters())


def _count_state_dict(model):
    return sum(v.numel() for v in model.state_dict().values())


def _count_float(model):
    return float(sum(p.numel() for p in model.parameters() if p.requires_grad))


COUNT_TRAINABLE = Spec(
    id="count_trainable",
    reference=ref.count_trainable,
    cases=_mixed_cases,
    observe=_observe_count,
    judge=_count_judge,
    mistakes=[
        Mistake("tensors", _count_tensors,
                "you counted parameter tensors. Count the numbers inside them: a [512, 10] weight holds 5,120 "
                "scalars."),
        Mistake("all", _count_all,
                "you counted every parameter, frozen ones included; count only those that require grad."),
        Mistake("state_dict", _count_state_dict,
                "you counted the state_dict: it also holds buffers (BatchNorm's running statistics, which are "
                "not parameters) and ignores which parameters are frozen. Count the model's parameters that "
                "require grad."),
        Mistake("float", _count_float,
                "a count is a whole number: return it as a Python int, not a float."),
        Mistake("contract:mode:model", _mode_flipped(ref.count_trainable), MODE_MISTAKE_MESSAGE),
    ],
    contract=(
        Clause("behaviour", "the number of trainable scalars"),
        Clause("behaviour", "as a Python `int`"),
        Clause("mode", MODE_TEXT, arg="model"),
    ),
    hint="every number inside a parameter that requires grad counts once.",
)


# ------------------------------------------------------------------ train_model

N_FEATURES = 3  # plus one marker column that tells the probe which phase a batch comes from


class _Probe(nn.Module):
    """Records, for each forward pass, the phase of the batch and the model's mode then."""

    def __init__(self) -> None:
        super().__init__()
        self.log: list[tuple[str, bool, bool]] = []

    def forward(self, x):
        phase = "valid" if bool((x[:, -1] > 0.5).all()) else "train"
        self.log.append((phase, self.training, torch.is_grad_enabled()))
        return x[:, :-1]


class _ScriptedOptimizer(torch.optim.SGD):
    """An optimizer whose steps put the weights of epoch ``e`` in place, instead of descending.

    The weights of each epoch are chosen in advance, so each epoch's validation accuracy,
    and which epoch is the best, are known before the student's loop runs. Each step also
    notes whether the gradients it finds are those of the last backward pass alone, or
    still hold earlier batches' (gradients that were never zeroed).
    """

    def __init__(self, model: nn.Module, script: list[dict[str, torch.Tensor]], batches_per_epoch: int):
        super().__init__(model.parameters(), lr=0.1)
        self.model, self.script, self.per_epoch, self.steps, self.piled = model, script, batches_per_epoch, 0, 0
        self.fresh: dict[str, torch.Tensor] = {}
        for name, p in model.named_parameters():
            # A leaf's hook sees the gradient of one backward pass, before it is added to .grad.
            p.register_hook(lambda g, name=name: self.fresh.__setitem__(name, g.detach().clone()))

    @torch.no_grad()
    def step(self, closure=None):
        self.steps += 1
        if any(p.grad is not None and name in self.fresh and not torch.allclose(p.grad, self.fresh[name])
               for name, p in self.model.named_parameters()):
            self.piled += 1
        epoch = min((self.steps - 1) // self.per_epoch, len(self.script) - 1)
        for name, p in self.model.named_parameters():
            p.copy_(self.script[epoch][name])


class _CountingScheduler:
    def __init__(self, optimizer):
        self.optimizer, self.steps = optimizer, 0

    def step(self):
        self.steps += 1
        for g in self.optimizer.param_groups:
            g["lr"] *= 0.5


def _train_cases(rng, device, n):
    # First a run with a scheduler, then one without (scheduler=None must work and step nothing).
    edges: list[dict[str, Any]] = [dict(epochs=3, scheduler=True), dict(epochs=2, scheduler=False)]
    out = []
    for i in range(n):
        k: dict[str, Any] = dict(edges[i]) if i < len(edges) else \
            dict(epochs=int(rng.integers(2, 6)), scheduler=bool(rng.random() < 0.7))
        k.update(seed=int(rng.integers(1 << 30)), device=str(device))
        out.append(Case(kwargs=k, label=f"num_epochs={k['epochs']}, " + ("a scheduler" if k["scheduler"] else
                                                                           "scheduler=None")))
    return out


def _world(seed: int, epochs: int, device: str, scheduler: bool = True):
    """Model, dataloaders, optimizer, scheduler (or None) and the script for one train_model case."""
    rng = np.random.default_rng(seed)
    n_classes, n_train, n_valid, bs = 3, int(rng.integers(10, 20)), 12, 4
    xt = torch.tensor(rng.normal(size=(n_train, N_FEATURES)), dtype=torch.float32)
    xv = torch.tensor(rng.normal(size=(n_valid, N_FEATURES)), dtype=torch.float32)
    yt = torch.tensor(rng.integers(0, n_classes, n_train))
    yv = torch.tensor(rng.integers(0, n_classes, n_valid))
    mark = lambda x, v: torch.cat([x, torch.full((len(x), 1), float(v))], dim=1)  # noqa: E731
    torch.manual_seed(seed)
    model = nn.Sequential(_Probe(), nn.Linear(N_FEATURES, n_classes))
    # Weights for each epoch with distinct validation accuracies, the best one never last.
    by_acc: dict[int, dict[str, torch.Tensor]] = {}
    for _ in range(400):
        w = {"1.weight": torch.tensor(rng.normal(size=(n_classes, N_FEATURES)), dtype=torch.float32),
             "1.bias": torch.tensor(rng.normal(size=n_classes) * 0.1, dtype=torch.float32)}
        correct = int(((xv @ w["1.weight"].T + w["1.bias"]).argmax(1) == yv).sum())
        by_acc.setdefault(correct, w)
        if len(by_acc) >= epochs:
            break
    accs = sorted(by_acc)[-epochs:]
    order = list(rng.permutation(accs))
    best_at = int(rng.integers(0, epochs - 1))
    order.remove(max(accs))
    order.insert(best_at, max(accs))
    script = [by_acc[a] for a in order]
    model = model.to(device)
    script = [{k: v.to(device) for k, v in s.items()} for s in script]
    gen = torch.Generator().manual_seed(seed)
    dls = {"train": DataLoader(TensorDataset(mark(xt, 0), yt), batch_size=bs, shuffle=True, generator=gen),
           "valid": DataLoader(TensorDataset(mark(xv, 1), yv), batch_size=bs)}
    per_epoch = len(dls["train"])
    opt = _ScriptedOptimizer(model, script, per_epoch)
    return model, dls, opt, _CountingScheduler(opt) if scheduler else None, script, per_epoch


def _observe_train(fn, case):
    k = case.kwargs
    model, dls, opt, sched, script, per_epoch = _world(k["seed"], k["epochs"], k["device"], k["scheduler"])
    # The loop's own progress lines would bury the verdict under dozens of scripted epochs.
    with contextlib.redirect_stdout(io.StringIO()):
        # The optional arguments by keyword, as a caller who skips one would pass the next.
        got = fn(model, dls, nn.CrossEntropyLoss(), opt, scheduler=sched, num_epochs=k["epochs"])
    out = {"epochs": k["epochs"], "steps": opt.steps, "per_epoch": per_epoch,
           "sched_steps": sched.steps if sched is not None else 0, "piled": opt.piled, "log": list(model[0].log)}
    if not (isinstance(got, (tuple, list)) and len(got) == 2):
        out["shape"] = f"train_model should return (model, history), got {describe(got)}"
        return out
    returned, history = got
    if not isinstance(returned, nn.Module):
        out["shape"] = f"the first item returned should be the model, got {describe(returned)}"
        return out
    weights = dict(returned.named_parameters())
    out["weights_of"] = next((e for e, s in enumerate(script)
                              if all(n in weights and torch.equal(weights[n].detach(), s[n]) for n in s)), None)
    out["history"] = history
    return out


def _history_problem(got_h, want_h) -> str | None:
    if not isinstance(got_h, dict):
        return f"history should be a dict of lists, got {describe(got_h)}"
    for key in ("train_loss", "train_acc", "valid_loss", "valid_acc"):
        if key not in got_h:
            return f"history has no {key!r} (keys: {sorted(got_h)})"
        have = [float(v) for v in got_h[key]]
        want = want_h[key]
        if len(have) != len(want):
            return f"history[{key!r}] has {len(have)} values for {len(want)} epochs"
        if not np.allclose(have, want, rtol=1e-4, atol=1e-5):
            e = int(np.argmax(np.abs(np.array(have) - np.array(want))))
            hint = " (accuracy is a fraction of images, between 0 and 1)" if key.endswith("acc") else ""
            return f"history[{key!r}] in epoch {e + 1} is {have[e]:.4f}, expected {want[e]:.4f}{hint}"
    return None


def _train_judge(case, got, expected):
    if got == expected:  # also how a known mistake is recognised: same observation
        return None
    if "shape" in got:
        return got["shape"]
    epochs = got["epochs"]
    valid = [(training, grad) for phase, training, grad in got["log"] if phase == "valid"]
    train = [(training, grad) for phase, training, grad in got["log"] if phase == "train"]
    if not valid:
        return "the validation loader was never used: each epoch needs a validation phase"
    if any(training for training, _ in valid):
        return ("validation ran with the model in training mode: call model.eval() before the validation phase "
                "(BatchNorm and Dropout behave differently in training mode)")
    if any(grad for _, grad in valid):
        return ("validation ran with gradients enabled: wrap it in torch.no_grad() (or "
                "torch.set_grad_enabled(phase == 'train')); gradients there only cost memory and time")
    if any(not training for training, _ in train):
        return "a training phase ran in eval mode: call model.train() at the start of every training phase"
    if got["piled"]:
        return (f"{got['piled']} of {got['steps']} optimizer steps found gradients still holding earlier batches': "
                "each optimizer step must use the gradient of its own batch only")
    if got["steps"] != got["per_epoch"] * epochs:
        return (f"optimizer.step() was called {got['steps']} times; expected once per training batch, "
                f"{got['per_epoch']} x {epochs} epochs = {got['per_epoch'] * epochs}")
    if got["sched_steps"] != expected["sched_steps"]:
        if not case.kwargs["scheduler"]:
            return "with scheduler=None there is no scheduler to step"
        return f"scheduler.step() was called {got['sched_steps']} times; expected once per epoch ({epochs})"
    why = _history_problem(got["history"], expected["history"])
    if why:
        return why
    best = expected["weights_of"]
    if got["weights_of"] != best:
        accs = expected["history"]["valid_acc"]
        if got["weights_of"] is None:
            return (f"the returned model has none of the epochs' weights; it should hold those of epoch {best + 1}, "
                    f"the best (validation accuracy {accs[best]:.3f})")
        e = got["weights_of"]
        return (f"the returned model has the weights of epoch {e + 1} (validation accuracy {accs[e]:.3f}), "
                f"not those of the best epoch {best + 1} ({accs[best]:.3f})")
    return None


def _train_variant(last=False, live_state=False, no_eval=False, grad_in_valid=False, no_zero=False):
    """The reference loop with one known mistake switched on."""

    def train_model(model, dataloaders, criterion, optimizer, scheduler=None, num_epochs=1):
        device = next(model.parameters()).device
        history: dict[str, list[float]] = {key: [] for key in ref.HISTORY_KEYS}
        best_acc, best_state = -1.0, copy.deepcopy(model.state_dict())
        for _ in range(num_epochs):
            history["lr"].append(optimizer.param_groups[0]["lr"])
            for phase in ("train", "valid"):
                training = phase == "train"
                model.train(training or no_eval)
                total, correct, seen = 0.0, 0, 0
                for x, y in dataloaders[phase]:
                    x, y = x.to(device), y.to(device)
                    with torch.set_grad_enabled(training or grad_in_valid):
                        out = model(x)
                        loss = criterion(out, y)
                    if training:
                        if not no_zero:
                            optimizer.zero_grad()
                        loss.backward()
                        optimizer.step()
                    total += loss.item() * len(x)
                    correct += (out.argmax(1) == y).sum().item()
                    seen += len(x)
                history[f"{phase}_loss"].append(total / seen)
                history[f"{phase}_acc"].append(correct / seen)
            if history["valid_acc"][-1] > best_acc:
                best_acc = history["valid_acc"][-1]
                best_state = model.state_dict() if live_state else copy.deepcopy(model.state_dict())
            if scheduler is not None:
                scheduler.step()
        if not last:
            model.load_state_dict(best_state)
        return model, history

    return train_model


TRAIN_MODEL = Spec(
    id="train_model",
    reference=ref.train_model,
    cases=_train_cases,
    observe=_observe_train,
    judge=_train_judge,
    n_visible=3,
    n_hidden=12,
    mistakes=[
        Mistake("returns the last epoch", _train_variant(last=True),
                "your model ends with the weights of the last epoch. Either the best weights are never loaded "
                "back (model.load_state_dict(best_state) at the end), or they were kept as `model.state_dict()` "
                "itself, whose live tensors keep changing: keep copy.deepcopy(model.state_dict())."),
        Mistake("no eval", _train_variant(no_eval=True),
                "validation must run after model.eval(): in training mode BatchNorm uses the batch's own "
                "statistics and Dropout drops units, so the accuracy you measure is not the model's."),
        Mistake("grad in valid", _train_variant(grad_in_valid=True),
                "validation ran with gradients on: wrap it in torch.no_grad() or "
                "torch.set_grad_enabled(phase == 'train')."),
        Mistake("no zero_grad", _train_variant(no_zero=True),
                "the gradients are never zeroed. backward() adds to .grad, so each step moved the weights by the "
                "sum of every batch's gradient so far: zero them (optimizer.zero_grad()) before each backward pass."),
    ],
    contract=(
        Clause("behaviour", "the model loaded with the weights of its best validation epoch"),
        Clause("behaviour", "validation runs in evaluation mode without gradients"),
        Clause("behaviour", "one optimizer step per training batch"),
        Clause("zero_grad", "each optimizer step uses the gradient of its own batch only"),
        Clause("optional", "trains for `num_epochs` epochs", arg="num_epochs"),
        Clause("optional", "a `scheduler`, when one is given, steps once per epoch; with `scheduler=None` there is "
                           "none", arg="scheduler"),
        Clause("behaviour", "per-image averages over each phase"),
    ),
    hint="see the docstring's recipe: train phase, valid phase, keep a deep copy of the best weights, "
         "load them at the end.",
)


# ------------------------------------------------------------------ the capstone: classify_flowers
#
# The grader draws new photos of the lesson's flower kinds from its secret seed with the course's own data maker, and
# hands the student's function the lesson's labelled flowers folder and a folder of those photos, unlabelled and
# shuffled. Their class indices stay in Case.secret, in the grader; the function's predictions come back as plain
# data and the grader measures their accuracy.

def _capstone_cases(rng, device, n):
    from course_lib.config import current
    from course_lib.data.flowers import get_flowers

    profile = current().profile
    seed = int(rng.integers(1 << 30))
    images, labels = ref.heldout_flowers(case_dir("flowers_heldout_"), seed, profile)
    return [Case((get_flowers(profile), images), {}, f"{len(labels)} new photos of the lesson's flowers",
                 np.array(labels, dtype=np.int64))]


def _class_folders(case: Case) -> list[str]:
    """The training folder's class names in ImageFolder's order (sorted as strings)."""
    return sorted(p.name for p in (Path(case.args[0]) / "train").iterdir() if p.is_dir())


def _indices(got: Any) -> np.ndarray:
    """The predictions as an int64 array; raises ValueError when they are not whole numbers."""
    if isinstance(got, torch.Tensor):
        got = got.detach().cpu().numpy()
    values = np.asarray(got)
    if values.dtype == bool or values.dtype.kind not in "iu":
        if values.dtype.kind == "f" and values.size and np.all(values == np.round(values)):
            raise ValueError(f"the class indices must be ints, got {values.dtype} numbers")
        raise ValueError(f"expected a list of class indices (ints), got {describe(got)}")
    return values.astype(np.int64).reshape(-1)


def _capstone_judge(case, got, expected):
    n = len(case.secret) if case.secret is not None else None
    try:
        values = _indices(got)
    except ValueError as e:
        return str(e)
    if np.asarray(got).ndim != 1 or len(values) != n:
        return (f"expected one class index per photo of the folder ({n} of them, in the order of "
                f"sorted(images.glob('*.jpg'))), got {describe(got)}")
    n_classes = len(_class_folders(case))
    if values.size and (values.min() < 0 or values.max() >= n_classes):
        return (f"class indices run from 0 to {n_classes - 1} (the training folder's {n_classes} classes, in "
                f"ImageFolder's order), got values from {values.min()} to {values.max()}")
    return None


def _capstone_measure(case: Case, got: Any) -> float:
    return float(np.mean(_indices(got) == np.asarray(case.secret)))


_trained: dict[str, list[int]] = {}


def _reference_once(path, images) -> list[int]:
    """The reference's predictions for one drawn folder, trained once (the mistakes below reuse them)."""
    import hashlib

    digest = hashlib.sha256(str(path).encode())
    for f in sorted(Path(images).glob("*.jpg")):
        digest.update(f.name.encode() + f.read_bytes())
    key = digest.hexdigest()
    if key not in _trained:
        _trained[key] = ref.classify_flowers(path, images)
    return list(_trained[key])


def _majority(path, images):
    from torchvision.datasets import ImageFolder

    counts = np.bincount(ImageFolder(Path(path) / "train").targets)
    return [int(counts.argmax())] * len(list(Path(images).glob("*.jpg")))


def _listing_order(path, images):
    # What a loop over os.listdir (or an unsorted glob) gives: the folder's own order, not the names' order.
    by_name = dict(zip(sorted(f.name for f in Path(images).glob("*.jpg")), _reference_once(path, images)))
    return [by_name[name] for name in os.listdir(images) if name.endswith(".jpg")]


def _folder_numbers(path, images):
    from torchvision.datasets import ImageFolder

    classes = ImageFolder(Path(path) / "train").classes
    return [int(classes[p]) for p in _reference_once(path, images)]


CONSTANT = Mistake("constant", _majority,
                   "every photo gets the same class: that is what a model that learned nothing predicts (here, "
                   "the most common class of the training folder). Check that the head's parameters are the ones "
                   "the optimizer steps, that the loss goes down, and that the trained model makes the predictions.")
LISTING_ORDER = Mistake("listing order", _listing_order,
                        "your predictions fit the photos far better in the order the folder lists them than in the "
                        "order of their sorted names: name them in the order of sorted(images.glob('*.jpg')).")
FOLDER_NUMBERS = Mistake("folder numbers", _folder_numbers,
                         "your answers are the class folders' names (\"1\", \"2\", ... as numbers), not ImageFolder's "
                         "class indices: index i is the folder dataset.classes[i], and the folders are sorted as "
                         "strings. Return the index the model predicts.")


def _capstone_diagnose(case: Case, got: Any) -> Mistake | None:
    """Which known mistake the predictions show, read from them and the held-out labels (no training)."""
    try:
        pred = _indices(got)
        truth = np.asarray(case.secret)
        if len(pred) != len(truth):
            return None
        names = sorted(f.name for f in Path(case.args[1]).glob("*.jpg"))
        classes = _class_folders(case)
    except Exception:
        return None
    right = float(np.mean(pred == truth))
    better = lambda acc: acc > max(2 * right, right + 0.1)  # noqa: E731 - far better, not by luck
    as_folders = np.array([classes.index(str(p)) if str(p) in classes else -1 for p in pred])
    if better(float(np.mean(as_folders == truth))):
        return FOLDER_NUMBERS
    if len(np.unique(pred)) == 1 and len(pred) > 4:
        return CONSTANT
    listed = [names.index(name) for name in os.listdir(case.args[1]) if name.endswith(".jpg")]
    if len(listed) == len(truth) and better(float(np.mean(pred == truth[listed]))):
        return LISTING_ORDER
    return None


CLASSIFY_FLOWERS = Spec(
    id="classify_flowers",
    reference=ref.classify_flowers,
    cases=_capstone_cases,
    judge=_capstone_judge,
    mistakes=[CONSTANT, LISTING_ORDER, FOLDER_NUMBERS],
    n_visible=1,
    n_hidden=1,
    bands=Bands(
        metric="top-1 accuracy",
        higher_is_better=True,
        # ci: the reference scored 0.43-0.58 on ten drawn folders (mean 0.50), a model with an untrained head at most
        # 0.23 and a constant answer 1/6 (tests/test_transfer.py); cpu: 0.59-0.65 on three drawn folders of 320
        # photos, 18-20 CPU seconds each (benchmarks/capstone.py classify_flowers); gpu: unmeasured guesses. Chance
        # is 1/6 in ci, 1/16 in cpu, 1/20 in gpu.
        edges={"ci": (0.36, 0.31, 0.27, 0.23), "cpu": (0.5, 0.4, 0.3, 0.2), "gpu": (0.6, 0.5, 0.35, 0.2)},
        fractions=(1.0, 0.75, 0.5, 0.25),
    ),
    measure=_capstone_measure,
    diagnose=_capstone_diagnose,
    seconds={"ci": 30.0, "cpu": 300.0, "gpu": 600.0},
    contract=(
        Clause("behaviour", "one class index per photo, in the order of `sorted(images.glob('*.jpg'))`"),
        Clause("behaviour", "numbered as `ImageFolder(path / 'train')` numbers the classes"),
        Clause("behaviour", "a list of `int`"),
    ),
)


# ------------------------------------------------------------------ widget: freeze_choice
#
# Each student's question (a head size and a budget, see transfer.freeze_question) has its own right answer,
# transfer.freeze_target(student): the judge gets it as ``expected`` and the student's id in ``case.kwargs``.

def _choice_judge(case, got, expected):
    if not (isinstance(got, dict) and {"train", "trainable"} <= set(got)):
        return (f"expected the dict the explorer's Record button shows, {{'train': [...], 'trainable': N}}; "
                f"got {describe(got)}")
    question = ref.freeze_question(case.kwargs["student"])
    groups = list(got["train"]) if isinstance(got["train"], (list, tuple)) else []
    unknown = [g for g in groups if g not in ref.RESNET_GROUPS]
    if not groups or unknown:
        return f"'train' should list parts of {list(ref.RESNET_GROUPS)}, got {describe(got['train'])}"
    sizes = ref.group_sizes(question["classes"])
    count = sum(sizes[g] for g in set(groups))
    budget = question["budget"]
    if set(groups) != set(expected["train"]):
        if "fc" not in groups:
            return "the new head is not trained: it is the one part that cannot come pretrained"
        from_end = list(ref.RESNET_GROUPS[len(ref.RESNET_GROUPS) - len(set(groups)):])
        if set(groups) != set(from_end):
            return ("a stage should train only if every stage after it trains too: the late stages are the most "
                    "specific to the old task, so they are the first to retrain")
        if count > budget:
            return f"training {', '.join(groups)} makes {count:,} trainable parameters, over your budget of {budget:,}"
        return (f"training {', '.join(groups)} makes {count:,} trainable parameters, and your budget of {budget:,} "
                "leaves room for more of the network's last stages")
    try:
        have = int(got["trainable"])
    except (TypeError, ValueError):
        return f"'trainable' should be a number, got {describe(got['trainable'])}"
    if have != count:
        return (f"with {', '.join(groups)} trainable, resnet18 with a {question['classes']}-class head has "
                f"{count:,} trainable parameters, not {have:,}: record it with the explorer")
    return None


FREEZE_CHOICE = Spec(
    id="freeze_choice",
    reference=None,
    judge=_choice_judge,
    kind="answer",
    answer_for=ref.freeze_target,
    target=ref.freeze_target,
    hint="in the explorer, train the head and then the stages before it, one more at a time, while the count stays "
         "within your budget; press Record and paste the line it shows.",
)

SPECS = [SET_PARAMETER_REQUIRES_GRAD, REPLACE_HEAD, PARAMS_TO_UPDATE, COUNT_TRAINABLE, TRAIN_MODEL, FREEZE_CHOICE,
         CLASSIFY_FLOWERS]
