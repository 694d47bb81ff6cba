"""Synthetic and small real datasets, a deterministic split, and input normalizations.

Every table has feature columns ``x_00 … x_NN`` and a target column ``y``; generators are seeded
and depend on nothing else, so the same parameters always give the same bytes.
"""

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

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


def digits(seed: int, params: DigitsParams) -> pd.DataFrame:
    """scikit-learn's 8×8 handwritten digits (1,797 images, pixel values 0–16, 10 classes).

    They ship inside scikit-learn: nothing is downloaded. ``seed`` is unused (the split shuffles).
    """
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return _frame(bunch.data, bunch.target.astype(np.int64))


@dataclass(frozen=True)
class DatasetKind:
    """A dataset generator and the task it poses."""

    generate: Callable[[int, BaseModel], pd.DataFrame]
    params: type[BaseModel]
    task: str  # "regression" or "classification"


DATASETS: dict[str, DatasetKind] = {
    "poly": DatasetKind(polynomial, PolyParams, "regression"),
    "blobs": DatasetKind(blobs, BlobsParams, "classification"),
    "digits": DatasetKind(digits, DigitsParams, "classification"),
}


def n_outputs(frame: pd.DataFrame, task: str) -> int:
    """Width of the model's head: 1 for regression, the number of classes otherwise."""
    return 1 if task == "regression" else int(frame["y"].max()) + 1


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
    n_val, n_test = round(val * len(frame)), round(test * len(frame))
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
