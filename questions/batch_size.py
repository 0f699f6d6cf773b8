"""6.1.2-4 batch size: batch 1, 16, 128 and 1024: accuracy, iterations per epoch, the step losses' noise."""
import numpy as np

from common import finite_or_none
from plots import PALETTE, from_sentences, Report, finish, markdown_table, plot_mean_band, plt, render
from runner import Question
from section6 import SKELETON, arch_of, seed_runs, train_group
from stats import (OVERFIT_GAP, as_array, best, epochs_axis, falls_with, finals, group_by, mean_final,
                   mean_std, paired, status_text)

NOISE_STEPS = 100  # the last step losses, whose spread measures how noisy a batch size's steps are
WINDOWS = 300  # windows the step losses are drawn in, log-spaced as the step axis: the first steps alone


def step_windows(losses, n_windows=WINDOWS):
    """The step losses pooled in windows log-spaced over the steps: each window's last step (1-based), and the
    mean, 10th and 90th percentile of its finite losses (NaN where it has none: a diverged run)."""
    ends = np.unique(np.geomspace(1, len(losses), n_windows).round().astype(int))
    windows = [losses[start:end] for start, end in zip(np.r_[0, ends[:-1]], ends)]
    pooled = [window[np.isfinite(window)] for window in windows]
    stats = np.array([[np.mean(p), *np.percentile(p, [10, 90])] if len(p) else [np.nan] * 3 for p in pooled])
    return {"end": ends.astype(np.int32), **{key: stats[:, i].astype(np.float32)
                                              for i, key in enumerate(("mean", "p10", "p90"))}}


def train_batch_size(settings, data, reads, env):
    """One lockstep group per batch size. A run's loss noise is the standard deviation of its last NOISE_STEPS
    step losses; the first seed's step losses are kept to be drawn, pooled in step_windows."""
    results, arrays = [], {}
    for batch_size, epochs in zip(settings["batch_sizes"], settings["batch_size_epochs"]):
        group, _ = train_group(data, seed_runs(settings, settings["lr"]), arch_of(settings), settings, env,
                               f"batch {batch_size}", epochs, batch_size, record_steps=True)
        for run in group:
            losses = np.array([np.nan if v is None else v for v in run["history"].pop("step_loss")])
            run["loss_noise"] = finite_or_none(np.nanstd(losses[-NOISE_STEPS:], ddof=1))
            if f"steps_{batch_size}_end" not in arrays:  # the first seed's
                windows = step_windows(losses)
                arrays.update({f"steps_{batch_size}_{key}": values for key, values in windows.items()})
        results += group
    return {"runs": results, "arrays": arrays}


def equal_steps_finding(curves):
    """Are the batch sizes alike at equal optimizer steps? curves: batch size -> (steps after each epoch, mean
    validation accuracy there). Compared at the fewest steps any batch size took in all, each batch size's
    accuracy read off its curve there (linear in steps between its evaluations; None when its first evaluation
    comes later, with that step count)."""
    steps = min(x[-1] for x, _ in curves.values())
    fewest = min(curves, key=lambda b: curves[b][0][-1])
    rows = [(b, float(np.interp(steps, x, acc)) if x[0] <= steps else None, int(x[0]))
            for b, (x, acc) in curves.items()]
    compared = [acc for _, acc, _ in rows if acc is not None]
    if len(compared) < 2:
        return dict(case="no_equal_steps", steps=steps, rows=rows)
    case = "steps_explain" if max(compared) - min(compared) <= OVERFIT_GAP else "steps_do_not_explain"
    return dict(case=case, steps=steps, fewest=fewest, rows=rows, spread=max(compared) - min(compared))


