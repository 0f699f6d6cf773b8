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

from common import PALETTE, Answer, Report, borders, markdown_table, mean_std, plt, render

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
        best_lr = min(learning, key=learning.get)
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
    "collapsed_dead": COLLAPSED + (" {dead:.0%} of its hidden ReLUs are dead (0 on every validation "
                                   "point): steps this large push pre-activations below 0 for every input, a "
                                   "dead ReLU passes no gradient, and the units never come back."),
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
    "slow": lambda f: (f"Smaller ones ({listed(f['lrs'], '{:g}')}) are still falling at epoch {f['epochs']}: "
                       "too slow for this budget rather than wrong."),
    "seeds_apart": lambda f: ("Seeds end far apart at lr " + "; ".join(
        f"{lr:g} ({listed(values, '{:.3f}')})" for lr, values in f["finals"].items())
        + ", more than a mean shows: the figure draws each seed."),
}


def report_lr(result):
    by_lr = group_by(result["runs"], "lr")
    reference, n_classes = result["reference_losses"], result["data"]["n_classes"]
    fig, ax = plt.subplots(figsize=(10, 5.5), layout="constrained")
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
    rows, stats = [], {}
    for lr, runs in by_lr.items():
        losses, ok = [final(r, "val_loss") for r in runs], [r for r in runs if r["status"] == "ok"]
        dead = [r["dead_relu_fraction"] for r in ok]
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
    asked = "What do a too-high and a too-low learning rate do?"
    caption = ("Where each lr's line ends against the grey references: on the class frequencies the net "
               "ignores its input; near the uniform guess it has not moved.")
    return Report([table], {"lr.png": (fig, caption)}, [],
                  [Answer("6.1.2-1", asked, [render(LR_TEXT, f) for f in answer])])


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


GAP = "the training loss (eval mode, {train:.3f}) and the validation loss ({val:.3f}) are {gap:.3f} apart"
EPOCHS_TEXT = {
    "too_short": "No run trained long enough without diverging to tell.",
    "improving": ("Too few epochs leave the net undertrained, and {epochs} are still too few here: the "
                  "validation loss is still falling at the end ({previous:.3f} to {last:.3f} over the last "
                  "{span} epochs), and " + GAP + ", so it is not overfitting. Too many epochs would show as "
                  "a validation loss that turns up while the training loss keeps falling; that does not "
                  "happen within these {epochs}."),
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
    runs = result["runs"]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(13, 4.5), layout="constrained")
    plot_split_curves(ax_loss, ax_acc, runs, f"{len(epochs_axis(runs))} epochs, no batch norm")
    answer = Answer("6.1.2-2", "How does the number of epochs affect training: too many, too few?",
                    [render(EPOCHS_TEXT, epochs_finding(runs))])
    lowest = f"Lowest validation loss over the epochs: {mean_std([best(r, 'val_loss') for r in runs])}."
    caption = ("Whether the wide validation line still falls at the last epoch, and how far the thin train "
               "and test lines lie from it.")
    return Report([split_table([("no batch norm", runs)]), lowest], {"epochs.png": (fig, caption)}, [],
                  [answer])


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


def report_batchnorm(result):
    plain, normed = result["baseline_runs"], result["runs"]
    fig, axes = plt.subplots(2, 2, figsize=(13, 9), sharey="row", layout="constrained")
    plot_split_curves(axes[0, 0], axes[1, 0], plain, "no batch norm", eval_mode_train=True)
    plot_split_curves(axes[0, 1], axes[1, 1], normed, "batch norm", eval_mode_train=True)
    ok = [r for r in normed if r["status"] == "ok"]
    found = batchnorm_findings([r for r in plain if r["status"] == "ok"], ok, result["data"]["extent"])
    answer = Answer("6.1.2-3", "How does batch norm contribute to training?",
                    [render(BATCHNORM_TEXT, f) for f in found])
    gap = [final(n, "val_acc") - final(p, "val_acc") for p, n in zip(plain, normed)
           if final(n, "val_acc") is not None and final(p, "val_acc") is not None]
    paired = f"Batch norm changes the final validation accuracy by {mean_std(gap)}, paired by seed."

    def layers(runs, key):
        return " / ".join(f"{v:.3g}" for v in np.mean([r[key] for r in runs if r[key]], 0))
    scales = markdown_table(["model", "RMS of each hidden layer's ReLU input at initialisation (first step, "
                             "val set)", "at the end (eval mode, val set)"],
                            [[label, layers(runs, "relu_input_rms_init"), layers(runs, "relu_input_rms")]
                             for label, runs in (("no batch norm", plain), ("batch norm", ok))])
    return Report([split_table([("no batch norm", plain), ("batch norm", normed)]), paired, scales],
                  {"batchnorm.png": (fig, "The same net without (left) and with (right) batch norm, on "
                                          "shared axes: how far each gets in the same epochs.")}, [],
                  [answer])


