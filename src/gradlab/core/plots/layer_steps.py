"""Layer × step maps: how the gradient profile changes over training, drawn with Pillow.

A map is log₁₀ RMS of the back-propagated gradient (∂L/∂h of a plain net's hidden layers,
∂L/∂x of a residual net's stream; the architecture's ``profile``) over probe step (x) and layer
(y, 1 = next to the input, at the bottom). Its colour is the layer's value less the last
layer's at the same step, on a diverging scale: blue where the gradient is smaller than at the
top (vanishing towards the input), red where it is larger (exploding), white where the profile
is level, so a profile that heals fades to white. Relative to the top, not absolute: as the
loss falls every layer's gradient falls with it, and an absolute scale would paint that fall
over the profile's shape; the top layer's own RMS at the first and the last step is written
over each map. The scale is linear in decades within ±1 (10× either way) and logarithmic in
decades beyond, so a 2× change and a 10⁻¹² underflow stay readable side by side, and it is
shared by the maps of one figure (it ends at the largest |value|, rounded up to a decade).

A cell without a value — a run that had diverged or stopped there (NaN, inf or no row), or a
profile whose top layer is 0 — is hatched; a layer that underflowed to 0 under a finite top
takes the scale's blue end.

``layer_step_maps_png`` draws a study for the report, a map per setting (seeds averaged in log
space by ``gradlab.core.report.layer_step_frames``); ``layer_step_png`` one run's map, the
picture its MLflow child carries (``layer_step_map.png``). Pillow, not matplotlib: a
matplotlib figure of 15 small heatmaps costs ~0.4 s to save (its axes and ticks, whatever the
data) where this costs ~60 ms, the report has a budget of seconds for every study, and the
driver draws a child's map (~6 ms) while the workers train.
"""

import io
import math
import textwrap
from dataclasses import dataclass

import matplotlib as mpl
import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFont

from gradlab.core.plots._style import _require
from gradlab.core.plots.profile import _font

GRADIENT_NAMES = {"grad_preact_rms": "∂L/∂h", "grad_stream_rms": "∂L/∂x"}
# The scale ends at least this many decades either side of level; within ±LINEAR decades it
# is linear in decades, beyond it logarithmic in decades.
MIN_DECADES = 1.0
LINEAR = 1.0
COLUMNS = 5  # maps per row of a study's figure, at most
PANEL = (230, 120)  # one map of the report, in pixels
CHILD_SIZE = (560, 300)  # the child run's PNG: (width, height)
CHILD_MAP = (48, 62, CHILD_SIZE[0] - 110, CHILD_SIZE[1] - 36)  # its map: left, top, right, bottom
_TICKS = (1, 2, 5, 10, 20, 50, 100, 200)  # decades labelled on the colour bar
_LEVELS = 101  # colours of the scale (odd: the middle one is level)
_WHITE, _INK, _FRAME, _HATCH, _ALERT = range(5)  # palette entries before the scale's
_BASE = [(255, 255, 255), (40, 40, 40), (120, 120, 120), (205, 205, 205), (178, 34, 34)]
_LINE = 13  # pixels between lines of small text
_SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def _palette() -> list[int]:
    """The base colours, then ``_LEVELS`` of matplotlib's RdBu_r from blue to red."""
    scale = mpl.colormaps["RdBu_r"](np.linspace(0, 1, _LEVELS))[:, :3]
    colours = _BASE + [tuple(int(round(255 * c)) for c in rgb) for rgb in scale]
    return [channel for colour in colours for channel in colour]


_PALETTE = _palette()


