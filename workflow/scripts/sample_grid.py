from morphgen.report.figures import sample_grid
from morphgen.tsv import read_tsv
from morphgen.workflow import logged

with logged(snakemake):
    scores = read_tsv(snakemake.input.scores)
    kept = scores[scores["kept"].astype(bool)]
    sample_grid(
        list(snakemake.input.samples),
        snakemake.output.figure,
        title=f"{snakemake.wildcards.subpop}: kept synthetic samples",
        scores=list(kept["score"]),
    )
