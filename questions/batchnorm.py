"""6.1.2-3 batch norm: the epochs question's net with it; beyond the protocol, with and without it at a larger
lr and on standardised inputs, so that every comparison is at one lr and on one input."""
import numpy as np

from plots import PALETTE, Answer, Report, finish, markdown_table, plot_mean_band, subplots
from questions.epochs import split_table, train_epochs
from runner import Question
from section6 import SKELETON, arch_of, seed_runs, train_group
from stats import GAP_TOLERANCE, at_chance, epochs_axis, mean_final, mean_std_at_chance, paired

CONTROLS = (("raw", "larger_lr"), ("standardized", "larger_lr"))  # standardised at lr 0.001: too slow
LAST_EPOCHS = 5  # a run's accuracy: its last 5 epochs' mean; without batch norm it jumps up to 0.3 an epoch


def train_batchnorm(settings, data, reads, env):
    """The epochs question with batch norm, beside the epochs question's runs; beyond the protocol, CONTROLS
    with and without batch norm, a lockstep group each (apart from epochs', which scores train each epoch)."""
    result = train_epochs(settings, data, reads, env, batch_norm=True)
    controls = []
    for batch_norm in (False, True):
        runs = [run for features, lr in CONTROLS
                for run in seed_runs(settings, settings[lr], features=features)]
        controls += train_group(data, runs, arch_of(settings, batch_norm=batch_norm), settings, env,
                                f"controls, batch norm {'on' if batch_norm else 'off'}")[0]
    return {**result, "baseline_runs": reads["epochs"]["runs"], "control_runs": controls}


def by_setting(runs):
    """(batch norm, inputs, lr) -> its runs, in seed order."""
    found = {}
    for run in sorted(runs, key=lambda r: r["seed"]):
        found.setdefault((run["batch_norm"], run["features"], run["lr"]), []).append(run)
    return found


def late_accuracy(run):
    """A run's validation accuracy over its last LAST_EPOCHS epochs; None if it diverged."""
    last = run["history"]["val_acc"][-LAST_EPOCHS:]
    return None if None in last else float(np.mean(last))


def effect_finding(accuracies, features, lr):
    """Batch norm's effect on the late accuracy on these inputs at this lr, paired by seed (stats.paired)."""
    without, normed = accuracies[(False, features, lr)], accuracies[(True, features, lr)]
    return dict(case=paired(without, normed)["case"], features=features, lr=lr,
                without=float(np.mean(without)), normed=float(np.mean(normed)),
                difference=float(np.mean(normed) - np.mean(without)))


def eval_gap_finding(train_batch, train_eval, val):
    """'eval_mode_explains' when validation is above train accuracy but train in eval mode matches it."""
    explains = train_batch < val - GAP_TOLERANCE and abs(train_eval - val) <= GAP_TOLERANCE
    return dict(case="eval_mode_explains" if explains else "no_finding", train_batch=train_batch,
                train_eval=train_eval, val=val)


INPUTS = {"raw": "raw", "standardized": "standardised"}
NOISE = {"tie": " (within the seeds' noise)", "one_seed": " (one seed)"}
COLOURS = {(False, "raw"): PALETTE[0], (True, "raw"): PALETTE[1], (False, "standardized"): PALETTE[2],
           (True, "standardized"): PALETTE[6]}
EVAL_GAP = ("With batch norm, train accuracy is {train_batch:.3f} in train mode over the last epoch but "
            "{train_eval:.3f} in eval mode at its end, as validation's {val:.3f}: the val-above-train gap is "
            "how train accuracy is measured (batch statistics, moving weights), not the splits.")


def change_text(f):
    """effect_finding f in words, qualified where the seeds cannot tell."""
    return (f"{'lifts' if f['difference'] > 0 else 'lowers'} it from {f['without']:.3f} to {f['normed']:.3f}"
            f"{NOISE.get(f['case'], '')} on {INPUTS[f['features']]} inputs at lr {f['lr']:g}")


