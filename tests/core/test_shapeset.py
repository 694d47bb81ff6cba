"""Shapeset-3×2 (Glorot & Bengio 2010, §2.1): the table, its classes, and what each image holds."""

import numpy as np
import pandas as pd
import pytest
from matplotlib.path import Path

from gradlab.core import data
from gradlab.core.config import ConfigError, validate_parameters
from tests.helpers.config import base_parameters


@pytest.fixture(scope="module")
def drawn() -> data._ShapesetImages:
    """450 images (50 of each class) with what was drawn in them."""
    return data._render_shapeset(3, data.ShapesetParams(n_samples=450), keep=True)


def test_table_columns_dtypes_and_range():
    params = data.ShapesetParams(n_samples=90, offset=3.0, scale=2.0)
    frame = data.shapeset(seed=0, params=params)
    columns = data.feature_columns(frame)
    assert frame.shape == (90, 32 * 32 + 1)
    assert (columns[0], columns[-1], frame.columns[-1]) == ("x_0000", "x_1023", "y")
    assert (frame[columns].dtypes == np.float32).all()
    assert frame["y"].dtype == np.int64
    x = frame[columns].to_numpy()
    assert x.min() >= 3.0 - 1e-6 and x.max() <= 5.0 + 1e-6, (x.min(), x.max())
    assert x.max() - x.min() > 1.5, "grey levels should span most of [offset, offset + scale]"
    kind = data.DATASETS["shapeset"]
    assert (kind.generate, kind.params, kind.task) == (
        data.shapeset,
        data.ShapesetParams,
        "classification",
    )


def test_pixels_are_the_rendering_rounded_to_8_bit_grey_levels():
    params = data.ShapesetParams(n_samples=90, image_size=16)
    frame = data.shapeset(4, params)
    columns = data.feature_columns(frame)
    pixels = frame[columns].to_numpy()
    codes = np.rint(pixels * 255)
    assert codes.min() >= 0 and codes.max() <= 255
    np.testing.assert_array_equal(pixels, (codes / np.float32(255)).astype(np.float32))
    rendered = data._render_shapeset(4, params).pixels.reshape(len(pixels), -1)
    assert np.abs(pixels - rendered).max() <= 0.5 / 255 + 1e-7
    # anti-aliased edges keep their intermediate levels: an image has more than its 2–3 greys
    assert np.median([len(np.unique(image)) for image in codes]) > 10
    # scale and offset map each level to one value: a column still holds at most 256
    moved = data.shapeset(
        4, data.ShapesetParams(n_samples=90, image_size=16, offset=3.0, scale=2.0)
    )
    np.testing.assert_array_equal(moved[columns].to_numpy(), 2.0 * pixels + 3.0)


def test_image_size_sets_the_width():
    frame = data.shapeset(0, data.ShapesetParams(n_samples=9, image_size=8))
    assert data.feature_columns(frame) == [f"x_{i:02d}" for i in range(64)]


def test_same_seed_same_bytes_other_seed_differs():
    params = data.ShapesetParams(n_samples=60, image_size=16)
    first, again = data.shapeset(5, params), data.shapeset(5, params)
    pd.testing.assert_frame_equal(first, again)
    assert first.to_numpy().tobytes() == again.to_numpy().tobytes()
    other = data.shapeset(6, params)
    columns = data.feature_columns(first)
    assert not np.allclose(first[columns], other[columns])


def test_classes_are_balanced_and_match_the_objects(drawn):
    counts = np.bincount(data.shapeset(0, data.ShapesetParams(n_samples=100))["y"], minlength=9)
    assert len(counts) == len(data.SHAPESET_CLASSES) == 9
    assert counts.max() - counts.min() <= 1, counts
    for label, kinds in zip(drawn.labels, drawn.kinds, strict=True):
        names = sorted(data._SHAPES[k] for k in kinds if k >= 0)
        assert sorted(data.SHAPESET_CLASSES[label].split("+")) == names
    # a pair's objects come in either order: the label cannot be read off the drawing order
    mixed = drawn.kinds[drawn.labels == data.SHAPESET_CLASSES.index("triangle+ellipse")]
    assert {tuple(k) for k in mixed} == {(0, 2), (2, 0)}


