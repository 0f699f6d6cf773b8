"""6.2.1-5 vanishing gradients: ||grad W||^2 of every layer of a 100-layer net, per epoch, and why some are
exactly 0. Its gradient tables and panels serve residual too.
"""
import numpy as np
from matplotlib.ticker import MaxNLocator, NullLocator

from plots import PALETTE, from_sentences, Report, markdown_table, plt, render
from runner import Question
from section6 import GRADIENTS, arch_of, seed_runs, train_group
from stats import arch_label, finals, status_text


def train_gradients(settings, data, reads, env):
    results, _ = train_group(data, seed_runs(settings, settings["lr"]), arch_of(settings), settings, env,
                             f"depth {settings['depth']} gradients", record_grads=True, diagnose=("init",))
    return {"runs": results}


DECADES = 100  # ||grad W||^2: a first layer two decades above the output layer explodes; below, vanishes
GRADIENT_LAYERS = (0, 30, 60, 90, 95, 99)  # the layers the exercise asks to plot


def seed_grads(run):
    """One run's per-epoch mean ||grad W||^2: [epochs, layers]; NaN where it diverged."""
    n_layers = len(run["init_activation_norm"])
    return np.array([[np.nan] * n_layers if epoch is None else epoch
                     for epoch in run["history"]["grad_sq_norm"]], dtype=float)


def zero_layers(run):
    """Layers whose gradient is exactly zero in every epoch."""
    epochs = [e for e in run["history"]["grad_sq_norm"] if e is not None]
    return [layer for layer in range(len(epochs[0])) if all(e[layer] == 0 for e in epochs)] if epochs else []


def layer_ranges(layers):
    """[0, 1, 2, 5] -> '0-2, 5'."""
    ranges = []
    for layer in layers:
        if ranges and ranges[-1][1] == layer - 1:
            ranges[-1][1] = layer
        else:
            ranges.append([layer, layer])
    return ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in ranges) or "none"


def dead_layer_finding(runs):
    """Are the layers with an exactly-zero gradient in every epoch those at and below a layer dead at
    initialisation (its input exactly 0 on the whole first batch)? explained: (seed, dead layer);
    unexplained: (seed, its zero layers)."""
    explained, unexplained = [], []
    for r in runs:
        zeros = zero_layers(r)
        cut = max([layer for layer, norm in enumerate(r["init_activation_norm"]) if norm == 0], default=None)
        if zeros and cut is not None and zeros == list(range(cut + 1)):
            explained.append((r["seed"], cut))
        elif zeros:
            unexplained.append((r["seed"], zeros))
    case = ("mixed" if explained and unexplained else "dead_layer" if explained else
            "no_dead_layer" if unexplained else "no_zeros")
    return dict(case=case, explained=explained, unexplained=unexplained)


def vanishing_findings(runs):
    """6.2.1-5: vanishing or exploding? The last epoch's mean ||grad W||^2 per layer (over the seeds that
    trained), and the exactly-zero layers, which dead_layer_finding explains."""
    ok = [r for r in runs if r["status"] == "ok"]
    if not ok:
        return [dict(case="all_diverged")]
    last = np.mean([seed_grads(r)[-1] for r in ok], axis=0)
    first, output = last[0], last[-1]
    if first > DECADES * output:
        return [dict(case="exploding", first=first, output=output, ratio=first / output)]
    zeros = [(r["seed"], zero_layers(r)) for r in ok if zero_layers(r)]
    if zeros:
        lowest = []  # per seed, the lowest layer still getting a gradient in the last epoch (no mean over 0s)
        for r in ok:
            grads = seed_grads(r)[-1]
            layer = next((i for i, g in enumerate(grads) if g > 0), None)
            if layer is not None:
                lowest.append((r["seed"], layer, grads[layer], np.log10(grads[-1] / grads[layer])))
        return [dict(case="exact_zeros", output=output, lowest=lowest, zeros=zeros), dead_layer_finding(ok),
                dict(case="what_fixes_it")]
    if output > DECADES * first:
        return [dict(case="vanishing", first=first, output=output, ratio=output / first)]
    return [dict(case="neither", first=first, output=output)]


