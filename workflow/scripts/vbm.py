from morphgen import stages
from morphgen.workflow import logged

with logged(snakemake):
    stages.vbm(
        list(snakemake.input.members),
        snakemake.input.real,
        list(snakemake.input.synthetic),
        snakemake.params.subpopulations,
        snakemake.params.space,
        snakemake.params.vbm,
        snakemake.output.maps,
        snakemake.output.table,
        snakemake.output.figures,
    )
