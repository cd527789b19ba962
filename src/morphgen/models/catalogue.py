"""What the workflow needs to know of each model family, without importing it (the families import torch,
which costs seconds in every Snakemake job that reads the Snakefile): whether its prior is conditioned on
covariates, where its prior's settings live, and whether one prior learns the whole cohort."""

from __future__ import annotations

from dataclasses import dataclass

from morphgen.errors import ConfigError


@dataclass(frozen=True)
class FamilySpec:
    """A registered family as the workflow sees it; ``module`` registers the family's class when imported."""

    name: str
    module: str
    #: whether the prior is conditioned on covariates (model.conditioning): it then needs the real volumes
    conditioned: bool = False
    #: the section of config['model'] that holds the prior's settings (a rerun trigger of train_prior)
    prior_section: str = "prior"
    #: maps written beside each kept sample, as ``samples/<subpop>/<map>/<sample>.nii.gz``
    sample_maps: tuple[str, ...] = ()
    #: one line for the configuration reference: which system it is
    summary: str = ""
    #: whether ``fit_prior`` reads the trained autoencoder (``model_path``); train_prior then takes it
    prior_reads_autoencoder: bool = False

    def shares_prior(self, model_cfg: dict) -> bool:
        """Whether one prior learns the whole cohort and each sub-population is sampled through its subjects'
        covariates (seed 004), instead of one prior per sub-population. A conditioned family shares it unless
        ``model.<prior_section>.per_subpopulation`` asks for one per sub-population."""
        if not self.conditioned:
            return False
        return not bool((model_cfg.get(self.prior_section) or {}).get("per_subpopulation", False))


FAMILIES: dict[str, FamilySpec] = {
    spec.name: spec
    for spec in (
        FamilySpec(
            "vqvae_transformer",
            "morphgen.models.families.vqvae_transformer.family",
            summary="seed 000: a 3D VQ-VAE and a transformer prior per sub-population",
        ),
        FamilySpec(
            "ldm",
            "morphgen.models.families.ldm.family",
            conditioned=True,
            prior_section="diffusion",
            summary="seed 004: a KL autoencoder and a latent diffusion model conditioned on covariates",
        ),
        FamilySpec(
            "m3ae",
            "morphgen.models.families.m3ae.family",
            prior_section="latent_prior",
            sample_maps=("jacobian",),
            summary="seed 001: a template deformed and repainted at four scales from one latent vector",
        ),
        FamilySpec(
            "beta_vae",
            "morphgen.models.families.beta_vae.family",
            prior_section="latent_prior",
            summary="seed 001's baseline: the same encoder with a voxel decoder",
        ),
        FamilySpec(
            "multilevel_vqvae",
            "morphgen.models.families.multilevel_vqvae.family",
            summary="seed 003: a multi-level VQ-VAE with the adaptive 3D-DCT loss; our coarse-to-fine prior",
        ),
        FamilySpec(
            "brainsynth",
            "morphgen.models.families.brainsynth.family",
            conditioned=True,
            prior_reads_autoencoder=True,
            summary="seed 002: split residual VQ, a GLM split by age and sex, a masked-diffusion prior",
        ),
    )
}


def family_spec(name: str) -> FamilySpec:
    """The spec of family ``name``; :class:`ConfigError` naming ``model.family`` and the known ones."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise ConfigError(
            f"model.family: unknown model family {name!r}; available: {', '.join(sorted(FAMILIES))}"
        ) from None


def check_family_config(model_cfg: dict) -> FamilySpec:
    """The spec of ``model.family``, after checking that the model section fits it: a conditioned family has
    ``model.conditioning`` and its prior's section, an unconditioned one has no ``model.conditioning`` (its
    prior would silently ignore the covariates)."""
    spec = family_spec(model_cfg.get("family", ""))
    conditioning = model_cfg.get("conditioning")
    if spec.conditioned and not conditioning:
        raise ConfigError(
            f"model.conditioning is missing: model family {spec.name!r} conditions its prior on covariates "
            "(see configs/demo/ldm.yaml)"
        )
    if not spec.conditioned and conditioning:
        raise ConfigError(
            f"model.conditioning is set, but model family {spec.name!r} is not conditioned on covariates "
            "(each sub-population has its own prior): remove model.conditioning, or choose a conditioned "
            f"family ({', '.join(n for n, s in sorted(FAMILIES.items()) if s.conditioned)})"
        )
    if not model_cfg.get(spec.prior_section):
        raise ConfigError(
            f"model.{spec.prior_section} is missing: the settings of family {spec.name!r}'s prior"
        )
    return spec


def trainer_schema() -> dict[str, dict]:
    """Key -> JSON schema of each key of ``model.autoencoder`` that the shared autoencoder trainer reads."""
    from importlib.resources import files

    import yaml

    return yaml.safe_load((files("morphgen.models.autoencoders") / "trainer.schema.yaml").read_text())


def family_schema(name: str) -> dict[str, dict]:
    """Section -> JSON schema of that section of ``config['model']`` for family ``name``, from the
    ``schema.yaml`` in its folder (``trainer: true`` adds the shared autoencoder trainer's keys); each schema
    refuses keys it does not list."""
    from importlib.resources import files

    import yaml

    spec = family_spec(name)
    package = spec.module.rpartition(".")[0]
    raw = yaml.safe_load((files(package) / "schema.yaml").read_text()) or {}
    trainer = trainer_schema()
    sections = {}
    for section, entry in raw.items():
        properties = {**(trainer if entry.get("trainer") else {}), **(entry.get("properties") or {})}
        sections[section] = {"type": "object", "properties": properties, "additionalProperties": False}
    return sections


def check_family_sections(model_cfg: dict, sources: list[dict]) -> dict:
    """``model_cfg`` with the sections of its family's schema checked; returns a copy.

    A configuration file changes only the keys it names, so an overlay for another family inherits
    config.yaml's keys of the default one (its codebook, its transformer). A key the family does not read is
    therefore dropped when another family reads it and no file for this family (``sources``, the command
    line's config files: those whose ``model.family`` is this one) wrote it. It is refused, naming the key,
    when no family reads it (a misspelling) or when a file for this family wrote it. The values left must fit
    the schema."""
    import jsonschema

    spec = family_spec(model_cfg.get("family", ""))
    own = family_schema(spec.name)
    others = {name: family_schema(name) for name in FAMILIES if name != spec.name}
    checked = dict(model_cfg)
    for section, schema in own.items():
        values = model_cfg.get(section)
        if not isinstance(values, dict):
            continue
        known = schema["properties"]
        written = set()
        for source in sources:
            model = (source or {}).get("model") or {}
            if model.get("family") == spec.name and isinstance(model.get(section), dict):
                written |= set(model[section])
        kept = {}
        for key, value in values.items():
            if key in known:
                kept[key] = value
                continue
            readers = sorted(n for n, s in others.items() if key in s.get(section, {}).get("properties", {}))
            if not readers or key in written:
                whose = f"a key of {', '.join(readers)}" if readers else "no model family reads it"
                raise ConfigError(
                    f"model.{section}.{key}: model family {spec.name!r} does not read it ({whose}); "
                    f"its keys: {', '.join(sorted(known))}"
                )
        error = next(iter(jsonschema.Draft202012Validator(schema).iter_errors(kept)), None)
        if error is not None:
            where = ".".join(str(p) for p in error.absolute_path)
            raise ConfigError(f"model.{section}.{where}: {error.message}")
        checked[section] = kept
    return checked
