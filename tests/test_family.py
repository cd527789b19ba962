"""The model-family interface: registry, and the VQ-VAE + transformer family driven through its files."""

from __future__ import annotations

import csv
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import yaml
from conftest import TINY_AUTOENCODER, phantom

from morphgen.errors import ConfigError
from morphgen.models import ModelFamily, available_families, build_family, get_family, register_family
from morphgen.models.autoencoders.checkpoint import load_autoencoder
from morphgen.models.autoencoders.discriminator import discriminator_score
from morphgen.models.autoencoders.family import msssim_kernel_size
from morphgen.models.engine.data import VolumeDataset
from morphgen.models.families.vqvae_transformer.family import VQVAETransformerFamily
from morphgen.models.registry import _FAMILIES
from morphgen.nifti import save_volume
from morphgen.space import Grid

torch.set_num_threads(1)

# MS-SSIM (5 scales) needs sides >= 32; three levels give a 4 x 5 x 4 token grid
GRID = Grid(4.0, (32, 40, 32))
CONFIG_YAML = Path(__file__).resolve().parents[1] / "config.yaml"

MODEL_CFG = {
    "family": "vqvae_transformer",
    "seed": 0,
    "autoencoder": {
        "channels": [4, 4, 4],
        **TINY_AUTOENCODER,
    },
    "latents": {"augmented_copies": 1},
    "prior": {
        "layers": 1,
        "d_model": 16,
        "heads": 2,
        "dropout": 0.0,
        "epochs": 1,
        "batch_size": 4,
        "lr": 1e-3,
    },
    "sampling": {"n_keep": 3, "oversample": 2, "temperature": 1.0, "top_k": None, "batch_size": 3},
}


def read_tsv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


# ---- registry ----------------------------------------------------------------------------------------------


def test_registry_returns_and_lists_the_vqvae_family():
    assert "vqvae_transformer" in available_families()
    assert get_family("vqvae_transformer") is VQVAETransformerFamily
    assert VQVAETransformerFamily.name == "vqvae_transformer"
    with pytest.raises(ConfigError, match="vqvae_transformer"):  # the error lists what exists
        get_family("diffusion")
    model_cfg = yaml.safe_load(CONFIG_YAML.read_text())["model"]
    family = build_family(model_cfg)
    assert isinstance(family, VQVAETransformerFamily) and family.ae_cfg["codebook_size"] == 256


def test_a_new_family_registers_and_must_implement_the_interface():
    try:

        @register_family("test_incomplete")
        class Incomplete(ModelFamily):
            def fit_autoencoder(self, train_images, val_images, out_dir, progress=True):
                pass

        assert get_family("test_incomplete") is Incomplete and "test_incomplete" in available_families()
        with pytest.raises(TypeError):  # encode, evaluate_reconstruction, fit_prior, generate are missing
            Incomplete({})
        with pytest.raises(ValueError, match="already registered"):

            @register_family("test_incomplete")
            class Other(Incomplete):
                pass

        with pytest.raises(TypeError):
            register_family("test_not_a_family")(dict)
    finally:
        _FAMILIES.pop("test_incomplete", None)
    assert "test_incomplete" not in available_families()


def test_msssim_kernel_fits_the_grid():
    from monai.metrics import MultiScaleSSIMMetric

    assert msssim_kernel_size((160, 224, 160)) == 7
    assert msssim_kernel_size((48, 64, 48)) == 3
    x = torch.rand(1, 1, 48, 64, 48)
    MultiScaleSSIMMetric(spatial_dims=3, kernel_size=3)(x, x)  # accepted by MONAI
    with pytest.raises(ValueError):
        MultiScaleSSIMMetric(spatial_dims=3, kernel_size=5)(x, x)
    with pytest.raises(ConfigError):
        msssim_kernel_size((16, 16, 16))