# ----------------------------------------------------------------------------- 6.1.2-4 batch size

def falls_with(xs, ys):
    """Whether ys never rises as xs grows."""
    ordered = [y for _, y in sorted(zip(xs, ys))]
    return all(b <= a for a, b in zip(ordered, ordered[1:]))


def steps_finding(rows):
    """Does more optimizer steps mean higher validation accuracy across batch sizes? rows: (batch size, total
    steps, best validation accuracy)."""
    by_steps = sorted(rows, key=lambda row: -row[1])
    for i, more in enumerate(by_steps):
        for fewer in by_steps[i + 1:]:
            if fewer[2] > more[2] + GAP_TOLERANCE:
                return dict(case="more_steps_not_better", more=more, fewer=fewer)
    same = max(row[2] for row in rows) - min(row[2] for row in rows) <= GAP_TOLERANCE
    return dict(case="same_accuracy" if same else "never_falls", rows=by_steps, tolerance=GAP_TOLERANCE)


def batch_size_findings(rows):
    """6.1.2-4 from rows (batch size, iterations per epoch, seconds per epoch, total steps, best validation
    accuracy, loss noise): (i) accuracy, (ii) speed, (iii) stability."""
    sizes = [row[0] for row in rows]
    top = max(rows, key=lambda row: row[4])
    return [dict(case="highest", batch=top[0], acc=top[4]), steps_finding([(r[0], r[3], r[4]) for r in rows]),
            dict(case="faster" if falls_with(sizes, [row[2] for row in rows]) else "not_faster", rows=rows),
            dict(case="steadier" if falls_with(sizes, [row[5] for row in rows]) else "not_steadier",
                 rows=rows)]


def steps_listed(rows):
    return ", ".join(f"batch {batch}: {steps:,} steps, {acc:.3f}" for batch, steps, acc in rows)


def epoch_listed(rows):
    return ", ".join(f"batch {b}: {it:,} iterations, {sec:.2f} s" for b, it, sec, *_ in rows)


def noise_listed(rows):
    return ", ".join(f"batch {row[0]}: {row[5]:.3f}" for row in rows)


BATCH_SIZE_TEXT = {
    "highest": "(i) Batch {batch} reaches the highest validation accuracy, {acc:.3f}.",
    "more_steps_not_better": lambda f: (
        f"More optimizer steps did not mean higher accuracy: batch {f['more'][0]} took {f['more'][1]:,} "
        f"steps and reached {f['more'][2]:.3f}, batch {f['fewer'][0]} took {f['fewer'][1]:,} and reached "
        f"{f['fewer'][2]:.3f}."),
    "same_accuracy": lambda f: (f"Accuracy is the same within {f['tolerance']} whatever the number of "
                                f"optimizer steps: {steps_listed(f['rows'])}."),
    "never_falls": lambda f: ("Accuracy never falls as the number of optimizer steps grows: "
                              f"{steps_listed(f['rows'])}."),
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
    rows, answer_rows = [], []
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
                            float(np.mean(as_array([best(r, "val_acc", max) for r in runs]))), noise))
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
                    [render(BATCH_SIZE_TEXT, f) for f in batch_size_findings(answer_rows)])
    caption = ("Top: accuracy per epoch and per optimizer step (where the batch sizes meet at equal steps); "
               "bottom: how far each batch size's step losses (faint) scatter around their moving average.")
    return Report([table], {"batch_size.png": (fig, caption)}, [], [answer])


