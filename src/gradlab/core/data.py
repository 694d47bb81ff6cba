"""Synthetic and small real datasets, a deterministic split, and input normalizations.

Every table has feature columns ``x_00 … x_NN`` and a target column ``y``; generators are seeded
and depend on nothing else, so the same parameters always give the same bytes.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

SPLITS = ("train", "val", "test")


def _frame(features: np.ndarray, target: np.ndarray) -> pd.DataFrame:
    width = max(2, len(str(features.shape[1] - 1)))
    frame = pd.DataFrame(
        features.astype(np.float32), columns=[f"x_{i:0{width}d}" for i in range(features.shape[1])]
    )
    frame["y"] = target
    return frame


def feature_columns(frame: pd.DataFrame) -> list[str]:
    """The input columns of a dataset table, in order."""
    return [c for c in frame.columns if c.startswith("x_")]


class _Params(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    n_samples: int = Field(default=2000, gt=0)
    offset: float = 0.0  # added to every stored input: raw inputs are then not zero-centred
    scale: float = Field(default=1.0, gt=0)  # multiplies every stored input


class PolyParams(_Params):
    """Parameters of ``polynomial``."""

    weights: list[float] = Field(default=[2.0, -1.0], min_length=1)
    degree: int = Field(default=2, ge=1)
    bias: float = 0.0
    noise: float = Field(default=0.0, ge=0)


def polynomial(seed: int, params: PolyParams) -> pd.DataFrame:
    """Polynomial regression from the seed course's ``tensorGenReg``.

    z ~ N(0, I), y = Σ wᵢ·zᵢ^degree + bias + noise·ε; the stored inputs are x = scale·z + offset,
    so that with ``offset ≠ 0`` raw inputs are not zero-centred (the target is unchanged).
    Defaults give y = 2·x₁² − x₂².
    """
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((params.n_samples, len(params.weights)))
    y = z**params.degree @ np.asarray(params.weights) + params.bias
    y = y + params.noise * rng.standard_normal(params.n_samples)
    return _frame(params.scale * z + params.offset, y.astype(np.float32))


class BlobsParams(_Params):
    """Parameters of ``blobs``."""

    n_classes: int = Field(default=3, ge=2)
    n_features: int = Field(default=2, ge=1)
    spacing: float = Field(default=4.0, ge=0)
    dispersion: float = Field(default=2.0, gt=0)


def blobs(seed: int, params: BlobsParams) -> pd.DataFrame:
    """Gaussian blobs from the seed course's ``tensorGenCla``.

    Class k has mean ``spacing·(k − (K−1)/2)`` on every feature and std ``dispersion``; a smaller
    ``spacing / dispersion`` means more overlap. Stored inputs are ``scale·x + offset``.
    """
    rng = np.random.default_rng(seed)
    labels = np.arange(params.n_samples) % params.n_classes
    centres = params.spacing * (labels - (params.n_classes - 1) / 2)
    noise = rng.standard_normal((params.n_samples, params.n_features))
    x = centres[:, None] + params.dispersion * noise
    return _frame(params.scale * x + params.offset, labels.astype(np.int64))


class DigitsParams(BaseModel):
    """``digits`` takes no parameters: the images are fixed."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    n_samples: ClassVar[int] = 1797  # as for the generated datasets: the split sizes follow


def digits(seed: int, params: DigitsParams) -> pd.DataFrame:
    """scikit-learn's 8×8 handwritten digits (1,797 images, pixel values 0–16, 10 classes).

    They ship inside scikit-learn: nothing is downloaded. ``seed`` is unused (the split shuffles).
    """
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return _frame(bunch.data, bunch.target.astype(np.int64))


# Shapeset-3×2's classes in label order: which objects an image holds, regardless of their order.
SHAPESET_CLASSES = (
    "triangle",
    "parallelogram",
    "ellipse",
    "triangle+triangle",
    "triangle+parallelogram",
    "triangle+ellipse",
    "parallelogram+parallelogram",
    "parallelogram+ellipse",
    "ellipse+ellipse",
)
_SHAPES = ("triangle", "parallelogram", "ellipse")
# the shape of each object of each class (row = label); −1: no second object
_CLASS_KINDS = np.array(
    [
        [_SHAPES.index(s) for s in name.split("+")] + [-1] * (2 - name.count("+") - 1)
        for name in SHAPESET_CLASSES
    ]
)
_SHAPESET_CHUNK = 512  # images rendered at once (bounds memory; part of the seeded stream)
_SHAPESET_TRIES = 100  # redraws of a two-object image whose objects overlap too much
_SIDE_RATIO = 2.0  # a polygon's two sides differ by at most this factor (log-uniform)
_MIN_ANGLE = np.pi / 4  # a polygon's angle between its two sides is in [45°, 135°]
_MIN_ASPECT = 0.5  # an ellipse's minor / major axis is in [0.5, 1]