# ---- the family through its files --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict:
    """Train the autoencoder, encode and fit one prior: the files the rules would produce."""
    root = tmp_path_factory.mktemp("family")
    rng = np.random.default_rng(2)
    images = {
        f"sub-{i:02d}": save_volume(
            root / "img" / f"sub-{i:02d}.nii.gz", phantom(rng, GRID.shape), GRID.affine
        )
        for i in range(6)
    }
    subjects = list(images)
    family = build_family(MODEL_CFG)
    family.fit_autoencoder(
        [images[s] for s in subjects[:4]], [images[s] for s in subjects[4:]], root / "ae", False
    )
    family.encode(root / "ae/model.pt", images, root / "latents", augmented_copies=1, progress=False)
    latents = [root / "latents" / f"{s}.npy" for s in subjects]
    family.fit_prior(latents[:4], latents[4:], root / "prior", progress=False)
    return {"root": root, "family": family, "images": images, "subjects": subjects}


def test_fit_autoencoder_and_fit_prior_write_their_files(run):
    root = run["root"]
    for name in ("model.pt", "checkpoints/last.pt", "loss.tsv", "loss.png"):
        assert (root / "ae" / name).is_file(), name
    rows = read_tsv(root / "ae/loss.tsv")
    assert [int(r["epoch"]) for r in rows] == [1]
    assert {"step", "l1", "spectral", "quantisation", "generator_adversarial", "discriminator"} <= rows[
        0
    ].keys()
    assert int(rows[0]["step"]) == 2  # 4 subjects in batches of 3
    for name in ("model.pt", "checkpoints/last.pt", "loss.tsv", "heldout.tsv"):
        assert (root / "prior" / name).is_file(), name


def test_encode_through_the_family(run):
    tokens = np.load(run["root"] / "latents" / f"{run['subjects'][0]}.npy")
    assert tokens.shape == (2, 4, 5, 4) and tokens.dtype == np.int16
    assert sorted(p.name for p in (run["root"] / "latents").iterdir()) == [
        f"{s}.npy" for s in run["subjects"]
    ]


def test_evaluate_reconstruction_writes_metrics_and_images(run, tmp_path):
    root, images = run["root"], run["images"]
    test = {s: images[s] for s in run["subjects"][4:]}
    run["family"].evaluate_reconstruction(root / "ae/model.pt", test, tmp_path / "rec.tsv", tmp_path / "rec")
    rows = read_tsv(tmp_path / "rec.tsv")
    assert [r["subject"] for r in rows] == [*test, "mean"]
    vqvae, _, _ = load_autoencoder(root / "ae/model.pt")
    for row in rows[:-1]:
        x = VolumeDataset([test[row["subject"]]]).batch([0])
        with torch.no_grad():
            recon = vqvae(x)[0].clamp(0, 1)
        assert float(row["mae"]) == pytest.approx(float(torch.mean(torch.abs(recon - x))), rel=1e-4)
        mse = float(torch.mean((recon - x) ** 2))
        assert float(row["psnr"]) == pytest.approx(10 * np.log10(1 / mse), rel=1e-4)
        assert 0.0 <= float(row["msssim"]) <= 1.0
        img = nib.load(str(tmp_path / "rec" / f"{row['subject']}.nii.gz"))
        assert np.allclose(img.affine, GRID.affine) and img.get_data_dtype() == np.float32
        assert np.allclose(img.get_fdata(), recon[0, 0].numpy(), atol=1e-6)
    for key in ("mae", "psnr", "msssim"):
        assert float(rows[-1][key]) == pytest.approx(np.mean([float(r[key]) for r in rows[:-1]]), rel=1e-4)


