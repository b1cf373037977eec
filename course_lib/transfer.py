"""Transfer learning: start from a trained resnet, freeze, replace the head, keep the best epoch.

Reference implementations for lesson 02_transfer_learning, and the pieces the lesson uses once
the student has written them: the flower DataLoaders with the tutorial's transforms, the
pretrained backbone for the profile, a comparison of scratch / feature extraction / fine-tuning
on the same data, prediction figures, and a fastai Learner over the same backbone.
"""
from __future__ import annotations

import copy
import functools
import json
from pathlib import Path
from typing import Callable, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import Tensor, nn

from course_lib.backbone import PRETRAIN_SETTINGS, pretrained_resnet
from course_lib.common import IMAGENET_MEAN, IMAGENET_STD, profile_settings, progress_bar, save_atomic

# `pretrain` sizes course_lib's own pretraining when no ImageNet weights are cached: the shared
# backbone's settings (course_lib.backbone.PRETRAIN_SETTINGS), which lesson 03 loads too.
# `capstone`: the final exercise's recipe (image size, how many views of each labelled photo go through the frozen
# body, full-batch steps of the new head and their rate), and `heldout_per_class`, how many new photos of each class
# the grader draws to test it on.
PROFILE_SETTINGS: dict[str, dict] = {
    "ci": dict(size=48, batch_size=16, head_epochs=2, all_epochs=1, compare_epochs=2, step_size=7,
               head_lr=1e-2, all_lr=1e-3, scratch_lr=1e-3, fastai_epochs=1, lr_find_iterations=20, num_workers=0,
               pretrain=PRETRAIN_SETTINGS["ci"],
               capstone=dict(size=48, views=6, steps=200, lr=1e-2), heldout_per_class=20),
    "cpu": dict(size=64, batch_size=16, head_epochs=4, all_epochs=3, compare_epochs=6, step_size=7,
                head_lr=1e-2, all_lr=1e-3, scratch_lr=1e-3, fastai_epochs=1, lr_find_iterations=60, num_workers=0,
                pretrain=PRETRAIN_SETTINGS["cpu"],
                capstone=dict(size=64, views=8, steps=300, lr=1e-2), heldout_per_class=20),
    "gpu": dict(size=128, batch_size=32, head_epochs=10, all_epochs=8, compare_epochs=15, step_size=7,
                head_lr=1e-2, all_lr=1e-4, scratch_lr=1e-3, fastai_epochs=4, lr_find_iterations=100, num_workers=4,
                pretrain=PRETRAIN_SETTINGS["gpu"],
                capstone=dict(size=128, views=10, steps=400, lr=1e-2), heldout_per_class=50),
}

HISTORY_KEYS = ("train_loss", "train_acc", "valid_loss", "valid_acc", "lr")

settings = profile_settings(PROFILE_SETTINGS, "transfer-learning")


# ----------------------------------------------------------------------------- exercises

def set_parameter_requires_grad(model: nn.Module, feature_extracting: bool) -> None:
    """Freeze every parameter of ``model`` (``requires_grad = False``) when ``feature_extracting``.

    Changes ``model`` in place and returns nothing; with ``feature_extracting=False`` the model
    is left as it is. A frozen parameter gets no gradient, so no optimizer can change it.
    """
    if feature_extracting:
        for param in model.parameters():
            param.requires_grad = False


def replace_head(model: nn.Module, num_classes: int) -> nn.Module:
    """Give a resnet a new, trainable ``fc``: ``Linear(model.fc.in_features, num_classes)``; return the model.

    The new layer's weight is ``[num_classes, in_features]`` and its bias ``[num_classes]``; the
    model then maps ``[N, 3, H, W]`` images to ``[N, num_classes]`` logits. The rest of the
    model is untouched, frozen or not. ``in_features`` is 512 for resnet18/34 and 2048 for
    resnet50 and deeper, so it is read from the old head, never typed in.
    """
    model.fc = nn.Linear(model.fc.in_features, num_classes)
    return model


