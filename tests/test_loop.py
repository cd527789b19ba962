"""The shared resumable epoch loop (engine.loop): a run stopped mid-epoch and resumed ends as one that ran
through, with the global random state (dropout) and every part's state carried by the checkpoint."""

from __future__ import annotations

import pytest
import torch

import morphgen.models.engine.loop as loop_module
from morphgen.models.engine.loop import EpochLoop
from morphgen.models.engine.preemption import TrainingInterrupted
from morphgen.models.engine.resume import RunCheckpoint
from morphgen.tsv import read_tsv

X = torch.linspace(-1, 1, 21).unsqueeze(1)
Y = 3 * X - 1


def _loop(out_dir, epochs=4):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(1, 8), torch.nn.Dropout(0.3), torch.nn.Linear(8, 1))
    optimiser = torch.optim.Adam(net.parameters(), lr=0.05)
    scheduler = torch.optim.lr_scheduler.StepLR(optimiser, step_size=3, gamma=0.5)

    def update(index, step):
        loss = torch.nn.functional.mse_loss(net(X[index]), Y[index])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        scheduler.step()
        return loss

    def validate():
        net.eval()
        with torch.no_grad():
            return float(torch.nn.functional.mse_loss(net(X), Y))

    loop = EpochLoop(
        run=RunCheckpoint(out_dir, "test-loop-1", {"seed": 0}, "test"),
        parts={"net": net, "optimiser": optimiser, "scheduler": scheduler},
        examples=len(X),
        batch_size=5,  # 5 steps an epoch, the last of one example
        epochs=epochs,
        order=lambda epoch: torch.randperm(len(X), generator=torch.Generator().manual_seed(epoch)),
        update=update,
        validate=validate,
        loss_table=out_dir / "loss.tsv",
        columns=["epoch", "step", "train_mse", "val_mse"],
        keep_random_state=True,
    )
    return loop, net


def test_a_run_stopped_mid_epoch_resumes_to_the_uninterrupted_weights_and_table(tmp_path, monkeypatch):
    straight, net = _loop(tmp_path / "straight")
    history = straight.fit(progress=False)
    assert [row[:2] for row in history] == [[1, 5], [2, 10], [3, 15], [4, 20]]
    assert history[-1][3] < history[0][3]  # it learns

    calls = {"n": 0}

    def stop_in_the_eighth_step():
        calls["n"] += 1
        return 15 if calls["n"] == 8 else None

    monkeypatch.setattr(loop_module, "stop_requested", stop_in_the_eighth_step)
    stopped, _ = _loop(tmp_path / "resumed")
    with pytest.raises(TrainingInterrupted):
        stopped.fit(progress=False)
    saved = torch.load(tmp_path / "resumed/checkpoints/last.pt", weights_only=True)
    assert (saved["epoch"], saved["step"], saved["position"]["next"]) == (1, 8, 15)
    monkeypatch.undo()

    torch.manual_seed(123)  # the resumed run must take its random state from the checkpoint
    resumed, resumed_net = _loop(tmp_path / "resumed")
    assert resumed.fit(progress=False) == history
    for a, b in zip(net.state_dict().values(), resumed_net.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    table = read_tsv(tmp_path / "resumed/loss.tsv")
    assert list(table.columns) == ["epoch", "step", "train_mse", "val_mse"]
    assert table["val_mse"].tolist() == pytest.approx([row[3] for row in history], rel=1e-12)


def test_a_finished_run_is_not_trained_again(tmp_path):
    first, net = _loop(tmp_path)
    first.fit(progress=False)
    again, net_again = _loop(tmp_path)
    assert again.fit(progress=False) == first.history and again.step == 20
    for a, b in zip(net.state_dict().values(), net_again.state_dict().values(), strict=True):
        assert torch.equal(a, b)
