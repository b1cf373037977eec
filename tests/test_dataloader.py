"""course_lib.dataloader: references against PyTorch, torchvision and fastai, diagnoses, the explorer, grading the
lesson."""
import inspect
import re

import numpy as np
import pandas as pd
import pytest
import torch

from course_lib import dataloader as D
from course_lib.checks import Case, CheckFailed, check, get_spec, run_check
from course_lib.data.pascal import VOC_CLASSES

from grading import LIST_COLLATE, lesson_class

LESSON = "01_dataloader"


@pytest.fixture(scope="module")
def pascal():
    from course_lib.data.pascal import get_pascal_2007

    return get_pascal_2007("ci")


@pytest.fixture(scope="module")
def flowers():
    from course_lib.data.flowers import get_flowers

    return get_flowers("ci")


def _random_df(rng, n, shuffled=False):
    valid = rng.random(n) < 0.3
    valid[0], valid[-1] = False, True
    df = pd.DataFrame({"fname": [f"{i:06d}.jpg" for i in range(n)],
                       "labels": [" ".join(sorted(rng.choice(VOC_CLASSES, 2, replace=False))) for _ in range(n)],
                       "is_valid": valid})
    if shuffled:
        df.index = rng.permutation(n) + 50
    return df


# ------------------------------------------------------------------------------ references

def test_collate_equals_default_collate():
    from torch.utils.data import default_collate

    rng = np.random.default_rng(0)
    for i in range(30):
        b, c = int(rng.integers(1, 9)), int(rng.choice([1, 3]))
        h, w = int(rng.integers(1, 10)), int(rng.integers(1, 10))
        xs = [torch.randn(c, h, w) for _ in range(b)]
        ys = rng.integers(0, 20, b).tolist() if i % 2 else [torch.rand(5) for _ in range(b)]
        items = list(zip(xs, ys))
        xb, yb = D.collate(items)
        want = default_collate(items)
        assert torch.equal(xb, want[0]) and torch.equal(yb, want[1]) and yb.dtype == want[1].dtype


def test_denormalize_inverts_torchvision_normalize():
    import torchvision.transforms as T

    rng = np.random.default_rng(1)
    for i in range(20):
        shape = (int(rng.integers(1, 5)), 3, 7, 5) if i % 2 else (3, 6, 9)
        pic = torch.rand(shape)
        mean, std = tuple(rng.uniform(0.2, 0.7, 3).tolist()), tuple(rng.uniform(0.1, 0.4, 3).tolist())
        out = D.denormalize(T.Normalize(mean, std)(pic), mean, std)
        assert out.shape == pic.movedim(-3, -1).shape
        assert torch.allclose(out, pic.movedim(-3, -1), atol=1e-5)
    img = torch.rand(3, 4, 6)
    assert torch.equal(D.denormalize(img, (0, 0, 0), (1, 1, 1)), img.permute(1, 2, 0))
    assert D.denormalize(torch.full((3, 2, 2), 50.0), D.IMAGENET_MEAN, D.IMAGENET_STD).max() == 1.0


def test_image_list_dataset_matches_image_folder(flowers):
    from torchvision.datasets import ImageFolder

    folder = ImageFolder(flowers / "train")
    items, classes = D.folder_items(flowers / "train")
    assert classes == folder.classes and [(str(f), y) for f, y in items] == folder.samples
    ds = D.ImageListDataset(items)
    assert isinstance(ds, torch.utils.data.Dataset) and len(ds) == len(folder)
    for i in (0, len(ds) - 1):
        (a, ya), (b, yb) = ds[i], folder[i]
        assert ya == yb and a.mode == "RGB" and np.array_equal(np.asarray(a), np.asarray(b))
    x, _ = D.ImageListDataset(items, transform=D.valid_transforms(32))[0]
    assert tuple(x.shape) == (3, 32, 32)


