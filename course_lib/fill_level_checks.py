"""Check specs for lesson 06_fill_level: cases, judges and known wrong answers."""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.optim.optimizer import register_optimizer_step_pre_hook

from course_lib import fill_level as ref
from course_lib.checks import Bands, Case, Clause, Mistake, Spec, compare, describe, output_shape

# ----------------------------------------------------------------------- make_fill_image

def _image_cases(rng: np.random.Generator, device: torch.device, n: int) -> list[Case]:
    # Always include the edges (empty, nearly full) and levels that sit exactly on a row
    # boundary, where round() and int() disagree.
    fixed = [(0.0, 10), (0.999, 10), (0.47, 100), (0.25, 8), (0.55, 20)]
    out = [Case((lv,), {"size": s}, f"fill_level={lv}, size={s}") for lv, s in fixed]
    for _ in range(max(0, n - len(fixed))):
        s = int(rng.integers(4, 300))
        lv = float(np.round(rng.random(), 4))
        out.append(Case((lv,), {"size": s}, f"fill_level={lv}, size={s}"))
    return out[:n] if n >= 3 else out[:3]


def _cols(fill_level, size=900):
    img = np.zeros((size, size, 3), np.uint8)
    img[:, : int(fill_level * size)] = 255
    return img


def _bottom(fill_level, size=900):
    img = np.zeros((size, size, 3), np.uint8)
    k = int(fill_level * size)
    if k:
        img[size - k :] = 255
    return img


def _rounded(fill_level, size=900):
    img = np.zeros((size, size, 3), np.uint8)
    img[: int(round(fill_level * size))] = 255
    return img


def _one_not_255(fill_level, size=900):
    img = np.zeros((size, size, 3), np.uint8)
    img[: int(fill_level * size)] = 1
    return img


def _float_image(fill_level, size=900):
    img = np.zeros((size, size, 3))
    img[: int(fill_level * size)] = 255
    return img


def _white_rows(img: np.ndarray) -> int:
    """How many rows from the top are entirely 255, the way the exercise defines white."""
    full = (img == 255).all(axis=tuple(range(1, img.ndim)))
    return int(full.argmin()) if not full.all() else len(full)


def _image_judge(case, got, expected):
    # Compared with ``expected`` (not with uint8 itself), so a known mistake's own answer matches it.
    if isinstance(got, np.ndarray) and got.shape == expected.shape and got.dtype != expected.dtype:
        return f"the image has dtype {got.dtype}, expected {expected.dtype}"
    why = compare(got, expected)
    if why and isinstance(got, np.ndarray) and got.shape == expected.shape and got.dtype == expected.dtype:
        values = sorted({int(v) for v in np.unique(got)[:4]})
        if len(np.unique(got)) == 1:
            return f"{why}: every pixel of your image is {values[0]}, whatever the level"
        return (f"{why}: your image has {_white_rows(got)} white rows at the top, "
                f"expected {_white_rows(expected)}")
    return why


MAKE_FILL_IMAGE = Spec(
    id="make_fill_image",
    reference=ref.make_fill_image,
    cases=_image_cases,
    judge=_image_judge,
    mistakes=[
        Mistake("columns", _cols,
                "you filled the left columns, not the top rows: index rows first, img[:k] (not img[:, :k])."),
        Mistake("bottom", _bottom, "you filled from the bottom: the white part starts at row 0, the top of the image."),
        Mistake("round", _rounded,
                "use int(fill_level * size) as the seed does (it truncates); "
                "round() fills one row too many about half the time."),
        Mistake("one", _one_not_255, "white in a uint8 image is 255, not 1."),
        Mistake("float", _float_image, "the image must be uint8: create it with np.zeros((size, size, 3), np.uint8)."),
    ],
    n_visible=6,
    n_hidden=40,
    contract=(
        Clause("optional", "an image of `size` x `size` pixels whenever `size` is given", arg="size"),
        Clause("behaviour", "a `uint8` array of shape `[size, size, 3]`"),
        Clause("exact", "exactly `int(fill_level * size)` rows"),
    ),
)

# ----------------------------------------------------------------------------- load_batch

MEAN = torch.tensor(ref.IMAGENET_MEAN).view(1, 3, 1, 1)
STD = torch.tensor(ref.IMAGENET_STD).view(1, 3, 1, 1)


def _batch_cases(rng, device, n):
    sizes = [(1, 16), (8, 32), (16, 20)] + [(int(rng.integers(2, 24)), int(rng.integers(8, 64))) for _ in range(n)]
    return [Case((b, s), {}, f"batch_size={b}, size={s}") for b, s in sizes[: max(n, 3)]]


def _raw(images: torch.Tensor) -> torch.Tensor:
    """The images with the ImageNet normalization undone: what ToTensor gave, values in [0, 1] when right."""
    return images.detach().cpu().float() * STD + MEAN


