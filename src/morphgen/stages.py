"""One function per pipeline stage: what a Snakemake rule script calls, testable without Snakemake."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd

from morphgen.errors import ConfigError, SubjectError
from morphgen.nifti import atomic_output
from morphgen.tsv import read_tsv, write_tsv


def read_input_subjects(input_cfg: dict, sheet_path: str | Path) -> pd.DataFrame:
    """Subjects (participant_id, path, covariates) from the configured source; the demo reads as BIDS."""
    from morphgen.cohort.sheet import read_subjects

    if input_cfg["source"] == "demo":
        input_cfg = dict(input_cfg, source="bids", bids_dir=str(Path(sheet_path).parent))
    return read_subjects(input_cfg)


def check_inputs(
    input_cfg: dict, subpop_cfg: dict, sheet_path: str | Path, out_qc: str | Path
) -> pd.DataFrame:
    """Input QC table: every subject ok or excluded with a reason (fails fast when on_error is 'fail')."""
    from morphgen.cohort.sheet import required_covariates
    from morphgen.cohort.validate import check_subjects

    subjects = read_input_subjects(input_cfg, sheet_path)
    manual = input_cfg.get("exclude") or {}
    keep = subjects[~subjects["participant_id"].isin(manual)]
    qc = check_subjects(keep, required_covariates(subpop_cfg), input_cfg["on_error"])
    manual_rows = pd.DataFrame(
        {
            "participant_id": list(manual),
            "path": [subjects.set_index("participant_id")["path"].get(s, "") for s in manual],
            "status": "excluded",
            "reason": [f"excluded in config: {why}" for why in manual.values()],
        }
    )
    qc = pd.concat([qc, manual_rows], ignore_index=True) if len(manual_rows) else qc
    write_tsv(qc, out_qc)
    return qc


def preprocess(subject, in_path, space_cfg: dict, cfg: dict, on_error: str, outputs: dict, threads=1) -> dict:
    """Preprocess one subject; with ``on_error: exclude`` a failure is recorded (placeholder outputs and a QC
    row naming the problem, so the QC table excludes the subject and the others go on) instead of raised."""
    import logging

    from morphgen.preprocess import preprocess_subject
    from morphgen.preprocess.pipeline import write_failed_subject
    from morphgen.space import Grid

    grid = Grid.from_config(space_cfg)
    try:
        return preprocess_subject(subject, in_path, grid, cfg, **outputs, threads=threads)
    except SubjectError as exc:
        if on_error != "exclude":
            raise
        logging.getLogger("morphgen").error("%s; excluded (input.on_error: exclude)", exc)
        return write_failed_subject(subject, in_path, exc.problem, grid, **outputs)


def qc_table(inputs_path, row_paths: list[str], qc_cfg: dict | None, out_table) -> pd.DataFrame:
    """The QC table: input checks and preprocessing QC of every subject, with the QC gate applied."""
    import logging

    from morphgen.preprocess.qc import apply_qc_gate, check_qc_config, collect_qc

    cfg = check_qc_config(qc_cfg)
    inputs = read_tsv(inputs_path)
    rows = collect_qc(row_paths)
    table = inputs.merge(rows, on="participant_id", how="left") if len(rows) else inputs
    table = apply_qc_gate(table, cfg)
    flagged = table[table["qc_flag"] != ""]
    log = logging.getLogger("morphgen")
    for _, row in flagged.iterrows():
        log.warning("QC %s: %s (%s)", row["participant_id"], row["qc_flag"], row["path"])
    verb = "excluded from training and evaluation" if cfg["gate"] == "exclude" else "kept (qc.gate: warn)"
    log.info("%d of %d preprocessed subjects flagged by QC, %s", len(flagged), len(rows), verb)
    write_tsv(table, out_table)
    return table


def usable_subjects(input_cfg: dict, sheet_path, qc_path) -> pd.DataFrame:
    """The sheet's subjects with status ok in a QC table (the gated preprocessing table for the split)."""
    subjects = read_input_subjects(input_cfg, sheet_path)
    qc = read_tsv(qc_path)
    ok = set(qc.loc[qc["status"] == "ok", "participant_id"])
    return subjects[subjects["participant_id"].isin(ok)]


