from pathlib import Path

from morphgen.report.figures import covariate_sweep
from morphgen.workflow import logged

with logged(snakemake):
    covariate_sweep(
        snakemake.input.table,
        Path(snakemake.input.table).parent,
        snakemake.output.figure,
        title=f"prior {snakemake.wildcards.prior}: samples asked for one covariate at a time",
    )
