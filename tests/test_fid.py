"""FID: the Fréchet distance against closed forms, feature networks from checked files, slice selection."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from morphgen.errors import ChecksumError, ConfigError
from morphgen.metrics.fid import (
    FID_COLUMNS,
    NO_WEIGHTS,
    FeatureConfig,
    MedicalNetResNet,
    OnnxFeatures,
    TorchFeatures,
    build_extractor,
    feature_statistics,
    fid_2d,
    fid_3d,
    fid_columns,
    fid_from_features,
    fixed_slices,
    frechet_distance,
    middle_slices,
    unmeasured_fid_columns,
)
from morphgen.weights import sha256sum

torch.set_num_threads(1)


def random_rotation(rng: np.random.Generator, d: int) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(d, d)))
    return q * np.sign(np.diag(r))


# ---------------------------------------------------------------------------- Fréchet distance


def test_frechet_distance_of_commuting_covariances_is_the_closed_form():
    rng = np.random.default_rng(0)
    d = 6
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    a, b = rng.uniform(0.1, 3.0, d), rng.uniform(0.1, 3.0, d)
    # shared eigenvectors: (S1 S2)^½ = Q diag(sqrt(a b)) Qᵀ, so the trace term is sum((√a - √b)²)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-9)
    q = random_rotation(rng, d)
    got = frechet_distance(mu1, q @ np.diag(a) @ q.T, mu2, q @ np.diag(b) @ q.T)
    assert got == pytest.approx(expected, rel=1e-7)


def test_frechet_distance_of_non_commuting_2x2_covariances():
    rng = np.random.default_rng(1)
    for _ in range(5):
        m1, m2 = rng.normal(size=(2, 2)), rng.normal(size=(2, 2))
        s1, s2 = m1 @ m1.T + 0.1 * np.eye(2), m2 @ m2.T + 0.1 * np.eye(2)
        mu1, mu2 = rng.normal(size=2), rng.normal(size=2)
        # the eigenvalues l1, l2 of S1 S2 are positive: tr sqrt = √l1 + √l2 = sqrt(tr + 2 sqrt(det))
        p = s1 @ s2
        tr_sqrt = np.sqrt(np.trace(p) + 2 * np.sqrt(np.linalg.det(p)))
        expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt
        assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-8, abs=1e-10)


def test_identical_statistics_give_zero_even_when_singular():
    rng = np.random.default_rng(2)
    mu = rng.normal(size=8)
    low_rank = rng.normal(size=(8, 3))
    for sigma in (np.eye(8) * 2.0, low_rank @ low_rank.T):  # full rank, then rank 3 of 8
        value = frechet_distance(mu, sigma, mu, sigma)
        assert np.isfinite(value) and abs(value) < 1e-4
    with pytest.raises(ValueError, match="shapes"):
        frechet_distance(mu, np.eye(8), mu[:4], np.eye(4))


def test_sampled_features_converge_to_the_closed_form():
    rng = np.random.default_rng(3)
    d = 4
    mu1, mu2 = np.zeros(d), np.full(d, 0.5)
    a, b = np.array([1.0, 2.0, 0.5, 1.5]), np.array([0.5, 1.0, 2.0, 1.0])
    exact = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    errors = []
    for n in (50, 500, 50_000):
        x = mu1 + rng.normal(size=(n, d)) * np.sqrt(a)
        y = mu2 + rng.normal(size=(n, d)) * np.sqrt(b)
        errors.append(abs(fid_from_features(x, y) - exact))
    assert errors[-1] < 0.02 * exact
    assert errors[-1] < errors[0]
    mean, cov = feature_statistics(x)
    np.testing.assert_allclose(cov, np.cov(x.T, ddof=1))
    np.testing.assert_allclose(mean, x.mean(axis=0))


def test_fid_of_a_set_with_itself_is_zero_and_grows_with_a_mean_shift():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(40, 5))
    direction = rng.normal(size=5)
    assert abs(fid_from_features(x, x)) < 1e-8
    shifts = [0.25, 0.5, 1.0, 2.0, 4.0]
    values = [fid_from_features(x, x + s * direction) for s in shifts]
    assert all(v2 > v1 for v1, v2 in zip(values, values[1:], strict=False))
    # equal covariances: only the mean term is left
    for s, v in zip(shifts, values, strict=True):
        assert v == pytest.approx(s**2 * direction @ direction, rel=1e-6)
    with pytest.raises(ValueError, match="N >= 2"):
        fid_from_features(x[:1], x)


# ---------------------------------------------------------------------------- ONNX feature networks


class TinyNet2d(nn.Module):
    """A conv net whose output keeps spatial dims, so the extractor's averaging is exercised."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 6, 3, stride=2, padding=1)

    def forward(self, x):
        return torch.tanh(self.conv(x))


