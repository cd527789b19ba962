from morphgen.report.figures import kept_scores, sample_grid
from morphgen.tsv import read_tsv
from morphgen.workflow import logged

with logged(snakemake):
    samples = list(snakemake.input.samples)
    sample_grid(
        samples,
        snakemake.output.figure,
        title=f"{snakemake.wildcards.subpop}: kept synthetic samples",
        scores=kept_scores(read_tsv(snakemake.input.scores), samples),
    )
