from pathlib import Path

from morphgen.cohort.demo import DEFAULT_WARP_MM, SITES, make_demo_cohort
from morphgen.workflow import logged

with logged(snakemake):
    demo = snakemake.params.demo
    make_demo_cohort(
        Path(snakemake.output.sheet).parent,
        n_subjects=demo["n_subjects"],
        seed=demo["seed"],
        voxel_size=demo.get("voxel_size", 1.5),
        age_range=tuple(demo.get("age_range", (45, 85))),
        patient_fraction=demo.get("patient_fraction", 0.4),
        warp_mm=demo.get("warp_mm", DEFAULT_WARP_MM),
        sites=tuple(demo.get("sites", SITES)),
        workers=snakemake.threads,
    )
