"""6.2.1-5 vanishing gradients: ||grad W||^2 of each layer of a 100-layer net per epoch; why some are 0."""
import numpy as np

from plots import Answer, Report, figure, markdown_table, render
from runner import Question
from section6 import GRADIENTS, arch_of, seed_runs, train_group
from stats import arch_label


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
    spans = np.split(layers, np.flatnonzero(np.diff(layers) != 1) + 1) if layers else []
    return ", ".join(f"{s[0]}" if len(s) == 1 else f"{s[0]}-{s[-1]}" for s in spans) or "none"


def dead_layer(run):
    """The last layer whose input is exactly 0 on the first batch at initialisation, or None."""
    return max([layer for layer, norm in enumerate(run["init_activation_norm"]) if norm == 0], default=None)


def cut_layer(run):
    """The dead layer if the run's exact zeros are the layers up to it (the path is cut), or None."""
    dead = dead_layer(run)
    return dead if dead is not None and zero_layers(run) == list(range(dead + 1)) else None


def vanishing_finding(runs):
    """Layer 0's and the output layer's last-epoch ||grad W||^2 (mean over seeds): DECADES apart or not."""
    ok = [r for r in runs if r["status"] == "ok"]
    if not ok:
        return dict(case="all_diverged", seeds=len(runs))
    last = np.mean([seed_grads(r)[-1] for r in ok], axis=0)
    first, output = float(last[0]), float(last[-1])
    case = "exploding" if first > DECADES * output else "vanishing" if output > DECADES * first else "neither"
    return dict(case=case, first=first, output=output)


LAST = "in the last epoch layer 0's ||grad W||² is {first:.2g}, the output layer's {output:.2g}"
HEADLINE = {
    "vanishing": ("Vanishing: " + LAST + "; skip connections, a path around each layer, could fix it "
                  "(6.2.1-6 tries eight changes)."),
    "exploding": "Exploding: " + LAST + "; gradient clipping or a smaller initialisation could fix it.",
    "neither": "Neither: " + LAST + ", within two decades; nothing needs fixing.",
    "all_diverged": "Exploding: all {seeds} seeds diverged (NaN); clipping or a lower lr could fix it.",
}


def zeros_finding(runs):
    """How many seeds get exactly 0 in some layers in every epoch; in how many a dead layer cuts the path."""
    zeroed = [r for r in runs if r["status"] == "ok" and zero_layers(r)]
    return dict(case="zeros" if zeroed else "no_zeros", seeds=len(zeroed), of=len(runs),
                most=max((len(zero_layers(r)) for r in zeroed), default=0),
                layers=len(runs[0]["init_activation_norm"]),
                cut=sum(cut_layer(r) is not None for r in zeroed))


ZEROS = {
    "zeros": ("{seeds} of {of} seeds get exactly 0 in every epoch in up to {most} of {layers} layers; in "
              "{cut} of them, the layers up to one dead at init (input 0, all ReLUs off): the path is cut."),
    "no_zeros": None,
}


def empty_panel_note(run):
    """Why a gradient panel has nothing above 0: diverged, or exactly 0 (up to a layer dead at init)."""
    if run["status"] != "ok":
        return (f"diverged (NaN) in epoch {run['diverged_epoch']}: nothing to draw;\nits first step's "
                f"layer-0 ||grad W||² was {run['init_grad_sq_norm'][0]:.1e}")
    why = "" if cut_layer(run) is None else f",\nup to layer {cut_layer(run)}, dead at init"
    return "every layer drawn is exactly 0 in every epoch" + why


def gradient_panels(axes, runs, titles):
    """The exercise's plot for each run on its axes, on one log y range, the earlier layers' lines wider so
    that equal lines stay visible; a row of ▼ per layer at the bottom marks exact zeros."""
    layers = [layer for layer in GRADIENT_LAYERS if layer < len(runs[0]["init_activation_norm"])]
    grads = [seed_grads(r)[:, layers] for r in runs]
    drawn = np.concatenate([g.ravel() for g in grads])
    low, high = drawn[drawn > 0].min(initial=1.0) / 3, np.nanmax(drawn, initial=1.0) * 3
    for ax, run, g, title in zip(axes, runs, grads, titles):
        epochs = np.arange(1, len(g) + 1)
        for i, layer in enumerate(layers):
            zero = g[:, i] == 0
            ax.plot(epochs, np.where(zero, np.nan, g[:, i]), marker="o", markersize=3, alpha=0.85,
                    linewidth=1.2 + 0.5 * (len(layers) - 1 - i), label=f"layer {layer}")
            ax.plot(epochs[zero], np.full(zero.sum(), 0.03 + 0.035 * i), "v", color=f"C{i}", markersize=4,
                    transform=ax.get_xaxis_transform())
        ax.set(yscale="log", xlabel="epoch", ylabel="||grad W||², mean over the epoch", title=title)
        if (g > 0).any():
            ax.set_ylim(low / (high / low) ** 0.35, high)  # the bottom quarter left to the ▼ rows
        else:
            ax.text(0.5, 0.5, empty_panel_note(run), ha="center", va="center", transform=ax.transAxes)
            ax.set(yscale="linear", yticks=[], ylabel="")
        ax.set_xlim(0.5, run["epochs"] + 0.5)
        ax.grid(alpha=0.3)
    ax.legend(fontsize=9, loc="upper left", bbox_to_anchor=(1.01, 1), title="▼: exactly 0")


def report_gradients(result):
    runs = result["runs"]
    fig = figure((5.5 * max(len(runs), 2), 5))
    gradient_panels(fig.subplots(1, len(runs), squeeze=False)[0], runs, [f"seed {r['seed']}" for r in runs])
    fig.suptitle(f"{arch_label(runs[0])}, {runs[0]['epochs']} epochs: ||grad W||² per Linear layer")
    headline = vanishing_finding(runs)
    key = (f"layer 0 ||grad W||² {headline['first']:.2g}, output {headline['output']:.2g}"
           if "first" in headline else "every seed diverged")
    zeros = render(ZEROS, zeros_finding(runs))
    answer = Answer("6.2.1-5", "Is there a vanishing or exploding gradient problem, and what change would "
                    "solve it?", render(HEADLINE, headline), [zeros] if zeros else [], key)
    n_layers = len(runs[0]["init_activation_norm"])
    layers = [layer for layer in GRADIENT_LAYERS if layer < n_layers - 1] + [n_layers - 1]
    rows = [[r["seed"], layer_ranges(zero_layers(r)), "none" if dead_layer(r) is None else dead_layer(r),
             *(f"{g:.2g}" for g in seed_grads(r)[-1, layers])] for r in runs]
    header = ["seed", "layers exactly 0", "last layer dead at init",
              *(f"layer {layer}" for layer in layers[:-1]), "output layer"]
    note = "Last epoch's ||grad W||². Dead: input exactly 0 on the first batch (every ReLU before it off)."
    figures = {"gradients.png": (fig, "The exercise's plot.")}
    return Report([markdown_table(header, rows), note], figures, [answer])


QUESTION = Question("gradients", "6.2.1-5", "Vanishing gradients", GRADIENTS, train_gradients,
                    report_gradients)