def dead_layer_text(f):
    explained = "; ".join(f"seed {seed}: layers 0-{cut}, dead layer {cut}" for seed, cut in f["explained"])
    unexplained = ", ".join(f"seed {seed} (layers {layer_ranges(zeros)})" for seed, zeros in f["unexplained"])
    sentences = []
    if explained:
        sentences.append(f"Exact zeros from a dead layer: {explained}. At initialisation every ReLU "
                         "before the dead layer is off on every row of the first batch, so its input is "
                         "exactly 0: its own weight gets a zero gradient and nothing below it reaches the "
                         "output. The zeros are not floating-point underflow.")
    if unexplained:
        sentences.append(f"Exact zeros without a dead layer at initialisation: {unexplained}.")
    return " ".join(sentences)


GRADIENTS_TEXT = {
    "all_diverged": "Every seed diverged: the gradients exploded.",
    "exploding": ("Exploding: the first layer's gradient ({first:.1e}) is {ratio:.0e} times the output "
                  "layer's ({output:.1e}). Batch norm, smaller initial weights or gradient clipping would "
                  "tame it."),
    "exact_zeros": lambda f: (
        f"Vanishing, down to exactly zero: in the last epoch the output layer's ||grad W||^2 is "
        f"{f['output']:.1e} (mean over seeds); the lowest layer that still gets one is " + "; ".join(
            f"seed {seed}: layer {layer}, {value:.1e}, {decades:.0f} decades below the output layer"
            for seed, layer, value, decades in f["lowest"])
        + "; below it " + "; ".join(f"seed {seed}: layers {layer_ranges(z)}" for seed, z in f["zeros"])
        + " get none at all."),
    "dead_layer": dead_layer_text, "no_dead_layer": dead_layer_text, "mixed": dead_layer_text,
    "no_zeros": "No layer has an exactly-zero gradient in every epoch.",
    "what_fixes_it": ("So the fix must keep a path for the gradient that no dead ReLU can cut, or keep ReLUs "
                      "from dying: skip connections (an identity path around each layer), batch norm (inputs "
                      "that straddle 0), He initialisation (activations that keep their scale), or LeakyReLU "
                      "(a gradient below 0 too); 6.2.1-6 tries each."),
    "vanishing": ("Vanishing: the output layer's ||grad W||^2 ({output:.1e}) is {ratio:.0e} times the first "
                  "layer's ({first:.1e}); skip connections or batch norm would keep it from shrinking."),
    "neither": ("Neither: the first layer's ||grad W||^2 ({first:.1e}) and the output layer's ({output:.1e}) "
                "are within two decades."),
}


def lines_with_zero_row(spec, x, series, title, xlabel, ylabel, note=None):
    """A log-scale panel of series (label, values, color) over x, the earlier ones wider and under the later,
    so that equal lines stay visible; under it, a strip that marks exact zeros (▼), which a log axis cannot
    show. A panel whose every value is 0 shows `note` instead. Returns the panel."""
    ax, strip = spec.subgridspec(2, 1, height_ratios=[5, 1.4], hspace=0.04).subplots(sharex=True)
    for row, (label, values, color) in enumerate(series):
        values = np.asarray(values, dtype=float)
        ax.plot(x, np.where(values == 0, np.nan, values), marker="o", markersize=3, color=color, label=label,
                linewidth=1.2 + 2.4 * (len(series) - 1 - row) / max(len(series) - 1, 1), alpha=0.85)
        strip.plot(x[values == 0], np.full((values == 0).sum(), row), "v", color=color, markersize=4,
                   linestyle="none")
    ax.set(yscale="log", ylabel=ylabel, title=title)
    if not any((np.asarray(values, dtype=float) > 0).any() for _, values, _ in series):
        ax.text(0.5, 0.5, note or "every line is exactly 0 here", ha="center", va="center",
                transform=ax.transAxes)
        ax.set(yticks=[], ylabel="")  # a log axis with nothing on it would show a meaningless 1..10 scale
        ax.yaxis.set_minor_locator(NullLocator())
    ax.tick_params(labelbottom=False)
    ax.grid(alpha=0.3)
    strip.xaxis.set_major_locator(MaxNLocator(integer=True))
    strip.set(ylim=(-0.8, len(series) - 0.2), yticks=[], xlabel=xlabel)
    strip.set_ylabel("▼ exactly 0", rotation=0, ha="right", va="center", fontsize=9)
    strip.grid(alpha=0.3, axis="x")
    return ax


def init_panels(spec, series_of):
    """At initialisation, per Linear layer: the mean norm of the activation entering it, and its ||grad W||^2
    at the first step; series_of(key) gives the (label, values, color) lines."""
    panels = (("init_activation_norm", "mean ||activation||₂ entering the layer", "activations at init"),
              ("init_grad_sq_norm", "||grad W||² at the first step", "gradients of the first step"))
    for cell, (key, ylabel, title) in zip(spec.subgridspec(1, 2), panels):
        series = series_of(key)
        ax = lines_with_zero_row(cell, np.arange(len(series[0][1])), series, title,
                                 "Linear layer (0 = input layer)", ylabel)
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))


