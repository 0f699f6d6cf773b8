"""Section 6's reports: from a question's saved .json and .npz alone, its figures, tables and the answers to
the exercise. Nothing here trains, measures or reads the data: `python mlp.py --question all --replot` runs
only this.

A finding function decides which case the numbers show and returns it with its numbers ({'case': ...}); the
templates beside it, and only they, hold the wording, so rewording touches no test.
"""
import math

import numpy as np
from matplotlib.lines import Line2D
from matplotlib.patheffects import withStroke
from matplotlib.ticker import MaxNLocator, NullLocator

from common import PALETTE, Answer, Report, borders, markdown_table, mean_std, plt, render, seed_std

# ----------------------------------------------------------------------------- thresholds
# Every number that decides a case, and why it has its value.
TREND_TOLERANCE = 0.005  # relative change of the validation loss between the last two tenths of the epochs
#   under which a curve is flat: a run still learning moves by several percent there
GAP_TOLERANCE = 0.01  # accuracies this close are equal: the standard error of an accuracy on the embedded
#   data's 6,315 validation points is at most 0.0063
NEAR = 0.03  # nats: a final loss this close to a reference loss sits on it; a net that learns anything
#   leaves the references by 0.1 nats or more
SEED_SPREAD = 0.3  # nats: seeds whose final validation losses span more than this disagree, and a mean would
#   hide a wrecked seed; the seeds of a healthy setting end within 0.1
DEAD_MAJORITY = 0.5  # a collapse is blamed on dead units only when most hidden ReLUs are dead
DEAD_MARGIN = 0.05  # batch norm keeps units alive when it leaves 5 points fewer dead than the plain net
OVERFIT_GAP = 0.03  # accuracy: train (eval mode) above validation, or validation apart from test, by three
#   times GAP_TOLERANCE is a real gap
DECADES = 100  # ||grad W||^2: a first layer two decades above the output layer explodes; below, vanishes
BORDER_RATIO = 1.2  # the sin map draws more border than the raw map with 20% more border cells; two seeds'
#   maps of one model differ by less
ONE_CLASS = 0.9  # a net that gives 90% of the validation points one class predicts one class: the embedded
#   data's most frequent class holds 17% of them
SMOOTHING = 0.05  # the over-fitting control is read on moving medians over 5% of its epochs: on 3 rows a
#   class its raw losses spike by 10x from one epoch to the next, and a median ignores the spikes
RISE = 0.1  # nats: the smallest rise of a smoothed validation loss, from its lowest to the end, called a
#   turn; a moving median of spiky curves still wanders by a few hundredths
RECOVERS_MOST = 0.8  # a control that closes 80% of batch norm's accuracy gain accounts for most of it
SOLVED_SDS = 2  # a fix solves the problem when it beats the plain net by more than two seed std deviations
TIE_FLOOR = 0.005  # accuracy: a paired difference under this is a tie even when the seeds agree closely
T_95 = {2: 12.71, 3: 4.30, 4: 3.18, 5: 2.78, 6: 2.57, 7: 2.45, 8: 2.36, 9: 2.31, 10: 2.26}  # t, n - 1 df
GRADIENT_LAYERS = (0, 30, 60, 90, 95, 99)  # the layers the exercise asks to plot


# ----------------------------------------------------------------------------- reading runs

def as_array(values):
    """Floats with NaN where a run diverged (None)."""
    return np.array([np.nan if v is None else v for v in values], dtype=float)


def final(run, key):
    return run["history"][key][-1]


def best(run, key, pick=min):
    values = [v for v in run["history"][key] if v is not None]
    return pick(values) if values else None


def mean_final(runs, key):
    return float(np.mean([final(r, key) for r in runs if final(r, key) is not None]))


def finals(runs, key):
    return mean_std([final(r, key) for r in runs])


def status_text(runs):
    diverged = [f"seed {r['seed']} diverged at epoch {r['diverged_epoch']}" for r in runs
                if r["status"] == "diverged"]
    return "; ".join(diverged) or "ok"


def group_by(runs, key):
    groups = {}
    for run in runs:
        groups.setdefault(run[key], []).append(run)
    return groups


def epochs_axis(runs):
    return np.arange(1, len(runs[0]["history"]["val_loss"]) + 1)


def arch_label(run):
    return f"depth {run['depth']}, width {run['width']}"


def seeds_disagree(values):
    """Do the seeds of one setting end far apart (or some diverge and others not)? values: one per seed."""
    finite = [v for v in values if v is not None]
    return 0 < len(finite) < len(values) or (len(finite) > 1 and max(finite) - min(finite) > SEED_SPREAD)


def paired(base, other):
    """other's values minus base's, paired by seed (lists in seed order; None, a diverged seed, left out): the
    mean difference, its sample std, n, and the noise, the half-width a paired t-test at 95% needs (None with
    one seed). case: 'tie' within the noise or TIE_FLOOR, else 'above' or 'below'; 'one_seed', 'none'."""
    diffs = [o - b for b, o in zip(base, other) if b is not None and o is not None]
    if not diffs:
        return dict(case="none", n=0)
    mean, std, n = float(np.mean(diffs)), seed_std(diffs), len(diffs)
    noise = T_95.get(n, 2.0) * std / math.sqrt(n) if n > 1 else None
    case = ("one_seed" if noise is None else "tie" if abs(mean) <= max(noise, TIE_FLOOR) else
            "above" if mean > 0 else "below")
    return dict(case=case, difference=mean, std=std, n=n, noise=noise)


def listed(values, form="{}"):
    return ", ".join("diverged" if v is None else form.format(v) for v in values)


# ----------------------------------------------------------------------------- plots

SEED_STYLES = ["-", "--", ":", "-."]  # the seeds' lines where each seed is drawn


def plot_mean_band(ax, x, runs_values, label, color=None, each_seed=False, band=True, **kwargs):
    """Mean over seeds as a line, min..max over seeds as a band; with each_seed (seeds that disagree, where a
    mean would hide a collapsed seed), every seed's own line, styled by SEED_STYLES. None breaks a line."""
    values = np.array([as_array(vs) for vs in runs_values])
    if each_seed:
        lines = [ax.plot(x, seed_values, color=color, linestyle=style, **kwargs)[0]
                 for seed_values, style in zip(values, SEED_STYLES * len(values))]
        lines[0].set_label(f"{label} (each seed: they disagree)")
        return
    line, = ax.plot(x, values.mean(0), label=label, color=color, **kwargs)
    if band and len(values) > 1:
        ax.fill_between(x, values.min(0), values.max(0), color=line.get_color(), alpha=0.2, linewidth=0)


def seed_key(runs):
    """Legend entries for the line styles of each seed's own lines."""
    return [Line2D([], [], color="0.3", linestyle=style, label=f"seed {run['seed']}")
            for style, run in zip(SEED_STYLES, runs)]


def reference_line(ax, y, name):
    """A reference value: a thin grey line behind the data, named beside the axes' right edge."""
    ax.axhline(y, color="0.55", linewidth=0.8, zorder=0)
    ax.annotate(name, (1, y), xycoords=("axes fraction", "data"), xytext=(4, 0), textcoords="offset points",
                va="center", fontsize=8, color="0.3", annotation_clip=False)


def finish(ax, xlabel, ylabel, title, legend=True, **legend_kwargs):
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    if legend:
        ax.legend(**legend_kwargs)
    ax.grid(alpha=0.3)


def cielab(rgb):
    """sRGB colors [N, 3] in 0..1 to CIELAB (D65 white), where a distance approximates a seen difference."""
    linear = np.where(rgb > 0.04045, ((rgb + 0.055) / 1.055) ** 2.4, rgb / 12.92)
    xyz = linear @ np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]).T
    f = xyz / np.array([0.95047, 1.0, 1.08883])
    f = np.where(f > 0.008856, np.cbrt(f), 7.787 * f + 16 / 116)
    return np.stack([116 * f[:, 1] - 16, 500 * (f[:, 0] - f[:, 1]), 200 * (f[:, 1] - f[:, 2])], axis=1)


def class_colors(n):
    """n RGB colors, one per class, as far apart to the eye as can be: greedy farthest points in CIELAB among
    a 12-level RGB grid, the darkest and lightest left out so that black rings and lines stay visible."""
    levels = np.linspace(0, 1, 12)
    grid = np.stack(np.meshgrid(levels, levels, levels, indexing="ij"), axis=-1).reshape(-1, 3)
    lab = cielab(grid)
    keep = (lab[:, 0] > 35) & (lab[:, 0] < 90)
    grid, lab = grid[keep], lab[keep]
    chosen = [int(np.argmax(np.hypot(lab[:, 1], lab[:, 2])))]  # the most saturated first
    distance = np.linalg.norm(lab - lab[chosen[0]], axis=1)
    while len(chosen) < n:
        chosen.append(int(np.argmax(distance)))
        distance = np.minimum(distance, np.linalg.norm(lab - lab[chosen[-1]], axis=1))
    return grid[chosen]


def map_aspect(extent):
    """Longitude/latitude aspect of a map of extent (degrees), so that it is not stretched."""
    return 1 / np.cos(np.radians(np.clip(np.mean(extent[2:]), -80, 80)))


def map_figure(extent, map_width, other_width=0, maps=1):
    """A figure sized for `maps` maps of extent, map_width inches wide each, beside other_width inches."""
    height = map_width * (extent[3] - extent[2]) / (extent[1] - extent[0]) * map_aspect(extent) + 0.8
    return plt.figure(figsize=(maps * map_width + other_width, height), layout="constrained")


def draw_map(ax, result, tag, run, title):
    """A saved prediction map (arrays grid_TAG, test_pred_TAG): the plane colored by predicted class, the test
    points on top in their true class's color, a black ring around each one the map gets wrong, and each
    class's name at the middle of its test points."""
    arrays, extent, class_names = result["arrays"], result["map_extent"], result["data"]["class_names"]
    grid, points, labels = arrays[f"grid_{tag}"], arrays["test_points"], arrays["test_labels"]
    wrong = arrays[f"test_pred_{tag}"] != labels
    colors = class_colors(len(class_names))
    ax.imshow(colors[grid], origin="lower", extent=extent, interpolation="nearest")
    ax.scatter(points[~wrong, 0], points[~wrong, 1], c=colors[labels[~wrong]], s=5, edgecolors="white",
               linewidths=0.2)
    ax.scatter(points[wrong, 0], points[wrong, 1], c=colors[labels[wrong]], s=14, edgecolors="black",
               linewidths=0.9, label=f"misclassified test point ({wrong.mean():.1%}): its true class's color")
    for label in np.unique(labels):
        ax.annotate(class_names[label], np.median(points[labels == label], axis=0), ha="center", va="center",
                    fontsize=7, path_effects=[withStroke(linewidth=2.5, foreground="white")])
    ax.set_aspect(map_aspect(extent))
    ax.set(xlim=extent[:2], ylim=extent[2:], xlabel="longitude (degrees)", ylabel="latitude (degrees)",
           title=f"{title}{arch_label(run)}, seed {run['seed']}: test accuracy {final(run, 'test_acc'):.3f}")
    if wrong.any():
        ax.legend(loc="upper left", fontsize=8, framealpha=0.9)
    return grid