# ----------------------------------------------------------------------------- 6.2.1-1 to 4 depth and width

def generalisation_finding(label, train, val, test):
    """6.2.1-1: did a model generalise? Its final accuracy on train (eval mode), validation and test."""
    case = ("overfits" if train - val > OVERFIT_GAP else "val_test_disagree" if abs(val - test) > OVERFIT_GAP
            else "yes")
    return dict(case=case, label=label, train=train, val=val, test=test, gap=train - val,
                within=max(abs(train - val), abs(val - test)))


def fit_finding(label, train, val, best_train, params):
    """6.2.1-2: did the worst model over- or under-fit? Its train (eval mode) and validation accuracy,
    against the best model's train accuracy."""
    case = "over" if train - val > OVERFIT_GAP else "under" if best_train - train > OVERFIT_GAP else "neither"
    return dict(case=case, label=label, train=train, val=val, best_train=best_train, params=params)


def shape_findings(kind, rows):
    """6.2.1-3 (kind 'depth') and 6.2.1-4 ('width') from rows (size, validation accuracy, its std over seeds,
    parameters, training seconds or None for a model that trained in one group with others): the table,
    shared times, whether more of `kind` raised the accuracy and whether the gain shrinks, and the cost."""
    rows = sorted(rows)
    (small, acc_small, _, params_small, sec_small), (large, acc_large, std_large, params_large, sec_large) = \
        rows[0], rows[-1]
    findings = [dict(case="table", kind=kind, rows=rows)]
    if any(sec is None for *_, sec in rows):
        findings.append(dict(case="shared_time"))
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
    time_ratio = sec_large / sec_small if sec_small and sec_large else None
    return findings + [dict(numbers, case="cost_with_time" if time_ratio else "cost", time_ratio=time_ratio,
                            params_ratio=params_large / params_small)]


NUMBERS = "train {train:.3f} (eval mode), validation {val:.3f}, test {test:.3f}"
DEPTH_WIDTH_TEXT = {
    "overfits": ("Not fully: the {label} fits the training set better than new data (" + NUMBERS + "): it "
                 "over-fits by {gap:.3f}."),
    "val_test_disagree": ("Validation and test disagree for the {label} (" + NUMBERS + "), so its validation "
                          "score does not carry over to new data."),
    "yes": ("Yes: the {label} scores the same on data it never saw as on its training set (" + NUMBERS + "), "
            "within {within:.3f}."),
    "over": ("It over-fits: the {label} reaches {train:.3f} on the training set (eval mode) and {val:.3f} on "
             "validation."),
    "under": ("It under-fits: the {label} scores about as low on its own training set ({train:.3f}, eval "
              "mode) as on validation ({val:.3f}), far below what the best model fits ({best_train:.3f}); "
              "with {params:,} parameters it cannot draw the borders, whatever the data."),
    "neither": "Neither clearly: the {label} reaches {train:.3f} on train and {val:.3f} on validation.",
    "table": lambda f: f"Validation accuracy by {f['kind']}: " + ", ".join(
        f"{f['kind']} {size}: {acc:.3f} ({params:,} parameters" + (f", {sec:.0f} s)" if sec else ")")
        for size, acc, _, params, sec in f["rows"]) + ".",
    "shared_time": ("The models without a time trained together in one lockstep group (narrower ones padded "
                    "to the widest), so each has no time of its own."),
    "more_fits_better": lambda f: (
        f"The advantage: more {'layers' if f['kind'] == 'depth' else 'units'} fit the borders better "
        f"({f['acc_small']:.3f} at {f['kind']} {f['small']}, {f['best_acc']:.3f} at {f['best_size']}), since "
        f"every added {'layer' if f['kind'] == 'depth' else 'unit per layer'} adds pieces to the "
        "piecewise-linear function the net draws."),
    "gain_shrinks": ("The gain shrinks: from {kind} {previous} to {large} it is {gain:+.3f}, within the "
                     "spread over seeds."),
    "no_gain": ("More {kind} did not raise the accuracy here ({acc_small:.3f} at {small}, {acc_large:.3f} at "
                "{large})."),
    "cost": "The cost: {params_ratio:.1f}x the parameters from {kind} {small} to {large}.",
    "cost_with_time": ("The cost: {params_ratio:.1f}x the parameters and {time_ratio:.1f}x the training time "
                       "from {kind} {small} to {large}."),
}


