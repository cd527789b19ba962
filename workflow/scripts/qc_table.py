from morphgen.preprocess import collect_qc
from morphgen.tsv import read_tsv, write_tsv
from morphgen.workflow import logged

with logged(snakemake):
    rows = collect_qc(list(snakemake.input.rows))
    inputs = read_tsv(snakemake.input.inputs)
    write_tsv(inputs.merge(rows, on="participant_id", how="left"), snakemake.output.table)
