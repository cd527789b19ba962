from pathlib import Path

from morphgen.preprocess.derivatives import write_dataset_description
from morphgen.workflow import logged

with logged(snakemake):
    source = str(Path(snakemake.params.source).parent)
    write_dataset_description(
        snakemake.output.description, source, snakemake.params.space, snakemake.params.preprocessing
    )