def test_image_list_dataset_batches_with_a_dataloader(flowers):
    from torch.utils.data import DataLoader

    items, _ = D.folder_items(flowers / "train")
    ds = D.ImageListDataset(items, transform=D.train_transforms(24))
    batches = list(DataLoader(ds, batch_size=5, shuffle=True, collate_fn=D.collate))
    assert [len(xb) for xb, _ in batches] == [5] * (len(ds) // 5) + ([len(ds) % 5] if len(ds) % 5 else [])
    assert batches[0][0].shape[1:] == (3, 24, 24) and batches[0][1].dtype == torch.int64


def test_splitter_equals_fastai_col_splitter():
    from fastai.data.transforms import ColSplitter

    rng = np.random.default_rng(2)
    for i in range(20):
        df = _random_df(rng, int(rng.integers(2, 50)), shuffled=i % 2 == 1)
        train, valid = D.splitter(df)
        want_train, want_valid = ColSplitter("is_valid")(df)
        assert train == list(want_train) and valid == list(want_valid)
        assert all(type(v) is int for v in train + valid)


def test_datablock_with_the_references(pascal):
    from functools import partial

    from fastai.data.block import DataBlock, MultiCategoryBlock
    from fastai.vision.augment import Resize
    from fastai.vision.data import ImageBlock

    df = D.read_pascal_csv(pascal)
    dblock = DataBlock(blocks=(ImageBlock, MultiCategoryBlock(vocab=VOC_CLASSES)),
                       get_x=partial(D.get_x, path=pascal), get_y=D.get_y, splitter=D.splitter,
                       item_tfms=Resize(32, method="squish"))
    dsets = dblock.datasets(df)
    assert len(dsets.valid) == int(df["is_valid"].sum()) and len(dsets.train) == int((~df["is_valid"]).sum())
    row = df[~df["is_valid"]].iloc[0]
    x, y = dsets.train[0]
    assert x.size == __import__("PIL.Image").Image.open(pascal / "train" / row["fname"]).size
    assert list(dsets.vocab[torch.where(y == 1)[0]]) == sorted(row["labels"].split(" "))
    dls = dblock.dataloaders(df, bs=4, num_workers=0, device="cpu")
    xb, yb = dls.one_batch()
    assert tuple(xb.shape) == (4, 3, 32, 32) and tuple(yb.shape) == (4, 20)


def test_get_x_and_get_y_on_a_row(pascal):
    row = D.read_pascal_csv(pascal).iloc[0]
    assert D.get_x(row, pascal) == pascal / "train" / row["fname"] and D.get_x(row, pascal).is_file()
    assert D.get_y(pd.Series({"labels": "dog person"})) == ["dog", "person"]
    # fastai casts to a get_y's return annotation: it must be plain `list`.
    assert inspect.signature(D.get_y).return_annotation in (list, "list")


def test_class_exercise_has_what_the_release_test_needs():
    sig = inspect.signature(D.ImageListDataset)
    assert list(sig.parameters) == ["items", "transform"]
    assert sig.return_annotation is not inspect.Signature.empty and D.ImageListDataset.__doc__


def test_settings_per_profile():
    for profile in ("ci", "cpu", "gpu"):
        s = D.settings(profile)
        assert {"size", "batch_size", "num_workers", "throughput_images", "throughput_workers"} <= set(s)
        assert {0, 1, 2} <= set(s["throughput_workers"])
    assert D.settings("ci")["throughput_images"] <= 64


def test_folder_items_says_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="get_flowers"):
        D.folder_items(tmp_path / "missing")


def test_valid_transforms_are_deterministic_and_train_transforms_are_not(flowers):
    from PIL import Image

    img = Image.open(next((flowers / "train").glob("*/*.jpg"))).convert("RGB")
    v = D.valid_transforms(40)
    assert torch.equal(v(img), v(img)) and tuple(v(img).shape) == (3, 40, 40)
    t = D.train_transforms(40)
    torch.manual_seed(0)
    a, b = t(img), t(img)
    assert a.shape == b.shape == (3, 40, 40) and not torch.equal(a, b)


