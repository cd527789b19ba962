"""Fidelity metrics (bMMD², pairwise MS-SSIM) and group statistics against independent computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from morphgen.metrics import (
    bmmd2,
    bonferroni_threshold,
    cohen_d,
    compare_groups,
    mmd2_linear,
    pairwise_msssim,
    real_baseline_bmmd2,
)
from morphgen.metrics.fidelity import check_msssim_size, sample_pairs, split_halves

torch.set_num_threads(1)


def _images(n: int, shape=(6, 7, 5), seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 1, size=(n, *shape))


# ------------------------------------------------------------------------------------------------- bMMD²


def test_mmd_of_a_batch_against_itself_is_zero():
    x = _images(5)
    assert mmd2_linear(x, x) == pytest.approx(0.0, abs=1e-15)
    # batch_size == N: every batch is the whole set, so the two sides always hold the same images
    mean, sd = bmmd2(x, x, batch_size=5, seed=1, n_batches=7, progress=False)
    assert mean == pytest.approx(0.0, abs=1e-15)
    assert sd == pytest.approx(0.0, abs=1e-15)


def test_biased_mmd_equals_kernel_means_and_squared_distance_of_batch_means():
    x, y = _images(4, seed=1), _images(3, seed=2) + 0.05
    xf, yf = x.reshape(4, -1), y.reshape(3, -1)
    d = xf.shape[1]
    kernel_form = (xf @ xf.T).mean() / d + (yf @ yf.T).mean() / d - 2 * (xf @ yf.T).mean() / d
    mean_form = np.sum((xf.mean(0) - yf.mean(0)) ** 2) / d
    assert mmd2_linear(x, y) == pytest.approx(kernel_form, rel=1e-10)
    assert mmd2_linear(x, y) == pytest.approx(mean_form, rel=1e-10)
    assert mmd2_linear(x.astype(np.float32), y.astype(np.float32)) == pytest.approx(mean_form, rel=1e-5)
    # bmmd2 with whole-set batches of two equal-sized sets is the squared distance of the set means
    y4 = _images(4, seed=3)
    mean, _ = bmmd2(x, y4, batch_size=4, seed=0, n_batches=3, progress=False)
    expected = np.sum((xf.mean(0) - y4.reshape(4, -1).mean(0)) ** 2) / d
    assert mean == pytest.approx(expected, rel=1e-10)


def test_unbiased_mmd_is_monai_u_statistic():
    x, y = _images(4, seed=4), _images(4, seed=5) * 0.9
    xf, yf = x.reshape(4, -1), y.reshape(4, -1)
    d = xf.shape[1]
    kxx, kyy, kxy = xf @ xf.T / d, yf @ yf.T / d, xf @ yf.T / d
    u_stat = (kxx.sum() - np.trace(kxx)) / (4 * 3) + (kyy.sum() - np.trace(kyy)) / (4 * 3) - 2 * kxy.mean()
    assert mmd2_linear(x, y, estimator="unbiased") == pytest.approx(u_stat, rel=1e-8)
    with pytest.raises(ValueError, match="same size"):
        mmd2_linear(x[:3], y, estimator="unbiased")
    # the unbiased estimate of identical batches is not 0 (diagonals left out), unlike the biased one
    assert mmd2_linear(x, x, estimator="unbiased") < 0


def test_bmmd2_grows_monotonically_with_a_mean_shift():
    x, y = _images(8, seed=6), _images(8, seed=7)
    shifts = [0.0, 0.05, 0.1, 0.2, 0.4]
    means = [bmmd2(x, y + s, batch_size=3, seed=3, n_batches=20, progress=False)[0] for s in shifts]
    assert all(a < b for a, b in zip(means, means[1:], strict=False)), means
    # whole-set batches of identical images: exactly the squared shift (voxel-normalised kernel)
    for s in (0.1, 0.3):
        assert bmmd2(x, x + s, batch_size=8, seed=0, n_batches=2, progress=False)[0] == pytest.approx(s**2)


def test_real_baseline_uses_disjoint_halves():
    first, second = split_halves(9, seed=4)
    assert len(first) == 5 and len(second) == 4
    assert set(first).isdisjoint(second) and set(first) | set(second) == set(range(9))
    # a set of identical images has a zero baseline; distinct images give a positive floor
    same = np.repeat(_images(1, seed=8), 6, axis=0)
    assert real_baseline_bmmd2(same, 2, seed=5, n_batches=4, progress=False)[0] == pytest.approx(
        0.0, abs=1e-15
    )
    mean, sd = real_baseline_bmmd2(_images(10, seed=9), 4, seed=0, n_batches=10, progress=False)
    assert mean > 0 and sd > 0


def test_bmmd2_rejects_too_large_batches():
    with pytest.raises(ValueError, match="batch_size"):
        bmmd2(_images(3), _images(2), batch_size=3, seed=0, progress=False)


# ----------------------------------------------------------------------------------------------- MS-SSIM


def _brainish(seed: int) -> np.ndarray:
    """A smooth blob on a 48³ grid, intensities in [0, 1]."""
    g = np.stack(np.meshgrid(*[np.linspace(-1, 1, 48)] * 3, indexing="ij"))
    rng = np.random.default_rng(seed)
    centre = rng.uniform(-0.2, 0.2, size=3)[:, None, None, None]
    return np.clip(1.2 - np.sqrt(((g - centre) ** 2).sum(0)) * 1.5, 0, 1)


def test_pairwise_msssim_is_one_for_identical_images_and_drops_with_noise():
    base = _brainish(0)
    same = np.stack([base] * 3)
    mean, sd = pairwise_msssim(same, n_pairs=3, seed=0, kernel_size=3, progress=False)
    assert mean == pytest.approx(1.0, abs=1e-5) and sd == pytest.approx(0.0, abs=1e-5)
    rng = np.random.default_rng(1)
    previous = mean
    for noise in (0.05, 0.2):
        noisy = np.clip(same + rng.normal(0, noise, size=same.shape), 0, 1)
        value, _ = pairwise_msssim(noisy, n_pairs=3, seed=0, kernel_size=3, progress=False)
        assert value < previous - 0.01
        previous = value


def test_msssim_size_rule_and_pairs():
    check_msssim_size((48, 64, 48), 3)
    with pytest.raises(ValueError, match="kernel"):
        check_msssim_size((48, 64, 48), 4)
    pairs = sample_pairs(6, 10, seed=0)
    assert len(pairs) == 10 and len({tuple(p) for p in pairs}) == 10 and np.all(pairs[:, 0] < pairs[:, 1])
    assert len(sample_pairs(4, 100, seed=0)) == 6  # all distinct pairs when fewer exist than asked
    assert np.isnan(pairwise_msssim(_images(1, (48, 48, 48)), 5, 0, 3, progress=False)[0])


# ------------------------------------------------------------------------------------------------ stats


@pytest.mark.parametrize("equal_var", [True, False])
def test_compare_groups_matches_scipy(equal_var):
    rng = np.random.default_rng(2)
    a, b = rng.normal(600, 30, 12), rng.normal(580, 15, 9)
    out = compare_groups(a, b, equal_var=equal_var)
    ref = stats.ttest_ind(a, b, equal_var=equal_var)
    assert out["t"] == pytest.approx(ref.statistic) and out["p"] == pytest.approx(ref.pvalue)
    assert out["test"] == ("student" if equal_var else "welch")
    assert out["n_a"] == 12 and out["mean_b"] == pytest.approx(b.mean())
    assert out["sd_a"] == pytest.approx(a.std(ddof=1))


def test_cohen_d_by_hand_and_nan_handling():
    # means 2.5 and 5, variances 5/3 and 20/3, pooled variance (3*5/3 + 3*20/3) / 6 = 25/6
    assert cohen_d([1, 2, 3, 4], [2, 4, 6, 8]) == pytest.approx(-2.5 / np.sqrt(25 / 6))
    assert compare_groups([1, 2, 3, 4, np.nan], [2, 4, 6, 8])["cohen_d"] == pytest.approx(-np.sqrt(6) / 2)
    assert np.isnan(compare_groups([1.0], [2.0, 3.0])["p"])


def test_bonferroni_threshold():
    assert bonferroni_threshold(0.05, 24) == pytest.approx(0.05 / 24)
    assert bonferroni_threshold(0.001, 48) == pytest.approx(2.083e-05, rel=1e-3)  # the paper's threshold
    with pytest.raises(ValueError):
        bonferroni_threshold(0.05, 0)
    with pytest.raises(ValueError):
        bonferroni_threshold(1.5, 3)


def test_pairwise_msssim_equals_monai_on_the_pairs_it_draws():
    """Batching and pair drawing change nothing: MONAI scoring each pair alone gives the same mean and sd."""
    import torch
    from monai.metrics import MultiScaleSSIMMetric

    from morphgen.metrics.fidelity import sample_pairs

    rng = np.random.default_rng(7)
    images = np.clip(np.stack([_brainish(s) for s in range(5)]) + rng.normal(0, 0.1, (5, 48, 48, 48)), 0, 1)
    mean, sd = pairwise_msssim(images, n_pairs=6, seed=3, kernel_size=3, batch_size=4, progress=False)
    metric = MultiScaleSSIMMetric(spatial_dims=3, data_range=1.0, kernel_size=3)
    values = [
        float(
            metric(torch.tensor(images[i][None, None]).float(), torch.tensor(images[j][None, None]).float())
        )
        for i, j in sample_pairs(5, 6, 3)
    ]
    assert mean == pytest.approx(np.mean(values), rel=1e-6) and sd == pytest.approx(
        np.std(values, ddof=1), rel=1e-5
    )


def test_snr_is_the_mean_over_the_sd_inside_the_brain():
    """Half the brain at 0.4, half at 0.8: mean 0.6, sd 0.2, SNR 3; the background does not count."""
    from morphgen.metrics.fidelity import snr

    image = np.zeros((2, 8, 8, 8))
    image[:, 2:6, 2:6, 2:4] = 0.4
    image[:, 2:6, 2:6, 4:6] = 0.8
    image[1, 2:6, 2:6, 4:6] = 0.6  # the second: 0.4 and 0.6, mean 0.5, sd 0.1, SNR 5
    mean, sd = snr(image)
    assert mean == pytest.approx(4.0) and sd == pytest.approx(np.std([3.0, 5.0], ddof=1))
    assert all(np.isnan(v) for v in snr(np.zeros((2, 4, 4, 4))))  # no brain: no SNR
