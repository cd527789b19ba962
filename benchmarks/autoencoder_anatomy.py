"""Does an autoencoder carry each subject's anatomy? Train it on simulated demo subjects, measure volumes.

The demo cohort's subjects are simulated straight onto the working grid in MNI space (skipping the native
pose and preprocessing, which the autoencoder never sees), brain only and scaled to [0, 1] as preprocessing
does. The autoencoder of the configuration (``--configfile`` overlays, ``--set model.autoencoder.KEY=VALUE``)
is trained with morphgen's own trainer on the training subjects; then every test subject and its
reconstruction are segmented (the configured back-end) and compared as ``reconstruction_volumes.tsv`` does:
per tissue Pearson r, slope of reconstructed on real volume, bias; and how many latent positions differ
between subjects. It also prints the time of training.

    python benchmarks/autoencoder_anatomy.py --configfile config.yaml \
        --set model.autoencoder.architecture=normalised --set model.autoencoder.quantiser=fsq ...

With ``--model`` (a ``model.pt``, or a run's ``checkpoints/last.pt``) nothing is trained: that autoencoder
is read on the demo's subjects, for instance one pre-trained on a second cohort (``make demo-pretrain``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import torch
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from memory_plan import merged_config  # noqa: E402
from reconstruction_probe import load_model  # noqa: E402

from morphgen.cohort import demo  # noqa: E402
from morphgen.models.autoencoders.checkpoint import load_autoencoder  # noqa: E402
from morphgen.models.autoencoders.codecs import codec_of  # noqa: E402
from morphgen.models.autoencoders.family import AutoencoderFamily  # noqa: E402
from morphgen.models.registry import build_family  # noqa: E402
from morphgen.nifti import save_volume  # noqa: E402
from morphgen.preprocess.intensity import scale_to_unit  # noqa: E402
from morphgen.segmentation import make_segmenter  # noqa: E402
from morphgen.space import Grid  # noqa: E402
from morphgen.templates import resample_to_grid  # noqa: E402

TISSUES = ("gm", "wm", "csf", "ventricles", "brain")


def set_value(config: dict, assignment: str) -> None:
    key, value = assignment.split("=", 1)
    *parents, last = key.split(".")
    node = config
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = yaml.safe_load(value)


def simulate(config: dict, n: int, out: Path, warp_mm: float | None = None) -> list[Path]:
    """The first ``n`` demo subjects on the working grid, brain only, intensities as preprocessing gives;
    ``warp_mm`` (default: the config's ``demo.warp_mm``): RMS displacement of each subject's own shape."""
    cfg = config["demo"]
    grid = Grid(float(config["space"]["voxel_size"]), tuple(config["space"]["shape"]))
    reference = demo.reference_anatomy()
    age_range, patients = tuple(cfg["age_range"]), float(cfg["patient_fraction"])
    warp = float(cfg.get("warp_mm", demo.DEFAULT_WARP_MM) if warp_mm is None else warp_mm)
    sites = tuple(cfg.get("sites", demo.SITES))
    subjects = demo.draw_subjects(n, int(cfg["seed"]), age_range, patients, warp, sites)
    paths = []
    for subject in subjects:
        anatomy = demo.simulate_anatomy(reference, subject)
        maps = anatomy.maps
        image = demo.t1_image(anatomy, demo.SITES[subject.site])
        on_grid = resample_to_grid(image, reference.grid.affine, grid)
        brain = resample_to_grid(maps.gm + maps.wm + maps.csf, reference.grid.affine, grid)
        brain = brain >= 0.5
        data = scale_to_unit(on_grid, brain, float(config["preprocessing"]["intensity_percentile"]))
        paths.append(save_volume(out / f"{subject.participant_id}.nii.gz", data, grid.affine))
    return paths


def volumes(segmenter, paths: list[Path], references: dict | None = None) -> tuple[pd.DataFrame, dict]:
    """Volumes of each image, and each image's fitted tissue intensities (id -> intensities); with
    ``references`` (the same, of the real images), each image is unmixed with its own subject's up to an
    affine map, as the pipeline reads a reconstruction (else with its own fit)."""
    rows, fits = [], {}
    for path in paths:
        subject = path.name.split(".")[0]
        used = segmenter if references is None else segmenter.with_reference(references[subject], affine=True)
        seg = used.segment(nib.load(str(path)))
        rows.append({"id": subject, **{t: seg.volumes_ml[t] for t in TISSUES}})
        fits[subject] = seg.intensities
    return pd.DataFrame(rows).set_index("id"), fits


def agreement(real: pd.DataFrame, recon: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for tissue in TISSUES:
        x, y = real[tissue].to_numpy(), recon.loc[real.index, tissue].to_numpy()
        slope, intercept = np.polyfit(x, y, 1) if np.ptp(x) > 0 else (np.nan, np.nan)
        r = float(np.corrcoef(x, y)[0, 1]) if np.ptp(y) > 0 else float("nan")
        rows.append(
            {
                "tissue": tissue,
                "r": r,
                "slope": float(slope),
                "bias_percent": float(100 * np.mean((y - x) / x)),
                "real_sd": float(x.std(ddof=1)),
                "reconstructed_sd": float(y.std(ddof=1)),
            }
        )
    return pd.DataFrame(rows)


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--configfile", nargs="+", default=["config.yaml"])
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--subjects", type=int, default=36)
    parser.add_argument("--test", type=int, default=9)
    parser.add_argument("--warp-mm", type=float, default=None, help="default: demo.warp_mm of the config")
    parser.add_argument("--out", type=Path, default=Path("results/benchmarks/autoencoder_anatomy"))
    parser.add_argument(
        "--model", type=Path, default=None, help="read this trained autoencoder instead of training one"
    )
    parser.add_argument(
        "--evaluate",
        choices=["test", "train"],
        default="test",
        help="reconstruct the test subjects, or the training ones (can it reproduce what it learnt from?)",
    )
    args = parser.parse_args()
    config = merged_config(args.configfile)
    for assignment in args.set:
        set_value(config, assignment)
    torch.set_num_threads(2)
    images = args.out / "images"
    images.mkdir(parents=True, exist_ok=True)
    paths = simulate(config, args.subjects, images, args.warp_mm)
    train, test = paths[: -args.test], paths[-args.test :]
    family = build_family(config["model"])
    if not isinstance(family, AutoencoderFamily):
        raise SystemExit(f"model.family {config['model']['family']} has no autoencoder")
    start = time.perf_counter()
    if args.model is None:
        model_dir = args.out / "model"
        family.fit_autoencoder(train, [], model_dir, progress=True)
        model, _, network = load_autoencoder(model_dir / "model.pt")
        codec = codec_of(network, config["model"]["autoencoder"])
    else:
        model, codec, _ = load_model(args.model)
    seconds = time.perf_counter() - start
    model.eval()
    recon_dir = args.out / "reconstructions"
    recon_dir.mkdir(exist_ok=True)
    recon_paths, latents = [], []
    shown = test if args.evaluate == "test" else train
    for path in test + train:
        img = nib.load(str(path))
        x = torch.from_numpy(np.asarray(img.dataobj, dtype=np.float32))[None, None]
        with torch.no_grad():
            latents.append(codec.latents(model, x)[0])
            if path in shown:
                y = codec.reconstruction(model, x).clamp(0, 1)[0, 0].numpy()
                recon_paths.append(save_volume(recon_dir / path.name, y, img.affine))
    latents = np.stack(latents)
    varying = float("nan")
    if latents.dtype.kind == "i":  # tokens: the share of positions that are not the same for every subject
        varying = float(np.mean(np.any(latents != latents[:1], axis=0)))
    # continuous latents: their spread across subjects (a collapsed VAE has ~0 against a posterior sd near 1)
    spread = (
        float("nan")
        if latents.dtype.kind == "i"
        else float(np.median(latents.reshape(len(latents), -1).std(0)))
    )
    segmenter = make_segmenter(config["segmentation"])
    real, fits = volumes(segmenter, shown)
    references = fits if all(fits.values()) else None
    table = agreement(real, volumes(segmenter, recon_paths, references)[0])
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    summary = {
        "train_seconds": round(seconds, 1),
        "latent_positions_varying": varying,
        "latent_sd_across_subjects": spread,
        "settings": args.set,
        "warp_mm": args.warp_mm,
        "evaluated": args.evaluate,
    }
    print(json.dumps(summary))
    table.assign(**{k: json.dumps(v) if isinstance(v, list) else v for k, v in summary.items()}).to_csv(
        args.out / "agreement.tsv", sep="\t", index=False
    )


if __name__ == "__main__":
    main()