class ShapesetParams(_Params):
    """Parameters of ``shapeset``."""

    n_samples: int = Field(default=10000, gt=0)
    image_size: int = Field(default=32, ge=8)  # side of the square images, in pixels
    # an object's size: the diameter of its circumscribed circle (about its centre), as a
    # fraction of the image side; drawn uniformly in [min_size, max_size]
    min_size: float = Field(default=0.25, gt=0, le=1)
    max_size: float = Field(default=0.6, gt=0, le=1)
    # two objects may share at most this fraction of the smaller one's area (the paper: 50 %)
    max_overlap: float = Field(default=0.5, ge=0, lt=1)
    # least |grey level of an object − grey level of the background| (levels are in [0, 1])
    min_contrast: float = Field(default=0.2, ge=0, lt=0.5)

    @field_validator("max_size")
    @classmethod
    def _max_size_at_least_min_size(cls, value: float, info: ValidationInfo) -> float:
        low = info.data.get("min_size")
        if low is not None and value < low:
            raise ValueError(f"max_size must be ≥ min_size = {low:g}")
        return value


@dataclass(frozen=True)
class _ShapesetImages:
    """Rendered Shapeset images and, on request, what was drawn in each (slot 0 drawn first)."""

    pixels: np.ndarray  # (n, size, size) float32 in [0, 1]
    labels: np.ndarray  # (n,) int64, an index of SHAPESET_CLASSES
    kinds: np.ndarray  # (n, 2) index of _SHAPES per object; −1: no second object
    background: np.ndarray  # (n,) grey level
    grey: np.ndarray  # (n, 2) grey level of each object (NaN: no second object)
    # with keep, per object (n, 2, …): "coverage" (size, size) the fraction of each pixel it
    # covers; "area" in pixels; "centre", "corners" (4, 2) and "axes" (semi-major, semi-minor,
    # angle) in (column, row) pixels from the top-left corner (a triangle repeats corner 0)
    objects: dict[str, np.ndarray] | None


def _quadratic(cos: np.ndarray, sin: np.ndarray, p: np.ndarray, q: np.ndarray, centre: tuple):
    """Weights on (x², xy, y², x, y, 1) of (r − c)ᵀ R diag(p, q) Rᵀ (r − c), R a rotation."""
    cx, cy = centre
    m11, m22 = cos**2 * p + sin**2 * q, sin**2 * p + cos**2 * q
    m12 = cos * sin * (p - q)
    mx, my = m11 * cx + m12 * cy, m12 * cx + m22 * cy
    return np.stack([m11, 2 * m12, m22, -2 * mx, -2 * my, mx * cx + my * cy], axis=-1)


