"""6.2.1-5 vanishing gradients: ||grad W||^2 of every layer of a 100-layer net, per epoch, and why some are
exactly 0. Its gradient panels and its cause of exact zeros serve residual too."""
import numpy as np

from plots import PALETTE, Answer, Report, figure, markdown_table, render
from runner import Question
from section6 import GRADIENTS, arch_of, seed_runs, train_group
from stats import arch_label, final, mean_std


def train_gradients(settings, data, reads, env):
    results, _ = train_group(data, seed_runs(settings, settings["lr"]), arch_of(settings), settings, env,
                             f"depth {settings['depth']} gradients", record_grads=True, diagnose=("init",))
    return {"runs": results}


DECADES = 100  # ||grad W||^2: a first layer two decades above the output layer explodes; below, vanishes
GRADIENT_LAYERS = (0, 30, 60, 90, 95, 99)  # the layers the exercise asks to plot
FLOAT32_TINY = float(np.finfo(np.float32).tiny)  # below it, a ||grad W||^2 is on its way to round to 0


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
    spans = np.split(layers, np.flatnonzero(np.diff(layers) != 1) + 1) if layers else []
    return ", ".join(f"{s[0]}" if len(s) == 1 else f"{s[0]}-{s[-1]}" for s in spans) or "none"


def dead_layer(run):
    """The last layer whose input is exactly 0 on the first batch at initialisation, or None: no gradient
    passes below it."""
    return max([layer for layer, norm in enumerate(run["init_activation_norm"]) if norm == 0], default=None)


def zero_cause(run):
    """Why a run's layers get exactly 0 in every epoch: 'dead_layer' when they are the layers up to its
    dead_layer (the path is cut); 'underflow' when its smallest nonzero ||grad W||^2 in the last epoch is
    below FLOAT32_TINY; else 'unexplained'. None without zeros."""
    zeros = zero_layers(run)
    if not zeros:
        return None
    if dead_layer(run) is not None and zeros == list(range(dead_layer(run) + 1)):
        return "dead_layer"
    last = seed_grads(run)[-1]
    return "underflow" if last[last > 0].min(initial=np.inf) < FLOAT32_TINY else "unexplained"


def vanishing_finding(runs):
    """Layer 0's and the output layer's last-epoch ||grad W||^2 (mean over seeds): DECADES apart or not."""
    ok = [r for r in runs if r["status"] == "ok"]
    if not ok:
        return dict(case="all_diverged", seeds=len(runs))
    last = np.mean([seed_grads(r)[-1] for r in ok], axis=0)
    first, output = float(last[0]), float(last[-1])
    case = "exploding" if first > DECADES * output else "vanishing" if output > DECADES * first else "neither"
    return dict(case=case, first=first, output=output)


def zeros_finding(runs):
    """How many layers get exactly 0 in every epoch, and whether a dead layer explains them in every seed."""
    with_zeros = [r for r in runs if r["status"] == "ok" and zero_layers(r)]
    if not with_zeros:
        return dict(case="no_zeros")
    counts = [len(zero_layers(r)) for r in with_zeros]
    causes = {zero_cause(r) for r in with_zeros}
    span = f"{min(counts)} to {max(counts)}" if min(counts) < max(counts) else f"{min(counts)}"
    return dict(case="dead_layer" if causes == {"dead_layer"} else "other", seeds=len(with_zeros),
                of=sum(r["status"] == "ok" for r in runs), span=span,
                layers=len(with_zeros[0]["init_activation_norm"]))


LAST = "in the last epoch layer 0's ||grad W||² is {first:.2g}, the output layer's {output:.2g}"
HEADLINE = {
    "vanishing": ("Vanishing: " + LAST + "; skip connections, a path around each layer, could fix it "
                  "(6.2.1-6 tries eight changes)."),
    "exploding": "Exploding: " + LAST + "; gradient clipping or a smaller initialisation could fix it.",
    "neither": "Neither: " + LAST + ", within two decades; nothing needs fixing.",
    "all_diverged": "Exploding: all {seeds} seeds diverged (NaN); clipping or a lower lr could fix it.",
}
ZEROS = "{seeds} of {of} seeds get exactly 0 in {span} of {layers} layers, every epoch"
ZEROS_TEXT = {
    "dead_layer": ZEROS + (", up to a layer whose input is exactly 0 at initialisation (all ReLUs before it "
                           "off): the path is cut, not underflowed."),
    "other": ZEROS + ".",
    "no_zeros": None,
}


