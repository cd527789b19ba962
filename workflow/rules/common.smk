import math
from pathlib import Path

import pandas as pd
from snakemake.utils import validate

from morphgen.cohort.starter import check_sheet_against_subpopulations
from morphgen.errors import ConfigError
from morphgen.models.catalogue import check_family_config, check_family_sections
from morphgen.models.covariates import covariate_columns, measured_covariates, read_requests, request_ids
from morphgen.preprocess.derivatives import preprocessed_patterns
from morphgen.segmentation.base import generated_intensities
from morphgen.workflow import batches, command_line_config, replace_sections

CONFIG_SOURCES = command_line_config(
    workflow.config_settings.configfiles, workflow.config_settings.config
)
replace_sections(config, CONFIG_SOURCES)
# the family's own sections, by the schema.yaml in its folder: an overlay for another family inherits the
# default family's keys (dropped here); a key the family does not read, written for it, is refused
config["model"] = check_family_sections(config["model"], CONFIG_SOURCES)
validate(config, schema="../schemas/config.schema.yaml")
# a sheet without the sub-populations' covariates fails now, naming the key, not after preprocessing; once,
# in the main process (each job reads the Snakefile again, with the config already checked)
if workflow.is_main_process:
    check_sheet_against_subpopulations(config["input"], config["subpopulations"])

R = config["results"]
ENV = "../../envs/morphgen.yaml"
SUBPOPS = [
    f"{key}-{name}" for key, entry in config["subpopulations"].items() for name in entry["names"]
]
SAMPLING = config["model"]["sampling"]
N_KEEP = SAMPLING["n_keep"]
N_GENERATE = SAMPLING["n_keep"] * SAMPLING["oversample"]
SAMPLE_IDS = [f"sample-{i:04d}" for i in range(N_KEEP)]
IS_DEMO = config["input"]["source"] == "demo"
MODEL = config["model"]
# GPUs of one autoencoder training job: torchrun runs one process per GPU inside that job
TRAINING_GPUS = MODEL.get("distributed", {}).get("gpus", 1)
SYNTH_VOLUMES = expand(f"{R}/volumes/synthetic/{{subpop}}.tsv", subpop=SUBPOPS)
MEMBER_LISTS = expand(f"{R}/subpopulations/{{subpop}}.tsv", subpop=SUBPOPS)
# preprocessing outputs of one subject, BIDS-derivatives names with a {subject} placeholder
PREPROCESSED = preprocessed_patterns(R, config["space"])
DEMO_IDS = [f"sub-{i + 1:03d}" for i in range(config.get("demo", {}).get("n_subjects", 0))]
# two-dataset training (paper §3.2): the autoencoder is trained on cohort A, then fine-tuned on this cohort
PRETRAINING = config.get("pretraining") or {"enabled": False}
PRETRAIN = bool(PRETRAINING.get("enabled", False))
PT = f"{R}/pretraining"
# a shipped pre-trained autoencoder (pretraining.checkpoint) takes the place of pre-training on cohort A
SHIPPED_AUTOENCODER = PRETRAINING.get("checkpoint") if PRETRAIN else None
if SHIPPED_AUTOENCODER and not Path(SHIPPED_AUTOENCODER["path"]).exists():
    raise ConfigError(
        f"pretraining.checkpoint.path: {SHIPPED_AUTOENCODER['path']} does not exist. Train it first (the "
        "demo's: make demo-pretrain), or set pretraining.checkpoint: null to pre-train on cohort A in this run"
    )
PRETRAINED_MODEL = (
    SHIPPED_AUTOENCODER["path"]
    if SHIPPED_AUTOENCODER
    else f"{R}/models/autoencoder_pretrained/model.pt"
)
PT_PREPROCESSED = preprocessed_patterns(PT, config["space"])
PT_DEMO_IDS = [
    f"sub-{i + 1:03d}" for i in range(PRETRAINING.get("demo", {}).get("n_subjects", 0))
]


