from morphgen.preprocess import preprocess_subject
from morphgen.space import Grid
from morphgen.workflow import logged

with logged(snakemake):
    out = snakemake.output
    preprocess_subject(
        snakemake.wildcards.subject,
        snakemake.input.t1,
        Grid.from_config(snakemake.params.space),
        snakemake.params.preprocessing,
        out.image,
        out.mask,
        out.qc_png,
        out.qc_tsv,
        threads=snakemake.threads,
    )
