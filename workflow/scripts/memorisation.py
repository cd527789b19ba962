from morphgen import stages
from morphgen.workflow import logged

with logged(snakemake):
    stages.memorisation(
        snakemake.input.subjects,
        list(snakemake.input.real),
        list(snakemake.input.synthetic),
        snakemake.params.subpops,
        snakemake.params.memorisation,
        snakemake.output.table,
        snakemake.output.summary,
    )