def _draw_objects(rng: np.random.Generator, kinds: np.ndarray, params: ShapesetParams) -> dict:
    """Random shape, size, rotation and position of every object slot of ``kinds`` (m, 2).

    Coordinates are (column, row) in pixels from the image centre; every object lies wholly
    inside the image. Returns, per slot: polygon half-planes (4, 3) and the ellipse's quadratic
    forms (2, 6) for ``_coverage``, and the fields of ``_ShapesetImages.objects``.
    """
    side = params.image_size
    shape = kinds.shape
    radius = rng.uniform(params.min_size, params.max_size, shape) * side / 2
    theta = rng.uniform(0, 2 * np.pi, shape)
    ratio = _SIDE_RATIO ** rng.uniform(-1, 1, shape)  # symmetric: mirror images included
    angle = rng.uniform(_MIN_ANGLE, np.pi - _MIN_ANGLE, shape)
    aspect = rng.uniform(_MIN_ASPECT, 1, shape)
    where = rng.random((2, *shape))
    cos, sin = np.cos(theta), np.sin(theta)

    # polygons: sides u = (1, 0) and v = ratio·(cos angle, sin angle), counter-clockwise; a
    # triangle's fourth vertex repeats its first (an empty closing edge)
    u = np.stack([np.ones(shape), np.zeros(shape)], axis=-1)
    v = ratio[..., None] * np.stack([np.cos(angle), np.sin(angle)], axis=-1)
    zero = np.zeros_like(u)
    triangle = (kinds == 0)[..., None, None]
    corners = np.where(
        triangle, np.stack([zero, u, v, zero], -2), np.stack([zero, u, u + v, v], -2)
    )
    corners -= np.where(triangle, (u + v)[..., None, :] / 3, (u + v)[..., None, :] / 2)
    corners *= (radius / np.linalg.norm(corners, axis=-1).max(-1))[..., None, None]
    x = cos[..., None] * corners[..., 0] - sin[..., None] * corners[..., 1]
    y = sin[..., None] * corners[..., 0] + cos[..., None] * corners[..., 1]

    # ellipses: semi-axes radius (along theta) and aspect·radius
    major, minor = radius, aspect * radius
    ellipse = kinds == 2
    half_x, half_y = np.hypot(major * cos, minor * sin), np.hypot(major * sin, minor * cos)
    low_x, high_x = np.where(ellipse, -half_x, x.min(-1)), np.where(ellipse, half_x, x.max(-1))
    low_y, high_y = np.where(ellipse, -half_y, y.min(-1)), np.where(ellipse, half_y, y.max(-1))
    cx = -side / 2 - low_x + where[0] * (side - high_x + low_x)
    cy = -side / 2 - low_y + where[1] * (side - high_y + low_y)
    x, y = x + cx[..., None], y + cy[..., None]

    # polygon: n·r + c ≤ 0 on the inside of every edge, n its unit outward normal
    ex, ey = np.roll(x, -1, -1) - x, np.roll(y, -1, -1) - y
    length = np.hypot(ex, ey)
    empty = length == 0
    nx, ny = ey / np.where(empty, 1, length), -ex / np.where(empty, 1, length)
    planes = np.stack([nx, ny, np.where(empty, -1e9, -(nx * x + ny * y))], axis=-1)
    polygon_area = 0.5 * np.abs((x * np.roll(y, -1, -1) - np.roll(x, -1, -1) * y).sum(-1))

    # ellipse: F = (r − c)ᵀ M (r − c) − 1 ≤ 0 inside, and |∇F|² / 4 = (r − c)ᵀ M² (r − c)
    quadratic = np.stack(
        [
            _quadratic(cos, sin, major**-2, minor**-2, (cx, cy)),
            _quadratic(cos, sin, major**-4, minor**-4, (cx, cy)),
        ],
        axis=-2,
    )
    quadratic[..., 0, 5] -= 1
    return {
        "planes": planes,
        "quadratic": quadratic,
        "area": np.where(ellipse, np.pi * major * minor, polygon_area),
        "centre": np.stack([cx, cy], axis=-1) + side / 2,
        "corners": np.stack([x, y], axis=-1) + side / 2,
        "axes": np.stack([major, minor, theta], axis=-1),
    }


def _coverage(kinds: np.ndarray, objects: dict, side: int) -> np.ndarray:
    """Fraction of each pixel each object covers, (m, 2, side, side) float32, anti-aliased.

    With d the signed distance in pixels (> 0 outside) from a pixel's centre to an edge, an
    ellipse covers ``clip(0.5 − d, 0, 1)`` of it (d ≈ F / |∇F|, to first order) and a polygon the
    product of that over its edges (the max of the distances would fatten acute corners: a thin
    triangle's area came out up to 20 % too large, against ±8 % now).
    """
    centres = np.arange(side, dtype=np.float32) + np.float32(0.5 - side / 2)
    y, x = (a.ravel() for a in np.meshgrid(centres, centres, indexing="ij"))
    out = np.zeros((*kinds.shape, side * side), np.float32)
    polygon, ellipse = (kinds == 0) | (kinds == 1), kinds == 2
    if polygon.any():
        planes = objects["planes"][polygon].astype(np.float32)
        distance = (planes.reshape(-1, 3) @ np.stack([x, y, np.ones_like(x)])).reshape(
            len(planes), 4, -1
        )
        out[polygon] = np.clip(0.5 - distance, 0, 1).prod(1)
    if ellipse.any():
        forms = objects["quadratic"][ellipse].astype(np.float32)
        features = np.stack([x * x, x * y, y * y, x, y, np.ones_like(x)])
        f, g = (forms.reshape(-1, 6) @ features).reshape(len(forms), 2, -1).transpose(1, 0, 2)
        distance = f / (2 * np.sqrt(np.maximum(g, np.float32(1e-12))))
        out[ellipse] = np.clip(0.5 - distance, 0, 1)
    return out.reshape(*kinds.shape, side, side)


