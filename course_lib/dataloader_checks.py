"""Check specs for lesson 01_dataloader: cases, judges, known wrong answers and each exercise's contract; the
explorer's per-student target; the capstone ``make_dataloaders``, graded in bands on a dataset folder the grader
paints with the course's flower maker (other classes, other image sizes) and whose truth it keeps to itself."""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import torch

from course_lib import dataloader as ref
from course_lib.checks import FILE_MODE, FOLDER_MODE, Bands, Case, Clause, Mistake, Spec, case_dir, compare, describe
from course_lib.data.pascal import VOC_CLASSES


def _random_labels(rng: np.random.Generator) -> str:
    k = int(rng.choice([1, 1, 2, 3]))
    return " ".join(sorted(rng.choice(VOC_CLASSES, size=k, replace=False).tolist()))


def _random_df(rng: np.random.Generator, n: int, shuffled_index: bool = False):
    import pandas as pd

    ids = np.sort(rng.choice(np.arange(5, 9999), size=n, replace=False))
    valid = rng.random(n) < rng.uniform(0.15, 0.5)
    a, b = rng.choice(n, size=2, replace=False)
    valid[a], valid[b] = True, False  # neither part is ever empty
    df = pd.DataFrame({"fname": [f"{i:06d}.jpg" for i in ids], "labels": [_random_labels(rng) for _ in range(n)],
                       "is_valid": valid})
    if shuffled_index:
        # What a filter or a sort leaves behind: index labels that are not the positions 0..n-1.
        df.index = rng.permutation(np.arange(100, 100 + 3 * n))[:n]
    return df


# ------------------------------------------------------------------------------------ get_x

def _row_cases(rng: np.random.Generator, n: int, with_path: bool) -> list[Case]:
    roots = [Path("data/ci/pascal_2007"), Path("/home/student/.fastai/data/pascal_2007"), Path("pascal")]
    out = []
    for i in range(n):
        row = _random_df(rng, 3).iloc[int(rng.integers(3))]
        if with_path:
            root = roots[i % len(roots)] if i < len(roots) else Path("/tmp") / f"set{int(rng.integers(100))}"
            out.append(Case((row,), {"path": root}, f"fname={row['fname']!r}, path={str(root)!r}"))
        else:
            out.append(Case((row,), {}, f"labels={row['labels']!r}"))
    return out


def _get_x_cases(rng, device, n):
    return _row_cases(rng, n, with_path=True)


def _get_x_judge(case, got, expected):
    # fastai opens a str as well as a Path, so both count.
    got = Path(got) if isinstance(got, str) else got
    expected = Path(expected) if isinstance(expected, str) else expected
    if not isinstance(got, Path):
        return f"expected a Path (path / 'train' / fname), got {describe(got)}"
    if got != expected:
        row = case.args[0]
        if got.parts[-2:] == ("train", row["fname"]):
            # Right file in a folder of its own: a dataset folder written into the function, not `path`.
            return (f"expected {str(expected)!r}, got {str(got)!r}: the folder in front of train/ is not the "
                    "`path` argument (build the path from `path`, not from a folder written into your function)")
        return f"expected {str(expected)!r}, got {str(got)!r}"
    return None


GET_X = Spec(
    id="get_x",
    reference=ref.get_x,
    cases=_get_x_cases,
    judge=_get_x_judge,
    mistakes=[
        Mistake("fname_only", lambda row, path: row["fname"],
                "that is only the file name; PIL needs the full path: path / 'train' / row['fname']."),
        Mistake("no_train", lambda row, path: Path(path) / row["fname"],
                "the images are in the train folder: path / 'train' / row['fname']."),
        Mistake("labels_column", lambda row, path: Path(path) / "train" / row["labels"],
                "that is the labels column; the image file name is in row['fname']."),
        Mistake("no_path", lambda row, path: Path("train") / row["fname"],
                "use the path argument (the dataset folder), not a path relative to the notebook."),
    ],
    n_visible=4,
    n_hidden=20,
    contract=(
        Clause("behaviour", "the full path of the row's image file, as a `Path` (a `str` is accepted too)"),
        Clause("behaviour", "the images are in the `train` folder of `path`"),
    ),
)

# ------------------------------------------------------------------------------------ get_y

def _get_y_cases(rng, device, n):
    cases = _row_cases(rng, n, with_path=False)
    # A one-label row first: that is where returning the string itself looks almost right.
    row = _random_df(rng, 2).iloc[0].copy()
    row["labels"] = "dog"
    return [Case((row,), {}, "labels='dog'")] + cases[: max(n - 1, 1)]


def _get_y_judge(case, got, expected):
    if not isinstance(expected, list):  # comparing with a known mistake
        return compare(got, expected)
    if isinstance(got, str):
        return f"expected a list of class names, got the string {got!r}"
    if not isinstance(got, list):
        return f"expected a list of class names, got {describe(got)}"
    return compare(got, expected)


GET_Y = Spec(
    id="get_y",
    reference=ref.get_y,
    cases=_get_y_cases,
    judge=_get_y_judge,
    mistakes=[
        Mistake("raw_string", lambda row: row["labels"],
                "that is the raw labels string: split it at the spaces (row['labels'].split(' ')); "
                "MultiCategoryBlock needs a list of names, and would treat a string as a list of letters."),
        Mistake("wrapped", lambda row: [row["labels"]],
                "a one-element list holding the whole string: 'dog person' must become ['dog', 'person'] "
                "(split at spaces)."),
        Mistake("fname", lambda row: row["fname"].split(" "), "those are file names; the labels are in row['labels']."),
        Mistake("set", lambda row: sorted(set(row["labels"].split(" ")), reverse=True),
                "keep the labels in the order the CSV lists them: row['labels'].split(' ')."),
    ],
    n_visible=4,
    n_hidden=20,
    contract=(Clause("behaviour", "a `list` of class names, in the order the row lists them"),),
)

# ------------------------------------------------------------------------------------ splitter

def _splitter_cases(rng, device, n):
    out = []
    for i in range(max(n, 3)):
        size = int(rng.integers(3, 40))
        shuffled = i % 3 == 2
        df = _random_df(rng, size, shuffled_index=shuffled)
        what = ", index labels not 0..n-1" if shuffled else ""
        out.append(Case((df,), {}, f"{size} rows, {int(df['is_valid'].sum())} valid{what}"))
    return out