def test_validation_pipeline_rule():
    assert D.validation_pipeline_problems(("Resize", "CenterCrop", "ToTensor", "Normalize")) == []
    # Against a training pipeline: its preparation steps belong in validation too, and only those.
    train = ("RandomResizedCrop", "Grayscale", "RandomHorizontalFlip", "ToTensor", "Normalize")
    assert D.validation_pipeline_problems(("Resize", "CenterCrop", "Grayscale", "ToTensor", "Normalize"), train) == []
    missing = D.validation_pipeline_problems(("Resize", "CenterCrop", "ToTensor", "Normalize"), train)
    assert len(missing) == 1 and "Grayscale" in missing[0] and "training pipeline" in missing[0]
    extra = D.validation_pipeline_problems(("Resize", "CenterCrop", "Grayscale", "Equalize", "ToTensor", "Normalize"),
                                           train)
    assert len(extra) == 1 and extra[0].startswith("Equalize") and "never saw" in extra[0]
    for step in D.RANDOM_STEPS:
        problems = D.validation_pipeline_problems(("Resize", "CenterCrop", step, "ToTensor", "Normalize"))
        assert len(problems) == 1 and problems[0].startswith(step) and "leave it out" in problems[0]
    assert "Resize first" in D.validation_pipeline_problems(("CenterCrop", "ToTensor", "Normalize"))[0]
    assert "training size" in D.validation_pipeline_problems(("Resize", "ToTensor", "Normalize"))[0]
    assert "Normalize" in D.validation_pipeline_problems(("Resize", "CenterCrop", "ToTensor"))[0]
    assert "not a step" in D.validation_pipeline_problems(("Resize", "Flip"))[0]
    with pytest.raises(ValueError, match="unknown pipeline steps"):
        D.build_pipeline(["Blur"])


def test_measure_throughput_counts_every_image(flowers):
    import matplotlib.pyplot as plt

    items, _ = D.folder_items(flowers / "train")
    ds = D.ImageListDataset(items, transform=D.valid_transforms(16))
    results = D.measure_throughput(ds, batch_size=4, workers=(0, 1), n_images=10, progress=False)
    assert [r["workers"] for r in results] == [0, 1] and all(r["images"] == 10 for r in results)
    assert all(r["per_second"] > 0 for r in results)
    fig, ax = plt.subplots()
    D.plot_throughput(results, ax)
    assert len(ax.patches) == 2
    plt.close(fig)


# ------------------------------------------------------------------------------ diagnoses

def test_list_collate_is_diagnosed():
    ns = {}
    exec(LIST_COLLATE, {}, ns)
    with pytest.raises(CheckFailed, match="you returned lists of tensors"):
        check("collate", ns["collate"], hidden=True)


@pytest.mark.parametrize("spec_id,mistake,words", [
    ("splitter", "inverted", "the two parts are swapped"),
    ("splitter", "index_labels", "index labels"),
    ("denormalize", "channels_first", "channels are still first"),
    ("denormalize", "wrong_order", "first multiply by std"),
    ("get_y", "raw_string", "raw labels string"),
    ("ImageListDataset", "no_len", "has no __len__"),
    ("collate", "cat", "torch.stack"),
])
def test_issue_mistakes_have_clear_words(spec_id, mistake, words):
    spec = get_spec(spec_id)
    m = spec.mistake(mistake)
    assert m is not None and words in run_check(spec, m.impl).message


def test_seed_splitter_fails_only_on_a_shuffled_index():
    def seed_splitter(df):
        train = df.index[~df["is_valid"]].tolist()
        valid = df.index[df["is_valid"]].tolist()
        return train, valid

    spec = get_spec("splitter")
    rng = np.random.default_rng(3)
    df = _random_df(rng, 12)
    assert spec.judge(Case((df,)), seed_splitter(df), D.splitter(df)) is None
    assert "index labels" in run_check(spec, seed_splitter).message
    # Tuples, numpy arrays and tensors of positions are all fine.
    assert spec.judge(Case((df,)), tuple(np.asarray(p) for p in D.splitter(df)), D.splitter(df)) is None


def test_judges_explain_odd_answers():
    assert "not a torch.utils.data.Dataset" in run_check(get_spec("ImageListDataset"), _PlainDataset).message
    assert "got the string" in run_check(get_spec("get_y"), lambda row: row["labels"].upper()).message
    msg = run_check(get_spec("denormalize"), lambda x, m, s: D.denormalize(x, m, s).numpy()).message
    assert "return a tensor" in msg
    assert run_check(get_spec("get_x"), lambda row, path: str(D.get_x(row, path))).passed  # a str path opens too
    assert "not implemented yet" in run_check(get_spec("ImageListDataset"), _Unfinished).message


