from pathlib import Path

from morphgen import stages
from morphgen.metrics.fid import DEFAULT_FRACTIONS, build_extractor
from morphgen.report.tables import table1_fidelity
from morphgen.workflow import logged

with logged(snakemake):
    ev = snakemake.params.evaluation
    real, synthetic = stages.fidelity_inputs(
        snakemake.params.subpops,
        list(snakemake.input.members),
        list(snakemake.input.real),
        list(snakemake.input.synthetic),
    )
    table1_fidelity(
        real,
        synthetic,
        batch_size=ev["mmd_batch_size"],
        n_pairs=ev["msssim_pairs"],
        kernel_size=ev["msssim_kernel"],
        seed=0,
        extractor_2d=build_extractor(ev.get("fid") or {}, "fid2d"),
        extractor_3d=build_extractor(ev.get("fid") or {}, "fid3d"),
        fid_positions=(ev.get("fid") or {}).get("positions", DEFAULT_FRACTIONS),
        four_g_r=ev.get("four_g_r_ssim", True),
        out_tsv=Path(snakemake.output.table),
    )
