from morphgen import stages
from morphgen.workflow import logged

with logged(snakemake):
    stages.volume_tables(
        snakemake.params.subpops,
        list(snakemake.input.members),
        snakemake.input.real,
        list(snakemake.input.synthetic),
        snakemake.params.evaluation["alpha"],
        snakemake.output.table,
        snakemake.output.effects,
        snakemake.output.figure,
        snakemake.params.subpopulations,
        reconstruction_tsv=snakemake.input.reconstruction,
        evaluation=snakemake.params.evaluation,
    )