# what the workflow asks of the family (morphgen.models.catalogue: known without importing torch)
FAMILY = check_family_config(MODEL)
# the settings of the family's prior: a rerun trigger of train_prior
PRIOR_SETTINGS = MODEL[FAMILY.prior_section]
# a family whose prior is conditioned on covariates (model.conditioning) needs the real volumes measured first
CONDITIONING = MODEL["conditioning"] if FAMILY.conditioned else {}
# a conditioned prior is trained once on the whole cohort (seed 004) and each sub-population is sampled through
# its subjects' covariates, unless the family's prior settings ask for one prior per sub-population
COHORT_PRIOR = "cohort"
SHARED_PRIOR = FAMILY.shares_prior(MODEL)
PRIORS = [COHORT_PRIOR] if SHARED_PRIOR else SUBPOPS
# segmentation and SyN run in jobs of this many images, so that no job outgrows a cluster's time limit
IMAGES_PER_JOB = config["evaluation"].get("images_per_job", 50)
SAMPLE_BATCHES = batches(SAMPLE_IDS, IMAGES_PER_JOB)
# conditioned sampling: one sample per row of a requests table and per point of a grid, from each prior
# the conditioned covariates that segmentation measures in the samples too (ventricles, brain): the
# conditioning check pairs them; the others (age) only have effects (tables/conditioning_effects.tsv)
MEASURED_CONDITIONS = measured_covariates(covariate_columns(CONDITIONING)) if CONDITIONING else {}
REQUESTS = CONDITIONING.get("requests") or {}
REQUEST_TABLE = REQUESTS.get("table")
REQUEST_GRID = REQUESTS.get("grid")
REQUEST_IDS = (
    request_ids(read_requests(REQUEST_TABLE) if REQUEST_TABLE else None, REQUEST_GRID)
    if CONDITIONING
    else []
)
REQUEST_BATCHES = batches(REQUEST_IDS, IMAGES_PER_JOB)


wildcard_constraints:
    subject=r"[A-Za-z0-9][A-Za-z0-9_.-]*",
    batch=r"\d{4}",
    subpop=r"[A-Za-z0-9]+-[A-Za-z0-9]+",
    prior=rf"[A-Za-z0-9]+-[A-Za-z0-9]+|{COHORT_PRIOR}",


