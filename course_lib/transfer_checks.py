"""Check specs for lesson 02_transfer_learning.

Most of these exercises change a model in place, so their specs ``observe``: each run (the
student's function, the reference, every known mistake) gets a fresh tiny resnet and returns
what happened to it. The tiny resnets have random widths and head sizes, so an answer that
types in 512 or 1000 fails, and random freezing patterns, so one that guesses by name fails.

``train_model`` is checked with a scripted optimizer: each epoch's "training" sets weights
chosen in advance, so the validation accuracy of every epoch, and therefore which epoch is
the best, is known exactly, and a loop that keeps the last epoch (or a live ``state_dict``)
is caught. A probe layer records whether validation ran in eval mode without gradients.
"""
from __future__ import annotations

import contextlib
import copy
import io
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from course_lib import transfer as ref
from course_lib.checks import Case, Mistake, Spec, describe, output_shape

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


# ------------------------------------------------------------------ set_parameter_requires_grad

def _freeze_cases(rng, device, n):
    out = []
    for i in range(n):
        fe = bool(i % 2 == 0)
        out.append(Case(kwargs=dict(seed=int(rng.integers(1 << 30)), feature_extracting=fe, device=str(device)),
                        label=f"feature_extracting={fe}"))
    return out


def _observe_freeze(fn, case):
    k = case.kwargs
    model = tiny_resnet(k["seed"]).to(k["device"])
    returned = fn(model, k["feature_extracting"])
    return {"returned_model": returned is model, "flags": _grad_flags(model), "n_classes": model.fc.out_features}


def _freeze_judge(case, got, expected):
    if got == expected:  # also how a known mistake is recognised: same observation
        return None
    fe = case.kwargs["feature_extracting"]
    still = [n for n, f in got["flags"].items() if f]
    if fe and still:
        return (f"with feature_extracting=True, {len(still)} of {len(got['flags'])} parameters still require grad "
                f"(for example {still[0]!r})")
    if not fe and len(still) != len(got["flags"]):
        return "with feature_extracting=False nothing should be frozen, but some parameters were"
    return None


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


SET_PARAMETER_REQUIRES_GRAD = Spec(
    id="set_parameter_requires_grad",
    reference=ref.set_parameter_requires_grad,
    cases=_freeze_cases,
    observe=_observe_freeze,
    judge=_freeze_judge,
    mistakes=[
        Mistake("only fc", _freeze_only_fc,
                "you froze only the head. Feature extraction freezes the whole pretrained body: loop over "
                "model.parameters(), every one of them; the new head is added (trainable) afterwards."),
        Mistake("weights only", _freeze_weights_only,
                "biases are parameters too (and so are BatchNorm's weight and bias): freeze every tensor in "
                "model.parameters(), not only those whose name ends in 'weight'."),
        Mistake("requires_grad_ attribute", _freeze_with_method_name,
                "nothing was frozen. Set the attribute `param.requires_grad = False` (or call the method "
                "`param.requires_grad_(False)`); assigning to `param.requires_grad_` only hides the method."),
    ],
    hint="for param in model.parameters(): param.requires_grad = False, only when feature_extracting.",
)


# ------------------------------------------------------------------ replace_head

def _head_cases(rng, device, n):
    # On the CPU even in hidden runs: a new nn.Linear is made on the CPU, and moving the model to
    # the GPU is the caller's job after the head is replaced, not replace_head's.
    return [Case(kwargs=dict(seed=int(rng.integers(1 << 30)), num_classes=int(rng.integers(2, 120))), label="")
            for _ in range(n)]


def _observe_head(fn, case):
    k = case.kwargs
    model = tiny_resnet(k["seed"])
    ref.set_parameter_requires_grad(model, True)  # the usual order: freeze, then replace the head
    body_before = {n: p.detach().clone() for n, p in model.named_parameters() if not n.startswith("fc.")}
    returned = fn(model, k["num_classes"])
    if not isinstance(returned, nn.Module):
        return {"returned": describe(returned)}
    fc = getattr(returned, "fc", None)
    out: dict[str, Any] = {"returned": "model" if returned is model else "another module",
                           "fc": type(fc).__name__, "flags": _grad_flags(returned)}
    if isinstance(fc, nn.Linear):
        out.update(in_features=fc.in_features, out_features=fc.out_features)
    body = {n: p for n, p in returned.named_parameters() if not n.startswith("fc.")}
    out["body_same"] = body.keys() == body_before.keys() and all(torch.equal(body[n], body_before[n]) for n in body)
    out["logits"] = output_shape(returned, torch.zeros(2, 3, 16, 16))
    return out


