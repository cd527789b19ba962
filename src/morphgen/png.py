"""Figures written as PNG files, atomically (the figure counterpart of ``nifti.save_volume``), so that any
layer that draws (VBM's t-maps, the report) writes them the same way."""

from __future__ import annotations

from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from morphgen.nifti import atomic_output


def save_figure(fig: Figure, out_png: str | Path, dpi: int = 110) -> Path:
    """Render ``fig`` with the Agg canvas and write it as PNG atomically."""
    FigureCanvasAgg(fig)
    with atomic_output(out_png) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, facecolor="white")
    return Path(out_png)