def _as_positions(x):
    if isinstance(x, torch.Tensor):
        x = x.tolist()
    try:
        vals = list(x)
    except TypeError:
        return None
    if not all(isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) for v in vals):
        return None
    return sorted(int(v) for v in vals)


def _plain(part):
    try:
        vals = [bool(v) if isinstance(v, (bool, np.bool_)) else int(v) for v in part]
    except (TypeError, ValueError):
        return None
    return vals if any(isinstance(v, bool) for v in vals) else sorted(vals)


def _splitter_judge(case, got, expected):
    if isinstance(got, (tuple, list)) and len(got) == 2 and [_plain(p) for p in got] == [_plain(p) for p in expected]:
        return None
    if not (isinstance(got, (tuple, list)) and len(got) == 2):
        return f"expected (train, valid), two lists of positions, got {describe(got)}"
    tr, va = _as_positions(got[0]), _as_positions(got[1])
    if tr is None or va is None:
        return ("each part must be a list of integer row positions (a boolean mask or the rows themselves "
                "will not do)")
    want_tr, want_va = sorted(expected[0]), sorted(expected[1])
    if (tr, va) == (want_tr, want_va):
        return None
    if set(tr) & set(va):
        return "some rows are in both the training and the validation part"
    n = len(case.args[0])
    if any(v < 0 or v >= n for v in tr + va):
        return f"positions must lie in 0..{n - 1} (the DataFrame has {n} rows)"
    if len(tr) != len(want_tr) or len(va) != len(want_va):
        return f"expected {len(want_tr)} training and {len(want_va)} validation rows, got {len(tr)} and {len(va)}"
    return "the right number of rows, but not the right rows"


def _split_inverted(df):
    tr, va = ref.splitter(df)
    return va, tr


def _split_index_labels(df):
    return df.index[~df["is_valid"]].tolist(), df.index[df["is_valid"]].tolist()


def _split_masks(df):
    return (~df["is_valid"]).tolist(), df["is_valid"].tolist()


def _split_valid_only(df):
    return list(range(len(df))), ref.splitter(df)[1]


SPLITTER = Spec(
    id="splitter",
    reference=ref.splitter,
    cases=_splitter_cases,
    judge=_splitter_judge,
    mistakes=[
        Mistake("inverted", _split_inverted,
                "the two parts are swapped: training rows are those where is_valid is False (~df['is_valid']), "
                "and the first list returned is the training one."),
        Mistake("index_labels", _split_index_labels,
                "df.index gives index labels, which are positions only for a fresh 0..n-1 index; fastai takes rows "
                "by position (iloc): use np.flatnonzero(~df['is_valid']) or range(len(df))."),
        Mistake("masks", _split_masks,
                "return the positions of the rows (np.flatnonzero(mask).tolist()), not True/False masks."),
        Mistake("valid_only", _split_valid_only,
                "the training part holds every row, so the validation rows are trained on too: keep only the "
                "rows where is_valid is False."),
    ],
    n_visible=5,
    n_hidden=20,
    contract=(
        Clause("behaviour", "two lists of integer row positions (0 to `len(df) - 1`)"),
        Clause("behaviour", "the training rows first"),
    ),
)

# ------------------------------------------------------------------------------------ ImageListDataset

def _write_image(rng: np.random.Generator, folder: Path, k: int) -> Path:
    """A small random image; some grayscale and some PNG, so files that are not RGB JPEGs come up too."""
    from PIL import Image

    h, w = int(rng.integers(6, 20)), int(rng.integers(6, 20))
    kind = k % 4
    if kind == 1:
        img = Image.fromarray(rng.integers(0, 256, (h, w), dtype=np.uint8), mode="L")
    else:
        img = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), mode="RGB")
    path = folder / f"img_{k:03d}.{'png' if kind in (1, 2) else 'jpg'}"
    img.save(path)
    path.chmod(FILE_MODE)  # the judging process, under another uid, opens it
    return path


class _ToTensorResized:
    """A deterministic transform: resize to 8x8 and turn into a float tensor [3, 8, 8]."""

    def __call__(self, img):
        import torchvision.transforms.functional as TF

        return TF.to_tensor(img.resize((8, 8)))

    def __repr__(self):
        return "Resize(8)+ToTensor"


def _dataset_cases(rng, device, n):
    folder = case_dir("ImageListDataset_")
    out = []
    for i in range(max(n, 3)):
        k = int(rng.integers(2, 9))
        files = [_write_image(rng, folder, 10 * i + j) for j in range(k)]
        labels = rng.integers(0, 5, k).tolist()
        items = list(zip(files, labels))
        transform = None if i % 3 == 1 else _ToTensorResized()
        out.append(Case((items,), {"transform": transform}, f"{k} files, transform={transform!r}"))
    return out


def _plain_part(x):
    """An item's image or label as plain data that the grader can load without running code.

    A PIL image becomes ``{"kind": "PIL", "mode", "size": [w, h], "pixels"}`` with ``pixels`` the
    uint8 tensor of ``np.asarray(image)`` ([h, w] or [h, w, c]); for modes whose pixels are not
    bytes ("I", "F", "1"...) the raw bytes, flat, plus their numpy "dtype" and "shape". A tensor
    stays a tensor (on the CPU), a numpy integer becomes an int, numbers, strings and None stay.
    Anything else is described in words: it is wrong anyway, and the message only names it.
    """
    from PIL import Image

    if isinstance(x, Image.Image):
        arr = np.asarray(x)
        out: dict[str, Any] = {"kind": "PIL", "mode": str(x.mode), "size": [int(v) for v in x.size]}
        if arr.dtype == np.uint8:
            out["pixels"] = torch.from_numpy(np.ascontiguousarray(arr).copy())
        else:
            out.update(pixels=torch.from_numpy(np.frombuffer(arr.tobytes(), np.uint8).copy()),
                       dtype=str(arr.dtype), shape=list(arr.shape))
        return out
    if isinstance(x, torch.Tensor):
        t = x.detach()
        return (t.as_subclass(torch.Tensor) if type(t) is not torch.Tensor else t).cpu().clone()
    if isinstance(x, np.integer):
        return int(x)
    if x is None or type(x) in (bool, int, float, str):
        return x
    return {"kind": "other", "describe": describe(x)}