# tables shown as pages of the report (rounded, with units; the TSVs keep full precision):
# page -> (TSV, caption in workflow/report/, subcategory, title); those of this run in REPORT_PAGES
TABLE_PAGES = {
    "qc_preprocessing": (f"{R}/qc/preprocessing.tsv", "qc", "Preprocessing", "QC of every subject"),
    "table1_fidelity": (f"{R}/tables/table1_fidelity.tsv", "table1_fidelity", "Image fidelity", "Table 1: image fidelity"),
    "table2_volumes": (f"{R}/tables/table2_volumes.tsv", "table2_volumes", "Tissue volumes", "Table 2: tissue volumes, real against synthetic"),
    "subgroup_effects": (f"{R}/tables/subgroup_effects.tsv", "subgroup_effects", "Tissue volumes", "Sub-group effects (Cohen's d)"),
    "region_volumes": (f"{R}/tables/region_volumes.tsv", "region_volumes", "Regional anatomy", "Regional volumes, real against synthetic"),
    "region_effects": (f"{R}/tables/region_effects.tsv", "region_effects", "Regional anatomy", "Group, age and sex effects per region"),
    "effect_agreement": (f"{R}/tables/effect_agreement.tsv", "effect_agreement", "Regional anatomy", "Agreement of regional effects"),
    "vbm": (f"{R}/tables/vbm.tsv", "vbm", "VBM", "Grey-matter VBM, real against synthetic"),
    "memorisation": (f"{R}/tables/memorisation.tsv", "memorisation", "Memorisation", "Nearest training image of each kept sample"),
    "memorisation_summary": (f"{R}/tables/memorisation_summary.tsv", "memorisation", "Memorisation", "Memorisation per sub-population"),
    "volumetry_truth": (f"{R}/tables/volumetry_truth.tsv", "truth", "Demo truth", "Measured volumes against the simulated truth"),
    "reconstruction_volumes": (f"{R}/tables/reconstruction_volumes.tsv", "reconstruction_volumes", "Autoencoder", "Volumes of the reconstructions against the real images"),
    "reconstruction_dice": (f"{R}/tables/reconstruction_dice.tsv", "reconstruction_dice", "Autoencoder", "Tissue overlap of the reconstructions with the real images"),
    "reconstruction_fidelity": (f"{R}/tables/reconstruction_fidelity.tsv", "reconstruction_fidelity", "Autoencoder", "Image fidelity of the reconstructions"),
    "reconstruction_vbm": (f"{R}/tables/reconstruction_vbm.tsv", "reconstruction_vbm", "VBM", "Grey-matter VBM, reconstructions against their originals"),
    "conditioning": (f"{R}/tables/conditioning.tsv", "conditioning", "Conditioning", "Asked against measured volumes"),
    "conditioning_effects": (f"{R}/tables/conditioning_effects.tsv", "conditioning_effects", "Conditioning", "Volumes against the covariates asked, samples and real subjects"),
    "brain_age": (f"{R}/tables/brain_age.tsv", "brain_age", "Conditioning", "Brain age of the samples against the age asked"),
    "run_summary": (f"{R}/tables/run_summary.tsv", "families", "Families", "This run's row of the family comparison"),
    "families": (f"{R}/tables/families.tsv", "families", "Families", "Every family run on this cohort, side by side"),
}
# a run's pages: the demo's truth table and the conditioning check exist only in their kinds of run
REPORT_PAGES = {
    page: entry
    for page, entry in TABLE_PAGES.items()
    if (page != "volumetry_truth" or IS_DEMO)
    and (page != "conditioning" or MEASURED_CONDITIONS)
    and (page not in ("conditioning_effects", "brain_age") or CONDITIONING)
}


def log_for(rule_name, *wildcards):
    """Log path of a rule, one file per wildcard combination."""
    tag = "_".join(f"{{{w}}}" for w in wildcards) or rule_name
    return f"{R}/logs/{rule_name}/{tag}.log"


def benchmark_for(rule_name, *wildcards):
    tag = "_".join(f"{{{w}}}" for w in wildcards) or rule_name
    return f"{R}/benchmarks/{rule_name}/{tag}.tsv"


def evaluation_settings(*keys):
    """The keys of config['evaluation'] a job's script reads, as its params, so that it is redone when one
    of them changes and not for any other evaluation setting; "vbm.registration" is one key of a section."""
    picked = {}
    for key in keys:
        section, _, sub = key.partition(".")
        if section not in config["evaluation"]:
            continue
        value = config["evaluation"][section]
        if not sub:
            picked[section] = value
        elif isinstance(value, dict) and sub in value:
            picked.setdefault(section, {})[sub] = value[sub]
    return picked


def subject_sheet():
    """The file that lists the subjects: participants.tsv of the demo or of the BIDS folder, or the sheet."""
    return sheet_of(config["input"], R)


def sheet_of(input_cfg, demo_dir):
    """The file that lists a cohort's subjects; a demo cohort is simulated into ``demo_dir``."""
    if input_cfg["source"] == "demo":
        return f"{demo_dir}/demo_cohort/participants.tsv"
    if input_cfg["source"] == "bids":
        return str(Path(input_cfg["bids_dir"]) / "participants.tsv")
    return input_cfg["sheet"]


def pretraining_table():
    path = checkpoints.pretraining_split.get().output.subjects
    return pd.read_csv(path, sep="\t", dtype={"participant_id": str})


