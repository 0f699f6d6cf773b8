"""6.1.2-1 learning rate: the lr sweep, against the loss of a uniform guess and of the class frequencies."""
import math

import numpy as np

from plots import (PALETTE, SEED_STYLES, Answer, Report, finish, markdown_table, plot_mean_band, render,
                   subplots)
from runner import Question
from section6 import (SKELETON_WITHOUT_LR, arch_of, class_prior_entropy, dead_relu_fraction, lr_runs,
                      train_group)
from stats import (DEAD_MARGIN, as_array, epochs_axis, falling_finding, final, finals, group_by, listed,
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
TOO_HIGH = ("collapsed", "unstable", "diverged")


def seeds_disagree(values):
    """Do the seeds of one setting end far apart (or some diverge and others not)? values: one per seed."""
    finite = [v for v in values if v is not None]
    return 0 < len(finite) < len(values) or (len(finite) > 1 and max(finite) - min(finite) > SEED_SPREAD)


def seed_key(runs):
    """Legend entries for the line styles of each seed's own lines."""
    from matplotlib.lines import Line2D  # here: matplotlib is imported at the first figure
    return [Line2D([], [], color="0.3", linestyle=style, label=f"seed {run['seed']}")
            for style, run in zip(SEED_STYLES, runs)]


def reference_line(ax, y, name):
    """A reference value: a thin dashed grey line over the data (a line that ends on it shows between the
    dashes), named beside the axes' right edge."""
    ax.axhline(y, color="0.4", linewidth=0.9, linestyle=(0, (4, 4)), zorder=5)
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


def lr_findings(stats, prior, uniform):
    """6.1.2-1 from per-lr stats (finals: per seed; first: mean after epoch 1; trend: falling_finding's case):
    'high', the lrs too high (lr_case collapsed, unstable, diverged); 'low', those stuck; 'best', the lowest
    of the rest, against the runner-up by a paired t-test; 'slow', smaller ones still falling; 'apart', lrs
    whose seeds end far apart."""
    cases = {lr: lr_case(st["finals"], st["first"], prior, uniform) for lr, st in stats.items()}
    mean = {lr: float(np.mean([v for v in st["finals"] if v is not None])) for lr, st in stats.items()
            if cases[lr] != "diverged"}
    wrecked = {lr: sum(v is None or abs(v - prior) < NEAR for v in st["finals"]) for lr, st in stats.items()}
    found = {"high": [dict(case=cases[lr], lr=lr, final=mean.get(lr), prior=prior, wrecked=wrecked[lr],
                           n=len(stats[lr]["finals"])) for lr in stats if cases[lr] in TOO_HIGH],
             "low": [dict(case="stuck", lr=lr, final=mean[lr], uniform=uniform, first=stats[lr]["first"])
                     for lr in stats if cases[lr] == "stuck"], "slow": [], "apart": [], "cases": cases}
    ranked = sorted((lr for lr in stats if cases[lr] == "learning"), key=mean.get)
    if not ranked:
        return found
    best_lr = ranked[0]
    versus = paired(stats[best_lr]["finals"], stats[ranked[1]]["finals"]) if len(ranked) > 1 else {}
    if versus.get("case") == "tie":  # which was ahead, in how many seeds and by how much
        found["best"] = dict(versus, case="best_tied", lr=best_lr, final=mean[best_lr], other=ranked[1],
                             other_final=mean[ranked[1]], ahead=sum(m > 0 for m in versus["diffs"]),
                             low=min(versus["diffs"]), high=max(versus["diffs"]))
    else:
        found["best"] = dict(case="best", lr=best_lr, final=mean[best_lr])
    named = {best_lr, found["best"].get("other")}  # an lr named for the best is not called slow too
    found["slow"] = [lr for lr in ranked
                     if stats[lr]["trend"] == "falling" and lr < best_lr and lr not in named]
    found["apart"] = [lr for lr in ranked if seeds_disagree(stats[lr]["finals"])]
    return found


HIGH_TEXT = {
    "collapsed": "lr {lr:g} ends at {final:.3f}, the loss of always predicting the class frequencies "
                 "({prior:.3f})",
    "unstable": "lr {lr:g} collapses or diverges in {wrecked} of {n} seeds",
    "diverged": "lr {lr:g} diverges",
}
COLLAPSES = "collapses to the class frequencies"
HEADLINE_HIGH = {"collapsed": COLLAPSES, "unstable": COLLAPSES, "diverged": "diverges"}
LOW_TEXT = ("lr {lr:g} ends at {final:.3f}, near a uniform guess ({uniform:.3f}) and its epoch-1 loss "
            "({first:.3f})")
BEST_TEXT = {
    "best": "Best: lr {lr:g} ends lowest ({final:.3f}).",
    "best_tied": ("Best: lr {lr:g} ends lowest ({final:.3f}), below lr {other:g} in {ahead} of {n} seeds by "
                  "{low:.2f} to {high:.2f}, but {n} seeds cannot show that at 95% (a paired t-test needs "
                  "{noise:.2f})."),
}


def lr_answer(found, dead, epochs):
    """The Answer from lr_findings' found and dead_units_finding's dead."""
    high, low, best = found["high"], found["low"], found.get("best")
    parts, bullets = [], []
    if high:
        fates = " or ".join(dict.fromkeys(HEADLINE_HIGH[f["case"]] for f in high))
        parts.append(f"too high (lr {listed([f['lr'] for f in high], '{:g}')}), the net {fates}")
        bullets.append("Too high: " + "; ".join(render(HIGH_TEXT, f) for f in high) + ".")
    if low:
        parts.append(f"too low (lr {listed([f['lr'] for f in low], '{:g}')}), it barely leaves a uniform "
                     "guess")
    slow = [f"still falling at epoch {epochs}: lr {listed(found['slow'], '{:g}')}"] if found["slow"] else []
    if low or slow:
        bullets.append("Too low: " + "; ".join([LOW_TEXT.format(**f) for f in low] + slow) + ".")
    if best:
        parts.append(f"lr {best['lr']:g} ends lowest")
        apart = f" Seeds end far apart at lr {listed(found['apart'], '{:g}')}." if found["apart"] else ""
        bullets.append(render(BEST_TEXT, best) + apart)
    bullets.append(render(DEAD_TEXT, dead))
    headline = "; ".join(parts)
    key = f"val loss {best['final']:.2f} at lr {best['lr']:g}" if best else "no lr learned"
    return Answer("6.1.2-1", "What do a too-high and a too-low learning rate do?",
                  headline[:1].upper() + headline[1:] + ".", [b for b in bullets if b], key)


def dead_curve(runs):
    """The mean over seeds and hidden layers of the dead-ReLU fraction after each epoch (NaN: diverged)."""
    return np.nanmean([[np.nan if e is None else np.mean(e) for e in r["history"]["dead_relu_fraction"]]
                       for r in runs], axis=0)


def dead_units_finding(curves, cases):
    """Do the lrs that collapse leave more dead units than the others, and do their dead units stay dead?
    curves: lr -> dead_curve; cases: lr -> lr_case. 'no_collapse' when no lr collapsed (or only ones did)."""
    ends = {lr: (float(c[~np.isnan(c)].max()), float(c[~np.isnan(c)][-1])) for lr, c in curves.items()
            if (~np.isnan(c)).any()}
    collapsed = [lr for lr in ends if cases[lr] == "collapsed"]
    others = [lr for lr in ends if cases[lr] != "collapsed"]
    if not collapsed or not others:
        return dict(case="no_collapse")
    least = min(ends[lr][1] for lr in collapsed)
    most_other = max(ends[lr][1] for lr in others)
    more = least > most_other + DEAD_MARGIN
    stay = all(ends[lr][1] >= ends[lr][0] - DEAD_MARGIN for lr in collapsed)
    case = ("collapse_kills_units" if more and stay else "collapse_units_recover" if more
            else "dead_units_do_not_separate")
    return dict(case=case, collapsed=collapsed, least=least, most_other=most_other)


DEAD_TEXT = {
    "no_collapse": None,
    "collapse_kills_units": lambda f: (
        f"Collapsed nets (lr {listed(f['collapsed'], '{:g}')}) end with the most dead ReLUs "
        f"({f['least']:.0%}, others at most {f['most_other']:.0%}), and theirs stay dead: a ReLU that is 0 "
        "on every input passes no gradient to its weights."),
    "collapse_units_recover": lambda f: (
        f"Collapsed nets end with the most dead ReLUs ({f['least']:.0%}, others at most "
        f"{f['most_other']:.0%}), but some of theirs come back, so dying is not final."),
    "dead_units_do_not_separate": lambda f: (
        f"Collapsed nets do not end with clearly more dead ReLUs ({f['least']:.0%}, others up to "
        f"{f['most_other']:.0%}), so dead units do not explain the collapse."),
}


LR_COLORS = [PALETTE[i] for i in (0, 1, 2, 6, 4, 5, 3, 7)]  # neighbouring lrs in colours far apart: the
#   palette's orange and vermillion had drawn lr 0.2 and lr 0.001, both seed by seed, alike


def report_lr(result):
    by_lr = group_by(result["runs"], "lr")
    reference, n_classes = result["reference_losses"], result["data"]["n_classes"]
    fig, (ax, ax_dead) = subplots(1, 2, figsize=(15, 5.5), width_ratios=[1.6, 1])
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
        dead = curves[lr][~np.isnan(curves[lr])]
        rows.append((f"{lr:g}", f"{listed(losses, '{:.3f}')} (each seed)" if seeds_disagree(losses) else
                     mean_std(losses), finals(runs, "val_acc"),
                     "/".join(f"{d:.0%}" for d in (dead[0], dead.max(), dead[-1])) if len(dead) else "-",
                     status_text(runs)))
        curve = np.nanmean([as_array(r["history"]["val_loss"]) for r in ok], axis=0) if ok else None
        stats[lr] = {"finals": losses, "first": float(curve[0]) if ok else None,
                     "trend": falling_finding([r["history"]["val_loss"] for r in ok])["case"] if ok else None}
    header = ["lr", "final val loss", "final val acc", "dead ReLUs: epoch 1/peak/end", "status"]
    table = markdown_table(header, rows)
    found = lr_findings(stats, reference["class_prior"], reference["uniform"])
    caption = "Left: where each lr ends against the dashed references. Right: dead units per epoch."
    answer = lr_answer(found, dead_units_finding(curves, found["cases"]), len(epochs_axis(result["runs"])))
    return Report([table], {"lr.png": (fig, caption)}, [answer])


QUESTION = Question(
    "lr", "6.1.2-1", "Learning rate",
    dict(SKELETON_WITHOUT_LR, batch_size=256, batch_norm=False, lrs=[1, 0.2, 0.01, 0.001, 0.0005, 0.00001],
         epochs=50),
    train_lr,
    report_lr)
