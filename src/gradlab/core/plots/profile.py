"""One run's layer profile as a small PNG: the picture each MLflow child run carries.

Two panels: RMS ∂L/∂h per hidden layer (a residual net: ∂L/∂x on its stream) and ‖∂L/∂W‖ per
layer (the last is the head), each at init (grey) and at the last probe step of training (blue),
on log axes; the first panel adds the
mean-field prediction at init (dashed orange, scaled to the measured last hidden layer). A line
that falls towards layer 1 is a vanishing gradient, one that rises an exploding one.

It is drawn with Pillow, not matplotlib: the driver draws one per run while the workers train
(≈ 120 on the default grid), and a matplotlib figure costs ≈ 40 ms where this costs a few
(benchmarks/tracking_cost.py prints it). Values a log axis cannot show (≤ 0, non-finite) leave
a gap.
"""

import functools
import importlib.util
import io
import math
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFont

WIDTH, HEIGHT = 720, 270
_MARGIN = {"left": 58, "right": 14, "top": 58, "bottom": 34}
_GAP = 70  # between the panels: room for the second panel's tick labels
_COLORS = {"init": (140, 140, 140), "end": (31, 119, 180), "theory": (255, 127, 14)}
_INK, _GRID = (40, 40, 40), (225, 225, 225)
# A palette image: PNG-encoding it costs ~1 ms where the same RGB image costs ~5 ms.
_PALETTE = [(255, 255, 255), _INK, _GRID, *_COLORS.values()]
_LEGEND = [("at init", "init"), ("at the end", "end"), ("theory at init", "theory")]


@functools.cache
def _font(size: int = 11) -> ImageFont.FreeTypeFont:
    """DejaVu Sans at ``size`` pixels, which matplotlib ships (it has ∂ and ‖), found without
    importing matplotlib."""
    spec = importlib.util.find_spec("matplotlib")
    assert spec is not None and spec.submodule_search_locations, "matplotlib is a dependency"
    package = Path(spec.submodule_search_locations[0])
    return ImageFont.truetype(str(package / "mpl-data/fonts/ttf/DejaVuSans.ttf"), size)


def _lines(layer_stats: pd.DataFrame, quantity: str) -> dict[str, pd.Series]:
    """Per line (init, end, theory): the quantity's value per layer, indexed by layer."""
    # numpy masks: this runs once per child run in the driver, pandas indexing cost 2× the drawing
    phase = layer_stats["phase"].to_numpy()
    step = layer_stats["step"].to_numpy()
    layer = layer_stats["layer"].to_numpy()
    value = layer_stats["value"].to_numpy(float)
    rows = (layer_stats["quantity"].to_numpy() == quantity) & (layer > 0)

    def line(mask: np.ndarray) -> pd.Series:
        return pd.Series(value[mask], index=layer[mask]).sort_index()

    lines = {}
    init = line(rows & (phase == "init"))
    if not init.empty:
        lines["init"] = init
    train = rows & (phase == "train")
    if train.any():
        lines["end"] = line(train & (step == step[train].max()))
    theory = line(rows & (phase == "theory"))
    if not theory.empty and not init.empty and theory.index.max() in init.index:
        # theory's profile is relative (last hidden layer = 1): pin it to the measured one
        lines["theory"] = theory * init[theory.index.max()]
    return lines


def _decades(lines: dict[str, pd.Series]) -> tuple[int, int] | None:
    values = np.concatenate([line.to_numpy(float) for line in lines.values()] or [np.array([])])
    values = values[np.isfinite(values) & (values > 0)]
    if not len(values):
        return None
    low, high = math.floor(np.log10(values.min())), math.ceil(np.log10(values.max()))
    return (low, high) if high > low else (low - 1, high + 1)


