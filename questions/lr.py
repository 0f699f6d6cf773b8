"""6.1.2-1 learning rate: the lr sweep, against the loss of a uniform guess and of the class frequencies."""
import math

import numpy as np
from matplotlib.lines import Line2D

from plots import PALETTE, SEED_STYLES, from_sentences, Report, finish, markdown_table, plot_mean_band, plt, render
from runner import Question
from section6 import (SKELETON_WITHOUT_LR, arch_of, class_prior_entropy, dead_relu_fraction, lr_runs,
                      train_group)
from stats import (DEAD_MARGIN, as_array, best, epochs_axis, final, finals, group_by, listed, loss_trend,
                   mean_std, paired, status_text)


def train_lr(settings, data, reads, env):
    """The lr sweep; beyond the protocol, each layer's dead ReLUs on the validation set after every epoch."""
    def dead_units(model, X):
        return {"dead_relu_fraction": dead_relu_fraction(model, X)}
    results, _ = train_group(data, lr_runs(settings), arch_of(settings), settings, env, "lr sweep",
                             epoch_measure=dead_units)
    n_classes = data["meta"]["n_classes"]
    prior = class_prior_entropy(data["train"][1], n_classes)
    return {"runs": results, "reference_losses": {"class_prior": prior, "uniform": math.log(n_classes)}}


NEAR = 0.03  # nats: a final loss this close to a reference loss sits on it; a net that learns anything
#   leaves the references by 0.1 nats or more
SEED_SPREAD = 0.3  # nats: seeds whose final validation losses span more than this disagree, and a mean would
#   hide a wrecked seed; the seeds of a healthy setting end within 0.1
DEAD_MAJORITY = 0.5  # a collapse is blamed on dead units only when most hidden ReLUs are dead


def seeds_disagree(values):
    """Do the seeds of one setting end far apart (or some diverge and others not)? values: one per seed."""
    finite = [v for v in values if v is not None]
    return 0 < len(finite) < len(values) or (len(finite) > 1 and max(finite) - min(finite) > SEED_SPREAD)


def seed_key(runs):
    """Legend entries for the line styles of each seed's own lines."""
    return [Line2D([], [], color="0.3", linestyle=style, label=f"seed {run['seed']}")
            for style, run in zip(SEED_STYLES, runs)]


def reference_line(ax, y, name):
    """A reference value: a thin grey line behind the data, named beside the axes' right edge."""
    ax.axhline(y, color="0.55", linewidth=0.8, zorder=0)
    ax.annotate(name, (1, y), xycoords=("axes fraction", "data"), xytext=(4, 0), textcoords="offset points",
                va="center", fontsize=8, color="0.3", annotation_clip=False)


def lr_case(finals, first, prior, uniform):
    """What one learning rate did: 'diverged'; 'unstable' (some seeds collapse to the class-frequency loss
    or diverge, others train); 'collapsed' (ends at the loss of predicting the class frequencies); 'stuck'
    (ends where it started, near a uniform guess); or 'learning'. finals: the final validation loss of each
    seed; first: the mean validation loss after epoch 1."""
    finite = [v for v in finals if v is not None]
    if not finite:
        return "diverged"
    wrecked = len(finite) < len(finals) or any(abs(v - prior) < NEAR for v in finite)
    if wrecked and not all(abs(v - prior) < NEAR for v in finite):
        return "unstable"
    mean = float(np.mean(finite))
    if abs(mean - prior) < NEAR:
        return "collapsed"
    if abs(mean - first) < NEAR and abs(mean - uniform) < 3 * NEAR:
        return "stuck"
    return "learning"


