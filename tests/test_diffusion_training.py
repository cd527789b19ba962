"""Training the latent diffusion model: it learns, it resumes mid-epoch to identical weights, it loads."""

import os
import signal

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import cpu_exact

from morphgen.errors import ConfigError
from morphgen.models.engine.preemption import TrainingInterrupted, stop_on_signals
from morphgen.models.families.ldm.training import load_diffusion, train_diffusion

pytestmark = pytest.mark.usefixtures("one_thread")

CFG = {
    "channels": [8, 16],
    "attention_levels": [False, True],
    "num_res_blocks": 1,
    "num_head_channels": [0, 8],
    "norm_num_groups": 4,
    "epochs": 3,
    "batch_size": 4,
    "lr": 2e-3,
}


def _data(n, seed):
    rng = np.random.default_rng(seed)
    covariates = rng.uniform(0, 1, (n, 2)).astype(np.float32)
    latents = 3.0 * (2 * covariates[:, :1, None, None, None] - 1) + 0.3 * rng.normal(size=(n, 2, 4, 4, 4))
    return latents.astype(np.float32), covariates


def test_training_writes_its_files_and_the_loss_falls(tmp_path):
    x, c = _data(12, 0)
    vx, vc = _data(4, 1)
    path = train_diffusion(
        x, c, vx, vc, {**CFG, "epochs": 6}, tmp_path, seed=0, extra={"note": "t"}, progress=False
    )
    loss = pd.read_csv(tmp_path / "loss.tsv", sep="\t")
    assert list(loss["epoch"]) == [1, 2, 3, 4, 5, 6] and list(loss["step"]) == [3, 6, 9, 12, 15, 18]
    assert loss["train_mse"].iloc[-1] < loss["train_mse"].iloc[0] and np.isfinite(loss["val_mse"]).all()
    heldout = pd.read_csv(tmp_path / "heldout.tsv", sep="\t")
    assert heldout["no_estimate_mse"].iloc[0] == pytest.approx(1.0, abs=0.2)  # unit-variance noise
    assert 0 < heldout["ratio"].iloc[0] < 1 and heldout["val_latents"].iloc[0] == 4
    unet, saved = load_diffusion(path)
    assert saved["latent_shape"] == [2, 4, 4, 4] and saved["info"]["note"] == "t"
    assert saved["scale_factor"] == pytest.approx(1 / float(np.std(x, ddof=1)), rel=1e-5)
    assert not unet.training


@cpu_exact
def test_a_stop_mid_epoch_resumes_to_the_weights_of_an_uninterrupted_run(tmp_path, monkeypatch):
    import morphgen.models.engine.loop as module  # the shared epoch loop asks for the stop signal

    x, c = _data(10, 2)  # 3 steps per epoch, the last one short
    vx, vc = _data(3, 3)
    straight = train_diffusion(x, c, vx, vc, CFG, tmp_path / "straight", seed=1, progress=False)

    calls, real = [], module.stop_requested

    def stop_in_fifth_step():
        calls.append(1)
        if len(calls) == 5:  # epoch 2, its second step
            os.kill(os.getpid(), signal.SIGTERM)
        return real()

    monkeypatch.setattr(module, "stop_requested", stop_in_fifth_step)
    with stop_on_signals(), pytest.raises(TrainingInterrupted, match="SIGTERM in epoch 2 after step 5"):
        train_diffusion(x, c, vx, vc, CFG, tmp_path / "resumed", seed=1, progress=False)
    assert not (tmp_path / "resumed/model.pt").exists()
    monkeypatch.setattr(module, "stop_requested", real)
    torch.manual_seed(77)  # the resumed run must not depend on the global state
    resumed = train_diffusion(x, c, vx, vc, CFG, tmp_path / "resumed", seed=1, progress=False)
    a, b = (torch.load(p, weights_only=True)["state_dict"] for p in (straight, resumed))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert (tmp_path / "straight/loss.tsv").read_text() == (tmp_path / "resumed/loss.tsv").read_text()

    # a checkpoint of other data is set aside, not silently resumed
    (tmp_path / "other/checkpoints").mkdir(parents=True)
    os.link(tmp_path / "resumed/checkpoints/last.pt", tmp_path / "other/checkpoints/last.pt")
    with pytest.warns(UserWarning, match="of another diffusion run .*set aside"):
        train_diffusion(x[:-1], c[:-1], vx, vc, CFG, tmp_path / "other", seed=1, progress=False)
    assert (tmp_path / "other/checkpoints/last.stale.pt").exists()


def test_mismatched_inputs_are_refused(tmp_path):
    x, c = _data(6, 4)
    with pytest.raises(ConfigError, match="same n"):
        train_diffusion(x, c[:-1], x, c, CFG, tmp_path, seed=0, progress=False)
    with pytest.raises(ConfigError, match="model.diffusion.lr"):
        train_diffusion(
            x, c, x, c, {k: v for k, v in CFG.items() if k != "lr"}, tmp_path, seed=0, progress=False
        )


def test_model_pt_keeps_the_noise_process_and_a_changed_one_does_not_resume(tmp_path):
    x, c = _data(8, 5)
    cfg = {**CFG, "epochs": 1, "prediction": "v_prediction"}
    path = train_diffusion(x, c, x[:2], c[:2], cfg, tmp_path, seed=0, progress=False)
    _, saved = load_diffusion(path)
    assert saved["process"] == {"schedule": "scaled_linear_beta", "prediction": "v_prediction"}
    epsilon = {**cfg, "prediction": "epsilon"}
    with pytest.warns(UserWarning, match="of another diffusion run"):
        train_diffusion(x, c, x[:2], c[:2], epsilon, tmp_path, seed=0, progress=False)


def test_withheld_covariates_are_zeroed_flagged_and_drawn_by_seed(tmp_path, monkeypatch):
    import morphgen.models.families.ldm.training as module

    seen, real = [], module.diffusion_loss

    def record(unet, scheduler, latents, covariates, generator=None, timesteps=None):
        if timesteps is None:  # a training step (validation fixes its timesteps)
            seen.append(covariates.clone())
        return real(unet, scheduler, latents, covariates, generator, timesteps)

    monkeypatch.setattr(module, "diffusion_loss", record)
    x, c = _data(40, 6)
    cfg = {**CFG, "epochs": 5, "condition_dropout": 0.3}
    path = train_diffusion(x, c, x[:4], c[:4], cfg, tmp_path / "a", seed=0, progress=False)
    rows = torch.cat(seen)
    withheld = rows[:, -1] == 0
    assert rows.shape == (200, 3) and set(rows[:, -1].tolist()) == {0.0, 1.0}
    assert torch.all(rows[withheld, :2] == 0) and 0.2 < float(withheld.float().mean()) < 0.4
    unet, saved = load_diffusion(path)
    assert saved["condition_dropout"] == 0.3
    assert saved["network"]["in_channels"] == 2 + 3 and saved["network"]["cross_attention_dim"] == 3
    first = rows
    seen.clear()
    train_diffusion(x, c, x[:4], c[:4], cfg, tmp_path / "b", seed=0, progress=False)
    assert torch.equal(torch.cat(seen)[:, -1], first[:, -1])  # the same rows withheld for the same seed
    seen.clear()
    plain = train_diffusion(x, c, x[:4], c[:4], CFG, tmp_path / "c", seed=0, progress=False)
    assert torch.cat(seen).shape[1] == 2 and load_diffusion(plain)[1]["condition_dropout"] == 0.0