def split(input_cfg: dict, split_cfg: dict, subpop_cfg: dict, sheet_path, qc_path, out_subjects, out_subpops):
    """Usable subjects with split and sub-populations, and one TSV per sub-population."""
    from morphgen.split import make_split, members

    table = make_split(usable_subjects(input_cfg, sheet_path, qc_path), split_cfg, subpop_cfg)
    write_tsv(table, out_subjects)
    for path in out_subpops:
        subpop = Path(path).name.removesuffix(".tsv")
        cov = subpop_cfg[subpop.split("-", 1)[0]]["covariate"]
        write_tsv(members(table, subpop)[["participant_id", "split", cov]], path)
    return table


def image_map(paths: str | Path | list[str]) -> dict[str, Path]:
    """Subject (or sample) id -> image path, the id being the file name up to the first '_' or '.'.

    A folder among ``paths`` stands for the ``*.nii.gz`` files in it (a rule's ``directory()`` output).
    """
    files = []
    for p in [paths] if isinstance(paths, (str, Path)) else paths:
        files += sorted(Path(p).glob("*.nii.gz")) if Path(p).is_dir() else [Path(p)]
    out = {}
    for p in files:
        name = Path(p).name
        out[name.split("_")[0].split(".nii")[0]] = Path(p)
    return out


def pick(images: dict[str, Path], ids: list[str], source) -> dict[str, Path]:
    """The images of ``ids``, in that order; a missing one is named with the folder it was sought in."""
    missing = [i for i in ids if i not in images]
    if missing:
        raise SubjectError(missing[0], source, f"no image for subject(s) {', '.join(missing)}")
    return {i: images[i] for i in ids}


def clear_stale_checkpoints(out_dir: Path, params: dict) -> None:
    """Drop checkpoints of a run with other settings, so a rerun resumes only what it would recompute."""
    import json

    ckpt_dir = out_dir / "checkpoints"
    stamp = ckpt_dir / "settings.json"
    text = json.dumps(params, sort_keys=True, default=str)
    if ckpt_dir.exists() and (not stamp.exists() or stamp.read_text() != text):
        shutil.rmtree(ckpt_dir)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    with atomic_output(stamp) as tmp:
        tmp.write_text(text)


def pretrained_digest(path: str | Path, shipped_sha256: str | None) -> str:
    """The sha256 of the autoencoder a fine-tuning starts from; a shipped one (``pretraining.checkpoint``)
    must have the configured digest."""
    from morphgen.weights import sha256sum, verify_sha256

    if shipped_sha256:
        return verify_sha256(path, shipped_sha256, "shipped pre-trained autoencoder (pretraining.checkpoint)")
    return sha256sum(path)


def finish_training(out_dir: Path) -> None:
    """Training is complete: its resume state is no longer needed, and a forced rerun starts afresh."""
    shutil.rmtree(out_dir / "checkpoints", ignore_errors=True)


def subpop_of(path: str | Path) -> str:
    """Sub-population name of a members TSV or a sample folder file."""
    p = Path(path)
    return p.name.removesuffix(".tsv") if p.suffix == ".tsv" else p.parent.name


def fidelity_inputs(
    subpops: list[str], member_tsvs: list[str], real_paths: list[str], synth_paths: list[str]
):
    """Real and synthetic image stacks per sub-population, for Table 1."""
    from morphgen.metrics.fidelity import stack_volumes
    from morphgen.report.tables import read_members

    real_by_id = image_map(real_paths)
    real, synthetic = {}, {}
    for tsv in member_tsvs:
        ids = read_members(tsv)
        real[subpop_of(tsv)] = stack_volumes([real_by_id[s] for s in ids], ids)
    for subpop in subpops:
        paths = sorted(Path(p) for p in synth_paths if Path(p).parent.name == subpop)
        synthetic[subpop] = stack_volumes(paths, [p.name.split(".nii")[0] for p in paths])
    return real, synthetic