class _PlainDataset:
    """Right items, but not a torch Dataset."""

    def __init__(self, items, transform=None):
        self.ds = D.ImageListDataset(items, transform)

    def __len__(self):
        return len(self.ds)

    def __getitem__(self, i):
        return self.ds[i]


class _Unfinished(torch.utils.data.Dataset):
    def __init__(self, items, transform=None):
        raise NotImplementedError()


class _NumpyImages(torch.utils.data.Dataset):
    """Images as numpy arrays: neither the PIL image nor the transform's tensor."""

    def __init__(self, items, transform=None):
        self.items = list(items)

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        from PIL import Image

        with Image.open(self.items[i][0]) as im:
            return np.asarray(im.convert("RGB")), self.items[i][1]


class _FloatImages(D.ImageListDataset):
    """Mode "F" images, whose pixels are float32 rather than bytes."""

    def __getitem__(self, i):
        x, y = super().__getitem__(i)
        return (x.convert("F") if self.transform is None else x), y


class _TensorLabels(D.ImageListDataset):
    def __getitem__(self, i):
        x, y = super().__getitem__(i)
        return x, torch.tensor(y)


def test_image_list_dataset_is_observed_as_plain_data():
    """Each item comes back as data the grader loads without running code: PIL images as mode, size and pixels."""
    import io

    from course_lib.checks import hidden_cases, observe_cases

    spec = get_spec("ImageListDataset")
    cases = hidden_cases(spec, 1)
    observed = observe_cases(spec, D.ImageListDataset, cases)
    assert observed["portable"] is True and len(observed["observations"]) == len(cases)
    buf = io.BytesIO()
    torch.save(observed, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=True)
    for case, obs in zip(cases, loaded["observations"]):
        items = case.args[0]
        assert obs["is_dataset"] is True and obs["len"] == len(items) and len(obs["items"]) == len(items)
        for (file, label), item in zip(items, obs["items"]):
            assert item["label"] == label and type(item["label"]) is int
            if case.kwargs["transform"] is not None:
                assert isinstance(item["image"], torch.Tensor) and item["image"].shape == (3, 8, 8)
                continue
            from PIL import Image

            with Image.open(file) as im:
                w, h = im.size
            pil = item["image"]
            assert pil["kind"] == "PIL" and pil["mode"] == "RGB" and pil["size"] == [w, h]
            assert pil["pixels"].dtype == torch.uint8 and pil["pixels"].shape == (h, w, 3)


@pytest.mark.parametrize("answer", [D.ImageListDataset, _NumpyImages, _FloatImages, _TensorLabels, _PlainDataset,
                                    _Unfinished] + [m.impl for m in get_spec("ImageListDataset").mistakes],
                         ids=lambda a: a.__name__)
def test_image_list_dataset_grader_and_kernel_give_the_same_verdict(answer):
    from course_lib.checks import hidden_cases, judge_observations, observe_cases

    spec = get_spec("ImageListDataset")
    cases = hidden_cases(spec, 2)
    observed = observe_cases(spec, answer, cases)
    assert observed["portable"] is True
    # run_check adds 7919 to a hidden seed: these are the same cases, so the same words (but for the cases' folder).
    def words(message):
        return re.sub(r"ImageListDataset_\w+/", "ImageListDataset_*/", message)

    grader = judge_observations(spec, cases, observed).message
    assert words(grader) == words(run_check(spec, answer, hidden=True, seed=2 - 7919).message)


def test_odd_images_and_labels_are_named():
    spec = get_spec("ImageListDataset")
    assert "should be a tensor of shape [3, 8, 8], got array shape" in run_check(spec, _NumpyImages).message
    assert "should be a PIL image, mode RGB, size" in run_check(spec, _FloatImages).message
    assert "got a PIL image, mode F" in run_check(spec, _FloatImages).message
    assert "the label of dataset[0] should be int" in run_check(spec, _TensorLabels).message


