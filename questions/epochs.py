"""6.1.2-2 epochs: 100 epochs of the plain net, what it predicts while it sits at the most frequent class,
and an over-fitting control on a few rows of every class. batchnorm trains with train_epochs too.
"""
import numpy as np
import torch
import torch.nn.functional as F

from common import seed_everything
from plots import (SPLITS, Answer, Report, finish, markdown_table, plot_mean_band, plot_split_curves, render,
                   subplots)
from runner import Question
from section6 import (SKELETON, arch_of, batch_major, build_model, class_prior_entropy, dead_relu_fraction,
                      load_model, relu_inputs, seed_runs, train_group)
from stats import (FALL_WIGGLES, GAP_TOLERANCE, as_array, epochs_axis, falling_finding, finals, mean_final,
                   status_text)


def output_summary(model, X):
    """What the nets say on the rows of X (eval mode): the mean entropy of their predicted distributions
    (nats), and the share of rows given the class each predicts most; [] or [K] for a stacked module."""
    log_probs = batch_major(model, X).log_softmax(-1)
    entropy = -(log_probs.exp() * log_probs).sum(-1).mean(-1)
    predicted = F.one_hot(log_probs.argmax(-1), log_probs.shape[-1])
    return {"val_entropy": entropy, "val_mode_share": predicted.sum(-2).amax(-1) / predicted.shape[-2]}


def relu_input_rms(model, X, train_mode=False):
    """Per hidden layer, the root mean square of its ReLUs' inputs over X: the scale the layer works at."""
    return [float(pre.pow(2).mean().sqrt()) for pre in relu_inputs(model, X, train_mode)]


def train_epochs(settings, data, reads, env, batch_norm=None):
    """100 epochs; beyond the protocol, what the nets predict on the validation set after every epoch (the
    entropy of their outputs, the share given to one class), each run's ReLU-input scale per layer at
    initialisation (as the first step sees it) and at the end, and its dead units at the end, on the
    validation set; and, for the plain net, the over-fitting control."""
    arch = arch_of(settings) if batch_norm is None else arch_of(settings, batch_norm=batch_norm)
    desc = f"{settings['epochs']} epochs" + ", batch norm" * arch["batch_norm"]
    results, states = train_group(data, seed_runs(settings, settings["lr"]), arch, settings, env, desc,
                                  eval_train=True, epoch_measure=output_summary)
    X, n_classes = data["val"][0].cpu(), data["meta"]["n_classes"]
    for result, state in zip(results, states):
        seed_everything(result["seed"])
        result["relu_input_rms_init"] = relu_input_rms(build_model(arch, n_classes), X, train_mode=True)
        model = load_model(result, n_classes, state) if result["status"] == "ok" else None
        result["relu_input_rms"] = relu_input_rms(model, X) if model else None
        result["dead_relu_fraction"] = dead_relu_fraction(model, X).tolist() if model else None
    y = data["train"][1].cpu()
    top_share = float(torch.bincount(y, minlength=n_classes).max() / len(y))
    result = {"runs": results,
              "class_prior": {"entropy": class_prior_entropy(y, n_classes), "top_share": top_share}}
    if batch_norm is None and settings["overfit_per_class"]:
        result["overfit_runs"] = overfit_control(settings, data, env)
    return result


