"""Constant token positions (engine.positions): left out of what a prior learns, put back where it samples."""

from __future__ import annotations

import numpy as np
import pytest

from morphgen.models.engine.positions import ConstantPositions

TOKENS = np.array(
    [
        [5, 1, 7, 2, 9, 3],
        [5, 4, 7, 2, 9, 0],
        [5, 6, 7, 2, 9, 3],
    ]
)  # positions 1 and 5 vary; 0, 2, 3 and 4 hold 5, 7, 2 and 9


def test_the_varying_positions_are_learnt_and_the_others_put_back_exactly():
    positions = ConstantPositions.of(TOKENS)
    assert positions.varying.tolist() == [False, True, False, False, False, True]
    assert (positions.length, positions.kept) == (6, 2)
    reduced = positions.reduce(TOKENS)
    assert reduced.tolist() == [[1, 3], [4, 0], [6, 3]]
    assert np.array_equal(positions.expand(reduced), TOKENS)
    assert positions.expand(np.array([[8, 8]])).tolist() == [[5, 8, 7, 2, 9, 8]]
    assert positions.mismatch(TOKENS) == 0.0
    held_out = np.array([[5, 0, 7, 1, 9, 0], [5, 0, 7, 2, 9, 0]])  # one of 8 constant pairs differs
    assert positions.mismatch(held_out) == pytest.approx(1 / 8)


def test_constant_positions_are_added_back_to_a_multiple_and_one_is_always_kept():
    padded = ConstantPositions.of(TOKENS, multiple=3)
    assert padded.kept == 3 and padded.varying.tolist() == [True, True, False, False, False, True]
    assert np.array_equal(padded.expand(padded.reduce(TOKENS)), TOKENS)
    same = ConstantPositions.of(np.repeat(TOKENS[:1], 4, axis=0))  # a collapsed code: one sequence
    assert same.kept == 1 and np.array_equal(same.expand(same.reduce(TOKENS[:1])), TOKENS[:1])


def test_a_prior_file_keeps_its_positions_and_one_without_them_learnt_every_position():
    positions = ConstantPositions.of(TOKENS)
    again = ConstantPositions.from_state(positions.state(), 6)
    assert np.array_equal(again.varying, positions.varying) and np.array_equal(again.values, positions.values)
    assert ConstantPositions.from_state(None, 6).kept == 6
    with pytest.raises(ValueError, match="of 6 tokens, the autoencoder's 8"):
        ConstantPositions.from_state(positions.state(), 8)
    with pytest.raises(ValueError, match="the prior learnt 2"):
        positions.expand(np.zeros((1, 3), dtype=np.int64))