def volume_tables(
    subpops,
    member_tsvs,
    real_tsv,
    synth_tsvs,
    alpha,
    out_table,
    out_effects,
    out_figure,
    subpop_cfg=None,
    reconstruction_tsv=None,
    evaluation=None,
):
    """Table 2 (real vs synthetic volumes per sub-population), the sub-group effects table and its figure.

    With ``reconstruction_tsv`` (reconstruction_volumes.tsv), both tables get a ``validity`` column
    (:mod:`morphgen.report.validity`, thresholds in ``evaluation.validity``).
    """
    from morphgen.report.figures import volume_distributions
    from morphgen.report.tables import TISSUES, read_members, subgroup_effects, table2_volumes
    from morphgen.report.validity import annotate_effects, annotate_table2

    real = read_tsv(real_tsv)
    synthetic = {subpop_of(p): read_tsv(p) for p in synth_tsvs}
    members = {subpop_of(p): read_members(p) for p in member_tsvs}
    members = {s: members[s] for s in subpops}
    contrasts = list(contrasts_of(subpop_cfg).values()) if subpop_cfg else None
    validity = run_validity(reconstruction_tsv, real, synthetic, members, evaluation, TISSUES)
    write_tsv(annotate_table2(table2_volumes(real, synthetic, members, alpha), validity), out_table)
    effects = subgroup_effects(real, synthetic, members, contrasts)
    write_tsv(annotate_effects(effects, validity) if len(effects) else effects, out_effects)
    volume_distributions(real, synthetic, members, out_figure)


def run_validity(reconstruction_tsv, real, synthetic, members, evaluation, tissues):
    """:class:`morphgen.report.validity.Validity` of this run (no reconstruction table: spread only)."""
    from morphgen.report.validity import assess, thresholds_of

    reconstruction = read_tsv(reconstruction_tsv) if reconstruction_tsv else None
    return assess(reconstruction, real, synthetic, members, thresholds_of(evaluation), tissues)


def contrasts_of(subpop_cfg: dict) -> dict[str, tuple[str, str]]:
    """Group contrast name -> (a, b) sub-populations, second against first (old vs young, AD vs CN)."""
    return {k: (f"{k}-{e['names'][1]}", f"{k}-{e['names'][0]}") for k, e in subpop_cfg.items()}


def regions_source(evaluation: dict, segmentation: dict) -> str:
    """Where regional volumes come from: ``atlas`` or the ``segmentation`` back-end's own labels."""
    source = (evaluation.get("regions") or {}).get("source", "auto")
    if source == "auto":
        return "segmentation" if segmentation.get("backend") == "onnx" else "atlas"
    if source == "segmentation" and segmentation.get("backend") != "onnx":
        raise ConfigError(
            "evaluation.regions.source is segmentation, but only the onnx back-end labels regions; "
            "use atlas (or auto)"
        )
    return source