def overfit_control(settings, data, env):
    """Beyond the protocol: the plain net, overfit_width wide, on overfit_per_class training rows of every
    class (the first of each class in a permutation drawn with the first seed; all of a class that has
    fewer), its inputs overfit_features (standardized: with the subset's statistics), trained at the
    overfit_* settings until it over-fits. Every class is in the subset, so a rise of the validation loss is
    not the cost of classes it never saw. Validation and test stay whole; train_eval_* is on the subset."""
    y = data["train"][1].cpu()
    counts, rows = {}, []
    for i in torch.randperm(len(y), generator=torch.Generator().manual_seed(settings["seed"])).tolist():
        label = int(y[i])
        if counts.get(label, 0) < settings["overfit_per_class"]:
            counts[label] = counts.get(label, 0) + 1
            rows.append(i)
    rows = torch.tensor(sorted(rows), device=data["train"][1].device)
    subset = {**data, "train": tuple(t[rows] for t in data["train"])}
    arch = arch_of(settings, width=settings["overfit_width"], batch_norm=False,
                   features=settings["overfit_features"])
    results, _ = train_group(subset, seed_runs(settings, settings["overfit_lr"]), arch, settings, env,
                             f"over-fitting control, {len(rows)} rows", settings["overfit_epochs"],
                             settings["overfit_batch_size"], eval_train=True)
    for result in results:
        result.update(train_rows=len(rows), rows_per_class=settings["overfit_per_class"])
    return results


OVERFIT = dict(overfit_per_class=3, overfit_features="standardized", overfit_width=32, overfit_lr=0.03,
               overfit_batch_size=8, overfit_epochs=800)  # found by a search: README, "Protocol choices"
ONE_CLASS = 0.9  # a net that gives 90% of the validation points one class predicts one class: the embedded
#   data's most frequent class holds 17% of them
SMOOTHING = 0.05  # the over-fitting control is read on moving medians over 5% of its epochs: on 3 rows a
#   class its raw losses spike by 10x from one epoch to the next, and a median ignores the spikes
RISE = 0.1  # nats: the smallest rise of a smoothed validation loss, from its lowest to the end, called a
#   turn; a moving median of spiky curves still wanders by a few hundredths


def epochs_finding(runs):
    """6.1.2-2: whether the validation loss still falls at the end (falling_finding), where the mean curve is
    lowest, and how far apart the training (eval mode) and validation losses end."""
    ok = [r for r in runs if r["status"] == "ok"]
    if not ok or len(epochs_axis(ok)) < 3:
        return dict(case="too_short")
    mean_curve = np.nanmean([as_array(r["history"]["val_loss"]) for r in ok], axis=0)
    train, val = mean_final(ok, "train_eval_loss"), mean_final(ok, "val_loss")
    return dict(falling_finding([r["history"]["val_loss"] for r in ok]), epochs=len(mean_curve), train=train,
                val=val, gap=abs(val - train), lowest_epoch=int(np.argmin(mean_curve)) + 1)


def plateau_finding(runs, top_share):
    """'Too few' in numbers: the epochs where the mean validation accuracy sits at the most frequent class's
    share of the training labels, and the share of points the net gives the class it predicts most there
    (mean over those epochs and the seeds)."""
    ok = [r for r in runs if r["status"] == "ok"]
    curves = {key: np.nanmean([as_array(r["history"][key]) for r in ok], axis=0)
              for key in ("val_acc", "val_mode_share")} if ok else {}
    at = [e for e, acc in enumerate(curves.get("val_acc", [])) if abs(acc - top_share) <= GAP_TOLERANCE]
    if not at:
        return dict(case="no_plateau")
    share = float(np.mean(curves["val_mode_share"][at]))
    return dict(case="one_class" if share >= ONE_CLASS else "several_classes", first=at[0] + 1,
                last=at[-1] + 1, top_share=top_share, share=share)


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
                rise=RISE, rows=ok[0]["train_rows"], per_class=ok[0]["rows_per_class"])


def spread(values, form):
    """The lowest and highest of values (one per seed), or the one value."""
    low, high = form.format(min(values)), form.format(max(values))
    return low if low == high else f"{low}-{high}"


def control_text(f):
    seeds = f["seeds"]
    return (f"a control on {f['rows']:,} rows ({f['per_class']} per class) bottoms out at "
            f"epochs {spread([s['epoch'] for s in seeds], '{}')}, then rises "
            f"{spread([s['val_end'] - s['val_low'] for s in seeds], '{:.2f}')} nats as its training loss "
            "falls")