def lines_with_zero_row(spec, x, series, title, xlabel, ylabel, note=None, ylim=None):
    """A log-scale panel of series (label, values, color) over x, the earlier ones wider and under the later,
    so that equal lines stay visible; under it, a strip that marks exact zeros (▼), which a log axis cannot
    show. A panel with no value above 0 shows `note` instead; the others take ylim. Returns the panel."""
    from matplotlib.ticker import MaxNLocator, NullLocator  # here: matplotlib is imported at the first figure
    ax, strip = spec.subgridspec(2, 1, height_ratios=[5, 1.4], hspace=0.04).subplots(sharex=True)
    for row, (label, values, color) in enumerate(series):
        values = np.asarray(values, dtype=float)
        ax.plot(x, np.where(values == 0, np.nan, values), marker="o", markersize=3, color=color, label=label,
                linewidth=1.2 + 2.4 * (len(series) - 1 - row) / max(len(series) - 1, 1), alpha=0.85)
        strip.plot(x[values == 0], np.full((values == 0).sum(), row), "v", color=color, markersize=4,
                   linestyle="none")
    ax.set(yscale="log", ylabel=ylabel, title=title)
    if not any((np.asarray(values, dtype=float) > 0).any() for _, values, _ in series):
        ax.text(0.5, 0.5, note, ha="center", va="center", transform=ax.transAxes)
        ax.set(yticks=[], ylabel="", xlim=(x[0] - 0.5, x[-1] + 0.5))  # no meaningless 1..10 log scale
        ax.yaxis.set_minor_locator(NullLocator())
    elif ylim:
        ax.set_ylim(ylim)
    ax.tick_params(labelbottom=False)
    ax.grid(alpha=0.3)
    strip.xaxis.set_major_locator(MaxNLocator(integer=True))
    strip.set(ylim=(-0.8, len(series) - 0.2), yticks=[], xlabel=xlabel)
    strip.set_ylabel("▼ exactly 0", rotation=0, ha="right", va="center", fontsize=9)
    strip.grid(alpha=0.3, axis="x")
    return ax


def empty_panel_note(run):
    """What a gradient panel with nothing above 0 says instead: why."""
    if run["status"] != "ok":
        return (f"diverged (NaN) in epoch {run['diverged_epoch']}: nothing to draw;\nits first step's "
                f"layer-0 ||grad W||² was {run['init_grad_sq_norm'][0]:.1e}")
    if zero_cause(run) == "dead_layer":
        return f"every layer drawn is exactly 0 in every epoch:\nlayer {dead_layer(run)}'s input is 0 at init"
    return "every layer drawn is exactly 0 in every epoch"


def gradient_panels(cells, runs, titles):
    """The exercise's plot for each run in its cell, on one y range so that they compare by eye."""
    layers = [layer for layer in GRADIENT_LAYERS if layer < len(runs[0]["init_activation_norm"])]
    grads = [seed_grads(r) for r in runs]
    drawn = np.concatenate([g[:, layers].ravel() for g in grads])
    ylim = (drawn[drawn > 0].min() / 3, np.nanmax(drawn) * 3) if (drawn > 0).any() else None
    for cell, run, g, title in zip(cells, runs, grads, titles):
        series = [(f"layer {layer}", g[:, layer], f"C{i}") for i, layer in enumerate(layers)]
        ax = lines_with_zero_row(cell, np.arange(1, len(g) + 1), series, title, "epoch",
                                 "||grad W||², mean over the epoch", empty_panel_note(run), ylim)
    ax.legend(fontsize=9, loc="upper left", bbox_to_anchor=(1.01, 1))


def report_gradients(result):
    runs = result["runs"]
    n_layers = len(runs[0]["init_activation_norm"])
    fig = figure((5.5 * max(len(runs), 2), 10))
    grid = fig.add_gridspec(2, len(runs), height_ratios=[1.3, 1])
    gradient_panels(grid[0, :].subgridspec(1, len(runs)), runs, [f"seed {r['seed']}" for r in runs])
    panels = (("init_activation_norm", "mean ||activation||₂ entering the layer", "activations at init"),
              ("init_grad_sq_norm", "||grad W||² at the first step", "gradients of the first step"))
    for cell, (key, ylabel, title) in zip(grid[1, :].subgridspec(1, 2), panels):
        series = [(f"seed {r['seed']}", r[key], color) for r, color in zip(runs, PALETTE)]
        ax = lines_with_zero_row(cell, np.arange(n_layers), series, title, "Linear layer (0 = input layer)",
                                 ylabel)
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.suptitle(f"{arch_label(runs[0])}, {runs[0]['epochs']} epochs: ||grad W||² per Linear layer",
                 fontsize=14)
    headline = vanishing_finding(runs)
    key = (f"layer 0 ||grad W||² {headline['first']:.2g}, output {headline['output']:.2g}"
           if "first" in headline else "every seed diverged")
    zeros = render(ZEROS_TEXT, zeros_finding(runs))
    answer = Answer("6.2.1-5", "Is there a vanishing or exploding gradient problem, and what change would "
                    "solve it?", render(HEADLINE, headline), [zeros] if zeros else [], key)
    layers = [layer for layer in GRADIENT_LAYERS if layer < n_layers - 1] + [n_layers - 1]
    rows = [[r["seed"], layer_ranges(zero_layers(r)), "none" if dead_layer(r) is None else dead_layer(r),
             *(f"{g:.2g}" for g in seed_grads(r)[-1, layers]), mean_std([final(r, "val_acc")])]
            for r in runs]
    header = ["seed", "layers exactly 0", "last layer dead at init",
              *(f"layer {layer}" for layer in layers[:-1]), "output layer", "val acc"]
    table = markdown_table(header, rows) + "\nLast epoch's ||grad W||²; dead: input 0 on the first batch."
    caption = ("Top, the exercise's plot (▼: exactly 0, which a log axis cannot show); bottom, activations "
               "and gradients at initialisation, behind the zeros.")
    return Report([table], {"gradients.png": (fig, caption)}, [answer])


QUESTION = Question("gradients", "6.2.1-5", "Vanishing gradients", GRADIENTS, train_gradients,
                    report_gradients)