def params_to_update(model: nn.Module) -> list[nn.Parameter]:
    """The parameters of ``model`` that require grad, in ``model.parameters()`` order.

    This is what to hand to the optimizer: after freezing the body and replacing the head, it
    is the head's weight ``[num_classes, in_features]`` and bias ``[num_classes]``.
    """
    return [p for p in model.parameters() if p.requires_grad]


def count_trainable(model: nn.Module) -> int:
    """The number of trainable scalars in ``model``: the sum of ``p.numel()`` over parameters that require grad."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def train_model(model: nn.Module, dataloaders: dict, criterion: Callable[[Tensor, Tensor], Tensor],
                optimizer: torch.optim.Optimizer, scheduler=None, num_epochs: int = 1,
                checkpoint: str | Path | None = None,
                progress: bool = False) -> tuple[nn.Module, dict[str, list[float]]]:
    """Train ``model`` for ``num_epochs``, validating after each, and return it with its best validation weights.

    ``dataloaders`` is ``{"train": DataLoader, "valid": DataLoader}`` yielding images ``[B, 3, H, W]``
    and class indices ``[B]``; ``model`` maps images to logits ``[B, C]`` and ``criterion(logits,
    labels)`` gives a scalar loss. Batches are moved to the model's device. Every epoch runs a
    training phase (``model.train()``, one ``optimizer.step()`` per batch) and then a validation
    phase (``model.eval()`` and no gradients), then ``scheduler.step()`` once (if a scheduler is
    given). Whenever validation accuracy beats the best so far, a *copy* of the weights is kept
    (and saved to ``checkpoint`` with the accuracy and the optimizer's state, if given). At the
    end the model is loaded with the best weights, not the last ones.

    Returns ``(model, history)``; ``history`` maps ``train_loss``, ``train_acc``, ``valid_loss``,
    ``valid_acc`` (per-image means over each phase, Python floats) and ``lr`` (the learning rate
    the epoch trained with) to lists of ``num_epochs`` numbers.
    """
    device = next(model.parameters()).device
    history: dict[str, list[float]] = {key: [] for key in HISTORY_KEYS}
    best_acc, best_state = -1.0, copy.deepcopy(model.state_dict())
    epochs = progress_bar(range(num_epochs), progress, "epochs")
    for _ in epochs:
        history["lr"].append(optimizer.param_groups[0]["lr"])
        for phase in ("train", "valid"):
            training = phase == "train"
            model.train(training)
            total_loss, correct, seen = 0.0, 0, 0
            for inputs, labels in dataloaders[phase]:
                inputs, labels = inputs.to(device), labels.to(device)
                # Validation needs no graph: it would only cost memory and time.
                with torch.set_grad_enabled(training):
                    outputs = model(inputs)
                    loss = criterion(outputs, labels)
                if training:
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
                total_loss += loss.item() * inputs.size(0)
                correct += (outputs.argmax(dim=1) == labels).sum().item()
                seen += inputs.size(0)
            history[f"{phase}_loss"].append(total_loss / seen)
            history[f"{phase}_acc"].append(correct / seen)
        if history["valid_acc"][-1] > best_acc:
            best_acc = history["valid_acc"][-1]
            # state_dict() returns the live tensors; without the copy the "best" weights would
            # keep changing with every later step and end up being the last ones.
            best_state = copy.deepcopy(model.state_dict())
            if checkpoint is not None:
                save_checkpoint(checkpoint, best_state, best_acc, optimizer)
        if scheduler is not None:
            scheduler.step()
        if hasattr(epochs, "set_postfix"):
            epochs.set_postfix(train_loss=f"{history['train_loss'][-1]:.3f}",
                               valid_acc=f"{history['valid_acc'][-1]:.3f}", refresh=False)
    model.load_state_dict(best_state)
    return model, history


def classify_flowers(path: str | Path, images: str | Path) -> list[int]:
    """Train a flower classifier on the labelled photos under ``path`` and name each photo in ``images``.

    ``path`` is a flowers folder (``train/<class>/*.jpg``, ``valid/<class>/*.jpg``); ``images`` a folder of new,
    unlabelled ``*.jpg`` photos of the same kinds. Returns a list of ``int``, one per file of
    ``sorted(Path(images).glob("*.jpg"))``: the class index as ``ImageFolder(path / "train")`` numbers the classes
    (``0 .. n_classes - 1``).

    The recipe (``settings()["capstone"]``): the pretrained backbone frozen in evaluation mode, so its BatchNorm
    keeps the statistics it learned; its 512 features for every labelled photo, once as it is and ``views - 1``
    times augmented; a new head trained on those features in full batches; then the photos of ``images``,
    resized as for validation, through body and head. Runs on the kernel's device.
    """
    from PIL import Image
    from torch.utils.data import ConcatDataset, DataLoader
    from torchvision.datasets import ImageFolder

    from course_lib.config import current

    s = settings()["capstone"]
    device = current().device
    torch.manual_seed(0)
    path = Path(path)
    train_tf, valid_tf = flower_transforms(s["size"])
    n_classes = len(ImageFolder(path / "train").classes)
    model = replace_head(backbone(progress=False), n_classes)
    head, model.fc = model.fc, nn.Identity()
    set_parameter_requires_grad(model, True)
    model = model.to(device).eval()
    features, labels = [], []
    with torch.no_grad():
        for view in progress_bar(range(s["views"]), current().profile != "ci", "features, view by view"):
            # Both labelled splits: the photos to be named are new ones, so nothing needs holding out here.
            ds = ConcatDataset([ImageFolder(path / split, valid_tf if view == 0 else train_tf)
                                for split in ("train", "valid")])
            for x, y in DataLoader(ds, batch_size=64):
                features.append(model(x.to(device)))
                labels.append(y.to(device))
    x_all, y_all = torch.cat(features), torch.cat(labels)
    head = head.to(device)
    optimizer = torch.optim.Adam(head.parameters(), lr=s["lr"])
    for _ in range(s["steps"]):
        optimizer.zero_grad()
        nn.functional.cross_entropy(head(x_all), y_all).backward()
        optimizer.step()
    model.fc = head
    files = sorted(Path(images).glob("*.jpg"))
    predictions: list[int] = []
    for start in range(0, len(files), 64):
        batch = torch.stack([valid_tf(Image.open(f).convert("RGB")) for f in files[start:start + 64]])
        predictions += predict(model, batch).tolist()
    return predictions


# ----------------------------------------------------------------------------- lesson helpers

def heldout_flowers(folder: str | Path, seed: int, profile: str | None = None) -> tuple[Path, list[int]]:
    """New photos of the lesson's flower kinds, drawn from ``seed``, without their labels: ``(images, labels)``.

    ``images`` is ``folder/images``, holding ``settings(profile)["heldout_per_class"]`` photos of each class as
    ``flower_XXXXX.jpg`` in a shuffled order (written in yet another order, so the folder's listing is not sorted);
    ``labels[k]`` is the class index, as ``ImageFolder`` numbers the training folders, of the ``k``-th file of
    ``sorted(images.glob("*.jpg"))``. Made with the lesson's own data maker at the profile's image size; files
    0644 and folders 0755, so a judging process under another uid reads them.
    """
    import shutil

    from course_lib.config import current
    from course_lib.data.flowers import PROFILE_SIZES, make_flowers

    profile = profile or current().profile
    sizes = PROFILE_SIZES[profile]
    folder = Path(folder)
    drawn = make_flowers(folder / "drawn", sizes["n_classes"], 0, settings(profile)["heldout_per_class"],
                         seed=seed, size=sizes["size"])
    names = sorted(p.name for p in (drawn / "valid").iterdir())  # ImageFolder's order: folder names as strings
    found = sorted((names.index(p.parent.name), p) for p in (drawn / "valid").glob("*/*.jpg"))
    rng = np.random.default_rng(seed)
    slot = rng.permutation(len(found))
    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    labels = [0] * len(found)
    for k in rng.permutation(len(found)):
        label, src = found[k]
        target = images / f"flower_{slot[k]:05d}.jpg"
        shutil.move(str(src), target)
        target.chmod(0o644)
        labels[slot[k]] = label
    shutil.rmtree(drawn)
    for p in (folder, images):
        p.chmod(0o755)
    return images, labels



def save_checkpoint(path: str | Path, state_dict: dict, best_acc: float,
                    optimizer: torch.optim.Optimizer | None = None) -> None:
    """Save ``{"state_dict", "best_acc", "optimizer"}`` to ``path`` atomically (write, then rename)."""
    save_atomic({"state_dict": state_dict, "best_acc": best_acc,
                 "optimizer": optimizer.state_dict() if optimizer is not None else None}, path)


def load_checkpoint(path: str | Path, model: nn.Module) -> float:
    """Load the weights saved by ``train_model(..., checkpoint=path)`` into ``model``; return their accuracy."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No checkpoint at {path}: run the training cell with checkpoint={str(path)!r} first.")
    saved = torch.load(path, map_location=next(model.parameters()).device, weights_only=True)
    model.load_state_dict(saved["state_dict"])
    return float(saved["best_acc"])


def flower_transforms(size: int):
    """``(train_tf, valid_tf)``: the tutorial's augmentation for training; for validation only the same size
    and statistics."""
    from torchvision import transforms as T

    normalize = T.Normalize(IMAGENET_MEAN, IMAGENET_STD)
    train_tf = T.Compose([
        T.RandomRotation(30),
        T.RandomResizedCrop(size, scale=(0.6, 1.0)),
        T.RandomHorizontalFlip(),
        T.ColorJitter(brightness=0.2, contrast=0.1, saturation=0.1, hue=0.02),
        T.ToTensor(),
        normalize,
    ])
    valid_tf = T.Compose([T.Resize(size), T.CenterCrop(size), T.ToTensor(), normalize])
    return train_tf, valid_tf


def flower_dataloaders(path: Path, size: int, batch_size: int, num_workers: int = 0,
                       seed: int = 0) -> tuple[dict, list[str]]:
    """``({"train": DataLoader, "valid": DataLoader}, class_names)`` over ``path/train`` and ``path/valid``.

    ``class_names[i]`` is the flower name of class index ``i`` (from ``cat_to_name.json``).
    """
    from torch.utils.data import DataLoader
    from torchvision.datasets import ImageFolder

    train_tf, valid_tf = flower_transforms(size)
    train_ds, valid_ds = ImageFolder(path / "train", train_tf), ImageFolder(path / "valid", valid_tf)
    cat_to_name = json.loads((path / "cat_to_name.json").read_text())
    names = [cat_to_name[c] for c in train_ds.classes]
    gen = torch.Generator().manual_seed(seed)
    dls = {"train": DataLoader(train_ds, batch_size=batch_size, shuffle=True, num_workers=num_workers, generator=gen),
           "valid": DataLoader(valid_ds, batch_size=2 * batch_size, shuffle=False, num_workers=num_workers)}
    return dls, names


def backbone(profile: str | None = None, progress: bool = True) -> nn.Module:
    """The pretrained resnet18 for ``profile``: ImageNet weights when cached, else course_lib's own pretraining."""
    return pretrained_resnet("resnet18", progress=progress, **settings(profile)["pretrain"])


def denormalize(x: Tensor) -> np.ndarray:
    """ImageNet-normalised ``[3, H, W]`` -> ``[H, W, 3]`` in 0..1 for ``imshow``."""
    mean, std = torch.tensor(IMAGENET_MEAN)[:, None, None], torch.tensor(IMAGENET_STD)[:, None, None]
    return (x.detach().cpu() * std + mean).clamp(0, 1).permute(1, 2, 0).numpy()


def show_images(images: Tensor, titles: Sequence[str], colors: Sequence[str] | None = None, ncols: int = 6):
    """A grid of normalised images ``[N, 3, H, W]`` with a title each; returns the figure."""
    n = len(images)
    nrows = (n + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.0 * ncols, 2.2 * nrows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            ax.imshow(denormalize(images[i]))
            ax.set_title(titles[i], fontsize=8, color=(colors[i] if colors else "black"))
    fig.tight_layout()
    return fig


@torch.no_grad()
def predict(model: nn.Module, images: Tensor) -> Tensor:
    """Class indices ``[N]`` for normalised images ``[N, 3, H, W]``, in eval mode."""
    model.eval()
    device = next(model.parameters()).device
    return model(images.to(device)).argmax(dim=1).cpu()


@torch.no_grad()
def validation_results(model: nn.Module, dl) -> dict[str, Tensor]:
    """Every validation image of ``dl`` through ``model`` in eval mode: ``images`` ``[N, 3, H, W]`` (on the CPU),
    ``labels``, ``preds`` and per-image cross-entropy ``losses``, each ``[N]``."""
    model.eval()
    device = next(model.parameters()).device
    out: dict[str, list[Tensor]] = {"images": [], "labels": [], "preds": [], "losses": []}
    for x, y in dl:
        logits = model(x.to(device)).cpu()
        out["images"].append(x)
        out["labels"].append(y)
        out["preds"].append(logits.argmax(dim=1))
        out["losses"].append(nn.functional.cross_entropy(logits, y, reduction="none"))
    return {k: torch.cat(v) for k, v in out.items()}


def plot_confusion(labels: Tensor, preds: Tensor, names: Sequence[str], ax=None):
    """The confusion matrix: row = true class, column = predicted class, each cell the number of images."""
    n = len(names)
    counts = torch.zeros(n, n, dtype=torch.long)
    for t, p in zip(labels.tolist(), preds.tolist()):
        counts[t, p] += 1
    if ax is None:
        _, ax = plt.subplots(figsize=(0.55 * n + 2.5, 0.55 * n + 2))
    ax.imshow(counts.numpy(), cmap="Blues")
    ax.set_xticks(range(n), names, rotation=90, fontsize=8)
    ax.set_yticks(range(n), names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for t in range(n):
        for p in range(n):
            if counts[t, p]:
                ax.text(p, t, int(counts[t, p]), ha="center", va="center", fontsize=8,
                        color="white" if counts[t, p] > counts.max() / 2 else "black")
    ax.set_title(f"accuracy {counts.diag().sum().item() / max(1, counts.sum().item()):.0%}: the diagonal")
    return ax


def plot_top_losses(results: dict[str, Tensor], names: Sequence[str], k: int = 6):
    """The ``k`` validation images the model got most wrong (highest loss): prediction, truth and loss on each."""
    top = results["losses"].argsort(descending=True)[:k]
    titles = [f"{names[int(results['preds'][i])]}\ntrue: {names[int(results['labels'][i])]}\n"
              f"loss {float(results['losses'][i]):.2f}" for i in top]
    colors = ["green" if results["preds"][i] == results["labels"][i] else "red" for i in top]
    return show_images(results["images"][top], titles, colors, ncols=k)


def plot_history(histories: dict[str, dict[str, list[float]]], ax=None):
    """Validation accuracy per epoch for each named history, the best epoch of each marked."""
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.5))
    for name, h in histories.items():
        epochs = np.arange(1, len(h["valid_acc"]) + 1)
        line, = ax.plot(epochs, h["valid_acc"], marker=".", label=name)
        best = int(np.argmax(h["valid_acc"]))
        ax.plot(epochs[best], h["valid_acc"][best], "o", ms=10, mfc="none", color=line.get_color())
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation accuracy")
    ax.set_ylim(0, 1)
    ax.legend()
    ax.set_title("circles: the epoch train_model keeps")
    return ax


def compare_strategies(dls: dict, n_classes: int, make_backbone: Callable[[], nn.Module], epochs: int,
                       train: Callable = train_model, s: dict | None = None, device: torch.device | str = "cpu",
                       seed: int = 0) -> dict[str, dict[str, list[float]]]:
    """Histories of three ways to train a resnet18 on the same data for the same epochs.

    ``scratch``: random weights, everything trained. ``feature extraction``: pretrained, frozen,
    only the new head trained. ``fine-tuning``: pretrained, everything trained at a lower rate.
    ``train`` is the training loop to use (the student's ``train_model``).
    """
    from torchvision.models import resnet18

    s = s or settings()
    runs = {}
    for name in ("scratch", "feature extraction", "fine-tuning"):
        torch.manual_seed(seed)
        if name == "scratch":
            model, lr = resnet18(num_classes=n_classes), s["scratch_lr"]
        else:
            model = make_backbone()
            set_parameter_requires_grad(model, name == "feature extraction")
            model = replace_head(model, n_classes)
            lr = s["head_lr"] if name == "feature extraction" else s["all_lr"]
        model = model.to(device)
        opt = torch.optim.Adam(params_to_update(model), lr=lr)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=s["step_size"], gamma=0.1)
        _, runs[name] = train(model, dls, nn.CrossEntropyLoss(), opt, sched, epochs)
    return runs


def resnet_splitter(model: nn.Module):
    """fastai parameter groups for ``nn.Sequential(body, head)`` over a resnet body: stem..layer2, layer3..4, head."""
    from fastai.vision.all import L, params

    body, head = model[0], model[1]
    return L(body[:6], body[6:], head).map(params)


def fastai_learner(dls, make_backbone: Callable[[], nn.Module], n_out: int, metrics=None, loss_func=None):
    """A fastai Learner with ``make_backbone()``'s body and a new head, in three parameter groups.

    What ``vision_learner`` builds from a downloaded architecture, made from our own backbone:
    ``create_body`` cuts the resnet before its pooling, ``create_head`` adds pooling and a new
    classifier, and the splitter lets ``freeze_to`` and ``slice`` learning rates address groups.
    """
    from fastai.vision.all import Learner, accuracy, create_body, create_head

    body = create_body(make_backbone(), pretrained=True)
    model = nn.Sequential(body, create_head(512, n_out))
    learn = Learner(dls, model, loss_func=loss_func, splitter=resnet_splitter,
                    metrics=metrics if metrics is not None else [accuracy])
    learn.freeze()
    return learn


# ----------------------------------------------------------------------------- the freezing explorer

RESNET_GROUPS = ("stem", "layer1", "layer2", "layer3", "layer4", "fc")


def group_of(name: str) -> str:
    """Which of ``RESNET_GROUPS`` a resnet parameter name (``layer3.1.conv2.weight``) belongs to."""
    head = name.split(".", 1)[0]
    return head if head in RESNET_GROUPS else "stem"


def freeze_groups(model: nn.Module, train: Sequence[str]) -> nn.Module:
    """Make exactly the parameters of the groups in ``train`` trainable (see ``RESNET_GROUPS``)."""
    unknown = set(train) - set(RESNET_GROUPS)
    if unknown:
        raise ValueError(f"unknown groups {sorted(unknown)}; choose from {RESNET_GROUPS}")
    for name, p in model.named_parameters():
        p.requires_grad = group_of(name) in train
    return model


def trainable_by_group(model: nn.Module) -> dict[str, tuple[int, int]]:
    """``{group: (trainable scalars, all scalars)}`` for each of ``RESNET_GROUPS``."""
    out = {g: [0, 0] for g in RESNET_GROUPS}
    for name, p in model.named_parameters():
        g = group_of(name)
        out[g][1] += p.numel()
        if p.requires_grad:
            out[g][0] += p.numel()
    return {g: (a, b) for g, (a, b) in out.items()}


def gradient_norms(model: nn.Module, size: int = 64, seed: int = 0) -> dict[str, float]:
    """One forward and backward pass on random images; the gradient norm each group received (0 when frozen)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(4, 3, size, size, generator=gen)
    model.zero_grad(set_to_none=True)
    was_training = model.training
    model.train()
    out = model(x)
    if out.requires_grad:
        out.logsumexp(dim=1).mean().backward()
    model.train(was_training)
    sq = {g: 0.0 for g in RESNET_GROUPS}
    for name, p in model.named_parameters():
        if p.grad is not None:
            sq[group_of(name)] += float(p.grad.pow(2).sum())
    model.zero_grad(set_to_none=True)
    return {g: v ** 0.5 for g, v in sq.items()}


# The widget's question. Each student gets their own: a dataset with its number of classes, and a budget of trainable
# parameters that a run of the last stages (with the new head) fits and one more stage would not. Frozen early stages
# and trainable late ones is the usual shape of fine-tuning on a medium-sized dataset; the budget makes "how many"
# a number to find with the explorer rather than a box named in the instructions.
QUESTION_CLASSES = 102  # the explorer's head when no question is asked (the real flower set's classes)
QUESTION_ID = "freeze_choice"


def question_model(num_classes: int = QUESTION_CLASSES) -> nn.Module:
    """resnet18 with a new ``num_classes``-class head (random weights: parameter counts do not depend on them)."""
    from torchvision.models import resnet18

    return replace_head(resnet18(), num_classes)


@functools.lru_cache(maxsize=1)
def _body_sizes() -> dict[str, int]:
    """Scalars per group of resnet18 without its head (the same for every student)."""
    sizes = {g: total for g, (_, total) in trainable_by_group(question_model(1)).items()}
    sizes.pop("fc")
    return sizes


def group_sizes(num_classes: int) -> dict[str, int]:
    """Scalars per group (see ``RESNET_GROUPS``) of resnet18 with a ``num_classes``-class head."""
    return {**_body_sizes(), "fc": 513 * num_classes}


def freeze_question(student: str) -> dict:
    """``student``'s question for the freezing explorer: ``{"classes": C, "budget": B}``, drawn from
    ``student_seed(student, "freeze_choice")``. B is at least the count of the head and the last one to three stages,
    and below the count with one stage more."""
    from course_lib.common import student_seed

    rng = np.random.default_rng(student_seed(student, QUESTION_ID))
    classes = int(rng.integers(5, 200))
    stages = int(rng.integers(1, 4))
    sizes = group_sizes(classes)
    run = RESNET_GROUPS[-1 - stages:]
    within = sum(sizes[g] for g in run)
    spare = sizes[RESNET_GROUPS[-2 - stages]]
    return {"classes": classes, "budget": (within + int(rng.uniform(0.2, 0.8) * spare)) // 1000 * 1000}


def freeze_target(student: str) -> dict:
    """The right answer to ``student``'s question: ``{"train": [...], "trainable": N}``, as the explorer records it.

    The longest run of parts from the end (the head, then ``layer4``, ``layer3``...) whose trainable scalars fit the
    budget."""
    question = freeze_question(student)
    sizes = group_sizes(question["classes"])
    run: list[str] = []
    for group in reversed(RESNET_GROUPS):
        if sum(sizes[g] for g in run) + sizes[group] > question["budget"]:
            break
        run.insert(0, group)
    return {"train": run, "trainable": sum(sizes[g] for g in run)}