GAP = "; train (eval mode) and validation losses end {gap:.3f} apart."
MOVES = ("its line over the last {window} epochs moves {change:+.3f}, {wiggle_share:.1f} times the epochs' "
         f"wiggle about it (a trend needs {FALL_WIGGLES})")
EPOCHS_TEXT = {
    "too_short": None,
    "one_class": ("Too few: at epochs {first}-{last} validation accuracy is the top class's share "
                  "({top_share:.3f}): the net gives {share:.0%} of points one class."),
    "several_classes": ("At epochs {first}-{last} validation accuracy is the top class's share "
                        "({top_share:.3f}), though the net spreads its predictions ({share:.0%} to one "
                        "class)."),
    "no_plateau": None,
    "falling": "At epoch {epochs} the validation loss still falls: " + MOVES + GAP,
    "rising": "The validation loss rises at the end (lowest at epoch {lowest_epoch}): " + MOVES + GAP,
    "flat": "By epoch {epochs} the validation loss is flat: " + MOVES + GAP,
    "control_too_short": "The over-fitting control did not train long enough to tell.",
    "control_overfits": lambda f: f"Too many over-fit: {control_text(f)}.",
    "control_does_not": lambda f: (f"The over-fitting control does not rise by {f['rise']} nats in every "
                                   f"seed: {control_text(f)}."),
}
HEADLINE_TREND = {"falling": "{epochs} epochs are still too few", "flat": "{epochs} epochs reach a plateau",
                  "rising": "{epochs} epochs are too many", "too_short": "too few epochs ran to tell"}


SPLIT_COLUMNS = {"train_loss": "train loss", "train_eval_loss": "train loss (eval mode)",
                 "val_loss": "val loss", "test_loss": "test loss", "train_acc": "train acc",
                 "train_eval_acc": "train acc (eval mode)", "val_acc": "val acc", "test_acc": "test acc"}


def split_table(named_runs, keys=tuple(SPLIT_COLUMNS)):
    return markdown_table(["model"] + [SPLIT_COLUMNS[key] for key in keys] + ["status"],
                          [[label] + [finals(runs, key) for key in keys] + [status_text(runs)]
                           for label, runs in named_runs])


def report_epochs(result):
    runs, control, prior = result["runs"], result.get("overfit_runs"), result["class_prior"]
    fig, axes = subplots(1, 2 + bool(control), figsize=(19 if control else 13, 4.5))
    plot_split_curves(axes[0], axes[1], runs, f"{len(epochs_axis(runs))} epochs, no batch norm")
    trend = epochs_finding(runs)
    findings = [plateau_finding(runs, prior["top_share"]), trend]
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
        named_runs.append((f"control ({control[0]['train_rows']:,} rows)", control))
    stuck, overfits = findings[0]["case"] == "one_class", findings[-1]["case"] == "control_overfits"
    parts = (["too few epochs leave the net at the class frequencies"] * stuck
             + [HEADLINE_TREND[trend["case"]].format(**trend)]
             + ["too many over-fit (a small-data control)"] * overfits)
    headline = "; ".join(parts)
    key = f"val loss {trend['val']:.3f} at epoch {trend['epochs']}" if "val" in trend else ""
    answer = Answer("6.1.2-2", "How does the number of epochs affect training: too many, too few?",
                    headline[:1].upper() + headline[1:] + ".",
                    [text for text in (render(EPOCHS_TEXT, f) for f in findings) if text], key)
    caption = "Whether the wide validation line still falls"
    if control:
        caption += "; right, the over-fitting control"
    table = split_table(named_runs, ("train_loss", "train_eval_loss", "val_loss", "test_loss", "val_acc"))
    return Report([table], {"epochs.png": (fig, caption)}, [answer])


QUESTION = Question("epochs", "6.1.2-2", "Training for longer (no batch norm)",
                    dict(SKELETON, batch_size=256, batch_norm=False, epochs=100, **OVERFIT), train_epochs,
                    report_epochs)