# ----------------------------------------------------------------------------- 6.1.2-1 learning rate

def loss_trend(curve):
    """The trend of a validation-loss curve (a diverged epoch, None, left out): the mean of its last tenth
    against the tenth before ('improving'), against its lowest value ('overfitting'), or neither ('flat')."""
    values = as_array(curve)
    window = max(1, len(values) // 10)
    last, previous = np.nanmean(values[-window:]), np.nanmean(values[-2 * window:-window])
    lowest_epoch = int(np.nanargmin(values)) + 1
    lowest = float(values[lowest_epoch - 1])
    if last < previous * (1 - TREND_TOLERANCE):
        case = "improving"
    elif last > lowest * (1 + TREND_TOLERANCE) and lowest_epoch <= len(values) - window:
        case = "overfitting"
    else:
        case = "flat"
    return dict(case=case, window=window, last=float(last), previous=float(previous), lowest=lowest,
                lowest_epoch=lowest_epoch)


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
        if versus.get("case") == "tie":
            findings.append(dict(versus, case="best_tied", lr=best_lr, final=learning[best_lr],
                                 other=ranked[1], other_final=learning[ranked[1]]))
        else:
            findings.append(dict(case="best", lr=best_lr, final=learning[best_lr]))
        slow = [lr for lr in learning if stats[lr]["trend"] == "improving" and lr < best_lr]
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
    "best_tied": ("Of the rest, lr {lr:g} and lr {other:g} tie for the lowest validation loss ({final:.3f} "
                  "and {other_final:.3f}: within the seeds' noise, which a paired t-test at 95% puts at "
                  "{noise:.3f})."),
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


def report_lr(result):
    by_lr = group_by(result["runs"], "lr")
    reference, n_classes = result["reference_losses"], result["data"]["n_classes"]
    fig, (ax, ax_dead) = plt.subplots(1, 2, figsize=(15, 5.5), width_ratios=[1.6, 1], layout="constrained")
    apart = [seeds_disagree([final(r, "val_loss") for r in runs]) for runs in by_lr.values()]
    for color, each_seed, (lr, runs) in zip(PALETTE, apart, by_lr.items()):
        plot_mean_band(ax, epochs_axis(runs), [r["history"]["val_loss"] for r in runs], label=f"lr {lr:g}",
                       color=color, each_seed=each_seed, linewidth=1.2 if each_seed else 2)
    reference_line(ax, reference["uniform"], f"uniform guess\nln {n_classes} = {reference['uniform']:.3f}")
    reference_line(ax, reference["class_prior"], f"class frequencies\n{reference['class_prior']:.3f}")
    handles = ax.get_legend_handles_labels()[0] + (seed_key(next(iter(by_lr.values()))) if any(apart) else [])
    finish(ax, "epoch", "validation loss (cross-entropy, nats)", "Validation loss per epoch by learning "
           "rate (mean over seeds, band = min..max)", handles=handles, loc="upper left",
           bbox_to_anchor=(1.16, 1), fontsize=9)
    curves = {lr: dead_curve(runs) for lr, runs in by_lr.items()}
    for color, (lr, curve) in zip(PALETTE, curves.items()):
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
                  [Answer("6.1.2-1", asked, [render(LR_TEXT, f) for f in answer]
                          + [render(DEAD_TEXT, dead_units_finding(curves, cases))])])


# ------------------------------------------------------------------------ 6.1.2-2 epochs, 6.1.2-3 batch norm

def epochs_finding(runs):
    """6.1.2-2: what too few and too many epochs do, from where the mean validation loss bottoms out
    (loss_trend) and how far apart the training (eval mode) and validation losses end."""
    ok = [r for r in runs if r["status"] == "ok"]
    if not ok or len(epochs_axis(ok)) < 2:
        return dict(case="too_short")
    trend = loss_trend(np.nanmean([as_array(r["history"]["val_loss"]) for r in ok], axis=0))
    train, val = mean_final(ok, "train_eval_loss"), mean_final(ok, "val_loss")
    return dict(trend, span=2 * trend["window"], epochs=len(epochs_axis(ok)), train=train, val=val,
                gap=abs(val - train), tolerance=TREND_TOLERANCE)


def plateau_finding(runs, top_share, prior_entropy):
    """'Too few' in numbers: the epochs where the mean validation accuracy sits at the most frequent class's
    share of the training labels, and what the net outputs there (means over those epochs and the seeds): the
    entropy of its predictions against that of the class frequencies, and the share of points it gives the
    class it predicts most."""
    ok = [r for r in runs if r["status"] == "ok"]
    curves = {key: np.nanmean([as_array(r["history"][key]) for r in ok], axis=0)
              for key in ("val_acc", "val_entropy", "val_mode_share")} if ok else {}
    at = [e for e, acc in enumerate(curves.get("val_acc", [])) if abs(acc - top_share) <= GAP_TOLERANCE]
    if not at:
        return dict(case="no_plateau", top_share=top_share)
    entropy, share = (float(np.mean(curves[key][at])) for key in ("val_entropy", "val_mode_share"))
    return dict(case="one_class" if share >= ONE_CLASS else "several_classes", first=at[0] + 1,
                last=at[-1] + 1, n=len(at), top_share=top_share, entropy=entropy, prior_entropy=prior_entropy,
                share=share)


def moving_median(values, window):
    """The median of each value's centred window of `window` values (fewer at the ends); None left out."""
    values, half = as_array(values), window // 2
    return np.array([np.nanmedian(values[max(0, i - half):i + half + 1]) for i in range(len(values))])


def overfit_finding(runs):
    """The over-fitting control: does its validation loss turn up while its training loss (eval mode, on its
    subset) keeps falling? Read per seed on moving medians over SMOOTHING of the epochs, since steps on so few
    rows make the raw curves spike: each seed's lowest smoothed validation loss (after the first window), its
    smoothed validation and training losses there and at the end."""
    ok = [r for r in runs if r["status"] == "ok"]
    epochs = len(epochs_axis(ok)) if ok else 0
    window = max(1, round(SMOOTHING * epochs))
    if epochs < 3 * window or epochs < 3:
        return dict(case="control_too_short")
    seeds = []
    for r in ok:
        val, train = (moving_median(r["history"][key], window) for key in ("val_loss", "train_eval_loss"))
        low = window + int(np.nanargmin(val[window:]))
        seeds.append(dict(seed=r["seed"], epoch=low + 1, val_low=float(val[low]), val_end=float(val[-1]),
                          train_low=float(train[low]), train_end=float(train[-1])))
    turns = all(s["val_end"] - s["val_low"] > RISE and s["train_end"] < s["train_low"] for s in seeds)
    return dict(case="control_overfits" if turns else "control_does_not", seeds=seeds, window=window,
                epochs=epochs, rise=RISE, rows=ok[0]["train_rows"], per_class=ok[0]["rows_per_class"],
                features=ok[0]["features"], width=ok[0]["width"], lr=ok[0]["lr"], batch=ok[0]["batch_size"])


def control_seeds_text(f):
    return "; ".join(f"seed {s['seed']}: lowest {s['val_low']:.2f} at epoch {s['epoch']}, {s['val_end']:.2f} "
                     f"at the end, while its training loss goes {s['train_low']:.2f} to {s['train_end']:.2f}"
                     for s in f["seeds"])


GAP = "the training loss (eval mode, {train:.3f}) and the validation loss ({val:.3f}) are {gap:.3f} apart"
CONTROL = ("the same net {width} units wide on {rows:,} training rows, {per_class} of every class, "
           "{features} inputs (lr {lr:g}, batch {batch}, {epochs} epochs; validation whole): ")
EPOCHS_TEXT = {
    "too_short": "No run trained long enough without diverging to tell.",
    "one_class": ("Too few epochs leave the net at the class frequencies: at epochs {first}-{last} ({n} of "
                  "them) validation accuracy sits at the most frequent class's share ({top_share:.3f}), and "
                  "the net gives {share:.0%} of the validation points one class, with predictions of entropy "
                  "{entropy:.3f} nats (the class frequencies': {prior_entropy:.3f}): it has not yet used its "
                  "input."),
    "several_classes": ("At epochs {first}-{last} ({n} of them) validation accuracy sits at the most "
                        "frequent class's share ({top_share:.3f}), though the net spreads its predictions: "
                        "its most predicted class gets {share:.0%} of the points, and its predictions' "
                        "entropy is {entropy:.3f} nats (the class frequencies': {prior_entropy:.3f})."),
    "no_plateau": "Validation accuracy never sits at the most frequent class's share ({top_share:.3f}).",
    "control_too_short": "The over-fitting control did not train long enough without diverging to tell.",
    "control_overfits": lambda f: (
        "Too many epochs over-fit, as the control shows: " + CONTROL.format(**f) + "its validation loss "
        f"(moving median over {f['window']} epochs) turns up while its training loss (eval mode) keeps "
        f"falling: {control_seeds_text(f)}. Stopping near the lowest validation loss keeps the best model."),
    "control_does_not": lambda f: (
        "The over-fitting control did not turn up clearly in every seed (a rise of more than "
        f"{f['rise']} nats on moving medians over {f['window']} epochs): " + CONTROL.format(**f)
        + f"{control_seeds_text(f)}."),
    "improving": ("With the protocol's data, {epochs} epochs are still too few: the validation loss is still "
                  "falling at the end ({previous:.3f} to {last:.3f} over the last {span} epochs), and " + GAP
                  + ", so it is not over-fitting."),
    "overfitting": ("Too many epochs overfit: the validation loss was lowest ({lowest:.3f}) at epoch "
                    "{lowest_epoch} and rose after it ({last:.3f} over the last {window}), while " + GAP
                    + ". Stopping near epoch {lowest_epoch} keeps the best model; much earlier, it is "
                      "undertrained."),
    "flat": ("By epoch {epochs} the net has converged: the validation loss moved by less than "
             "{tolerance:.1%} over the last {span} epochs, and " + GAP + "; more epochs add nothing, fewer "
             "would stop it before its lowest loss (epoch {lowest_epoch})."),
}
SPLITS = (("val", "validation", PALETTE[3], "-", 3),  # split, label, color, line style, line width
          ("train", "train (train mode, over the epoch)", PALETTE[0], "-", 1.2),
          ("test", "test", PALETTE[2], "--", 1.3),
          ("train_eval", "train (eval mode)", PALETTE[4], ":", 1.6))


