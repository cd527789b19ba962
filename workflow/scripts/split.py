from morphgen import stages
from morphgen.workflow import logged

with logged(snakemake):
    stages.split(
        snakemake.params.input,
        snakemake.params.split,
        snakemake.params.subpopulations,
        snakemake.input.sheet,
        snakemake.input.qc,
        snakemake.output.subjects,
        list(snakemake.output.subpops),
    )