def most_common(values):
    """The value that occurs most often (the first of them in a tie): the width the depth models share."""
    return max(dict.fromkeys(values), key=values.count)


def depth_width_findings(runs, groups, val, top, worst):
    """6.2.1-1 to 6.2.1-4 from the seven models' runs (groups: (depth, width) -> indices into runs): per
    question, its number, what it asks and its findings."""
    def mean_of(arch, key):
        return mean_final([runs[i] for i in groups[arch] if runs[i]["status"] == "ok"], key)
    seconds = {arch: runs[groups[arch][0]]["group_wall_s"] for arch in groups}

    def shape_rows(fixed_index, fixed):
        rows = []
        for arch in sorted(a for a in groups if a[fixed_index] == fixed):
            accs = [final(runs[i], "val_acc") for i in groups[arch] if final(runs[i], "val_acc") is not None]
            # one group's time shared by several architectures (width padding) is no model's own time
            shared = list(seconds.values()).count(seconds[arch]) > 1
            rows.append((arch[1 - fixed_index], val[arch], float(np.std(accs)),
                         runs[groups[arch][0]]["n_params"], None if shared else seconds[arch]))
        return rows
    width, depth = (most_common([arch[i] for arch in groups]) for i in (1, 0))
    best, poor = (f"{tag} model ({arch_label(dict(depth=arch[0], width=arch[1]))})"
                  for tag, arch in (("best", top), ("worst", worst)))
    return [("6.2.1-1", "Did the best model generalise?", [generalisation_finding(
                best, mean_of(top, "train_eval_acc"), mean_of(top, "val_acc"), mean_of(top, "test_acc"))]),
            ("6.2.1-2", "Did the worst model over-fit or under-fit?", [fit_finding(
                poor, mean_of(worst, "train_eval_acc"), mean_of(worst, "val_acc"),
                mean_of(top, "train_eval_acc"), runs[groups[worst][0]]["n_params"])]),
            ("6.2.1-3", f"How does depth affect the MLP (width {width})?", shape_findings("depth",
                                                                                     shape_rows(1, width))),
            ("6.2.1-4", f"How does width affect the MLP (depth {depth})?", shape_findings("width",
                                                                                     shape_rows(0, depth)))]


