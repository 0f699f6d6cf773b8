"""What a report is made of (Answer, Report, tables, wording), and the figure helpers questions share."""
from typing import NamedTuple

import numpy as np

from stats import arch_label, as_array, epochs_axis, final

MAX_BULLETS = 4  # an answer is a headline and at most this many findings, each with its numbers


class Answer(NamedTuple):
    """An exercise item's reply: headline, at most MAX_BULLETS findings with numbers, a summary key."""
    item: str
    asked: str
    headline: str
    bullets: list
    key: str = ""


class Report(NamedTuple):
    body: list  # markdown blocks (tables, notes), in order
    figures: dict  # file name -> (matplotlib figure, a one-line caption: what to look at)
    answers: list  # Answers, shown first


# Okabe and Ito's colours, told apart by colour-blind eyes (no yellow: pale on white), then Tol's wine
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#000000", "#882255"]


def markdown_table(header, rows):
    lines = ["| " + " | ".join(str(h) for h in header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def show_value(value):  # a setting as --help and the reports show it
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, list):
        return " ".join(show_value(v) for v in value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def render(templates, finding):
    """A finding as words: its case's template, a format string or a function of it."""
    template = templates[finding["case"]]
    return template(finding) if callable(template) else template.format(**finding)


def figure(figsize):
    """On the Agg canvas, no pyplot: no global state. matplotlib imported here, not at every start (0.3 s)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def subplots(*grid, figsize, **kwargs):
    fig = figure(figsize)
    return fig, fig.subplots(*grid, **kwargs)


def plot_mean_band(ax, x, runs_values, label, color=None, each_seed=False, band=True, **kwargs):
    """Mean over seeds, min..max band (None: a gap); each_seed: every seed's line, where a mean hides one."""
    values = np.array([as_array(vs) for vs in runs_values])
    if each_seed:
        lines = [ax.plot(x, seed_values, color=color, linestyle=style, **kwargs)[0]
                 for seed_values, style in zip(values, ["-", "--", ":", "-."] * len(values))]
        lines[0].set_label(f"{label} (each seed: they disagree)")
        return
    line, = ax.plot(x, values.mean(0), label=label, color=color, **kwargs)
    if band and len(values) > 1:
        ax.fill_between(x, values.min(0), values.max(0), color=line.get_color(), alpha=0.2, linewidth=0)


def finish(ax, xlabel, ylabel, title, legend=True, **legend_kwargs):
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    if legend:
        ax.legend(**legend_kwargs)
    ax.grid(alpha=0.3)


def cielab(rgb):
    """sRGB colors [N, 3] in 0..1 to CIELAB (D65 white), where a distance approximates a seen difference."""
    linear = np.where(rgb > 0.04045, ((rgb + 0.055) / 1.055) ** 2.4, rgb / 12.92)
    xyz = linear @ np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]).T
    f = xyz / np.array([0.95047, 1.0, 1.08883])
    f = np.where(f > 0.008856, np.cbrt(f), 7.787 * f + 16 / 116)
    return np.stack([116 * f[:, 1] - 16, 500 * (f[:, 0] - f[:, 1]), 200 * (f[:, 1] - f[:, 2])], axis=1)


def class_colors(n):
    """n RGB colors far apart to the eye: greedy farthest in CIELAB, mid-lightness so black rings show."""
    levels = np.linspace(0, 1, 12)
    grid = np.stack(np.meshgrid(levels, levels, levels, indexing="ij"), axis=-1).reshape(-1, 3)
    lab = cielab(grid)
    keep = (lab[:, 0] > 35) & (lab[:, 0] < 90)
    grid, lab = grid[keep], lab[keep]
    chosen = [int(np.argmax(np.hypot(lab[:, 1], lab[:, 2])))]  # the most saturated first
    distance = np.linalg.norm(lab - lab[chosen[0]], axis=1)
    while len(chosen) < n:
        chosen.append(int(np.argmax(distance)))
        distance = np.minimum(distance, np.linalg.norm(lab - lab[chosen[-1]], axis=1))
    return grid[chosen]


