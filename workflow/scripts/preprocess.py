from morphgen import stages
from morphgen.workflow import logged

with logged(snakemake):
    out = snakemake.output
    stages.preprocess(
        snakemake.wildcards.subject,
        snakemake.input.t1,
        snakemake.params.space,
        snakemake.params.preprocessing,
        snakemake.params.on_error,
        {"out_image": out.image, "out_mask": out.mask, "out_qc_png": out.qc_png, "out_qc_tsv": out.qc_tsv},
        threads=snakemake.threads,
    )