def _head_judge(case, got, expected):
    if got == expected:  # also how a known mistake is recognised: same observation
        return None
    n = case.kwargs["num_classes"]
    if "fc" not in got:
        return f"replace_head must return the model, got {got['returned']}"
    if got["fc"] != "Linear":
        return f"model.fc should be an nn.Linear, got {got['fc']}"
    if got["out_features"] != n:
        return f"the new head has {got['out_features']} outputs, but num_classes is {n}"
    if got["in_features"] != expected["in_features"]:
        return (f"the new head takes {got['in_features']} features but the body gives {expected['in_features']} "
                f"(the forward pass says: {got['logits']})")
    if not all(f for name, f in got["flags"].items() if name.startswith("fc.")):
        return "the new head is frozen: its parameters must require grad, or nothing will learn"
    if any(f for name, f in got["flags"].items() if not name.startswith("fc.")):
        return "replace_head unfroze parts of the body; it should only replace fc"
    if not got["body_same"]:
        return "the body's weights changed: replace only model.fc, keep the pretrained layers as they are"
    if got["logits"] != [2, n]:
        return f"a batch of 2 images should give logits of shape [2, {n}], got {got['logits']}"
    return None


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


REPLACE_HEAD = Spec(
    id="replace_head",
    reference=ref.replace_head,
    cases=_head_cases,
    observe=_observe_head,
    judge=_head_judge,
    mistakes=[
        Mistake("typed 512", _head_512,
                "the head's input size is typed in. 512 is right for resnet18/34 only (2048 for resnet50): "
                "read it from the old head, nn.Linear(model.fc.in_features, num_classes)."),
        Mistake("no return", _head_no_return, "you replaced the head but did not `return model`."),
        Mistake("frozen head", _head_frozen,
                "the new head was frozen along with the body. Freeze first, then replace the head: a new "
                "nn.Linear requires grad by default."),
        Mistake("kept outputs", _head_kept_outputs,
                "the new head still has the old number of outputs; it needs num_classes outputs."),
    ],
    hint="model.fc = nn.Linear(model.fc.in_features, num_classes); return model",
)


# ------------------------------------------------------------------ params_to_update / count_trainable

def _mixed_cases(rng, device, n):
    shares = [0.0, 1.0] + [float(rng.uniform(0.2, 0.9)) for _ in range(max(0, n - 2))]
    return [Case(kwargs=dict(seed=int(rng.integers(1 << 30)), frozen_share=s, device=str(device)),
                 label=f"{s:.0%} of parameters frozen") for s in shares[:n]]


def _observe_params(fn, case):
    k = case.kwargs
    model = tiny_resnet(k["seed"], k["frozen_share"]).to(k["device"])
    got = fn(model)
    try:
        items = list(got)
    except TypeError:
        return {"error": f"expected a list of parameters, got {describe(got)}"}
    names = {id(p): n for n, p in model.named_parameters()}
    if any(not isinstance(p, torch.Tensor) for p in items):
        kinds = sorted({type(p).__name__ for p in items if not isinstance(p, torch.Tensor)})
        return {"error": f"expected parameters (tensors), got items of type {', '.join(kinds)}",
                "names": [p if isinstance(p, str) else None for p in items]}
    unknown = [p for p in items if id(p) not in names]
    if unknown:
        return {"error": "some items are not parameters of the model (copies or detached tensors?)"}
    return {"names": [names[id(p)] for p in items]}


def _params_judge(case, got, expected):
    if got == expected:  # also how a known mistake is recognised: same observation
        return None
    if "error" in got:
        return got["error"]
    want, have = expected["names"], got["names"]
    if have == want:
        return None
    missing = [n for n in want if n not in have]
    extra = [n for n in have if n not in want]
    if missing:
        return f"{len(missing)} trainable parameters are missing, for example {missing[0]!r}"
    if extra:
        return f"{len(extra)} frozen parameters are included, for example {extra[0]!r}"
    if len(have) != len(set(have)):
        return "some parameters appear twice"
    return "the parameters are not in model.parameters() order"


def _params_all(model):
    return list(model.parameters())


def _params_names(model):
    return [name for name, p in model.named_parameters() if p.requires_grad]


def _params_fc(model):
    return list(model.fc.parameters())


PARAMS_TO_UPDATE = Spec(
    id="params_to_update",
    reference=ref.params_to_update,
    cases=_mixed_cases,
    observe=_observe_params,
    judge=_params_judge,
    mistakes=[
        Mistake("all", _params_all,
                "you returned every parameter. Keep only those with `param.requires_grad` True: frozen ones "
                "would just waste the optimizer's time (and memory for its state)."),
        Mistake("names", _params_names,
                "you returned the parameters' names. The optimizer needs the parameter tensors themselves: "
                "iterate over model.named_parameters() and keep `param`, not `name`."),
        Mistake("fc only", _params_fc,
                "you returned the head's parameters. Which parameters train is decided by requires_grad, "
                "not by the layer's name: after unfreezing, the body must be included too."),
    ],
    hint="[p for p in model.parameters() if p.requires_grad]",
)