def _observe_dataset(cls, case) -> dict:
    """Build ``cls(items, transform=...)`` and record what it does, as plain data.

    ``{"is_dataset": bool, "len": int or the name of the exception len() raised, "items": [...]}``,
    one item per file: ``{"image": ..., "label": ...}`` (see :func:`_plain_part`),
    ``{"error": "TypeError: ..."}`` when ``ds[i]`` raised, or ``{"not_a_pair": description}``.
    Plain data so that the grader judges the dataset outside the student's kernel; an error in
    the constructor is the student's and propagates, as a plain call's would.
    """
    args = copy.deepcopy(case.args)
    ds = cls(*args, **copy.deepcopy(case.kwargs))
    n_items = len(case.args[0])
    obs: dict[str, Any] = {"is_dataset": isinstance(ds, torch.utils.data.Dataset)}
    try:
        obs["len"] = len(ds)
    except Exception as e:  # the type only: its message names the class, which differs from the reference's
        obs["len"] = type(e).__name__
    seen = []
    for i in range(n_items):
        try:
            item = ds[i]
        except Exception as e:
            seen.append({"error": f"{type(e).__name__}: {e}"})
            continue
        if not (isinstance(item, (tuple, list)) and len(item) == 2):
            seen.append({"not_a_pair": describe(item)})
            continue
        try:
            seen.append({"image": _plain_part(item[0]), "label": _plain_part(item[1])})
        except Exception as e:  # something odd in the item: describe it rather than crash the check
            seen.append({"not_a_pair": f"an item that cannot be read ({type(e).__name__}: {e})"})
    obs["items"] = seen
    # The contract's "leaves the list items as it was given", looked at once the dataset has been used.
    obs["items_changed"] = [(str(f), y) for f, y in args[0]] != [(str(f), y) for f, y in case.args[0]] \
        if isinstance(args[0], list) and all(isinstance(t, tuple) and len(t) == 2 for t in args[0]) else True
    return obs


def _normal(x):
    """A plain image or label (see :func:`_plain_part`) in a form that ``==`` compares.

    Pixels by their bytes, tensors by their values rounded to 5 decimals: what the judge
    compared when it looked at the datasets themselves, so its verdicts have not changed.
    """
    if isinstance(x, dict) and x.get("kind") == "PIL":
        return ("PIL", x["mode"], tuple(x["size"]), x["pixels"].numpy().tobytes())
    if isinstance(x, dict) and x.get("kind") == "other":
        return ("other", x["describe"])
    if isinstance(x, torch.Tensor):
        return ("tensor", tuple(x.shape), str(x.dtype), x.detach().cpu().numpy().round(5).tobytes())
    return x


def _normal_item(item: dict) -> tuple:
    if "error" in item:
        return ("error", item["error"])
    if "not_a_pair" in item:
        return ("not a pair", item["not_a_pair"])
    return (_normal(item["image"]), _normal(item["label"]))


def _describe_item(x) -> str:
    if isinstance(x, tuple) and x and x[0] == "PIL":
        return f"a PIL image, mode {x[1]}, size {x[2][0]}x{x[2][1]}"
    if isinstance(x, tuple) and x and x[0] == "tensor":
        return f"a tensor of shape {list(x[1])}"
    if isinstance(x, tuple) and x and x[0] == "other":
        return x[1]
    return describe(x)


def _dataset_judge(case, got, expected):
    """Compare two observations of :func:`_observe_dataset` (the student's, and the reference's or a mistake's)."""
    g_items, e_items = [_normal_item(i) for i in got["items"]], [_normal_item(i) for i in expected["items"]]
    changed, want_changed = bool(got.get("items_changed")), bool(expected.get("items_changed"))
    if (got["is_dataset"], got["len"], g_items, changed) == (expected["is_dataset"], expected["len"], e_items,
                                                             want_changed):
        return None
    if changed and not want_changed:
        return ("your class changed the list `items` it was given (the instructions say \"leaves the list items "
                "as it was given\"): keep a copy of your own, list(items), and change only that")
    if not got["is_dataset"] and expected["is_dataset"]:
        return "your class is not a torch.utils.data.Dataset: write class ImageListDataset(Dataset)"
    if got["len"] != expected["len"]:
        if isinstance(got["len"], str):
            return f"len(dataset) raised {got['len']}"
        return f"len(dataset) is {got['len']}, but there are {expected['len']} items"
    for i, (gi, ei) in enumerate(zip(g_items, e_items)):
        if gi == ei:
            continue
        if gi[0] == "error":
            return f"dataset[{i}] raised {gi[1]}"
        if gi[0] == "not a pair":
            return f"dataset[{i}] should be a pair (image, label), got {gi[1]}"
        if gi[1] != ei[1]:
            return f"the label of dataset[{i}] should be {describe(ei[1])}, got {_describe_item(gi[1])}"
        return f"the image of dataset[{i}] should be {_describe_item(ei[0])}, got {_describe_item(gi[0])}"
    return "the dataset differs from the reference"


def _open(file, rgb=True):
    from PIL import Image

    with Image.open(file) as im:
        return im.convert("RGB") if rgb else im.copy()


class _NoLen(torch.utils.data.Dataset):
    def __init__(self, items, transform=None):
        self.items, self.transform = list(items), transform

    def __getitem__(self, i):
        f, y = self.items[i]
        img = _open(f)
        return (self.transform(img) if self.transform else img), y


class _NoTransform(_NoLen):
    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        f, y = self.items[i]
        return _open(f), y


class _Path(_NoTransform):
    def __getitem__(self, i):
        return self.items[i]


class _NoRGB(_NoTransform):
    def __getitem__(self, i):
        f, y = self.items[i]
        img = _open(f, rgb=False)
        return (self.transform(img) if self.transform else img), y


class _Swapped(_NoTransform):
    def __getitem__(self, i):
        f, y = self.items[i]
        img = _open(f)
        return y, (self.transform(img) if self.transform else img)


class _OneBased(_NoTransform):
    def __getitem__(self, i):
        f, y = self.items[(i + 1) % len(self.items)]
        img = _open(f)
        return (self.transform(img) if self.transform else img), y


