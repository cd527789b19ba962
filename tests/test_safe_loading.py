"""Model files are read with ``torch.load(weights_only=True)``: a file holding a pickled object is refused
with an error that names it, and the object's code never runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_AUTOENCODER, phantom

from morphgen.errors import ConfigError
from morphgen.metrics.fid import MedicalNetResNet, TorchFeatures
from morphgen.models.autoencoders.checkpoint import AUTOENCODER_FORMAT, load_autoencoder
from morphgen.models.autoencoders.training import train_autoencoder
from morphgen.models.families.vqvae_transformer.prior import load_prior, train_prior
from morphgen.nifti import save_volume
from morphgen.space import Grid
from morphgen.weights import load_weights_only, sha256sum

torch.set_num_threads(1)


class Payload:
    """Unpickling this object runs code: it writes ``marker``. A safe loader must never get that far."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('code ran')",))


def poisoned(path: Path, marker: Path, **content) -> Path:
    """A checkpoint that looks like a morphgen file but carries a :class:`Payload`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"format": AUTOENCODER_FORMAT, "payload": Payload(marker), **content}, path)
    return path


@pytest.fixture
def bad_file(tmp_path) -> tuple[Path, Path]:
    marker = tmp_path / "marker.txt"
    return poisoned(tmp_path / "model.pt", marker), marker


def test_the_payload_is_live_when_loaded_unsafely(bad_file, tmp_path):
    """Control: torch.load without weights_only runs the payload, so its absence below means something."""
    path, _ = bad_file
    marker = tmp_path / "control.txt"
    poisoned(path, marker)
    torch.load(path, weights_only=False)
    assert marker.read_text() == "code ran"


def test_load_weights_only_refuses_a_pickled_object(bad_file):
    path, marker = bad_file
    with pytest.raises(ConfigError) as err:
        load_weights_only(path, "checkpoint")
    assert str(path) in str(err.value) and "checkpoint" in str(err.value)
    assert not marker.exists()


def test_autoencoder_loader_refuses_a_pickled_object(bad_file):
    path, marker = bad_file
    with pytest.raises(ConfigError, match=str(path)):
        load_autoencoder(path)
    assert not marker.exists()


def test_prior_loader_refuses_a_pickled_object(bad_file):
    path, marker = bad_file
    with pytest.raises(Exception) as err:  # noqa: B017 (the type is the subject of the next test)
        load_prior(path)
    assert str(path) in str(err.value)
    assert not marker.exists()


def test_prior_files_are_refused_with_a_config_error_naming_them(bad_file, tmp_path):
    with pytest.raises(ConfigError):
        load_prior(bad_file[0])
    out = tmp_path / "prior"
    checkpoint = poisoned(out / "checkpoints" / "last.pt", tmp_path / "marker.txt")
    with pytest.raises(ConfigError, match=str(checkpoint)):
        train_prior(*_tokens(), 8, PRIOR_CFG, out, seed=0, progress=False)


GRID = Grid(4.0, (16, 24, 16))
AE_CFG = {"channels": [4, 4], **TINY_AUTOENCODER}


def test_autoencoder_training_refuses_a_pickled_checkpoint_to_resume_from(tmp_path):
    rng = np.random.default_rng(0)
    images = [
        save_volume(tmp_path / f"sub-{i}.nii.gz", phantom(rng, GRID.shape), GRID.affine) for i in range(3)
    ]
    out = tmp_path / "autoencoder"
    marker = tmp_path / "marker.txt"
    checkpoint = poisoned(out / "checkpoints" / "last.pt", marker)
    with pytest.raises(ConfigError, match=str(checkpoint)):
        train_autoencoder(images[:2], images[2:], AE_CFG, out, seed=0, progress=False)
    assert not marker.exists()
    assert not (out / "model.pt").exists()
    pretrained = poisoned(tmp_path / "pretrained.pt", marker)
    with pytest.raises(ConfigError, match=str(pretrained)):
        train_autoencoder(
            images[:2],
            images[2:],
            AE_CFG,
            tmp_path / "finetuned",
            seed=0,
            progress=False,
            init_from=pretrained,
        )
    assert not marker.exists()


PRIOR_CFG = dict(layers=1, d_model=8, heads=2, dropout=0.0, epochs=1, batch_size=4, lr=1e-3)


def _tokens() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.integers(0, 8, (12, 6)), rng.integers(0, 8, (4, 6))


def test_prior_training_refuses_a_pickled_checkpoint_to_resume_from(tmp_path):
    marker = tmp_path / "marker.txt"
    out = tmp_path / "prior"
    poisoned(out / "checkpoints" / "last.pt", marker)
    with pytest.raises(Exception, match="[Ww]eights only load failed"):
        train_prior(*_tokens(), 8, PRIOR_CFG, out, seed=0, progress=False)
    assert not marker.exists()
    assert not (out / "model.pt").exists()


def test_fid_state_dict_with_a_matching_checksum_but_a_pickled_object_is_refused(tmp_path):
    """The sha256 only says the file is the one configured; weights_only still keeps its code from running."""
    marker = tmp_path / "marker.txt"
    state = {f"module.{k}": v for k, v in MedicalNetResNet("resnet10").state_dict().items()}
    path = tmp_path / "resnet_10_23dataset.pth"
    torch.save({"state_dict": state, "payload": Payload(marker)}, path)
    with pytest.raises(ConfigError) as err:
        TorchFeatures(MedicalNetResNet("resnet10"), path, sha256sum(path))
    assert str(path) in str(err.value)
    assert not marker.exists()