def _batch_judge(case, got, expected):
    b, s = case.args
    if not (isinstance(got, (tuple, list)) and len(got) == 2):
        return f"expected (images, levels), got {describe(got)}"
    images, levels = got
    if not isinstance(images, torch.Tensor) or not isinstance(levels, torch.Tensor):
        return f"both images and levels must be tensors, got {describe(images)} and {describe(levels)}"
    if tuple(images.shape) != (b, 3, s, s):
        return f"images should have shape [{b}, 3, {s}, {s}] ([B, C, H, W]), got {list(images.shape)}"
    if tuple(levels.shape) != (b,):
        return f"levels should have shape [{b}], got {list(levels.shape)}"
    if levels.dtype.is_floating_point and b >= 4 and bool((levels == levels.reshape(-1)[0]).all()):
        return f"all {b} levels are {float(levels[0]):.4g}, one level for the whole batch"
    if images.dtype != torch.float32 or levels.dtype != torch.float32:
        return f"images and levels should be float32, got {images.dtype} and {levels.dtype}"
    if float(levels.min()) < 0 or float(levels.max()) >= 1:
        return "levels must lie in [0, 1)"
    raw = _raw(images)
    if raw.max() > 1.5:
        return "pixel values reach 255: convert to floats in [0, 1] before normalizing (ToTensor does that)"
    if raw.min() > -0.1 and images.detach().min() >= 0:
        return "the images are not normalized: apply Normalize with the ImageNet mean and std"
    want = torch.stack([ref.to_input(ref.make_fill_image(float(lv), s)) for lv in levels.detach().cpu()])
    if not torch.allclose(images.detach().cpu(), want, atol=1e-4):
        return "an image does not match its level: image i must be make_fill_image(levels[i], size), normalized"
    if b >= 8 and float(levels.std()) < 0.05:
        return "the levels hardly vary: draw a new random level for every image"
    return None


def _batch_diagnose(case: Case, got: Any) -> Mistake | None:
    """Which known mistake a batch shows. Its levels are random, so no mistake's own draw can equal the student's:
    the batch is read instead, and a mistake is named only when the batch is exactly what that mistake makes."""
    b, s = case.args
    if not (isinstance(got, (tuple, list)) and len(got) == 2 and all(isinstance(t, torch.Tensor) for t in got)):
        return None
    images, levels = (t.detach().cpu() for t in got)
    if tuple(images.shape) != (b, 3, s, s) or levels.numel() != b or not levels.dtype.is_floating_point:
        return None
    flat = levels.reshape(-1)
    raw_want = torch.stack([torch.from_numpy(ref.make_fill_image(float(lv), s)).permute(2, 0, 1).float() / 255
                            for lv in flat])
    right_images = torch.allclose(images.float(), (raw_want - MEAN[0]) / STD[0], atol=1e-4)
    if tuple(levels.shape) == (b, 1) and right_images:
        return _MISTAKES_BATCH["levels_column"]
    if tuple(levels.shape) == (b,) and torch.allclose(images.float(), raw_want, atol=1e-4):
        return _MISTAKES_BATCH["unnormalized"]
    if tuple(levels.shape) == (b,) and b >= 4 and bool((flat == flat[0]).all()) and right_images:
        return _MISTAKES_BATCH["same_level"]
    return None


def _unnormalized(batch_size, size):
    levels = torch.from_numpy(np.random.random(batch_size)).float()
    imgs = torch.stack([torch.from_numpy(ref.make_fill_image(float(lv), size)).permute(2, 0, 1).float() / 255
                        for lv in levels])
    return imgs, levels


def _levels_column(batch_size, size):
    images, levels = ref.load_batch(batch_size, size)
    return images, levels[:, None]


def _same_level(batch_size, size):
    level = float(np.random.random())
    images = torch.stack([ref.to_input(ref.make_fill_image(level, size)) for _ in range(batch_size)])
    return images, torch.full((batch_size,), level)


_MISTAKES_BATCH = {m.name: m for m in [
    Mistake("unnormalized", _unnormalized,
            "apply tf.Normalize(mean, std) with the ImageNet statistics after ToTensor."),
    Mistake("levels_column", _levels_column,
            "levels should be a flat [B] tensor, not [B, 1]: keep the levels as the 1-D tensor you drew them in."),
    Mistake("same_level", _same_level,
            "you drew one level for the whole batch: draw a new random level for every image, "
            "or the model sees only one answer per step."),
]}

LOAD_BATCH = Spec(
    id="load_batch",
    # Random output: the judge checks properties, not equality with the reference's own draw.
    reference=ref.load_batch,
    cases=_batch_cases,
    judge=_batch_judge,
    diagnose=_batch_diagnose,
    mistakes=list(_MISTAKES_BATCH.values()),
    n_visible=3,
    n_hidden=12,
    contract=(
        Clause("behaviour", "`images` of shape `[B, 3, size, size]` and `levels` of shape `[B]`, both `float32`"),
        Clause("behaviour", "a new random level in `[0, 1)` for every image"),
        Clause("behaviour", "normalized with the ImageNet mean and standard deviation"),
    ),
)

# --------------------------------------------------------------------------- fill_l1_loss

