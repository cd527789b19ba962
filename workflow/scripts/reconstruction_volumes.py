from morphgen.report.figures import reconstruction_scatter
from morphgen.report.tables import reconstruction_check
from morphgen.report.validity import thresholds_of
from morphgen.tsv import read_tsv, write_tsv
from morphgen.workflow import logged

with logged(snakemake):
    real = read_tsv(snakemake.input.real)
    reconstructed = read_tsv(snakemake.input.reconstructed)
    thresholds = thresholds_of(snakemake.params.evaluation)
    table = reconstruction_check(real, reconstructed, thresholds=thresholds)
    write_tsv(table, snakemake.output.table)
    verdicts = dict(zip(table["tissue"], table["verdict"], strict=True))
    reconstruction_scatter(real, reconstructed, snakemake.output.figure, verdicts=verdicts)
