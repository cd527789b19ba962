# Per-subject preprocessing to the working grid in MNI space, and the QC table.


rule preprocess:
    """RAS+, N4, skull stripping, affine to MNI152, resampling to the grid, intensities to [0, 1]; QC PNG."""
    input:
        t1=raw_t1,
    output:
        image=f"{R}/preprocessed/{{subject}}/{{subject}}_space-MNI152_T1w.nii.gz",
        mask=f"{R}/preprocessed/{{subject}}/{{subject}}_space-MNI152_desc-brain_mask.nii.gz",
        qc_png=f"{R}/preprocessed/{{subject}}/{{subject}}_qc.png",
        qc_tsv=f"{R}/preprocessed/{{subject}}/{{subject}}_qc.tsv",
    params:
        preprocessing=config["preprocessing"],
        space=config["space"],
    log:
        log_for("preprocess", "subject"),
    benchmark:
        benchmark_for("preprocess", "subject")
    group:
        "preprocess"
    threads: 1
    resources:
        mem_mb=3000,
        runtime=20,
    conda:
        ENV
    script:
        "../scripts/preprocess.py"


rule qc_table:
    """One row per subject: input checks and preprocessing QC together, flags included."""
    input:
        inputs=rules.check_inputs.output.qc,
        rows=lambda wc: [
            f"{R}/preprocessed/{s}/{s}_qc.tsv" for s in subject_ids()
        ],
    output:
        table=f"{R}/qc/preprocessing.tsv",
    log:
        log_for("qc_table"),
    benchmark:
        benchmark_for("qc_table")
    resources:
        mem_mb=1000,
        runtime=10,
    conda:
        ENV
    script:
        "../scripts/qc_table.py"
