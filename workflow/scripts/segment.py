from morphgen import stages
from morphgen.nifti import atomic_directory
from morphgen.segmentation import make_segmenter, segment_files
from morphgen.workflow import logged

with logged(snakemake):
    masks = stages.image_map(snakemake.input.masks) if "masks" in snakemake.input.keys() else None
    with atomic_directory(snakemake.output.labels) as labels:
        segment_files(
            stages.image_map(snakemake.input.images),
            make_segmenter(snakemake.params.segmentation),
            snakemake.output.volumes,
            out_label_dir=labels,
            masks=masks,
        )