def _place_objects(
    rng: np.random.Generator, kinds: np.ndarray, params: ShapesetParams
) -> tuple[dict, np.ndarray]:
    """Draw the objects of ``kinds`` (m, 2), redrawing pairs that overlap too much."""
    side = params.image_size

    def acceptable(cover: np.ndarray) -> np.ndarray:
        shared = (cover[:, 0] * cover[:, 1]).sum((1, 2))
        smaller = cover.sum((2, 3)).min(1)
        return shared <= params.max_overlap * smaller

    objects = _draw_objects(rng, kinds, params)
    cover = _coverage(kinds, objects, side)
    redo = np.flatnonzero(~acceptable(cover))
    for _ in range(_SHAPESET_TRIES):
        if not len(redo):
            break
        again = _draw_objects(rng, kinds[redo], params)
        for key, value in again.items():
            objects[key][redo] = value
        cover[redo] = _coverage(kinds[redo], again, side)
        redo = redo[~acceptable(cover[redo])]
    if len(redo):
        raise ValueError(
            f"shapeset: {len(redo)} images found no placement of their two objects sharing at "
            f"most max_overlap = {params.max_overlap:g} of the smaller one's area in "
            f"{_SHAPESET_TRIES} tries; lower min_size / max_size or raise max_overlap"
        )
    return objects, cover


def _render_shapeset(seed: int, params: ShapesetParams, keep: bool = False) -> _ShapesetImages:
    """Render ``shapeset``'s images; with ``keep``, also what was drawn (``objects``)."""
    rng = np.random.default_rng(seed)
    n, side = params.n_samples, params.image_size
    labels = (np.arange(n) % len(SHAPESET_CLASSES)).astype(np.int64)
    kinds = _CLASS_KINDS[labels]
    pair = kinds[:, 1] >= 0
    swap = pair & (rng.random(n) < 0.5)  # either object of a pair may be drawn first
    kinds[swap] = kinds[swap, ::-1]
    background = rng.random(n)
    # an object's grey level: uniform over [0, 1] less (background ± min_contrast)
    contrast = params.min_contrast
    below = np.maximum(background - contrast, 0)
    room = below + np.maximum(1 - background - contrast, 0)
    level = rng.random((n, 2)) * room[:, None]
    above = level - below[:, None] + background[:, None] + contrast
    grey = np.where(level < below[:, None], level, above)
    pixels = np.empty((n, side, side), np.float32)
    kept: dict[str, list[np.ndarray]] = {"coverage": []}
    for start in range(0, n, _SHAPESET_CHUNK):
        chunk = slice(start, start + _SHAPESET_CHUNK)
        objects, cover = _place_objects(rng, kinds[chunk], params)
        image = np.broadcast_to(background[chunk, None, None], cover.shape[:1] + cover.shape[2:])
        for slot in (0, 1):
            image = image + (grey[chunk, slot, None, None] - image) * cover[:, slot]
        pixels[chunk] = image
        if keep:
            kept["coverage"].append(cover)
            for key in ("area", "centre", "corners", "axes"):
                kept.setdefault(key, []).append(objects[key])
    grey[~pair, 1] = np.nan
    kept_objects = {key: np.concatenate(value) for key, value in kept.items()} if keep else None
    return _ShapesetImages(pixels, labels, kinds, background, grey, kept_objects)