class _ChangesItems(ref.ImageListDataset):
    """Right items, but the caller's list grows: what appending to ``items`` itself does, not to a copy."""

    def __init__(self, items, transform=None):
        super().__init__(items, transform)
        items.append(items[0])


IMAGE_LIST_DATASET = Spec(
    id="ImageListDataset",
    reference=ref.ImageListDataset,
    cases=_dataset_cases,
    judge=_dataset_judge,
    observe=_observe_dataset,
    mistakes=[
        Mistake("no_len", _NoLen,
                "your Dataset has no __len__: a DataLoader needs len(dataset) to know how many batches an epoch has "
                "(and which indices to shuffle). Add def __len__(self): return len(self.items)."),
        Mistake("no_transform", _NoTransform,
                "the transform is stored but never used: apply self.transform to the image when it is not None."),
        Mistake("path", _Path, "__getitem__ returned the (file, label) pair itself: open the file as an image first."),
        Mistake("no_rgb", _NoRGB,
                "grayscale files open with one channel: .convert('RGB') so that every image has 3 channels."),
        Mistake("swapped", _Swapped, "return (image, label) in that order: the input first, then the target."),
        Mistake("shifted", _OneBased, "dataset[i] must be items[i]: Python indices start at 0."),
        Mistake("contract:unchanged:items", _ChangesItems,
                "the list you were given belongs to the caller (it may be ImageFolder's own samples): store a "
                "copy, self.items = list(items), and never append to or sort the original."),
    ],
    n_visible=3,
    n_hidden=12,
    contract=(
        Clause("optional", "applies `transform` to the image when one was given", arg="transform"),
        Clause("unchanged", "leaves the list `items` as it was given", arg="items"),
        Clause("behaviour", "converted to RGB"),
    ),
)

# ------------------------------------------------------------------------------------ collate

def _collate_cases(rng, device, n):
    out = []
    for i in range(max(n, 3)):
        b = int(rng.integers(1, 7)) if i else 4
        c = 3 if i % 4 else 1
        h, w = int(rng.integers(2, 9)), int(rng.integers(2, 9))
        xs = [torch.from_numpy(rng.random((c, h, w), dtype=np.float32)).to(device) for _ in range(b)]
        if i % 3 == 2:
            k = int(rng.integers(2, 6))
            ys = [torch.from_numpy((rng.random(k) < 0.4).astype(np.float32)).to(device) for _ in range(b)]
            what = f"one-hot targets [{k}]"
        else:
            ys = rng.integers(0, 10, b).tolist()
            what = "int class indices"
        out.append(Case((list(zip(xs, ys)),), {}, f"{b} items of [{c}, {h}, {w}], {what}"))
    return out


def _collate_judge(case, got, expected):
    if not (isinstance(got, (tuple, list)) and len(got) == 2):
        return f"expected a pair (xb, yb), got {describe(got)}"
    xb, yb = got
    if not isinstance(expected[0], torch.Tensor):  # comparing with a known mistake
        return compare(list(got), list(expected))
    if isinstance(xb, (tuple, list)):
        return "xb is a Python sequence of tensors: stack the images into one tensor [B, C, H, W]"
    why = compare(xb, expected[0])
    if why:
        return f"xb: {why}"
    if isinstance(yb, (tuple, list)) and isinstance(expected[1], torch.Tensor):
        return "yb is a Python sequence: make the targets one tensor too"
    why = compare(yb, expected[1])
    return f"yb: {why}" if why else None


def _collate_lists(items):
    xs, ys = zip(*items)
    return list(xs), list(ys)


def _collate_cat(items):
    return torch.cat([x for x, _ in items]), ref.collate(items)[1]


def _collate_stack_dim1(items):
    return torch.stack([x for x, _ in items], dim=1), ref.collate(items)[1]


def _collate_swapped(items):
    xb, yb = ref.collate(items)
    return yb, xb


def _collate_float_labels(items):
    xb, yb = ref.collate(items)
    return xb, yb.float()


def _collate_label_list(items):
    return ref.collate(items)[0], [y for _, y in items]


COLLATE = Spec(
    id="collate",
    reference=ref.collate,
    cases=_collate_cases,
    judge=_collate_judge,
    mistakes=[
        Mistake("lists", _collate_lists,
                "you returned lists of tensors, not tensors: a batch is one tensor, torch.stack(list_of_images) "
                "gives [B, C, H, W] (and torch.stack / torch.tensor for the targets)."),
        Mistake("label_list", _collate_label_list,
                "the images are stacked, but the targets are still a list: the loss needs one tensor "
                "(torch.tensor(labels))."),
        Mistake("cat", _collate_cat,
                "torch.cat joins along an existing dimension, giving [B*C, H, W]; torch.stack adds the new batch "
                "dimension in front: [B, C, H, W]."),
        Mistake("stack_dim1", _collate_stack_dim1, "stack along dim 0: the batch dimension comes first, [B, C, H, W]."),
        Mistake("swapped", _collate_swapped, "return (images, targets) in that order."),
        Mistake("float_labels", _collate_float_labels,
                "class indices must stay integers (int64), as cross_entropy expects: use torch.tensor(labels) "
                "without a float dtype."),
    ],
    n_visible=5,
    n_hidden=25,
    contract=(
        Clause("unchanged", "leave `items` as it was given", arg="items"),
        Clause("behaviour", "`xb` `[B, C, H, W]`"),
        Clause("behaviour", "`[B]` int64 for integer class labels, `[B, K]` for target tensors of shape `[K]`"),
    ),
)

# ------------------------------------------------------------------------------------ denormalize

def _denorm_cases(rng, device, n):
    out = []
    for i in range(max(n, 4)):
        h, w = int(rng.integers(2, 12)), int(rng.integers(2, 12))
        if w == h:
            w += 1  # not square, so a transposed image has the wrong shape
        batch = i % 2 == 0
        shape = (int(rng.integers(1, 5)), 3, h, w) if batch else (3, h, w)
        mean: tuple[float, ...] | torch.Tensor
        std: tuple[float, ...] | torch.Tensor
        if i % 4 < 2:
            mean, std = ref.IMAGENET_MEAN, ref.IMAGENET_STD
        else:
            mean = tuple(np.round(rng.uniform(0.2, 0.7, 3), 3).tolist())
            std = tuple(np.round(rng.uniform(0.1, 0.4, 3), 3).tolist())
        if i % 4 == 3:
            mean, std = torch.tensor(mean), torch.tensor(std)
        # Normalised images of 0..1 pictures, plus a margin so that clamping matters.
        pic = torch.from_numpy(rng.uniform(-0.15, 1.15, shape)).float()
        m, s = torch.as_tensor(mean).float().view(-1, 1, 1), torch.as_tensor(std).float().view(-1, 1, 1)
        x = ((pic - m) / s).to(device)
        if isinstance(mean, torch.Tensor):
            kind = "tensors"
        else:
            kind = "ImageNet stats" if mean == ref.IMAGENET_MEAN else "tuples"
        out.append(Case((x, mean, std), {}, f"x {list(shape)}, mean/std as {kind}"))
    return out


