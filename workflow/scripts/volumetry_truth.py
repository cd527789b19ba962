from morphgen.report.figures import truth_scatter
from morphgen.report.tables import truth_check, with_regions
from morphgen.tsv import read_tsv, write_tsv
from morphgen.workflow import logged

with logged(snakemake):
    participants = read_tsv(snakemake.input.sheet)
    measured = with_regions(read_tsv(snakemake.input.measured), read_tsv(snakemake.input.regions))
    write_tsv(truth_check(participants, measured), snakemake.output.table)
    truth_scatter(participants, measured, snakemake.output.figure)