def normalise(
    images,
    segmentation_dir,
    volumes_tsv,
    space: dict,
    evaluation: dict,
    segmentation: dict,
    out_dir,
    out_regions,
    subjects=None,
):
    """Images registered to the MNI template (Jacobian, modulated GM maps) and their regional volumes.

    ``subjects``: the batch's subjects when ``images`` is a folder holding more (the reconstructions)."""
    from morphgen.metrics.morphometry import normalise_files
    from morphgen.segmentation import atlas
    from morphgen.segmentation.volumes import probability_path
    from morphgen.space import Grid
    from morphgen.templates import mni_t1

    template = mni_t1(Grid.from_config(space))
    source = regions_source(evaluation, segmentation)
    fractions, tissue_of = None, None
    if source == "atlas":
        regions_cfg = evaluation.get("regions") or {}
        chosen = (
            atlas.load_atlas(regions_cfg["atlas"], regions_cfg.get("atlas_labels"))
            if regions_cfg.get("atlas")
            else atlas.default_atlas()
        )
        fractions = atlas.region_fractions(chosen, template.affine, template.shape[:3])
        tissue_of = {name: chosen.tissue(name) for name in fractions}
    by_id = image_map(images)
    if subjects is not None:
        by_id = pick(by_id, list(subjects), str(images))
    tissue_maps = {
        i: {t: p for t in ("gm", "wm", "csf") if (p := probability_path(segmentation_dir, i, t)).exists()}
        for i in by_id
    }
    vbm_cfg = evaluation.get("vbm") or {}
    table = normalise_files(
        by_id,
        tissue_maps,
        template,
        out_dir,
        fractions=fractions,
        tissue_of=tissue_of,
        registration=dict(vbm_cfg.get("registration") or {}),
    )
    if source == "segmentation":
        from morphgen.segmentation.base import CORE_VOLUMES

        volumes = read_tsv(volumes_tsv)
        core = {f"{v}_ml" for v in CORE_VOLUMES}
        regional = [c for c in volumes.columns if c.endswith("_ml") and c not in core]
        table = table.merge(volumes[["participant_id", *regional]], on="participant_id", how="left")
    write_tsv(table, out_regions)
    return table


def with_sample_covariates(volumes: pd.DataFrame, scores: pd.DataFrame) -> pd.DataFrame:
    """A samples' volume table with the covariates each kept sample was given (the columns of
    ``scores.tsv`` after index, score, kept and file), matched by the sample's id (its file's name)."""
    kept = scores[scores["kept"].astype(bool)]
    extra = [c for c in kept.columns if c not in ("index", "score", "kept", "file")]
    if not extra:
        return volumes
    ids = kept["file"].astype(str).str.replace(r"\.nii(\.gz)?$", "", regex=True)
    table = kept[extra].set_index(ids)
    id_col = "participant_id" if "participant_id" in volumes.columns else volumes.columns[0]
    out = volumes.drop(columns=[c for c in extra if c in volumes.columns])
    return out.join(table, on=id_col)


def region_tables(
    subjects_tsv,
    member_tsvs,
    real_tsv,
    synth_tsvs,
    subpop_cfg,
    alpha,
    out_volumes,
    out_effects,
    out_agreement,
    out_figure,
    reconstruction_tsv=None,
    evaluation=None,
    scores_tsvs=(),
):
    """Regional volumes real vs synthetic, regional group, age and sex effects, their agreement and figure.

    Effects and agreement get a ``validity`` column: each region's spread in the samples, and what the
    autoencoder carries (reconstruction_volumes.tsv). ``scores_tsvs`` (a conditioned family's
    ``samples/<subpop>/scores.tsv``) give each kept sample the covariates it was given, so that its age and
    sex effects are measured too.
    """
    from morphgen.report.figures import effects_scatter
    from morphgen.report.regions import effect_agreement, region_effects, region_names, region_volume_table
    from morphgen.report.tables import read_members
    from morphgen.report.validity import annotate_agreement, annotate_region_effects

    real = read_tsv(real_tsv)
    synthetic = {subpop_of(p): read_tsv(p) for p in synth_tsvs}
    for path in scores_tsvs:  # samples/<subpop>/scores.tsv
        subpop = Path(path).parent.name
        if subpop in synthetic:
            synthetic[subpop] = with_sample_covariates(synthetic[subpop], read_tsv(path))
    members = {subpop_of(p): read_members(p) for p in member_tsvs}
    volumes = region_volume_table(real, synthetic, members, alpha, out_tsv=out_volumes)
    effects = region_effects(
        real,
        read_tsv(subjects_tsv),
        synthetic,
        members,
        contrasts=list(contrasts_of(subpop_cfg).values()),
    )
    validity = run_validity(reconstruction_tsv, real, synthetic, members, evaluation, region_names(real))
    write_tsv(annotate_region_effects(effects, validity, list(members)), out_effects)
    agreement = annotate_agreement(effect_agreement(effects, volumes), validity, list(members))
    write_tsv(agreement, out_agreement)
    effects_scatter(effects, out_figure, agreement)