def pretraining_raw_t1(wildcards):
    return checked_table(pretraining=True).set_index("participant_id").loc[wildcards.subject, "path"]


def pretraining_images(split):
    def _inputs(wildcards):
        table = pretraining_table()
        ids = table.loc[table["split"] == split, "participant_id"]
        return [PT_PREPROCESSED["image"].format(subject=s) for s in ids]

    return _inputs


def autoencoder_images(part):
    """Images the autoencoder learns from ("train") and is validated on ("val").

    Without pre-training: the training split, validated on the test split. When fine-tuning, a seeded
    fraction of the training split (or of its part in pretraining.finetune.where) is held out from the
    autoencoder (not from the priors) to stop early.
    """

    def _inputs(wildcards):
        if not PRETRAIN:
            return [preprocessed(s) for s in subject_ids("train" if part == "train" else "test")]
        from morphgen.stages import finetune_subjects, finetune_validation

        finetune = PRETRAINING["finetune"]
        table = subjects_table()
        train = finetune_subjects(table[table["split"] == "train"], finetune.get("where"))
        held = set(finetune_validation(train, finetune["validation_fraction"], config["split"]["seed"]))
        chosen = [s for s in train if (s in held) == (part == "val")]
        return [preprocessed(s) for s in chosen]

    return _inputs


def subjects_table():
    """Usable subjects with split and sub-population membership; known once the split checkpoint ran."""
    path = checkpoints.split.get().output.subjects
    return pd.read_csv(path, sep="\t", dtype={"participant_id": str})


def subject_ids(split=None):
    table = subjects_table()
    if split is not None:
        table = table[table["split"] == split]
    return list(table["participant_id"])


def checked_table(pretraining=False):
    """The input QC table (of cohort A when ``pretraining``); known once its check_inputs checkpoint ran."""
    checked = checkpoints.pretraining_check_inputs if pretraining else checkpoints.check_inputs
    path = checked.get().output.qc
    return pd.read_csv(path, sep="\t", dtype={"participant_id": str, "path": str}, keep_default_na=False)


def checked_ids(pretraining=False):
    """Subjects that passed the input checks: the ones preprocessed."""
    table = checked_table(pretraining)
    return list(table.loc[table["status"] == "ok", "participant_id"])


def raw_t1(wildcards):
    table = checked_table().set_index("participant_id")
    return table.loc[wildcards.subject, "path"]


def preprocessed(subject):
    return PREPROCESSED["image"].format(subject=subject)


def preprocessed_images(split=None):
    def _inputs(wildcards):
        return [preprocessed(s) for s in subject_ids(split)]

    return _inputs


def conditioning_inputs(wildcards):
    """The tables the covariates come from, for a prior conditioned on them; nothing otherwise."""
    if not CONDITIONING:
        return {}
    return {"subjects": f"{R}/split/subjects.tsv", "volumes": f"{R}/volumes/real.tsv"}


def prior_autoencoder(wildcards):
    """The trained autoencoder, for a family whose prior reads it (seed 002's GLM codes its latents again)."""
    if not FAMILY.prior_reads_autoencoder:
        return {}
    return {"autoencoder": f"{R}/models/autoencoder/model.pt"}


def prior_members(wildcards):
    """The subjects a prior learns from (split column: train) and is scored on (test)."""
    if wildcards.prior == COHORT_PRIOR:
        return f"{R}/split/subjects.tsv"
    return f"{R}/subpopulations/{wildcards.prior}.tsv"


def prior_of_subpopulation(wildcards):
    return f"{R}/models/prior/{COHORT_PRIOR if SHARED_PRIOR else wildcards.subpop}/model.pt"


def generation_conditions(wildcards):
    """For a conditioned prior: the tables of the sub-population's subjects' covariates; nothing otherwise."""
    if not CONDITIONING:
        return {}
    return {**conditioning_inputs(wildcards), "members": f"{R}/subpopulations/{wildcards.subpop}.tsv"}


