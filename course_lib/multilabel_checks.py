"""Check specs for lesson 03_multilabel: cases, judges and known wrong answers."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from course_lib import multilabel as ref
from course_lib.checks import Bands, Case, Clause, Mistake, Spec, case_dir, compare, describe
from course_lib.data.pascal import VOC_CLASSES

# -------------------------------------------------------------------------------- one_hot

def _one_hot_cases(rng: np.random.Generator, device: torch.device, n: int) -> list[Case]:
    voc = list(VOC_CLASSES)
    # The last class, an empty label list and a vocabulary that is not sorted are where off-by-one, dtype and
    # "the vocabulary is sorted anyway" slips show.
    fixed = [(["dog", "person"], voc), (["tvmonitor"], voc), ([], voc), (["b", "a"], ["a", "b", "c"]),
             (["cat", "aeroplane"], ["dog", "cat", "aeroplane", "bus"])]
    out = [Case((labels, vocab), {}, f"labels={labels}, vocab of {len(vocab)}") for labels, vocab in fixed]
    for _ in range(max(0, n - len(fixed))):
        vocab = rng.choice(voc, size=int(rng.integers(3, 21)), replace=False).tolist()
        if rng.random() < 0.5:
            vocab = sorted(vocab)
        labels = rng.choice(vocab, size=int(rng.integers(1, 4)), replace=False).tolist()
        out.append(Case((labels, vocab), {}, f"labels={labels}, vocab of {len(vocab)}"))
    return out[:max(n, len(fixed))]


def _one_hot_judge(case, got, expected):
    # Said plainly whatever the answer; the known mistake (an integer target) is named after it, and only when the
    # answer is that mistake's.
    if (isinstance(got, torch.Tensor) and isinstance(expected, torch.Tensor) and got.shape == expected.shape
            and expected.dtype.is_floating_point and not got.dtype.is_floating_point):
        return f"the target has dtype {got.dtype}, not float32: the loss compares it with probabilities"
    why = compare(got, expected, rtol=0, atol=0)
    if why and why.startswith("values differ") and isinstance(got, torch.Tensor) and got.shape == expected.shape:
        labels, vocab = case.args
        g = got.detach().cpu().float()
        if not bool(g.any()) and labels:
            return "every entry is 0.0: the labels' positions were never set to 1.0"
        wrong = [vocab[i] for i in torch.nonzero(g != expected.detach().cpu().float()).flatten().tolist()]
        return f"{why}: wrong at the position of {', '.join(wrong[:4])}"
    return why


def _one_hot_long(labels, vocab):
    t = torch.zeros(len(vocab), dtype=torch.long)
    for name in labels:
        t[list(vocab).index(name)] = 1
    return t


def _one_hot_rows(labels, vocab):
    idx = torch.tensor([list(vocab).index(name) for name in labels], dtype=torch.long)
    return F.one_hot(idx, len(vocab)).float()


def _one_hot_one_based(labels, vocab):
    t = torch.zeros(len(vocab) + 1)
    for name in labels:
        t[list(vocab).index(name) + 1] = 1.0
    return t[: len(vocab)]


def _one_hot_indices(labels, vocab):
    return torch.tensor([float(list(vocab).index(name)) for name in labels])


def _one_hot_sorted(labels, vocab):
    vocab = sorted(vocab)
    t = torch.zeros(len(vocab))
    for name in labels:
        t[vocab.index(name)] = 1.0
    return t


ONE_HOT = Spec(
    id="one_hot",
    reference=ref.one_hot,
    cases=_one_hot_cases,
    judge=_one_hot_judge,
    mistakes=[
        Mistake("long", _one_hot_long,
                "make the target a float tensor, not an integer one: the loss compares it with probabilities."),
        Mistake("rows", _one_hot_rows,
                "F.one_hot gives one row per label ([n_labels, C]); a multi-label target is a single row with a 1 "
                "for every label: start from torch.zeros(len(vocab)) and set each label's position."),
        Mistake("one_based", _one_hot_one_based,
                "the positions are shifted by one: vocab.index(name) is already 0-based (the COCO json's "
                "category_id is the 1-based one)."),
        Mistake("indices", _one_hot_indices,
                "you returned the labels' positions; one-hot means a vector of len(vocab) "
                "with 1.0 at those positions."),
        Mistake("sorted", _one_hot_sorted,
                "the positions follow the order of `vocab` as it is given: do not sort it (fastai's vocab happens to "
                "be sorted, a vocabulary passed in need not be)."),
    ],
    n_visible=5,
    n_hidden=30,
    forbidden=("fastai.torch_core.one_hot",),
    contract=(
        Clause("behaviour", "a float32 tensor of shape [len(vocab)]"),
        Clause("exact", "exactly 1.0 at the position of every label in vocab, 0.0 elsewhere"),
        Clause("unchanged", "labels and vocab are left unchanged", arg="labels"),
        Clause("unchanged", "labels and vocab are left unchanged", arg="vocab"),
    ),
)

# --------------------------------------------------------------------- binary_cross_entropy

def _logit_cases(rng: np.random.Generator, device: torch.device, n: int, shapes=((4, 20), (1, 3), (8, 1))):
    out = []
    for i in range(n):
        b, c = shapes[i] if i < len(shapes) else (int(rng.integers(1, 33)), int(rng.integers(1, 21)))
        # Logits in a range where sigmoid-then-log is still accurate in float32, so the
        # straightforward formula passes; the reference is exact everywhere.
        inputs = torch.from_numpy(np.clip(rng.normal(0, 2.5, (b, c)), -7, 7)).float().to(device)
        targets = torch.from_numpy((rng.random((b, c)) < 0.3).astype(np.float32)).to(device)
        # Every other case asks for gradients: its result must still be on the graph (the loss is trained with).
        graph = i % 2 == 1
        if graph:
            inputs.requires_grad_()
        out.append(Case((inputs, targets), {}, f"inputs [{b}, {c}]" + (" requiring grad" if graph else "")
                        + f", targets [{b}, {c}]"))
    return out


def _bce_cases(rng, device, n):
    return _logit_cases(rng, device, max(n, 3))


def _bce_judge(case, got, expected):
    # float32's rounding in sigmoid-then-log stays below 4e-5 on these logits; a result off by 1e-3 is wrong.
    return compare(got, expected, rtol=1e-4, atol=1e-4)


def _bce_swapped(inputs, targets):
    # The seed's version: the branches of torch.where are the wrong way round.
    inputs = inputs.sigmoid()
    return -torch.where(targets == 1, 1 - inputs, inputs).log().mean()


def _bce_no_sigmoid(inputs, targets):
    return -torch.where(targets == 1, inputs, 1 - inputs).log().mean()


def _bce_softmax(inputs, targets):
    p = inputs.softmax(dim=-1)
    return -torch.where(targets == 1, p, 1 - p).log().mean()


def _bce_cross_entropy(inputs, targets):
    return F.cross_entropy(inputs, targets)


def _bce_sum(inputs, targets):
    p = inputs.sigmoid()
    return -torch.where(targets == 1, p, 1 - p).log().sum()


def _bce_per_row(inputs, targets):
    p = inputs.sigmoid()
    return -torch.where(targets == 1, p, 1 - p).log().mean(dim=1)


def _bce_no_minus(inputs, targets):
    p = inputs.sigmoid()
    return torch.where(targets == 1, p, 1 - p).log().mean()


def _bce_no_log(inputs, targets):
    p = inputs.sigmoid()
    return torch.where(targets == 1, 1 - p, p).mean()


BINARY_CROSS_ENTROPY = Spec(
    id="binary_cross_entropy",
    reference=ref.binary_cross_entropy,
    cases=_bce_cases,
    judge=_bce_judge,
    mistakes=[
        Mistake("swapped_where", _bce_swapped,
                "your BCE rewards wrong labels: are the torch.where branches swapped? Where the target is 1 the "
                "loss must be -log(p), where it is 0, -log(1 - p): torch.where(targets == 1, p, 1 - p)."),
        Mistake("no_sigmoid", _bce_no_sigmoid,
                "the inputs are logits, not probabilities: apply .sigmoid() first "
                "(the log of a negative logit is NaN)."),
        Mistake("softmax", _bce_softmax,
                "use sigmoid, not softmax: softmax makes the classes compete for one unit of probability, but in "
                "multi-label each class is its own yes/no question."),
        Mistake("cross_entropy", _bce_cross_entropy,
                "that is softmax cross-entropy (F.cross_entropy), which assumes exactly one label per image; "
                "multi-label needs an independent sigmoid and a binary cross-entropy per class."),
        Mistake("sum", _bce_sum,
                "use .mean() over all elements, not .sum(): the loss should not grow with batch size or class count."),
        Mistake("per_row", _bce_per_row, "average over all B*C elements: .mean() with no dim, giving a scalar."),
        Mistake("no_minus", _bce_no_minus,
                "the log of a probability is negative: put a minus sign in front "
                "so the loss falls as predictions improve."),
        Mistake("no_log", _bce_no_log,
                "take the log: -log(p) punishes a confident wrong answer without limit, which plain 1 - p does not."),
    ],
    n_visible=5,
    n_hidden=30,
    # Library losses that would do the whole exercise: calling one gets the answer flagged.
    forbidden=("torch.nn.functional.binary_cross_entropy_with_logits", "torch.nn.functional.binary_cross_entropy",
               "torch.nn.BCEWithLogitsLoss", "torch.nn.BCELoss", "fastai.losses.BCEWithLogitsLossFlat",
               "torch.binary_cross_entropy_with_logits", "torch._C._nn.binary_cross_entropy",
               "torch.ops.aten.binary_cross_entropy_with_logits", "torch.ops.aten.binary_cross_entropy"),
    contract=(
        Clause("shape", "inputs (logits) and targets (0.0 or 1.0) both have shape [B, C]", arg="inputs", values=(2,)),
        Clause("behaviour", "a 0-dimensional float32 tensor: the mean over all B*C elements"),
        Clause("differentiable", "the result stays differentiable"),
        Clause("unchanged", "inputs and targets are left unchanged", arg="inputs"),
        Clause("unchanged", "inputs and targets are left unchanged", arg="targets"),
    ),
)

# --------------------------------------------------------------------------- accuracy_multi

def _acc_cases(rng: np.random.Generator, device: torch.device, n: int) -> list[Case]:
    out = []
    for i in range(max(n, 5)):
        if i < 5:
            b, c = [(32, 20), (4, 5), (16, 3), (6, 20), (12, 10)][i]
        else:
            b, c = int(rng.integers(1, 33)), int(rng.integers(2, 21))
        targ = torch.from_numpy((rng.random((b, c)) < 0.3).astype(np.float32)).to(device)
        kind = i % 4
        if kind == 3:
            # Probabilities on a 1/4 grid with thresholds on the grid: ties decide > against >=.
            inp = torch.from_numpy(rng.integers(0, 5, (b, c)) / 4).float().to(device)
            kw = dict(thresh=float(rng.choice([0.25, 0.5, 0.75])), sigmoid=False)
        elif kind == 2:
            inp = torch.from_numpy(rng.random((b, c))).float().to(device)
            kw = dict(thresh=float(np.round(rng.uniform(0.1, 0.9), 2)), sigmoid=False)
        else:
            # Logits correlated with the targets, so the accuracy is neither 0 nor 1.
            inp = torch.from_numpy(rng.normal(0, 1.5, (b, c)) + 2.5 * (targ.cpu().numpy() - 0.5)).float().to(device)
            kw = {} if kind == 0 else dict(thresh=float(np.round(rng.uniform(0.1, 0.9), 2)))
        # A flat list of decisions [N] is as valid as a batch [B, C]: every fifth case is flat.
        if i % 5 == 4:
            inp, targ = inp.reshape(-1), targ.reshape(-1)
        shape = list(inp.shape)
        label = f"inp {shape}, " + (", ".join(f"{k}={v}" for k, v in kw.items()) or "defaults")
        out.append(Case((inp, targ), kw, label))
    return out


def _acc_judge(case, got, expected):
    if isinstance(got, float):
        return "return the tensor (as fastai metrics do), not a Python float: drop the .item()"
    return compare(got, expected, rtol=1e-5, atol=1e-6)


def _acc_no_sigmoid(inp, targ, thresh=0.5, sigmoid=True):
    return ((inp > thresh) == targ.bool()).float().mean()


def _acc_always_sigmoid(inp, targ, thresh=0.5, sigmoid=True):
    return ((inp.sigmoid() > thresh) == targ.bool()).float().mean()


def _acc_direction(inp, targ, thresh=0.5, sigmoid=True):
    if sigmoid:
        inp = inp.sigmoid()
    return ((inp < thresh) == targ.bool()).float().mean()


def _acc_ge(inp, targ, thresh=0.5, sigmoid=True):
    if sigmoid:
        inp = inp.sigmoid()
    return ((inp >= thresh) == targ.bool()).float().mean()


def _acc_softmax(inp, targ, thresh=0.5, sigmoid=True):
    if sigmoid:
        inp = inp.softmax(dim=-1)
    return ((inp > thresh) == targ.bool()).float().mean()


def _acc_argmax(inp, targ, thresh=0.5, sigmoid=True):
    return (inp.argmax(dim=-1) == targ.argmax(dim=-1)).float().mean()


def _acc_exact_match(inp, targ, thresh=0.5, sigmoid=True):
    if sigmoid:
        inp = inp.sigmoid()
    return ((inp > thresh) == targ.bool()).all(dim=-1).float().mean()


def _acc_positives_only(inp, targ, thresh=0.5, sigmoid=True):
    if sigmoid:
        inp = inp.sigmoid()
    return (inp > thresh)[targ.bool()].float().mean()


ACCURACY_MULTI = Spec(
    id="accuracy_multi",
    reference=ref.accuracy_multi,
    cases=_acc_cases,
    judge=_acc_judge,
    mistakes=[
        Mistake("no_sigmoid", _acc_no_sigmoid,
                "when sigmoid=True the inputs are logits: apply inp.sigmoid() before comparing with the threshold "
                "(a threshold of 0.5 on logits means a probability of 0.62)."),
        Mistake("always_sigmoid", _acc_always_sigmoid,
                "apply the sigmoid only when sigmoid=True: with sigmoid=False the inputs are already probabilities "
                "(as get_preds returns them), and a second sigmoid squeezes them all into [0.5, 0.73]."),
        Mistake("direction", _acc_direction,
                "the threshold points the wrong way: a class is predicted present when its probability is above it "
                "(inp > thresh)."),
        Mistake("ge", _acc_ge,
                "a probability equal to the threshold does not count as predicted: use inp > thresh, as fastai does, "
                "not >=."),
        Mistake("softmax", _acc_softmax,
                "use sigmoid, not softmax: with softmax the probabilities of an image sum to 1, so two present classes "
                "can never both clear 0.5."),
        Mistake("argmax", _acc_argmax,
                "that is single-label accuracy (argmax picks one class per image); accuracy_multi thresholds every "
                "class and averages the B*C right-or-wrong decisions."),
        Mistake("exact_match", _acc_exact_match,
                "that is the exact-match ratio (an image counts only if all its classes are right); accuracy_multi "
                "averages over every (image, class) pair: .mean() over all elements."),
        Mistake("positives_only", _acc_positives_only,
                "you averaged only over the true labels (that is recall); compare every prediction with its target, "
                "including the absent classes: (pred == targ.bool()).float().mean()."),
    ],
    n_visible=6,
    n_hidden=40,
    forbidden=("fastai.metrics.accuracy_multi",),
    contract=(
        Clause("shape", "inp and targ have the same shape: [B, C], or [N] for a flat list of decisions", arg="inp",
               values=(1, 2)),
        Clause("optional", "apply the sigmoid to inp only when sigmoid=True", arg="sigmoid"),
        Clause("optional", "where the probability is > thresh", arg="thresh"),
        Clause("range", "a fraction between 0 and 1", values=(0.0, 1.0)),
        Clause("behaviour", "as a 0-dimensional float32 tensor"),
        Clause("unchanged", "inp and targ are left unchanged", arg="inp"),
        Clause("unchanged", "inp and targ are left unchanged", arg="targ"),
    ),
)

# --------------------------------------------------------------------------- best_threshold

def _best_cases(rng: np.random.Generator, device: torch.device, n: int) -> list[Case]:
    out = []
    for i in range(max(n, 3)):
        b, c = (int(rng.integers(8, 65)), int(rng.integers(3, 21)))
        targ = (rng.random((b, c)) < 0.2).astype(np.float32)
        logits = np.where(targ == 1, rng.normal(0.0, 1.5, (b, c)), rng.normal(-2.5, 1.5, (b, c)))
        preds = torch.from_numpy(np.round(1 / (1 + np.exp(-logits)), 3)).float().to(device)
        targs = torch.from_numpy(targ).to(device)
        k = int(rng.integers(5, 30))
        ths: torch.Tensor | list[float]
        if i % 2 == 0:
            ths = torch.linspace(0.05, 0.95, k)
            what = f"torch.linspace(0.05, 0.95, {k})"
        else:
            ths = [round(float(t), 2) for t in np.sort(rng.uniform(0.02, 0.98, k))]
            what = f"a list of {k} thresholds"
        out.append(Case((preds, targs, ths), {}, f"preds [{b}, {c}], {what}"))
    return out


def _as_float(x):
    if isinstance(x, torch.Tensor) and x.numel() == 1:
        return float(x)
    if isinstance(x, (float, int, np.floating, np.integer)) and not isinstance(x, bool):
        return float(x)
    return None


def _best_judge(case, got, expected):
    preds, targs, thresholds = case.args
    if not (isinstance(got, (tuple, list)) and len(got) == 2):
        return f"expected (threshold, accuracy), got {describe(got)}"
    t, a = _as_float(got[0]), _as_float(got[1])
    if t is None or a is None:
        return f"both items must be numbers, got {describe(got[0])} and {describe(got[1])}"
    # The same numbers as `expected` are right (this is also how a known mistake is recognised);
    # otherwise the answer may still be right when several thresholds tie for the best accuracy.
    if abs(t - float(expected[0])) < 1e-6 and abs(a - float(expected[1])) < 1e-6:
        return None
    ts = torch.as_tensor(thresholds, dtype=torch.float32).reshape(-1)
    accs = ref.threshold_sweep(preds.detach().cpu(), targs.detach().cpu(), ts)
    best_t, best_a = float(ts[int(accs.argmax())]), float(accs.max())
    if abs(float(expected[1]) - best_a) > 1e-6:
        # ``expected`` is a known mistake's answer, not the best: only that very answer matches it.
        return f"({t:.4g}, {a:.5f}) is not ({float(expected[0]):.4g}, {float(expected[1]):.5f})"
    on_grid = (ts - t).abs() < 1e-6
    if not bool(on_grid.any()):
        return f"the threshold {t:.4g} is not one of the thresholds you were given"
    acc_at_t = float(accs[on_grid][0])
    if abs(a - acc_at_t) > 1e-5:
        return f"at threshold {t:.4g} the accuracy is {acc_at_t:.5f}, but you returned {a:.5f}"
    if acc_at_t < best_a - 1e-6:
        return f"threshold {t:.4g} gives accuracy {acc_at_t:.5f}, but {best_t:.4g} gives {best_a:.5f}"
    return None


def _best_argmin(preds, targs, thresholds):
    ts = torch.as_tensor(thresholds, dtype=torch.float32)
    accs = ref.threshold_sweep(preds, targs, ts)
    i = int(accs.argmin())
    return float(ts[i]), float(accs[i])


def _best_sigmoid_again(preds, targs, thresholds):
    ts = torch.as_tensor(thresholds, dtype=torch.float32)
    accs = torch.stack([ref.accuracy_multi(preds, targs, thresh=float(t)) for t in ts])
    i = int(accs.argmax())
    return float(ts[i]), float(accs[i])


def _best_index(preds, targs, thresholds):
    ts = torch.as_tensor(thresholds, dtype=torch.float32)
    accs = ref.threshold_sweep(preds, targs, ts)
    i = int(accs.argmax())
    return float(i), float(accs[i])


def _best_at_half(preds, targs, thresholds):
    return 0.5, float(ref.accuracy_multi(preds, targs, thresh=0.5, sigmoid=False))


def _best_swapped(preds, targs, thresholds):
    t, a = ref.best_threshold(preds, targs, thresholds)
    return a, t


BEST_THRESHOLD = Spec(
    id="best_threshold",
    reference=ref.best_threshold,
    cases=_best_cases,
    judge=_best_judge,
    mistakes=[
        Mistake("argmin", _best_argmin,
                "you picked the threshold with the lowest accuracy: use argmax (or max), not argmin."),
        Mistake("sigmoid_again", _best_sigmoid_again,
                "preds are already probabilities (get_preds applied the sigmoid): "
                "call accuracy_multi(..., sigmoid=False)."),
        Mistake("index", _best_index, "return the threshold itself, thresholds[i], not its position i."),
        Mistake("swapped", _best_swapped, "return (threshold, accuracy) in that order."),
        Mistake("at_half", _best_at_half,
                "you returned the accuracy at 0.5 whatever the thresholds: try every threshold you are given and "
                "keep the best."),
    ],
    n_visible=4,
    n_hidden=20,
    contract=(
        Clause("shape", "thresholds is a 1-d tensor or a list", arg="thresholds", values=(1,)),
        Clause("behaviour", "any of several tied best thresholds is right"),
        Clause("unchanged", "preds, targs and thresholds are left unchanged", arg="preds"),
        Clause("unchanged", "preds, targs and thresholds are left unchanged", arg="targs"),
        Clause("unchanged", "preds, targs and thresholds are left unchanged", arg="thresholds"),
    ),
)

# ------------------------------------------------------------------ widget: chosen_threshold

# How far below the best accuracy a recorded threshold may be: the width of the curve's plateau
# (a few decisions in 8000), so any point on the flat top counts, and a guess does not.
PLATEAU = 0.002


def _chosen_judge(case, got, expected):
    if not (isinstance(got, (tuple, list)) and len(got) == 2):
        return f"expected (threshold, accuracy), the line the Record button shows; got {describe(got)}"
    t, a = _as_float(got[0]), _as_float(got[1])
    if t is None or a is None:
        return "threshold and accuracy must both be numbers"
    ts = ref.explorer_thresholds()
    on_grid = (ts - t).abs() < 1e-6
    if not bool(on_grid.any()):
        return f"the threshold {t} is not a slider position (0.01 to 0.99 in steps of 0.01)"
    # The curve of the student whose answer this is (the grader passes who handed it in).
    preds, targs = ref.explorer_set(case.kwargs.get("student"))
    accs = ref.threshold_sweep(preds, targs, ts)
    acc_at_t = float(accs[on_grid][0])
    if abs(a - acc_at_t) > 1e-4:  # the explorer shows 4 decimals
        return (f"on your explorer's set the accuracy at threshold {t:.2f} is {acc_at_t:.4f}, not {a:.4f}: "
                "record it with the explorer rather than typing it")
    best = float(accs.max())
    if acc_at_t < best - PLATEAU:
        side = "lower" if float(ts[int(accs.argmax())]) < t else "higher"
        return (f"accuracy {acc_at_t:.4f} at threshold {t:.2f} is not on the top of the curve: "
                f"try a {side} threshold")
    return None


CHOSEN_THRESHOLD = Spec(
    id="chosen_threshold",
    reference=None,
    judge=_chosen_judge,
    kind="answer",
    hint="move the explorer's slider until the accuracy is as high as it gets, "
         "then press Record and paste the line it shows.",
    target=ref.explorer_target,
    # The best slider position of a student's own set is a right answer for them, as their widget records it.
    answer_for=ref.explorer_target,
)

# ------------------------------------------------------------------ capstone: train_multilabel

def _capstone_cases(rng: np.random.Generator, device: torch.device, n: int) -> list[Case]:
    """One case: a training folder and held-out images, both drawn by course_lib's PASCAL maker from ``rng``.

    The held-out labels go to ``Case.secret`` and every file that could give them away (the CSV, the COCO json, the
    build manifest with its seed) is removed: the student's process sees the images only.
    """
    import shutil

    from course_lib.data.pascal import make_pascal_2007

    s = ref.capstone_settings()
    train_seed, held_seed = (int(x) for x in rng.integers(0, 2**31 - 1, 2))
    folder = case_dir("pascal_capstone_")
    train = make_pascal_2007(folder / "training", s["n_train"], seed=train_seed, image_size=s["image_size"])
    (train / ".course_manifest.json").unlink()
    made = make_pascal_2007(folder / "made", s["n_heldout"], seed=held_seed, image_size=s["image_size"])
    df = ref.read_pascal_csv(made)
    secret = torch.stack([ref.one_hot(labels.split(" "), VOC_CLASSES) for labels in df["labels"]])
    images = (made / "train").rename(folder / "held_out")
    shutil.rmtree(folder / "made")
    files = [images / name for name in df["fname"]]
    return [Case((train, files), {}, f"{s['n_train']} training images, {len(files)} held-out images",
                 secret=secret)][:max(n, 1)]


def _capstone_parts(got):
    """``(probs [N, C] float tensor, thresh float)`` from an answer, or a sentence saying why not."""
    if not (isinstance(got, (tuple, list)) and len(got) == 2):
        return f"expected (probabilities, threshold), got {describe(got)}"
    probs, thresh = got
    t = _as_float(thresh)
    if t is None:
        return f"the threshold must be a number, got {describe(thresh)}"
    try:
        p = torch.as_tensor(np.asarray(probs.detach().cpu() if isinstance(probs, torch.Tensor) else probs),
                            dtype=torch.float32)
    except (TypeError, ValueError):
        return f"the probabilities must be a tensor (or an array) of numbers, got {describe(probs)}"
    return p, t


def _capstone_judge(case, got, expected):
    parts = _capstone_parts(got)
    if isinstance(parts, str):
        return parts
    p, t = parts
    n = len(case.args[1])
    if tuple(p.shape) != (n, len(VOC_CLASSES)):
        return (f"expected probabilities of shape [{n}, {len(VOC_CLASSES)}] (one row per image, one column per "
                f"class of VOC_CLASSES), got shape {list(p.shape)}")
    if not bool(torch.isfinite(p).all()):
        return "some probabilities are NaN or infinite"
    if float(p.min()) < 0 or float(p.max()) > 1:
        return f"probabilities lie between 0 and 1; yours go from {float(p.min()):.3g} to {float(p.max()):.3g}"
    if not 0 < t < 1:
        return f"the threshold {t:.3g} is not between 0 and 1: every class would be predicted the same way"
    return None


def _capstone_measure(case, got) -> float:
    p, t = _capstone_parts(got)
    return float(ref.accuracy_multi(p, case.secret, thresh=t, sigmoid=False))


def _capstone_diagnose(case, got):
    """The known mistake the predictions show, from their values alone (no mistake is trained again)."""
    parts = _capstone_parts(got)
    if isinstance(parts, str) or parts[0].ndim != 2 or parts[0].shape[0] < 2:
        return None
    p, _ = parts
    by_name = {m.name: m for m in TRAIN_MULTILABEL.mistakes}
    if float(p.min()) < 0 or float(p.max()) > 1:
        return by_name["logits"]
    if float((p - p[0]).abs().max()) < 1e-4:
        return by_name["constant"]
    # Labels are rare (about 8 % of the pairs): a model that says "yes" to most of them learnt the opposite.
    if float(p.mean()) > 0.7:
        return by_name["swapped_where"]
    return None


def _capstone_swapped(path, files):
    # The seed's loss with the torch.where branches swapped, trained with exactly the reference's recipe.
    def swapped(inputs, targets):
        p = inputs.sigmoid()
        return -torch.where(targets == 1, 1 - p, p).clamp_min(1e-7).log().mean()

    return _capstone_train(path, files, loss_func=swapped)


def _capstone_logits(path, files):
    return _capstone_train(path, files, activation=lambda x: x)


def _capstone_constant(path, files):
    # How common each class is in the training labels, the same for every image.
    df = ref.read_pascal_csv(path)
    freq = torch.stack([ref.one_hot(labels.split(" "), VOC_CLASSES) for labels in df["labels"]]).mean(dim=0)
    return freq.expand(len(files), -1).clone(), 0.5


def _capstone_train(path, files, loss_func=None, activation=None):
    """The reference's recipe with another loss or output activation (the known mistakes' answers)."""
    import fastai.callback.all  # noqa: F401
    from fastai.learner import Learner

    s = ref.capstone_settings()
    dls = ref.pascal_dataloaders(path, s["size"], s["batch_size"])
    learn = Learner(dls, ref.presence_cnn(s["width"], len(dls.vocab)), loss_func=loss_func)
    with learn.no_bar(), learn.no_logging():
        learn.fit_one_cycle(s["epochs"], s["lr"])
        act = (activation or torch.sigmoid)
        logits, targs = learn.get_preds(act=lambda x: x)
        thresh, _ = ref.best_threshold(act(logits).clamp(0, 1), targs, ref.CAPSTONE_THRESHOLDS)
        test_logits, _ = learn.get_preds(dl=dls.test_dl(list(files)), act=lambda x: x)
    return act(test_logits).as_subclass(torch.Tensor).float().cpu(), thresh


TRAIN_MULTILABEL = Spec(
    id="train_multilabel",
    reference=ref.train_multilabel,
    cases=_capstone_cases,
    judge=_capstone_judge,
    mistakes=[
        Mistake("swapped_where", _capstone_swapped,
                "your model says \"yes\" to most classes of most images, though labels are rare: its loss rewards "
                "wrong answers. Are the torch.where branches of the loss swapped? Test the loss on a perfect and on "
                "a perfectly wrong prediction."),
        Mistake("logits", _capstone_logits,
                "these are logits, not probabilities: get_preds applies the loss's activation only when it knows "
                "the loss; apply the sigmoid to the model's outputs."),
        Mistake("constant", _capstone_constant,
                "every image gets the same probabilities: the model learnt how common each class is, not what is in "
                "the picture (train it, and predict each image)."),
    ],
    n_visible=1,
    n_hidden=1,
    contract=(
        Clause("behaviour", "the probabilities, a tensor of shape [len(files), 20], one column per class of "
                            "VOC_CLASSES, in that order"),
        Clause("range", "every probability between 0 and 1", values=(0.0, 1.0)),
        Clause("behaviour", "the threshold, a number between 0 and 1"),
    ),
    bands=Bands(
        metric="accuracy_multi",
        higher_is_better=True,
        # Best first, each profile's last edge above the all-"no" baseline (0.92-0.93 on this data), so that a
        # constant answer earns nothing. ci: the reference reached 0.947-0.956 on five seeds. cpu: 0.995 on one seed
        # (77 CPU seconds). gpu: a guess, not measured.
        edges={"ci": (0.94, 0.937, 0.934, 0.931), "cpu": (0.98, 0.97, 0.96, 0.95),
               "gpu": (0.985, 0.975, 0.965, 0.955)},
        fractions=(1.0, 0.75, 0.5, 0.25),
    ),
    measure=_capstone_measure,
    seconds={"ci": 30.0, "cpu": 600.0, "gpu": 600.0},
    diagnose=_capstone_diagnose,
    hint="train until the validation accuracy clearly beats the all-\"no\" baseline, then pick the threshold "
         "on the validation set.",
)

SPECS = [ONE_HOT, BINARY_CROSS_ENTROPY, ACCURACY_MULTI, BEST_THRESHOLD, CHOSEN_THRESHOLD, TRAIN_MULTILABEL]