def _panel(
    draw: ImageDraw.ImageDraw,
    box: tuple[int, int, int, int],
    title: str,
    lines: dict[str, pd.Series],
    font: ImageFont.FreeTypeFont,
) -> None:
    left, top, right, bottom = box
    draw.text((left, top - 20), title, fill=_INK, font=font)
    draw.rectangle(box, outline=_INK)
    decades = _decades(lines)
    if decades is None:
        draw.text((left + 10, (top + bottom) // 2), "no finite value", fill=_INK, font=font)
        return
    low, high = decades
    layers = sorted(set().union(*(line.index for line in lines.values())))
    first, last = layers[0], layers[-1]

    def x(layer: float) -> float:
        return left + (right - left) * (0.5 if last == first else (layer - first) / (last - first))

    def y(value: float) -> float:
        return bottom - (bottom - top) * (math.log10(value) - low) / (high - low)

    step = max(1, math.ceil((high - low) / 6))  # at most ~6 labelled decades
    for decade in range(low, high + 1, step):
        at = y(10.0**decade)
        draw.line([(left, at), (right, at)], fill=_GRID)
        draw.text((left - 6, at), f"1e{decade}", fill=_INK, font=font, anchor="rm")
    ticks = sorted({first, last, *layers[:: max(1, len(layers) // 6)]})
    for layer in ticks:
        draw.text((x(layer), bottom + 4), str(layer), fill=_INK, font=font, anchor="ma")
    draw.text(((left + right) / 2, bottom + 17), "layer", fill=_INK, font=font, anchor="ma")
    for name, line in lines.items():
        points = [
            (x(layer), y(value)) if math.isfinite(value) and value > 0 else None
            for layer, value in line.items()
        ]
        _draw_line(draw, points, name)


def _draw_line(
    draw: ImageDraw.ImageDraw, points: list[tuple[float, float] | None], name: str
) -> None:
    """One profile's points, joined where consecutive ones are finite; theory's dashed."""
    segment: list[tuple[float, float]] = []
    for point in [*points, None]:
        if point is not None:
            segment.append(point)
            continue
        if len(segment) > 1:
            if name == "theory":  # dashed: every other piece of each segment
                for a, b in zip(segment[::2], segment[1::2], strict=False):
                    draw.line([a, b], fill=_COLORS[name], width=2)
            else:
                draw.line(segment, fill=_COLORS[name], width=2)
        for px, py in segment:
            draw.ellipse([px - 2.5, py - 2.5, px + 2.5, py + 2.5], fill=_COLORS[name])
        segment = []


def profile_png(
    layer_stats: pd.DataFrame, title: str = "", profile: str = "grad_preact_rms"
) -> bytes:
    """The run's layer profile (see the module docstring) as PNG bytes.

    Args:
        layer_stats: One run's long per-layer statistics (phases ``init``, ``train``, ``theory``).
        title: A heading above the panels, e.g. the run's label.
        profile: The gradient drawn in the first panel: ∂L/∂h, or ``grad_stream_rms``, a
            residual net's stream (its architecture's ``profile``).
    Returns:
        The PNG file's bytes.
    """
    image = Image.new("P", (WIDTH, HEIGHT), 0)  # palette entry 0: white
    image.putpalette([channel for color in _PALETTE for channel in color])
    draw = ImageDraw.Draw(image)  # an RGB fill is looked up in the palette
    font = _font()
    draw.text((8, 4), title, fill=_INK, font=font)
    inner = WIDTH - _MARGIN["left"] - _MARGIN["right"] - _GAP
    panel = inner // 2
    top, bottom = _MARGIN["top"], HEIGHT - _MARGIN["bottom"]
    boxes = [
        (_MARGIN["left"], top, _MARGIN["left"] + panel, bottom),
        (_MARGIN["left"] + panel + _GAP, top, _MARGIN["left"] + 2 * panel + _GAP, bottom),
    ]
    headings = {
        "grad_preact_rms": "RMS ∂L/∂h per hidden layer",
        "grad_stream_rms": "RMS ∂L/∂x on the stream into each block",
    }
    panels = [
        (headings[profile], profile),
        ("‖∂L/∂W‖ per layer (the last is the head)", "grad_weight_norm"),
    ]
    drawn = [_lines(layer_stats, quantity) for _, quantity in panels]
    for box, (heading, _), lines in zip(boxes, panels, drawn, strict=True):
        _panel(draw, box, heading, lines, font)
    shown = set().union(*drawn)
    at = 8
    for text, key in _LEGEND:  # a line under the title: a run's label can be long
        if key in shown:
            draw.line([(at, 29), (at + 18, 29)], fill=_COLORS[key], width=3)
            draw.text((at + 22, 22), text, fill=_INK, font=font)
            at += 120
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()
