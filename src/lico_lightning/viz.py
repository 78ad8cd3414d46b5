"""Overlay figures a person can read: saliency maps over their images, labelled, with a scale.

:func:`render_overlays` draws one row per image — the image, then one heat-map overlay per
method — with the method as column title, ``true → predicted (probability)`` beside each row,
per-tile scores (e.g. insertion / deletion), boxes where the probe has them and one colour bar.
It returns an ``(3, H, W)`` image tensor for any logger (TensorBoard ``add_image``, W&B
``log_image``) or :func:`save_png`.

Drawing uses matplotlib's colormaps and text layout (the well-kept library for the job), an
optional dependency: ``pip install "lico-lightning[viz]"``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from lico_lightning._validation import (
    check_choice,
    check_finite,
    check_int,
    check_real,
    check_tensor,
)

__all__ = ["render_overlays", "save_png", "to_display"]


def _matplotlib() -> Any:
    try:
        import matplotlib
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as err:
        raise ImportError(
            "Overlay rendering needs matplotlib, which is not installed: "
            'pip install "lico-lightning[viz]".'
        ) from err
    return matplotlib, Figure, FigureCanvasAgg


def to_display(
    images: Tensor, mean: Sequence[float] | None = None, std: Sequence[float] | None = None
) -> Tensor:
    """Undo the normalisation of ``(B, C, H, W)`` images for display: ``(B, 3, H, W)`` in [0, 1].

    With ``mean`` and ``std`` the images are de-normalised (``x * std + mean``); without them
    each image is min-max scaled. One channel is repeated to three; other channel counts are
    shown as their mean.

    Example:
        >>> to_display(torch.zeros(2, 1, 4, 4), mean=(0.5,), std=(0.2,))[0, :, 0, 0]
        tensor([0.5000, 0.5000, 0.5000])
    """
    check_tensor("images", images, ndim=4)
    x = images.detach().float().cpu()
    if mean is not None and std is not None:
        m = torch.tensor(list(mean), dtype=x.dtype).view(1, -1, 1, 1)
        s = torch.tensor(list(std), dtype=x.dtype).view(1, -1, 1, 1)
        x = x * s + m
    else:
        flat = x.flatten(1)
        lo, hi = flat.amin(1).view(-1, 1, 1, 1), flat.amax(1).view(-1, 1, 1, 1)
        x = (x - lo) / (hi - lo).clamp_min(1e-12)
    x = x.clamp(0, 1)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    elif x.shape[1] != 3:
        x = x.mean(1, keepdim=True).expand(-1, 3, -1, -1)
    return x


def _check_shape(name: str, x: object, shape: tuple[int, ...]) -> None:
    t = check_tensor(name, x)
    if tuple(t.shape) != shape:
        raise ValueError(f"Expected `{name}` of shape {shape}, but got {tuple(t.shape)}.")


def _format_class(index: int, class_names: Sequence[str] | None) -> str:
    if class_names is not None and 0 <= index < len(class_names):
        return str(class_names[index])
    return str(index)


def render_overlays(
    images: Tensor,
    saliency: Mapping[str, Tensor],
    *,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    labels: Tensor | None = None,
    predictions: Tensor | None = None,
    probabilities: Tensor | None = None,
    class_names: Sequence[str] | None = None,
    scores: Mapping[str, Mapping[str, Tensor]] | None = None,
    boxes: Sequence[Tensor] | None = None,
    tile_size: int = 128,
    alpha: float = 0.5,
    cmap: str = "jet",
    title: str | None = None,
    row_captions: Sequence[str] | None = None,
    note: str | None = None,
) -> Tensor:
    """One labelled figure: a row per image; columns = the image, then one overlay per method.

    Each overlay shows ``alpha`` of the heat map (``cmap``, values in [0, 1], one colour bar for
    all tiles) over the de-normalised image. The image column is labelled
    ``true`` / ``→ predicted (p)``, each overlay tile with its ``scores`` (e.g. ``ins 0.81 · del
    0.12``); boxes ``(x1, y1, x2, y2)`` in pixels are drawn on every tile of their image.

    Args:
        images: ``(B, C, H, W)`` normalised images.
        saliency: ``{method: (B, H, W)}`` maps in [0, 1].
        mean: per-channel normalisation mean (``None`` → per-image min-max display).
        std: per-channel normalisation std.
        labels: ``(B,)`` true classes.
        predictions: ``(B,)`` predicted classes.
        probabilities: ``(B,)`` probability of the predicted class.
        class_names: names shown instead of class indices.
        scores: ``{method: {short name: (B,) values}}`` written under each overlay tile.
        boxes: ``B`` tensors ``(K_i, 4)`` of pixel boxes.
        tile_size: side of each tile in pixels (>= 96).
        alpha: heat-map opacity.
        cmap: a matplotlib colormap name.
        title: figure title (e.g. the step).
        row_captions: ``B`` texts under the image column instead of ``true`` / ``→ predicted``
            (e.g. a caption and its phrase; lines are wrapped to the tile's width).
        note: text under the title (wrapped to the figure's width), e.g. each method's mean
            score ± its standard error over the probes.

    Returns:
        ``(3, H', W')`` float image in [0, 1].

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> grid = render_overlays(torch.rand(2, 1, 8, 8, generator=g),
        ...     {"gradcam": torch.rand(2, 8, 8, generator=g)}, labels=torch.tensor([3, 1]),
        ...     predictions=torch.tensor([3, 7]), probabilities=torch.tensor([0.9, 0.4]))
        >>> grid.shape[0], grid.shape[1] >= 2 * 96, grid.shape[2] >= 2 * 96
        (3, True, True)
    """
    check_tensor("images", images, ndim=4)
    batch, _, height, width = images.shape
    if not saliency:
        raise ValueError("Expected at least one saliency map in `saliency`, but got none.")
    for name, maps in saliency.items():
        _check_shape(f"saliency[{name!r}]", maps, (batch, height, width))
        check_finite(f"saliency[{name!r}]", maps)
    for name, value in (
        ("labels", labels),
        ("predictions", predictions),
        ("probabilities", probabilities),
    ):
        if value is not None:
            _check_shape(name, value, (batch,))
    if boxes is not None and len(boxes) != batch:
        raise ValueError(f"Expected {batch} entries in `boxes`, but got {len(boxes)}.")
    if row_captions is not None and len(row_captions) != batch:
        raise ValueError(
            f"Expected {batch} entries in `row_captions`, but got {len(row_captions)}."
        )
    check_int("tile_size", tile_size, 96)
    check_real("alpha", alpha, low=0.0, strict=False)
    matplotlib, Figure, FigureCanvasAgg = _matplotlib()
    check_choice("cmap", cmap, list(matplotlib.colormaps))
    colormap = matplotlib.colormaps[cmap]

    shown = to_display(images, mean, std).permute(0, 2, 3, 1).numpy()
    methods = list(saliency)
    columns = 1 + len(methods)
    dpi = 100
    tile = tile_size / dpi
    text_h = 0.42  # inches of label text under each tile
    if row_captions is not None:
        lines = max(_wrap(str(c), tile_size).count("\n") + 1 for c in row_captions)
        text_h = max(text_h, 0.12 * lines + 0.06)
    bar_w = 0.9
    fig_w = columns * tile + bar_w + 0.2
    head = 0.3 if title else 0.0
    if note:
        note = _wrap(note, int(fig_w * dpi * 0.9))
        head += 0.13 * (note.count("\n") + 1) + 0.05
    fig_h = batch * (tile + text_h) + 0.35 + head
    fig = Figure(figsize=(fig_w, fig_h), dpi=dpi, facecolor="white")
    FigureCanvasAgg(fig)
    top = 0.35 + head
    if title:
        fig.text(0.5, 1 - 0.15 / fig_h, title, ha="center", va="center", fontsize=9)
    if note:
        fig.text(
            0.5, 1 - (0.32 if title else 0.05) / fig_h, note, ha="center", va="top", fontsize=7
        )
    for row in range(batch):
        for col in range(columns):
            left = (0.1 + col * tile) / fig_w
            bottom = 1 - (top + row * (tile + text_h) + tile) / fig_h
            ax = fig.add_axes((left, bottom, 0.96 * tile / fig_w, 0.96 * tile / fig_h))
            ax.set_xticks([])
            ax.set_yticks([])
            ax.imshow(shown[row], interpolation="nearest")
            if col == 0:
                if row_captions is not None:
                    caption = _wrap(str(row_captions[row]), tile_size)
                else:
                    caption = _row_caption(row, labels, predictions, probabilities, class_names)
                heading = "image"
            else:
                method = methods[col - 1]
                heat = saliency[method][row].detach().float().cpu().clamp(0, 1).numpy()
                ax.imshow(
                    heat, cmap=colormap, vmin=0.0, vmax=1.0, alpha=alpha, interpolation="nearest"
                )
                caption = _score_caption(method, row, scores)
                heading = method
            if row == 0:
                ax.set_title(heading, fontsize=9, pad=3)
            ax.text(0.5, -0.04, caption, transform=ax.transAxes, ha="center", va="top", fontsize=7)
            if boxes is not None:
                _draw_boxes(ax, boxes[row], matplotlib)
            ax.set_xlim(-0.5, width - 0.5)
            ax.set_ylim(height - 0.5, -0.5)
    span = min(batch, 3) * (tile + text_h) - text_h  # the bar spans (at most) three rows
    bar_ax = fig.add_axes(
        (
            (0.1 + columns * tile + 0.15) / fig_w,
            1 - (top + span) / fig_h,
            0.15 / fig_w,
            span / fig_h,
        )
    )
    scale = matplotlib.cm.ScalarMappable(
        norm=matplotlib.colors.Normalize(vmin=0.0, vmax=1.0), cmap=colormap
    )
    bar = fig.colorbar(scale, cax=bar_ax)
    bar.set_label("saliency (normalised)", fontsize=7)
    bar.ax.tick_params(labelsize=7)
    fig.canvas.draw()
    rgba = torch.from_numpy(np.asarray(fig.canvas.buffer_rgba()).copy())
    return rgba[..., :3].permute(2, 0, 1).float() / 255.0


def _row_caption(
    row: int,
    labels: Tensor | None,
    predictions: Tensor | None,
    probabilities: Tensor | None,
    class_names: Sequence[str] | None,
) -> str:
    parts = []
    if labels is not None:
        parts.append(f"true {_format_class(int(labels[row]), class_names)}")
    if predictions is not None:
        pred = f"→ pred {_format_class(int(predictions[row]), class_names)}"
        if probabilities is not None:
            pred += f" ({float(probabilities[row]):.2f})"
        parts.append(pred)
    return "\n".join(parts)


def _wrap(text: str, tile_size: int) -> str:
    """Wrap every line of ``text`` to about the width of a tile at font size 7."""
    import textwrap

    width = max(12, tile_size // 5)
    return "\n".join(textwrap.fill(line, width) for line in text.split("\n"))


def _score_caption(method: str, row: int, scores: Mapping[str, Mapping[str, Tensor]] | None) -> str:
    if not scores or method not in scores:
        return ""
    return " · ".join(f"{name} {float(values[row]):.2f}" for name, values in scores[method].items())


def _draw_boxes(ax: Any, boxes: Tensor, matplotlib: Any) -> None:
    """A white line under a dashed black one: visible on dark and on bright tiles."""
    styles = (
        {"edgecolor": "white", "linewidth": 1.5},
        {"edgecolor": "black", "linewidth": 0.6, "linestyle": "--"},
    )
    for x1, y1, x2, y2 in boxes.detach().float().cpu().reshape(-1, 4).tolist():
        for style in styles:
            ax.add_patch(
                matplotlib.patches.Rectangle(
                    (x1 - 0.5, y1 - 0.5), x2 - x1, y2 - y1, fill=False, **style
                )
            )


def save_png(image: Tensor, path: str | Path) -> Path:
    """Write an ``(3, H, W)`` image in [0, 1] as a PNG file (parent folders created).

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as d:
        ...     save_png(torch.ones(3, 4, 4), Path(d) / "a" / "x.png").name
        'x.png'
    """
    from PIL import Image

    check_tensor("image", image, ndim=3)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    array = (image.detach().float().cpu().clamp(0, 1) * 255).round().to(torch.uint8)
    Image.fromarray(array.permute(1, 2, 0).numpy()).save(path)
    return path
