"""The paper's tables (TSV) and figures (PNG) from the pipeline's metrics and volumes."""

from morphgen.report.figures import (
    loss_curves,
    reconstruction_scatter,
    sample_grid,
    truth_scatter,
    volume_distributions,
)
from morphgen.report.tables import (
    read_members,
    read_tsv,
    reconstruction_check,
    subgroup_effects,
    table1_fidelity,
    table2_volumes,
    truth_check,
    with_regions,
    write_tsv,
)

__all__ = [
    "loss_curves",
    "read_members",
    "read_tsv",
    "reconstruction_check",
    "reconstruction_scatter",
    "sample_grid",
    "subgroup_effects",
    "table1_fidelity",
    "table2_volumes",
    "truth_check",
    "with_regions",
    "truth_scatter",
    "volume_distributions",
    "write_tsv",
]
