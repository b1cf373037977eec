import pytest
import torch

from course_lib import config


def test_profile_from_env(monkeypatch):
    monkeypatch.setenv("COURSE_PROFILE", "cpu")
    assert config.resolve_profile() == "cpu"
    monkeypatch.setenv("COURSE_PROFILE", "GPU")
    assert config.resolve_profile() == "gpu"


def test_profile_from_hardware(monkeypatch):
    monkeypatch.delenv("COURSE_PROFILE", raising=False)
    assert config.resolve_profile(cuda=True) == "gpu"
    assert config.resolve_profile(cuda=False) == "cpu"


def test_unknown_profile_names_the_choices(monkeypatch):
    monkeypatch.setenv("COURSE_PROFILE", "laptop")
    with pytest.raises(ValueError, match="ci, cpu, gpu"):
        config.resolve_profile()


def test_setup_prints_one_line_and_seeds(capsys):
    cfg = config.setup(profile="ci", seed=3, device="cpu")
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "profile=ci" in out and "device=cpu" in out and "seed=3" in out
    a = torch.rand(3)
    config.setup(profile="ci", seed=3, device="cpu", quiet=True)
    assert torch.equal(a, torch.rand(3))
    assert config.current() is not cfg and config.current().profile == "ci"


def test_data_source(monkeypatch):
    monkeypatch.delenv("COURSE_DATA", raising=False)
    assert config.data_source() == "synthetic"
    monkeypatch.setenv("COURSE_DATA", "real")
    assert config.data_source() == "real"
    monkeypatch.setenv("COURSE_DATA", "internet")
    with pytest.raises(ValueError):
        config.data_source()
