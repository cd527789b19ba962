"""sha256 verification of weight files: matches pass, anything else is refused, saying why."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from morphgen.errors import ChecksumError, ConfigError
from morphgen.weights import sha256sum, verify_sha256

WHAT = "test segmentation model (segmentation.onnx_model)"


@pytest.fixture
def weights_file(tmp_path):
    # larger than one read chunk (1 MiB), so chunked hashing is exercised
    data = np.random.default_rng(0).integers(0, 256, size=(1 << 20) * 2 + 123, dtype=np.uint8).tobytes()
    path = tmp_path / "model.onnx"
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest()


def test_sha256sum_matches_hashlib(weights_file):
    path, digest = weights_file
    assert sha256sum(path) == digest


def test_matching_digest_passes_in_any_spelling(weights_file):
    path, digest = weights_file
    assert verify_sha256(path, digest, WHAT) == digest
    assert verify_sha256(path, f"sha256:{digest.upper()}  ", WHAT) == digest


def test_mismatch_names_file_digests_and_purpose(weights_file):
    path, digest = weights_file
    wrong = "0" * 64
    with pytest.raises(ChecksumError) as err:
        verify_sha256(path, wrong, WHAT)
    msg = str(err.value)
    assert str(path) in msg and wrong in msg and digest in msg and WHAT in msg


def test_missing_checksum_is_refused_unless_allowed(weights_file):
    path, digest = weights_file
    with pytest.raises(ChecksumError) as err:
        verify_sha256(path, None, WHAT)
    msg = str(err.value)
    assert str(path) in msg and "unverified" in msg and digest in msg and WHAT in msg
    assert verify_sha256(path, None, WHAT, allow_unverified=True) == digest


def test_malformed_checksum_is_refused(weights_file):
    path, digest = weights_file
    with pytest.raises(ChecksumError, match="64 hex digits"):
        verify_sha256(path, digest[:-1], WHAT)


def test_missing_file_is_a_config_error(tmp_path):
    path = tmp_path / "absent.onnx"
    with pytest.raises(ConfigError) as err:
        verify_sha256(path, "0" * 64, WHAT)
    assert str(path) in str(err.value) and WHAT in str(err.value)