def lr_findings(stats, prior, uniform, n_classes, epochs):
    """6.1.2-1 from per-lr stats (finals: per seed; first: mean after epoch 1; dead: mean dead fraction or
    None; trend: loss_trend's case of the mean curve): the lrs too high and too low, then the best of the
    rest, the slower ones still falling, and those whose seeds end far apart."""
    cases = {lr: lr_case(st["finals"], st["first"], prior, uniform) for lr, st in stats.items()}
    mean = {lr: float(np.mean([v for v in st["finals"] if v is not None])) for lr, st in stats.items()
            if cases[lr] != "diverged"}
    findings = []
    for case in ("collapsed", "diverged", "unstable", "stuck"):
        for lr in [lr for lr, c in cases.items() if c == case]:
            st = stats[lr]
            dead = case == "collapsed" and (st["dead"] or 0) > DEAD_MAJORITY
            at_prior = sum(v is not None and abs(v - prior) < NEAR for v in st["finals"])
            findings.append(dict(case=case + "_dead" * dead, lr=lr, final=mean.get(lr), prior=prior,
                                 uniform=uniform, n_classes=n_classes, epochs=epochs, first=st["first"],
                                 dead=st["dead"], finals=st["finals"], collapsed=at_prior))
    learning = {lr: mean[lr] for lr, case in cases.items() if case == "learning"}
    if learning:
        ranked = sorted(learning, key=learning.get)
        best_lr = ranked[0]
        versus = paired(stats[best_lr]["finals"], stats[ranked[1]]["finals"]) if len(ranked) > 1 else {}
        tied = versus.get("case") == "tie"
        if tied:  # which was ahead, in how many seeds and by how much, though the test cannot tell them apart
            findings.append(dict(versus, case="best_tied", lr=best_lr, final=learning[best_lr],
                                 other=ranked[1], other_final=learning[ranked[1]], margins=versus["diffs"],
                                 ahead=sum(m > 0 for m in versus["diffs"])))
        else:
            findings.append(dict(case="best", lr=best_lr, final=learning[best_lr]))
        named = {best_lr, ranked[1]} if tied else {best_lr}  # an lr named for the best is not called slow too
        slow = [lr for lr in learning
                if stats[lr]["trend"] == "improving" and lr < best_lr and lr not in named]
        if slow:
            findings.append(dict(case="slow", lrs=slow, epochs=epochs))
        apart = {lr: stats[lr]["finals"] for lr in learning if seeds_disagree(stats[lr]["finals"])}
        if apart:
            findings.append(dict(case="seeds_apart", finals=apart))
    return findings


COLLAPSED = ("Too high: lr {lr:g} ends at validation loss {final:.3f}, the entropy of the training labels' "
             "class frequencies ({prior:.3f}), so the net outputs those frequencies whatever its input.")
LR_TEXT = {
    "collapsed": COLLAPSED,
    "collapsed_dead": COLLAPSED + (" {dead:.0%} of its hidden ReLUs are dead at the end (0 on every "
                                   "validation point)."),
    "diverged": "Too high: lr {lr:g} diverged (its loss became infinite or NaN).",
    "unstable": lambda f: (f"At lr {f['lr']:g} the net is on the edge: its seeds end at "
                           f"{listed(f['finals'], '{:.3f}')}"
                           + (f", {f['collapsed']} of them at the class-frequency loss"
                              if f["collapsed"] else "")
                           + ", so a step this large trains some seeds and wrecks others (the figure draws "
                             "each seed)."),
    "stuck": ("Too low: lr {lr:g} ends at {final:.3f}, near ln {n_classes} = {uniform:.3f} (a uniform guess) "
              "and where it started ({first:.3f} after epoch 1): steps of lr times the gradient are too "
              "small to move the weights in {epochs} epochs."),
    "best": "Of the rest, lr {lr:g} reaches the lowest validation loss, {final:.3f}.",
    "best_tied": lambda f: (
        f"Of the rest, lr {f['lr']:g} ends lowest ({f['final']:.3f}), then lr {f['other']:g} "
        f"({f['other_final']:.3f}): lr {f['lr']:g} was lower in {f['ahead']} of {f['n']} seeds, by "
        f"{min(f['margins']):.2f} to {max(f['margins']):.2f}, but {f['n']} seeds cannot show that at 95% (a "
        f"paired t-test needs {f['noise']:.3f})."),
    "slow": lambda f: (f"Smaller ones ({listed(f['lrs'], '{:g}')}) are still falling at epoch {f['epochs']}: "
                       "too slow for this budget rather than wrong."),
    "seeds_apart": lambda f: ("Seeds end far apart at lr " + "; ".join(
        f"{lr:g} ({listed(values, '{:.3f}')})" for lr, values in f["finals"].items())
        + ", more than a mean shows: the figure draws each seed."),
}


