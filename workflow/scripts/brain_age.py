from morphgen import stages
from morphgen.workflow import logged

with logged(snakemake):
    stages.brain_age(
        snakemake.input.subjects,
        list(snakemake.input.real),
        list(snakemake.input.scores),
        list(snakemake.input.requests),
        snakemake.params.brain_age,
        snakemake.params.seed,
        snakemake.output.table,
    )