def _loss_cases(rng, device, n):
    # Both shapes the text allows, [B, 1] first (where the broadcast shows) and [B]; pred asks for gradients so
    # that a loss cut from the graph (.item(), torch.tensor(...)) is seen.
    out = []
    for i in range(max(n, 3)):
        b = [4, 8, 1, 6][i] if i < 4 else int(rng.integers(2, 65))
        column = i % 2 == 0 if i < 4 else bool(rng.integers(2))
        pred = torch.from_numpy(rng.random((b, 1) if column else (b,))).float().to(device).requires_grad_()
        target = torch.from_numpy(rng.random(b)).float().to(device)
        out.append(Case((pred, target), {}, f"pred [{b}{', 1' if column else ''}], target [{b}]"))
    return out


def _loss_judge(case, got, expected):
    why = compare(got, expected)
    if why and isinstance(got, torch.Tensor) and got.shape == expected.shape and got.dtype == expected.dtype:
        return f"{why}: expected {float(expected.detach()):.5f}, got {float(got.detach()):.5f}"
    return why


def _broadcast(pred, target):
    return torch.abs(pred - target).mean()


def _mse(pred, target):
    return ((pred.reshape(-1) - target) ** 2).mean()


def _sum(pred, target):
    return (pred.reshape(-1) - target).abs().sum()


def _no_abs(pred, target):
    return (pred.reshape(-1) - target).mean()


def _no_mean(pred, target):
    return (pred.reshape(-1) - target).abs()


FILL_L1_LOSS = Spec(
    id="fill_l1_loss",
    reference=ref.fill_l1_loss,
    cases=_loss_cases,
    mistakes=[
        Mistake("broadcast", _broadcast,
                "pred has shape [B, 1] and target [B], so pred - target broadcasts to a [B, B] matrix that compares "
                "every prediction with every target. Flatten first: pred.reshape(-1) - target (or pred.squeeze(1))."),
        Mistake("mse", _mse, "that is the squared error (MSE); the L1 loss averages absolute differences."),
        Mistake("sum", _sum, "use .mean(), not .sum(): the loss should not grow with the batch size."),
        Mistake("no_abs", _no_abs, "without .abs(), errors above and below the target cancel out."),
        Mistake("no_mean", _no_mean,
                "that is one error per image: the loss is their mean, a single number (a 0-dimensional tensor)."),
    ],
    judge=_loss_judge,
    n_visible=5,
    n_hidden=30,
    contract=(
        Clause("shape", "`pred` of shape `[B, 1]` or `[B]`", arg="pred", values=(1, 2)),
        Clause("behaviour", "a 0-dimensional tensor"),
        Clause("differentiable", "Keep it differentiable"),
    ),
    # Each is tripped in the judging process, the C functions underneath too, so no route to them counts.
    forbidden=("torch.nn.functional.l1_loss", "torch.nn.L1Loss", "fastai.losses.L1LossFlat", "torch._C._nn.l1_loss",
               "torch.ops.aten.l1_loss"),
)

# ----------------------------------------------------------------------- build_fill_model

def _model_cases(rng, device, n):
    return [Case((), {}, "build_fill_model()")]


def _observe_model(fn, case) -> dict:
    """What the judge needs to know about the model ``fn`` builds, as plain data (it travels to the grader).

    Behaviour, not classes: what the body gives, what ``fc`` does to 512 features, what the whole model gives
    for a batch, and which parameters train. A head written as ``nn.Sequential(nn.Dropout(p), nn.Linear(512, 1))``
    is as right as a bare ``nn.Linear(512, 1)``.
    """
    import torchvision

    got = fn(*case.args, **case.kwargs)
    if not isinstance(got, nn.Module):
        return {"module": False, "describe": describe(got)}
    fc = getattr(got, "fc", None)
    out: dict = {"module": True, "resnet": isinstance(got, torchvision.models.ResNet), "type": type(got).__name__,
                 "blocks": [len(getattr(got, f"layer{i}", ())) for i in range(1, 5)]}
    out["fc"] = output_shape(fc, torch.zeros(2, 512)) if isinstance(fc, nn.Module) else describe(fc)
    out["output"] = output_shape(got, torch.zeros(2, 3, 32, 32))
    params = list(got.parameters())
    out["parameters"] = sum(p.numel() for p in params)
    out["frozen"] = sum(p.numel() for p in params if not p.requires_grad)
    return out


def _model_judge(case, got, expected):
    if not got["module"]:
        return f"expected a torch.nn.Module, got {got['describe']}"
    if not got["resnet"]:
        return f"expected a torchvision ResNet (torchvision.models.resnet18), got {got['type']}"
    if got["blocks"] != expected["blocks"]:
        return f"that is not a resnet18 (blocks per stage {got['blocks']}, resnet18 has {expected['blocks']})"
    if got["fc"] != expected["fc"]:
        return f"model.fc should map 512 features to 1 output: for a [2, 512] input it gives {got['fc']}, " \
               f"expected {expected['fc']}"
    if got["output"] != expected["output"]:
        return f"for a batch [2, 3, 32, 32] the model should output {expected['output']}, got {got['output']}"
    if got["frozen"] != expected["frozen"]:
        return f"{got['frozen']:,} of its {got['parameters']:,} parameters do not train (requires_grad=False)"
    return None