# ------------------------------------------------------------------------------ widget

def _right_answer(student: str) -> tuple[str, ...]:
    """What the explorer accepts from ``student``: size and tensor steps plus their training pipeline's preparation."""
    train = D.explorer_training_steps(student)
    return ("Resize", "CenterCrop", *[s for s in D.PREPARATION_STEPS if s in train], "ToTensor", "Normalize")


@pytest.fixture(scope="module")
def explorer(flowers):
    from course_lib.widgets.dataloader import PipelineExplorer

    return PipelineExplorer(next((flowers / "train").glob("*/*.jpg")), size=32, n=4, student="dana")


def test_explorer_starts_with_a_wrong_validation_pipeline(explorer):
    assert explorer.steps("train") == explorer.steps("valid") == D.explorer_training_steps("dana")
    rep = explorer.valid_report()
    assert not rep["deterministic"] and rep["problems"]
    assert "✗ the same every run" in explorer.valid_info.value and "RandomResizedCrop" in explorer.valid_info.value
    assert bytes(explorer.train_plot.value).startswith(b"\x89PNG") and "tensor [3, 32, 32]" in explorer.train_info.value
    assert "dana" in explorer.widget.children[0].value


def test_explorer_train_draws_differ_and_valid_runs_agree(explorer):
    explorer.set_steps("valid", _right_answer("dana"))
    train = [explorer.run("train", k)[0] for k in range(3)]
    assert not torch.equal(train[0], train[1])
    assert torch.equal(explorer.run("train", 1)[0], train[1])  # a redraw shows the same pictures
    rep = explorer.valid_report()
    assert rep["deterministic"] and rep["problems"] == [] and rep["shape"] == "tensor [3, 32, 32]"
    assert "✓ a correct validation pipeline" in explorer.valid_info.value
    before = explorer.run("train", 0)[0]
    explorer.resample.click()
    assert not torch.equal(explorer.run("train", 0)[0], before)


def test_explorer_survives_an_impossible_pipeline(explorer):
    explorer.set_steps("valid", ("Resize", "CenterCrop", "Normalize"))
    assert "fails" in explorer.valid_info.value and "keep ToTensor" in explorer.valid_info.value
    explorer.sliders["degrees"].value = 90.0
    assert "tensor [3, 32, 32]" in explorer.train_info.value


def test_recording_gives_a_gradable_answer(explorer, monkeypatch):
    from course_lib.checks import judge_observations

    monkeypatch.setenv("COURSE_STUDENT", "dana")
    spec = get_spec("valid_pipeline")
    explorer.set_steps("valid", _right_answer("dana"))
    explorer.record_button.click()
    assert explorer.answer == _right_answer("dana")
    assert f"valid_pipeline = {explorer.answer!r}" in explorer.recorded.value
    assert run_check(spec, explorer.answer).passed and run_check(spec, list(explorer.answer)).passed
    answer = {"kind": "answer", "value": explorer.answer}
    assert judge_observations(spec, [], answer, student="dana").passed
    explorer.valid_boxes["RandomHorizontalFlip"].value = True
    explorer.record_button.click()
    assert "RandomHorizontalFlip" in explorer.answer
    assert "leave it out" in run_check(spec, explorer.answer).message
    assert "tuple of step names" in run_check(spec, "Resize").message


def test_each_student_is_judged_against_their_own_training_pipeline():
    from course_lib.checks import judge_observations

    spec = get_spec("valid_pipeline")
    students = ["alice", "bob", "carol", "dana", "offline"]
    answers = {s: _right_answer(s) for s in students}
    assert spec.target("alice") == D.explorer_training_steps("alice")
    a, b = next((a, b) for a in students for b in students if answers[a] != answers[b])
    for me, other in ((a, b), (b, a)):
        assert judge_observations(spec, [], {"kind": "answer", "value": answers[me]}, student=me).passed
        verdict = judge_observations(spec, [], {"kind": "answer", "value": answers[other]}, student=me)
        assert not verdict.passed and "training pipeline" in verdict.message
    # Seven right answers in all (one to three of the preparation steps), drawn evenly enough that classmates differ.
    drawn = {_right_answer(f"student{i}") for i in range(300)}
    assert len(drawn) == 7


