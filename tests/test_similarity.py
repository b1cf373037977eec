"""The similarity report (autograder/similarity.py): copies are found, independent answers and the stub are not.

Submissions are the released notebook with one answer cell edited; nothing is graded and no kernel runs.
"""
from __future__ import annotations

import csv
import html
import inspect
from pathlib import Path

import nbformat

from autograder import notebooks, similarity
from autograder.read import Submission

DATA, BBOX, FILL = "01_dataloader", "05_bbox", "06_fill_level"

# Two correct box_iou answers written apart: one clamps the overlap, one compares corners with numpy.
IOU_CLAMPED = '''\
def box_iou(a, b) -> float:
    # the overlap's sides, 0 when the boxes do not meet
    overlap_h = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    overlap_w = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    shared = overlap_h * overlap_w
    area_a = (a[2] - a[0]) * (a[3] - a[1])
    area_b = (b[2] - b[0]) * (b[3] - b[1])
    union = area_a + area_b - shared
    if union <= 0:
        return 0.0
    return float(shared / union)
'''

IOU_CORNERS = '''\
def box_iou(a, b) -> float:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    top_left = np.maximum(a[:2], b[:2])
    bottom_right = np.minimum(a[2:], b[2:])
    sides = np.clip(bottom_right - top_left, 0, None)
    inter = sides.prod()

    def area(box):
        return np.prod(box[2:] - box[:2])

    total = area(a) + area(b) - inter
    return float(inter / total) if total > 0 else 0.0
'''

# IOU_CLAMPED disguised: other names, other comments and layout, a docstring, a helper put first, a print.
IOU_CLAMPED_RENAMED = '''\
def _unused_helper(value):
    return value


def box_iou(first, second) -> float:
    """Intersection over union."""
    height = max(0.0,  min(first[2], second[2])-max(first[0], second[0]))   # vertical overlap
    width = max(0.0, min(first[3], second[3]) - max(first[1], second[1]))
    common = height*width
    print("overlap", common)

    size_first = (first[2] - first[0]) * (first[3] - first[1])
    size_second = (second[2] - second[0]) * (second[3] - second[1])
    together = size_first + size_second - common
    if together <= 0:
        return 0.0
    return float(common / together)
'''

# Two correct make_fill_image answers written apart: a mask broadcast to RGB, and a loop over rows.
FILL_MASK = '''\
def make_fill_image(fill_level: float, size: int = 900) -> np.ndarray:
    rows = np.arange(size)[:, None, None]
    white = rows < int(fill_level * size)
    picture = np.broadcast_to(white * 255, (size, size, 3))
    return np.ascontiguousarray(picture).astype(np.uint8)
'''

FILL_LOOP = '''\
def make_fill_image(fill_level: float, size: int = 900) -> np.ndarray:
    out = np.full((size, size, 3), 0, np.uint8)
    for r in range(int(fill_level * size)):
        out[r, :, :] = 255
    return out
'''


def submit(root: Path, student: str, lesson: str, answers: dict[str, str]) -> Submission:
    """``student``'s submission of ``lesson``: the released notebook with the cells of ``answers`` replaced."""
    nb = nbformat.read(notebooks.release_path(lesson), as_version=4)
    ids = {notebooks.grade_id(c) for c in nb.cells}
    assert set(answers) <= ids, f"no cell {set(answers) - ids} in {lesson}"
    for cell in nb.cells:
        if notebooks.grade_id(cell) in answers:
            cell.source = answers[notebooks.grade_id(cell)]
    path = root / student / lesson / f"{lesson}.ipynb"
    path.parent.mkdir(parents=True)
    nbformat.write(nb, path)
    return Submission(student, lesson, path)