def draw(runs_of, lr):
    """Every setting's validation loss and accuracy, the protocol's lr dashed, the epochs read shaded."""
    fig, axes = subplots(1, 2, figsize=(15, 6.5))
    for (batch_norm, features, run_lr), runs in runs_of.items():
        label = f"{INPUTS[features]} inputs, batch norm {'on' if batch_norm else 'off'}, lr {run_lr:g}"
        for ax, metric in zip(axes, ("loss", "acc")):
            plot_mean_band(ax, epochs_axis(runs), [r["history"][f"val_{metric}"] for r in runs], label,
                           color=COLOURS[(batch_norm, features)], linewidth=2,
                           linestyle="--" if run_lr == lr else "-")
    epochs = len(epochs_axis(runs))
    axes[1].axvspan(epochs - LAST_EPOCHS + 0.5, epochs + 0.5, color="0.85", label=f"the last {LAST_EPOCHS} "
                    "epochs, where accuracy is read")
    finish(axes[0], "epoch", "validation loss (cross-entropy, nats)", "Validation loss", legend=False)
    finish(axes[1], "epoch", "validation accuracy (fraction correct)", "Validation accuracy",
           loc="lower right", fontsize=8)
    return fig


def report_batchnorm(result):
    runs_of = by_setting(result["baseline_runs"] + result["runs"] + result["control_runs"])
    chance, lr = result["class_prior"]["top_share"], result["runs"][0]["lr"]
    late = {key: [late_accuracy(r) for r in runs] for key, runs in runs_of.items()}
    accuracies = {key: at_chance(values, chance) for key, values in late.items()}
    effects = {key[1:]: effect_finding(accuracies, *key[1:]) for key in sorted(runs_of) if key[0]}
    best = max(effects.values(), key=lambda f: f["without"])  # the best net without batch norm
    normed = runs_of[(True, "raw", lr)]
    gap = eval_gap_finding(*(mean_final(normed, key) for key in ("train_acc", "train_eval_acc", "val_acc")))
    also = f" and {change_text(best)}, the best net without it" if best is not effects[("raw", lr)] else ""
    answer = Answer("6.1.2-3", "How does batch norm contribute to training?",
                    f"Validation accuracy over the last {LAST_EPOCHS} epochs: batch norm "
                    f"{change_text(effects[('raw', lr)])} (the protocol){also}.",
                    [EVAL_GAP.format(**gap)] if gap["case"] == "eval_mode_explains" else [],
                    f"val acc {effects[('raw', lr)]['without']:.3f} to {effects[('raw', lr)]['normed']:.3f} "
                    f"at lr {lr:g}")
    rows = [[f"{INPUTS[features]}, lr {rate:g}"]
            + [mean_std_at_chance(late[(on, features, rate)], chance) for on in (False, True)]
            + [f"{f['difference']:+.3f}" + NOISE.get(f["case"], "")]
            for (features, rate), f in effects.items()]
    note = (f"Validation accuracy over the last {LAST_EPOCHS} epochs, mean ± std over seeds, a diverged run "
            f"at chance ({chance:.3f}); all but raw inputs at lr {lr:g} beyond the protocol.")
    caption = "Each setting without and with batch norm (band: min..max over seeds)."
    keys = ("val_loss", "train_acc", "train_eval_acc", "val_acc", "test_acc")
    body = [split_table([("no batch norm", runs_of[(False, "raw", lr)]), ("batch norm", normed)], keys), note,
            markdown_table(["inputs", "no batch norm", "batch norm", "change, paired by seed"], rows)]
    return Report(body, {"batchnorm.png": (draw(runs_of, lr), caption)}, [answer])


QUESTION = Question("batchnorm", "6.1.2-3", "Batch norm (compared with 6.1.2-2)",
                    dict(SKELETON, batch_size=256, epochs=100, larger_lr=0.01), train_batchnorm,
                    report_batchnorm, reads=("epochs",))
