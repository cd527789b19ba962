"""The MNI152 template on the working grid, computed once and then read from the cache."""

import numpy as np

from morphgen import templates
from morphgen.space import Grid

GRID = Grid(8.0, (24, 32, 24))


def _fresh(monkeypatch, tmp_path):
    monkeypatch.setenv("MORPHGEN_CACHE_DIR", str(tmp_path))
    templates._mni_on_grid.cache_clear()


def test_the_cached_template_equals_the_computed_one(monkeypatch, tmp_path):
    _fresh(monkeypatch, tmp_path)
    computed = templates._mni_on_grid(GRID)
    (cached_file,) = tmp_path.glob("mni152_*.npz")
    templates._mni_on_grid.cache_clear()
    cached = templates._mni_on_grid(GRID)
    assert set(cached) == set(computed) and computed["gm"].sum() > 0
    for key in computed:
        np.testing.assert_array_equal(cached[key], computed[key], err_msg=key)
    # another grid is another file
    templates._mni_on_grid(Grid(8.0, (24, 32, 26)))
    assert len(list(tmp_path.glob("mni152_*.npz"))) == 2 and cached_file.exists()


def test_a_broken_cache_file_is_computed_again(monkeypatch, tmp_path):
    _fresh(monkeypatch, tmp_path)
    computed = templates._mni_on_grid(GRID)
    (cached_file,) = tmp_path.glob("mni152_*.npz")
    cached_file.write_bytes(b"half a file")  # a job killed while writing (atomic writes prevent this)
    templates._mni_on_grid.cache_clear()
    np.testing.assert_array_equal(templates._mni_on_grid(GRID)["t1"], computed["t1"])
    with np.load(cached_file) as rewritten:
        np.testing.assert_array_equal(rewritten["t1"], computed["t1"])


def test_a_read_only_cache_only_costs_time(monkeypatch, tmp_path):
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    _fresh(monkeypatch, blocked / "cache")
    assert templates.mni_brain_mask(GRID).any()
