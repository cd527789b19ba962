# Two-dataset training (paper §3.2): the autoencoder learns from a large cohort A (UK Biobank in the paper),
# then is fine-tuned on this cohort with early stopping (train_autoencoder). Active with pretraining.enabled.
# Cohort A goes through the same input checks and preprocessing as the main cohort, under results/pretraining.


use rule demo_cohort as pretraining_demo_cohort with:
    output:
        sheet=f"{PT}/demo_cohort/participants.tsv",
        images=expand(
            f"{PT}/demo_cohort/{{subject}}/anat/{{subject}}_T1w.nii.gz", subject=PT_DEMO_IDS
        ),
    params:
        demo=PRETRAINING.get("demo", {}),
    log:
        log_for("pretraining_demo_cohort"),
    benchmark:
        benchmark_for("pretraining_demo_cohort")


checkpoint pretraining_check_inputs:
    """Cohort A's input checks (a checkpoint of its own: `use rule` does not carry checkpoint status)."""
    input:
        sheet=sheet_of(PRETRAINING.get("input", config["input"]), PT),
    output:
        qc=f"{PT}/qc/inputs.tsv",
    params:
        input=PRETRAINING.get("input", config["input"]),
        subpopulations={},
    log:
        log_for("pretraining_check_inputs"),
    benchmark:
        benchmark_for("pretraining_check_inputs")
    resources:
        mem_mb=2000,
        runtime=60,
    conda:
        ENV
    script:
        "../scripts/check_inputs.py"


checkpoint pretraining_split:
    """Subjects of cohort A that passed the QC gate, with a seeded validation fraction for its validation loss."""
    input:
        qc=f"{PT}/qc/preprocessing.tsv",
        sheet=sheet_of(PRETRAINING.get("input", config["input"]), PT),
    output:
        subjects=f"{PT}/split/subjects.tsv",
    params:
        input=PRETRAINING.get("input", config["input"]),
        fraction=PRETRAINING.get("validation_fraction", 0.1),
        seed=config["split"]["seed"],
    log:
        log_for("pretraining_split"),
    benchmark:
        benchmark_for("pretraining_split")
    resources:
        mem_mb=1000,
        runtime=10,
    conda:
        ENV
    script:
        "../scripts/pretraining_split.py"


use rule preprocess_subject as preprocess_pretraining with:
    input:
        t1=pretraining_raw_t1,
    output:
        image=PT_PREPROCESSED["image"],
        mask=PT_PREPROCESSED["mask"],
        qc_png=PT_PREPROCESSED["qc_png"],
        qc_tsv=PT_PREPROCESSED["qc_tsv"],
    params:
        preprocessing=config["preprocessing"],
        space=config["space"],
        on_error=PRETRAINING.get("input", config["input"])["on_error"],
    log:
        log_for("preprocess_pretraining", "subject"),
    benchmark:
        benchmark_for("preprocess_pretraining", "subject")


use rule qc_table as pretraining_qc_table with:
    input:
        inputs=f"{PT}/qc/inputs.tsv",
        rows=lambda wc: [
            PT_PREPROCESSED["qc_tsv"].format(subject=s) for s in checked_ids(pretraining=True)
        ],
    output:
        table=f"{PT}/qc/preprocessing.tsv",
    log:
        log_for("pretraining_qc_table"),
    benchmark:
        benchmark_for("pretraining_qc_table")


use rule train_autoencoder as pretrain_autoencoder with:
    input:
        train=pretraining_images("train"),
        val=pretraining_images("val"),
        pretrained=[],
    output:
        model=f"{R}/models/autoencoder_pretrained/model.pt",
        losses=f"{R}/models/autoencoder_pretrained/loss.tsv",
    params:
        model=MODEL["autoencoder"],
        family=MODEL["family"],
        seed=MODEL["seed"],
        finetune=None,
        shipped_sha256=None,
    log:
        log_for("pretrain_autoencoder"),
    benchmark:
        benchmark_for("pretrain_autoencoder")