def test_each_image_shows_its_objects_overlapping_little(drawn):
    params = data.ShapesetParams()
    cover = drawn.objects["coverage"]
    area = cover.sum((2, 3))
    n_objects = (area >= 4).sum(1)  # objects covering at least 4 pixels
    np.testing.assert_array_equal(n_objects, np.where(drawn.labels < 3, 1, 2))
    assert (area[drawn.labels < 3, 1] == 0).all(), "a single-object image drew a second one"
    shared = (cover[:, 0] * cover[:, 1]).sum((1, 2))
    assert (shared <= params.max_overlap * area.min(1) + 1e-4).all()
    pairs = drawn.labels >= 3
    assert (shared[pairs] > 0).any(), "pairs never touch: the overlap bound is never exercised"
    # the object drawn first stays at least half visible under the second
    visible = (cover[:, 0] * (1 - cover[:, 1])).sum((1, 2))
    assert (visible >= (1 - params.max_overlap) * area[:, 0] - 1e-3).all()
    # every object stands out from the background; the composite is background then objects
    contrast = np.abs(drawn.grey - drawn.background[:, None])
    assert (contrast[:, 0] >= params.min_contrast).all()
    assert (contrast[pairs, 1] >= params.min_contrast).all()
    grey = np.nan_to_num(drawn.grey)[:, :, None, None]
    expected = drawn.background[:, None, None] * np.ones_like(cover[:, 0])
    for slot in (0, 1):
        expected = expected + (grey[:, slot] - expected) * cover[:, slot]
    np.testing.assert_allclose(drawn.pixels, expected, atol=1e-6)
    empty = (cover == 0).all(1)
    np.testing.assert_array_equal(
        drawn.pixels[empty],
        np.broadcast_to(drawn.background[:, None, None], empty.shape)[empty].astype(np.float32),
    )


def _inside(kind: int, corners: np.ndarray, axes: np.ndarray, centre: np.ndarray, side: int):
    """Pixel centres inside an object, tested from its corners or axes (not the rasterizer's)."""
    column, row = np.meshgrid(np.arange(side) + 0.5, np.arange(side) + 0.5)
    points = np.stack([column.ravel(), row.ravel()], -1)
    if kind == 2:
        major, minor, theta = axes
        dx, dy = (points - centre).T
        along = dx * np.cos(theta) + dy * np.sin(theta)
        across = -dx * np.sin(theta) + dy * np.cos(theta)
        inside = (along / major) ** 2 + (across / minor) ** 2 < 1
    else:
        inside = Path(corners[:3] if kind == 0 else corners).contains_points(points)
    return inside.reshape(side, side)


def test_shapes_are_drawn_where_and_as_large_as_they_should_be(drawn):
    objects = drawn.objects
    present = drawn.kinds >= 0
    corners = objects["corners"]
    # a parallelogram's diagonals bisect each other; a triangle closes on its first corner
    parallelogram = drawn.kinds == 1
    np.testing.assert_allclose(
        (corners[..., 0, :] + corners[..., 2, :])[parallelogram],
        (corners[..., 1, :] + corners[..., 3, :])[parallelogram],
        atol=1e-9,
    )
    triangle = drawn.kinds == 0
    np.testing.assert_array_equal(corners[triangle][:, 3], corners[triangle][:, 0])
    drawn_area = objects["coverage"].sum((2, 3))
    for kind, name in enumerate(data._SHAPES):
        mask = drawn.kinds == kind
        # area: π·a·b for an ellipse, the shoelace formula of its corners for a polygon
        exact = np.pi * objects["axes"][mask][:, 0] * objects["axes"][mask][:, 1]
        if kind < 2:
            x, y = corners[mask][..., 0], corners[mask][..., 1]
            exact = 0.5 * np.abs((x * np.roll(y, -1, -1) - np.roll(x, -1, -1) * y).sum(-1))
        np.testing.assert_allclose(objects["area"][mask], exact, rtol=1e-9)
        ratio = drawn_area[mask] / exact
        assert ((ratio > 0.9) & (ratio < 1.1)).all(), (name, ratio.min(), ratio.max())
    # the centre of each drawn object is the centroid of its shape (row-major, x = column)
    cover = objects["coverage"][present]
    grid = np.arange(cover.shape[-1]) + 0.5
    centroid = (
        np.stack([(cover.sum(1) * grid).sum(-1), (cover.sum(2) * grid).sum(-1)], -1)
        / cover.sum((1, 2))[:, None]
    )
    np.testing.assert_allclose(centroid, objects["centre"][present], atol=0.3)
    partial = ((cover > 0) & (cover < 1)).sum((1, 2))
    assert (partial >= 4).all(), "edges should be anti-aliased (partly covered pixels)"
    # pixels fully covered lie inside the shape, uncovered ones outside it
    for i, slot in zip(*np.nonzero(present), strict=True):
        inside = _inside(
            drawn.kinds[i, slot],
            corners[i, slot],
            objects["axes"][i, slot],
            objects["centre"][i, slot],
            cover.shape[-1],
        )
        coverage = objects["coverage"][i, slot]
        assert inside[coverage >= 0.99].all() and not inside[coverage == 0].any(), (i, slot)
        assert inside.sum() >= 0.5 * drawn_area[i, slot]


def test_config_accepts_shapeset_and_names_a_bad_key():
    params = base_parameters()
    params["data"]["datasets"]["shapeset"] = {"n_samples": 900, "image_size": 16}
    validate_parameters(params)
    params["data"]["datasets"]["shapeset"] = {"min_size": 0.5, "max_size": 0.3}
    with pytest.raises(ConfigError) as caught:
        validate_parameters(params)
    assert "  data.datasets.shapeset.max_size = 0.3" in str(caught.value), caught.value
    assert "min_size" in str(caught.value)
