"""The resume state every trainer keeps (engine.resume): a checkpoint of this run is resumed, one of another
run is set aside with a warning naming what differs, and a stop saves and ends the run."""

from __future__ import annotations

import signal

import pytest
import torch

from morphgen.models.engine.preemption import TrainingInterrupted
from morphgen.models.engine.resume import RunCheckpoint, random_state, set_random_state


def test_a_checkpoint_of_this_run_is_resumed(tmp_path):
    run = RunCheckpoint(tmp_path, "fmt-1", {"seed": 1, "lr": 0.1}, "prior")
    assert run.load() is None  # nothing saved yet
    run.save({"epoch": 3, "weights": torch.arange(4)})
    state = RunCheckpoint(tmp_path, "fmt-1", {"lr": 0.1, "seed": 1}, "prior").load()
    assert state["epoch"] == 3 and torch.equal(state["weights"], torch.arange(4))


def test_a_checkpoint_of_another_run_is_set_aside_naming_what_differs(tmp_path):
    RunCheckpoint(tmp_path, "fmt-1", {"seed": 1, "lr": 0.1, "data": "a"}, "prior").save({"epoch": 3})
    other = RunCheckpoint(tmp_path, "fmt-1", {"seed": 2, "lr": 0.1, "data": "b"}, "prior")
    with pytest.warns(
        UserWarning, match=r"of another prior run \(another data, seed\): set aside as last.stale"
    ):
        assert other.load() is None
    assert not other.path.exists() and other.stale_path.exists()
    # another format: also not resumed; a process that only reads leaves the file where it is
    RunCheckpoint(tmp_path, "fmt-0", {"seed": 2, "lr": 0.1, "data": "b"}, "prior").save({"epoch": 1})
    with pytest.warns(UserWarning, match="format 'fmt-0', expected 'fmt-1'"):
        assert other.load(set_aside=False) is None
    assert other.path.exists()


def test_a_stop_saves_the_state_and_ends_the_run(tmp_path):
    run = RunCheckpoint(tmp_path, "fmt-1", "abc", "diffusion")
    with pytest.raises(TrainingInterrupted, match="SIGTERM in epoch 2"):
        run.stop({"epoch": 1, "position": {"next": 4}}, 1, 7, signal.SIGTERM)
    assert run.load()["position"] == {"next": 4}


def test_random_state_round_trip():
    state = random_state(torch.device("cpu"))
    first = torch.rand(3)
    set_random_state(state, torch.device("cpu"))
    assert torch.equal(torch.rand(3), first)