def _keeps_head(pretrained: bool = False):
    import torchvision

    return torchvision.models.resnet18(weights=None)


def _frozen_body(pretrained: bool = False):
    model = ref.build_fill_model()
    for p in model.parameters():
        p.requires_grad_(False)
    model.fc = nn.Linear(512, 1)
    return model


BUILD_FILL_MODEL = Spec(
    id="build_fill_model",
    # Fresh random weights every call: the judge compares behaviour and structure, which _observe_model reports.
    reference=ref.build_fill_model,
    cases=_model_cases,
    judge=_model_judge,
    observe=_observe_model,
    mistakes=[
        Mistake("kept_head", _keeps_head,
                "the model still ends in ImageNet's 1000-class head: give model.fc one output for 512 features."),
        Mistake("frozen", _frozen_body,
                "the body is frozen (requires_grad=False): with random weights it has learned nothing yet, "
                "so every parameter must train."),
    ],
    n_visible=1,
    n_hidden=1,
    contract=(
        Clause("behaviour", "a `torchvision.models.resnet18`"),
        Clause("behaviour", "whose `fc` maps 512 features to 1 output"),
        Clause("behaviour", "every parameter trainable"),
    ),
)

# ---------------------------------------------------------------------------- predict_fill

class _Probe(nn.Module):
    """A tiny model whose output depends on normalization, on BatchNorm mode and on size.

    It also records whether it ran with gradients enabled, so the judge can tell. ``shift`` moves its output, so
    that some cases ask for a level outside [0, 1] and only a clamped answer is right.
    """

    def __init__(self, seed: int, shift: float = 0.0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 1)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
            assert self.bn.running_mean is not None and self.bn.running_var is not None  # track_running_stats
            self.bn.running_mean.copy_(torch.randn(4, generator=g))
            self.bn.running_var.copy_(torch.rand(4, generator=g) + 0.5)
            self.fc.bias.fill_(0.5)
        self.shift = shift
        self.grad_seen: list[bool] = []
        self.sizes_seen: list[tuple] = []

    def forward(self, x):
        self.grad_seen.append(torch.is_grad_enabled())
        self.sizes_seen.append(tuple(x.shape))
        h = self.bn(self.conv(x)).relu().mean((2, 3))
        return torch.sigmoid(self.fc(h)) * 0.9 + 0.05 + self.shift


def _predict_cases(rng, device, n):
    # A case names its probe by seed instead of holding it: the probe records what the student's
    # function did to it, so every run builds its own (see _observe_predict). The seed is a tensor
    # so that it travels to the kernel's device, where the probe is then built. The first cases hold every
    # promise of the text: a model in training mode and one in eval mode, `size` given and not, outputs above 1
    # and below 0 that must be clamped.
    fixed = [(True, 24, 0.0), (False, None, 0.0), (True, None, 1.0), (False, 40, -1.0), (True, 20, 0.0)]
    out = []
    for i in range(max(n, 2)):
        training, size, shift = fixed[i] if i < len(fixed) else (
            bool(rng.integers(2)), [None, int(rng.integers(12, 64))][int(rng.integers(2))],
            float(rng.choice([0.0, 0.0, 0.8, -0.8])))
        seed = torch.tensor(int(rng.integers(1 << 30)), device=device)
        lv = float(np.round(rng.random(), 3))
        img = ref.make_fill_image(lv, int(rng.integers(16, 80)))
        kwargs: dict = {"probe_seed": seed, "training": training, "shift": shift}
        label = f"a model in {'training' if training else 'eval'} mode, image {img.shape[0]} px of level {lv}"
        if size is not None:
            kwargs["size"] = size
            label += f", size={size}"
        out.append(Case((img,), kwargs, label))
    return out[:max(n, 2)]


def _observe_predict(fn, case) -> dict:
    """Run ``fn(model, image[, size=...])`` on a fresh probe; report the answer and what happened to the model
    and the image (the text promises both come back as they were)."""
    seed = case.kwargs["probe_seed"]
    model = _Probe(int(seed), float(case.kwargs.get("shift", 0.0))).to(seed.device)
    model.train(bool(case.kwargs.get("training", True)))
    before = model.training
    image = case.args[0].copy()
    extra = {"size": case.kwargs["size"]} if "size" in case.kwargs else {}
    got = fn(model, image, **extra)
    kind = "float" if isinstance(got, float) else "tensor" if isinstance(got, torch.Tensor) else "other"
    value = None
    if kind == "float" or isinstance(got, (np.floating, np.ndarray)) and np.size(got) == 1 and \
            np.asarray(got).dtype.kind == "f":
        value = float(np.asarray(got).reshape(-1)[0]) if kind != "float" else got
    # The probe is fresh, so its first forward pass is the student's.
    return {"type": kind, "describe": describe(got), "value": value,
            "grad": bool(model.grad_seen and model.grad_seen[0]),
            "mode_before": before, "mode_after": model.training, "modes_after": [m.training for m in model.modules()],
            "image_changed": not np.array_equal(image, case.args[0])}


