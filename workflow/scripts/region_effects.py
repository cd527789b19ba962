from morphgen import stages
from morphgen.workflow import logged

with logged(snakemake):
    stages.region_tables(
        snakemake.input.subjects,
        list(snakemake.input.members),
        snakemake.input.real,
        list(snakemake.input.synthetic),
        snakemake.params.subpopulations,
        snakemake.params.alpha,
        snakemake.output.volumes,
        snakemake.output.effects,
        snakemake.output.agreement,
        snakemake.output.figure,
        reconstruction_tsv=snakemake.input.reconstruction,
        evaluation=snakemake.params.evaluation,
        scores_tsvs=list(snakemake.input.scores),
    )
