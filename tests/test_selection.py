"""Keeping the best samples of a stream, and resuming a generation from its checkpoint."""

import numpy as np
import pytest
import torch

from morphgen.models.engine.generation import GenerationCheckpoint
from morphgen.models.engine.selection import BestSamples


def _stream(n, seed=0):
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, 5, n).astype(float)  # few values: many ties
    return [(float(s), torch.full((2,), i)) for i, s in enumerate(scores)]


def test_best_samples_are_the_top_scores_with_ties_to_the_earlier():
    stream = _stream(40)
    best = BestSamples(6)
    for score, payload in stream:
        best.add(score, payload)
    scores = np.array([s for s, _ in stream])
    expected = np.argsort(-scores, kind="stable")[:6]
    assert [i for i, _, _ in best.kept()] == expected.tolist()
    assert [int(p[0]) for _, _, p in best.kept()] == expected.tolist()
    assert best.scores == scores.tolist() and best.count == 40


def test_best_samples_through_a_checkpoint_continue_as_if_never_stopped(tmp_path):
    stream = _stream(30, seed=1)
    whole, first = BestSamples(4), BestSamples(4)
    for score, payload in stream:
        whole.add(score, payload)
    for score, payload in stream[:13]:
        first.add(score, payload)
    torch.save(first.state_dict(), tmp_path / "state.pt")
    resumed = BestSamples.from_state_dict(torch.load(tmp_path / "state.pt", weights_only=True))
    for score, payload in stream[13:]:
        resumed.add(score, payload)
    assert resumed.scores == whole.scores
    assert [(i, s, p.tolist()) for i, s, p in resumed.kept()] == [
        (i, s, p.tolist()) for i, s, p in whole.kept()
    ]


def test_keeping_none_still_records_every_score():
    best = BestSamples(0)
    for score, payload in _stream(5):
        best.add(score, payload)
    assert best.kept() == [] and best.count == 5
    assert BestSamples.from_state_dict(best.state_dict()).count == 5
    with pytest.raises(ValueError):
        BestSamples(-1)


def test_a_checkpoint_of_other_settings_is_not_resumed(tmp_path):
    path = tmp_path / "checkpoints/generate.pt"
    best = BestSamples(1)
    best.add(0.5, torch.zeros(2))
    generator = torch.Generator().manual_seed(3)
    GenerationCheckpoint(path, {"n_generate": 10, "prior": "abc"}).save(best, generator)
    expected_draw = torch.rand(4, generator=generator)

    same = torch.Generator().manual_seed(99)
    restored = GenerationCheckpoint(path, {"prior": "abc", "n_generate": 10}).restore(same)
    assert restored.count == 1 and torch.equal(torch.rand(4, generator=same), expected_draw)

    other = GenerationCheckpoint(path, {"n_generate": 10, "prior": "another prior"})
    assert other.restore(torch.Generator()) is None and not path.exists()
    other.finish()
    assert not path.parent.exists()
