"""Training on several processes (torchrun, DDP on gloo) and stopping on SIGTERM / SLURM's signal."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import TINY_AUTOENCODER, phantom

from morphgen.errors import ConfigError
from morphgen.models.autoencoders.training import AutoencoderTrainer
from morphgen.models.engine.distributed import World, scaled_lr, torchrun_command
from morphgen.models.engine.preemption import INTERRUPTED_EXIT, TrainingInterrupted, stop_on_signals
from morphgen.models.registry import run_training
from morphgen.nifti import save_volume
from morphgen.space import Grid

torch.set_num_threads(1)

GRID = Grid(4.0, (16, 24, 16))
LR, DISC_LR = 1e-3, 5e-4
AE_CFG = {
    **TINY_AUTOENCODER,
    "channels": [4, 4],
    "epochs": 3,
    "batch_size": 2,  # per process
    "lr": LR,
    "disc_lr": DISC_LR,
    "adversarial_start_epoch": 1,  # epochs 2-3 train the discriminator through DDP too
    "augment": {"enabled": True},
}
# 2 processes x 2 images against 1 process x 4: the autoencoder's loss terms agree to this relative
# difference (measured: at most 7e-5, from sums in another order), its weights to WEIGHT_RTOL (measured 3e-5;
# 0.30 at the unscaled learning rate). The discriminator's loss is looser (measured 0.5%): its batch-norm
# statistics come from each process's 2 images, as SyncBatchNorm needs CUDA.
CURVE_RTOL, DISC_RTOL, WEIGHT_RTOL = 1e-3, 2e-2, 1e-3


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> tuple[list[Path], list[Path]]:
    root = tmp_path_factory.mktemp("cohort")
    rng = np.random.default_rng(4)
    paths = [
        save_volume(root / f"sub-{i:02d}.nii.gz", phantom(rng, GRID.shape), GRID.affine) for i in range(11)
    ]
    return paths[:8], paths[8:]  # 8 training subjects: 2 global batches of 4 per epoch


def model_cfg(gpus: int, **ae) -> dict:
    return {
        "family": "vqvae_transformer",
        "seed": 3,
        "autoencoder": {**AE_CFG, **ae},
        "prior": {},
        "sampling": {},
        "distributed": {"gpus": gpus, "lr_scaling": "sqrt"},
    }


def fit_kwargs(cohort, out_dir: Path) -> dict:
    train, val = cohort
    return {
        "train_images": [str(p) for p in train],
        "val_images": [str(p) for p in val],
        "out_dir": str(out_dir),
    }


@pytest.fixture(scope="module")
def two_process_run(cohort, tmp_path_factory) -> Path:
    """An uninterrupted run of 2 torchrun processes with 2 images each."""
    out = tmp_path_factory.mktemp("ddp")
    run_training(model_cfg(2), "fit_autoencoder", fit_kwargs(cohort, out), out / "job.json")
    return out


def losses(run: Path) -> pd.DataFrame:
    return pd.read_csv(run / "loss.tsv", sep="\t")


def relative_difference(a: Path, b: Path) -> float:
    """||w_a - w_b|| / ||w_a|| over the autoencoder's floating-point weights of two runs."""
    wa, wb = weights(a), weights(b)
    keys = [k for k in wa if k.startswith("autoencoder.") and wa[k].is_floating_point()]
    return float(
        torch.stack([(wa[k] - wb[k]).norm() for k in keys]).norm()
        / torch.stack([wa[k].norm() for k in keys]).norm()
    )


def weights(run: Path) -> dict[str, torch.Tensor]:
    blob = torch.load(run / "model.pt", weights_only=True)
    return {f"{net}.{k}": v for net in ("autoencoder", "discriminator") for k, v in blob[net].items()}


def test_two_processes_follow_the_loss_curve_of_one_with_the_same_global_batch(
    cohort, two_process_run, tmp_path
):
    # one process with the global batch (4) and the learning rates sqrt(2) x, as the 2-process run scales them
    single = model_cfg(1, batch_size=4, lr=LR * np.sqrt(2), disc_lr=DISC_LR * np.sqrt(2))
    run_training(single, "fit_autoencoder", fit_kwargs(cohort, tmp_path), tmp_path / "job.json")

    ddp, one = losses(two_process_run), losses(tmp_path)
    assert list(ddp["step"]) == list(one["step"]) == [2, 4, 6]  # 2 global batches per epoch in both
    for column in ("total", "l1", "spectral", "quantisation", "val_total", "discriminator"):
        a, b = ddp[column].to_numpy(), one[column].to_numpy()
        rtol = DISC_RTOL if column == "discriminator" else CURVE_RTOL
        assert np.allclose(a, b, rtol=rtol, equal_nan=True), f"{column}: {a} vs {b}"
    assert (ddp["codes_used"] == one["codes_used"]).all()
    assert relative_difference(two_process_run, tmp_path) < WEIGHT_RTOL
    info = torch.load(two_process_run / "model.pt", weights_only=True)["info"]
    assert info["processes"] == 2 and info["global_batch"] == 4


