"""Data generators, the split, and input normalizations."""

import numpy as np
import pandas as pd
import pytest

from gradlab.core import data


def test_polynomial_follows_the_seed_formula():
    params = data.PolyParams(n_samples=500, offset=3.0, scale=2.0)
    frame = data.polynomial(seed=0, params=params)
    z = (frame[["x_00", "x_01"]].to_numpy(np.float64) - 3.0) / 2.0
    expected = 2.0 * z[:, 0] ** 2 - z[:, 1] ** 2
    assert frame.shape == (500, 3)
    np.testing.assert_allclose(frame["y"], expected, rtol=1e-4, atol=1e-4)


def test_polynomial_offset_makes_raw_inputs_off_centre():
    frame = data.polynomial(seed=0, params=data.PolyParams(n_samples=2000, offset=3.0))
    means = frame[["x_00", "x_01"]].mean()
    assert (means.abs() > 2.5).all(), f"raw means {means.tolist()} should sit near the offset 3"


def test_polynomial_noise_and_seed():
    params = data.PolyParams(n_samples=200, noise=0.5)
    first, again = data.polynomial(1, params), data.polynomial(1, params)
    other = data.polynomial(2, params)
    pd.testing.assert_frame_equal(first, again)
    assert not first.equals(other)


def test_blobs_shapes_classes_and_centres():
    params = data.BlobsParams(n_samples=3000, n_classes=3, n_features=2, spacing=4.0)
    frame = data.blobs(seed=0, params=params)
    assert frame.shape == (3000, 3)
    assert frame["y"].value_counts().tolist() == [1000, 1000, 1000]
    centres = frame.groupby("y")["x_00"].mean().to_numpy()
    np.testing.assert_allclose(centres, [-4.0, 0.0, 4.0], atol=0.25)


def test_digits_ships_with_scikit_learn():
    frame = data.digits(seed=0, params=data.DigitsParams())
    assert frame.shape == (data.DigitsParams.n_samples, 65) == (1797, 65)
    assert sorted(frame["y"].unique()) == list(range(10))
    assert data.feature_columns(frame)[:2] == ["x_00", "x_01"]


def test_split_is_deterministic_disjoint_and_sized():
    frame = data.polynomial(0, data.PolyParams(n_samples=1000))
    first, again = data.split(frame, 7, 0.2, 0.1), data.split(frame, 7, 0.2, 0.1)
    pd.testing.assert_frame_equal(first, again)
    assert first["split"].value_counts().to_dict() == {"train": 700, "val": 200, "test": 100}
    assert len(first.drop(columns="split").drop_duplicates()) == 1000


@pytest.mark.parametrize("method", ["raw", "centered", "zscore", "minmax"])
def test_normalize_fits_on_train_only(method):
    frame = data.split(data.polynomial(0, data.PolyParams(n_samples=600, offset=3.0)), 0, 0.2, 0.2)
    # an outlier outside train would move every statistic that saw it
    frame.loc[frame.index[frame["split"] == "val"][0], ["x_00", "x_01"]] = 100.0
    out, stats = data.normalize(frame, data.INPUT_NORMS[method])
    train = frame.loc[frame["split"] == "train", ["x_00", "x_01"]].to_numpy(np.float64)
    everything = frame[["x_00", "x_01"]].to_numpy(np.float64)
    shift, scale = data.INPUT_NORMS[method](train)
    np.testing.assert_allclose(stats["shift"], shift)
    np.testing.assert_allclose(stats["scale"], scale)
    if method != "raw":
        leaked_shift, leaked_scale = data.INPUT_NORMS[method](everything)
        leaked = np.allclose(shift, leaked_shift) and np.allclose(scale, leaked_scale)
        assert not leaked, "statistics must not see val/test rows"
    expected = (everything - shift) / scale
    np.testing.assert_allclose(out[["x_00", "x_01"]], expected, rtol=1e-5, atol=1e-5)


def test_normalize_zscore_and_minmax_ranges_on_train():
    frame = data.split(data.polynomial(0, data.PolyParams(n_samples=600, offset=3.0)), 0, 0.2, 0.2)
    train = frame["split"] == "train"
    z, _ = data.normalize(frame, data.INPUT_NORMS["zscore"])
    m, _ = data.normalize(frame, data.INPUT_NORMS["minmax"])
    np.testing.assert_allclose(z.loc[train, "x_00"].mean(), 0.0, atol=1e-5)
    np.testing.assert_allclose(z.loc[train, "x_00"].std(ddof=0), 1.0, atol=1e-4)
    assert m.loc[train, "x_00"].min() == pytest.approx(0.0, abs=1e-6)
    assert m.loc[train, "x_00"].max() == pytest.approx(1.0, abs=1e-6)


def test_normalize_keeps_constant_features_finite():
    frame = data.split(data.digits(0, data.DigitsParams()), 0, 0.2, 0.2)
    out, _ = data.normalize(frame, data.INPUT_NORMS["zscore"])
    assert np.isfinite(out[data.feature_columns(out)].to_numpy()).all()


def test_image_tables_store_a_pixel_in_about_a_byte(tmp_path):
    """Shapeset's 8-bit grey levels stay dictionary-encoded in parquet through the split and every
    normalization (≤ 256 values a column), and come back exactly."""
    n, side = 4000, 8
    split = data.split(
        data.shapeset(0, data.ShapesetParams(n_samples=n, image_size=side)), 0, 0.2, 0.2
    )
    tables = {"split": split} | {
        name: data.normalize(split, method)[0] for name, method in data.INPUT_NORMS.items()
    }
    # 1.4 bytes a pixel: a byte an index, each column's 1 KB dictionary and metadata (float32
    # pixels of every level, as before 8-bit levels, took 5.7)
    bound = 1.5 * n * side**2
    for name, table in tables.items():
        path = tmp_path / f"{name}.parquet"
        table.to_parquet(path)
        assert path.stat().st_size < bound, (name, path.stat().st_size, bound)
        pd.testing.assert_frame_equal(pd.read_parquet(path), table)