def _observe_count(fn, case):
    k = case.kwargs
    model = tiny_resnet(k["seed"], k["frozen_share"]).to(k["device"])
    return fn(model)


def _count_judge(case, got, expected):
    if isinstance(got, torch.Tensor) and got.numel() == 1:
        return "expected a Python int, got a one-element tensor: call .item() on it, or sum p.numel() values"
    if not isinstance(got, (int, np.integer)) or isinstance(got, bool):
        return f"expected an int, got {describe(got)}"
    if int(got) != expected:
        return f"expected {expected:,} trainable scalars, got {int(got):,}"
    return None


def _count_tensors(model):
    return len([p for p in model.parameters() if p.requires_grad])


def _count_all(model):
    return sum(p.numel() for p in model.parameters())


COUNT_TRAINABLE = Spec(
    id="count_trainable",
    reference=ref.count_trainable,
    cases=_mixed_cases,
    observe=_observe_count,
    judge=_count_judge,
    mistakes=[
        Mistake("tensors", _count_tensors,
                "you counted parameter tensors. Count the numbers inside them: a [512, 10] weight holds 5,120 "
                "scalars; sum p.numel()."),
        Mistake("all", _count_all,
                "you counted every parameter, frozen ones included; count only those that require grad."),
    ],
    hint="sum(p.numel() for p in model.parameters() if p.requires_grad)",
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
    and which epoch is the best, are known before the student's loop runs.
    """

    def __init__(self, model: nn.Module, script: list[dict[str, torch.Tensor]], batches_per_epoch: int):
        super().__init__(model.parameters(), lr=0.1)
        self.model, self.script, self.per_epoch, self.steps = model, script, batches_per_epoch, 0

    @torch.no_grad()
    def step(self, closure=None):
        self.steps += 1
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
    return [Case(kwargs=dict(seed=int(rng.integers(1 << 30)), epochs=int(rng.integers(3, 6)), device=str(device)),
                 label="") for _ in range(n)]


def _world(seed: int, epochs: int, device: str):
    """Model, dataloaders, optimizer, scheduler and the script for one train_model case."""
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
    return model, dls, opt, _CountingScheduler(opt), script, per_epoch


def _observe_train(fn, case):
    k = case.kwargs
    model, dls, opt, sched, script, per_epoch = _world(k["seed"], k["epochs"], k["device"])
    # The loop's own progress lines would bury the verdict under dozens of scripted epochs.
    with contextlib.redirect_stdout(io.StringIO()):
        got = fn(model, dls, nn.CrossEntropyLoss(), opt, sched, k["epochs"])
    out = {"epochs": k["epochs"], "steps": opt.steps, "per_epoch": per_epoch, "sched_steps": sched.steps,
           "log": list(model[0].log)}
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
    if got["steps"] != got["per_epoch"] * epochs:
        return (f"optimizer.step() was called {got['steps']} times; expected once per training batch, "
                f"{got['per_epoch']} x {epochs} epochs = {got['per_epoch'] * epochs}")
    if got["sched_steps"] != epochs:
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


def _train_variant(last=False, live_state=False, no_eval=False, grad_in_valid=False):
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
    ],
    hint="see the docstring's recipe: train phase, valid phase, keep a deep copy of the best weights, "
         "load them at the end.",
)


# ------------------------------------------------------------------ widget: freeze_choice

def _choice_judge(case, got, expected):
    if not (isinstance(got, dict) and {"train", "trainable"} <= set(got)):
        return (f"expected the dict the explorer's Record button shows, {{'train': [...], 'trainable': N}}; "
                f"got {describe(got)}")
    groups = tuple(got["train"])
    if set(groups) != set(ref.QUESTION_GROUPS):
        return (f"you chose to train {sorted(groups)}; the question asks for the last block and the new head "
                f"only ({', '.join(ref.QUESTION_GROUPS)})")
    model = ref.freeze_groups(ref.question_model(), groups)
    want = ref.count_trainable(model)
    try:
        have = int(got["trainable"])
    except (TypeError, ValueError):
        return f"'trainable' should be a number, got {describe(got['trainable'])}"
    if have != want:
        return (f"with {', '.join(groups)} trainable, resnet18 with a {ref.QUESTION_CLASSES}-class head has "
                f"{want:,} trainable parameters, not {have:,}: record it with the explorer")
    return None


FREEZE_CHOICE = Spec(
    id="freeze_choice",
    reference=None,
    judge=_choice_judge,
    kind="answer",
    hint="tick layer4 and fc only in the freezing explorer, press Record, and paste the line it shows.",
)

SPECS = [SET_PARAMETER_REQUIRES_GRAD, REPLACE_HEAD, PARAMS_TO_UPDATE, COUNT_TRAINABLE, TRAIN_MODEL, FREEZE_CHOICE]