def test_generate_keeps_the_top_scores_in_order(run, tmp_path):
    root = run["root"]
    affine = GRID.affine.copy()
    affine[:3, 3] += [1.0, -2.0, 3.0]  # a distinct affine, to see that it is the one written
    out = tmp_path / "gen"
    run["family"].generate(root / "ae/model.pt", root / "prior/model.pt", 7, 3, out, affine, progress=False)

    files = sorted(p.name for p in out.glob("*.nii.gz"))
    assert files == ["sample-0000.nii.gz", "sample-0001.nii.gz", "sample-0002.nii.gz"]
    rows = read_tsv(out / "scores.tsv")
    assert [int(r["index"]) for r in rows] == list(range(7))
    kept = [r for r in rows if r["kept"] == "True"]
    assert len(kept) == 3 and all(r["file"] == "" for r in rows if r["kept"] == "False")
    scores = np.array([float(r["score"]) for r in rows])
    assert {int(r["index"]) for r in kept} == set(np.argsort(-scores, kind="stable")[:3].tolist())
    by_file = {r["file"]: float(r["score"]) for r in kept}
    assert [by_file[f] for f in files] == sorted(by_file.values(), reverse=True)

    _, disc, _ = load_autoencoder(root / "ae/model.pt")
    for name in files:
        img = nib.load(str(out / name))
        assert np.allclose(img.affine, affine) and img.get_data_dtype() == np.float32
        data = img.get_fdata(dtype=np.float32)
        assert data.shape == GRID.shape and data.min() >= 0.0 and data.max() <= 1.0
        with torch.no_grad():  # the score in the table is the discriminator's verdict on the written volume
            rescored = float(discriminator_score(disc, torch.from_numpy(data)[None, None])[0])
        assert rescored == pytest.approx(by_file[name], abs=1e-5)

    # same seed, same samples: generation is reproducible
    run["family"].generate(root / "ae/model.pt", root / "prior/model.pt", 7, 3, tmp_path / "b", affine, False)
    assert (tmp_path / "b/scores.tsv").read_text() == (out / "scores.tsv").read_text()


def test_generation_stopped_between_batches_resumes_to_the_same_samples(run, tmp_path, monkeypatch):
    """SIGTERM after the first batch (3 of 7): the rerun draws only the other 4 and writes the same files."""
    import signal

    import morphgen.models.families.vqvae_transformer.family as family_module
    from morphgen.models.engine.preemption import TrainingInterrupted, request_stop, stop_on_signals

    root, family = run["root"], run["family"]
    args = (root / "ae/model.pt", root / "prior/model.pt", 7, 3)
    family.generate(*args, tmp_path / "whole", GRID.affine, False)

    scored, score = [], family_module.discriminator_score

    def score_then_stop(disc, images):
        scored.append(len(images))
        if len(scored) == 1:
            request_stop(signal.SIGTERM)
        return score(disc, images)

    monkeypatch.setattr(family_module, "discriminator_score", score_then_stop)
    out = tmp_path / "resumed"
    with stop_on_signals(), pytest.raises(TrainingInterrupted, match="SIGTERM after 3 of 7 samples"):
        family.generate(*args, out, GRID.affine, False)
    assert (out / "checkpoints/generate.pt").is_file()
    assert not (out / "scores.tsv").exists() and not list(out.glob("*.nii.gz"))  # nothing looks done

    family.generate(*args, out, GRID.affine, False)
    assert scored == [3, 3, 1]  # the first batch was not drawn again
    assert (out / "scores.tsv").read_text() == (tmp_path / "whole/scores.tsv").read_text()
    for name in ("sample-0000.nii.gz", "sample-0001.nii.gz", "sample-0002.nii.gz"):
        a, b = (nib.load(str(d / name)).get_fdata() for d in (out, tmp_path / "whole"))
        assert np.array_equal(a, b), name
    assert not (out / "checkpoints").exists()  # finished: a forced rerun starts afresh


