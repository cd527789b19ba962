from morphgen import stages
from morphgen.workflow import logged

with logged(snakemake):
    stages.pretraining_split(
        snakemake.params.input,
        snakemake.params.fraction,
        snakemake.params.seed,
        snakemake.input.sheet,
        snakemake.input.qc,
        snakemake.output.subjects,
    )