def _denorm_judge(case, got, expected):
    x = case.args[0]
    if isinstance(got, np.ndarray):
        return "return a tensor (call .numpy() only when plotting)"
    if (isinstance(got, torch.Tensor) and isinstance(expected, torch.Tensor) and tuple(got.shape) == tuple(x.shape)
            and tuple(expected.shape) != tuple(x.shape)):
        return (f"the result still has the channels first ({list(got.shape)}); imshow wants them last: "
                f"expected shape {list(expected.shape)}")
    return compare(got, expected, rtol=1e-4, atol=1e-5)


def _stats(x, mean, std):
    return (torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(-1, 1, 1),
            torch.as_tensor(std, dtype=x.dtype, device=x.device).view(-1, 1, 1))


def _denorm_channels_first(x, mean, std):
    m, s = _stats(x, mean, std)
    return (x * s + m).clamp(0, 1)


def _denorm_wrong_order(x, mean, std):
    m, s = _stats(x, mean, std)
    return ((x + m) * s).clamp(0, 1).movedim(-3, -1)


def _denorm_normalize_again(x, mean, std):
    m, s = _stats(x, mean, std)
    return ((x - m) / s).clamp(0, 1).movedim(-3, -1)


def _denorm_swapped_stats(x, mean, std):
    m, s = _stats(x, mean, std)
    return (x * m + s).clamp(0, 1).movedim(-3, -1)


def _denorm_reshape(x, mean, std):
    m, s = _stats(x, mean, std)
    y = (x * s + m).clamp(0, 1)
    return y.reshape(*y.shape[:-3], y.shape[-2], y.shape[-1], y.shape[-3])


def _denorm_imagenet_only(x, mean, std):
    return ref.denormalize(x, ref.IMAGENET_MEAN, ref.IMAGENET_STD)


def _denorm_transpose(x, mean, std):
    m, s = _stats(x, mean, std)
    return (x * s + m).clamp(0, 1).transpose(-3, -1)


DENORMALIZE = Spec(
    id="denormalize",
    reference=ref.denormalize,
    cases=_denorm_cases,
    judge=_denorm_judge,
    mistakes=[
        Mistake("channels_first", _denorm_channels_first,
                "the values are right but the channels are still first: imshow wants [H, W, 3], so move the "
                "channel dimension last (x.movedim(-3, -1), or permute(1, 2, 0) / permute(0, 2, 3, 1))."),
        Mistake("wrong_order", _denorm_wrong_order,
                "undo the steps in reverse order: Normalize computes (x - mean) / std, so first multiply by std, "
                "then add mean: x * std + mean."),
        Mistake("normalize_again", _denorm_normalize_again,
                "that normalises a second time ((x - mean) / std); undo it instead: x * std + mean."),
        Mistake("swapped_stats", _denorm_swapped_stats, "mean and std are swapped: x * std + mean."),
        Mistake("imagenet_only", _denorm_imagenet_only,
                "the ImageNet statistics are written into your function: undo the normalisation with the mean and "
                "std passed as arguments (a dataset normalised with its own statistics needs those)."),
        Mistake("reshape", _denorm_reshape,
                "reshape/view keeps the numbers in memory order and only relabels the dimensions, which scrambles "
                "the pixels; moving the channels needs permute (or movedim)."),
        Mistake("transpose", _denorm_transpose,
                "transpose(-3, -1) swaps channels and width, so H and W end up exchanged (the picture is mirrored "
                "along its diagonal): use permute(1, 2, 0) for one image, permute(0, 2, 3, 1) for a batch, "
                "or movedim(-3, -1)."),
    ],
    n_visible=6,
    n_hidden=30,
    # A result outside 0..1 (no clamp) is named by the range clause itself, with the instructions' words.
    contract=(
        Clause("shape", "`x` is one normalised image `[3, H, W]` or a batch `[B, 3, H, W]`", arg="x", values=(3, 4)),
        Clause("unchanged", "leave `x` as it is", arg="x"),
        Clause("range", "clamped to 0..1", values=(0.0, 1.0)),
        Clause("behaviour", "channels last"),
    ),
)

# ------------------------------------------------------------------------------------ widget: valid_pipeline

def _pipeline_judge(case, got, expected):
    """``expected``: the training pipeline the explorer drew for the student (``spec.target``)."""
    if isinstance(got, str) or not isinstance(got, (tuple, list)):
        return f"expected a tuple of step names, the line the Record button shows; got {describe(got)}"
    problems = ref.validation_pipeline_problems(list(got), expected)
    return problems[0] if problems else None


def _valid_pipeline_answer(student: str) -> tuple[str, ...]:
    """The validation pipeline for ``student``'s training pipeline: its size and tensor steps and the preparation
    steps that change every image alike, without the random ones."""
    train = ref.explorer_training_steps(student)
    return ("Resize", "CenterCrop", *[s for s in ref.PREPARATION_STEPS if s in train], "ToTensor", "Normalize")


VALID_PIPELINE = Spec(
    id="valid_pipeline",
    reference=None,
    judge=_pipeline_judge,
    kind="answer",
    target=ref.explorer_training_steps,
    answer_for=_valid_pipeline_answer,
    hint=("in the explorer, tick the validation steps until the validation row shows the same picture every time, "
          "at the training size, prepared as your training pipeline prepares it; then press Record and paste the "
          "line it shows."),
)