def vbm(
    member_tsvs,
    real_dirs,
    synth_dirs,
    subpop_cfg,
    space,
    vbm_cfg,
    out_dir,
    out_table,
    out_figure_dir,
    volume_tsvs=None,
    evaluation=None,
):
    """Grey-matter VBM per group contrast, real and synthetic, with the correlation of their t-maps.

    ``real_dirs`` are the folders of normalised real maps (one per batch); ``synth_dirs`` those of the
    samples, each inside its sub-population's folder (``.../<subpop>/batch-0001``). ``volume_tsvs``
    (``real``, ``synthetic``: list, ``reconstruction``) give the table its ``validity`` column: is grey
    matter carried by the autoencoder, and spread in both groups' samples?
    """
    import pandas as pd

    from morphgen.metrics.morphometry import contrast_vbm
    from morphgen.report.tables import read_members
    from morphgen.space import Grid
    from morphgen.templates import mni_t1

    template = mni_t1(Grid.from_config(space))
    members = {subpop_of(p): read_members(p) for p in member_tsvs}
    real = modulated_maps(real_dirs)
    synthetic = {}
    for folder in synth_dirs:
        synthetic.setdefault(Path(folder).parent.name, {}).update(modulated_maps([folder]))

    def present(ids):
        return [real[i] for i in ids if i in real]

    def samples(subpop):
        return [path for _, path in sorted(synthetic.get(subpop, {}).items())]

    rows = []
    for name, (a, b) in contrasts_of(subpop_cfg).items():
        row = contrast_vbm(
            present(members[a]),
            present(members[b]),
            samples(a),
            samples(b),
            template,
            Path(out_dir) / name,
            Path(out_figure_dir) / f"{name}.png",
            labels=(a, b),
            fwhm_mm=float(vbm_cfg.get("fwhm_mm", 8.0)),
            mask_threshold=float(vbm_cfg.get("mask_threshold", 0.05)),
            p_threshold=float(vbm_cfg.get("p_threshold", 0.001)),
        )
        rows.append({"name": name, **row})
    table = pd.DataFrame(rows)
    if volume_tsvs:
        real_volumes = read_tsv(volume_tsvs["real"])
        synth_volumes = {subpop_of(p): read_tsv(p) for p in volume_tsvs["synthetic"]}
        validity = run_validity(
            volume_tsvs.get("reconstruction"), real_volumes, synth_volumes, members, evaluation, ("gm",)
        )
        pairs = contrasts_of(subpop_cfg)
        table["validity"] = [validity.of(pairs[n], ["gm"]) for n in table["name"]]
    write_tsv(table, out_table)


def reconstruction_vbm(real_dirs, reconstruction_dirs, space, vbm_cfg, alpha, out_dir, out_table, out_figure):
    """VBM of each test subject's reconstruction against its original (folders of :func:`normalise` maps)."""
    from morphgen.metrics.morphometry import paired_vbm
    from morphgen.space import Grid
    from morphgen.templates import mni_t1

    reconstructed = modulated_maps(reconstruction_dirs)
    originals = {i: p for i, p in modulated_maps(real_dirs).items() if i in reconstructed}
    row = paired_vbm(
        originals,
        reconstructed,
        mni_t1(Grid.from_config(space)),
        out_dir,
        out_figure,
        fwhm_mm=float(vbm_cfg.get("fwhm_mm", 8.0)),
        mask_threshold=float(vbm_cfg.get("mask_threshold", 0.05)),
        p_threshold=float(vbm_cfg.get("p_threshold", 0.001)),
        alpha=float(alpha),
    )
    write_tsv(pd.DataFrame([row]), out_table)


