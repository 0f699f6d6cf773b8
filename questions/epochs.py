"""6.1.2-2 epochs: 100 epochs of the plain net, and an over-fitting control on a few rows of every class."""
import numpy as np
import torch

from plots import SPLITS, Answer, Report, finish, markdown_table, plot_mean_band, plot_split_curves, subplots
from runner import Question
from section6 import SKELETON, arch_of, seed_runs, train_group
from stats import FALL_WIGGLES, as_array, epochs_axis, falling_finding, finals, mean_final, status_text

SMOOTHING = 0.05  # moving medians over 5% of the control's epochs: on 3 rows a class its losses spike 10x
RISE = 0.1  # nats: a smoothed loss's rise from its lowest to the end called a turn; medians wander by 0.0x


def train_epochs(settings, data, reads, env, batch_norm=None):
    """100 epochs; beyond the protocol, for the plain net, the over-fitting control."""
    arch = arch_of(settings) if batch_norm is None else arch_of(settings, batch_norm=batch_norm)
    desc = f"{settings['epochs']} epochs" + ", batch norm" * arch["batch_norm"]
    results, _ = train_group(data, seed_runs(settings, settings["lr"]), arch, settings, env, desc,
                             eval_train=True)
    y = data["train"][1]
    result = {"runs": results, "class_prior": {"top_share": float(torch.bincount(y).max() / len(y))}}
    if batch_norm is None and settings["overfit_per_class"]:
        result["overfit_runs"] = overfit_control(settings, data, env)
    return result


def overfit_control(settings, data, env):
    """Beyond the protocol: the plain net at overfit_* on overfit_per_class rows of each class (all seen)."""
    y = data["train"][1].cpu()
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(settings["seed"]))
    firsts = [order[y[order] == label][:settings["overfit_per_class"]] for label in y.unique()]
    rows = torch.cat(firsts).sort().values.to(data["train"][1].device)
    subset = {**data, "train": tuple(t[rows] for t in data["train"])}
    arch = arch_of(settings, width=settings["overfit_width"], batch_norm=False,
                   features=settings["overfit_features"])
    results, _ = train_group(subset, seed_runs(settings, settings["overfit_lr"]), arch, settings, env,
                             f"over-fitting control, {len(rows)} rows", settings["overfit_epochs"],
                             settings["overfit_batch_size"], eval_train=True)
    return [{**result, "train_rows": len(rows)} for result in results]


def moving_median(values, window):
    """The median of each value's centred window of `window` values (fewer at the ends); None left out."""
    values, half = as_array(values), window // 2
    return np.array([np.nanmedian(values[max(0, i - half):i + half + 1]) for i in range(len(values))])


def overfit_finding(runs):
    """Does the control's smoothed validation loss rise by RISE, its training loss falling, in every seed?"""
    ok = [r for r in runs if r["status"] == "ok"]
    epochs = len(epochs_axis(ok)) if ok else 0
    window = max(1, round(SMOOTHING * epochs))
    if epochs < 3 * window:
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


TREND_TEXT = ("By epoch {epochs} the validation loss is {case}: its last {window} epochs' line moves "
              f"{{change:+.3f}}, {{wiggle_share:.1f}} times their scatter (a trend needs {FALL_WIGGLES}).")
CONTROL_TEXT = ("A control on {rows:,} rows: its validation loss (median of {window} epochs) is lowest at "
                f"epochs {{lows}}, ends {{rises}} nats higher (a turn: {RISE} in each seed, train lower).")
HEADLINE_TREND = {"falling": "{epochs} epochs are still too few", "flat": "{epochs} epochs reach a plateau",
                  "rising": "{epochs} epochs are too many", "too_short": "too few epochs ran to tell",
                  "diverged": "every run diverged"}


def report_epochs(result):
    runs, control = result["runs"], result.get("overfit_runs")
    ok, epochs = [r for r in runs if r["status"] == "ok"], len(epochs_axis(runs))
    parts, bullets = [], []
    for end in (epochs // 2, epochs):  # half of them (the exercise's 50): too few? then all 100
        trend = falling_finding([r["history"]["val_loss"][:end] for r in ok]) if ok else dict(case="diverged")
        parts.append(HEADLINE_TREND[trend["case"]].format(epochs=end))
        bullets += [TREND_TEXT.format(**trend, epochs=end)] if "change" in trend else []
    fig, axes = subplots(1, 2 + bool(control), figsize=(19 if control else 13, 4.5))
    plot_split_curves(axes[0], axes[1], runs, f"{epochs} epochs, no batch norm")
    named_runs = [("no batch norm", runs)]
    if control:
        found, rows = overfit_finding(control), control[0]["train_rows"]
        for split, label, color, _, width in (SPLITS[0], SPLITS[3]):
            smoothed = [moving_median(r["history"][f"{split}_loss"], found["window"]) for r in control]
            plot_mean_band(axes[2], epochs_axis(control), smoothed, f"{label}, moving median of "
                           f"{found['window']} epochs", color=color, linewidth=width)
        finish(axes[2], "epoch", "loss (cross-entropy, nats)", f"over-fitting control, {rows:,} rows: loss "
               "(band: min..max over seeds)", fontsize=8)
        if "seeds" in found:
            verb = "over-fit" if found["case"] == "control_overfits" else "do not over-fit"
            parts.append(f"{len(epochs_axis(control))} epochs {verb} a small-data control")
            bullets.append(CONTROL_TEXT.format(**found, rows=rows))
        named_runs.append((f"control ({rows:,} rows)", control))
    headline = "; ".join(dict.fromkeys(parts))  # once each
    key = f"val loss {mean_final(ok, 'val_loss'):.3f} at epoch {epochs}" if ok else ""
    answer = Answer("6.1.2-2", "How does the number of epochs affect training: too many, too few?",
                    headline[:1].upper() + headline[1:] + ".", bullets, key)
    caption = "Whether the wide validation line still falls" + "; right, the control" * bool(control)
    keys = ("train_loss", "train_eval_loss", "val_loss", "test_loss", "val_acc")
    header = ["model", "train loss", "train (eval mode) loss", "val loss", "test loss", "val acc", "status"]
    table = markdown_table(header, [[label] + [finals(runs, key) for key in keys] + [status_text(runs)]
                                    for label, runs in named_runs])
    return Report([table], {"epochs.png": (fig, caption)}, [answer])


QUESTION = Question("epochs", "6.1.2-2", "Training for longer (no batch norm)",  # overfit_*: README explains
                    dict(SKELETON, batch_size=256, batch_norm=False, epochs=100, overfit_per_class=3,
                         overfit_features="standardized", overfit_width=32, overfit_lr=0.03,
                         overfit_batch_size=8, overfit_epochs=800), train_epochs, report_epochs)