def report_depth_width(result):
    runs, groups = result["runs"], {}
    for i, run in enumerate(runs):
        groups.setdefault((run["depth"], run["width"]), []).append(i)
    val = {arch: np.mean(as_array([final(runs[i], "val_acc") for i in idx])) for arch, idx in groups.items()}
    ranked = sorted((a for a in val if not np.isnan(val[a])), key=val.get)  # diverged architectures left out
    worst, top = (ranked[0], ranked[-1]) if ranked else (None, None)
    rows = []
    for arch, idx in groups.items():
        arch_runs = [runs[i] for i in idx]
        mark = " **best**" if arch == top else " **worst**" if arch == worst else ""
        rows.append([f"{arch_label(arch_runs[0])}{mark}", f"{arch_runs[0]['n_params']:,}"] +
                    [finals(arch_runs, key) for key in ("train_acc", "train_eval_acc", "val_acc", "test_acc",
                                                        "train_loss", "val_loss", "test_loss")]
                    + [status_text(arch_runs)])
    header = ["model", "parameters", "train acc (train mode)", "train acc (eval mode)", "val acc", "test acc",
              "train loss (train mode)", "val loss", "test loss", "status"]
    table = markdown_table(header, rows)

    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8), sharey=True, layout="constrained")
    width, depth = (most_common([arch[i] for arch in groups]) for i in (1, 0))
    for ax, vary, fixed_index, fixed in ((axes[0], "depth", 1, width), (axes[1], "width", 0, depth)):
        archs = sorted(a for a in groups if a[fixed_index] == fixed)
        xs = [a[1 - fixed_index] for a in archs]
        for key, label, color, style in (("train_eval", "train (eval mode)", "C0", "-"), ("val", "validation",
                                         "C1", "-"), ("test", "test (dashed)", "C2", "--")):
            values = [as_array([final(runs[i], f"{key}_acc") for i in groups[a]]) for a in archs]
            ax.errorbar(xs, [np.mean(v) for v in values], yerr=[np.std(v) for v in values], marker="o",
                        capsize=3, color=color, linestyle=style, label=label)
        if vary == "width":
            ax.set_xscale("log", base=2)
        ax.set_xticks(xs, [str(x) for x in xs])
        xlabel = "hidden layers (depth)" if vary == "depth" else "units per hidden layer (width, log scale)"
        finish(ax, xlabel, "final accuracy (mean ± std over seeds)",
               f"accuracy vs {vary} ({['depth', 'width'][fixed_index]} {fixed})")
    figures = {"depth_width.png": (fig, "Final accuracy against depth (left) and width (right), on one y "
                                         "axis: where adding layers or units stops paying.")}
    for tag, arch in (("best", top), ("worst", worst)) if ranked else ():
        arch_runs = [runs[i] for i in groups[arch]]
        pair = map_figure(result["map_extent"], 8.5, other_width=6)
        caption = f"The {tag} model's losses (left) and its borders (right): ringed points are its mistakes."
        figures[f"depth_width_{tag}.png"] = (pair, caption)
        ax_loss, ax_map = pair.subplots(1, 2, gridspec_kw={"width_ratios": [6, 8.5]})
        plot_split_curves(ax_loss, None, arch_runs, f"{tag} model")
        draw_map(ax_map, result, f"{arch[0]}x{arch[1]}", arch_runs[0], f"{tag} model: ")
    found = depth_width_findings(runs, groups, val, top, worst) if ranked else []
    answers = [Answer(item, asked, [render(DEPTH_WIDTH_TEXT, f) for f in findings])
               for item, asked, findings in found]
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


def fix_verdict(runs, plain_val_acc):
    """6.2.1-6 for one change: 'solved' if every seed trained, every layer got a gradient in every epoch and
    validation accuracy rose above the plain net's; else 'diverged', exact zeros (below a dead layer, without
    one, or, with LeakyReLU, which passes no exact 0 back, underflow) or 'no_gain'."""
    diverged = [r for r in runs if r["status"] != "ok"]
    if diverged:
        return dict(case="diverged", diverged=len(diverged), seeds=len(runs),
                    output_norm=max(r["init_activation_norm"][-1] for r in runs))
    zeros = [(r["seed"], zero_layers(r)) for r in runs if zero_layers(r)]
    if zeros:
        dead = any(norm == 0 for r in runs for norm in r["init_activation_norm"])
        case = ("zeros_dead_layer" if dead else "zeros_underflow" if runs[0].get("activation") == "leaky_relu"
                else "zeros_no_dead_layer")
        return dict(case=case, zeros=zeros)
    val = mean_final(runs, "val_acc")
    return dict(case="no_gain" if val <= plain_val_acc + GAP_TOLERANCE else "solved", val=val)


def fixes_findings(plain, fixes):
    """6.2.1-6: fixes: (label, runs) per change tried."""
    plain_acc = mean_final([r for r in plain if r["status"] == "ok"] or plain, "val_acc")
    verdicts = [dict(fix_verdict(runs, plain_acc), label=label) for label, runs in fixes]
    solved = [f["label"] for f in verdicts if f["case"] == "solved"]
    return [dict(case="solved_by" if solved else "none_solved", solved=solved, plain_acc=plain_acc),
            *verdicts]


def zeros_text(f):
    return "layers still get exactly zero gradient (" + "; ".join(
        f"seed {seed}: {layer_ranges(z)}" for seed, z in f["zeros"]) + ")"