def dead_curve(runs):
    """The mean over seeds and hidden layers of the dead-ReLU fraction after each epoch (NaN: diverged)."""
    return np.nanmean([[np.nan if e is None else np.mean(e) for e in r["history"]["dead_relu_fraction"]]
                       for r in runs], axis=0)


def dead_units_finding(curves, cases):
    """Do the lrs that collapse leave more dead units than the others, and do their dead units stay dead?
    curves: lr -> dead_curve; cases: lr -> lr_case. 'listed' when no lr collapsed."""
    finite = {lr: c[~np.isnan(c)] for lr, c in curves.items() if (~np.isnan(c)).any()}
    rows = [(lr, float(c[0]), float(c.max()), float(c[-1])) for lr, c in finite.items()]
    collapsed = [row for row in rows if cases[row[0]] == "collapsed"]
    others = [row for row in rows if cases[row[0]] != "collapsed"]
    if not collapsed or not others:
        return dict(case="listed", rows=rows)
    more = min(row[3] for row in collapsed) > max(row[3] for row in others) + DEAD_MARGIN
    stay = all(row[3] >= row[2] - DEAD_MARGIN for row in collapsed)
    case = ("collapse_kills_units" if more and stay else "collapse_units_recover" if more
            else "dead_units_do_not_separate")
    revived = [row for row in others if row[3] < row[2] - DEAD_MARGIN]
    return dict(case=case, rows=rows, collapsed=collapsed, others=others, revived=revived)


def dead_rows_text(rows):
    return "; ".join(f"lr {lr:g}: {first:.0%} after epoch 1, at most {most:.0%}, {end:.0%} at the end"
                     for lr, first, most, end in rows)


DEAD_TEXT = {
    "listed": lambda f: ("Dead hidden ReLUs (validation set, mean over seeds and layers): "
                         f"{dead_rows_text(f['rows'])}."),
    "collapse_kills_units": lambda f: (
        f"Dead units, measured after every epoch: {dead_rows_text(f['rows'])}. The lrs that collapse end "
        "with more dead units than every other lr, and theirs never fall back from their peak by more than "
        f"{DEAD_MARGIN:.0%}: a ReLU that is 0 on every input passes no gradient to its own weights."
        + (" Dead units do come back at "
           + ", ".join(f"lr {lr:g} ({most:.0%} at most, {end:.0%} at the end)"
                       for lr, _, most, end in f["revived"])
           + ": there dying is not final, in the nets that collapse it is." if f["revived"]
           else " At no lr do dead units come back.")),
    "collapse_units_recover": lambda f: (
        f"Dead units, measured after every epoch: {dead_rows_text(f['rows'])}. The lrs that collapse end "
        "with more dead units than the others, but some of theirs come back after their peak, so dying is "
        "not final here."),
    "dead_units_do_not_separate": lambda f: (
        f"Dead units, measured after every epoch: {dead_rows_text(f['rows'])}. The lrs that collapse do not "
        "end with clearly more dead units than the others, so dead units do not explain the collapse."),
}


LR_COLORS = [PALETTE[i] for i in (0, 1, 2, 6, 4, 5, 3, 7)]  # neighbouring lrs in colours far apart: the
#   palette's orange and vermillion had drawn lr 0.2 and lr 0.001, both seed by seed, alike