def _predict_judge(case, got, expected):
    if got["image_changed"]:
        return f"your function changed the image it was given (the instructions say \"{_UNCHANGED.text}\")"
    if any(m != got["mode_before"] for m in got["modes_after"]):
        said = "training" if got["mode_before"] else "eval"
        return f"the model came in {said} mode and went back in another (the instructions say \"{_MODE.text}\")"
    if got["value"] is not None and not 0.0 <= got["value"] <= 1.0:
        return f"the prediction {got['value']:.4f} is outside [0, 1] (the instructions say \"{_RANGE.text}\")"
    if got["type"] == "tensor":
        return f"expected a Python float, got {got['describe']}: return out.item()"
    if got["type"] != "float":
        return f"expected a Python float, got {got['describe']}"
    if got["grad"]:
        return "the model ran with gradients enabled: wrap the forward pass in `with torch.no_grad():`"
    value = got["value"]
    if abs(value - expected["value"]) > 1e-4:
        return f"expected {expected['value']:.5f}, got {value:.5f}"
    return None


def _predict_diagnose(case: Case, got: Any) -> Mistake | None:
    """A broken promise of the text, named by its clause (the class report counts them so); else the known
    mistake whose own answer on this case is the student's."""
    if type(got) is dict:
        if got.get("image_changed"):
            return Mistake(_UNCHANGED.name, _no_eval, "compute on the image without changing it (no in-place edits).")
        if any(m != got.get("mode_before") for m in got.get("modes_after") or ()):
            return Mistake(_MODE.name, _no_eval, "note model.training first and give it back with "
                                                 "model.train(was_training) once the prediction is made.")
        value = got.get("value")
        if value is not None and not 0.0 <= value <= 1.0:
            return Mistake(_RANGE.name, _no_eval, "a fill level lies in [0, 1]: clamp the model's output "
                                                  "(lesson 04's sigmoid_range solved the same problem inside the "
                                                  "model).")
    for mistake in PREDICT_FILL.mistakes:
        try:
            if _predict_judge(case, got, PREDICT_FILL.run(mistake.impl, case)) is None:
                return mistake
        except Exception:
            continue
    return None


def _no_eval(model, image, size=None):
    device = next(model.parameters()).device
    with torch.no_grad():
        out = model(ref.to_input(image, size)[None].to(device))
    return float(out.reshape(-1)[0].clamp(0, 1).item())


def _no_normalize(model, image, size=None):
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    x = ref.to_input(image, size) * torch.tensor(ref.IMAGENET_STD).view(3, 1, 1) + \
        torch.tensor(ref.IMAGENET_MEAN).view(3, 1, 1)
    with torch.no_grad():
        out = model(x[None].to(device))
    model.train(was_training)
    return float(out.reshape(-1)[0].clamp(0, 1).item())


def _unscaled(model, image, size=None):
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    x = ref.to_input(image, size) * torch.tensor(ref.IMAGENET_STD).view(3, 1, 1) * 255 + \
        torch.tensor(ref.IMAGENET_MEAN).view(3, 1, 1) * 255
    x = (x - torch.tensor(ref.IMAGENET_MEAN).view(3, 1, 1)) / torch.tensor(ref.IMAGENET_STD).view(3, 1, 1)
    with torch.no_grad():
        out = model(x[None].to(device))
    model.train(was_training)
    return float(out.reshape(-1)[0].clamp(0, 1).item())


def _ignores_size(model, image, size=None):
    return ref.predict_fill(model, image)


_UNCHANGED = Clause("unchanged", "leave `image` as it was", arg="image")
_MODE = Clause("mode", "put the model back in the mode it was in")
_RANGE = Clause("range", "clamped to `[0, 1]`", values=(0.0, 1.0))

PREDICT_FILL = Spec(
    id="predict_fill",
    reference=ref.predict_fill,
    cases=_predict_cases,
    judge=_predict_judge,
    observe=_observe_predict,
    diagnose=_predict_diagnose,
    mistakes=[
        Mistake("no_eval", _no_eval,
                "call model.eval() before predicting: in training mode BatchNorm normalizes with the statistics "
                "of this one image instead of the running statistics learned in training (the batch-size-1 pitfall)."),
        Mistake("no_normalize", _no_normalize,
                "preprocess exactly as in training: ToTensor then Normalize with the ImageNet mean and std."),
        Mistake("unscaled", _unscaled, "divide pixel values by 255 before normalizing (ToTensor does that)."),
        Mistake("ignores_size", _ignores_size,
                "resize the image to `size` x `size` when size is given: the model was trained at that size."),
    ],
    n_visible=5,
    n_hidden=16,
    contract=(
        Clause("optional", "Resize to `size` x `size` when `size` is given", arg="size"),
        Clause("behaviour", "as a Python `float`"),
        _RANGE,
        _MODE,
        Clause("behaviour", "without gradients"),
        _UNCHANGED,
    ),
)

