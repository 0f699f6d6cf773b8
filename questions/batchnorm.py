"""6.1.2-3 batch norm: the epochs question's net with batch norm; beyond the protocol, the net with and
without it at a larger lr and on standardised inputs, so that every comparison is at one lr and on one input.
"""
import numpy as np

from plots import (PALETTE, Answer, Report, finish, markdown_table, plot_mean_band, plot_split_curves, render,
                   subplots)
from questions.epochs import split_table, train_epochs
from runner import Question
from section6 import SKELETON, arch_of, seed_runs, train_group
from stats import GAP_TOLERANCE, at_chance, epochs_axis, mean_final, mean_std_at_chance, paired

CONTROLS = (("raw", "larger_lr"), ("standardized", "larger_lr"))  # (inputs, the setting of the lr), beside
#   the protocol's raw inputs at lr; standardised inputs at lr 0.001 learn too slowly to compare (0.19, 0.51)
LAST_EPOCHS = 5  # a run's accuracy is the mean of its last 5 epochs: without batch norm at lr 0.01, a seed's
#   validation accuracy jumps by up to 0.3 from one epoch to the next (course data, standardised inputs)


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
    """What batch norm does to the late accuracy of the net on these inputs at this lr, paired by seed: case
    'above', 'tie' (within the seeds' noise), 'below' or 'one_seed' (stats.paired)."""
    without, normed = accuracies[(False, features, lr)], accuracies[(True, features, lr)]
    return dict(case=paired(without, normed)["case"], features=features, lr=lr,
                without=float(np.mean(without)), normed=float(np.mean(normed)),
                difference=float(np.mean(normed) - np.mean(without)))


def best_without_finding(accuracies):
    """Batch norm's effect on the best net without it (the highest mean late accuracy, any input and lr)."""
    best = max((key for key in accuracies if not key[0]), key=lambda key: np.mean(accuracies[key]))
    return effect_finding(accuracies, *best[1:])


def eval_gap_finding(train_batch, train_eval, val):
    """With batch norm: does the final model in eval mode score the training set as it scores validation (so
    a val-above-train gap is only how train accuracy is measured)? Accuracies are means over seeds."""
    case = ("no_gap" if train_batch >= val - GAP_TOLERANCE else
            "eval_mode_explains" if abs(train_eval - val) <= GAP_TOLERANCE else "eval_mode_does_not_explain")
    return dict(case=case, train_batch=train_batch, train_eval=train_eval, val=val,
                difference=train_eval - val)


INPUTS = {"raw": "raw", "standardized": "standardised"}
CHANGE = {"above": "lifts {what}", "below": "lowers {what}", "tie": "leaves {what} within the seeds' noise",
          "one_seed": "moves {what} (one seed)"}
COLOURS = {(False, "raw"): PALETTE[0], (True, "raw"): PALETTE[1], (False, "standardized"): PALETTE[2],
           (True, "standardized"): PALETTE[6]}
NOISE = {"tie": " (within the seeds' noise)", "one_seed": " (one seed)"}
EVAL_GAP = {
    "no_gap": "With batch norm, validation ({val:.3f}) is not above train ({train_batch:.3f}): no gap.",
    "eval_mode_explains": (
        "With batch norm, train accuracy is {train_batch:.3f} in train mode over the last epoch but "
        "{train_eval:.3f} in eval mode at its end, as validation's {val:.3f}: the val-above-train gap is how "
        "train accuracy is measured (batch statistics, moving weights), not the splits."),
    "eval_mode_does_not_explain": (
        "With batch norm, train accuracy in eval mode ({train_eval:.3f}) still differs from validation's "
        "({val:.3f}) by {difference:+.3f}: how train accuracy is measured does not explain the whole gap."),
}


def headline(protocol, best):
    return (f"Batch norm {CHANGE[protocol['case']].format(what='validation accuracy')} on raw inputs at lr "
            f"{protocol['lr']:g} ({protocol['without']:.3f} to {protocol['normed']:.3f}); on "
            f"{INPUTS[best['features']]} inputs at lr {best['lr']:g}, the best net without it, it "
            f"{CHANGE[best['case']].format(what='it')} ({best['without']:.3f} to {best['normed']:.3f}).")


