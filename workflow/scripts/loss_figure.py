from pathlib import Path

from morphgen.report.figures import loss_curves, prior_loss_curves
from morphgen.workflow import logged

with logged(snakemake):
    loss_curves(snakemake.input.losses, snakemake.output.figure, title="Autoencoder training")
    priors = {Path(p).parent.name: p for p in snakemake.input.priors}
    prior_loss_curves(priors, snakemake.output.prior_figure, title="Prior training")