def grid(
    layer: np.ndarray, step: np.ndarray, value: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Long (layer, step, value) rows as a matrix: the sorted layers, the sorted steps, and the
    value per (layer, step), NaN where a row is missing (numpy indexing: a pivot costs ~5 ms)."""
    layers, steps = np.unique(layer), np.unique(step)
    matrix = np.full((len(layers), len(steps)), np.nan)
    matrix[np.searchsorted(layers, layer), np.searchsorted(steps, step)] = value
    return layers, steps, matrix


def log10_rms(values: np.ndarray) -> np.ndarray:
    """log₁₀ of RMS values: −inf where one underflowed to 0, NaN where it blew up (inf, NaN)."""
    values = np.asarray(values, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(np.isfinite(values) & (values >= 0), np.log10(values), np.nan)


def relative_to_top(log_rms: np.ndarray) -> np.ndarray:
    """Each row (layer, the last on top) less the last row at the same column: −inf − (−inf),
    a profile whose top is 0, gives NaN."""
    with np.errstate(invalid="ignore"):
        return log_rms - log_rms[-1]


def colour_limit(relative: np.ndarray) -> float:
    """The scale's end in decades: the largest finite |value| rounded up to a whole decade, at
    least ``MIN_DECADES``."""
    finite = np.abs(relative[np.isfinite(relative)])
    return max(MIN_DECADES, float(math.ceil(finite.max()))) if finite.size else MIN_DECADES


def _stretch(decades: np.ndarray) -> np.ndarray:
    """Linear within ±``LINEAR``, ``LINEAR`` + log₁₀(|x| / ``LINEAR``) beyond (continuous)."""
    size = np.abs(decades)
    with np.errstate(divide="ignore", invalid="ignore"):
        far = LINEAR + np.log10(np.maximum(size, LINEAR) / LINEAR)
    return np.sign(decades) * np.where(size <= LINEAR, size, far)


def colour_levels(relative: np.ndarray, limit: float) -> np.ndarray:
    """Palette indices of values in decades (±inf at the scale's ends); ``_HATCH`` for NaN."""
    position = np.clip(
        _stretch(np.nan_to_num(relative, nan=0.0)) / _stretch(np.array(limit)), -1, 1
    )
    levels = len(_BASE) + np.rint((position + 1) / 2 * (_LEVELS - 1)).astype(np.uint8)
    return np.where(np.isnan(relative), _HATCH, levels).astype(np.uint8)


def _regular(steps: np.ndarray, matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Columns on a regular step grid (probes come every ``log_every`` steps): a step that has
    no column is one of NaN."""
    if len(steps) < 2:
        return steps, matrix
    every = int(np.gcd.reduce(np.diff(steps).astype(int))) or 1
    regular = np.arange(steps[0], steps[-1] + every, every)
    if len(regular) == len(steps):
        return steps, matrix
    full = np.full((matrix.shape[0], len(regular)), np.nan)
    full[:, np.searchsorted(regular, steps)] = matrix
    return regular, full


def _nice_ticks(low: float, high: float, count: int = 4) -> list[int]:
    """About ``count`` + 1 round numbers (1, 2 or 5 × 10^k apart) from ``low`` to ``high``."""
    span = max(high - low, 1)
    power = 10 ** max(0, math.floor(math.log10(span / count)))  # whole steps and layers
    spacing = next(k * power for k in (1, 2, 5, 10) if span / (k * power) <= count + 0.5)
    first = math.ceil(low / spacing) * spacing
    return [int(v) for v in np.arange(first, high + 1e-9, spacing)]


@dataclass(frozen=True)
class _Map:
    """One setting's map as drawn: its cells, its title's lines, where its seeds diverged."""

    layers: np.ndarray
    steps: np.ndarray
    relative: np.ndarray  # (layer, step)
    title: list[str]
    diverged: tuple[float, ...]


def _draw_map(
    image: Image.Image,
    box: tuple[int, int, int, int],
    panel: _Map,
    limit: float,
    labels: tuple[bool, bool] = (True, True),
) -> None:
    """One map in ``box`` (left, top, right, bottom): cells, hatch where empty, frame, ticks,
    a dotted line where a seed diverged; ``labels`` says whether to name the y and x axes (the
    first column and the bottom row of a figure)."""
    draw = ImageDraw.Draw(image)
    left, top, right, bottom = box
    width, height = right - left, bottom - top
    layers = panel.layers
    steps, relative = _regular(panel.steps, panel.relative)
    codes = colour_levels(relative, limit)[::-1]  # the last layer on top
    rows = np.minimum((np.arange(height) + 0.5) * len(layers) // height, len(layers) - 1)
    cols = np.minimum((np.arange(width) + 0.5) * len(steps) // width, len(steps) - 1)
    pixels = codes[np.ix_(rows.astype(int), cols.astype(int))]
    diagonal = (np.arange(height)[:, None] + np.arange(width)[None, :]) % 7 == 0
    pixels = np.where(pixels == _HATCH, np.where(diagonal, _HATCH, _WHITE), pixels)
    image.paste(Image.fromarray(pixels.astype(np.uint8), "P"), (left, top))
    draw.rectangle((left - 1, top - 1, right, bottom), outline=_FRAME)
    font = _font(10)
    half = (steps[1] - steps[0]) / 2 if len(steps) > 1 else 0.5
    x0, x1 = steps[0] - half, steps[-1] + half

    def x(step: float) -> float:
        return left + (step - x0) / (x1 - x0) * width

    for step in panel.diverged:
        at = x(step)
        for y in range(top, bottom, 4):  # dotted
            draw.line([(at, y), (at, min(y + 1, bottom))], fill=_ALERT)
    for tick in _nice_ticks(steps[0], steps[-1]):
        draw.line([(x(tick), bottom), (x(tick), bottom + 3)], fill=_FRAME)
        draw.text((x(tick), bottom + 4), str(tick), fill=_INK, font=font, anchor="ma")
    first, last = int(layers[0]), int(layers[-1])
    for layer in sorted({first, (first + last) // 2, last}):  # the ends and the middle
        at = bottom - (layer - first + 0.5) / len(layers) * height
        draw.line([(left - 4, at), (left - 1, at)], fill=_FRAME)
        draw.text((left - 5, at), str(layer), fill=_INK, font=font, anchor="rm")
    if labels[0]:
        draw.text((left - 5, top - 3), "layer", fill=_INK, font=font, anchor="rs")
    if labels[1]:
        draw.text(
            ((left + right) / 2, bottom + 17), "probe step", fill=_INK, font=font, anchor="ma"
        )


def _decade_label(value: float) -> str:
    exponent = round(value)
    return "1×" if exponent == 0 else "10" + str(exponent).translate(_SUPERSCRIPT) + "×"


def _colour_bar(image: Image.Image, box: tuple[int, int, int, int], limit: float) -> None:
    """A vertical scale in ``box``: red (exploding) at the top, ticks at whole decades."""
    draw = ImageDraw.Draw(image)
    left, top, right, bottom = box
    height = bottom - top
    decades = np.linspace(limit, -limit, height)
    column = colour_levels(decades, limit)[:, None]
    image.paste(Image.fromarray(np.repeat(column, right - left, 1), "P"), (left, top))
    draw.rectangle((left - 1, top - 1, right, bottom), outline=_FRAME)
    font = _font(10)
    inner = [t for t in _TICKS if t < limit]
    shown: list[float] = []
    # the ends and level first, then from level outwards while a label fits
    for tick in [limit, -limit, 0.0, *(v for t in inner for v in (t, -t))]:
        position = float(_stretch(np.array(float(tick))) / _stretch(np.array(limit)))
        y = top + (1 - position) / 2 * height
        if any(abs(y - other) < 16 for other in shown):
            continue
        shown.append(y)
        draw.line([(right, y), (right + 3, y)], fill=_FRAME)
        draw.text((right + 5, y), _decade_label(tick), fill=_INK, font=font, anchor="lm")


_SUBTITLE = (
    "The gradient profile over training: RMS of the back-propagated gradient (∂L/∂h; ∂L/∂x on "
    "a residual stream) per layer (1 = next to the input) and probe step, ÷ the last layer's at "
    "the same step; seeds averaged in log space; one colour scale for the figure"
)
_SCALE_TEXT = (
    "RMS at the layer ÷ RMS at",
    "the last layer, same step",
    "(linear in decades within",
    "10⁻¹…10¹, logarithmic beyond)",
    "red: larger towards the input",
    "(exploding); blue: smaller",
    "(vanishing); white: level;",
    "hatched: no value",
)


_CHILD_KEY = (
    "red: larger towards the input (exploding), blue: smaller (vanishing), hatched: no value"
)


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def _canvas(width: int, height: int) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    image = Image.new("P", (width, height), _WHITE)
    image.putpalette(_PALETTE)
    return image, ImageDraw.Draw(image)


def _wrap(text: str, width_px: int, font: ImageFont.FreeTypeFont) -> list[str]:
    """``text`` in lines that fit ``width_px`` (by the font's width of an average letter)."""
    chars = max(20, int(width_px / font.getlength("abcdefghij∂ ") * 12))
    return textwrap.wrap(text, chars) or [""]


def _setting_maps(maps: pd.DataFrame, outcomes: pd.DataFrame) -> list[_Map]:
    """Per setting in ``outcomes``' order that has cells: its matrix and its title (the
    setting in two lines at most, the top layer's RMS at its first and last step with a value,
    and how many seeds diverged)."""
    drawn = []
    frames = dict(tuple(maps.groupby("setting", sort=False)))
    for setting, mine in outcomes.groupby("setting", sort=False):
        if setting not in frames:
            continue  # every run failed: nothing measured
        frame = frames[setting]
        layer, step = frame["layer"].to_numpy(), frame["step"].to_numpy()
        layers, steps, relative = grid(layer, step, frame["relative"].to_numpy(float))
        _, _, log_rms = grid(layer, step, frame["log_rms"].to_numpy(float))
        top = log_rms[-1][np.isfinite(log_rms[-1])]
        name = GRADIENT_NAMES.get(str(frame["quantity"].iloc[0]), "RMS")
        last = f"top {name} {10.0 ** top[0]:.0e} → {10.0 ** top[-1]:.0e}" if top.size else ""
        diverged = mine.loc[mine["status"] == "diverged", "diverged_step"].dropna()
        if len(diverged):
            last += f"{'; ' if last else ''}{len(diverged)}/{len(mine)} diverged"
        title = [*textwrap.wrap(str(setting), 40)[:2], *([last] if last else [])]
        drawn.append(
            _Map(layers, steps, relative, title, tuple(sorted(set(diverged.astype(float)))))
        )
    return drawn


def _notes(maps: pd.DataFrame, outcomes: pd.DataFrame) -> str:
    relative = maps["relative"].to_numpy(float)
    blank, floored = int(np.isnan(relative).sum()), int(np.isinf(relative).sum())
    seeds = outcomes.groupby("setting").size()
    if seeds.empty:
        return "no run of this study has statistics from training"
    if seeds.max() == 1:
        runs = f"{len(outcomes)} runs, one seed per setting"
    else:
        several = f"{seeds.min()}–{seeds.max()}" if seeds.min() < seeds.max() else seeds.max()
        runs = (
            f"{len(outcomes)} runs, {several} seeds per setting, averaged in log space; a cell "
            "has a value only where every seed has one"
        )
    return "; ".join(
        filter(
            None,
            [
                runs,
                f"{blank} cells hatched: no value (a seed had diverged or stopped there, or "
                "the top layer was 0)"
                if blank
                else "",
                f"{floored} cells of a layer at 0 (underflow) at the scale's end"
                if floored
                else "",
            ],
        )
    )


def layer_step_maps_png(maps: pd.DataFrame, outcomes: pd.DataFrame, question: str) -> bytes:
    """A study's layer × step maps, one per setting, on one colour scale (see the module
    docstring), as PNG bytes.

    Args:
        maps: ``setting``, ``quantity``, ``layer``, ``step``, ``log_rms`` (log₁₀ RMS, mean over
            seeds), ``relative`` (less the last layer's at the same step), a row per cell, NaN
            where a seed has no value (``gradlab.core.report.layer_step_frames``).
        outcomes: One row per run: ``setting``, ``status``, ``diverged_step``; its settings'
            order is the maps'.
        question: The study's question (the figure's title).
    Returns:
        The PNG's bytes.
    """
    _require(maps, ["setting", "quantity", "layer", "step", "log_rms", "relative"], "maps")
    _require(outcomes, ["setting", "status", "diverged_step"], "outcomes")
    drawn = _setting_maps(maps, outcomes)
    limit = colour_limit(maps["relative"].to_numpy(float))
    # rows as even as the columns allow: 8 maps are 2 × 4, not 5 + 3
    rows = max(1, math.ceil(len(drawn) / COLUMNS))
    columns = max(1, math.ceil(len(drawn) / rows))
    lines = max((len(m.title) for m in drawn), default=1)
    gap_x, gap_y, left, right = 52, 30 + _LINE * lines, 58, 200  # gap_y: ticks, then titles
    width = left + columns * PANEL[0] + (columns - 1) * gap_x + right
    title_font, small = _font(15), _font(10)
    heading = _wrap(question, width - 20, title_font)
    subtitle = _wrap(_SUBTITLE, width - 20, small)
    notes = _wrap(_notes(maps, outcomes), width - 20, small)
    top = 20 * len(heading) + 14 * len(subtitle) + 20 + _LINE * lines
    panels = rows * PANEL[1] + (rows - 1) * gap_y
    bar = min(panels, 240)
    height = top + max(panels + 34, bar + 12 + 13 * len(_SCALE_TEXT)) + 8 + 14 * len(notes)
    image, draw = _canvas(width, height)
    for k, line in enumerate(heading):
        draw.text((10, 8 + 20 * k), line, fill=_INK, font=title_font)
    for k, line in enumerate(subtitle):
        draw.text((10, 12 + 20 * len(heading) + 14 * k), line, fill=_FRAME, font=small)
    for index, panel in enumerate(drawn):
        row, column = divmod(index, columns)
        x0, y0 = left + column * (PANEL[0] + gap_x), top + row * (PANEL[1] + gap_y)
        for k, line in enumerate(reversed(panel.title)):  # upwards from the map
            colour = _ALERT if k == 0 and panel.diverged else _INK
            draw.text((x0, y0 - 5 - _LINE * k), line, fill=colour, font=small, anchor="ls")
        box = (x0, y0, x0 + PANEL[0], y0 + PANEL[1])
        _draw_map(image, box, panel, limit, (column == 0, index + columns >= len(drawn)))
    x = width - right + 24
    _colour_bar(image, (x, top, x + 14, top + bar), limit)
    for k, line in enumerate(_SCALE_TEXT):
        draw.text((x, top + bar + 12 + 13 * k), line, fill=_INK, font=small)
    for k, line in enumerate(notes):
        y = height - 8 - 14 * (len(notes) - 1 - k)
        draw.text((10, y), line, fill=_FRAME, font=small, anchor="ls")
    return _png(image)


def layer_step_png(
    layer_stats: pd.DataFrame, title: str = "", profile: str = "grad_preact_rms"
) -> bytes:
    """One run's layer × step map (see the module docstring) as PNG bytes, on its own scale.

    Args:
        layer_stats: One run's long per-layer statistics (its ``train`` rows are drawn).
        title: A heading above the map, e.g. the run's label.
        profile: The gradient drawn: ∂L/∂h, or ``grad_stream_rms``, a residual net's stream
            (its architecture's ``profile``).
    Returns:
        The PNG file's bytes, ``CHILD_SIZE`` pixels.
    """
    # numpy masks: this runs once per child run in the driver (pandas indexing costs more)
    rows = (layer_stats["phase"].to_numpy() == "train") & (
        layer_stats["quantity"].to_numpy() == profile
    )
    rows &= layer_stats["layer"].to_numpy() >= 1
    image, draw = _canvas(*CHILD_SIZE)
    font, small = _font(11), _font(10)
    draw.text((8, 6), title, fill=_INK, font=font)
    name = GRADIENT_NAMES.get(profile, profile)
    box = CHILD_MAP
    if not rows.any():
        draw.text((box[0], box[1]), "no statistics from training", fill=_INK, font=font)
        return _png(image)
    layers, steps, log_rms = grid(
        layer_stats["layer"].to_numpy()[rows],
        layer_stats["step"].to_numpy()[rows],
        log10_rms(layer_stats["value"].to_numpy(float)[rows]),
    )
    relative = relative_to_top(log_rms)
    limit = colour_limit(relative)
    top = log_rms[-1][np.isfinite(log_rms[-1])]
    heading = f"RMS {name} per layer and probe step ÷ the last layer's"
    if top.size:
        heading += f" (whose RMS went {10.0 ** top[0]:.0e} → {10.0 ** top[-1]:.0e})"
    draw.text((8, 22), heading, fill=_INK, font=small)
    draw.text((8, 35), _CHILD_KEY, fill=_FRAME, font=small)
    _draw_map(image, box, _Map(layers, steps, relative, [], ()), limit)
    _colour_bar(image, (box[2] + 18, box[1], box[2] + 30, box[3]), limit)
    return _png(image)