# ------------------------------------------------------------------------------------ capstone: make_dataloaders
#
# The grader paints a dataset folder in the flowers layout with classes and image sizes of its own choosing
# (folder names that sort differently as strings and as numbers, a different number of images per class, photos
# that are not square), calls the student's make_dataloaders on it in the judging process, and gets back what the
# batches were as plain data. What the folder holds (the classes, how many images of each in each part, the
# statistics of the normalised validation images) stays in Case.secret, in the grader.

CAPSTONE_SIZES: dict[str, dict] = {
    "ci": dict(n_classes=4, train=3, valid=2, base=48, sizes=(32, 40), batch_sizes=(4, 5)),
    "cpu": dict(n_classes=6, train=8, valid=4, base=128, sizes=(64, 80, 96), batch_sizes=(8, 16)),
    "gpu": dict(n_classes=10, train=20, valid=10, base=224, sizes=(128, 160), batch_sizes=(32, 64)),
}
MAX_BATCHES = 400  # a loader that never ends is cut off here, and then counts as wrong


def _class_names(rng: np.random.Generator, n: int) -> list[str]:
    """Folder names "1".."25" that sort differently as strings and as numbers (one below 10, one above)."""
    from course_lib.data.flowers import MAX_CLASSES

    while True:
        names = [str(int(v)) for v in rng.choice(np.arange(1, MAX_CLASSES + 1), size=n, replace=False)]
        if sorted(names) != sorted(names, key=int):
            return names


def make_capstone_folder(root: Path, rng: np.random.Generator, profile: str) -> dict:
    """Paint a dataset in the flowers layout under ``root``; return its truth (classes, counts per part, sizes).

    ``root/train/<class>/image_XXXXX.jpg``, ``root/valid/<class>/...`` and ``cat_to_name.json``, as
    ``course_lib.data.flowers`` writes them, but with classes drawn from all its kinds, named by their number,
    ``train + k`` training and ``valid + k`` validation images for the k-th class (so no two classes have as many)
    and photos of about ``base`` pixels that are not square. Readable by another uid (the judging process).
    """
    import json

    from PIL import Image

    from course_lib.data.flowers import FLOWER_KINDS, JPEG_QUALITY, render_flower

    sz = CAPSTONE_SIZES[profile]
    names = _class_names(rng, sz["n_classes"])
    classes = sorted(names)  # ImageFolder's vocabulary: names sorted as strings
    order = rng.permutation(len(names))
    counts = {"train": {names[k]: sz["train"] + int(order[k]) for k in range(len(names))},
              "valid": {names[k]: sz["valid"] + int(order[k]) for k in range(len(names))}}
    root.chmod(FOLDER_MODE)
    number = 0
    for split in ("train", "valid"):
        for name in names:
            folder = root / split / name
            folder.mkdir(parents=True)
            folder.chmod(FOLDER_MODE)
            folder.parent.chmod(FOLDER_MODE)
            for _ in range(counts[split][name]):
                number += 1
                img = render_flower(FLOWER_KINDS[int(name) - 1], np.random.default_rng(rng.integers(1 << 62)),
                                    sz["base"])
                w, h = (int(sz["base"] * f) for f in rng.uniform(0.75, 1.35, 2))
                file = folder / f"image_{number:05d}.jpg"
                img.resize((w, h), Image.Resampling.BILINEAR).save(file, quality=JPEG_QUALITY)
                file.chmod(FILE_MODE)
    names_file = root / "cat_to_name.json"
    names_file.write_text(json.dumps({n: FLOWER_KINDS[int(n) - 1].name for n in names}, indent=1))
    names_file.chmod(FILE_MODE)
    return {"classes": classes, "train_counts": [counts["train"][c] for c in classes],
            "valid_counts": [counts["valid"][c] for c in classes]}


def _valid_statistics(root: Path, size: int) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of the validation images through the lesson's own validation pipeline."""
    items, _ = ref.folder_items(root / "valid")
    ds = ref.ImageListDataset(items, transform=ref.valid_transforms(size))
    x = torch.stack([ds[i][0] for i in range(len(ds))])
    return x.mean(dim=(0, 2, 3)).tolist(), x.std(dim=(0, 2, 3)).tolist()


def _capstone_cases(rng, device, n):
    from course_lib.config import current

    profile = current().profile
    sz = CAPSTONE_SIZES[profile]
    out = []
    for _ in range(n):
        root = case_dir("make_dataloaders_")
        truth = make_capstone_folder(root, rng, profile)
        size, bs = int(rng.choice(sz["sizes"])), int(rng.choice(sz["batch_sizes"]))
        mean, std = _valid_statistics(root, size)
        secret = dict(truth, size=size, batch_size=bs, mean=mean, std=std)
        label = (f"{len(truth['classes'])} classes, {sum(truth['train_counts'])} training and "
                 f"{sum(truth['valid_counts'])} validation photos of other sizes, size={size}, batch_size={bs}")
        out.append(Case((root,), {"size": size, "batch_size": bs}, label, secret=secret))
    return out


def _loaders(made) -> tuple[Any, Any]:
    """(train, valid) from a pair or from fastai's DataLoaders (``.train``, ``.valid``)."""
    if hasattr(made, "train") and hasattr(made, "valid"):
        return made.train, made.valid
    if isinstance(made, (tuple, list)) and len(made) == 2:
        return made[0], made[1]
    raise TypeError(f"make_dataloaders must return (train_dl, valid_dl), got {describe(made)}")


def _plain_tensor(x) -> torch.Tensor | None:
    if not isinstance(x, torch.Tensor):
        return None
    t = x.detach()
    return (t.as_subclass(torch.Tensor) if type(t) is not torch.Tensor else t).cpu()


