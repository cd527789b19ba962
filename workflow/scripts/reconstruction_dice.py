from morphgen.report.tables import reconstruction_dice
from morphgen.segmentation.volumes import label_maps
from morphgen.tsv import write_tsv
from morphgen.workflow import logged

with logged(snakemake) as log:
    reconstructed = label_maps(snakemake.input.reconstructed)
    real = {s: path for s, path in label_maps(snakemake.input.real).items() if s in reconstructed}
    table = reconstruction_dice(real, reconstructed)
    log.info("tissue Dice, mean of %d reconstructions:\n%s", len(reconstructed), table.tail(2).to_string())
    write_tsv(table, snakemake.output.table)
