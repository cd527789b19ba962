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
        FamilySpec("vqvae_transformer", "morphgen.models.families.vqvae_transformer.family"),
        FamilySpec("ldm", "morphgen.models.families.ldm.family", conditioned=True, prior_section="diffusion"),
        FamilySpec(
            "m3ae",
            "morphgen.models.families.m3ae.family",
            prior_section="latent_prior",
            sample_maps=("jacobian",),
        ),
        FamilySpec("beta_vae", "morphgen.models.families.beta_vae.family", prior_section="latent_prior"),
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