def plot_split_curves(ax_loss, ax_acc, runs, title, eval_mode_train=False):
    """Train, validation and test loss and accuracy per epoch (no accuracy panel if ax_acc is None): the
    validation line wide, with its band, under the thin lines of the others, which often lie on it."""
    for split, label, color, style, width in SPLITS[:3 + eval_mode_train]:
        if split == "val" and len(runs) > 1:
            label += f" (band: min..max over {len(runs)} seeds)"
        for ax, metric in ((ax_loss, "loss"), (ax_acc, "acc")):
            if ax is not None:
                plot_mean_band(ax, epochs_axis(runs), [r["history"][f"{split}_{metric}"] for r in runs],
                               label=label, color=color, linestyle=style, linewidth=width,
                               band=split == "val", alpha=0.6 if split == "val" else 1)
    finish(ax_loss, "epoch", "loss (cross-entropy, nats)", f"{title}: loss")
    if ax_acc is not None:
        finish(ax_acc, "epoch", "accuracy (fraction correct)", f"{title}: accuracy")


def split_table(named_runs):
    keys = ("train_loss", "train_eval_loss", "val_loss", "test_loss", "train_acc", "train_eval_acc",
            "val_acc", "test_acc")
    return markdown_table(["model", "train loss", "train loss (eval mode)", "val loss", "test loss",
                           "train acc", "train acc (eval mode)", "val acc", "test acc", "status"],
                          [[label] + [finals(runs, key) for key in keys] + [status_text(runs)]
                           for label, runs in named_runs])


def report_epochs(result):
    runs, control, prior = result["runs"], result.get("overfit_runs"), result["class_prior"]
    fig, axes = plt.subplots(1, 2 + bool(control), figsize=(19 if control else 13, 4.5), layout="constrained")
    plot_split_curves(axes[0], axes[1], runs, f"{len(epochs_axis(runs))} epochs, no batch norm")
    findings = [plateau_finding(runs, prior["top_share"], prior["entropy"]), epochs_finding(runs)]
    named_runs = [("no batch norm", runs)]
    if control:
        found = overfit_finding(control)
        window = found.get("window", 1)
        for key, label, color, width in (("val_loss", "validation", SPLITS[0][2], 3),
                                         ("train_eval_loss", "train (eval mode, on the subset)", SPLITS[3][2],
                                          1.6)):
            smoothed = [moving_median(r["history"][key], window) for r in control]
            plot_mean_band(axes[2], epochs_axis(control), smoothed, color=color, linewidth=width,
                           label=f"{label}, moving median of {window} epochs")
        for s in found.get("seeds", []):
            axes[2].plot(s["epoch"], s["val_low"], "v", color="black", markersize=6)
        axes[2].plot([], [], "v", color="black", label="each seed's lowest validation loss")
        finish(axes[2], "epoch", "loss (cross-entropy, nats)",
               f"over-fitting control, {control[0]['train_rows']:,} rows: loss (band: min..max over seeds)",
               fontsize=8)
        findings.append(found)
        named_runs.append((f"over-fitting control ({control[0]['train_rows']:,} training rows, "
                           f"{control[0]['features']} inputs, width {control[0]['width']}, lr "
                           f"{control[0]['lr']:g}, batch {control[0]['batch_size']})", control))
    answer = Answer("6.1.2-2", "How does the number of epochs affect training: too many, too few?",
                    [render(EPOCHS_TEXT, f) for f in findings])
    lowest = "Lowest validation loss over the epochs: " + "; ".join(
        f"{label}: {mean_std([best(r, 'val_loss') for r in named])}" for label, named in named_runs) + "."
    caption = ("Whether the wide validation line still falls at the last epoch, and how far the thin train "
               "and test lines lie from it"
               + ("; right, the control on a small subset: where its validation loss bottoms out, against "
                  "its training loss." if control else "."))
    return Report([split_table(named_runs), lowest], {"epochs.png": (fig, caption)}, [], [answer])


def eval_gap_finding(train_batch, train_eval, val):
    """With batch norm: does the final model in eval mode score the training set as it scores validation (so
    a val-above-train gap is only how train accuracy is measured)? Accuracies are means over seeds."""
    if train_batch >= val - GAP_TOLERANCE:
        case = "no_gap"
    elif abs(train_eval - val) <= GAP_TOLERANCE:
        case = "eval_mode_explains"
    else:
        case = "eval_mode_does_not_explain"
    return dict(case=case, train_batch=train_batch, train_eval=train_eval, val=val,
                difference=train_eval - val)


def batchnorm_findings(plain, normed, extent):
    """6.1.2-3: how batch norm helps, measured: every layer's ReLU-input scale at initialisation with and
    without it, accuracy after the same training, dead units at the end, train accuracy in eval mode."""
    if not normed:
        return [dict(case="all_diverged")]

    def mean_layers(runs, key):
        values = [r[key] for r in runs if r.get(key) is not None]
        return np.mean(values, axis=0) if values else None
    rms_plain = mean_layers(plain, "relu_input_rms_init")
    rms_normed = mean_layers(normed, "relu_input_rms_init")
    acc_plain, acc_normed = mean_final(plain, "val_acc"), mean_final(normed, "val_acc")
    case = ("trains_further" if acc_normed > acc_plain + GAP_TOLERANCE else
            "does_not_help" if acc_normed < acc_plain - GAP_TOLERANCE else "no_difference")
    findings = [dict(case="scales", extent=extent, first=rms_plain[0], low=rms_plain[1:].min(),
                     high=rms_plain[1:].max(), spread=rms_plain.max() / rms_plain.min(),
                     normed_low=rms_normed.min(), normed_high=rms_normed.max()),
                dict(case=case, epochs=len(epochs_axis(normed)), acc_normed=acc_normed, acc_plain=acc_plain,
                     loss_normed=mean_final(normed, "val_loss"), loss_plain=mean_final(plain, "val_loss"))]
    dead_plain = mean_layers(plain, "dead_relu_fraction")
    dead_normed = mean_layers(normed, "dead_relu_fraction")
    if dead_plain is not None and dead_normed is not None:
        alive = dead_plain.mean() > dead_normed.mean() + DEAD_MARGIN
        findings.append(dict(case="keeps_units_alive" if alive else "dead_units_do_not_explain",
                             dead_plain=dead_plain.mean(), dead_normed=dead_normed.mean()))
    return findings + [eval_gap_finding(mean_final(normed, "train_acc"), mean_final(normed, "train_eval_acc"),
                                        mean_final(normed, "val_acc"))]


def rounded_range(low, high):
    """'1.00' when the values agree to 2 decimals, else '0.98 to 1.02'."""
    low, high = f"{low:.2f}", f"{high:.2f}"
    return low if low == high else f"{low} to {high}"


COMPARED = ("after the same {epochs} epochs, validation accuracy {acc_normed:.3f} with batch norm against "
            "{acc_plain:.3f} without (loss {loss_normed:.3f} against {loss_plain:.3f})")
MEASURED = ("With batch norm, train accuracy averaged over the last epoch's batches in train mode "
            "{train_batch:.3f}, the final model in eval mode {train_eval:.3f} on the training set and "
            "{val:.3f} on validation")
BATCHNORM_TEXT = {
    "all_diverged": "Every run with batch norm diverged.",
    "scales": lambda f: (
        f"The inputs are raw degrees (longitude {f['extent'][0]:.0f} to {f['extent'][1]:.0f}, latitude "
        f"{f['extent'][2]:.0f} to {f['extent'][3]:.0f}). At initialisation, without batch norm the first "
        f"layer's ReLUs get inputs of RMS {f['first']:.3g} and the others {f['low']:.2g} to {f['high']:.2g}, "
        f"a spread of {f['spread']:.0f}x across layers that one learning rate has to serve; batch norm puts "
        f"every layer's at {rounded_range(f['normed_low'], f['normed_high'])}."),
    "trains_further": "So batch norm trains further in the same steps: " + COMPARED + ".",
    "does_not_help": "Here it does not help: " + COMPARED + ".",
    "no_difference": "Here it makes no difference: " + COMPARED + ".",
    "keeps_units_alive": ("It also keeps units alive: {dead_plain:.0%} of the hidden ReLUs are dead at the "
                          "end without it, {dead_normed:.0%} with it, since normalised inputs straddle 0."),
    "dead_units_do_not_explain": ("Dead units do not explain it: {dead_plain:.0%} of the hidden ReLUs are "
                                  "dead at the end without batch norm, {dead_normed:.0%} with it."),
    "no_gap": MEASURED + ": validation is not above train, so there is no gap to explain.",
    "eval_mode_explains": MEASURED + (": in eval mode train matches validation, so the val-above-train gap "
                                      "comes from measuring train in train mode during the epoch (batch "
                                      "statistics, weights still moving), not from the splits."),
    "eval_mode_does_not_explain": MEASURED + (": in eval mode train and validation still differ by "
                                              "{difference:+.3f}, so how train accuracy is measured does not "
                                              "explain the whole gap."),
}


def controls_findings(plain, normed, controls):
    """What batch norm's gain is made of: each control without batch norm (name -> runs; its inputs scaled,
    its lr larger, or both) against the plain net and batch norm, as the share of batch norm's gain in final
    validation accuracy it recovers; then which part the best control leaves to the normalisation between
    layers."""
    acc_plain, acc_normed = mean_final(plain, "val_acc"), mean_final(normed, "val_acc")
    gain = acc_normed - acc_plain
    if gain <= GAP_TOLERANCE:
        return [dict(case="no_gain_to_explain", acc_plain=acc_plain, acc_normed=acc_normed)]
    findings = []
    for name, runs in controls.items():
        ok = [r for r in runs if r["status"] == "ok"]
        if not ok:
            findings.append(dict(case="control_diverged", control=name, lr=runs[0]["lr"]))
            continue
        acc = mean_final(ok, "val_acc")
        recovered = (acc - acc_plain) / gain
        case = ("recovers_most" if recovered >= RECOVERS_MOST
                else "below_plain" if acc < acc_plain - GAP_TOLERANCE
                else "recovers_none" if acc <= acc_plain + GAP_TOLERANCE else "recovers_part")
        findings.append(dict(case=case, control=name, lr=ok[0]["lr"], features=ok[0]["features"], acc=acc,
                             recovered=recovered, acc_plain=acc_plain, acc_normed=acc_normed))
    recovered = [f for f in findings if "recovered" in f]
    if recovered:
        top = max(recovered, key=lambda f: f["recovered"])
        case = ("between_layers" if top["recovered"] < RECOVERS_MOST
                else "inputs_and_step" if top["recovered"] < 1 else "inputs_and_step_all")
        findings.append(dict(case=case, control=top["control"], left=1 - top["recovered"], acc=top["acc"],
                             acc_normed=acc_normed))
    return findings


