from morphgen.report.figures import loss_curves
from morphgen.workflow import logged

with logged(snakemake):
    loss_curves(snakemake.input.losses, snakemake.output.figure, title="Autoencoder training")
