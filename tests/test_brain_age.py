"""The brain-age regressor on heads whose ventricles grow with age: it learns the age, reads it back in
samples made the same way, and the augmentation row trains on real plus synthetic images."""

from __future__ import annotations

import numpy as np
import pytest

from morphgen.errors import ConfigError
from morphgen.metrics.brain_age import age_agreement, brain_age_table, train_regressor

pytestmark = pytest.mark.usefixtures("one_thread")

SHAPE = (16, 24, 16)
AXES = np.stack(np.meshgrid(*[np.arange(s) - (s - 1) / 2 for s in SHAPE], indexing="ij"))
CFG = {"channels": [4, 8, 16], "epochs": 40, "batch_size": 4, "lr": 3e-3}


def heads(ages: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    brain = ((AXES[0] / 7) ** 2 + (AXES[1] / 11) ** 2 + (AXES[2] / 7) ** 2) < 1
    out = []
    for age in ages:
        r = 1.5 + 3.0 * (age - 50) / 35
        ventricle = ((AXES[0] / r) ** 2 + (AXES[1] / (1.6 * r)) ** 2 + (AXES[2] / r) ** 2) < 1
        image = np.where(brain, 0.7, 0.0)
        image[ventricle] = 0.15
        out.append(np.clip(image + rng.normal(0, 0.02, SHAPE), 0, 1))
    return np.asarray(out, np.float32)


def test_age_agreement_by_hand():
    row = age_agreement(np.array([50.0, 60.0, 70.0]), np.array([52.0, 60.0, 74.0]))
    assert row["n"] == 3 and row["mae_years"] == pytest.approx(2.0)
    assert row["slope"] == pytest.approx(1.1) and row["r2"] == pytest.approx(1 - 20 / 200)


def test_the_regressor_learns_an_age_the_images_show():
    rng = np.random.default_rng(0)
    train_ages, test_ages = rng.uniform(50, 85, 16), np.linspace(52, 83, 8)
    images, test_images = heads(train_ages, rng), heads(test_ages, rng)
    model = train_regressor(images, train_ages, CFG, seed=1, progress=False)
    predicted = model.predict(test_images)
    baseline = np.abs(test_ages - train_ages.mean()).mean()  # always the training mean
    row = age_agreement(test_ages, predicted)
    assert row["mae_years"] < 0.5 * baseline and row["pearson_r"] > 0.9, (row, baseline)
    again = train_regressor(images, train_ages, CFG, seed=1, progress=False)
    assert np.array_equal(again.predict(test_images), predicted)  # deterministic for its seed
    with pytest.raises(ConfigError, match="same age"):
        train_regressor(heads(train_ages[:3], rng), np.full(3, 60.0), CFG, 0, False)


def test_the_table_reads_samples_and_trains_once_more_with_them(tmp_path):
    rng = np.random.default_rng(3)
    train_ages, test_ages, asked = rng.uniform(50, 85, 12), rng.uniform(50, 85, 6), rng.uniform(50, 85, 8)
    table = brain_age_table(
        (heads(train_ages, rng), train_ages),
        (heads(test_ages, rng), test_ages),
        {"generated": (heads(asked, rng), asked)},
        CFG,
        seed=0,
        out_tsv=tmp_path / "brain_age.tsv",
        progress=False,
    )
    assert list(table["evaluated"]) == ["real test", "generated", "real test"]
    assert list(table["trained_on"]) == ["real", "real", "real + generated"]
    assert list(table["training_images"]) == [12, 12, 20] and list(table["n"]) == [6, 8, 6]
    generated = table.set_index(["trained_on", "evaluated"]).loc[("real", "generated")]
    assert generated["pearson_r"] > 0.8  # samples made as the real ones: their asked age is read back
    assert (tmp_path / "brain_age.tsv").is_file()
