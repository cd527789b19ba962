"""4-G-R-SSIM on tiny 3D phantoms; the plain SSIM part against an explicit window loop and MONAI."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import phantom
from scipy import ndimage

from morphgen.metrics.fidelity import sample_pairs
from morphgen.metrics.gradient_ssim import (
    four_g_r_ssim,
    four_g_r_ssim_components,
    gradient_magnitude,
    pairwise_four_g_r_ssim,
    partition_regions,
    ssim_map,
    structural_similarity,
    window_radius,
)

torch.set_num_threads(1)

SHAPE = (16, 20, 16)


@pytest.fixture(scope="module")
def volume() -> np.ndarray:
    return phantom(np.random.default_rng(0), SHAPE).astype(np.float64)


def _step(shape, at, low=0.2, high=0.8):
    v = np.full(shape, low)
    v[at:] = high
    return v


def test_identical_volumes_score_one(volume):
    result = four_g_r_ssim_components(volume, volume)
    assert result.score == pytest.approx(1.0, abs=1e-12)
    assert result.region_counts["changed_edge"] == 0
    assert four_g_r_ssim(volume, volume, symmetric=True) == pytest.approx(1.0, abs=1e-12)


def test_decreases_with_noise(volume):
    noise = np.random.default_rng(1).normal(size=SHAPE)
    scores = [four_g_r_ssim(volume, volume + a * noise) for a in (0.0, 0.01, 0.03, 0.1, 0.3)]
    assert np.all(np.diff(scores) < 0), scores


def test_decreases_with_blur(volume):
    scores = [four_g_r_ssim(volume, volume)]
    scores += [four_g_r_ssim(volume, ndimage.gaussian_filter(volume, s)) for s in (0.5, 1.0, 1.5, 2.5)]
    assert np.all(np.diff(scores) < 0), scores


def test_shifted_boundary_hits_changed_edges():
    shape = (32, 16, 16)
    x, y = _step(shape, 16), _step(shape, 18)
    result = four_g_r_ssim_components(x, y)
    assert result.region_counts["changed_edge"] > 0
    assert result.region_means["changed_edge"] < result.region_means["smooth"]
    # equal region weights stress the few edge voxels: the score drops more than SSIM on smooth voxels
    # and more than the voxel-wise mean of SSIM or G-SSIM
    assert result.score < result.ssim_region_means["smooth"]
    assert result.score < result.ssim_mean
    assert result.score < result.gssim_mean


def test_partition_follows_li_bovik_thresholds():
    grad_ref = np.array([0.0, 0.05, 0.1, 0.5, 1.0, 1.0])
    grad_other = np.array([0.0, 0.0, 0.0, 0.0, 1.0, 0.0])
    regions = partition_regions(grad_ref, grad_other)  # TH1 = 0.12, TH2 = 0.06
    assert regions["smooth"].tolist() == [True, True, False, False, False, False]
    assert regions["texture"].tolist() == [False, False, True, False, False, False]
    assert regions["changed_edge"].tolist() == [False, False, False, True, False, True]
    assert regions["preserved_edge"].tolist() == [False, False, False, False, True, False]
    assert np.all(sum(m.astype(int) for m in regions.values()) == 1)


def test_asymmetry_is_the_documented_one():
    """New edges in the second volume count as texture; in the reverse order they are changed edges."""
    shape = (32, 16, 16)
    x = _step(shape, 16)
    y = x.copy()
    y[:, 8:] += 0.1  # an extra edge along axis 1, absent from x
    forward = four_g_r_ssim_components(x, y)
    backward = four_g_r_ssim_components(y, x)
    assert forward.region_counts["changed_edge"] == 0
    assert backward.region_counts["changed_edge"] == forward.region_counts["texture"] > 0
    # the maps are symmetric: only the partition depends on the order
    assert forward.ssim_mean == pytest.approx(backward.ssim_mean, abs=1e-12)
    assert forward.gssim_mean == pytest.approx(backward.gssim_mean, abs=1e-12)
    # so the score depends on the order once the regions are weighted differently
    weights = (0.25, 0.4, 0.2, 0.15)
    one_way = four_g_r_ssim(x, y, weights=weights)
    other_way = four_g_r_ssim(y, x, weights=weights)
    assert one_way != pytest.approx(other_way, abs=1e-3)
    both = four_g_r_ssim(x, y, symmetric=True, weights=weights)
    assert both == pytest.approx(0.5 * (one_way + other_way))
    assert both == pytest.approx(four_g_r_ssim(y, x, symmetric=True, weights=weights))


def _ssim_by_window_loop(x, y, sigma=1.5, radius=5, c1=0.01**2, c2=0.03**2):
    """Wang et al. 2004 with an explicit 3D Gaussian window, at every voxel whose window fits inside."""
    offsets = np.arange(-radius, radius + 1)
    g = np.exp(-(offsets**2) / (2 * sigma**2))
    w = g[:, None, None] * g[None, :, None] * g[None, None, :]
    w /= w.sum()
    values = []
    for i in range(radius, x.shape[0] - radius):
        for j in range(radius, x.shape[1] - radius):
            for k in range(radius, x.shape[2] - radius):
                window = np.s_[
                    i - radius : i + radius + 1, j - radius : j + radius + 1, k - radius : k + radius + 1
                ]
                a, b = x[window], y[window]
                mu_a, mu_b = (w * a).sum(), (w * b).sum()
                var_a = (w * (a - mu_a) ** 2).sum()
                var_b = (w * (b - mu_b) ** 2).sum()
                cov = (w * (a - mu_a) * (b - mu_b)).sum()
                values.append(
                    (2 * mu_a * mu_b + c1)
                    * (2 * cov + c2)
                    / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
                )
    return float(np.mean(values))


@pytest.mark.parametrize("seed", [0, 1])
def test_plain_ssim_matches_window_loop_and_monai(seed):
    from monai.metrics import SSIMMetric

    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 1, SHAPE)
    y = np.clip(x + rng.normal(0, 0.2, SHAPE), 0, 1)
    ours = structural_similarity(x, y)
    assert window_radius() == 5
    assert ours == pytest.approx(_ssim_by_window_loop(x, y), abs=1e-10)
    metric = SSIMMetric(spatial_dims=3, data_range=1.0, win_size=11, kernel_sigma=1.5)
    monai = metric(torch.from_numpy(y[None, None]).float(), torch.from_numpy(x[None, None]).float())
    assert ours == pytest.approx(float(monai), abs=1e-4)
    assert ssim_map(x, y).shape == SHAPE


def test_gradient_magnitude_is_per_voxel_derivative():
    ramp = np.broadcast_to(0.03 * np.arange(12.0)[:, None, None], (12, 12, 12)).copy()
    grad = gradient_magnitude(ramp)
    np.testing.assert_allclose(grad[1:-1, 1:-1, 1:-1], 0.03, rtol=1e-12)


def test_pairwise_uses_sample_pairs():
    rng = np.random.default_rng(7)
    images = np.stack([phantom(rng, SHAPE) for _ in range(5)])
    mean, sd = pairwise_four_g_r_ssim(images, n_pairs=4, seed=3, progress=False)
    values = [four_g_r_ssim(images[i], images[j]) for i, j in sample_pairs(5, 4, 3)]
    assert mean == pytest.approx(np.mean(values))
    assert sd == pytest.approx(np.std(values, ddof=1))
    same = np.stack([images[0]] * 3)
    assert pairwise_four_g_r_ssim(same, 10, 0, progress=False) == pytest.approx((1.0, 0.0), abs=1e-12)
    assert all(np.isnan(pairwise_four_g_r_ssim(images[:1], 10, 0, progress=False)))


def test_bad_inputs_raise(volume):
    with pytest.raises(ValueError, match="same shape"):
        four_g_r_ssim(volume, volume[:, :10])
    with pytest.raises(ValueError, match="too small"):
        four_g_r_ssim(volume[:10], volume[:10])
    with pytest.raises(ValueError, match="weights"):
        four_g_r_ssim(volume, volume, weights=(1.0, 0.0, 0.0))