NO_DEAD_LAYER = ", though no layer is dead at initialisation"
FIXES_TEXT = {
    "solved_by": lambda f: (f"Solved by: {', '.join(f['solved'])}. The plain net reaches validation accuracy "
                            f"{f['plain_acc']:.3f}."),
    "none_solved": "No change solved it. The plain net reaches validation accuracy {plain_acc:.3f}.",
    "solved": "With {label}: yes, every layer gets a gradient and validation accuracy rises to {val:.3f}.",
    "diverged": ("With {label}: no, {diverged} of {seeds} seeds diverged (at initialisation the activations "
                 "reaching the output layer have norm {output_norm:.1e})."),
    "zeros_dead_layer": lambda f: f"With {f['label']}: no, {zeros_text(f)}.",
    "zeros_no_dead_layer": lambda f: f"With {f['label']}: no, {zeros_text(f)}{NO_DEAD_LAYER}.",
    "zeros_underflow": lambda f: (f"With {f['label']}: no, {zeros_text(f)}{NO_DEAD_LAYER}: through layer "
                                  "after layer of slope 0.01 the gradient shrinks below what float32 holds."),
    "no_gain": ("With {label}: no, every layer gets a gradient, but validation accuracy {val:.3f} is not "
                "above the plain net's."),
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
              ("first_step_grad_sq_norm", "||grad W||² at the first step", "gradients of the first step"))
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
    columns = min(4, len(drawn))
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
             f"{runs[0]['first_step_grad_sq_norm'][0]:.2g} / {runs[0]['first_step_grad_sq_norm'][-1]:.2g}"]
            for label, runs in variants]
    init_table = markdown_table(["model", "activation norm at initialisation: layer 1 / output layer",
                                 "first step's ||grad W||²: layer 0 / output layer"], rows)
    answer = Answer("6.2.1-6", "Implement the change: did it solve the problem?",
                    [render(FIXES_TEXT, f) for f in fixes_findings(variants[0][1], variants[1:])])
    blocks = ("Blocks: 'skips x + ReLU(Linear(x))' adds the hidden layer's output to its input (a "
              "post-activation skip, whose increments are never negative); 'pre-activation skips x + "
              "Linear(ReLU(x))' is He et al. (2016)'s form, whose increments can take either sign; both skip "
              "every hidden layer but the first.")
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

def paired_difference(base, other):
    """(mean, sample std, n) over seeds of other's final validation accuracy minus base's, paired by seed."""
    diffs = [final(o, "val_acc") - final(b, "val_acc") for b, o in zip(base, other)
             if final(o, "val_acc") is not None and final(b, "val_acc") is not None]
    if not diffs:
        return None, None, 0
    return float(np.mean(diffs)), float(np.std(diffs, ddof=1)) if len(diffs) > 1 else 0.0, len(diffs)


def implicit_findings(raw, sin, border_raw, border_sin):
    """6.2.1-7: is the sin-feature model better, against the spread over seeds (a paired t-test at 95%), and
    does its map draw more border between classes? border_*: the fraction of the map's cells on a border."""
    mean, std, n = paired_difference(raw, sin)
    if n == 0:
        return [dict(case="no_seed")]
    noise = T_95.get(n, 2.0) * std / math.sqrt(n) if n > 1 else None
    if noise is None:
        case = "one_seed"
    elif abs(mean) <= max(noise, TIE_FLOOR):
        case = "tie"
    else:
        case = "sin_better" if mean > 0 else "raw_better"
    ratio = border_sin / border_raw if border_raw else None
    return [dict(case=case, difference=mean, std=std, n=n, noise=noise, loss_sin=mean_final(sin, "val_loss"),
                 loss_raw=mean_final(raw, "val_loss")),
            dict(case="more_border" if border_sin > BORDER_RATIO * border_raw else "no_more_border",
                 ratio=ratio, sin=border_sin, raw=border_raw)]


CHANGE = "sin features change validation accuracy by {difference:+.3f}"
T_TEST = (" ± {std:.3f} over {n} seeds, {} the noise (a paired t-test at 95% needs {noise:.3f}; validation "
          "loss {loss_sin:.3f} against {loss_raw:.3f}).")
BORDER = "({sin:.1%} of the grid's cells against {raw:.1%})"
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
}


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
    answer = Answer("6.2.1-7", "Which model is better, and what can the sin model learn that the other had "
                               "trouble with?", [render(IMPLICIT_TEXT, f) for f in implicit_findings(
                                   variants[0][1], variants[1][1], border["raw"], border["sin"])])
    header = ["input", "features", "train acc", "val acc", "test acc", "val loss", "status"]
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
