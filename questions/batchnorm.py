"""6.1.2-3 batch norm: the epochs net with it; at a larger lr, raw or standardized, without and with it."""
import numpy as np

from plots import PALETTE, Answer, Report, finish, markdown_table, plot_mean_band, subplots
from questions.epochs import train_epochs
from runner import Question
from section6 import SKELETON, arch_of, seed_runs, train_group
from stats import at_chance, epochs_axis, mean_std_at_chance, paired

LAST_EPOCHS = 5  # a run's accuracy: its last 5 epochs' mean; without batch norm it jumps up to 0.3 an epoch
NOISE = {"tie": " (within the seeds' noise)", "one_seed": " (one seed)"}
COLOURS = {"raw": (PALETTE[0], PALETTE[1]), "standardized": (PALETTE[2], PALETTE[6])}  # without, with


def train_batchnorm(settings, data, reads, env):
    """The epochs question with batch norm; beyond the protocol, without and with it at larger_lr."""
    result = train_epochs(settings, data, reads, env, batch_norm=True)
    controls = []
    for batch_norm in (False, True):
        runs = [run for features in ("raw", "standardized")  # standardized at lr 0.001: too slow
                for run in seed_runs(settings, settings["larger_lr"], features=features)]
        controls += train_group(data, runs, arch_of(settings, batch_norm=batch_norm), settings, env,
                                f"controls, batch norm {'on' if batch_norm else 'off'}")[0]
    return {**result, "baseline_runs": reads["epochs"]["runs"], "control_runs": controls}


def late_accuracy(run):
    """A run's validation accuracy over its last LAST_EPOCHS epochs; None if it diverged."""
    last = run["history"]["val_acc"][-LAST_EPOCHS:]
    return None if None in last else float(np.mean(last))


def effect_finding(accuracies, features, lr):
    """Batch norm's effect on the late accuracy on these inputs at this lr, paired by seed (stats.paired)."""
    without, normed = accuracies[(False, features, lr)], accuracies[(True, features, lr)]
    return dict(paired(without, normed), features=features, lr=lr, without=float(np.mean(without)),
                normed=float(np.mean(normed)))


def change_text(f):
    """effect_finding f in words, qualified where the seeds cannot tell."""
    return (f"{'lifts' if f['difference'] > 0 else 'lowers'} it from {f['without']:.3f} to {f['normed']:.3f}"
            f"{NOISE.get(f['case'], '')} on {f['features']} inputs at lr {f['lr']:g}")


def report_batchnorm(result):
    runs_of = {}  # (batch norm, inputs, lr) -> its runs, in seed order
    for run in result["baseline_runs"] + result["runs"] + result["control_runs"]:
        runs_of.setdefault((run["batch_norm"], run["features"], run["lr"]), []).append(run)
    chance, lr = result["class_prior"]["top_share"], result["runs"][0]["lr"]
    late = {key: [late_accuracy(r) for r in runs] for key, runs in runs_of.items()}
    accuracies = {key: at_chance(values, chance) for key, values in late.items()}
    effects = {key[1:]: effect_finding(accuracies, *key[1:]) for key in sorted(runs_of) if key[0]}
    protocol = effects[("raw", lr)]
    best = max(effects.values(), key=lambda f: f["without"])  # the best net without batch norm
    also = f" and {change_text(best)}, the best net without it" if best is not protocol else ""
    answer = Answer("6.1.2-3", "How does batch norm contribute to training?",
                    f"Validation accuracy over the last {LAST_EPOCHS} epochs: batch norm "
                    f"{change_text(protocol)} (the protocol){also}.", [],
                    f"val acc {protocol['without']:.3f} to {protocol['normed']:.3f} at lr {lr:g}")
    rows = [[f"{features}, lr {rate:g}"]
            + [mean_std_at_chance(late[(on, features, rate)], chance) for on in (False, True)]
            + [f"{f['difference']:+.3f}" + NOISE.get(f["case"], "")]
            for (features, rate), f in effects.items()]
    note = (f"Validation accuracy over the last {LAST_EPOCHS} epochs, mean ± std over seeds, a diverged run "
            f"at chance ({chance:.3f}); all but raw inputs at lr {lr:g} beyond the protocol.")
    body = [note, markdown_table(["inputs", "no batch norm", "batch norm", "change, paired by seed"], rows)]
    fig, axes = subplots(1, 2, figsize=(15, 6.5))
    for (batch_norm, features, run_lr), runs in runs_of.items():  # the protocol's lr dashed
        label = f"{features} inputs, batch norm {'on' if batch_norm else 'off'}, lr {run_lr:g}"
        for ax, metric in zip(axes, ("loss", "acc")):
            plot_mean_band(ax, epochs_axis(runs), [r["history"][f"val_{metric}"] for r in runs], label,
                           color=COLOURS[features][batch_norm], linewidth=2,
                           linestyle="--" if run_lr == lr else "-")
    epochs = len(epochs_axis(runs))
    axes[1].axvspan(epochs - LAST_EPOCHS + 0.5, epochs + 0.5, color="0.85", label=f"the last {LAST_EPOCHS} "
                    "epochs, where accuracy is read")
    finish(axes[0], "epoch", "validation loss (cross-entropy, nats)", "Validation loss", legend=False)
    finish(axes[1], "epoch", "validation accuracy (fraction correct)", "Validation accuracy",
           loc="lower right", fontsize=8)
    return Report(body, {"batchnorm.png": (fig, "Each setting (band: min..max over seeds).")}, [answer])


QUESTION = Question("batchnorm", "6.1.2-3", "Batch norm (compared with 6.1.2-2)",
                    dict(SKELETON, batch_size=256, epochs=100, larger_lr=0.01), train_batchnorm,
                    report_batchnorm, reads=("epochs",))
