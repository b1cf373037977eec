"""course_lib.fill_level: the data, the model, the loop, the checkpoints, prediction."""
import numpy as np
import pytest
import torch

from course_lib import fill_level as fl


@pytest.mark.parametrize("level,size,rows",
                         [(0.47, 900, 423), (0.76, 900, 684), (0.0, 10, 0), (0.999, 10, 9), (0.4999, 900, 449)])
def test_image_matches_the_seed_recipe(level, size, rows):
    img = fl.make_fill_image(level, size)
    assert img.shape == (size, size, 3) and img.dtype == np.uint8
    white = (img == 255).all(axis=(1, 2))
    assert white.sum() == rows and white[:rows].all() and (img[rows:] == 0).all()


def test_batched_maker_equals_single_images():
    levels = torch.rand(20, generator=torch.Generator().manual_seed(0))
    levels[0], levels[1] = 0.5, 1 / 3  # exact row boundaries, where float rounding could differ
    for size in (7, 32, 48):
        want = torch.stack([fl.to_input(fl.make_fill_image(float(lv), size)) for lv in levels])
        assert torch.allclose(fl.make_fill_batch(levels, size), want, atol=1e-6)


def test_dataset_and_loader():
    ds = fl.FillLevelDataset(10, 16, seed=1)
    x, y = ds[3]
    assert x.shape == (3, 16, 16) and y.dtype == torch.float32
    assert np.array_equal(ds.levels, fl.FillLevelDataset(10, 16, seed=1).levels)
    xb, yb = next(iter(fl.fill_dataloader(10, 16, batch_size=4, shuffle=False)))
    assert xb.shape == (4, 3, 16, 16) and yb.shape == (4,)


def test_load_batch_shapes():
    x, y = fl.load_batch(5, 12)
    assert x.shape == (5, 3, 12, 12) and y.shape == (5,) and x.dtype == y.dtype == torch.float32


def test_model_has_one_output_and_offline_message(capsys):
    m = fl.build_fill_model(pretrained=True)
    assert "no ImageNet weights in the torch cache" in capsys.readouterr().out
    assert m(torch.zeros(2, 3, 48, 48)).shape == (2, 1)


def test_cached_imagenet_weights_are_used(tmp_path, monkeypatch, capsys):
    import torchvision

    from course_lib import models

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    weights = torchvision.models.ResNet18_Weights.DEFAULT
    (tmp_path / "checkpoints").mkdir()
    fake = torchvision.models.resnet18(weights=None)
    torch.save(fake.state_dict(), tmp_path / "checkpoints" / weights.url.rsplit("/", 1)[-1])
    m = models.resnet("resnet18", pretrained=True)
    assert "using cached ImageNet weights" in capsys.readouterr().out
    assert torch.equal(m.conv1.weight, fake.conv1.weight)


def test_training_learns_and_checkpoints_resume(tmp_path):
    torch.manual_seed(0)
    model = fl.build_fill_model()
    ckpt = tmp_path / "ck.pth"
    hist = fl.train_fill_model(model, steps=40, batch_size=16, size=32, val_n=64, eval_every=20,
                              checkpoint=ckpt, checkpoint_every=20, progress=False)
    assert ckpt.exists() and not ckpt.with_name("ck.pth.tmp").exists()
    assert len(hist.train_loss) == 40 and hist.val_steps == [20, 40]
    # Predicting the mean level (0.5) scores an MAE of 0.25: the model must beat that.
    assert hist.val_mae[-1] < 0.25
    assert np.mean(hist.train_loss[-5:]) < np.mean(hist.train_loss[:5])
    assert torch.load(ckpt, weights_only=False)["step"] == 40
    # Resuming a finished run does no more steps and keeps the history.
    again = fl.train_fill_model(model, steps=40, batch_size=16, size=32, checkpoint=ckpt, resume=True, progress=False)
    assert again.steps == hist.steps
    # Resuming towards a later step continues the same history.
    more = fl.train_fill_model(model, steps=43, batch_size=16, size=32, val_n=64, eval_every=20, checkpoint=ckpt,
                              resume=True, progress=False)
    assert more.steps == list(range(1, 44)) and more.val_steps == [20, 40, 43]


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    ckpt = tmp_path / "ck.pth"
    fl.save_atomic({"step": 1}, ckpt)

    def broken_save(obj, f, *a, **k):
        open(f, "wb").write(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError):
        fl.save_atomic({"step": 2}, ckpt)
    monkeypatch.undo()
    assert torch.load(ckpt, weights_only=False)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["ck.pth"]  # the half-written temporary file is gone


def test_predict_fill_restores_mode_and_uses_no_grad():
    model = fl.build_fill_model().train()
    p = fl.predict_fill(model, fl.make_fill_image(0.3, 900), size=32)
    assert isinstance(p, float) and 0 <= p <= 1
    assert model.training
    assert all(q.grad is None for q in model.parameters())
