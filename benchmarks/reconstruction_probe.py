"""How much of each subject does an autoencoder reproduce? A quick probe of a model.pt or of a training
checkpoint (``checkpoints/last.pt``: a run still in progress), on a folder of images of the working grid.

Without segmenting anything, it compares each reconstruction with its image inside the mean brain:

- L1 of the reconstruction against L1 of the mean image (an autoencoder that has not learnt the subject does
  no better than the mean image);
- deviation r: the correlation of the reconstruction's difference from the mean reconstruction with the
  image's difference from the mean image, and deviation size, the ratio of their norms (1 and 1: every
  subject's own anatomy is reproduced);
- the slope of each reconstruction's mean intensity in the brain on its image's (1: a subject's global
  intensity, set by its scanner's contrast and its tissue volumes, comes back; 0: every reconstruction has
  the same).

    python benchmarks/reconstruction_probe.py \
        results/demo-pretrain/models/autoencoder_pretrained/checkpoints/last.pt --images results/preprocessed
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from morphgen.models.autoencoders.codecs import build_networks, codec_of
from morphgen.nifti import load_volume
from morphgen.weights import load_weights_only


def load_model(path: Path):
    """The autoencoder of a model.pt or a training checkpoint, in eval mode, and its codec."""
    blob = load_weights_only(path, "autoencoder file or checkpoint")
    network = blob["network"]
    autoencoder, _ = build_networks(network)
    autoencoder.load_state_dict(blob["autoencoder"])
    return autoencoder.eval(), codec_of(network), blob.get("epoch")


def probe(model, codec, images: np.ndarray) -> dict:
    with torch.no_grad():
        decoded = [codec.reconstruction(model, torch.from_numpy(x)[None, None]) for x in images]
    recon = np.stack([y.clamp(0, 1)[0, 0].numpy() for y in decoded])
    mean = images.mean(0)
    brain = mean > 0.05
    real_dev = (images - mean)[:, brain]
    recon_dev = (recon - recon.mean(0))[:, brain]
    r = [float(np.corrcoef(a, b)[0, 1]) for a, b in zip(real_dev, recon_dev, strict=True)]
    size = [float(np.linalg.norm(b) / np.linalg.norm(a)) for a, b in zip(real_dev, recon_dev, strict=True)]
    image_means, recon_means = images[:, brain].mean(1), recon[:, brain].mean(1)
    return {
        "n": len(images),
        "mean_intensity_slope": float(np.polyfit(image_means, recon_means, 1)[0]),
        "l1_reconstruction": float(np.abs(recon - images)[:, brain].mean()),
        "l1_mean_image": float(np.abs(images - mean)[:, brain].mean()),
        "deviation_r_median": float(np.median(r)),
        "deviation_size_median": float(np.median(size)),
    }


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("model", type=Path, help="model.pt, or a run's checkpoints/last.pt")
    parser.add_argument("--images", type=Path, required=True, help="a folder of NIfTI images")
    parser.add_argument("--limit", type=int, default=12, help="the first N images, sorted by path")
    args = parser.parse_args()
    torch.set_num_threads(2)
    paths = sorted(p for p in args.images.rglob("*.nii.gz") if "mask" not in p.name and "qc" not in p.name)
    paths = paths[: args.limit]
    if len(paths) < 2:
        raise SystemExit(f"{args.images}: fewer than 2 images")
    images = np.stack([load_volume(p).get_fdata(dtype=np.float32) for p in paths])
    model, codec, epoch = load_model(args.model)
    print(json.dumps({"model": str(args.model), "epoch": epoch, **probe(model, codec, images)}))


if __name__ == "__main__":
    main()
