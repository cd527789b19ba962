"""morphgen's command line: small tools around the pipeline (the pipeline itself runs through Snakemake)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from morphgen import __version__
from morphgen.errors import MorphgenError


def _families(args: argparse.Namespace) -> None:
    from morphgen.models import available_families

    for name in available_families():
        print(name)


def _demo_cohort(args: argparse.Namespace) -> None:
    from morphgen.cohort import make_demo_cohort

    table = make_demo_cohort(args.out, n_subjects=args.n, seed=args.seed, voxel_size=args.voxel_size)
    print(f"wrote {len(table)} SIMULATED subjects to {args.out}")


def _check_inputs(args: argparse.Namespace) -> None:
    import yaml

    from morphgen.cohort.sheet import read_subjects, required_covariates
    from morphgen.cohort.validate import check_subjects

    config = yaml.safe_load(Path(args.config).read_text())
    subjects = read_subjects(config["input"])
    qc = check_subjects(subjects, required_covariates(config["subpopulations"]), on_error="exclude")
    print(qc.to_csv(sep="\t", index=False), end="")
    if (qc["status"] != "ok").any():
        sys.exit(1)


def _init_config(args: argparse.Namespace) -> None:
    from morphgen.cohort.starter import starter_config

    if args.bids:
        input_cfg = {"source": "bids", "bids_dir": str(args.bids)}
    else:
        input_cfg = {"source": "sheet", "sheet": str(args.sheet)}
    text = starter_config(input_cfg)
    if args.out is None:
        print(text, end="")
        return
    if args.out.exists() and not args.force:
        raise MorphgenError(f"{args.out} exists; pass --force to overwrite it")
    args.out.write_text(text)
    print(f"wrote {args.out}; run: snakemake --cores N --configfile config.yaml {args.out} -- preprocess")


def _config_reference(args: argparse.Namespace) -> None:
    from morphgen.config_reference import config_reference

    text = config_reference(args.schema, args.config)
    if args.out is None:
        print(text, end="")
    else:
        args.out.write_text(text)
        print(f"wrote {args.out}")


def _sha256(args: argparse.Namespace) -> None:
    from morphgen.weights import sha256sum

    for path in args.files:
        print(f"{sha256sum(path)}  {path}")


def _ship_autoencoder(args: argparse.Namespace) -> None:
    import yaml

    from morphgen.weights import ship_checkpoint

    config = yaml.safe_load(Path(args.config).read_text())
    checkpoint = (config.get("pretraining") or {}).get("checkpoint")
    if not checkpoint:
        raise MorphgenError(f"{args.config} has no pretraining.checkpoint to ship the autoencoder to")
    actual, reproduced = ship_checkpoint(args.model, checkpoint["path"], checkpoint.get("sha256"))
    print(f"{actual}  {checkpoint['path']}")
    if reproduced:
        print(f"reproduced bit for bit: the sha256 is the one {args.config} names")
        return
    configured = checkpoint.get("sha256")
    print(
        f"the sha256 differs from pretraining.checkpoint.sha256 in {args.config} ({configured}):"
        " another machine, torch build or setting gives other floating-point results. To use this model,"
        f" set pretraining.checkpoint.sha256 to {actual}",
        file=sys.stderr,
    )
    sys.exit(1)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="morphgen", description=__doc__)
    parser.add_argument("--version", action="version", version=f"morphgen {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("families", help="list the model families").set_defaults(func=_families)

    demo = sub.add_parser("demo-cohort", help="write the simulated demo cohort as a BIDS folder")
    demo.add_argument("out", type=Path)
    demo.add_argument("--n", type=int, default=36, help="number of subjects")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--voxel-size", type=float, default=1.5, help="native voxel size (mm)")
    demo.set_defaults(func=_demo_cohort)

    check = sub.add_parser("check-inputs", help="check the subjects of a config; exit 1 if any is bad")
    check.add_argument("--config", default="config.yaml")
    check.set_defaults(func=_check_inputs)

    init = sub.add_parser(
        "init-config",
        help="write a starting config for your BIDS folder or sheet: its covariates listed, sub-populations "
        "proposed from them",
    )
    source = init.add_mutually_exclusive_group(required=True)
    source.add_argument("--bids", type=Path, help="BIDS folder with participants.tsv")
    source.add_argument("--sheet", type=Path, help="TSV/CSV with participant_id, path and covariates")
    init.add_argument("-o", "--out", type=Path, help="file to write (default: print it)")
    init.add_argument("--force", action="store_true", help="overwrite --out")
    init.set_defaults(func=_init_config)

    ref = sub.add_parser(
        "config-reference", help="write the configuration reference (docs/configuration.md) from the schema"
    )
    ref.add_argument("--schema", type=Path, default=Path("workflow/schemas/config.schema.yaml"))
    ref.add_argument("--config", type=Path, default=Path("config.yaml"))
    ref.add_argument("-o", "--out", type=Path, help="file to write (default: print it)")
    ref.set_defaults(func=_config_reference)

    sha = sub.add_parser("sha256", help="print the sha256 of weight files, for config.yaml")
    sha.add_argument("files", nargs="+", type=Path)
    sha.set_defaults(func=_sha256)

    ship = sub.add_parser(
        "ship-autoencoder",
        help="copy a pre-trained autoencoder to the config's pretraining.checkpoint.path; exit 1 unless its "
        "sha256 is the configured one",
    )
    ship.add_argument("model", type=Path, help="model.pt written by pretrain_autoencoder")
    ship.add_argument("--config", default="config.yaml")
    ship.set_defaults(func=_ship_autoencoder)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except MorphgenError as exc:
        print(f"morphgen: error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
