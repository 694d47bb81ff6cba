"""Comparing what the engine got with what the oracle wants: long tables and state dicts, to a
relative tolerance in norm (float32 sums in another order differ in the last bits, not bitwise).
"""

from collections.abc import Collection

import numpy as np
import pandas as pd
import torch

# fractions counted over units × samples move by one unit's share when a value sits on a threshold
COUNTED = {"act_saturation", "act_dead_frac", "grad_weight_zero_frac"}


def relative_error(got, want, scale=None) -> float:
    """‖got − want‖ / ‖scale‖ (``scale``: ``want`` itself unless given) over the finite entries
    (NaN and ±inf must sit in the same places).

    Relative to the whole tensor, not entry by entry: an entry near zero (a bias, a mean
    gradient) carries the rounding of its neighbours' scale, so its own ratio means nothing.
    """
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    scale = want if scale is None else np.asarray(scale, dtype=np.float64)
    finite = np.isfinite(want)
    np.testing.assert_array_equal(np.isfinite(got), finite)
    np.testing.assert_array_equal(got[~finite], want[~finite])
    norm = np.linalg.norm(scale[finite & np.isfinite(scale)])
    return float(np.linalg.norm(got[finite] - want[finite]) / norm) if norm > 0 else 0.0


def assert_tables_match(got: pd.DataFrame, want: pd.DataFrame, keys: list[str], label: str, rtol):
    """Long tables with the same key rows (in any order) and, per value of the last key, values
    within ``rtol`` relative in norm (counted fractions: within 0.01 absolute)."""

    def ordered(table: pd.DataFrame) -> tuple[list[np.ndarray], np.ndarray]:
        columns = [np.asarray(table[key], dtype=str) for key in keys]  # categories as text
        order = np.lexsort(columns[::-1])
        return [c[order] for c in columns], table["value"].to_numpy(np.float64)[order]

    (got_keys, got_values), (want_keys, want_values) = ordered(got), ordered(want)
    assert all(map(np.array_equal, got_keys, want_keys)), f"{label}: other rows"

    def row_keys(rows: np.ndarray) -> list[tuple]:  # each selected row's keys but the last
        return list(zip(*(column[rows] for column in want_keys[:-1]), strict=True))

    names = np.unique(want_keys[-1])
    groups = {name: want_keys[-1] == name for name in names}
    for name, rows in groups.items():
        got_group, want_group = got_values[rows], want_values[rows]
        if name in COUNTED:
            delta = np.abs(got_group - want_group)
            assert np.isnan(delta).all() or np.nanmax(delta) <= 0.01, f"{label} {name}"
            np.testing.assert_array_equal(np.isnan(got_group), np.isnan(want_group))
            continue
        scale = None
        std = name.removesuffix("_mean") + "_std"
        if name.endswith("_mean") and std in groups:
            # a mean carries the rounding of the values it averages: relative to their RMS
            # (a mean that is 0 in exact arithmetic, e.g. of ∂L/∂h under LayerNorm, is noise)
            std_at = dict(zip(row_keys(groups[std]), want_values[groups[std]], strict=True))
            scale = np.hypot(want_group, [std_at[row] for row in row_keys(rows)])
        error = relative_error(got_group, want_group, scale)
        assert error <= rtol, f"{label} {name}: relative error {error:.2e}"


def assert_states_match(
    got: dict, want: dict, label: str, rtol: float, before_batchnorm: Collection[str] | None = None
) -> None:
    """The same tensors under the same names, each within ``rtol`` relative in norm; but the
    parameters named in ``before_batchnorm`` (by default an MLP's hidden biases when it has
    ``pre_norms``: each sits right before a BatchNorm), compared to 1e-5 absolute."""
    assert got.keys() == want.keys(), label
    if before_batchnorm is None and "pre_norms.0.running_mean" in want:
        before_batchnorm = [n for n in want if n.startswith("linears.") and n.endswith(".bias")]
    for name, tensor in want.items():
        if name in (before_batchnorm or ()):
            # BatchNorm subtracts it again: its gradient is 0 but for rounding, and so are its
            # steps; compared in absolute terms
            torch.testing.assert_close(got[name], tensor, rtol=0, atol=1e-5)
            continue
        error = relative_error(got[name].numpy(), tensor.numpy())
        assert error <= rtol, f"{label} {name}: relative error {error:.2e}"
