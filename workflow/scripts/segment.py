from morphgen import stages
from morphgen.nifti import atomic_directory
from morphgen.segmentation import make_segmenter, segment_files
from morphgen.workflow import logged

with logged(snakemake):
    images = stages.image_map(snakemake.input.images)
    if "subjects" in snakemake.params.keys():  # the batch's subjects among a folder of images
        images = stages.pick(images, snakemake.params.subjects, str(snakemake.input.images))
    masks = stages.image_map(snakemake.input.masks) if "masks" in snakemake.input.keys() else None
    with atomic_directory(snakemake.output.labels) as labels:
        segment_files(
            images,
            make_segmenter(snakemake.params.segmentation),
            snakemake.output.volumes,
            out_label_dir=labels,
            masks=masks,
        )