def layer_value_text(values):
    """One layer's value over seeds for a table: the mean where every seed is non-zero, '0' where every seed
    is exactly 0, and each seed's where they differ (a mean would hide the zeros)."""
    values = [v for v in values if not np.isnan(v)]
    if not values:
        return "-"
    if all(v == 0 for v in values):
        return "0"
    if any(v == 0 for v in values):
        return "(" + ", ".join("0" if v == 0 else f"{v:.1e}" for v in values) + ")"
    return f"{np.mean(values):.2e}"


def gradient_table(variants, layers):
    rows = []
    for label, runs in variants:
        grads = [seed_grads(r) for r in runs if r["status"] == "ok"]
        rows.append([label] + [f"{layer_value_text([g[0, layer] for g in grads])} / "
                               f"{layer_value_text([g[-1, layer] for g in grads])}" if grads else "diverged"
                               for layer in layers + [len(runs[0]["init_activation_norm"]) - 1]]
                    + ["; ".join(f"seed {r['seed']}: {layer_ranges(zero_layers(r))}" for r in runs
                                 if r["status"] == "ok") or "-", finals(runs, "val_acc"), status_text(runs)])
    header = (["model"] + [f"layer {layer}: epoch 1 / last" for layer in layers]
              + ["output layer: epoch 1 / last", "layers exactly 0 in every epoch", "final val acc",
                 "status"])
    return markdown_table(header, rows) + (
        "\nMean ||grad W||² over the seeds that trained; in parentheses each seed's, where some are exactly "
        "0 and others not (a mean would hide the zeros).")


def layer_series(grads, layers):
    return [(f"layer {layer}", grads[:, layer], f"C{i}") for i, layer in enumerate(layers)]


ZERO_PANEL = {  # the note of a gradient panel whose every layer drawn is exactly 0, from dead_layer_finding
    "dead_layer": lambda f: (f"every layer drawn is exactly 0 in every epoch:\nlayer "
                             f"{f['explained'][0][1]}'s input is exactly 0 at initialisation,\nso nothing "
                             "below it gets a gradient"),
    "no_dead_layer": ("every layer drawn is exactly 0 in every epoch,\nthough no layer is dead at "
                      "initialisation"),
    "mixed": None,
    "no_zeros": None,
}


def report_gradients(result):
    runs = result["runs"]
    ok = [r for r in runs if r["status"] == "ok"]
    layers = [layer for layer in GRADIENT_LAYERS if layer < len(runs[0]["init_activation_norm"])]
    fig = plt.figure(figsize=(5.5 * max(len(ok), 2), 10), layout="constrained")
    grid = fig.add_gridspec(2, max(len(ok), 1), height_ratios=[1.3, 1])
    for column, run in enumerate(ok):
        grads = seed_grads(run)
        ax = lines_with_zero_row(grid[0, column], np.arange(1, len(grads) + 1), layer_series(grads, layers),
                                 f"seed {run['seed']}: per-layer gradient", "epoch",
                                 "mean over the epoch's steps of ||grad W||²",
                                 render(ZERO_PANEL, dead_layer_finding([run])))
    if ok:
        ax.legend(fontsize=9, loc="upper left", bbox_to_anchor=(1.01, 1))
    init_panels(grid[1, :], lambda key: [(f"seed {r['seed']}", r[key], color)
                                         for r, color in zip(runs, PALETTE)])
    fig.suptitle(f"{arch_label(runs[0])}, {runs[0]['epochs']} epochs: ||grad W||² per Linear layer",
                 fontsize=14)
    answer = from_sentences("6.2.1-5", "Is there a vanishing or exploding gradient problem, and what change would "
                               "solve it?", [render(GRADIENTS_TEXT, f) for f in vanishing_findings(runs)])
    table = gradient_table([(arch_label(runs[0]), runs)], layers)
    caption = ("Top, the exercise's plot: each seed's gradient per epoch in layers 0 to 99 (▼: exactly 0, "
               "which a log axis cannot show); bottom: the activations and gradients at initialisation "
               "behind the zeros.")
    return Report([table], {"gradients.png": (fig, caption)}, [], [answer])


QUESTION = Question("gradients", "6.2.1-5", "Vanishing gradients", GRADIENTS, train_gradients,
                    report_gradients)