def test_without_lr_scaling_the_curves_part(cohort, two_process_run, tmp_path):
    """The check above can fail: the same global batch at the unscaled learning rate trains differently."""
    single = model_cfg(1, batch_size=4)
    run_training(single, "fit_autoencoder", fit_kwargs(cohort, tmp_path), tmp_path / "job.json")
    a, b = losses(two_process_run)["total"].to_numpy(), losses(tmp_path)["total"].to_numpy()
    assert not np.allclose(a[1:], b[1:], rtol=CURVE_RTOL)
    assert relative_difference(two_process_run, tmp_path) > 10 * WEIGHT_RTOL


def test_sigterm_to_the_launcher_stops_every_process_and_the_rerun_resumes_to_the_same_weights(
    cohort, two_process_run, tmp_path
):
    """A real SIGTERM, as SLURM sends at its time limit, to a running 2-process training."""
    kwargs = fit_kwargs(cohort, tmp_path)
    script = (
        "import json, sys\n"
        "from morphgen.models.registry import run_training\n"
        "from morphgen.models.engine.preemption import INTERRUPTED_EXIT, TrainingInterrupted\n"
        "cfg, kwargs, job = json.loads(sys.argv[1])\n"
        "try:\n"
        "    run_training(cfg, 'fit_autoencoder', kwargs, job)\n"
        "except TrainingInterrupted:\n"
        "    sys.exit(INTERRUPTED_EXIT)\n"
    )
    import json

    args = json.dumps([model_cfg(2, epochs=3), kwargs, str(tmp_path / "job.json")])
    proc = subprocess.Popen(
        [sys.executable, "-c", script, args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    deadline = time.monotonic() + 300
    while not (tmp_path / "loss.tsv").exists():  # the first epoch is done: stop it in the second
        assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read().decode()
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out = proc.communicate(timeout=300)[0].decode()
    assert proc.returncode == INTERRUPTED_EXIT, out
    assert "SIGTERM" in out and not (tmp_path / "model.pt").exists()
    state = torch.load(tmp_path / "checkpoints/last.pt", weights_only=True)
    assert state["epoch"] < 3

    run_training(model_cfg(2, epochs=3), "fit_autoencoder", kwargs, tmp_path / "job.json")  # the rerun
    straight, resumed = weights(two_process_run), weights(tmp_path)
    assert straight.keys() == resumed.keys()
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key
    columns = ["epoch", "step", "total", "val_total", "discriminator"]
    pd.testing.assert_frame_equal(losses(two_process_run)[columns], losses(tmp_path)[columns])


def test_a_stop_signal_mid_epoch_checkpoints_there_and_the_resumed_run_ends_with_identical_weights(
    cohort, tmp_path, monkeypatch
):
    train, val = cohort
    cfg = {**AE_CFG, "batch_size": 2}  # 4 steps per epoch
    AutoencoderTrainer(train, val, cfg, tmp_path / "straight", seed=3).fit(progress=False)

    # SIGTERM arrives during the 6th step (the 2nd of epoch 2, which trains the GAN)
    real = AutoencoderTrainer._stop_now
    calls = []

    def signal_during_sixth_step(self):
        calls.append(1)
        if len(calls) == 6:
            os.kill(os.getpid(), signal.SIGTERM)
        return real(self)

    monkeypatch.setattr(AutoencoderTrainer, "_stop_now", signal_during_sixth_step)
    with stop_on_signals(), pytest.raises(TrainingInterrupted, match="SIGTERM in epoch 2 after step 6"):
        AutoencoderTrainer(train, val, cfg, tmp_path / "resumed", seed=3).fit(progress=False)
    state = torch.load(tmp_path / "resumed/checkpoints/last.pt", weights_only=True)
    assert state["epoch"] == 1 and state["step"] == 6 and state["position"]["batch"] == 2
    assert not (tmp_path / "resumed/model.pt").exists()
    monkeypatch.setattr(AutoencoderTrainer, "_stop_now", real)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers are restored after the block

    torch.manual_seed(999)  # the resumed run must not depend on the random state it starts from
    AutoencoderTrainer(train, val, cfg, tmp_path / "resumed", seed=3).fit(progress=False)
    straight, resumed = weights(tmp_path / "straight"), weights(tmp_path / "resumed")
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key
    a, b = losses(tmp_path / "straight"), losses(tmp_path / "resumed")
    pd.testing.assert_frame_equal(a.drop(columns="seconds"), b.drop(columns="seconds"))


def test_a_checkpoint_of_another_global_batch_is_not_resumed(cohort, tmp_path):
    train, val = cohort
    AutoencoderTrainer(train, val, {**AE_CFG, "epochs": 1}, tmp_path, seed=3).fit(progress=False)
    with pytest.warns(UserWarning, match="another global_batch\\): set aside"):
        AutoencoderTrainer(train, val, {**AE_CFG, "batch_size": 4}, tmp_path, seed=3).fit(progress=False)


def test_lr_scaling_and_shares():
    assert scaled_lr(1e-3, 4, "sqrt") == pytest.approx(2e-3)
    assert scaled_lr(1e-3, 4, "linear") == pytest.approx(4e-3)
    assert scaled_lr(1e-3, 4, "none") == 1e-3
    with pytest.raises(ConfigError, match="lr_scaling"):
        scaled_lr(1e-3, 2, "cubic")
    shares = [World(rank, 3).share(7) for rank in range(3)]
    assert [list(s) for s in shares] == [[0, 1, 2], [3, 4], [5, 6]]
    command = torchrun_command(2, Path("job.json"))
    assert "--nproc-per-node=2" in command and "--standalone" in command
