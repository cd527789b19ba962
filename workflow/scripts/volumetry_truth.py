from morphgen.report.figures import truth_scatter
from morphgen.report.tables import truth_check, with_regions
from morphgen.report.validity import thresholds_of
from morphgen.tsv import read_tsv, write_tsv
from morphgen.workflow import logged

with logged(snakemake):
    participants = read_tsv(snakemake.input.sheet)
    measured = with_regions(read_tsv(snakemake.input.measured), read_tsv(snakemake.input.regions))
    table = truth_check(participants, measured, thresholds=thresholds_of(snakemake.params.evaluation))
    write_tsv(table, snakemake.output.table)
    verdicts = dict(zip(table["tissue"], table["verdict"], strict=True))
    truth_scatter(participants, measured, snakemake.output.figure, verdicts=verdicts)