def reconstruction_fidelity(
    originals, reconstructions, per_subject_tsv, evaluation: dict, seed: int, out_table
):
    """Seed 003's reconstruction fidelity (MS-SSIM, log bMMD²) of the test reconstructions."""
    from morphgen.report.tables import reconstruction_fidelity as fidelity_table

    reconstructed = image_map(reconstructions)
    table = fidelity_table(
        pick(image_map(originals), sorted(reconstructed), "the preprocessed test images"),
        reconstructed,
        read_tsv(per_subject_tsv),
        int(evaluation.get("mmd_batch_size", 4)),
        int(seed),
    )
    write_tsv(table, out_table)
    return table


def modulated_maps(folders) -> dict[str, Path]:
    """Image id -> its modulated grey-matter map, over the folders of :func:`normalise`'s batches."""
    from morphgen.metrics.morphometry import modulated_path

    suffix = modulated_path(".", "").name
    return {
        p.name.removesuffix(suffix): p for folder in folders for p in sorted(Path(folder).glob(f"*{suffix}"))
    }


def covariates(subjects_tsv, volumes_tsv, conditioning: dict) -> pd.DataFrame:
    """Each usable subject's covariates (``model.conditioning.covariates``: name -> column of the subjects
    table or of the real images' volumes)."""
    from morphgen.models.covariates import covariate_columns, covariate_table

    columns = covariate_columns(conditioning)
    return covariate_table(read_tsv(subjects_tsv), read_tsv(volumes_tsv), columns)


def training_covariates(subjects_tsv, volumes_tsv, members_tsv, conditioning: dict) -> pd.DataFrame:
    """The covariates of a sub-population's training subjects: what its samples are conditioned on."""
    members = read_tsv(members_tsv)
    train = set(members.loc[members["split"] == "train", "participant_id"].astype(str))
    table = covariates(subjects_tsv, volumes_tsv, conditioning)
    chosen = table[table["participant_id"].astype(str).isin(train)]
    if chosen.empty:
        raise ConfigError(f"no training subject of {members_tsv} has covariates")
    return chosen.reset_index(drop=True)


def memorisation(subjects_tsv, real_images, sample_paths, subpops, cfg: dict, out_table, out_summary):
    """Per kept sample, its nearest training image, calibrated on test-to-train distances; a summary."""
    import pandas as pd

    from morphgen.metrics import memorisation as mem
    from morphgen.metrics.fidelity import stack_volumes

    subjects = read_tsv(subjects_tsv)
    by_id = image_map(real_images)
    split_ids = {
        part: [i for i in subjects.loc[subjects["split"] == part, "participant_id"] if i in by_id]
        for part in ("train", "test")
    }
    for part, ids in split_ids.items():
        if len(ids) == 0:
            raise ConfigError(f"memorisation: no {part} images (split {subjects_tsv})")
    distance, percentile = cfg.get("distance", "mse"), float(cfg.get("percentile", 1.0))
    train = [by_id[i] for i in split_ids["train"]]
    test = stack_volumes([by_id[i] for i in split_ids["test"]], split_ids["test"])
    test_dists, _ = mem.nearest_distances(test, train, distance=distance)
    tables, summaries = [], []
    for subpop in subpops:
        paths = sorted(Path(p) for p in sample_paths if Path(p).parent.name == subpop)
        ids = [p.name.split(".nii")[0] for p in paths]
        dists, nearest = mem.nearest_distances(stack_volumes(paths, ids), train, distance=distance)
        table = mem.memorisation_table(
            ids, dists, [split_ids["train"][i] for i in nearest], test_dists, percentile
        )
        tables.append(table.assign(subpopulation=subpop))
        summaries.append({"subpopulation": subpop, **mem.memorisation_summary(table, percentile)})
    write_tsv(pd.concat(tables, ignore_index=True), out_table)
    write_tsv(pd.DataFrame(summaries), out_summary)


