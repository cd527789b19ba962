from morphgen import stages
from morphgen.nifti import atomic_directory
from morphgen.segmentation import make_segmenter, segment_files
from morphgen.segmentation.volumes import reference_intensities, subject_intensities
from morphgen.tsv import read_tsv
from morphgen.workflow import logged

with logged(snakemake) as log:
    images = stages.image_map(snakemake.input.images)
    if "subjects" in snakemake.params.keys():  # the batch's subjects among a folder of images
        images = stages.pick(images, snakemake.params.subjects, str(snakemake.input.images))
    masks = stages.image_map(snakemake.input.masks) if "masks" in snakemake.input.keys() else None
    segmenter = make_segmenter(snakemake.params.segmentation)
    own_subjects = None
    reference = str(snakemake.input.reference) if snakemake.input.get("reference") else None
    if reference and snakemake.params.get("paired"):  # reconstructions: each its subject's intensities
        own_subjects = subject_intensities(read_tsv(reference), reference)
        log.info("each reconstruction unmixed with its subject's tissue intensities (%s)", reference)
    elif reference:  # samples: the real cohort's tissue intensities
        intensities = reference_intensities(read_tsv(reference), reference)
        log.info("tissue intensities of %s: %s", reference, intensities)
        segmenter = segmenter.with_reference(intensities)
    with atomic_directory(snakemake.output.labels) as labels:
        segment_files(
            images,
            segmenter,
            snakemake.output.volumes,
            out_label_dir=labels,
            masks=masks,
            intensities=own_subjects,
        )
