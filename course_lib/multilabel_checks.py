"""Check specs for lesson 03_multilabel: cases, judges and known wrong answers."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from course_lib import multilabel as ref
from course_lib.checks import Case, Mistake, Spec, compare, describe
from course_lib.data.pascal import VOC_CLASSES

# -------------------------------------------------------------------------------- one_hot

def _one_hot_cases(rng: np.random.Generator, device: torch.device, n: int) -> list[Case]:
    voc = list(VOC_CLASSES)
    # The last class and an empty label list are where off-by-one and dtype slips show.
    fixed = [(["dog", "person"], voc), (["tvmonitor"], voc), ([], voc), (["b", "a"], ["a", "b", "c"])]
    out = [Case((labels, vocab), {}, f"labels={labels}, vocab of {len(vocab)}") for labels, vocab in fixed]
    for _ in range(max(0, n - len(fixed))):
        vocab = sorted(rng.choice(voc, size=int(rng.integers(3, 21)), replace=False).tolist())
        labels = rng.choice(vocab, size=int(rng.integers(1, 4)), replace=False).tolist()
        out.append(Case((labels, vocab), {}, f"labels={labels}, vocab of {len(vocab)}"))
    return out[:n] if n >= 4 else out[:4]


def _one_hot_judge(case, got, expected):
    if isinstance(got, torch.Tensor) and got.shape == expected.shape and not got.dtype.is_floating_point:
        return (f"the target has dtype {got.dtype}; BCE compares it with probabilities, so make it float "
                "(torch.zeros(len(vocab)) is float32)")
    return compare(got, expected)


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


ONE_HOT = Spec(
    id="one_hot",
    reference=ref.one_hot,
    cases=_one_hot_cases,
    judge=_one_hot_judge,
    mistakes=[
        Mistake("long", _one_hot_long,
                "make the target float (torch.zeros(len(vocab))), not integer: "
                "the loss compares it with probabilities."),
        Mistake("rows", _one_hot_rows,
                "F.one_hot gives one row per label ([n_labels, C]); a multi-label target is a single row with a 1 "
                "for every label: start from torch.zeros(len(vocab)) and set each label's position."),
        Mistake("one_based", _one_hot_one_based,
                "the positions are shifted by one: vocab.index(name) is already 0-based (the COCO json's "
                "category_id is the 1-based one)."),
        Mistake("indices", _one_hot_indices,
                "you returned the labels' positions; one-hot means a vector of len(vocab) "
                "with 1.0 at those positions."),
    ],
    n_visible=5,
    n_hidden=30,
    forbidden=("fastai.torch_core.one_hot",),
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
        out.append(Case((inputs, targets), {}, f"inputs [{b}, {c}], targets [{b}, {c}]"))
    return out


def _bce_cases(rng, device, n):
    return _logit_cases(rng, device, max(n, 3))


def _bce_judge(case, got, expected):
    return compare(got, expected, rtol=1e-3, atol=1e-4)


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
)

# --------------------------------------------------------------------------- accuracy_multi

def _acc_cases(rng: np.random.Generator, device: torch.device, n: int) -> list[Case]:
    out = []
    for i in range(max(n, 4)):
        if i < 4:
            b, c = [(32, 20), (4, 5), (16, 3), (6, 20)][i]
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
        label = f"inp [{b}, {c}], " + (", ".join(f"{k}={v}" for k, v in kw.items()) or "defaults")
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
    accs = ref.threshold_sweep(preds.cpu(), targs.cpu(), ts)
    on_grid = (ts - t).abs() < 1e-6
    if not bool(on_grid.any()):
        return f"the threshold {t:.4g} is not one of the thresholds you were given"
    acc_at_t = float(accs[on_grid][0])
    best_t, best_a = expected
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
    ],
    n_visible=4,
    n_hidden=20,
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
    preds, targs = ref.reference_predictions()
    accs = ref.threshold_sweep(preds, targs, ts)
    acc_at_t = float(accs[on_grid][0])
    if abs(a - acc_at_t) > 1e-4:  # the explorer shows 4 decimals
        return (f"on the reference set the accuracy at threshold {t:.2f} is {acc_at_t:.4f}, not {a:.4f}: "
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
)

SPECS = [ONE_HOT, BINARY_CROSS_ENTROPY, ACCURACY_MULTI, BEST_THRESHOLD, CHOSEN_THRESHOLD]