CONTROL_NAMES = {"larger_lr": "raw inputs at lr {lr:g}", "standardized": "standardised inputs at lr {lr:g}",
                 "standardized_larger_lr": "standardised inputs at lr {lr:g}"}
RECOVERED = ("Without batch norm, {name} reach validation accuracy {acc:.3f} (plain {acc_plain:.3f}, batch "
             "norm {acc_normed:.3f}): {recovered:.0%} of batch norm's gain")
CONTROLS_TEXT = {
    "no_gain_to_explain": ("Batch norm gains nothing here (validation accuracy {acc_normed:.3f} against "
                           "{acc_plain:.3f}), so the controls have no gain to split."),
    "control_diverged": lambda f: f"Without batch norm, {control_name(f)} diverged.",
    "recovers_most": lambda f: RECOVERED.format(name=control_name(f), **f) + ", most of it.",
    "recovers_part": lambda f: RECOVERED.format(name=control_name(f), **f) + ", part of it.",
    "recovers_none": lambda f: RECOVERED.format(name=control_name(f), **f) + ", none of it.",
    "below_plain": lambda f: (
        f"Without batch norm, {control_name(f)} reach validation accuracy {f['acc']:.3f}, below the plain "
        f"net's {f['acc_plain']:.3f} (batch norm {f['acc_normed']:.3f}): none of batch norm's gain."),
    "between_layers": lambda f: (
        f"Even the best control ({CONTROL_NAMES[f['control']].split(' at ')[0]}) leaves {f['left']:.0%} of "
        "the gain to what only batch norm does: normalising every layer's inputs, at every step."),
    "inputs_and_step": lambda f: (
        f"So the input's scale and the step size account for most of it: "
        f"{CONTROL_NAMES[f['control']].split(' at ')[0]} reach {f['acc']:.3f} against batch norm's "
        f"{f['acc_normed']:.3f}, leaving {f['left']:.0%} to normalising between layers."),
    "inputs_and_step_all": lambda f: (
        f"So the input's scale and the step size account for all of it: "
        f"{CONTROL_NAMES[f['control']].split(' at ')[0]} reach {f['acc']:.3f}, at least batch norm's "
        f"{f['acc_normed']:.3f}, so on this net normalising between layers adds nothing beyond them."),
}


def control_name(f):
    return CONTROL_NAMES[f["control"]].format(lr=f["lr"])


def report_batchnorm(result):
    plain, normed, controls = result["baseline_runs"], result["runs"], result.get("control_runs", [])
    by_control = group_by(controls, "control")
    fig, axes = plt.subplots(2, 2 + bool(controls), figsize=(19 if controls else 13, 9), sharey="row",
                             layout="constrained")
    plot_split_curves(axes[0, 0], axes[1, 0], plain, "no batch norm", eval_mode_train=True)
    plot_split_curves(axes[0, 1], axes[1, 1], normed, "batch norm", eval_mode_train=True)
    if controls:
        named = [(f"no batch norm (lr {plain[0]['lr']:g})", plain), ("batch norm", normed)]
        for color, (label, runs) in zip(PALETTE, named + [(control_name(runs[0]), runs)
                                                          for runs in by_control.values()]):
            for ax, metric in ((axes[0, 2], "loss"), (axes[1, 2], "acc")):
                plot_mean_band(ax, epochs_axis(runs), [r["history"][f"val_{metric}"] for r in runs], label,
                               color=color, linewidth=2)
        finish(axes[0, 2], "epoch", "loss (cross-entropy, nats)",
               "controls without batch norm: validation loss", fontsize=8)
        finish(axes[1, 2], "epoch", "accuracy (fraction correct)", "controls: validation accuracy",
               legend=False)
    ok = [r for r in normed if r["status"] == "ok"]
    plain_ok = [r for r in plain if r["status"] == "ok"]
    found = batchnorm_findings(plain_ok, ok, result["data"]["extent"])
    if controls and ok and plain_ok:
        found = found[:2] + controls_findings(plain_ok, ok, by_control) + found[2:]
    answer = Answer("6.1.2-3", "How does batch norm contribute to training?",
                    [render({**BATCHNORM_TEXT, **CONTROLS_TEXT}, f) for f in found])
    gap = [final(n, "val_acc") - final(p, "val_acc") for p, n in zip(plain, normed)
           if final(n, "val_acc") is not None and final(p, "val_acc") is not None]
    paired = f"Batch norm changes the final validation accuracy by {mean_std(gap)}, paired by seed."

    def layers(runs, key):
        return " / ".join(f"{v:.3g}" for v in np.mean([r[key] for r in runs if r[key]], 0))
    scales = markdown_table(["model", "RMS of each hidden layer's ReLU input at initialisation (first step, "
                             "val set)", "at the end (eval mode, val set)"],
                            [[label, layers(runs, "relu_input_rms_init"), layers(runs, "relu_input_rms")]
                             for label, runs in (("no batch norm", plain), ("batch norm", ok))])
    named_runs = [("no batch norm", plain), ("batch norm", normed)] + [
        (f"control: {control_name(runs[0])}, no batch norm", runs) for runs in by_control.values()]
    caption = ("The same net without (left) and with (middle) batch norm, on shared axes: how far each gets "
               "in the same epochs" + ("; right, the controls without batch norm: how close each gets to "
                                       "batch norm's validation curve." if controls else "."))
    return Report([split_table(named_runs), paired, scales], {"batchnorm.png": (fig, caption)}, [], [answer])


# ----------------------------------------------------------------------------- 6.1.2-4 batch size

def falls_with(xs, ys):
    """Whether ys never rises as xs grows."""
    ordered = [y for _, y in sorted(zip(xs, ys))]
    return all(b <= a for a, b in zip(ordered, ordered[1:]))


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
        losses = result["arrays"][f"step_loss_{batch_size}"].astype(float)
        window = max(1, len(losses) // 100)
        ax_loss.plot(np.arange(1, len(losses) + 1), losses, color=color, linewidth=0.3, alpha=0.25)
        average = np.convolve(losses, np.ones(window) / window, "valid")
        ax_loss.plot(np.arange(window, len(losses) + 1), average, color=color, linewidth=2,
                     label=f"batch {batch_size}: moving average of {window} steps; noise {noise:.3f}")
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
           f"(iii) training loss at every step, seed {result['runs'][0]['seed']}, raw (faint); noise: the "
           "std of the last 100 steps, mean over seeds", loc="upper left", bbox_to_anchor=(1.01, 1))
    for ax in (ax_steps, ax_loss):
        ax.set_xscale("log")
    table = markdown_table(["batch size", "epochs", "iterations per epoch", "total steps",
                            "wall time of the group (s)", "std of the training loss over the last 100 steps "
                            "(mean over seeds)", "final val acc", "best val acc", "status"], rows)
    answer = Answer("6.1.2-4", "How does the batch size affect (i) accuracy, (ii) speed, (iii) stability?",
                    [render(BATCH_SIZE_TEXT, f) for f in batch_size_findings(answer_rows, curves)])
    caption = ("Top: accuracy per epoch and per optimizer step (where the batch sizes meet at equal steps); "
               "bottom: how far each batch size's step losses (faint) scatter around their moving average.")
    return Report([table], {"batch_size.png": (fig, caption)}, [], [answer])


# ----------------------------------------------------------------------------- lr by batch size (beyond)

def sweep_findings(finals_of, lrs, sizes):
    """Does the best lr grow with the batch size, as the linear scaling rule (lr in proportion to the batch,
    Goyal et al. 2017) says? finals_of: (batch size, lr) -> final validation accuracy per seed (None:
    diverged, counted as 0). Per batch size: the lr of the highest mean, the lrs tied with it (paired over
    seeds), and the centre of those (their geometric mean), which a flat top leaves steadier than the argmax;
    then the trend of the centres, and their growth against the batch's."""
    def mean(key):
        return float(np.mean([0.0 if v is None else v for v in finals_of[key]]))
    rows = []
    for size in sizes:
        ranked = sorted(lrs, key=lambda lr: -mean((size, lr)))
        top = ranked[0]
        tied = [lr for lr in ranked[1:]
                if paired(finals_of[(size, lr)], finals_of[(size, top)])["case"] == "tie"]
        rows.append((size, top, mean((size, top)), tied, float(np.exp(np.mean(np.log([top] + tied))))))
    if len(sizes) < 2:
        return [dict(case="one_batch_size", rows=rows)]
    centres = [row[4] for row in rows]
    rises, falls = falls_with(sizes, [-c for c in centres]), falls_with(sizes, centres)
    case = ("same_lr" if rises and falls else "grows" if rises else "shrinks" if falls else "mixed")
    lr_ratio, batch_ratio = centres[-1] / centres[0], sizes[-1] / sizes[0]
    step = float(np.median(np.diff(np.log(sorted(lrs))))) if len(lrs) > 1 else 0.0
    rule = ("linear" if abs(math.log(lr_ratio) - math.log(batch_ratio)) <= step else
            "slower" if lr_ratio < batch_ratio else "faster")
    return [dict(case=case, rows=rows, lr_ratio=lr_ratio, batch_ratio=batch_ratio, rule=rule,
                 step=math.exp(step), small=sizes[0], large=sizes[-1])]


def best_lrs_listed(rows):
    return "; ".join(f"batch {size}: lr {lr:g} ({acc:.3f}"
                     + (f"; tied: {listed(tied, '{:g}')}" if tied else "") + f"; centre {centre:.2g})"
                     for size, lr, acc, tied, centre in rows)


RULE = {"linear": "as the linear scaling rule says (within one step of the lr grid, {step:.1f}x)",
        "slower": "slower than the linear scaling rule, which would multiply it by {batch_ratio:g}",
        "faster": "faster than the linear scaling rule, which would multiply it by {batch_ratio:g}"}
BEST = ("the best lr (highest mean final validation accuracy; lrs within the seeds' noise of it tied, and "
        "their centre)")
SWEEP_TEXT = {
    "one_batch_size": lambda f: f"Best lr: {best_lrs_listed(f['rows'])}; one batch size shows no trend.",
    "grows": lambda f: (f"The best lr grows with the batch size: {BEST}: {best_lrs_listed(f['rows'])}. From "
                        f"batch {f['small']} to {f['large']} the centre is {f['lr_ratio']:.2g}x larger, "
                        + RULE[f["rule"]].format(**f) + "."),
    "same_lr": lambda f: (f"The best lr stays put: {BEST}: {best_lrs_listed(f['rows'])}; so on this grid it "
                          f"does not follow the linear scaling rule ({f['batch_ratio']:g}x)."),
    "shrinks": lambda f: (f"The best lr shrinks as the batch grows, against the linear scaling rule: {BEST}: "
                          f"{best_lrs_listed(f['rows'])}."),
    "mixed": lambda f: (f"The best lr moves with no steady trend: {BEST}: {best_lrs_listed(f['rows'])}; so "
                        "the grid does not show the linear scaling rule."),
}