def brain_age(subjects_tsv, real_images, scores_tsvs, requests_tsvs, cfg: dict, seed: int, out_table):
    """The brain-age table (:func:`morphgen.metrics.brain_age.brain_age_table`): a regressor trained on the
    real training images, read on the real test images, on every kept sample against the age it was given
    (``scores.tsv``) and on every requested sample (``requests.tsv``); then trained again with the kept
    samples added. A sample's file sits beside its table."""
    import numpy as np

    from morphgen.metrics.brain_age import brain_age_table
    from morphgen.metrics.fidelity import stack_volumes

    subjects = read_tsv(subjects_tsv)
    by_id = image_map(real_images)
    if "age" not in subjects.columns:
        raise ConfigError(f"evaluation.brain_age: {subjects_tsv} has no age column")
    real = {}
    for part in ("train", "test"):
        rows = subjects[(subjects["split"] == part) & subjects["participant_id"].isin(by_id)]
        if len(rows) < 2:
            raise ConfigError(f"evaluation.brain_age: {len(rows)} real {part} images, at least 2 are needed")
        ids = list(rows["participant_id"])
        real[part] = (stack_volumes([by_id[i] for i in ids], ids), rows["age"].astype(float).to_numpy())

    def samples(tables, kept_only: bool):
        paths, ages = [], []
        for table_path in tables:
            table = read_tsv(table_path)
            if kept_only:
                table = table[table["kept"].astype(bool)]
            paths += [Path(table_path).parent / f for f in table["file"]]
            ages += list(table["age"].astype(float))
        ids = [p.name for p in paths]
        return (stack_volumes(paths, ids), np.asarray(ages)) if paths else None

    synthetic = {"generated": samples(scores_tsvs, True)}
    if requests_tsvs:
        synthetic["requested"] = samples(requests_tsvs, False)
    synthetic = {k: v for k, v in synthetic.items() if v is not None}
    brain_age_table(real["train"], real["test"], synthetic, cfg, seed, out_table)


def pretraining_split(input_cfg: dict, fraction: float, seed: int, sheet_path, qc_path, out_subjects):
    """Usable subjects of the pre-training cohort, ``train`` or ``val`` (its validation loss)."""
    from morphgen.split import assign_split

    table = usable_subjects(input_cfg, sheet_path, qc_path).copy()
    if len(table) < 2:
        raise ConfigError(f"the pre-training cohort has {len(table)} usable subjects; it needs at least 2")
    labels = assign_split(list(table["participant_id"]), fraction, seed)
    table["split"] = table["participant_id"].map(labels.replace({"test": "val"}))
    write_tsv(table[["participant_id", "path", "split"]], out_subjects)
    return table


def finetune_subjects(train: pd.DataFrame, where: dict | None) -> list[str]:
    """Training subjects a fine-tuning learns from: all of them, or those whose columns take one of the values
    in ``pretraining.finetune.where`` (seed 003 fine-tunes its healthy autoencoder on the patient group)."""
    if not where:
        return list(train["participant_id"])
    keep = pd.Series(True, index=train.index)
    for column, values in where.items():
        if column not in train.columns:
            raise ConfigError(
                f"pretraining.finetune.where: the split table has no column {column!r} "
                f"(it has {', '.join(map(str, train.columns))})"
            )
        wanted = {str(v) for v in (values if isinstance(values, list) else [values])}
        keep &= train[column].astype(str).isin(wanted)
    chosen = list(train.loc[keep, "participant_id"])
    if len(chosen) < 2:
        raise ConfigError(
            f"pretraining.finetune.where: {where} selects {len(chosen)} of the {len(train)} training "
            "subjects; fine-tuning needs at least 2 (one to learn from, one to stop early on)"
        )
    return chosen


def finetune_validation(train_ids: list[str], fraction: float, seed: int) -> list[str]:
    """Training subjects held out from fine-tuning to stop it early (they still train the priors)."""
    from morphgen.split import assign_split

    labels = assign_split(list(train_ids), fraction, seed)
    return sorted(labels.index[labels == "test"])
