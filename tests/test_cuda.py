"""The models on a GPU against the same on CPU. Run where a GPU is: MORPHGEN_TEST_GPU=1 python -m pytest
tests/test_cuda.py (the suite hides GPUs by default, see conftest.py); skipped elsewhere."""

import copy

import numpy as np
import pandas as pd
import pytest
import torch
from test_diffusion_training import CFG, _data

from morphgen.models.engine.data import torch_generator
from morphgen.models.families.ldm.diffusion import (
    build_unet,
    diffusion_loss,
    make_scheduler,
    sample_latents,
    unet_config,
)
from morphgen.models.families.ldm.training import load_diffusion, train_diffusion

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA GPU, left visible by MORPHGEN_TEST_GPU=1"
)


@pytest.fixture
def full_float32():
    """No TF32 in convolutions and matrix products, so CPU and GPU differ by rounding order alone."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def test_the_diffusion_loss_draws_the_same_noise_on_cpu_and_gpu(full_float32):
    x, c = (torch.from_numpy(a) for a in _data(6, 0))
    torch.manual_seed(0)
    unet = build_unet(unet_config(CFG, x.shape[1], c.shape[1]))
    scheduler = make_scheduler("ddpm")
    loss = {}
    with torch.no_grad():
        for device in ("cpu", "cuda"):
            net, draws = copy.deepcopy(unet).to(device), torch_generator(0, "t")
            loss[device] = float(diffusion_loss(net, scheduler, x.to(device), c.to(device), draws))
        other_draw = float(diffusion_loss(unet, scheduler, x, c, torch_generator(1, "t")))
    assert loss["cuda"] == pytest.approx(loss["cpu"], rel=1e-4)
    assert abs(other_draw - loss["cpu"]) > 100 * abs(loss["cuda"] - loss["cpu"])


def test_diffusion_trained_on_the_gpu_follows_the_cpu_and_loads_on_cpu(tmp_path, full_float32):
    x, c = _data(12, 0)
    vx, vc = _data(4, 1)
    cfg = {**CFG, "epochs": 2}
    paths = {
        device: train_diffusion(x, c, vx, vc, cfg, tmp_path / device, seed=0, progress=False, device=device)
        for device in ("cpu", "cuda")
    }
    loss = {device: pd.read_csv(tmp_path / device / "loss.tsv", sep="\t") for device in paths}
    print({device: table["train_mse"].tolist() for device, table in loss.items()})
    np.testing.assert_allclose(loss["cuda"]["train_mse"], loss["cpu"]["train_mse"], rtol=1e-3)
    np.testing.assert_allclose(loss["cuda"]["val_mse"], loss["cpu"]["val_mse"], rtol=1e-3)
    unet, saved = load_diffusion(paths["cuda"], "cpu")
    assert {p.device.type for p in unet.parameters()} == {"cpu"}
    shape = tuple(saved["latent_shape"])
    generator = torch.Generator().manual_seed(0)
    ddim = make_scheduler("ddim", 5)
    z = sample_latents(unet, ddim, torch.from_numpy(vc), shape, generator, progress=False)
    assert z.shape == (len(vc), *shape) and torch.isfinite(z).all()