def report_sweep(result):
    runs = result["runs"]
    lrs = sorted({r["lr"] for r in runs}, reverse=True)
    sizes = sorted({r["batch_size"] for r in runs})
    finals_of = {(size, lr): [final(r, "val_acc") for r in runs if (r["batch_size"], r["lr"]) == (size, lr)]
                 for size in sizes for lr in lrs}
    accs = np.array([[np.mean(as_array(finals_of[(size, lr)])) for lr in lrs] for size in sizes])
    found = sweep_findings(finals_of, lrs, sizes)
    fig, ax = plt.subplots(figsize=(1.3 * len(lrs) + 3, 0.8 * len(sizes) + 2), layout="constrained")
    cmap = plt.get_cmap("viridis").with_extremes(bad="0.85")  # a cell where every seed diverged: light grey
    image = ax.imshow(np.ma.masked_invalid(accs), cmap=cmap, aspect="auto", vmin=0, vmax=1)
    for i, row in enumerate(accs):
        for j, acc in enumerate(row):
            ax.text(j, i, "diverged" if np.isnan(acc) else f"{acc:.3f}", ha="center", va="center", fontsize=9,
                    color="black" if np.isnan(acc) or acc > 0.6 else "white")
    labels = {True: "best lr of the batch size", False: "tied with it within the seeds' noise"}
    for i, (_, top, _, tied, _) in enumerate(found[0]["rows"]):
        for lr in [top] + tied:
            best = lr == top
            ax.add_patch(plt.Rectangle((lrs.index(lr) - 0.45, i - 0.45), 0.9, 0.9, fill=False,
                                       edgecolor="red", linewidth=2.5 if best else 1.2,
                                       linestyle="-" if best else "--", label=labels.pop(best, None)))
    ax.set_xticks(range(len(lrs)), [f"{lr:g}" for lr in lrs])
    ax.set_yticks(range(len(sizes)), [str(size) for size in sizes])
    fig.colorbar(image, ax=ax, label="final validation accuracy (mean over seeds)")
    epochs = runs[0]["epochs"]
    finish(ax, "learning rate (log spaced)", "batch size", f"Final validation accuracy after {epochs} epochs",
           loc="upper left", bbox_to_anchor=(0, -0.15), fontsize=8)
    ax.grid(False)
    table = markdown_table(["batch size"] + [f"lr {lr:g}" for lr in lrs],
                           [[size] + [mean_std(finals_of[(size, lr)]) for lr in lrs] for size in sizes])
    note = (f"Every cell: depth {runs[0]['depth']}, width {runs[0]['width']}, batch norm "
            f"{'on' if runs[0]['batch_norm'] else 'off'}, {epochs} epochs, plain SGD; final validation "
            "accuracy, mean ± std over seeds.")
    caption = ("Where the red boxes (each batch size's best lr, solid, and those tied with it, dashed) move "
               "as the batch grows.")
    return Report([note, table], {"sweep.png": (fig, caption)}, [],
                  [Answer("", "Does the best learning rate grow with the batch size?",
                          [render(SWEEP_TEXT, f) for f in found])])


# ----------------------------------------------------------------------------- 6.2.1-1 to 4 depth and width

def generalisation_finding(label, train, val, test):
    """6.2.1-1: did a model generalise? Its final accuracy on train (eval mode), validation and test."""
    case = ("overfits" if train - val > OVERFIT_GAP else "val_test_disagree" if abs(val - test) > OVERFIT_GAP
            else "yes")
    return dict(case=case, label=label, train=train, val=val, test=test, gap=train - val,
                within=max(abs(train - val), abs(val - test)))


def ranking_finding(label, top, runner_up):
    """Is the best model ahead of the runner-up beyond the seeds' noise? top, runner_up: (label, final
    validation accuracy per seed)."""
    comparison = paired(runner_up[1], top[1])
    case = {"above": "clear_best", "tie": "tied_best"}.get(comparison["case"], "unranked_best")
    return dict(comparison, case=case, label=label, top=top[0], runner_up=runner_up[0])


def fit_finding(label, train, val, best_train, params):
    """6.2.1-2: did the worst model over- or under-fit? Its train (eval mode) and validation accuracy,
    against the best model's train accuracy."""
    case = "over" if train - val > OVERFIT_GAP else "under" if best_train - train > OVERFIT_GAP else "neither"
    return dict(case=case, label=label, train=train, val=val, best_train=best_train, params=params)


def longer_finding(runs, longer, next_acc):
    """Was the worst model short of training or of capacity? Its validation accuracy after the protocol's
    epochs and after training on for longer (the same runs), where the longer run's validation loss
    ends (loss_trend), against the next-worst model's accuracy next_acc."""
    ok, ok_longer = ([r for r in rs if r["status"] == "ok"] for rs in (runs, longer))
    if not ok or not ok_longer:
        return dict(case="longer_diverged")
    acc, acc_longer = mean_final(ok, "val_acc"), mean_final(ok_longer, "val_acc")
    trend = loss_trend(np.nanmean([as_array(r["history"]["val_loss"]) for r in ok_longer], axis=0))
    gain = acc_longer - acc
    case = ("capacity" if gain <= GAP_TOLERANCE else "training" if acc_longer >= next_acc - GAP_TOLERANCE
            else "both")
    return dict(case=case, epochs=len(epochs_axis(ok)), longer_epochs=len(epochs_axis(ok_longer)), acc=acc,
                acc_longer=acc_longer, gain=gain, next_acc=next_acc, trend=trend["case"],
                previous=trend["previous"], last=trend["last"], window=trend["window"])


MATCH_TOLERANCE = 0.10  # two models are of about the same size when their parameter counts differ by <= 10%


def matched_finding(rows):
    """6.2.1-3 at matched size: every pair of models of different depth whose parameter counts are within
    MATCH_TOLERANCE, the deeper one's final validation accuracy against the shallower's, paired by seed.
    rows: (depth, width, parameters, final validation accuracy per seed)."""
    pairs = []
    for i, a in enumerate(rows):
        for b in rows[i + 1:]:
            if a[0] != b[0] and abs(a[2] - b[2]) <= MATCH_TOLERANCE * min(a[2], b[2]):
                deep, shallow = (a, b) if a[0] > b[0] else (b, a)
                comparison = paired(shallow[3], deep[3])
                pairs.append((deep[:3], shallow[:3], float(np.mean(as_array(deep[3]))),
                              float(np.mean(as_array(shallow[3]))), comparison["case"]))
    verdicts = {pair[4] for pair in pairs}
    case = ("no_pairs" if not pairs else "deeper_wins" if verdicts == {"above"} else
            "shallower_wins" if verdicts == {"below"} else "all_tie" if verdicts <= {"tie", "one_seed"}
            else "mixed")
    return dict(case=case, pairs=pairs, tolerance=MATCH_TOLERANCE)


def shape_findings(kind, rows):
    """6.2.1-3 (kind 'depth') and 6.2.1-4 ('width') from rows (size, validation accuracy, its std over seeds,
    parameters, seconds per epoch of the model alone, first over last layer's gradient norm at initialisation
    and at the end): whether more of `kind` raised the accuracy, whether the gain shrinks, and the cost."""
    rows = sorted(rows)
    (small, acc_small, *_), (large, acc_large, std_large, *_) = rows[0], rows[-1]
    findings = [dict(case="table_" + kind, rows=rows)]
    best_size, best_acc = max(((size, acc) for size, acc, *_ in rows), key=lambda pair: pair[1])
    numbers = dict(kind=kind, small=small, acc_small=acc_small, large=large, acc_large=acc_large)
    if acc_large > acc_small + GAP_TOLERANCE:
        findings.append(dict(numbers, case="more_fits_better", best_size=best_size, best_acc=best_acc))
        previous = rows[-2]
        if acc_large - previous[1] < max(2 * std_large, GAP_TOLERANCE):
            findings.append(dict(numbers, case="gain_shrinks", previous=previous[0],
                                 gain=acc_large - previous[1]))
    else:
        findings.append(dict(numbers, case="no_gain"))
    first, last = rows[0], rows[-1]
    return findings + [dict(numbers, case="cost_" + kind, params_ratio=last[3] / first[3],
                            time_ratio=last[4] / first[4], seconds_small=first[4], seconds_large=last[4],
                            grad_init=(first[5], last[5]), grad_final=(first[6], last[6]))]


NUMBERS = "train {train:.3f} (eval mode), validation {val:.3f}, test {test:.3f}"
GRADIENT_RATIO = "||grad W|| of the first layer over the last"
DEPTH_WIDTH_TEXT = {
    "overfits": ("Not fully: the {label} fits the training set better than new data (" + NUMBERS + "): it "
                 "over-fits by {gap:.3f}."),
    "val_test_disagree": ("Validation and test disagree for the {label} (" + NUMBERS + "), so its validation "
                          "score does not carry over to new data."),
    "yes": ("Yes: the {label} scores the same on data it never saw as on its training set (" + NUMBERS + "), "
            "within {within:.3f}."),
    "clear_best": ("It is the best beyond the seeds' noise: {difference:+.3f} over the runner-up, the "
                   "{runner_up} (a paired t-test at 95% needs {noise:.3f})."),
    "tied_best": ("It ties with the runner-up, the {runner_up}: {difference:+.3f}, within the seeds' noise "
                  "(a paired t-test at 95% needs {noise:.3f})."),
    "unranked_best": "With one seed, nothing tells it from the runner-up, the {runner_up}.",
    "over": ("It over-fits: the {label} reaches {train:.3f} on the training set (eval mode) and {val:.3f} on "
             "validation."),
    "under": ("It under-fits: the {label} scores about as low on its own training set ({train:.3f}, eval "
              "mode) as on validation ({val:.3f}), far below what the best model fits ({best_train:.3f})."),
    "neither": "Neither clearly: the {label} reaches {train:.3f} on train and {val:.3f} on validation.",
    "longer_diverged": "Its longer run diverged, so it cannot tell training from capacity.",
    "capacity": ("Trained on to {longer_epochs} epochs instead of {epochs}, it ends at {acc_longer:.3f} "
                 "({gain:+.3f}), its validation loss {trend} at the end: it lacks capacity, not training."),
    "training": ("Trained on to {longer_epochs} epochs instead of {epochs}, it reaches {acc_longer:.3f} "
                 "({gain:+.3f}), at least the next-worst model's {next_acc:.3f} after {epochs}: it lacked "
                 "training, not capacity."),
    "both": ("Trained on to {longer_epochs} epochs instead of {epochs}, it gains {gain:+.3f} (to "
             "{acc_longer:.3f}; its validation loss {trend} at the end, {previous:.3f} to {last:.3f} over "
             "the last {window} epochs) but stays below the next-worst model ({next_acc:.3f}): it lacked "
             "training, and capacity too."),
    "table_depth": lambda f: "By depth: " + "; ".join(
        f"{size} layers: validation {acc:.3f}, {params:,} parameters, {sec:.2f} s an epoch alone, "
        f"{GRADIENT_RATIO} {init:.2g} at initialisation and {end:.2g} at the end"
        for size, acc, _, params, sec, init, end in f["rows"]) + ".",
    "table_width": lambda f: "By width: " + "; ".join(
        f"{size} units: validation {acc:.3f}, {params:,} parameters, {sec:.2f} s an epoch alone"
        for size, acc, _, params, sec, *_ in f["rows"]) + ".",
    "more_fits_better": lambda f: (
        f"The advantage: more {'layers' if f['kind'] == 'depth' else 'units'} fit the data better "
        f"({f['acc_small']:.3f} at {f['kind']} {f['small']}, {f['best_acc']:.3f} at {f['best_size']})."),
    "gain_shrinks": ("The gain shrinks: from {kind} {previous} to {large} it is {gain:+.3f}, within the "
                     "spread over seeds."),
    "no_gain": ("More {kind} did not raise the accuracy here ({acc_small:.3f} at {small}, {acc_large:.3f} at "
                "{large})."),
    "cost_depth": lambda f: (
        f"The cost, from {f['small']} to {f['large']} layers: {f['params_ratio']:.1f}x the parameters, "
        f"{f['time_ratio']:.1f}x the time of an epoch ({f['seconds_small']:.2f} s to "
        f"{f['seconds_large']:.2f} s, each model alone: the layers run one after another), and a gradient "
        f"that changes with depth: the {GRADIENT_RATIO} goes from {f['grad_init'][0]:.2g} to "
        f"{f['grad_init'][1]:.2g} at initialisation, and from {f['grad_final'][0]:.2g} to "
        f"{f['grad_final'][1]:.2g} at the end."),
    "cost_width": lambda f: (
        f"The cost, from {f['small']} to {f['large']} units: {f['params_ratio']:.1f}x the parameters and "
        f"{f['time_ratio']:.1f}x the time of an epoch ({f['seconds_small']:.2f} s to "
        f"{f['seconds_large']:.2f} s, each model alone)."),
}


