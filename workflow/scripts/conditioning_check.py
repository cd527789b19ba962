from morphgen.models.covariates import covariate_columns
from morphgen.report.figures import conditioning_scatter
from morphgen.report.tables import conditioning_summary, generated_conditions, pooled
from morphgen.tsv import read_tsv
from morphgen.workflow import logged

with logged(snakemake):
    subpops, inputs = snakemake.params.subpops, snakemake.input
    sources = {
        "generated": {
            s: (generated_conditions(read_tsv(scores)), read_tsv(volumes))
            for s, scores, volumes in zip(subpops, inputs.scores, inputs.synthetic, strict=True)
        }
    }
    if inputs.requests:
        sources["requested"] = {
            prior: (read_tsv(asked), read_tsv(volumes))
            for prior, asked, volumes in zip(
                snakemake.params.priors, inputs.requests, inputs.conditioned, strict=True
            )
        }
    columns = covariate_columns(snakemake.params.conditioning)
    conditioning_summary(sources, columns, snakemake.output.table)
    conditioning_scatter(
        {source: pooled(groups) for source, groups in sources.items()}, columns, snakemake.output.figure
    )