def _one_pass(loader) -> dict:
    """One epoch of ``loader`` as plain data: each batch's shapes and dtypes, the labels in order, an 4x4 thumbnail
    of every image (to tell two passes apart) and per-channel sums (for the normalisation)."""
    shapes: list[list] = []
    labels: list[int] = []
    thumbs: list[torch.Tensor] = []
    total = torch.zeros(3, dtype=torch.float64)
    squares = torch.zeros(3, dtype=torch.float64)
    count, low, high, problem = 0, float("inf"), float("-inf"), ""
    for k, batch in enumerate(loader):
        if k >= MAX_BATCHES:
            problem = f"more than {MAX_BATCHES} batches in one pass: does the loader ever end?"
            break
        if not (isinstance(batch, (tuple, list)) and len(batch) == 2):
            problem = f"a batch should be a pair (xb, yb), got {describe(batch)}"
            break
        xb, yb = _plain_tensor(batch[0]), _plain_tensor(batch[1])
        if xb is None or yb is None:
            problem = f"a batch should be two tensors (xb, yb), got {describe(batch[0])} and {describe(batch[1])}"
            break
        shapes.append([list(xb.shape), str(xb.dtype).replace("torch.", ""), list(yb.shape),
                       str(yb.dtype).replace("torch.", "")])
        if not yb.is_floating_point() and yb.ndim == 1:
            labels.extend(int(v) for v in yb)
        else:
            labels.append(-1)
        if xb.ndim == 4 and xb.shape[1] == 3 and xb.numel():
            x = xb.float()
            thumbs.append(torch.nn.functional.adaptive_avg_pool2d(x, 4))
            total += x.double().sum(dim=(0, 2, 3))
            squares += (x.double() ** 2).sum(dim=(0, 2, 3))
            count += x.shape[0] * x.shape[2] * x.shape[3]
            low, high = min(low, float(x.min())), max(high, float(x.max()))
    return {"shapes": shapes, "labels": labels, "thumbs": torch.cat(thumbs) if thumbs else torch.zeros(0),
            "sum": total, "squares": squares, "count": count, "low": low, "high": high, "problem": problem}


def _observe_loaders(fn, case) -> dict:
    """Call ``fn(path, size=..., batch_size=...)`` and go twice through each of its loaders."""
    train, valid = _loaders(fn(*case.args, **case.kwargs))
    return {"train": [_one_pass(train), _one_pass(train)], "valid": [_one_pass(valid), _one_pass(valid)]}


def _capstone_judge(case, got, expected):
    if not (isinstance(got, dict) and {"train", "valid"} <= set(got)):
        return f"expected the loaders' batches, got {describe(got)}"
    for part in ("train", "valid"):
        for p in got[part]:
            if p["problem"]:
                return f"{part}: {p['problem']}"
            if not p["shapes"]:
                return f"the {part} loader gave no batch at all"
    return None


def capstone_properties(case: Case, got: dict) -> dict[str, bool]:
    """Which promises of make_dataloaders hold in what was observed (``case.secret``: the folder's truth)."""
    truth = case.secret
    size, bs, n_classes = truth["size"], truth["batch_size"], len(truth["classes"])
    n_train, n_valid = sum(truth["train_counts"]), sum(truth["valid_counts"])
    passes = got["train"] + got["valid"]

    def batch_ok(shape, last):
        (xs, xd, ys, yd) = shape
        return (len(xs) == 4 and xs[1:] == [3, size, size] and xd == "float32" and ys == [xs[0]] and yd == "int64"
                and (xs[0] == bs or (last and 0 < xs[0] < bs)))

    shapes = all(batch_ok(sh, k == len(p["shapes"]) - 1) for p in passes for k, sh in enumerate(p["shapes"]))
    valid = got["valid"][0]
    labels_ok = all(0 <= y < n_classes for p in passes for y in p["labels"])
    vocabulary = labels_ok and np.bincount(valid["labels"], minlength=n_classes).tolist() == truth["valid_counts"]
    n_seen = [len(p["labels"]) for p in got["train"]]
    split = len(valid["labels"]) == n_valid and all(n_train - bs < n <= n_train for n in n_seen)
    normalised = False
    if valid["count"]:
        mean = valid["sum"] / valid["count"]
        std = (valid["squares"] / valid["count"] - mean ** 2).clamp(min=0).sqrt()
        want_mean, want_std = torch.tensor(truth["mean"]).double(), torch.tensor(truth["std"]).double()
        # The spread tells the statistics apart (no Normalize: 0.23 of it; mean and std 0.5: 0.45); the mean moves
        # by up to 0.4 with how a photo is brought to size (a squished border is darker than a centre crop).
        ratio = std / want_std
        normalised = bool(((mean - want_mean).abs() < 0.6).all() and ((ratio > 0.7) & (ratio < 1.45)).all())
    a, b = got["valid"]
    fixed = (a["labels"] == b["labels"] and a["shapes"] == b["shapes"] and a["thumbs"].shape == b["thumbs"].shape
             and bool(torch.allclose(a["thumbs"], b["thumbs"], atol=1e-4)))
    shuffled = got["train"][0]["labels"] != got["train"][1]["labels"]
    return {"shapes": shapes, "split": split, "vocabulary": vocabulary, "normalised": normalised,
            "valid_fixed": fixed, "train_shuffled": shuffled}


def _capstone_measure(case, got) -> float:
    return float(sum(capstone_properties(case, got).values()))


def _no_normalize(path, size=64, batch_size=16):
    return _variant(path, size, batch_size, normalize=False)


def _other_stats(path, size=64, batch_size=16):
    return _variant(path, size, batch_size, stats=((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)))


def _valid_augmented(path, size=64, batch_size=16):
    return _variant(path, size, batch_size, valid_train_tfms=True)


def _valid_shuffled(path, size=64, batch_size=16):
    return _variant(path, size, batch_size, valid_shuffle=True)


def _numeric_classes(path, size=64, batch_size=16):
    return _variant(path, size, batch_size, numeric=True)


def _train_as_valid(path, size=64, batch_size=16):
    return _variant(path, size, batch_size, valid_folder="train")


def _not_shuffled(path, size=64, batch_size=16):
    return _variant(path, size, batch_size, train_shuffle=False)


def _variant(path, size, batch_size, normalize=True, stats=(ref.IMAGENET_MEAN, ref.IMAGENET_STD),
             valid_train_tfms=False, valid_shuffle=False, numeric=False, valid_folder="valid", train_shuffle=True):
    """The reference with one thing done wrong."""
    import torchvision.transforms as T
    from torch.utils.data import DataLoader

    path = Path(path)
    classes = sorted((p.name for p in (path / "train").iterdir() if p.is_dir()), key=int if numeric else str)
    index = {c: i for i, c in enumerate(classes)}

    def items(part):
        return [(f, index[f.parent.name]) for f in sorted((path / part).glob("*/*.jpg"))]

    def tfms(train):
        steps = list(ref.train_transforms(size).transforms if train else ref.valid_transforms(size).transforms)
        steps = steps[:-1] + ([T.Normalize(*stats)] if normalize else [])
        return T.Compose(steps)

    train_ds = ref.ImageListDataset(items("train"), transform=tfms(True))
    valid_ds = ref.ImageListDataset(items(valid_folder), transform=tfms(valid_train_tfms))
    return (DataLoader(train_ds, batch_size=batch_size, shuffle=train_shuffle, collate_fn=ref.collate),
            DataLoader(valid_ds, batch_size=batch_size, shuffle=valid_shuffle, collate_fn=ref.collate))


