"""6.1.2-2 epochs: 100 epochs of the plain net, and an over-fitting control on a few rows of every class."""
import numpy as np
import torch
import torch.nn.functional as F

from plots import SPLITS, Answer, Report, finish, markdown_table, plot_mean_band, plot_split_curves, subplots
from runner import Question
from section6 import SKELETON, arch_of, batch_major, class_prior_entropy, seed_runs, train_group
from stats import (FALL_WIGGLES, GAP_TOLERANCE, as_array, epochs_axis, falling_finding, finals, mean_final,
                   status_text)


def output_summary(model, X):
    """The share of the rows of X given the class the nets predict most (eval mode); [] or [K] if stacked."""
    logits = batch_major(model, X)
    predicted = F.one_hot(logits.argmax(-1), logits.shape[-1])
    return {"val_mode_share": predicted.sum(-2).amax(-1) / predicted.shape[-2]}


def train_epochs(settings, data, reads, env, batch_norm=None):
    """100 epochs; beyond the protocol, the validation share of the most predicted class after every epoch,
    and, for the plain net, the over-fitting control."""
    arch = arch_of(settings) if batch_norm is None else arch_of(settings, batch_norm=batch_norm)
    desc = f"{settings['epochs']} epochs" + ", batch norm" * arch["batch_norm"]
    results, _ = train_group(data, seed_runs(settings, settings["lr"]), arch, settings, env, desc,
                             eval_train=True, epoch_measure=output_summary)
    n_classes, y = data["meta"]["n_classes"], data["train"][1].cpu()
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


ONE_CLASS = 0.9  # a net giving 90% of the points one class predicts one class; the top class holds 17%
SMOOTHING = 0.05  # moving medians over 5% of the control's epochs: on 3 rows a class its losses spike 10x
RISE = 0.1  # nats: a smoothed loss's rise from its lowest to the end called a turn; medians wander by 0.0x


def plateau_finding(runs, top_share):
    """The epochs where validation accuracy is the top class's share, and the share given one class."""
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
    """Does the control's smoothed validation loss rise by RISE, its training loss falling, in every seed?"""
    ok = [r for r in runs if r["status"] == "ok"]
    epochs = len(epochs_axis(ok)) if ok else 0
    window = max(1, round(SMOOTHING * epochs))
    if epochs < 3 * window or epochs < 3:
        return dict(case="control_too_short", window=window)
    seeds = []
    for r in ok:
        val, train = (moving_median(r["history"][key], window) for key in ("val_loss", "train_eval_loss"))
        low = window + int(np.nanargmin(val[window:]))
        seeds.append(dict(epoch=low + 1, val_low=float(val[low]), val_end=float(val[-1]),
                          train_low=float(train[low]), train_end=float(train[-1])))
    turns = all(s["val_end"] - s["val_low"] > RISE and s["train_end"] < s["train_low"] for s in seeds)
    return dict(case="control_overfits" if turns else "control_does_not", seeds=seeds, window=window,
                lows=spread([s["epoch"] for s in seeds], "{}"),
                rises=spread([s["val_end"] - s["val_low"] for s in seeds], "{:.2f}"))


def spread(values, form):
    """The lowest and highest of values (one per seed), or the one value."""
    low, high = form.format(min(values)), form.format(max(values))
    return low if low == high else f"{low}-{high}"


def split_table(named_runs, keys):
    """A row per (label, runs): each key's final value, mean ± std over seeds, and the runs' status."""
    header = ["model"] + [key.replace("_eval", " (eval mode)").replace("_", " ") for key in keys] + ["status"]
    return markdown_table(header, [[label] + [finals(runs, key) for key in keys] + [status_text(runs)]
                                   for label, runs in named_runs])


PLATEAU_TEXT = ("At epochs {first}-{last} validation accuracy is the top class's share ({top_share:.3f}): "
                "the net gives {share:.0%} of points one class.")
TREND_TEXT = ("By epoch {epochs} the validation loss is {case}: its line over the last {window} epochs moves "
              "{change:+.3f}, {wiggle_share:.1f} times the epochs' wiggle about it (a trend needs "
              f"{FALL_WIGGLES}).")
CONTROL_TEXT = ("A control on {rows:,} rows ({per_class} per class): its validation loss (moving median of "
                "{window} epochs) bottoms out at epochs {lows}, then ends {rises} nats higher (a turn: "
                f"{RISE} in every seed, its training loss still falling).")
HEADLINE_TREND = {"falling": "{epochs} epochs are still too few", "flat": "{epochs} epochs reach a plateau",
                  "rising": "{epochs} epochs are too many", "too_short": "too few epochs ran to tell",
                  "diverged": "every run diverged"}
HEADLINE_CONTROL = {"control_overfits": "too many over-fit (a small-data control)",
                    "control_does_not": "a small-data control does not over-fit", "control_too_short": None}


def report_epochs(result):
    runs, control = result["runs"], result.get("overfit_runs")
    ok, epochs = [r for r in runs if r["status"] == "ok"], len(epochs_axis(runs))
    trend = dict(falling_finding([r["history"]["val_loss"] for r in ok]) if ok else dict(case="diverged"),
                 epochs=epochs)
    plateau = plateau_finding(runs, result["class_prior"]["top_share"])
    parts = ["too few epochs leave the net at the class frequencies"] * (plateau["case"] == "one_class")
    parts.append(HEADLINE_TREND[trend["case"]].format(epochs=epochs))
    bullets = [PLATEAU_TEXT.format(**plateau)] if plateau["case"] != "no_plateau" else []
    bullets += [TREND_TEXT.format(**trend)] if "change" in trend else []
    fig, axes = subplots(1, 2 + bool(control), figsize=(19 if control else 13, 4.5))
    plot_split_curves(axes[0], axes[1], runs, f"{epochs} epochs, no batch norm")
    named_runs = [("no batch norm", runs)]
    if control:
        found, rows = overfit_finding(control), control[0]["train_rows"]
        for key, label, color, width in (("val_loss", "validation", SPLITS[0][2], 3),
                                         ("train_eval_loss", "train (eval mode)", SPLITS[3][2], 1.6)):
            plot_mean_band(axes[2], epochs_axis(control), [moving_median(r["history"][key], found["window"])
                                                           for r in control], color=color, linewidth=width,
                           label=f"{label}, moving median of {found['window']} epochs")
        finish(axes[2], "epoch", "loss (cross-entropy, nats)", f"over-fitting control, {rows:,} rows: loss "
               "(band: min..max over seeds)", fontsize=8)
        parts.append(HEADLINE_CONTROL[found["case"]])
        if "seeds" in found:
            bullets.append(CONTROL_TEXT.format(**found, rows=rows, per_class=control[0]["rows_per_class"]))
        named_runs.append((f"control ({rows:,} rows)", control))
    headline = "; ".join(part for part in parts if part)
    key = f"val loss {mean_final(ok, 'val_loss'):.3f} at epoch {epochs}" if ok else ""
    answer = Answer("6.1.2-2", "How does the number of epochs affect training: too many, too few?",
                    headline[:1].upper() + headline[1:] + ".", bullets, key)
    caption = "Whether the wide validation line still falls" + "; right, the control" * bool(control)
    table = split_table(named_runs, ("train_loss", "train_eval_loss", "val_loss", "test_loss", "val_acc"))
    return Report([table], {"epochs.png": (fig, caption)}, [answer])


QUESTION = Question("epochs", "6.1.2-2", "Training for longer (no batch norm)",
                    dict(SKELETON, batch_size=256, batch_norm=False, epochs=100, **OVERFIT), train_epochs,
                    report_epochs)