def rows(out: Path) -> list[dict]:
    with open(out / similarity.CSV_NAME, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def pairs_of(found: list[dict], exercise: str) -> set[frozenset[str]]:
    return {frozenset((r["student_a"], r["student_b"])) for r in found if r["exercise"] == exercise}


def test_a_renamed_copy_is_found_and_an_independent_answer_is_not(tmp_path):
    subs = [submit(tmp_path, "ada", BBOX, {"box_iou": IOU_CLAMPED}),
            submit(tmp_path, "ben", BBOX, {"box_iou": IOU_CLAMPED_RENAMED}),
            submit(tmp_path, "cy", BBOX, {"box_iou": IOU_CORNERS})]
    page = similarity.analyse(subs, tmp_path / "out")
    found = rows(tmp_path / "out")
    assert pairs_of(found, "box_iou") == {frozenset(("ada", "ben"))}
    assert [r["similarity"] for r in found] == ["1.000"]
    assert "ada and ben" in page and "never changes a score" in page


def test_two_independent_correct_answers_are_not_paired(tmp_path):
    subs = [submit(tmp_path, "ada", BBOX, {"box_iou": IOU_CLAMPED}),
            submit(tmp_path, "cy", BBOX, {"box_iou": IOU_CORNERS}),
            submit(tmp_path, "dee", FILL, {"make_fill_image": FILL_MASK}),
            submit(tmp_path, "eli", FILL, {"make_fill_image": FILL_LOOP})]
    page = similarity.analyse(subs, tmp_path / "out")
    assert rows(tmp_path / "out") == []
    assert "No similar answers were found" in page
    # Not only under the threshold: far from it, so the default leaves room for answers that share an idea.
    for a, b, ex, lesson in [(IOU_CLAMPED, IOU_CORNERS, "box_iou", BBOX), (FILL_MASK, FILL_LOOP, "make_fill_image",
                                                                        FILL)]:
        stub = similarity.Stub.of(stub_of(lesson, ex))
        assert similarity.similarity(similarity.fingerprint(a, stub), similarity.fingerprint(b, stub)) < 0.5


def stub_of(lesson: str, exercise: str) -> str:
    nb = nbformat.read(notebooks.release_path(lesson), as_version=4)
    return next(c.source for c in nb.cells if notebooks.grade_id(c) == exercise)


def test_the_stub_alone_matches_nothing(tmp_path):
    # Students who left every cell as released (ImageListDataset's stub, three methods, is long enough to be
    # compared were it not set aside), and one who only wrote `pass` under the signature.
    subs = [submit(tmp_path, name, lesson, {}) for name in ("ada", "ben", "cy") for lesson in (DATA, BBOX)]
    subs.append(submit(tmp_path, "dee", BBOX, {"box_iou": "def box_iou(a, b) -> float:\n    pass\n"}))
    page = similarity.analyse(subs, tmp_path / "out")
    assert rows(tmp_path / "out") == []
    assert "No similar answers were found" in page
    stub = stub_of(DATA, "ImageListDataset")
    assert similarity.fingerprint(stub, similarity.Stub.of(stub)) == frozenset()


def test_a_copy_of_the_course_reference_is_reported_against_course_lib(tmp_path):
    from course_lib import bbox

    reference = inspect.getsource(bbox.box_iou)
    copied = reference.replace("inter", "overlap").replace("union", "total")  # renamed, docstring kept
    subs = [submit(tmp_path, "ada", BBOX, {"box_iou": copied}),
            submit(tmp_path, "cy", BBOX, {"box_iou": IOU_CORNERS})]
    page = similarity.analyse(subs, tmp_path / "out")
    found = rows(tmp_path / "out")
    assert pairs_of(found, "box_iou") == {frozenset(("ada", similarity.COURSE))}
    assert float(found[0]["similarity"]) >= similarity.DEFAULT_THRESHOLD
    assert f"ada and {similarity.COURSE}" in page


def test_the_csv_is_sorted_and_formula_safe_and_the_page_escapes_code(tmp_path):
    evil = "=HYPERLINK(\"http://x\")"
    script = IOU_CLAMPED.replace("    return float(shared / union)",
                                 "    label = '<script>alert(1)</script>'\n    return float(shared / union)")
    subs = [submit(tmp_path, evil, BBOX, {"box_iou": script}),
            submit(tmp_path, "@ben", BBOX, {"box_iou": script.replace("shared", "both")}),
            # A second, weaker pair: the copy keeps half of the answer and writes the rest its own way.
            submit(tmp_path, "cy", FILL, {"make_fill_image": FILL_LOOP}),
            submit(tmp_path, "dee", FILL, {"make_fill_image": FILL_LOOP.replace(
                "    return out\n", "    out = out.copy()\n    out[:, :, 1] = out[:, :, 0]\n    return out\n")})]
    page = similarity.analyse(subs, tmp_path / "out")
    found = rows(tmp_path / "out")
    assert list(found[0]) == similarity.FIELDS
    scores = [float(r["similarity"]) for r in found]
    assert scores == sorted(scores, reverse=True) and len(found) == 2 and scores[1] < 1
    assert {found[0]["student_a"], found[0]["student_b"]} == {"'" + evil, "'@ben"}
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert html.escape(evil) in page and evil not in page


def test_what_cannot_be_read_is_a_note_and_nothing_raises(tmp_path):
    broken = tmp_path / "zed" / BBOX / f"{BBOX}.ipynb"
    broken.parent.mkdir(parents=True)
    broken.write_text("{not json")
    subs = [submit(tmp_path, "ada", BBOX, {"box_iou": IOU_CLAMPED}),
            submit(tmp_path, "ben", BBOX, {"box_iou": IOU_CLAMPED_RENAMED}),
            Submission("zed", BBOX, broken),
            Submission("yan", BBOX, None, "expected 05_bbox.ipynb in yan/05_bbox/, found no notebook."),
            submit(tmp_path, "xi", BBOX, {"box_iou": "def box_iou(a, b:\n    return ((((\n" * 40})]
    page = similarity.analyse(subs, tmp_path / "out")
    assert pairs_of(rows(tmp_path / "out"), "box_iou") == {frozenset(("ada", "ben"))}
    assert "zed/05_bbox: not compared, the notebook could not be read" in page
    assert "yan/05_bbox: not compared" in page
    # An output folder that cannot be made: still a page, with a note instead of the CSV.
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert "could not be written" in similarity.analyse(subs, blocker / "out")


def test_only_the_lessons_asked_for_are_compared(tmp_path):
    subs = [submit(tmp_path, "ada", BBOX, {"box_iou": IOU_CLAMPED}),
            submit(tmp_path, "ben", BBOX, {"box_iou": IOU_CLAMPED_RENAMED})]
    similarity.analyse(subs, tmp_path / "out", lessons=[FILL])
    assert rows(tmp_path / "out") == []
    similarity.analyse(subs, tmp_path / "out", lessons=[BBOX])
    assert len(rows(tmp_path / "out")) == 1


def test_what_many_answers_share_is_common_ground_and_said_so(tmp_path):
    from course_lib import fill_level

    reference = inspect.getsource(fill_level.make_fill_image)
    many = similarity.COMMON_MIN + 1  # one answer more than may share a phrase before it is common ground
    subs = [submit(tmp_path, f"s{i:02d}", FILL, {"make_fill_image": reference}) for i in range(many)]
    subs += [submit(tmp_path, "ada", FILL, {"make_fill_image": FILL_LOOP}),
             submit(tmp_path, "ben", FILL, {"make_fill_image": FILL_LOOP.replace("out", "image")})]
    page = similarity.analyse(subs, tmp_path / "out")
    # The pair that is not the crowd is still found; the crowd is counted, with how many match the reference.
    assert pairs_of(rows(tmp_path / "out"), "make_fill_image") == {frozenset(("ada", "ben"))}
    assert (f"{FILL} make_fill_image: {many} of {many + 2} answers were not compared, being mostly phrases that "
            f"more than {similarity.COMMON_MIN} answers share ({many} match {similarity.COURSE})") in page