class TinyNet3d(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.conv = nn.Conv3d(1, 5, 3, stride=2, padding=1)

    def forward(self, x):
        return torch.relu(self.conv(x))


def export(module: nn.Module, example: torch.Tensor, path, dynamic_batch: bool = True):
    shapes = {"x": {0: torch.export.Dim("batch", min=1, max=64)}} if dynamic_batch else None
    torch.onnx.export(
        module.eval(),
        (example,),
        str(path),
        input_names=["image"],
        output_names=["features"],
        dynamic_shapes=shapes,
        external_data=False,
    )
    return path, sha256sum(path)


@pytest.fixture(scope="module")
def onnx2d(tmp_path_factory):
    return export(TinyNet2d(), torch.rand(2, 3, 16, 16), tmp_path_factory.mktemp("onnx") / "tiny2d.onnx")


@pytest.fixture(scope="module")
def onnx3d(tmp_path_factory):
    return export(TinyNet3d(), torch.rand(2, 1, 8, 8, 8), tmp_path_factory.mktemp("onnx") / "tiny3d.onnx")


def slices_in_unit_range(n: int = 5) -> np.ndarray:
    rng = np.random.default_rng(5)
    return rng.uniform(-0.1, 1.1, size=(n, 12, 10)).astype(np.float32)  # non-square, some out of range


def test_onnx_2d_features_equal_the_torch_module(onnx2d):
    path, digest = onnx2d
    extractor = OnnxFeatures(
        path, digest, input_name="image", output_name="features", batch_size=2, threads=1
    )
    assert extractor.spatial_dims == 2 and extractor.channels == 3
    assert extractor.input_size == (16, 16)  # static spatial size of the export
    slices = slices_in_unit_range()
    got = extractor(slices)
    # the same pre-processing written out: clip to [0, 1], bilinear to 16x16, three channels, spatial mean
    x = torch.from_numpy(slices).clamp(0, 1)[:, None]
    x = torch.nn.functional.interpolate(x, size=(16, 16), mode="bilinear", align_corners=False)
    with torch.no_grad():
        want = TinyNet2d().eval()(x.repeat(1, 3, 1, 1)).mean(dim=(2, 3)).numpy()
    assert got.shape == (5, 6)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_onnx_minmax_scaling_is_per_slice(onnx2d):
    path, digest = onnx2d
    extractor = OnnxFeatures(path, digest, scaling="minmax", threads=1)
    slices = slices_in_unit_range(3)
    np.testing.assert_allclose(extractor(slices * 7.0 + 3.0), extractor(slices), rtol=1e-5, atol=1e-6)
    assert not np.allclose(OnnxFeatures(path, digest, threads=1)(slices * 0.5), extractor(slices * 0.5))


def test_onnx_static_batch_export_is_fed_one_at_a_time(onnx2d, tmp_path):
    path, digest = export(
        TinyNet2d(), torch.rand(1, 3, 16, 16), tmp_path / "static.onnx", dynamic_batch=False
    )
    static = OnnxFeatures(path, digest, threads=1)
    assert static.fixed_batch == 1
    slices = slices_in_unit_range(3)
    np.testing.assert_allclose(static(slices), OnnxFeatures(*onnx2d, threads=1)(slices), rtol=1e-5, atol=1e-6)


def test_onnx_3d_features_use_z_scored_volumes(onnx3d):
    path, digest = onnx3d
    extractor = OnnxFeatures(path, digest, threads=1)
    assert extractor.spatial_dims == 3 and extractor.channels == 1
    rng = np.random.default_rng(6)
    vols = np.zeros((3, 8, 8, 8), np.float32)
    vols[:, 2:6, 2:6, 2:6] = rng.uniform(0.2, 1.0, size=(3, 4, 4, 4))
    got = extractor(vols)
    x = torch.from_numpy(vols)[:, None]
    fg = [v[v > 0] for v in x]
    x = torch.stack([(v - f.mean()) / f.std() for v, f in zip(x, fg, strict=True)])
    with torch.no_grad():
        want = TinyNet3d().eval()(x).mean(dim=(2, 3, 4)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    # z-scoring: a global intensity scale does not change the features
    np.testing.assert_allclose(extractor(vols * 3.0), got, rtol=1e-4, atol=1e-5)


def test_onnx_wrong_checksum_is_refused_before_onnxruntime_loads(onnx2d, monkeypatch):
    import onnxruntime

    path, digest = onnx2d

    def never(*args, **kwargs):
        raise AssertionError("onnxruntime opened a model whose checksum did not match")

    monkeypatch.setattr(onnxruntime, "InferenceSession", never)
    wrong = "0" * 64
    with pytest.raises(ChecksumError) as err:
        OnnxFeatures(path, wrong)
    assert str(path) in str(err.value) and digest in str(err.value) and wrong in str(err.value)
    with pytest.raises(ChecksumError, match="unverified"):
        OnnxFeatures(path, None)


def test_missing_weights_file_is_a_config_error_naming_it(tmp_path):
    missing = tmp_path / "pt_inception_fid.onnx"
    with pytest.raises(ConfigError, match="pt_inception_fid.onnx"):
        OnnxFeatures(missing, "a" * 64)
    with pytest.raises(ConfigError, match="resnet_10_23dataset.pth"):
        build_extractor(
            {"fid3d": {"state_dict": str(tmp_path / "resnet_10_23dataset.pth"), "sha256": "a" * 64}}, "fid3d"
        )


def test_onnx_unknown_output_name_lists_the_outputs(onnx2d):
    with pytest.raises(ConfigError, match="features"):
        OnnxFeatures(*onnx2d, output_name="pool3")


# ---------------------------------------------------------------------------- MedicalNet ResNet


def randomised(module: nn.Module, seed: int) -> nn.Module:
    """Non-trivial BatchNorm statistics, so a state dict that did not load would show."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.BatchNorm3d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
    return module.eval()


@pytest.mark.parametrize("arch", ["resnet10", "resnet18"])
def test_medicalnet_state_dict_with_module_prefix_loads_and_gives_512_features(arch, tmp_path):
    torch.manual_seed(7)
    source = randomised(MedicalNetResNet(arch), 7)
    state = {f"module.{k}": v for k, v in source.state_dict().items()}
    state["module.conv_seg.0.weight"] = torch.zeros(2, 512, 1, 1, 1)  # MedicalNet's segmentation head
    path = tmp_path / f"{arch}_23dataset.pth"
    torch.save({"state_dict": state}, path)
    extractor = TorchFeatures(MedicalNetResNet(arch), path, sha256sum(path), batch_size=2)
    rng = np.random.default_rng(8)
    vols = rng.uniform(0.0, 1.0, size=(3, 16, 16, 16)).astype(np.float32)
    got = extractor(vols)
    assert got.shape == (3, 512)
    captured = []
    source.layer4.register_forward_hook(lambda module, args, out: captured.append(out))
    with torch.no_grad():
        want = source(extractor.prepare(vols)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # MedicalNet layout: /2 (conv1), /2 (max-pool), /2 (layer 2), layers 3-4 dilated not strided; a mean
    assert tuple(captured[0].shape) == (3, 512, 2, 2, 2)
    np.testing.assert_allclose(want, captured[0].mean(dim=(2, 3, 4)).numpy(), rtol=1e-6)
    fresh = MedicalNetResNet(arch).eval()
    with torch.no_grad():
        assert not np.allclose(fresh(extractor.prepare(vols)).numpy(), want, atol=1e-4)
    has_downsample = any("downsample" in k for k in source.state_dict())
    assert has_downsample == (arch == "resnet10")  # shortcut B (1x1x1 conv) vs A (no weights)


def test_state_dict_wrong_checksum_is_refused_before_torch_loads_it(tmp_path, monkeypatch):
    path = tmp_path / "resnet_10_23dataset.pth"
    torch.save({"state_dict": MedicalNetResNet("resnet10").state_dict()}, path)
    digest = sha256sum(path)

    def never(*args, **kwargs):
        raise AssertionError("torch.load opened weights whose checksum did not match")

    monkeypatch.setattr(torch, "load", never)
    wrong = "1" * 64
    with pytest.raises(ChecksumError) as err:
        TorchFeatures(MedicalNetResNet("resnet10"), path, wrong)
    msg = str(err.value)
    assert str(path) in msg and wrong in msg and digest in msg
    with pytest.raises(ChecksumError) as err:
        build_extractor({"fid3d": {"state_dict": str(path), "sha256": wrong, "arch": "resnet10"}}, "fid3d")
    assert str(path) in str(err.value) and wrong in str(err.value) and digest in str(err.value)


def test_state_dict_that_does_not_fit_is_refused(tmp_path):
    state = {f"module.{k}": v for k, v in MedicalNetResNet("resnet10").state_dict().items()}
    del state["module.layer4.0.conv2.weight"]
    path = tmp_path / "partial.pth"
    torch.save(state, path)
    with pytest.raises(ConfigError, match="layer4.0.conv2.weight"):
        TorchFeatures(MedicalNetResNet("resnet10"), path, sha256sum(path))
    with pytest.raises(ChecksumError):
        TorchFeatures(MedicalNetResNet("resnet10"), path, "1" * 64)


# ---------------------------------------------------------------------------- slices and FID of volumes


def index_volume(shape=(6, 8, 10)) -> np.ndarray:
    """v[x, y, z] = 10000 x + 100 y + z: every voxel says where it is."""
    x, y, z = np.indices(shape)
    return (10000 * x + 100 * y + z).astype(np.float64)


@pytest.mark.parametrize("axis,name", [(0, "sagittal"), (1, "coronal"), (2, "axial")])
def test_middle_and_fixed_slices_pick_the_right_planes(axis, name):
    vol = index_volume()
    decode = [lambda v: v // 10000, lambda v: (v // 100) % 100, lambda v: v % 100][axis]
    extent = vol.shape[axis]
    for key in (axis, name):
        plane = middle_slices(vol, key)
        assert plane.shape == tuple(s for i, s in enumerate(vol.shape) if i != axis)
        assert np.all(decode(plane) == extent // 2)
    fractions = (0.0, 0.35, 0.5, 0.65, 1.0)
    planes = fixed_slices(vol, axis, fractions)
    for f, plane in zip(fractions, planes, strict=True):
        assert np.all(decode(plane) == min(int(f * extent), extent - 1))
    stack = np.stack([vol, vol + 1])  # [N, X, Y, Z]: the plane of every volume
    both = middle_slices(stack, axis)
    assert both.shape[0] == 2
    np.testing.assert_array_equal(both[1] - both[0], 1)
    np.testing.assert_array_equal(both[0], middle_slices(vol, axis))


class Linear2d(nn.Module):
    spatial_dims = 2

    def __init__(self):
        super().__init__()
        torch.manual_seed(9)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x):
        return self.conv(x)


@pytest.fixture
def torch2d(tmp_path):
    path = tmp_path / "linear2d.pt"
    torch.save(Linear2d().state_dict(), path)
    return TorchFeatures(Linear2d(), path, sha256sum(path), input_size=8)


def brains(n: int, shift: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(rng.uniform(0.2, 0.6, size=(n, 8, 10, 6)) + shift, 0, 1).astype(np.float32)


def test_fid_2d_middle_slices_and_positions(torch2d):
    real, synth = brains(12, 0.0, 10), brains(12, 0.2, 11)
    same = fid_2d(real, real, torch2d)
    assert set(same) == {"axial", "coronal", "sagittal"}
    assert all(abs(v) < 1e-6 for v in same.values())
    middle = fid_2d(real, synth, torch2d)
    for ax, name in ((0, "sagittal"), (1, "coronal"), (2, "axial")):
        want = fid_from_features(torch2d(middle_slices(real, ax)), torch2d(middle_slices(synth, ax)))
        assert middle[name] == pytest.approx(want, rel=1e-9) and middle[name] > 0
    fractions = (0.25, 0.5, 0.75)
    averaged = fid_2d(real, synth, torch2d, axes=("coronal",), positions=fractions)
    per_position = [
        fid_from_features(torch2d(r), torch2d(s))
        for r, s in zip(fixed_slices(real, 1, fractions), fixed_slices(synth, 1, fractions), strict=True)
    ]
    assert list(averaged) == ["coronal"]
    assert averaged["coronal"] == pytest.approx(np.mean(per_position), rel=1e-9)
    assert len({round(v, 6) for v in per_position}) == 3  # the positions really differ
    with pytest.raises(ValueError, match="3D"):
        fid_3d(real, synth, torch2d)


def test_fid_3d_is_zero_for_the_same_set_and_positive_otherwise(onnx3d):
    extractor = OnnxFeatures(*onnx3d, threads=1)
    real = brains(10, 0.0, 12)
    assert abs(fid_3d(real, real, extractor)) < 1e-6
    assert fid_3d(real, brains(10, 0.0, 13) ** 3, extractor) > 1e-3
    with pytest.raises(ValueError, match="2D"):
        fid_2d(real, real, extractor)


# ---------------------------------------------------------------------------- configuration and columns


def test_no_weights_configured_says_so_in_every_column():
    config = {"fid2d": {"onnx": None, "sha256": None}, "fid3d": {"state_dict": None, "arch": "resnet10"}}
    assert build_extractor(config, "fid2d") is None
    assert build_extractor(config, "fid3d") is None
    assert build_extractor({"fid": config}, "fid3d") is None
    assert build_extractor({}, "fid2d") is None
    real = brains(4, 0.0, 14)
    columns = fid_columns(real, real, None, None)
    assert list(columns) == list(FID_COLUMNS)
    assert all(value == NO_WEIGHTS == "no weights configured" for value in columns.values())


def test_configured_2d_network_fills_its_columns_only(onnx2d):
    path, digest = onnx2d
    config = {"fid2d": {"onnx": str(path), "sha256": digest, "output_name": "features", "threads": 1}}
    extractor = build_extractor(config, "fid2d")
    assert isinstance(extractor, OnnxFeatures)
    real, synth = brains(6, 0.0, 15), brains(6, 0.3, 16)
    columns = fid_columns(real, synth, extractor, build_extractor(config, "fid3d"))
    assert columns["fid_3d"] == NO_WEIGHTS
    for name in ("axial", "coronal", "sagittal", "slices"):
        assert isinstance(columns[f"fid_{name}"], float) and columns[f"fid_{name}"] > 0


def test_rows_with_too_few_images_say_which_fid_a_network_could_have_measured(onnx2d):
    path, digest = onnx2d
    extractor = build_extractor(
        {"fid2d": {"onnx": str(path), "sha256": digest, "output_name": "features"}}, "fid2d"
    )
    assert all(v == NO_WEIGHTS for v in unmeasured_fid_columns(None, None).values())
    columns = unmeasured_fid_columns(extractor, None)
    assert columns["fid_3d"] == NO_WEIGHTS
    assert all(np.isnan(columns[c]) for c in FID_COLUMNS if c != "fid_3d")


def test_configuration_errors_are_named():
    with pytest.raises(ConfigError, match="both"):
        FeatureConfig.from_config({"fid3d": {"onnx": "a.onnx", "state_dict": "b.pth"}}, "fid3d")
    with pytest.raises(ConfigError, match="sha265"):
        FeatureConfig.from_config({"fid2d": {"onnx": "a.onnx", "sha265": "x"}}, "fid2d")
    with pytest.raises(ConfigError, match="arch"):
        MedicalNetResNet("resnet50")
    with pytest.raises(ConfigError, match="fid2d"):
        FeatureConfig.from_config({"fid2d": {"state_dict": "b.pth"}}, "fid2d")
