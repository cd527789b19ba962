"""How closely 2 training processes (torchrun, DDP on gloo) follow 1 process with the same global batch.

Trains the tiny autoencoder of ``tests/test_distributed.py`` three ways on the same phantoms: 2 processes x 2
images (learning rates scaled by sqrt(2)), 1 process x 4 images at the matching rates, and 1 process x 4 at
the unscaled rates; prints the relative differences of the loss terms per epoch and of the final weights.

    python benchmarks/ddp_curves.py
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import test_distributed as setup  # noqa: E402

from morphgen.models.registry import run_training  # noqa: E402
from morphgen.nifti import save_volume  # noqa: E402


def main() -> None:
    root = Path(tempfile.mkdtemp(prefix="ddp-curves-"))
    rng = np.random.default_rng(4)
    grid = setup.GRID
    volumes = [setup.phantom(rng, grid.shape) for _ in range(11)]
    paths = [save_volume(root / f"sub-{i:02d}.nii.gz", v, grid.affine) for i, v in enumerate(volumes)]
    cohort = (paths[:8], paths[8:])
    scale = np.sqrt(2)
    configs = {
        "2 processes x 2": setup.model_cfg(2),
        "1 process x 4, scaled lr": setup.model_cfg(
            1, batch_size=4, lr=setup.LR * scale, disc_lr=setup.DISC_LR * scale
        ),
        "1 process x 4, unscaled lr": setup.model_cfg(1, batch_size=4),
    }
    runs = {}
    for name, cfg in configs.items():
        out = root / name.replace(" ", "_").replace(",", "")
        run_training(cfg, "fit_autoencoder", setup.fit_kwargs(cohort, out), out / "job.json")
        runs[name] = out
    ddp = runs["2 processes x 2"]
    print("| against 2 processes | weights | total (per epoch) | val_total | discriminator |")
    print("| --- | ---: | --- | --- | --- |")
    for name in list(configs)[1:]:
        a, b = setup.losses(ddp), setup.losses(runs[name])
        cells = [f"{setup.relative_difference(ddp, runs[name]):.1e}"]
        for column in ("total", "val_total", "discriminator"):
            rel = np.abs(a[column].to_numpy() / b[column].to_numpy() - 1)
            cells.append(", ".join("n/a" if np.isnan(r) else f"{r:.1e}" for r in rel))
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
