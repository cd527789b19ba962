"""Image-fidelity metrics (bMMD², pairwise MS-SSIM) and group statistics (t-tests, Cohen's d, Bonferroni)."""

from morphgen.metrics.fidelity import (
    bmmd2,
    mmd2_linear,
    pairwise_msssim,
    real_baseline_bmmd2,
    stack_volumes,
)
from morphgen.metrics.stats import bonferroni_threshold, cohen_d, compare_groups

__all__ = [
    "bmmd2",
    "bonferroni_threshold",
    "cohen_d",
    "compare_groups",
    "mmd2_linear",
    "pairwise_msssim",
    "real_baseline_bmmd2",
    "stack_volumes",
]