def matched_text(f):
    pairs = "; ".join(f"{deep[0]}x{deep[1]} ({deep[2]:,} parameters) {acc_deep:.3f} against {shallow[0]}x"
                      f"{shallow[1]} ({shallow[2]:,}) {acc_shallow:.3f}, {VERDICT[verdict]}"
                      for deep, shallow, acc_deep, acc_shallow, verdict in f["pairs"])
    return {"no_pairs": f"No two models of different depth are within {f['tolerance']:.0%} of each other's "
                        "parameters, so depth and width are not compared at the same size.",
            "deeper_wins": f"At the same size (parameters within {f['tolerance']:.0%}), deeper wins: "
                           f"{pairs}.",
            "shallower_wins": f"At the same size (parameters within {f['tolerance']:.0%}), wider and "
                              f"shallower wins: {pairs}.",
            "all_tie": f"At the same size (parameters within {f['tolerance']:.0%}), depth and width tie: "
                       f"{pairs}.",
            "mixed": f"At the same size (parameters within {f['tolerance']:.0%}), neither wins throughout: "
                     f"{pairs}."}[f["case"]]


VERDICT = {"above": "the deeper ahead beyond the noise", "below": "the shallower ahead beyond the noise",
           "tie": "a tie within the noise", "one_seed": "one seed, no noise to judge", "none": "diverged"}


def gradient_ratio(run, when):
    """||grad W|| of the first Linear layer over the last's, on the run's first batch ('init' or 'final')."""
    grads = run[f"{when}_grad_sq_norm"]
    return math.sqrt(grads[0] / grads[-1]) if grads[-1] else math.inf


def most_common(values):
    """The value that occurs most often (the first of them in a tie): the width the depth models share."""
    return max(dict.fromkeys(values), key=values.count)


def depth_width_findings(result, groups, protocol):
    """6.2.1-1 to 6.2.1-4 from the runs (groups: (depth, width) -> indices into runs) of the protocol's
    architectures (ranked by final validation accuracy) and the matched ones: per question, its number, what
    it asks and its findings."""
    runs, seconds = result["runs"], result["seconds_per_epoch_alone"]

    def accs(arch):
        return [final(runs[i], "val_acc") for i in groups[arch]]

    def mean_of(arch, key):
        return mean_final([runs[i] for i in groups[arch] if runs[i]["status"] == "ok"], key)
    val = {arch: float(np.mean(as_array(accs(arch)))) for arch in protocol}
    ranked = sorted((a for a in protocol if not np.isnan(val[a])), key=val.get)  # diverged ones left out
    worst, top = ranked[0], ranked[-1]

    def label(tag, arch):
        return f"{tag} model ({arch_label(dict(depth=arch[0], width=arch[1]))})"

    def shape_rows(fixed_index, fixed):
        rows = []
        for arch in sorted(a for a in protocol if a[fixed_index] == fixed):
            ok = [runs[i] for i in groups[arch] if runs[i]["status"] == "ok"]
            rows.append((arch[1 - fixed_index], val[arch], seed_std(as_array(accs(arch))),
                         runs[groups[arch][0]]["n_params"], seconds[f"{arch[0]}x{arch[1]}"],
                         float(np.mean([gradient_ratio(r, "init") for r in ok])),
                         float(np.mean([gradient_ratio(r, "final") for r in ok]))))
        return rows
    width, depth = (most_common([arch[i] for arch in protocol]) for i in (1, 0))
    best_found = [generalisation_finding(label("best", top), mean_of(top, "train_eval_acc"),
                                         mean_of(top, "val_acc"), mean_of(top, "test_acc"))]
    if len(ranked) > 1:
        best_found.append(ranking_finding(label("best", top), (label("best", top), accs(top)),
                                          (arch_label(dict(depth=ranked[-2][0], width=ranked[-2][1])),
                                           accs(ranked[-2]))))
    worst_found = [fit_finding(label("worst", worst), mean_of(worst, "train_eval_acc"),
                               mean_of(worst, "val_acc"), mean_of(top, "train_eval_acc"),
                               runs[groups[worst][0]]["n_params"])]
    longer = result.get("longer_runs", [])
    if longer and (longer[0]["depth"], longer[0]["width"]) == worst and len(ranked) > 1:
        worst_found.append(longer_finding([runs[i] for i in groups[worst]], longer,
                                          val[ranked[1]]))
    matched = matched_finding([(d, w, runs[groups[(d, w)][0]]["n_params"], accs((d, w))) for d, w in groups])
    return [("6.2.1-1", "Did the best model generalise?", best_found),
            ("6.2.1-2", "Did the worst model over-fit or under-fit?", worst_found),
            ("6.2.1-3", f"How does depth affect the MLP (width {width})?",
             shape_findings("depth", shape_rows(1, width)) + [matched]),
            ("6.2.1-4", f"How does width affect the MLP (depth {depth})?", shape_findings("width",
                                                                                     shape_rows(0, depth)))]


def plot_size(ax, runs, groups, protocol):
    """Every model's final validation accuracy (mean, ± seed std) against its parameter count, coloured by
    depth; models of matched size (matched_finding's pairs) joined by a dotted line."""
    depths = sorted({depth for depth, _ in groups})
    colors = dict(zip(depths, plt.cm.viridis(np.linspace(0, 0.85, len(depths)))))  # ordered, as depth is
    points = {}
    for arch, indices in groups.items():
        accs = as_array([final(runs[i], "val_acc") for i in indices])
        points[arch] = (runs[indices[0]]["n_params"], float(np.mean(accs)))
        ax.errorbar(*points[arch], yerr=seed_std(accs), capsize=3, linestyle="none",
                    marker="o" if arch in protocol else "s", color=colors[arch[0]])
        ax.annotate(f"{arch[0]}x{arch[1]}", points[arch], textcoords="offset points", fontsize=8,
                    xytext=(6, 4) if arch in protocol else (6, -11))  # matched sizes sit beside others
    pairs = matched_finding([(d, w, points[(d, w)][0], [final(runs[i], "val_acc") for i in indices])
                             for (d, w), indices in groups.items()])["pairs"]
    for deep, shallow, *_ in pairs:
        ends = [points[(deep[0], deep[1])], points[(shallow[0], shallow[1])]]
        ax.plot(*zip(*ends), color="grey", linestyle=":", linewidth=1.2)
    for depth in depths:
        ax.plot([], [], marker="o", linestyle="none", color=colors[depth], label=f"depth {depth}")
    ax.plot([], [], marker="s", linestyle="none", color="grey", label="matched size (beyond the protocol)")
    ax.plot([], [], color="grey", linestyle=":", label=f"parameters within {MATCH_TOLERANCE:.0%}")
    ax.set_xscale("log")
    finish(ax, "parameters (log scale)", "final validation accuracy (mean ± std over seeds)",
           "accuracy vs size (DEPTHxWIDTH)", fontsize=8)