def report_lr(result):
    by_lr = group_by(result["runs"], "lr")
    reference, n_classes = result["reference_losses"], result["data"]["n_classes"]
    fig, (ax, ax_dead) = plt.subplots(1, 2, figsize=(15, 5.5), width_ratios=[1.6, 1], layout="constrained")
    apart = [seeds_disagree([final(r, "val_loss") for r in runs]) for runs in by_lr.values()]
    for color, each_seed, (lr, runs) in zip(LR_COLORS, apart, by_lr.items()):
        plot_mean_band(ax, epochs_axis(runs), [r["history"]["val_loss"] for r in runs], label=f"lr {lr:g}",
                       color=color, each_seed=each_seed, linewidth=1.2 if each_seed else 2)
    reference_line(ax, reference["uniform"], f"uniform guess\nln {n_classes} = {reference['uniform']:.3f}")
    reference_line(ax, reference["class_prior"], f"class frequencies\n{reference['class_prior']:.3f}")
    handles = ax.get_legend_handles_labels()[0] + (seed_key(next(iter(by_lr.values()))) if any(apart) else [])
    finish(ax, "epoch", "validation loss (cross-entropy, nats)", "Validation loss per epoch by learning "
           "rate (mean over seeds, band = min..max)", handles=handles, loc="upper left",
           bbox_to_anchor=(1.16, 1), fontsize=9)
    curves = {lr: dead_curve(runs) for lr, runs in by_lr.items()}
    for color, (lr, curve) in zip(LR_COLORS, curves.items()):
        ax_dead.plot(np.arange(1, len(curve) + 1), curve, color=color, linewidth=2, label=f"lr {lr:g}")
    ax_dead.set_ylim(-0.02, 1.02)
    finish(ax_dead, "epoch", "dead hidden ReLUs (fraction: 0 on every validation point)",
           "Dead units after each epoch (mean over seeds and layers)", legend=False)
    rows, stats = [], {}
    for lr, runs in by_lr.items():
        losses, ok = [final(r, "val_loss") for r in runs], [r for r in runs if r["status"] == "ok"]
        dead = [final(r, "dead_relu_fraction") for r in ok]
        rows.append((f"{lr:g}", f"{listed(losses, '{:.3f}')} (each seed)" if seeds_disagree(losses) else
                     mean_std(losses), mean_std([best(r, "val_loss") for r in runs]), finals(runs, "val_acc"),
                     mean_std([best(r, "val_acc", max) for r in runs]),
                     " / ".join(f"{d:.2f}" for d in np.mean(dead, axis=0)) if dead else "diverged",
                     status_text(runs)))
        curve = np.nanmean([as_array(r["history"]["val_loss"]) for r in ok], axis=0) if ok else None
        stats[lr] = {"finals": losses, "first": float(curve[0]) if ok else None,
                     "dead": float(np.mean(dead)) if dead else None,
                     "trend": loss_trend(curve)["case"] if ok and len(curve) > 1 else None}
    table = markdown_table(["lr", "final val loss", "best val loss", "final val acc", "best val acc",
                            "dead ReLU fraction per hidden layer (val set, mean over seeds)", "status"], rows)
    answer = lr_findings(stats, reference["class_prior"], reference["uniform"], n_classes,
                         len(epochs_axis(result["runs"])))
    cases = {lr: lr_case(st["finals"], st["first"], reference["class_prior"], reference["uniform"])
             for lr, st in stats.items()}
    asked = "What do a too-high and a too-low learning rate do?"
    caption = ("Left: where each lr's line ends against the grey references (on the class frequencies the "
               "net ignores its input; near the uniform guess it has not moved). Right: whether dead units "
               "pile up, and whether they come back.")
    return Report([table], {"lr.png": (fig, caption)}, [],
                  [from_sentences("6.1.2-1", asked, [render(LR_TEXT, f) for f in answer]
                          + [render(DEAD_TEXT, dead_units_finding(curves, cases))])])


QUESTION = Question(
    "lr", "6.1.2-1", "Learning rate",
    dict(SKELETON_WITHOUT_LR, batch_size=256, batch_norm=False, lrs=[1, 0.2, 0.01, 0.001, 0.0005, 0.00001],
         epochs=50),
    train_lr,
    report_lr)
