"""Check specs for lesson 06_fill_level: cases, judges and known wrong answers."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from course_lib import fill_level as ref
from course_lib.checks import Case, Mistake, Spec, compare, describe, output_shape

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


def _image_judge(case, got, expected):
    if isinstance(got, np.ndarray) and got.dtype != np.uint8 and got.shape == expected.shape:
        return f"the image has dtype {got.dtype}; images for ToPILImage/imshow are uint8 (np.zeros(..., np.uint8))"
    return compare(got, expected)


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
)

# ----------------------------------------------------------------------------- load_batch

MEAN = torch.tensor(ref.IMAGENET_MEAN).view(1, 3, 1, 1)
STD = torch.tensor(ref.IMAGENET_STD).view(1, 3, 1, 1)


def _batch_cases(rng, device, n):
    sizes = [(1, 16), (8, 32), (16, 20)] + [(int(rng.integers(2, 24)), int(rng.integers(8, 64))) for _ in range(n)]
    return [Case((b, s), {}, f"batch_size={b}, size={s}") for b, s in sizes[: max(n, 3)]]


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
    if images.dtype != torch.float32 or levels.dtype != torch.float32:
        return f"images and levels should be float32, got {images.dtype} and {levels.dtype}"
    if float(levels.min()) < 0 or float(levels.max()) >= 1:
        return "levels must lie in [0, 1)"
    raw = images.detach().cpu() * STD + MEAN
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


def _unnormalized(batch_size, size):
    levels = torch.from_numpy(np.random.random(batch_size)).float()
    imgs = torch.stack([torch.from_numpy(ref.make_fill_image(float(lv), size)).permute(2, 0, 1).float() / 255
                        for lv in levels])
    return imgs, levels


def _levels_column(batch_size, size):
    images, levels = ref.load_batch(batch_size, size)
    return images, levels[:, None]


LOAD_BATCH = Spec(
    id="load_batch",
    # Random output: the judge checks properties, not equality with the reference's own draw.
    reference=ref.load_batch,
    cases=_batch_cases,
    judge=_batch_judge,
    mistakes=[
        Mistake("unnormalized", _unnormalized,
                "apply tf.Normalize(mean, std) with the ImageNet statistics after ToTensor."),
        Mistake("levels_column", _levels_column, "levels should be a flat [B] tensor, not [B, 1]."),
    ],
    n_visible=3,
    n_hidden=12,
)

# --------------------------------------------------------------------------- fill_l1_loss

def _loss_cases(rng, device, n):
    out = []
    for i in range(max(n, 3)):
        b = [4, 8, 1][i] if i < 3 else int(rng.integers(2, 65))
        pred = torch.from_numpy(rng.random((b, 1))).float().to(device)
        target = torch.from_numpy(rng.random(b)).float().to(device)
        out.append(Case((pred, target), {}, f"pred [{b}, 1], target [{b}]"))
    return out


def _broadcast(pred, target):
    return torch.abs(pred - target).mean()


def _mse(pred, target):
    return ((pred.reshape(-1) - target) ** 2).mean()


def _sum(pred, target):
    return (pred.reshape(-1) - target).abs().sum()


def _no_abs(pred, target):
    return (pred.reshape(-1) - target).mean()


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
    ],
    n_visible=5,
    n_hidden=30,
    # Each is tripped in the judging process, the C functions underneath too, so no route to them counts.
    forbidden=("torch.nn.functional.l1_loss", "torch.nn.L1Loss", "fastai.losses.L1LossFlat", "torch._C._nn.l1_loss",
               "torch.ops.aten.l1_loss"),
)

# ----------------------------------------------------------------------- build_fill_model

def _model_cases(rng, device, n):
    return [Case((), {}, "build_fill_model()")]


def _observe_model(fn, case) -> dict:
    """What the judge needs to know about the model ``fn`` builds, as plain data (it travels to the grader)."""
    import torchvision

    got = fn(*case.args, **case.kwargs)
    if not isinstance(got, nn.Module):
        return {"module": False, "describe": describe(got)}
    fc = getattr(got, "fc", None)
    out = {"module": True, "resnet": isinstance(got, torchvision.models.ResNet), "type": type(got).__name__,
           "fc": "Linear" if isinstance(fc, nn.Linear) else describe(fc)}
    if isinstance(fc, nn.Linear):
        out.update(in_features=fc.in_features, out_features=fc.out_features)
    out["blocks"] = [len(getattr(got, f"layer{i}", ())) for i in range(1, 5)]
    out["output"] = output_shape(got, torch.zeros(2, 3, 32, 32))
    return out


def _model_judge(case, got, expected):
    if not got["module"]:
        return f"expected a torch.nn.Module, got {got['describe']}"
    if not got["resnet"]:
        return f"expected a torchvision ResNet (torchvision.models.resnet18), got {got['type']}"
    if got["fc"] != "Linear":
        return f"model.fc should be an nn.Linear, got {got['fc']}"
    if got["out_features"] == 1000:
        return "model.fc still has the 1000 ImageNet classes: replace it with nn.Linear(512, 1)"
    if got["out_features"] != 1 or got["in_features"] != 512:
        return f"model.fc should map 512 features to 1 output, not {got['in_features']} -> {got['out_features']}"
    if got["blocks"] != [2, 2, 2, 2]:
        return f"that is not a resnet18 (blocks per stage {got['blocks']}, resnet18 has [2, 2, 2, 2])"
    if got["output"] != [2, 1]:
        return f"for a batch [2, 3, 32, 32] the model should output [2, 1], got {got['output']}"
    return None


def _keeps_head(pretrained: bool = False):
    import torchvision

    return torchvision.models.resnet18(weights=None)


BUILD_FILL_MODEL = Spec(
    id="build_fill_model",
    # Fresh random weights every call: the judge compares structure, which _observe_model reports.
    reference=ref.build_fill_model,
    cases=_model_cases,
    judge=_model_judge,
    observe=_observe_model,
    mistakes=[Mistake("kept_head", _keeps_head, "replace model.fc = nn.Linear(model.fc.in_features, 1).")],
    n_visible=1,
    n_hidden=1,
)

# ---------------------------------------------------------------------------- predict_fill

class _Probe(nn.Module):
    """A tiny model whose output depends on normalization, on BatchNorm mode and on size.

    It also records whether it ran with gradients enabled, so the judge can tell.
    """

    def __init__(self, seed: int):
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
        self.grad_seen: list[bool] = []
        self.sizes_seen: list[tuple] = []

    def forward(self, x):
        self.grad_seen.append(torch.is_grad_enabled())
        self.sizes_seen.append(tuple(x.shape))
        h = self.bn(self.conv(x)).relu().mean((2, 3))
        return torch.sigmoid(self.fc(h)) * 0.9 + 0.05


def _predict_cases(rng, device, n):
    # A case names its probe by seed instead of holding it: the probe records what the student's
    # function did to it, so every run builds its own (see _observe_predict). The seed is a tensor
    # so that it travels to the kernel's device, where the probe is then built.
    out = []
    for _ in range(max(n, 2)):
        seed = torch.tensor(int(rng.integers(1 << 30)), device=device)
        lv = float(np.round(rng.random(), 3))
        img = ref.make_fill_image(lv, int(rng.integers(16, 80)))
        out.append(Case((img,), {"probe_seed": seed}, f"a model in training mode, image of level {lv}"))
    return out


def _observe_predict(fn, case) -> dict:
    """Run ``fn(model, image)`` on a fresh probe in training mode; report the answer and how the model ran."""
    seed = case.kwargs["probe_seed"]
    model = _Probe(int(seed)).to(seed.device)
    model.train()  # a student must switch to eval mode themselves
    got = fn(model, case.args[0].copy())
    kind = "float" if isinstance(got, float) else "tensor" if isinstance(got, torch.Tensor) else "other"
    # The probe is fresh, so its first forward pass is the student's.
    return {"type": kind, "describe": describe(got), "value": got if kind == "float" else None,
            "grad": bool(model.grad_seen and model.grad_seen[0])}


def _predict_judge(case, got, expected):
    if got["type"] == "tensor":
        return f"expected a Python float, got {got['describe']}: return out.item()"
    if got["type"] != "float":
        return f"expected a float, got {got['describe']}"
    if got["grad"]:
        return "the model ran with gradients enabled: wrap the forward pass in `with torch.no_grad():`"
    value = got["value"]
    if not 0.0 <= value <= 1.0:
        return f"the prediction {value:.4f} is outside [0, 1]: clamp it"
    if abs(value - expected["value"]) > 1e-4:
        return f"expected {expected['value']:.5f}, got {value:.5f}"
    return None


def _no_eval(model, image, size=None):
    device = next(model.parameters()).device
    with torch.no_grad():
        out = model(ref.to_input(image, size)[None].to(device))
    return float(out.reshape(-1)[0].clamp(0, 1).item())


def _no_normalize(model, image, size=None):
    device = next(model.parameters()).device
    model.eval()
    x = torch.from_numpy(image).permute(2, 0, 1).float().div(255)[None].to(device)
    with torch.no_grad():
        out = model(x)
    return float(out.reshape(-1)[0].clamp(0, 1).item())


def _unscaled(model, image, size=None):
    device = next(model.parameters()).device
    model.eval()
    x = torch.from_numpy(image).permute(2, 0, 1).float()
    x = (x - torch.tensor(ref.IMAGENET_MEAN).view(3, 1, 1)) / torch.tensor(ref.IMAGENET_STD).view(3, 1, 1)
    with torch.no_grad():
        out = model(x[None].to(device))
    return float(out.reshape(-1)[0].clamp(0, 1).item())


PREDICT_FILL = Spec(
    id="predict_fill",
    reference=ref.predict_fill,
    cases=_predict_cases,
    judge=_predict_judge,
    observe=_observe_predict,
    mistakes=[
        Mistake("no_eval", _no_eval,
                "call model.eval() before predicting: in training mode BatchNorm normalizes with the statistics "
                "of this one image instead of the running statistics learned in training (the batch-size-1 pitfall)."),
        Mistake("no_normalize", _no_normalize,
                "preprocess exactly as in training: ToTensor then Normalize with the ImageNet mean and std."),
        Mistake("unscaled", _unscaled, "divide pixel values by 255 before normalizing (ToTensor does that)."),
    ],
    n_visible=3,
    n_hidden=12,
)

# ---------------------------------------------------------------- widget: same_image_levels

def _same_image_judge(case, got, expected):
    if not (isinstance(got, (tuple, list)) and len(got) == 3):
        return f"expected (level_a, level_b, size), the line the Record button shows; got {describe(got)}"
    a, b, size = got
    if not all(isinstance(v, (int, float)) for v in (a, b, size)):
        return "level_a and level_b must be numbers and size an integer"
    if int(size) != size or not 4 <= size <= 900:
        return f"size must be an integer image size between 4 and 900, got {size}"
    if not (0 <= a < 1 and 0 <= b < 1):
        return "both levels must be in [0, 1)"
    if abs(a - b) < 0.005:
        return "pick two levels at least 0.005 apart"
    if not np.array_equal(ref.make_fill_image(a, int(size)), ref.make_fill_image(b, int(size))):
        return (f"at size {int(size)} these levels give different images "
                f"({int(a * size)} and {int(b * size)} white rows): "
                "look for two levels that fill the same number of rows")
    return None


SAME_IMAGE_LEVELS = Spec(
    id="same_image_levels",
    reference=None,
    judge=_same_image_judge,
    kind="answer",
    hint="with the explorer, set a small size, move the slider until the white-row count changes, "
         "and record two levels inside one step.",
)

SPECS = [MAKE_FILL_IMAGE, LOAD_BATCH, FILL_L1_LOSS, BUILD_FILL_MODEL, PREDICT_FILL, SAME_IMAGE_LEVELS]