def report_depth_width(result):
    runs, groups = result["runs"], {}
    for i, run in enumerate(runs):
        groups.setdefault((run["depth"], run["width"]), []).append(i)
    protocol = [tuple(arch) for arch in result["settings"]["architectures"] if tuple(arch) in groups]
    val = {arch: np.mean(as_array([final(runs[i], "val_acc") for i in groups[arch]])) for arch in protocol}
    ranked = sorted((a for a in protocol if not np.isnan(val[a])), key=val.get)  # diverged ones left out
    worst, top = (ranked[0], ranked[-1]) if ranked else (None, None)
    rows = []
    named = [(arch, [runs[i] for i in idx]) for arch, idx in groups.items()]
    if result.get("longer_runs"):
        named.append(("longer", result["longer_runs"]))
    for arch, arch_runs in named:
        mark = (" **best**" if arch == top else " **worst**" if arch == worst else
                f", {arch_runs[0]['epochs']} epochs" if arch == "longer" else
                " (matched size)" if arch not in protocol else "")
        rows.append([f"{arch_label(arch_runs[0])}{mark}", f"{arch_runs[0]['n_params']:,}"] +
                    [finals(arch_runs, key) for key in ("train_acc", "train_eval_acc", "val_acc", "test_acc",
                                                        "train_loss", "val_loss", "test_loss")]
                    + [status_text(arch_runs)])
    header = ["model", "parameters", "train acc (train mode)", "train acc (eval mode)", "val acc", "test acc",
              "train loss (train mode)", "val loss", "test loss", "status"]
    table = markdown_table(header, rows)

    fig, axes = plt.subplots(1, 3, figsize=(19.5, 4.8), sharey=True, layout="constrained")
    width, depth = (most_common([arch[i] for arch in protocol]) for i in (1, 0))
    for ax, vary, fixed_index, fixed in ((axes[0], "depth", 1, width), (axes[1], "width", 0, depth)):
        archs = sorted(a for a in protocol if a[fixed_index] == fixed)
        xs = [a[1 - fixed_index] for a in archs]
        for key, label, color, style in (("train_eval", "train (eval mode)", "C0", "-"), ("val", "validation",
                                         "C1", "-"), ("test", "test (dashed)", "C2", "--")):
            values = [as_array([final(runs[i], f"{key}_acc") for i in groups[a]]) for a in archs]
            ax.errorbar(xs, [np.mean(v) for v in values], yerr=[seed_std(v) for v in values], marker="o",
                        capsize=3, color=color, linestyle=style, label=label)
        if vary == "width":
            ax.set_xscale("log", base=2)
        ax.set_xticks(xs, [str(x) for x in xs])
        xlabel = "hidden layers (depth)" if vary == "depth" else "units per hidden layer (width, log scale)"
        finish(ax, xlabel, "final accuracy (mean ± std over seeds)",
               f"accuracy vs {vary} ({['depth', 'width'][fixed_index]} {fixed})")
    plot_size(axes[2], runs, groups, protocol)
    caption = ("Final accuracy against depth (left) and width (middle), on one y axis: where adding layers "
               "or units stops paying; right, every model against its parameter count: at one size, which "
               "depth scores higher.")
    figures = {"depth_width.png": (fig, caption)}
    for tag, arch in (("best", top), ("worst", worst)) if ranked else ():
        arch_runs = [runs[i] for i in groups[arch]]
        pair = map_figure(result["map_extent"], 8.5, other_width=6)
        longer = [r for r in result.get("longer_runs", []) if (r["depth"], r["width"]) == arch]
        caption = (f"The {tag} model's losses (left" + ", and its validation loss trained on for "
                   "longer" * bool(longer) + ") and its borders (right): ringed points are its mistakes.")
        figures[f"depth_width_{tag}.png"] = (pair, caption)
        ax_loss, ax_map = pair.subplots(1, 2, gridspec_kw={"width_ratios": [6, 8.5]})
        plot_split_curves(ax_loss, None, arch_runs, f"{tag} model")
        if longer:
            plot_mean_band(ax_loss, epochs_axis(longer), [r["history"]["val_loss"] for r in longer],
                           f"validation, trained on to {len(epochs_axis(longer))} epochs",
                           color=PALETTE[5], linewidth=2)
            ax_loss.legend()
        draw_map(ax_map, result, f"{arch[0]}x{arch[1]}", arch_runs[0], f"{tag} model: ")
    found = depth_width_findings(result, groups, protocol) if ranked else []
    matched_cases = ("no_pairs", "deeper_wins", "shallower_wins", "all_tie", "mixed")
    text = {**DEPTH_WIDTH_TEXT, **{case: matched_text for case in matched_cases}}
    answers = [Answer(item, asked, [render(text, f) for f in findings]) for item, asked, findings in found]
    return Report([table], figures, [] if ranked else ["Every architecture diverged in at least one seed: no "
                                                       "best or worst model."], answers)


# ----------------------------------------------------------------------------- 6.2.1-5 and 6 gradients, fixes

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


def first_dead_layer(run):
    """The first layer whose input is exactly 0 on the first batch at initialisation, with the norm of the
    input of the layer before it; None when there is none."""
    norms = run["init_activation_norm"]
    layer = next((i for i, norm in enumerate(norms) if norm == 0), None)
    return None if layer is None else (layer, norms[layer - 1] if layer else None)


def lowest_gradient(run):
    """(the lowest layer with a nonzero gradient in the last epoch, its ||grad W||^2, the decades from it to
    the output layer's)."""
    grads = seed_grads(run)[-1]
    layer = next((i for i, g in enumerate(grads) if g > 0), None)
    return None if layer is None else (layer, grads[layer], float(np.log10(grads[-1] / grads[layer])))


def fix_verdict(runs, plain_accs):
    """6.2.1-6 for one change, with its measured cause when it fails: 'diverged' (the first step's layer-0
    gradient), exact zeros below a dead layer (where and how small the activations above it are), without one
    or, with LeakyReLU, which passes no exact 0 back, by underflow (over how many decades); 'no_gain' when
    every layer gets a gradient but validation accuracy is not above the plain net's by SOLVED_SDS seed
    standard deviations (pooled over the two); else 'solved'. plain_accs: the plain net's final validation
    accuracy per seed."""
    diverged = [r for r in runs if r["status"] != "ok"]
    if diverged:
        first_grad = max(r["init_grad_sq_norm"][0] for r in runs)
        return dict(case="diverged", diverged=len(diverged), seeds=len(runs), first_grad=first_grad,
                    output_grad=max(r["init_grad_sq_norm"][-1] for r in runs), lr=runs[0]["lr"],
                    step=runs[0]["lr"] * math.sqrt(first_grad))
    zeros = [(r["seed"], zero_layers(r)) for r in runs if zero_layers(r)]
    if zeros:
        dead = [(r["seed"], first_dead_layer(r)) for r in runs if first_dead_layer(r)]
        lowest = [(r["seed"], lowest_gradient(r)) for r in runs if lowest_gradient(r)]
        case = ("zeros_dead_layer" if dead else "zeros_underflow" if runs[0].get("activation") == "leaky_relu"
                else "zeros_no_dead_layer")
        return dict(case=case, zeros=zeros, dead=dead, lowest=lowest)
    accs = [final(r, "val_acc") for r in runs]
    val, plain = float(np.mean(accs)), float(np.mean(as_array(plain_accs)))
    spread = math.sqrt((seed_std(accs) ** 2 + seed_std(as_array(plain_accs)) ** 2) / 2)
    margin = max(SOLVED_SDS * spread, GAP_TOLERANCE)
    return dict(case="solved" if val > plain + margin else "no_gain", val=val, plain=plain, margin=margin,
                std=seed_std(accs))


def fixes_findings(plain, fixes):
    """6.2.1-6: fixes: (label, runs) per change tried."""
    plain_accs = [final(r, "val_acc") for r in plain]
    verdicts = [dict(fix_verdict(runs, plain_accs), label=label) for label, runs in fixes]
    solved = [f["label"] for f in verdicts if f["case"] == "solved"]
    return [dict(case="solved_by" if solved else "none_solved", solved=solved,
                 plain_acc=float(np.mean(as_array(plain_accs))), sds=SOLVED_SDS), *verdicts]


def zeros_text(f):
    return "layers still get exactly zero gradient (" + "; ".join(
        f"seed {seed}: {layer_ranges(z)}" for seed, z in f["zeros"]) + ")"


def dead_text(f):
    return "; ".join(f"seed {seed}: layer {layer}'s input is exactly 0 at initialisation"
                     + ("" if before is None else f", the layer before it gets inputs of norm {before:.1e}")
                     for seed, (layer, before) in f["dead"])


def underflow_text(f):
    return "; ".join(f"seed {seed}: the lowest layer with a gradient is layer {layer}, ||grad W||^2 "
                     f"{value:.1e}, {decades:.0f} decades below the output layer's"
                     for seed, (layer, value, decades) in f["lowest"])