def map_aspect(extent):
    """Longitude/latitude aspect of a map of extent (degrees), so that it is not stretched."""
    return 1 / np.cos(np.radians(np.clip(np.mean(extent[2:]), -80, 80)))


def map_figure(extent, map_width, other_width=0, maps=1):
    """A figure for `maps` maps of extent, map_width inches wide each, beside other_width inches."""
    height = map_width * (extent[3] - extent[2]) / (extent[1] - extent[0]) * map_aspect(extent) + 0.8
    return figure((maps * map_width + other_width, height))


def label_classes(ax, points, labels, class_names):
    """Each class's name at its test points' median, largest first, a line off names written, or left out."""
    from matplotlib.patheffects import withStroke
    counts = np.bincount(labels, minlength=len(class_names))
    placed = []
    for label in np.argsort(-counts, kind="stable")[:np.count_nonzero(counts)]:
        middle = np.median(points[labels == label], axis=0)
        for shift in (0, 8, -8):  # points
            text = ax.annotate(class_names[label], middle, xytext=(0, shift), textcoords="offset points",
                               ha="center", va="center", fontsize=7,
                               path_effects=[withStroke(linewidth=2.5, foreground="white")])
            box = text.get_window_extent(ax.figure.canvas.get_renderer())
            if not any(box.overlaps(other) for other in placed):
                placed.append(box)
                break
            text.remove()  # no free line: left out (the Balkans' countries sit closer than their names)


def draw_map(ax, result, tag, run, title):
    """A saved map: the plane in predicted class colors, test points in their true class's, errors ringed."""
    arrays, extent, class_names = result["arrays"], result["map_extent"], result["data"]["class_names"]
    grid, points, labels = arrays[f"grid_{tag}"], arrays["test_points"], arrays["test_labels"]
    wrong = arrays[f"test_pred_{tag}"] != labels
    colors = class_colors(len(class_names))
    ax.imshow(colors[grid], origin="lower", extent=extent, interpolation="nearest")
    ax.scatter(points[~wrong, 0], points[~wrong, 1], c=colors[labels[~wrong]], s=5, edgecolors="white",
               linewidths=0.2)
    ax.scatter(points[wrong, 0], points[wrong, 1], c=colors[labels[wrong]], s=14, edgecolors="black",
               linewidths=0.9, label=f"misclassified test point ({wrong.mean():.1%}): its true class's color")
    ax.set_aspect(map_aspect(extent))
    ax.set(xlim=extent[:2], ylim=extent[2:], xlabel="longitude (degrees)", ylabel="latitude (degrees)",
           title=f"{title}{arch_label(run)}, seed {run['seed']}: test accuracy {final(run, 'test_acc'):.3f}")
    label_classes(ax, points, labels, class_names)
    ax.legend(loc="upper left", fontsize=8, framealpha=0.9)


SPLITS = (("val", "validation", PALETTE[3], "-", 3),  # split, label, color, line style, line width
          ("train", "train (train mode, over the epoch)", PALETTE[0], "-", 1.2),
          ("test", "test", PALETTE[2], "--", 1.3),
          ("train_eval", "train (eval mode)", PALETTE[4], ":", 1.6))


def plot_split_curves(ax_loss, ax_acc, runs, title):
    """Loss and accuracy (ax_acc None: none) per epoch of each split; validation wide, under the others."""
    for split, label, color, style, width in SPLITS[:3]:
        if split == "val" and len(runs) > 1:
            label += f" (band: min..max over {len(runs)} seeds)"
        for ax, metric in ((ax_loss, "loss"), (ax_acc, "acc")):
            if ax is not None:
                plot_mean_band(ax, epochs_axis(runs), [r["history"][f"{split}_{metric}"] for r in runs],
                               label=label, color=color, linestyle=style, linewidth=width,
                               band=split == "val", alpha=0.6 if split == "val" else 1)
    finish(ax_loss, "epoch", "loss (cross-entropy, nats)", f"{title}: loss")
    if ax_acc is not None:
        finish(ax_acc, "epoch", "accuracy (fraction correct)", f"{title}: accuracy")