def batch_size_findings(rows, curves):
    """6.1.2-4 from rows (batch size, iterations per epoch, seconds per epoch, total steps, best validation
    accuracy, loss noise, final validation accuracy, best validation accuracy per seed) and
    equal_steps_finding's curves: (i) accuracy, ties with the runner-up within the seeds' noise, and at equal
    steps, (ii) speed, (iii) stability."""
    sizes = [row[0] for row in rows]
    ranked = sorted(rows, key=lambda row: -row[4])
    top = ranked[0]
    versus = paired(ranked[1][7], top[7]) if len(ranked) > 1 else {}
    highest = (dict(versus, case="highest_tied", batch=top[0], acc=top[4], final=top[6], other=ranked[1][0],
                    other_acc=ranked[1][4]) if versus.get("case") == "tie" else
               dict(case="highest", batch=top[0], acc=top[4], final=top[6]))
    return [highest, equal_steps_finding(curves),
            dict(case="faster" if falls_with(sizes, [row[2] for row in rows]) else "not_faster", rows=rows),
            dict(case="steadier" if falls_with(sizes, [row[5] for row in rows]) else "not_steadier",
                 rows=rows)]


def epoch_listed(rows):
    return ", ".join(f"batch {b}: {it:,} iterations, {sec:.2f} s" for b, it, sec, *_ in rows)


def noise_listed(rows):
    return ", ".join(f"batch {row[0]}: {row[5]:.3f}" for row in rows)


def at_steps_listed(rows):
    return ", ".join(f"batch {b}: {acc:.3f}" if acc is not None else
                     f"batch {b}: none yet (first evaluated after {first:,} steps)" for b, acc, first in rows)


BATCH_SIZE_TEXT = {
    "highest": ("(i) Batch {batch} reaches the highest validation accuracy, {acc:.3f} at its best epoch and "
                "{final:.3f} at its last."),
    "highest_tied": ("(i) Batch {batch} and batch {other} tie for the highest validation accuracy ({acc:.3f} "
                     "and {other_acc:.3f} at their best epochs, within the seeds' noise, which a paired "
                     "t-test at 95% puts at {noise:.3f}); batch {batch} ends at {final:.3f}."),
    "steps_explain": lambda f: (
        f"At equal steps the batch sizes are alike: after {f['steps']:,} optimizer steps (all that batch "
        f"{f['fewest']} takes) validation accuracy is {at_steps_listed(f['rows'])}, within "
        f"{f['spread']:.3f}. So batch {f['fewest']} ends low because it takes few steps at this lr, not "
        "because its steps are worse."),
    "steps_do_not_explain": lambda f: (
        f"At equal steps the batch sizes still differ: after {f['steps']:,} optimizer steps (all that batch "
        f"{f['fewest']} takes) validation accuracy is {at_steps_listed(f['rows'])}, {f['spread']:.3f} apart, "
        "so the step count alone does not explain the gap."),
    "no_equal_steps": lambda f: (f"No two batch sizes were evaluated at a common step count ({f['steps']:,} "
                                 f"steps: {at_steps_listed(f['rows'])})."),
    "faster": lambda f: (f"(ii) An epoch takes ceil(N / B) iterations ({epoch_listed(f['rows'])}): a larger "
                         "batch does more of the work in one vectorised step, so an epoch is faster, but it "
                         "makes fewer updates."),
    "not_faster": lambda f: (f"(ii) An epoch takes ceil(N / B) iterations ({epoch_listed(f['rows'])}); "
                             "here a larger batch did not make an epoch faster."),
    "steadier": lambda f: ("(iii) The training loss gets steadier as the batch grows (its standard deviation "
                           f"over the last 100 steps: {noise_listed(f['rows'])}): a batch of B examples "
                           "estimates the gradient with a variance that shrinks like 1/B, so small batches "
                           "take noisy steps."),
    "not_steadier": lambda f: (f"(iii) The spread of the training loss over the last 100 steps "
                               f"({noise_listed(f['rows'])}) does not fall steadily with the batch size "
                               "here."),
}