NO_DEAD_LAYER = ", though no layer is dead at initialisation"
FIXES_TEXT = {
    "solved_by": lambda f: (f"Solved by: {', '.join(f['solved'])} (every layer gets a gradient, and "
                            f"validation accuracy rises above the plain net's {f['plain_acc']:.3f} by more "
                            f"than {f['sds']:g} seed standard deviations)."),
    "none_solved": ("No change solved it: none gives every layer a gradient and validation accuracy above "
                    "the plain net's {plain_acc:.3f} by more than {sds:g} seed standard deviations."),
    "solved": ("With {label}: yes, every layer gets a gradient and validation accuracy rises to {val:.3f} ± "
               "{std:.3f}, beyond the plain net's {plain:.3f} + {margin:.3f}."),
    "diverged": ("With {label}: no, {diverged} of {seeds} seeds diverged: the first step's ||grad W||^2 is "
                 "{first_grad:.1e} at layer 0 (against {output_grad:.1e} at the output layer), so at lr "
                 "{lr:g} the first update moves layer 0's weights by {step:.2g} (the norm of the step)."),
    "zeros_dead_layer": lambda f: f"With {f['label']}: no, {zeros_text(f)}: {dead_text(f)}.",
    "zeros_no_dead_layer": lambda f: f"With {f['label']}: no, {zeros_text(f)}{NO_DEAD_LAYER}.",
    "zeros_underflow": lambda f: (f"With {f['label']}: no, {zeros_text(f)}{NO_DEAD_LAYER}; "
                                  f"{underflow_text(f)}: through layer after layer of slope 0.01 the "
                                  "gradient shrinks below what float32 holds."),
    "no_gain": ("With {label}: no, every layer gets a gradient, but validation accuracy {val:.3f} ± "
                "{std:.3f} is not above the plain net's {plain:.3f} by more than {margin:.3f}."),
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
    answer = Answer("6.2.1-5", "Is there a vanishing or exploding gradient problem, and what change would "
                               "solve it?", [render(GRADIENTS_TEXT, f) for f in vanishing_findings(runs)])
    table = gradient_table([(arch_label(runs[0]), runs)], layers)
    caption = ("Top, the exercise's plot: each seed's gradient per epoch in layers 0 to 99 (▼: exactly 0, "
               "which a log axis cannot show); bottom: the activations and gradients at initialisation "
               "behind the zeros.")
    return Report([table], {"gradients.png": (fig, caption)}, [], [answer])


def report_residual(result):
    variants = [("plain", result["baseline_runs"])] + [
        (label, [r for r in result["runs"] if r["fix"] == fix]) for fix, label in result["fixes"].items()]
    layers = [layer for layer in GRADIENT_LAYERS if layer < len(variants[0][1][0]["init_activation_norm"])]
    drawn = [(label, next(r for r in runs if r["status"] == "ok")) for label, runs in variants
             if any(r["status"] == "ok" for r in runs)]
    not_drawn = [label for label, runs in variants if not any(r["status"] == "ok" for r in runs)]
    columns = math.ceil(len(drawn) / 2) if len(drawn) > 4 else len(drawn)
    rows = math.ceil(len(drawn) / columns)
    fig = plt.figure(figsize=(5 * columns + 2, 4.6 * rows + 0.6), layout="constrained")
    grid = fig.add_gridspec(rows, columns)
    panels = []
    for i, (label, run) in enumerate(drawn):
        grads = seed_grads(run)
        panels.append(lines_with_zero_row(grid[i // columns, i % columns], np.arange(1, len(grads) + 1),
                                          layer_series(grads, layers), f"{label}\n(seed {run['seed']})",
                                          "epoch", "||grad W||², mean over the epoch",
                                          render(ZERO_PANEL, dead_layer_finding([run]))))
    positive = np.concatenate([seed_grads(run)[:, layers].ravel() for _, run in drawn])
    positive = positive[positive > 0]
    for ax in panels:  # one y range for every change, so that they compare by eye
        if ax.get_lines() and positive.size and ax.get_yticks().size:
            ax.set_ylim(positive.min() / 3, positive.max() * 3)
    panels[-1].legend(fontsize=9, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.suptitle("Per-layer gradient of the 100-layer net with each change, one seed each (the table has "
                 "every seed); one y axis for all", fontsize=13)
    init = plt.figure(figsize=(16, 5.5), layout="constrained")
    init_panels(init.add_gridspec(1, 1)[0, 0], lambda key: [(label, runs[0][key], (["0.65"] + PALETTE)[i])
                                                            for i, (label, runs) in enumerate(variants)])
    init.suptitle(f"At initialisation, seed {variants[0][1][0]['seed']}, first batch: why each change trains "
                  "or not")
    rows = [[label, f"{runs[0]['init_activation_norm'][1]:.2g} / {runs[0]['init_activation_norm'][-1]:.2g}",
             f"{runs[0]['init_grad_sq_norm'][0]:.2g} / {runs[0]['init_grad_sq_norm'][-1]:.2g}"]
            for label, runs in variants]
    init_table = markdown_table(["model", "activation norm at initialisation: layer 1 / output layer",
                                 "first step's ||grad W||²: layer 0 / output layer"], rows)
    answer = Answer("6.2.1-6", "Implement the change: did it solve the problem?",
                    [render(FIXES_TEXT, f) for f in fixes_findings(variants[0][1], variants[1:])])
    blocks = ("Blocks: 'skips x + ReLU(Linear(x))' adds the hidden layer's output to its input (a "
              "post-activation skip, whose increments are never negative); 'pre-activation skips x + "
              "Linear(ReLU(x))' is He et al. (2016)'s form, whose increments can take either sign; "
              "'SkipInit' scales each block's increment by a learnable scalar that starts at 0 (De & Smith "
              "2020), so that the net starts as its first layer and the output layer; all skip every hidden "
              "layer but the first.")
    body = [gradient_table(variants, layers), f"At initialisation, seed {variants[0][1][0]['seed']}:\n",
            init_table, blocks]
    caption = ("A change works where every layer's line stays well above 0, with no ▼ (an exactly-zero "
               "gradient) in the strip under it.")
    if not_drawn:
        caption += f" Not drawn, no finite gradient (diverged in the first epoch): {', '.join(not_drawn)}."
    init_caption = ("At initialisation, per layer: the activation reaching it (left) and its first gradient "
                    "(right); the widest, grey line, drawn first, is the plain net.")
    return Report(body, {"residual.png": (fig, caption), "residual_init.png": (init, init_caption)}, [],
                  [answer])


# ----------------------------------------------------------------------------- 6.2.1-7 sin features, regions

def implicit_findings(raw, sin, border_raw, border_sin):
    """6.2.1-7: is the sin-feature model better, against the spread over seeds (a paired t-test at 95%), and
    does its map draw more border between classes where the data is? border_*: the fraction of the map's
    cells near the data (within a fixed distance of a training point) on a border."""
    comparison = paired([final(r, "val_acc") for r in raw], [final(r, "val_acc") for r in sin])
    case = {"none": "no_seed", "above": "sin_better", "below": "raw_better"}.get(comparison["case"],
                                                                               comparison["case"])
    ratio = border_sin / border_raw if border_raw else None
    return [dict(comparison, case=case, loss_sin=mean_final(sin, "val_loss"),
                 loss_raw=mean_final(raw, "val_loss")),
            dict(case="more_border" if border_sin > BORDER_RATIO * border_raw else "no_more_border",
                 ratio=ratio, sin=border_sin, raw=border_raw)]


CHANGE = "sin features change validation accuracy by {difference:+.3f}"
T_TEST = (" ± {std:.3f} over {n} seeds, {} the noise (a paired t-test at 95% needs {noise:.3f}; validation "
          "loss {loss_sin:.3f} against {loss_raw:.3f}).")
BORDER = "({sin:.1%} of the cells near the data against {raw:.1%})"
IMPLICIT_TEXT = {
    "no_seed": "No seed trained both models without diverging.",
    "one_seed": ("One seed cannot tell: " + CHANGE + " (validation loss {loss_sin:.3f} against "
                 "{loss_raw:.3f}), with no spread over seeds to judge it against."),
    "tie": "Neither is better: " + CHANGE + T_TEST.replace("{}", "within"),
    "sin_better": "The sin model is better: " + CHANGE + T_TEST.replace("{}", "beyond"),
    "raw_better": "The raw model is better: " + CHANGE + T_TEST.replace("{}", "beyond"),
    "more_border": ("Its map has more border than the raw model's " + BORDER + ": sin(a x) features bend "
                    "and repeat across the plane, so it can draw curved, many-sided borders that a "
                    "raw-coordinate ReLU net builds from few straight pieces."),
    "no_more_border": "Its map has no more border than the raw model's " + BORDER + ".",
    "per_country": lambda f: (
        "Per country (validation accuracy, mean over seeds, countries with at least "
        f"{f['min_points']} validation points), sin features gain most on " + country_changes(f["gains"])
        + " and lose most on " + country_changes(f["losses"]) + "."),
}
MIN_POINTS = 30  # a country's accuracy on fewer validation points moves by more than 3 points per point
COUNTRIES_SHOWN = 3  # the countries named for the largest gains and the largest losses


def country_changes(rows):
    """'Austria (0.60 to 0.89), ...'; a bare code (data without country names) as 'class 28'."""
    return ", ".join(f"{'class ' * str(name).isdigit()}{name} ({raw:.2f} to {sin:.2f})"
                     for name, raw, sin in rows) or "none"


def per_country_finding(raw, sin, counts, names):
    """The countries whose mean validation accuracy the sin features change most, up and down, among those
    with at least MIN_POINTS validation points."""
    def mean_of(runs, c):
        return float(np.mean([r["val_acc_per_class"][c] for r in runs if r["status"] == "ok"]))
    rows = sorted(((mean_of(sin, c) - mean_of(raw, c), names[c], mean_of(raw, c), mean_of(sin, c))
                   for c in range(len(counts)) if counts[c] >= MIN_POINTS), key=lambda row: row[0])
    gains = [row[1:] for row in reversed(rows[-COUNTRIES_SHOWN:]) if row[0] > 0]
    losses = [row[1:] for row in rows[:COUNTRIES_SHOWN] if row[0] < 0]
    return dict(case="per_country", gains=gains, losses=losses, min_points=MIN_POINTS)


def report_implicit(result):
    variants = [("raw coordinates", result["baseline_runs"], "raw"), ("sin features", result["runs"], "sin")]
    fig = map_figure(result["map_extent"], 8.5, maps=2)
    for ax, (label, runs, tag) in zip(fig.subplots(1, 2), variants):
        draw_map(ax, result, tag, runs[0], f"{label}: ")
    rows = [[label, runs[0]["features"]] + [finals(runs, key) for key in ("train_acc", "val_acc", "test_acc",
                                                                          "val_loss")] + [status_text(runs)]
            for label, runs, _ in variants]
    run, frequencies = result["runs"][0], result["sin_frequencies"]
    note = (f"Both models {arch_label(run)}, batch norm {'on' if run['batch_norm'] else 'off'}, "
            f"{run['epochs']} epochs at lr {run['lr']:g}, batch {run['batch_size']}. Features: sin(a*x) for "
            f"a in {', '.join(f'{a:g}' for a in frequencies)} on longitude and latitude in degrees "
            f"({2 * len(frequencies)} inputs).")
    border = result["border_fraction"]
    found = implicit_findings(variants[0][1], variants[1][1], border["raw"]["near_data"],
                              border["sin"]["near_data"])
    found.append(per_country_finding(variants[0][1], variants[1][1], result["val_class_counts"],
                                     result["data"]["class_names"]))
    answer = Answer("6.2.1-7", "Which model is better, and what can the sin model learn that the other had "
                               "trouble with?", [render(IMPLICIT_TEXT, f) for f in found])
    header = ["input", "features", "train acc", "val acc", "test acc", "val loss",
              "border cells near the data (first seed's map)", "border cells, whole grid", "status"]
    rows = [row[:-1] + [f"{border[tag]['near_data']:.1%}", f"{border[tag]['grid']:.1%}", row[-1]]
            for row, (_, _, tag) in zip(rows, variants)]
    note += (f" Near the data: the {result['near_data_share']:.0%} of the map's cells within a fixed "
             "distance of a training point, where borders separate real cities, not empty land or sea.")
    table = markdown_table(header, rows)
    caption = "The same net on raw coordinates (left) and on sin features (right): the shapes of the borders."
    return Report([table, note], {"implicit.png": (fig, caption)}, [], [answer])


def report_regions(result):
    resolution, extent = result["settings"]["resolution"], result["data"]["extent"]
    by_depth = group_by(result["runs"], "depth").values()
    rows = [[arch_label(runs[0]), f"{runs[0]['bound']:,}", ", ".join(f"{r['regions_on_grid']} (seed "
                                                                     f"{r['seed']})"
                                                                     for r in runs),
             mean_std([r["test_acc"] for r in runs])] for runs in by_depth]
    counted = f"regions seen on a {resolution}x{resolution} grid over the data (a lower bound)"
    table = markdown_table(["model", "upper bound on regions (whole plane)", counted, "test acc"], rows)
    fig = map_figure(extent, 7, maps=len(by_depth))
    axes = fig.subplots(1, len(by_depth), squeeze=False)
    rng = np.random.default_rng(0)
    for ax, run in zip(axes[0], [runs[0] for runs in by_depth]):
        regions = result["arrays"][f"regions_{run['depth']}x{run['width']}"]
        image = rng.uniform(0.25, 1.0, size=(regions.max() + 1, 3))[regions]
        image[borders(regions)] = 0
        ax.imshow(image, origin="lower", extent=extent, interpolation="nearest")
        ax.set_aspect(map_aspect(extent))
        ax.set(xlabel="longitude (degrees)", ylabel="latitude (degrees)", title=f"{arch_label(run)}, seed "
               f"{run['seed']}: {run['regions_on_grid']} regions on the grid (bound {run['bound']:,})")
    note = ("Each distinct on/off pattern of the hidden ReLUs is one linear region: the inputs that share a "
            "pattern form one convex polygon on which the network is a single affine map (batch norm in eval "
            "mode is affine and adds none). Counting patterns on a grid gives a lower bound: regions thinner "
            "than a cell, or outside the data's extent, are missed.")
    caption = ("Each colour is one linear region of a trained net (one seed), black lines their borders: "
               "how many of the bound's regions fall where the data is.")
    return Report([table, note], {"regions.png": (fig, caption)}, [])
