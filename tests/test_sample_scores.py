"""The sample grid labels each kept sample with its own score: scores.tsv is in draw order, files in rank
order."""

from __future__ import annotations

import pandas as pd
import pytest

from morphgen.report.figures import kept_scores


def test_each_sample_file_gets_its_own_score():
    scores = pd.DataFrame(
        {
            "index": [0, 1, 2, 3],
            "score": [0.2, 0.9, 0.1, 0.5],
            "kept": [True, True, False, True],
            "file": ["sample-0002.nii.gz", "sample-0000.nii.gz", "", "sample-0001.nii.gz"],
        }
    )
    samples = [f"/r/samples/a/sample-{i:04d}.nii.gz" for i in range(3)]
    assert kept_scores(scores, samples) == [0.9, 0.5, 0.2]  # best first, as the files are ranked
    with pytest.raises(ValueError, match="no kept row for sample-0003.nii.gz"):
        kept_scores(scores, [*samples, "/r/samples/a/sample-0003.nii.gz"])