# ---------------------------------------------------------------- widget: same_image_levels

def _same_image_judge(case, got, expected):
    """``expected``: the student's own target (level, size), see :func:`course_lib.fill_level.same_image_target`."""
    level, target_size = expected
    if not (isinstance(got, (tuple, list)) and len(got) == 3):
        return f"expected (level_a, level_b, size), the line the Record button shows; got {describe(got)}"
    a, b, size = got
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (a, b, size)):
        return "level_a and level_b must be numbers and size an integer"
    if int(size) != size or not 4 <= size <= 900:
        return f"size must be an integer image size between 4 and 900, got {size}"
    if int(size) != target_size:
        return f"your levels were recorded at size {int(size)}, but your target is an image of {target_size} rows: " \
               "record both at the size the explorer gives you"
    if not (0 <= a < 1 and 0 <= b < 1):
        return "both levels must be in [0, 1)"
    if abs(a - b) < 0.005:
        return "pick two levels at least 0.005 apart"
    if not np.array_equal(ref.make_fill_image(a, int(size)), ref.make_fill_image(b, int(size))):
        return (f"at size {int(size)} these levels give different images "
                f"({int(a * size)} and {int(b * size)} white rows): "
                "look for two levels that fill the same number of rows")
    if not np.array_equal(ref.make_fill_image(a, target_size), ref.make_fill_image(level, target_size)):
        return (f"your two levels give the same image, but not the image of your target level {level} "
                f"({int(a * size)} white rows where the target has another count)")
    return None


def _same_image_answer(student: str) -> tuple[float, float, int]:
    """Two levels that draw the student's target image: a tenth and nine tenths into its last white row."""
    level, size = ref.same_image_target(student)
    rows = int(level * size)
    return round((rows + 0.1) / size, 3), round((rows + 0.9) / size, 3), size


SAME_IMAGE_LEVELS = Spec(
    id="same_image_levels",
    reference=None,
    judge=_same_image_judge,
    kind="answer",
    target=ref.same_image_target,
    answer_for=_same_image_answer,
    hint="with the explorer at your target's size, move the slider until the image is your target's, "
         "and record two levels inside that one step.",
)

# ------------------------------------------------------------------------ capstone: train_fill
#
# The grader builds the model (the course's build_fill_model) and gives the student's loop a fixed budget from the
# profile; held-out images made with the secret seed go to the judging process, their levels stay in Case.secret.
# What the loop did is watched from outside: an optimizer step hook (how many steps, at which learning rate), a
# gradient hook on the first weight (was .grad zeroed before each backward pass, whatever way), and a forward hook
# (each forward's mode and grad state, and the batch's L1 against the level its own pixels show).


def _capstone_cases(rng, device, n):
    from course_lib.config import current

    budget = ref.settings(current().profile)["capstone"]
    levels = rng.random(budget["held_out"]).astype(np.float32)
    images = np.stack([ref.make_fill_image(float(lv), budget["size"]) for lv in levels])
    seed = torch.tensor(int(rng.integers(1 << 30)), device=device)
    kwargs = {"steps": budget["steps"], "batch_size": budget["batch_size"], "size": budget["size"], "seed": seed}
    label = (f"{budget['steps']} steps of {budget['batch_size']} images at {budget['size']} px, then "
             f"{len(levels)} held-out images")
    return [Case((images,), kwargs, label, secret=levels)]