CAPSTONE_MISTAKES = {
    "split": Mistake("train_as_valid", _train_as_valid,
                     "the validation loader does not hold the valid folder's images: build it from path / 'valid', "
                     "so that the model is measured on photos it never trained on."),
    "vocabulary": Mistake("numeric_classes", _numeric_classes,
                          "the labels do not follow ImageFolder's vocabulary: the classes are the folder names "
                          "sorted as strings ('10' before '9'), and both parts use that one list."),
    "normalised": Mistake("no_normalize", _no_normalize,
                          "the batches are not normalised: end both pipelines with Normalize and the ImageNet mean "
                          "and std, the statistics the pretrained networks expect."),
    "valid_fixed": Mistake("valid_augmented", _valid_augmented,
                           "two passes over the validation loader give different images in the same order: a random "
                           "step (crop, flip, jitter) is in the validation pipeline; resize and centre-crop instead."),
    "train_shuffled": Mistake("not_shuffled", _not_shuffled,
                              "two epochs of the training loader give the same order: shuffle the training batches "
                              "(shuffle=True), or the model sees the classes in the same sequence every epoch."),
}
OTHER_STATS = Mistake("other_stats", _other_stats,
                      "the batches are normalised, but not with the ImageNet statistics: use IMAGENET_MEAN and "
                      "IMAGENET_STD (fastai's imagenet_stats), the ones the pretrained networks were trained with.")
VALID_SHUFFLED = Mistake("valid_shuffled", _valid_shuffled,
                         "two passes over the validation loader come in different orders: leave the validation "
                         "loader unshuffled (shuffle=False), so each measurement sees the images in one order.")


PROMISES = {
    "shapes": "xb float32 [B, 3, size, size] and yb int64 [B], B = batch_size but for the last batch",
    "split": "the training loader holds the train folder's images (one epoch), the validation loader the valid "
             "folder's",
    "vocabulary": "labels index the training folder names sorted as strings",
    "normalised": "the validation images are normalised with the ImageNet statistics",
    "valid_fixed": "two passes over the validation loader give the same batches",
    "train_shuffled": "two epochs of the training loader come in different orders",
}


def _signature(case, got, promise: str) -> Mistake | None:
    """The known mistake that breaks ``promise`` when what was observed looks exactly like it, else None."""
    truth = case.secret
    valid = got["valid"]
    if promise == "split" and len(valid[0]["labels"]) == sum(truth["train_counts"]):
        return CAPSTONE_MISTAKES["split"]
    if promise == "vocabulary":
        numeric = sorted(truth["classes"], key=int)
        want = [truth["valid_counts"][truth["classes"].index(c)] for c in numeric]
        if np.bincount([max(y, 0) for y in valid[0]["labels"]], minlength=len(numeric)).tolist() == want:
            return CAPSTONE_MISTAKES["vocabulary"]
    if promise == "normalised" and valid[0]["count"]:
        unit = valid[0]["low"] >= 0 and valid[0]["high"] <= 1
        return CAPSTONE_MISTAKES["normalised"] if unit else OTHER_STATS
    if promise == "valid_fixed":
        same_order = valid[0]["labels"] == valid[1]["labels"]
        if not same_order and sorted(valid[0]["labels"]) == sorted(valid[1]["labels"]):
            return VALID_SHUFFLED
        return CAPSTONE_MISTAKES["valid_fixed"] if same_order else None
    if promise == "train_shuffled":
        return CAPSTONE_MISTAKES["train_shuffled"]
    return None


def _capstone_diagnose(case, got) -> Mistake | None:
    """The known mistake behind the one promise that does not hold, when it looks exactly like it; otherwise the
    promises that do not hold, named (so that the feedback says what differs)."""
    if _capstone_judge(case, got, None) is not None:
        return None
    failed = [k for k, ok in capstone_properties(case, got).items() if not ok]
    if not failed:
        return None
    known = _signature(case, got, failed[0]) if len(failed) == 1 or failed[0] == "split" else None
    if known is not None:
        return known
    return Mistake("unkept:" + ",".join(failed), _capstone_stub,
                   "these promises do not hold: " + "; ".join(PROMISES[k] for k in failed) + ".")


def _capstone_stub(path, size=64, batch_size=16):
    raise NotImplementedError()


MAKE_DATALOADERS = Spec(
    id="make_dataloaders",
    reference=ref.make_dataloaders,
    cases=_capstone_cases,
    judge=_capstone_judge,
    observe=_observe_loaders,
    mistakes=[*CAPSTONE_MISTAKES.values(), OTHER_STATS, VALID_SHUFFLED],
    n_visible=1,
    n_hidden=1,
    bands=Bands("promises kept (of 6)", True, edges={"ci": (6, 5, 4, 3), "cpu": (6, 5, 4, 3), "gpu": (6, 5, 4, 3)},
                fractions=(1.0, 0.75, 0.5, 0.25)),
    measure=_capstone_measure,
    seconds={"ci": 30.0, "cpu": 120.0, "gpu": 300.0},
    diagnose=_capstone_diagnose,
    contract=(
        Clause("optional", "at the `size` it is given", arg="size"),
        Clause("optional", "`batch_size` images a batch", arg="batch_size"),
        Clause("behaviour", "the training folder names sorted as strings"),
        Clause("behaviour", "the validation loader holds exactly the images of `valid`"),
        Clause("behaviour", "normalised with the ImageNet statistics"),
        Clause("behaviour", "two passes over the validation loader give the same batches"),
        Clause("behaviour", "two epochs of the training loader come in different orders"),
    ),
)

SPECS = [GET_X, GET_Y, SPLITTER, IMAGE_LIST_DATASET, COLLATE, DENORMALIZE, VALID_PIPELINE, MAKE_DATALOADERS]