def report_batch_size(result):
    by_bs = group_by(result["runs"], "batch_size")
    fig = plt.figure(figsize=(15, 10), layout="constrained")
    grid = fig.add_gridspec(2, 2, height_ratios=[1, 1.1])
    ax_epoch, ax_steps = fig.add_subplot(grid[0, 0]), fig.add_subplot(grid[0, 1])
    ax_loss = fig.add_subplot(grid[1, :])
    rows, answer_rows, curves = [], [], {}
    for color, (batch_size, runs) in zip(PALETTE, by_bs.items()):
        steps, epochs = runs[0]["steps_per_epoch"], runs[0]["epochs"]
        label = f"batch {batch_size}" + (" (1 epoch: one point)" if epochs == 1 else "")
        for ax, x in ((ax_epoch, epochs_axis(runs)), (ax_steps, epochs_axis(runs) * steps)):
            plot_mean_band(ax, x, [r["history"]["val_acc"] for r in runs], label=label, color=color,
                           marker="o", markersize=4)
        noise = float(np.mean([r["loss_noise"] for r in runs if r["status"] == "ok"]))
        windows = {key: result["arrays"][f"steps_{batch_size}_{key}"]
                   for key in ("end", "mean", "p10", "p90")}
        ax_loss.fill_between(windows["end"], windows["p10"], windows["p90"], color=color, alpha=0.2,
                             linewidth=0)
        ax_loss.plot(windows["end"], windows["mean"], color=color, linewidth=2,
                     label=f"batch {batch_size}: mean; band 10th..90th percentile; noise {noise:.3f}")
        best_acc = [best(r, "val_acc", max) for r in runs]
        rows.append((batch_size, epochs, steps, steps * epochs, f"{runs[0]['group_wall_s']:.1f}",
                     f"{noise:.3f}", finals(runs, "val_acc"), mean_std(best_acc), status_text(runs)))
        answer_rows.append((batch_size, steps, runs[0]["group_wall_s"] / epochs, steps * epochs,
                            float(np.mean(as_array(best_acc))), noise, mean_final(runs, "val_acc"), best_acc))
        curves[batch_size] = (epochs_axis(runs) * steps,
                              np.nanmean([as_array(r["history"]["val_acc"]) for r in runs], axis=0))
    finish(ax_epoch, "epoch", "validation accuracy (fraction correct)",
           "(i) validation accuracy per epoch (mean over seeds, band = min..max)", legend=False)
    finish(ax_steps, "optimizer steps taken (log scale)", "validation accuracy (fraction correct)",
           "the same against the optimizer steps taken", loc="upper left", bbox_to_anchor=(1.01, 1))
    finish(ax_loss, "optimizer step (log scale)", "training loss of the step's batch (nats)",
           f"(iii) training loss per step, seed {result['runs'][0]['seed']}, pooled in log-spaced windows of "
           "steps; noise: the std of the last 100 steps, mean over seeds", loc="upper left",
           bbox_to_anchor=(1.01, 1))
    for ax in (ax_steps, ax_loss):
        ax.set_xscale("log")
    table = markdown_table(["batch size", "epochs", "iterations per epoch", "total steps",
                            "wall time of the group (s)", "std of the training loss over the last 100 steps "
                            "(mean over seeds)", "final val acc", "best val acc", "status"], rows)
    answer = from_sentences("6.1.2-4", "How does the batch size affect (i) accuracy, (ii) speed, (iii) stability?",
                    [render(BATCH_SIZE_TEXT, f) for f in batch_size_findings(answer_rows, curves)])
    caption = ("Top: accuracy per epoch and per optimizer step (where the batch sizes meet at equal steps); "
               "bottom: how far each batch size's step losses scatter (band) around their mean (line).")
    return Report([table], {"batch_size.png": (fig, caption)}, [], [answer])


QUESTION = Question("batch_size", "6.1.2-4", "Batch size",
                    dict(SKELETON, batch_norm=False, batch_sizes=[1, 16, 128, 1024],
                         batch_size_epochs=[1, 10, 50, 50]),
                    train_batch_size, report_batch_size)