class _Watch:
    """Hooks on the model and on every optimizer; what they saw, as plain data."""

    def __init__(self, model: nn.Module):
        self.steps, self.accumulated, self.backwards = 0, 0, 0
        self.lrs: list[float] = []
        self.train_forwards, self.train_batch = 0, 0
        self.eval_nograd, self.train_nograd, self.eval_grad = 0, 0, 0
        self.loss: list[float] = []
        first = next(model.parameters())
        self._incoming: list[torch.Tensor] = []
        self._handles = [
            register_optimizer_step_pre_hook(self._step),
            model.register_forward_hook(self._forward),
            first.register_hook(self._grad),
            first.register_post_accumulate_grad_hook(self._accumulated),
        ]

    def _step(self, opt, args, kwargs):
        self.steps += 1
        self.lrs.append(float(opt.param_groups[0].get("lr", 0.0)))

    def _grad(self, g):
        self._incoming[:] = [g.detach().clone()]

    def _accumulated(self, p):
        self.backwards += 1
        if self._incoming and p.grad is not None and not torch.allclose(p.grad, self._incoming[0], rtol=1e-4,
                                                                         atol=1e-7):
            self.accumulated += 1

    def _forward(self, module, inputs, output):
        grad, training = torch.is_grad_enabled(), module.training
        if grad and training:
            self.train_forwards += 1
            x = inputs[0].detach()
            self.train_batch = max(self.train_batch, int(x.shape[0]))
            # A white pixel is far above 0 once normalized, a black one far below: the image tells its level.
            shown = (x[:, 0, :, x.shape[3] // 2] > 0).float().mean(1)
            pred = output.detach().reshape(x.shape[0], -1)[:, 0]
            self.loss.append(float((pred - shown).abs().mean()))
        elif not grad and training:
            self.train_nograd += 1
        elif not grad:
            self.eval_nograd += 1
        else:
            self.eval_grad += 1

    def close(self) -> None:
        for h in self._handles:
            h.remove()

    def report(self) -> dict:
        keys = ("steps", "lrs", "accumulated", "backwards", "train_forwards", "train_batch", "eval_nograd",
                "train_nograd", "eval_grad", "loss")
        return {k: getattr(self, k) for k in keys}


def _observe_capstone(fn, case) -> dict:
    """Train the grader's model with ``fn`` on the case's budget, then predict the held-out images."""
    images = case.args[0]
    k = case.kwargs
    seed = k["seed"]
    device = seed.device
    torch.manual_seed(int(seed))
    np.random.seed(int(seed) % (1 << 32))
    model = ref.build_fill_model().to(device)
    watch = _Watch(model)
    folder = Path(tempfile.mkdtemp(prefix="train_fill_"))
    checkpoint = folder / "fill_level.pth"
    try:
        returned = fn(model, k["steps"], k["batch_size"], k["size"], checkpoint=checkpoint)
    finally:
        watch.close()
    saved = False
    if checkpoint.exists():
        try:
            state = torch.load(checkpoint, map_location="cpu", weights_only=True)
            weights = state.get("model", state) if isinstance(state, dict) else None
            saved = isinstance(weights, dict) and set(weights) == set(model.state_dict())
        except Exception:
            saved = False
        checkpoint.unlink()
    folder.rmdir() if not any(folder.iterdir()) else None
    model.eval()
    preds = []
    with torch.no_grad():
        for chunk in np.array_split(images, max(1, len(images) // 64)):
            x = torch.stack([ref.to_input(img, k["size"]) for img in chunk]).to(device)
            preds.append(model(x).reshape(len(chunk), -1)[:, 0].clamp(0, 1).float().cpu())
    shape = {"type": type(returned).__name__}
    if isinstance(returned, dict):
        shape.update({key: len(v) for key, v in returned.items() if key in ("loss", "val_mae")
                      and isinstance(v, (list, tuple))})
    return {"pred": torch.cat(preds), "watch": watch.report(), "checkpoint": saved, "returned": shape}


def _capstone_judge(case, got, expected):
    if type(got) is not dict or "watch" not in got:
        return f"could not read what your training did ({describe(got)})"
    w, k = got["watch"], case.kwargs
    if w["steps"] != k["steps"]:
        return f"your loop took {w['steps']} optimizer steps; the budget is {k['steps']} (\"{_STEPS.text}\")"
    if w["train_batch"] > k["batch_size"]:
        return f"your loop trained on batches of {w['train_batch']} images; the budget is {k['batch_size']}"
    if w["accumulated"]:
        return (f"in {w['accumulated']} of {w['backwards']} backward passes the gradients of the previous steps "
                f"were still there (\"{_ZERO_GRAD.text}\")")
    if w["train_nograd"]:
        return f"{w['train_nograd']} validation forward passes ran in training mode (\"{_VALIDATE.text}\")"
    if not w["eval_nograd"]:
        return f"your loop never validated (\"{_VALIDATE.text}\")"
    if not got["checkpoint"]:
        return f"nothing loadable was saved at `checkpoint` (\"{_CHECKPOINT.text}\")"
    r = got["returned"]
    if r.get("loss") != k["steps"] or not r.get("val_mae"):
        return f"your function should return {{'loss': [one per step], 'val_mae': [one per validation]}}, " \
               f"got a {r.get('type')} ({r})"
    return None


def _capstone_measure(case, got) -> float:
    pred = torch.as_tensor(got["pred"], dtype=torch.float64).reshape(-1)
    truth = torch.as_tensor(case.secret, dtype=torch.float64).reshape(-1)
    if pred.shape != truth.shape:
        raise ValueError(f"{pred.numel()} predictions for {truth.numel()} images")
    return float((pred - truth).abs().mean())


def _capstone_diagnose(case: Case, got: Any) -> Mistake | None:
    """The known mistake the observed run shows, in the order a teacher would look."""
    if type(got) is not dict or "watch" not in got:
        return None
    w = got["watch"]
    if w["accumulated"]:
        return _CAPSTONE_MISTAKES["no_zero_grad"]
    if w["train_nograd"]:
        return _CAPSTONE_MISTAKES["val_train_mode"]
    loss = w["loss"]
    q = max(1, len(loss) // 4)
    rising = len(loss) >= 8 and float(np.mean(loss[-q:])) > float(np.mean(loss[:q]))
    if rising or max(w["lrs"] or [0.0]) >= 0.05:
        return _CAPSTONE_MISTAKES["lr_too_high"]
    # The levels are here, in the grader: predictions that do not follow them are a model that learned the average.
    pred = torch.as_tensor(got["pred"]).double().reshape(-1)
    truth = torch.as_tensor(case.secret).double().reshape(-1)
    if w["steps"] and pred.numel() == truth.numel() > 1:
        flat = float(pred.std()) < 0.05
        if flat or float(torch.corrcoef(torch.stack([pred, truth]))[0, 1]) < 0.5:
            return _CAPSTONE_MISTAKES["broadcast"]
    return None


def _loop(model, steps, batch_size, size, checkpoint=None, lr=3e-3, zero=True, val_train=False, flat=True):
    """The reference loop with one known mistake switched on, as a student would write it."""
    device = next(model.parameters()).device
    opt = torch.optim.Adam(model.parameters(), lr=lr, fused=True)  # fused: cheaper tests, same mistakes
    history: dict[str, list[float]] = {"loss": [], "val_mae": []}
    val_levels = torch.rand(32, generator=torch.Generator().manual_seed(0))
    for step in range(steps):
        model.train()
        images, levels = ref.load_batch(batch_size, size)
        pred = model(images.to(device))
        pred = pred.reshape(-1) if flat else pred
        loss = (pred - levels.to(device)).abs().mean()
        if zero:
            opt.zero_grad()
        loss.backward()
        opt.step()
        history["loss"].append(loss.item())
        if step + 1 == steps or (step + 1) % max(1, steps // 2) == 0:
            model.train(val_train)
            if not val_train:
                model.eval()
            with torch.no_grad():
                out = model(ref.make_fill_batch(val_levels.to(device), size)).reshape(-1)
            history["val_mae"].append(float((out.cpu() - val_levels).abs().mean()))
            if checkpoint is not None:
                ref.save_atomic({"model": model.state_dict()}, checkpoint)
    return history


def _no_zero_grad(model, steps, batch_size, size, checkpoint=None):
    return _loop(model, steps, batch_size, size, checkpoint, zero=False)


def _broadcast_loop(model, steps, batch_size, size, checkpoint=None):
    return _loop(model, steps, batch_size, size, checkpoint, flat=False)


def _val_train_mode(model, steps, batch_size, size, checkpoint=None):
    return _loop(model, steps, batch_size, size, checkpoint, val_train=True)


def _high_lr(model, steps, batch_size, size, checkpoint=None):
    return _loop(model, steps, batch_size, size, checkpoint, lr=1.0)


_CAPSTONE_MISTAKES = {m.name: m for m in [
    Mistake("no_zero_grad", _no_zero_grad,
            "the gradients pile up from step to step, as in the 40-line recipe, which never zeroes them: "
            "call optimizer.zero_grad() before loss.backward()."),
    Mistake("broadcast", _broadcast_loop,
            "the predictions do not follow the fill level: the model learned the average level instead of reading "
            "the image, which is what a loss of a [B, 1] output against [B] targets teaches (it broadcasts to "
            "[B, B]): flatten the output, or use your fill_l1_loss."),
    Mistake("val_train_mode", _val_train_mode,
            "switch to model.eval() before validating (and back to model.train() before the next step): in "
            "training mode BatchNorm uses the validation batch's own statistics and updates its running ones."),
    Mistake("lr_too_high", _high_lr,
            "the training loss rises instead of falling: the learning rate is too high; try 1e-3 to 3e-3 with Adam."),
]}

_ZERO_GRAD = Clause("zero_grad", "zero the gradients before every backward pass")
_VALIDATE = Clause("behaviour", "validate in `eval()` mode under `torch.no_grad()`")
_CHECKPOINT = Clause("optional", "save the weights to `checkpoint` when it is given", arg="checkpoint")
_STEPS = Clause("behaviour", "exactly `steps` optimizer steps on batches of `batch_size` images")

TRAIN_FILL = Spec(
    id="train_fill",
    reference=ref.train_fill,
    cases=_capstone_cases,
    judge=_capstone_judge,
    observe=_observe_capstone,
    measure=_capstone_measure,
    diagnose=_capstone_diagnose,
    bands=Bands(metric="mean absolute error", higher_is_better=False,
                # A constant (the mean level, 0.5) scores 0.25 give or take 0.007 on 512 held-out images: the
                # lowest edge stays well under it in every profile.
                edges={"ci": (0.14, 0.17, 0.19, 0.21), "cpu": (0.04, 0.07, 0.12, 0.2),
                       "gpu": (0.02, 0.04, 0.08, 0.15)},
                fractions=(1.0, 0.75, 0.5, 0.25)),
    seconds={"ci": 40.0, "cpu": 600.0, "gpu": 300.0},
    mistakes=list(_CAPSTONE_MISTAKES.values()),
    n_visible=1,
    n_hidden=1,
    contract=(_STEPS, _ZERO_GRAD, _VALIDATE, _CHECKPOINT,
              Clause("behaviour", "return `{'loss': [...], 'val_mae': [...]}`")),
    forbidden=("course_lib.fill_level.train_fill_model",),
)

SPECS = [MAKE_FILL_IMAGE, LOAD_BATCH, FILL_L1_LOSS, BUILD_FILL_MODEL, PREDICT_FILL, SAME_IMAGE_LEVELS, TRAIN_FILL]