# generated images (samples, reconstructions) are unmixed with the real cohort's tissue intensities
INTENSITY_REFERENCE = [f"{R}/volumes/real.tsv"] if generated_intensities(config) else []


def mask_of(subject):
    return PREPROCESSED["mask"].format(subject=subject)


def subject_batches(split=None):
    """Batch name -> its subjects (all usable subjects, or one split's), known once the split ran."""
    return batches(subject_ids(split), IMAGES_PER_JOB)


def batch_files(pattern, split=None):
    """``pattern`` (with ``{batch}``) for every batch of subjects: what a gathering rule reads."""

    def _inputs(wildcards):
        return [pattern.format(batch=b) for b in subject_batches(split)]

    return _inputs


def batch_subjects(to_path, split=None):
    """``to_path(subject)`` for the subjects of the job's batch."""

    def _inputs(wildcards):
        return [to_path(s) for s in subject_batches(split)[wildcards.batch]]

    return _inputs


def sample_batch(wildcards):
    """The kept samples of one sub-population in the job's batch."""
    return [f"{R}/samples/{wildcards.subpop}/{s}.nii.gz" for s in SAMPLE_BATCHES[wildcards.batch]]


def request_batch(wildcards):
    """The requested samples of one prior in the job's batch."""
    return [f"{R}/conditioned/{wildcards.prior}/{s}.nii.gz" for s in REQUEST_BATCHES[wildcards.batch]]


def all_samples(wildcards):
    return expand(f"{R}/samples/{{subpop}}/{{sample}}.nii.gz", subpop=SUBPOPS, sample=SAMPLE_IDS)


def all_outputs(wildcards):
    outputs = [
        f"{R}/qc/preprocessing.tsv",
        f"{R}/preprocessed/dataset_description.json",
        f"{R}/models/autoencoder/reconstruction.tsv",
        f"{R}/tables/reconstruction_volumes.tsv",
        f"{R}/figures/reconstruction_volumes.png",
        f"{R}/tables/reconstruction_dice.tsv",
        f"{R}/tables/reconstruction_fidelity.tsv",
        f"{R}/tables/reconstruction_vbm.tsv",
        f"{R}/figures/reconstruction_vbm.png",
        f"{R}/tables/table1_fidelity.tsv",
        f"{R}/tables/table2_volumes.tsv",
        f"{R}/tables/subgroup_effects.tsv",
        f"{R}/figures/volumes.png",
        f"{R}/figures/loss_autoencoder.png",
        f"{R}/figures/loss_prior.png",
        f"{R}/tables/region_volumes.tsv",
        f"{R}/tables/region_effects.tsv",
        f"{R}/tables/effect_agreement.tsv",
        f"{R}/figures/region_effects.png",
        f"{R}/tables/vbm.tsv",
        f"{R}/tables/memorisation.tsv",
        f"{R}/tables/memorisation_summary.tsv",
        f"{R}/tables/families.tsv",
    ]
    outputs.append(f"{R}/figures/vbm")
    outputs += expand(f"{R}/figures/samples_{{subpop}}.png", subpop=SUBPOPS)
    outputs += expand(f"{R}/models/prior/{{prior}}/heldout.tsv", prior=PRIORS)
    if IS_DEMO:
        outputs += [f"{R}/tables/volumetry_truth.tsv", f"{R}/figures/volumetry_truth.png"]
    if MEASURED_CONDITIONS:
        outputs += [f"{R}/tables/conditioning.tsv", f"{R}/figures/conditioning.png"]
    if CONDITIONING:
        outputs += [f"{R}/tables/conditioning_effects.tsv", f"{R}/tables/brain_age.tsv"]
    if REQUEST_GRID:
        outputs += expand(f"{R}/figures/conditioning_grid_{{prior}}.png", prior=PRIORS)
    outputs += list(rules.table_pages.output)
    return outputs
