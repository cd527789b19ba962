"""Brain age: a small 3D CNN regressor of age (MONAI ``Regressor``), trained on the real training images.

Two uses, for a family whose samples carry the age they were given:

* the predicted age of conditioned samples against the age they were asked for (seed 004, Fig. 3);
* seed 002's augmentation test: the real test images' MAE of a regressor trained on the real training images
  alone, against one trained on them plus the synthetic images (with their asked ages).

Training is deterministic on CPU for a seed: initial weights from it, each epoch's order from (seed, epoch).
Ages are standardised with the training ages; the loss is L1 (the MAE). The images are held in memory, which
suits the demo and cohorts of a few hundred at 2 mm; thousands at 1 mm need a streaming loader.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy import stats
from tqdm import tqdm

from morphgen.errors import ConfigError
from morphgen.tsv import write_tsv

DEFAULTS = {"channels": [8, 16, 32, 64], "epochs": 30, "batch_size": 4, "lr": 1e-3}


@dataclass
class AgeRegressor:
    """A trained network and the training ages' mean and sd (its output is in their units)."""

    net: torch.nn.Module
    mean: float
    sd: float

    @torch.no_grad()
    def predict(self, images: np.ndarray, batch_size: int = 8) -> np.ndarray:
        """Ages (years) of images (N, X, Y, Z)."""
        self.net.eval()
        out = []
        for start in range(0, len(images), batch_size):
            x = torch.from_numpy(np.asarray(images[start : start + batch_size], np.float32))[:, None]
            out.append(self.net(x).reshape(-1).double().numpy() * self.sd + self.mean)
        return np.concatenate(out) if out else np.zeros(0)


def train_regressor(
    images: np.ndarray, ages: np.ndarray, cfg: dict | None = None, seed: int = 0, progress: bool = True
) -> AgeRegressor:
    """Fit the regressor to images (N, X, Y, Z) and their ages; ``cfg``: ``evaluation.brain_age``."""
    from monai.networks.nets import Regressor

    cfg = {**DEFAULTS, **(cfg or {})}
    images, ages = np.asarray(images, np.float32), np.asarray(ages, np.float64)
    if len(images) < 2 or len(images) != len(ages) or not np.isfinite(ages).all():
        raise ConfigError(
            f"brain age: needs at least 2 images with an age each, got {len(images)} and {len(ages)}"
        )
    mean, sd = float(ages.mean()), float(ages.std())
    if sd == 0:
        raise ConfigError("brain age: every training image has the same age")
    channels = [int(c) for c in cfg["channels"]]
    torch.manual_seed(seed)
    net = Regressor(
        in_shape=(1, *images.shape[1:]),
        out_shape=(1,),
        channels=channels,
        strides=[2] * len(channels),
        num_res_units=1,
    )
    optimiser = torch.optim.Adam(net.parameters(), lr=float(cfg["lr"]))
    x = torch.from_numpy(images)[:, None]
    y = torch.from_numpy((ages - mean) / sd).float()
    epochs, batch_size = int(cfg["epochs"]), int(cfg["batch_size"])
    net.train()
    for epoch in tqdm(range(epochs), desc="brain-age epochs", disable=not progress):
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(int(seed) * 100_003 + epoch))
        for start in range(0, len(x), batch_size):
            index = order[start : start + batch_size]
            loss = torch.nn.functional.l1_loss(net(x[index]).reshape(-1), y[index])
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
    return AgeRegressor(net.eval(), mean, sd)


def age_agreement(reference: np.ndarray, predicted: np.ndarray) -> dict:
    """n, MAE (years), Pearson r, R² (1 - SSE / SST of the reference), slope of predicted on reference."""
    t, p = np.asarray(reference, np.float64), np.asarray(predicted, np.float64)
    ok = np.isfinite(t) & np.isfinite(p)
    t, p = t[ok], p[ok]
    row = {"n": len(t), "mae_years": float(np.abs(p - t).mean()) if len(t) else float("nan")}
    spread = len(t) >= 2 and np.ptp(t) > 0
    row["pearson_r"] = float(stats.pearsonr(t, p).statistic) if spread and np.ptp(p) > 0 else float("nan")
    row["r2"] = float(1 - ((p - t) ** 2).sum() / ((t - t.mean()) ** 2).sum()) if spread else float("nan")
    row["slope"] = float(np.polyfit(t, p, 1)[0]) if spread else float("nan")
    return row


def brain_age_table(
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    synthetic: Mapping[str, tuple[np.ndarray, np.ndarray]],
    cfg: dict | None = None,
    seed: int = 0,
    out_tsv: str | Path | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """The brain-age table: (images, ages) of the real training and test images, and per source of synthetic
    images (``generated``, ``requested``) their images and the ages they were asked for.

    Rows: the regressor trained on the real training images, evaluated on the real test images and on each
    source (predicted against asked); then one trained on the real training images plus the ``generated``
    images, evaluated on the real test images (seed 002's augmentation test). Columns: trained_on,
    training_images, evaluated, then those of :func:`age_agreement`.
    """
    rows = []
    real = train_regressor(*train, cfg, seed, progress)
    n_train = len(train[0])
    rows.append({"trained_on": "real", "training_images": n_train, "evaluated": "real test",
                 **age_agreement(test[1], real.predict(test[0]))})  # fmt: skip
    for source, (images, asked) in synthetic.items():
        rows.append({"trained_on": "real", "training_images": n_train, "evaluated": source,
                     **age_agreement(asked, real.predict(images))})  # fmt: skip
    if "generated" in synthetic and len(synthetic["generated"][0]):
        images, asked = synthetic["generated"]
        both = train_regressor(
            np.concatenate([train[0], images]), np.concatenate([train[1], asked]), cfg, seed, progress
        )
        rows.append({"trained_on": "real + generated", "training_images": n_train + len(images),
                     "evaluated": "real test", **age_agreement(test[1], both.predict(test[0]))})  # fmt: skip
    columns = ["trained_on", "training_images", "evaluated", "n", "mae_years", "pearson_r", "r2", "slope"]
    df = pd.DataFrame(rows, columns=columns)
    if out_tsv is not None:
        write_tsv(df, out_tsv)
    return df