# ------------------------------------------------------------------------------ grading the lesson

# ------------------------------------------------------------------------------ capstone

def _constant_loaders(path, size=64, batch_size=16):
    batch = (torch.zeros(batch_size, 3, size, size), torch.zeros(batch_size, dtype=torch.long))
    return [batch], [batch]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_capstone_reference_reaches_the_top_band(seed):
    result = run_check(get_spec("make_dataloaders"), D.make_dataloaders, hidden=True, seed=seed)
    assert result.passed and result.share == 1.0, result.message


def test_capstone_constant_loaders_and_each_known_mistake_land_lower():
    spec = get_spec("make_dataloaders")
    constant = run_check(spec, _constant_loaders, hidden=True)
    assert constant.share == 0.0 and "promises do not hold" in constant.message
    for mistake in spec.mistakes:
        result = run_check(spec, mistake.impl, hidden=True)
        assert not result.passed and 0 < result.share < 1, (mistake.name, result.message)
        assert result.mistake == mistake.name, (mistake.name, result.message)


def test_capstone_folder_hides_its_truth_in_the_secret(tmp_path):
    from course_lib import dataloader_checks as DC
    from course_lib.checks import hidden_cases

    case = hidden_cases(get_spec("make_dataloaders"), 5, folder=tmp_path, profile="ci")[0]
    root = case.args[0]
    truth = case.secret
    assert set(case.kwargs) == {"size", "batch_size"} and truth["classes"] == sorted(truth["classes"])
    assert truth["classes"] != sorted(truth["classes"], key=int)  # string order is not number order
    assert len(set(truth["valid_counts"])) == len(truth["classes"])  # a wrong vocabulary changes the counts
    for part in ("train", "valid"):
        counts = [len(list((root / part / c).glob("*.jpg"))) for c in truth["classes"]]
        assert counts == truth[f"{part}_counts"]
    sizes = {__import__("PIL.Image").Image.open(f).size for f in root.glob("*/*/*.jpg")}
    assert len(sizes) > 3 and any(w != h for w, h in sizes)
    assert DC.CAPSTONE_SIZES.keys() == {"ci", "cpu", "gpu"}


# ------------------------------------------------------------------------------ grading the lesson

@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    # The grader's class, shared with test_grade_ops.py (graded once); each student's widget answer is their own.
    return lesson_class(tmp_path_factory, LESSON, "collate", LIST_COLLATE)


def test_grading_the_lesson(graded):
    """grading.check_lesson_class's promises, with the written answer left to a person: "to grade", no points yet."""
    g = graded
    exercises = {"ImageListDataset": 2, "collate": 2, "get_x": 1, "get_y": 1, "splitter": 1, "denormalize": 2,
                 "valid_pipeline": 1, "make_dataloaders": 5}
    written = {"written_split": 1}
    auto, full = sum(exercises.values()), sum(exercises.values()) + sum(written.values())
    assert g.returncode == 0, g.stderr[-3000:]
    assert {k: float(r["max_score"]) for k, r in g.by["alice"].items()} == {**exercises, **written}
    assert all(g.by["alice"][k]["status"] == "passed" for k in exercises) and g.total("alice") == auto
    assert g.totals["alice"]["status"] == "ok", g.totals["alice"]
    assert all(g.by[s]["written_split"]["status"] == "to grade" for s in ("alice", "carol"))
    assert g.total("bob") == 0 and {r["status"] for r in g.by["bob"].values()} <= {"failed", "error"}
    page = g.page("bob")
    assert f"0 / {full:g} points" in page and "not implemented yet" in page
    wrong = g.by["carol"]["collate"]
    assert wrong["status"] == "failed" and float(wrong["score"]) == 0
    assert g.by["carol"]["make_dataloaders"]["status"] == "failed"  # left unanswered (tests/grading.py)
    assert g.total("carol") == auto - exercises["collate"] - exercises["make_dataloaders"]
    assert "you returned lists of tensors" in g.page("carol")