def test_a_masked_prior_learns_and_samples_the_same_tokens(run, tmp_path):
    """model.prior.kind: masked (seed 002's prior) over the VQ-VAE's tokens: its own model file and held-out
    ELBO, generation through the same files, and each kind refusing the other's model file."""
    masked_cfg = {
        **MODEL_CFG["prior"],
        "kind": "masked",
        "steps": 6,
        "subcodes": 2,
        "constant_positions": "model",
    }
    family = build_family({**MODEL_CFG, "prior": masked_cfg})
    root = run["root"]
    latents = [root / "latents" / f"{s}.npy" for s in run["subjects"]]
    family.fit_prior(latents[:4], latents[4:], tmp_path / "prior", progress=False)
    saved = torch.load(tmp_path / "prior/model.pt", weights_only=True)
    assert saved["format"] == "morphgen-masked-prior-1" and saved["network"]["length"] == 80 // 2
    (heldout,) = read_tsv(tmp_path / "prior/heldout.tsv")
    assert float(heldout["ratio"]) > 0 and {"model_nll_per_token", "unigram_nll_per_token"} <= heldout.keys()
    family.generate(
        root / "ae/model.pt", tmp_path / "prior/model.pt", 4, 2, tmp_path / "s", GRID.affine, False
    )
    scores = read_tsv(tmp_path / "s/scores.tsv")
    assert len(scores) == 4 and sum(r["kept"] == "True" for r in scores) == 2
    assert np.allclose(nib.load(tmp_path / "s/sample-0000.nii.gz").affine, GRID.affine)
    with pytest.raises(ConfigError, match="not a morphgen prior model"):
        run["family"].generate(
            root / "ae/model.pt", tmp_path / "prior/model.pt", 2, 1, tmp_path / "x", GRID.affine, False
        )
    with pytest.raises(ConfigError, match="not a morphgen masked prior"):
        family.generate(
            root / "ae/model.pt", root / "prior/model.pt", 2, 1, tmp_path / "y", GRID.affine, False
        )
    with pytest.raises(ConfigError, match="model.prior.kind"):
        build_family({**MODEL_CFG, "prior": {**masked_cfg, "kind": "bidirectional"}}).prior_kind()


def test_positions_constant_in_every_training_sequence_are_put_back_not_learnt(run, tmp_path):
    """model.prior.constant_positions: drop (the default). Tokens whose second half is one value in every
    training copy: the prior learns the first half only, every sample holds that value there, and heldout.tsv
    counts the held-out tokens that differ from it. Both kinds of prior."""
    rng = np.random.default_rng(5)
    shape = (4, 5, 4)
    constant = rng.integers(0, 8, size=40)
    latents = []
    for i in range(6):
        tokens = np.empty((2, 80), dtype=np.int16)
        tokens[:, :40] = rng.integers(0, 8, size=(2, 40))
        tokens[:, 40:] = constant
        if i == 5:  # a held-out subject that differs at 4 of the 40 constant positions
            tokens[0, 40:44] = (constant[:4] + 1) % 8
        latents.append(tmp_path / f"sub-{i}.npy")
        np.save(latents[-1], tokens.reshape(2, *shape))
    for kind in ("autoregressive", "masked"):
        family = build_family(
            {**MODEL_CFG, "prior": {**MODEL_CFG["prior"], "kind": kind, "steps": 4, "subcodes": 2}}
        )
        family.fit_prior(latents[:4], latents[4:], tmp_path / kind, progress=False)
        (heldout,) = read_tsv(tmp_path / kind / "heldout.tsv")
        assert (int(heldout["positions"]), int(heldout["modelled_positions"])) == (80, 40)
        assert float(heldout["constant_mismatch"]) == pytest.approx(4 / 80)  # 2 held-out sequences x 40
        decoded = []
        real = family.decode_codes

        def recording(model, network, codes, real=real, decoded=decoded):
            decoded.append(codes.reshape(len(codes), -1).cpu().numpy())
            return real(model, network, codes)

        family.decode_codes = recording
        family.generate(
            run["root"] / "ae/model.pt",
            tmp_path / kind / "model.pt",
            4,
            2,
            tmp_path / f"s-{kind}",
            GRID.affine,
            False,
        )
        codes = np.concatenate(decoded)
        assert len(codes) >= 4 and (codes[:, 40:] == constant).all(), kind
        assert len(np.unique(codes[:, :40], axis=0)) > 1  # the learnt half is drawn, not copied