def draw(runs_of, lr):
    """Without and with batch norm at the protocol's lr, split by split; right, every setting's validation
    curves, dashed at the protocol's lr, under a legend below the axes, where it covers no curve."""
    fig, axes = subplots(2, 3, figsize=(19, 10), sharey="row")
    for column, batch_norm in enumerate((False, True)):
        plot_split_curves(axes[0, column], axes[1, column], runs_of[(batch_norm, "raw", lr)],
                          f"batch norm {'on' if batch_norm else 'off'}, lr {lr:g}", eval_mode_train=True)
    for (batch_norm, features, run_lr), runs in runs_of.items():
        label = f"{INPUTS[features]} inputs, batch norm {'on' if batch_norm else 'off'}, lr {run_lr:g}"
        for ax, metric in ((axes[0, 2], "loss"), (axes[1, 2], "acc")):
            plot_mean_band(ax, epochs_axis(runs), [r["history"][f"val_{metric}"] for r in runs], label,
                           color=COLOURS[(batch_norm, features)], linewidth=2,
                           linestyle="--" if run_lr == lr else "-")
    epochs = len(epochs_axis(runs))
    axes[1, 2].axvspan(epochs - LAST_EPOCHS + 0.5, epochs + 0.5, color="0.85",
                       label=f"the last {LAST_EPOCHS} epochs, where accuracy is read")
    finish(axes[0, 2], "epoch", "loss (cross-entropy, nats)", "every setting: validation loss", legend=False)
    finish(axes[1, 2], "epoch", "accuracy (fraction correct)", "every setting: validation accuracy",
           loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2, fontsize=8)
    return fig


def report_batchnorm(result):
    runs_of = by_setting(result["baseline_runs"] + result["runs"] + result["control_runs"])
    chance = result["class_prior"]["top_share"]
    late = {key: [late_accuracy(r) for r in runs] for key, runs in runs_of.items()}
    accuracies = {key: at_chance(values, chance) for key, values in late.items()}
    lr = result["runs"][0]["lr"]
    plain, normed = runs_of[(False, "raw", lr)], runs_of[(True, "raw", lr)]
    protocol = effect_finding(accuracies, "raw", lr)
    gap = eval_gap_finding(*(mean_final(normed, key) for key in ("train_acc", "train_eval_acc", "val_acc")))
    answer = Answer("6.1.2-3", "How does batch norm contribute to training?",
                    headline(protocol, best_without_finding(accuracies)),
                    [render(EVAL_GAP, gap)],
                    f"val acc {protocol['without']:.3f} to {protocol['normed']:.3f} at lr {lr:g}")
    rows = []
    for features, rate in sorted({key[1:] for key in runs_of}):
        change = effect_finding(accuracies, features, rate)
        rows.append([f"{INPUTS[features]}, lr {rate:g}"]
                    + [mean_std_at_chance(late[(normed, features, rate)], chance) for normed in (False, True)]
                    + [f"{change['difference']:+.3f}" + NOISE.get(change["case"], "")])
    note = (f"Validation accuracy over the last {LAST_EPOCHS} epochs, mean ± std over seeds, a diverged run "
            f"at chance ({chance:.3f}); all but raw inputs at lr {lr:g} beyond the protocol.")
    caption = ("Without (left) and with (middle) batch norm at the protocol's lr, on shared axes; right, "
               "every setting: which curves end together.")
    body = [split_table([("no batch norm", plain), ("batch norm", normed)]), note,
            markdown_table(["inputs", "no batch norm", "batch norm", "change, paired by seed"], rows)]
    return Report(body, {"batchnorm.png": (draw(runs_of, lr), caption)}, [answer])


QUESTION = Question("batchnorm", "6.1.2-3", "Batch norm (compared with 6.1.2-2)",
                    dict(SKELETON, batch_size=256, epochs=100, larger_lr=0.01), train_batchnorm,
                    report_batchnorm, reads=("epochs",))
