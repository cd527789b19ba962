from morphgen.models.covariates import ID, covariate_columns
from morphgen.report.tables import covariate_effects, generated_conditions, pooled
from morphgen.tsv import read_tsv
from morphgen.workflow import logged

with logged(snakemake):
    subpops, inputs = snakemake.params.subpops, snakemake.input
    generated = {
        s: (generated_conditions(read_tsv(scores)), read_tsv(volumes))
        for s, scores, volumes in zip(subpops, inputs.scores, inputs.synthetic, strict=True)
    }
    sources = {"generated": pooled(generated)}
    if inputs.requests:
        requested = {
            prior: (read_tsv(asked), read_tsv(volumes))
            for prior, asked, volumes in zip(
                snakemake.params.priors, inputs.requests, inputs.conditioned, strict=True
            )
        }
        sources["requested"] = pooled(requested)
    columns = covariate_columns(snakemake.params.conditioning)
    real = read_tsv(inputs.subjects).merge(
        read_tsv(inputs.real), on=ID, how="inner", suffixes=("", "_volumes")
    )
    for name, column in columns.items():
        if column in real.columns:
            real[name] = real[column]
    covariate_effects(sources, real, list(columns), out_tsv=snakemake.output.table)
