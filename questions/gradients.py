"""6.2.1-5 vanishing gradients: ||grad W||^2 of each layer of a 100-layer net per epoch; why some are 0."""
import numpy as np

from plots import Answer, Report, figure, markdown_table, render
from runner import Question
from section6 import GRADIENTS, arch_of, seed_runs, train_group
from stats import arch_label


def train_gradients(settings, data, reads, env):
    return {"runs": train_group(data, seed_runs(settings, settings["lr"]), arch_of(settings), settings, env,
                                f"depth {settings['depth']} gradients", record_grads=True, diagnose=True)[0]}


DECADES = 100  # ||grad W||^2: a first layer two decades above the output layer explodes; below, vanishes
GRADIENT_LAYERS = (0, 30, 60, 90, 95, 99)  # the layers the exercise asks to plot


def seed_grads(run):
    """One run's per-epoch mean ||grad W||^2: [epochs, layers]; NaN where it diverged."""
    return np.array([[np.nan] * len(run["init_activation_norm"]) if epoch is None else epoch
                     for epoch in run["history"]["grad_sq_norm"]], dtype=float)


def zero_layers(run):
    """Layers whose gradient is exactly zero in every epoch."""
    epochs = [e for e in run["history"]["grad_sq_norm"] if e is not None]
    return [layer for layer in range(len(epochs[0])) if all(e[layer] == 0 for e in epochs)] if epochs else []


def layer_ranges(layers):
    """[0, 1, 2, 5] -> '0-2, 5'."""
    spans = np.split(layers, np.flatnonzero(np.diff(layers) != 1) + 1) if layers else []
    return ", ".join(f"{s[0]}" if len(s) == 1 else f"{s[0]}-{s[-1]}" for s in spans) or "none"


def vanishing_finding(runs):
    """Layer 0's and the output layer's last-epoch ||grad W||² (mean over seeds): DECADES apart or not."""
    ok = [r for r in runs if r["status"] == "ok"]
    if not ok:
        return dict(case="all_diverged", seeds=len(runs), key="every seed diverged")
    last = np.mean([seed_grads(r)[-1] for r in ok], axis=0)
    first, output = float(last[0]), float(last[-1])
    case = "exploding" if first > DECADES * output else "vanishing" if output > DECADES * first else "neither"
    return dict(case=case, first=first, output=output,
                key=f"layer 0 ||grad W||² {first:.2g}, output {output:.2g}")


def cut_finding(runs):
    """The seeds whose exact zeros are the layers up to the last one dead at init (None: none)."""
    dead = [np.flatnonzero(np.equal(run["init_activation_norm"], 0)) for run in runs]
    cut = sum(len(d) > 0 and zero_layers(run) == list(range(d[-1] + 1)) for d, run in zip(dead, runs))
    return dict(case="cut", cut=cut, of=len(runs)) if cut else None


LAST = "in the last epoch layer 0's ||grad W||² is {first:.2g}, the output layer's {output:.2g}"
TEXT = {
    "vanishing": "Vanishing: " + LAST + "; skip connections around each layer could fix it (6.2.1-6).",
    "exploding": "Exploding: " + LAST + "; gradient clipping or a smaller initialisation could fix it.",
    "neither": "Neither: " + LAST + ", within two decades; nothing needs fixing.",
    "all_diverged": "Exploding: all {seeds} seeds diverged (NaN); clipping or a lower lr could fix it.",
    "cut": ("In {cut} of {of} seeds the layers exactly 0 in every epoch are those up to one dead at init "
            "(its input 0, all ReLUs before it off): the path is cut."),
}


def gradient_panels(axes, runs, titles):
    """The exercise's plot for each run on axes sharing y; earlier layers' lines wider: equal ones show."""
    layers = [layer for layer in GRADIENT_LAYERS if layer < len(runs[0]["init_activation_norm"])]
    for ax, run, title in zip(axes, runs, titles):
        grads = seed_grads(run)[:, layers]
        for i, layer in enumerate(layers):
            ax.plot(np.arange(1, len(grads) + 1), np.ma.masked_equal(grads[:, i], 0), marker="o", alpha=0.85,
                    markersize=3, linewidth=1.2 + 0.5 * (len(layers) - 1 - i), label=f"layer {layer}")
        ax.set(yscale="log", xlim=(0.5, run["epochs"] + 0.5), xlabel="epoch", title=title,
               ylabel="||grad W||², mean over the epoch")
        if not (grads > 0).any():
            why = ("every layer drawn is exactly 0 in every epoch" if run["status"] == "ok" else
                   f"diverged (NaN) in epoch {run['diverged_epoch']}: nothing to draw")
            ax.text(0.5, 0.5, why, ha="center", va="center", transform=ax.transAxes)
        ax.grid(alpha=0.3)
    ax.legend(fontsize=9, loc="upper left", bbox_to_anchor=(1.01, 1), title="no point: exactly 0")


def report_gradients(result):
    runs = result["runs"]
    fig = figure((5.5 * max(len(runs), 2), 5))
    axes = fig.subplots(1, len(runs), squeeze=False, sharey=True)[0]
    gradient_panels(axes, runs, [f"seed {r['seed']}" for r in runs])
    fig.suptitle(f"{arch_label(runs[0])}, {runs[0]['epochs']} epochs: ||grad W||² per Linear layer")
    headline, cut = vanishing_finding(runs), cut_finding(runs)
    answer = Answer("6.2.1-5", "Is there a vanishing or exploding gradient problem, and what change would "
                    "solve it?", render(TEXT, headline), [render(TEXT, cut)] if cut else [], headline["key"])
    rows = [[r["seed"], layer_ranges(zero_layers(r)), f"{seed_grads(r)[-1, -1]:.2g}"] for r in runs]
    table = markdown_table(["seed", "layers exactly 0 in every epoch", "output layer's last ‖grad W‖²"], rows)
    return Report([table], {"gradients.png": (fig, "The exercise's plot.")}, [answer])


QUESTION = Question("gradients", "6.2.1-5", "Vanishing gradients", GRADIENTS, train_gradients,
                    report_gradients)
