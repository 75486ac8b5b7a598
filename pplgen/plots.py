"""Figures of a run: the training curve and grids of images.

Each function writes a PNG of a :class:`matplotlib.figure.Figure` built with
matplotlib's object API, never through pyplot: no global figure is left
open and matplotlib's backend is left as the user set it (a notebook keeps
its inline figures; a machine without a display needs nothing)::

    plot_losses(result.history, result.evaluations, "runs/vae/loss.png")
    image_grid(vae.sample(64), "runs/vae/samples.png", title="samples")
"""

import math

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.ticker import FormatStrFormatter, LogLocator

from pplgen.files import write_atomically


def _smooth(values, window):
    """Trailing moving average of ``values`` over ``window`` points (fewer at the start)."""
    values = np.asarray(values, dtype=float)
    sums = np.cumsum(np.insert(values, 0, 0.0))
    counts = np.minimum(np.arange(1, len(values) + 1), window)
    return (sums[1:] - sums[np.arange(1, len(values) + 1) - counts]) / counts


def plot_losses(history, evaluations, path, *, title="training"):
    """Training loss per datum against the step, with held-out −log p(x) as points.

    :param history: ``FitResult.history``: dicts with ``step``, ``loss`` (a
        batch total) and ``batch_size``.
    :param evaluations: ``FitResult.evaluations``: dicts with ``step`` and
        ``log_likelihood`` (mean per datum); may be empty.
    :param path: where to write the PNG.

    A discriminator's loss in the history (``gan``, ``avb``) is drawn too.
    """
    steps = [row["step"] for row in history]
    losses = [row["loss"] / row["batch_size"] for row in history]
    window = max(1, min(100, len(losses) // 20))
    figure = Figure(figsize=(7, 4.5))
    axes = figure.subplots()
    axes.plot(steps, losses, color="tab:blue", alpha=0.25, linewidth=0.8, label="training loss per datum")
    axes.plot(steps, _smooth(losses, window), color="tab:blue", linewidth=1.8, label=f"moving average ({window} steps)")
    if history and "discriminator_loss" in history[0]:
        critic = [row["discriminator_loss"] / row["batch_size"] for row in history]
        axes.plot(
            steps, _smooth(critic, window), color="tab:green", linewidth=1.8, label="discriminator loss per datum"
        )
    if evaluations:
        axes.plot(
            [row["step"] for row in evaluations],
            [-row["log_likelihood"] for row in evaluations],
            "o-",
            color="tab:orange",
            label="held-out −log p(x)",
        )
    if losses and min(losses) > 0:
        _log_scale(axes)
    axes.set_xlabel("step")
    axes.set_ylabel("nats per datum (lower is better)")
    axes.set_title(title)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend()
    _save(figure, path)


def _log_scale(axes):
    """A logarithmic y axis labelled with plain numbers (early losses dwarf later ones)."""
    axes.set_yscale("log")
    axes.yaxis.set_minor_locator(LogLocator(base=10, subs=(1.5, 2.0, 3.0, 4.0, 6.0)))
    for axis_formatter in (axes.yaxis.set_major_formatter, axes.yaxis.set_minor_formatter):
        axis_formatter(FormatStrFormatter("%g"))


def image_grid(images, path, *, rows=None, title=None):
    """Write ``images`` as one grey-level grid, filled row by row.

    :param images: tensor or array ``(N, H, W)``, or ``(N, D)`` with D a
        square number (flattened square images), values in ``[0, 1]``.
    :param rows: number of rows (default: about the square root of N).
    """
    images = _as_square_images(images)
    count, height, width = images.shape
    rows = rows or math.ceil(math.sqrt(count))
    columns = math.ceil(count / rows)
    pad = 1
    canvas = np.ones((rows * (height + pad) + pad, columns * (width + pad) + pad))
    for index, image in enumerate(images):
        top = pad + (index // columns) * (height + pad)
        left = pad + (index % columns) * (width + pad)
        canvas[top : top + height, left : left + width] = image
    title_lines = title.count("\n") + 1 if title else 0
    figure = Figure(figsize=(max(4.0, columns * 0.6 + 0.4), rows * 0.6 + 0.4 + 0.3 * title_lines))
    axes = figure.subplots()
    axes.imshow(canvas, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    axes.set_axis_off()
    if title:
        axes.set_title(title)
    _save(figure, path)


def _as_square_images(images):
    """``(N, H, W)`` float array from a tensor or array of images."""
    if isinstance(images, torch.Tensor):
        images = images.detach().cpu().numpy()
    images = np.asarray(images, dtype=float)
    if images.ndim == 2:
        side = math.isqrt(images.shape[1])
        if side * side != images.shape[1]:
            raise ValueError(f"flattened images of size {images.shape[1]} are not square; pass them as (N, H, W)")
        images = images.reshape(len(images), side, side)
    if images.ndim != 3 or len(images) == 0:
        raise ValueError(f"expected a non-empty stack of images (N, H, W) or (N, H*W), got shape {images.shape}")
    return images


def _save(figure, path):
    figure.tight_layout()
    write_atomically(path, lambda temporary: figure.savefig(temporary, dpi=120))


def plot_gradient_variance(results, path, *, title="gradient estimators"):
    """Bar charts of variance and SNR per parameter group, one bar per labelled result.

    ``results`` maps a label (e.g. an engine name) to a
    :class:`~pplgen.diagnostics.GradientVariance`.
    """
    labels = list(results)
    groups = sorted({group for result in results.values() for group in result.groups})
    figure = Figure(figsize=(10, 3.8))
    axes = figure.subplots(1, 2)
    width = 0.8 / len(labels)
    for i, label in enumerate(labels):
        stats = results[label].groups
        positions = np.arange(len(groups)) + i * width
        for axis, field in zip(axes, ("variance", "snr")):
            values = [getattr(stats[g], field).item() if g in stats else np.nan for g in groups]
            axis.bar(positions, values, width, label=label)
    for axis, name in zip(axes, ("mean per-coordinate variance", "signal-to-noise ratio")):
        axis.set_xticks(np.arange(len(groups)) + 0.4 - width / 2, groups)
        axis.set_yscale("log")
        axis.set_title(name)
    axes[0].legend()
    figure.suptitle(title)
    figure.tight_layout()
    write_atomically(path, lambda temporary: figure.savefig(temporary, dpi=100))