def shapeset(seed: int, params: ShapesetParams) -> pd.DataFrame:
    """Shapeset-3×2 (Glorot & Bengio 2010, §2.1): which objects a grey-level image holds.

    Each ``image_size``² image holds one or two objects, each a triangle, a parallelogram or an
    ellipse with random shape (side ratio and angle, or axis ratio), size, rotation, position
    and grey level, on a background of random grey level (each object differs from it by at
    least ``min_contrast``). Two objects share at most ``max_overlap`` of the smaller one's area
    (redrawn until they do). The 9 balanced classes (``SHAPESET_CLASSES``, label = row mod 9)
    ignore the objects' order: 0–2 one triangle / parallelogram / ellipse; 3–8 the unordered
    pairs TT, TP, TE, PP, PE, EE. Pixels are 8-bit grey levels k/255 (the anti-aliased rendering
    rounded, as an 8-bit image stores it), row-major; stored inputs are ``scale·pixel + offset``.
    With at most 256 distinct values a column, parquet's dictionary encoding stores each pixel in
    one byte, and every normalization keeps that (an affine map per column): 60,000 images take
    63 MB a table instead of 350 MB.

    Raises:
        ValueError: when some pair cannot be placed within ``max_overlap`` in 100 draws (objects
            nearly as large as the image).
    """
    images = _render_shapeset(seed, params)
    levels = np.rint(images.pixels.reshape(params.n_samples, -1) * 255) / np.float32(255)
    return _frame(params.scale * levels + params.offset, images.labels)


@dataclass(frozen=True)
class DatasetKind:
    """A dataset generator and the task it poses."""

    generate: Callable[[int, Any], pd.DataFrame]  # takes its own ``params`` model
    params: type[BaseModel]
    task: str  # "regression" or "classification"


DATASETS: dict[str, DatasetKind] = {
    "poly": DatasetKind(polynomial, PolyParams, "regression"),
    "blobs": DatasetKind(blobs, BlobsParams, "classification"),
    "digits": DatasetKind(digits, DigitsParams, "classification"),
    "shapeset": DatasetKind(shapeset, ShapesetParams, "classification"),
}


def n_outputs(frame: pd.DataFrame, task: str) -> int:
    """Width of the model's head: 1 for regression, the number of classes otherwise."""
    return 1 if task == "regression" else int(frame["y"].max()) + 1


def split_sizes(n_rows: int, val: float, test: float) -> tuple[int, int, int]:
    """Rows of the train, validation and test splits of ``n_rows`` (the rest goes to train)."""
    n_val, n_test = round(val * n_rows), round(test * n_rows)
    return n_rows - n_val - n_test, n_val, n_test


def split(frame: pd.DataFrame, seed: int, val: float, test: float) -> pd.DataFrame:
    """Shuffle rows with ``seed`` and label them train / val / test (the rest goes to train).

    Args:
        frame: A dataset table.
        seed: Seed of the shuffle.
        val: Fraction of rows for validation.
        test: Fraction of rows for test.
    Returns:
        The shuffled table with a ``split`` column.
    """
    order = np.random.default_rng(seed).permutation(len(frame))
    _, n_val, n_test = split_sizes(len(frame), val, test)
    labels = np.array(["train"] * len(frame), dtype=object)
    labels[:n_val] = "val"
    labels[n_val : n_val + n_test] = "test"
    shuffled = frame.iloc[order].reset_index(drop=True)
    shuffled["split"] = pd.Categorical(labels, categories=SPLITS)
    return shuffled


# Each input normalization maps train features to (shift, scale); x' = (x − shift) / scale.
InputNorm = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


def _safe(scale: np.ndarray) -> np.ndarray:
    return np.where(scale > 0, scale, 1.0)  # constant features (digits' blank pixels) stay put


INPUT_NORMS: dict[str, InputNorm] = {
    "raw": lambda x: (np.zeros(x.shape[1]), np.ones(x.shape[1])),
    "centered": lambda x: (x.mean(0), np.ones(x.shape[1])),
    "zscore": lambda x: (x.mean(0), _safe(x.std(0))),
    "minmax": lambda x: (x.min(0), _safe(x.max(0) - x.min(0))),
}


def normalize(frame: pd.DataFrame, method: InputNorm) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Fit an input normalization on the train rows only and apply it to every split.

    Args:
        frame: A split table (with a ``split`` column).
        method: A value of ``INPUT_NORMS``.
    Returns:
        The normalized table, and the fitted statistics (one row per feature: shift, scale).
    """
    columns = feature_columns(frame)
    train = frame.loc[frame["split"] == "train", columns].to_numpy(np.float64)
    shift, scale = method(train)
    out = frame.copy()
    out[columns] = ((frame[columns].to_numpy(np.float64) - shift) / scale).astype(np.float32)
    stats = pd.DataFrame({"feature": columns, "shift": shift, "scale": scale})
    return out, stats
