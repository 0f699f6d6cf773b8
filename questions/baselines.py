"""The report the five Section 7 baselines share (one table, a ROC and loss figure, the findings and their
words), and the reading of models that summary and mistakes use too.
"""
import math

import numpy as np
from sklearn.metrics import roc_curve

from plots import PALETTE, from_sentences, Report, markdown_table, plt, render

# Every number that decides a case, and why it has its value.
MIN_MARGIN = 0.05  # accuracies closer than this are the same on any test set: less is a handful of images
ONE_CLASS = 0.05  # under 5% of one true class right: (almost) every image is put in the other class
LOW_TRAIN_LOSS = 0.3  # nats: a mean training loss below this fitted the training batches (chance: ln 2)
LOW_TEST_ACC = 0.6  # below this test accuracy, after such a low training loss, a model fails in eval mode
LAST_STEPS = 5  # the training steps whose mean loss says where training ended
STALE_SHIFT = 0.5  # running means this many recomputed standard deviations off shift a channel's activations
#   across most of their range: stale; a healthy EMA of 38 batches sits within a few tenths
STALE_LOG_RATIO = math.log(2)  # running variances off by a factor of 2 or more in a layer: stale
THRESHOLD = "\nAccuracy is at threshold P(fake) > 0.5; "
COLUMNS = {"test AUROC": "test_auroc", "val acc": "val_acc",
           "test acc on real": "test_acc_real", "test acc on fake": "test_acc_fake",
           "test acc, BN recomputed statistics": "test_acc_recomputed_bn",
           "test acc, BN test-batch statistics": "test_acc_batch_stats"}


def same_accuracy_margin(n):
    """Accuracies on n test images closer than this are the same: two binomial standard errors at 0.5."""
    return max(MIN_MARGIN, 2 * math.sqrt(0.25 / n))


def learned(m, majority):
    """Did a model learn the task: is its test accuracy, in eval mode or with recomputed BatchNorm statistics,
    above the one-class rate by more than the noise of the test set?"""
    best_acc = max(m["test_acc"], m.get("test_acc_recomputed_bn") or 0)
    return best_acc > majority + same_accuracy_margin(len(m["test_prob"]))


def lr_text(m):
    return "-" if m["lr"] is None else m["lr"] if isinstance(m["lr"], str) else f"{m['lr']:g}"


def model_name(m):
    return m["baseline"] if m["lr"] is None else f"{m['baseline']} lr {lr_text(m)}"


def fmt(value, digits=3):
    return "-" if value is None else f"{value:.{digits}f}"


def status_text(m):
    return m["status"] if m["reason"] is None else f"{m['status']}: {m['reason']}"


def notes(m):
    parts = [f"ConvergenceWarning: {m['convergence_warning']}"] if m.get("convergence_warning") else []
    if m.get("feature_seconds") is not None:
        parts.append(f"+ {m['feature_seconds']:.1f} s feature extraction, shared with the other probe")
    return "; ".join(parts)


def test_shares(meta):
    """Each class's share of the test images."""
    counts = meta["images"]["test"]
    return [count / sum(counts.values()) for count in counts.values()]


def accuracy_text(m):
    """A test accuracy with its binomial standard error on the test images."""
    if m["test_acc"] is None:
        return "-"
    error = math.sqrt(m["test_acc"] * (1 - m["test_acc"]) / len(m["test_prob"]))
    return f"{m['test_acc']:.3f} ± {error:.3f}"


def not_run_reasons(models):
    """One line per reason: which baselines it stopped, and the fix."""
    reasons = {}
    for m in models:
        if m["status"] == "not run":
            reasons.setdefault((m["reason"], m.get("fix")), {})[m["baseline"]] = None
    return [f"{', '.join(baselines)} not run: {reason}" + (f". Fix: {fix}" if fix else "")
            for (reason, fix), baselines in reasons.items()]


def results_table(models, numbered=False):
    """A row per model, one per baseline for its not-run models (they share the reason), then the reasons."""
    rows, not_run = [], set()
    for m in models:
        if m["status"] == "not run":
            if m["baseline"] in not_run:
                continue
            not_run.add(m["baseline"])
            m = {**m, "lr": None if m["lr"] is None else "every lr"}
        rows.append([m["baseline"], lr_text(m), accuracy_text(m), *(fmt(m.get(k)) for k in COLUMNS.values()),
                     fmt(m["train_seconds"], 1), status_text(m), notes(m)])
    header = ["model", "lr", "test acc", *COLUMNS, "train time (s)", "status", "notes"]
    if numbered:
        header, rows = ["rank"] + header, [[i + 1] + row for i, row in enumerate(rows)]
    return markdown_table(header, rows) + "".join(f"\n**{line}.**\n" for line in not_run_reasons(models))


def one_class_finding(models):
    """Which models put (almost) every test image in one class?"""
    one_sided = [model_name(m) for m in models if min(m["test_acc_real"], m["test_acc_fake"]) < ONE_CLASS]
    return dict(case="one_class" if one_sided else "none", models=one_sided)


def running_stats_finding(m):
    """A model that fails in eval mode: does recomputing BatchNorm's statistics with its final weights recover
    it, and are the running statistics training left measurably far from the recomputed ones (stale)? A model
    without recomputed statistics, or not recovered, is reported only if it fitted its training batches."""
    last_loss = np.mean([v for v in m.get("train_loss", [])[-LAST_STEPS:] if v is not None] or [np.nan])
    numbers = dict(name=model_name(m), last_loss=last_loss, test_acc=m["test_acc"], steps=LAST_STEPS,
                   recomputed=m.get("test_acc_recomputed_bn"), batch_stats=m.get("test_acc_batch_stats"),
                   moved=m.get("weight_change"))
    fitted = last_loss < LOW_TRAIN_LOSS and m["test_acc"] < LOW_TEST_ACC
    if numbers["recomputed"] is None:
        return dict(numbers, case="fits_but_fails" if fitted else "not_applicable")
    if numbers["recomputed"] > m["test_acc"] + same_accuracy_margin(len(m["test_prob"])):
        return dict(numbers, **stale_finding(m))
    return dict(numbers, case="not_the_statistics" if fitted else "not_applicable")


def stale_finding(m):
    """How far a model's running BatchNorm statistics were from those recomputed with its final weights: the
    layer whose means are furthest off (in recomputed standard deviations), the one whose variances are."""
    distance = m["bn_statistics_distance"]
    shift_layer = int(np.argmax(distance["mean_shift"]))
    ratio_layer = int(np.argmax(distance["log_var_ratio"]))
    shift, log_ratio = distance["mean_shift"][shift_layer], distance["log_var_ratio"][ratio_layer]
    stale = shift > STALE_SHIFT or log_ratio > STALE_LOG_RATIO
    return dict(case="stale_statistics" if stale else "statistics_close", shift=shift,
                shift_layer=shift_layer, factor=math.exp(log_ratio), ratio_layer=ratio_layer,
                layers=len(distance["mean_shift"]))


def baseline_findings(models, majority):
    """7.4: what a baseline reached and, over its lrs, which learned and which did not."""
    if all(m["status"] == "not run" for m in models):
        return [dict(case="not_run", reason=models[0]["reason"], fix=models[0].get("fix"))]
    ok = [m for m in models if m["status"] == "ok"]
    diverged = [lr_text(m) for m in models if m["status"] == "diverged"]
    if not ok:
        return [dict(case="every_lr_diverged", lrs=diverged)]
    top = max(ok, key=lambda m: m["test_acc"])
    findings = [dict(case="best", name=model_name(top), acc=top["test_acc"], auroc=top["test_auroc"],
                     majority=majority)]
    if top["lr"] is None:
        return findings + [dict(case="signal" if learned(top, majority) else "chance")]
    good = [m for m in ok if learned(m, majority)]
    bad = [m for m in ok if not learned(m, majority)]
    if good:
        stale = [(lr_text(m), m["test_acc_recomputed_bn"], m["test_acc"]) for m in good
                 if m["test_acc"] <= majority + same_accuracy_margin(len(m["test_prob"]))]
        findings.append(dict(case="learned", lrs=[lr_text(m) for m in good], stale=stale))
    if bad:
        larger = bool(good) and min(m["lr"] for m in bad) > max(m["lr"] for m in good)
        findings.append(dict(case="did_not_learn_larger" if larger else "did_not_learn",
                             lrs=[lr_text(m) for m in bad]))
    if diverged:
        findings.append(dict(case="diverged", lrs=diverged))
    return findings


RUNNING_STATS = ("{name}: mean training loss of the last {steps} steps {last_loss:.3f} (train mode), yet "
                 "test accuracy {test_acc:.3f} in eval mode")
RECOMPUTED = ("; {recomputed:.3f} once BatchNorm's running statistics are recomputed over the training "
              "images ({batch_stats:.3f} on each test batch's own statistics)")
RECOVERED = ("{name}: test accuracy {test_acc:.3f} in eval mode, {recomputed:.3f} once BatchNorm's running "
             "statistics are recomputed over the training images ({batch_stats:.3f} on each test batch's own "
             "statistics; mean training loss of the last {steps} steps {last_loss:.3f})")
BN_STATISTICS = ("{baseline}: best test accuracy {eval_best:.3f} in eval mode with the running statistics "
                 "training left, {recomputed:.3f} (lr {lr}) with the statistics recomputed over the training "
                 "images")
ONE_CLASS_RATE = "against {majority:.3f} for calling every image one class."
TEXT = {
    "none": None,
    "one_class": lambda f: f"{', '.join(f['models'])} put (almost) every test image in one class.",
    "not_applicable": None,
    "fits_but_fails": RUNNING_STATS + ".",
    "stale_statistics": RECOVERED + (": the weights learned the task, and the running statistics training "
                                     "left are stale: the variances of BatchNorm layer {ratio_layer} (of "
                                     "{layers}) sit a factor {factor:.2f} off the recomputed ones on "
                                     "average, the means of layer {shift_layer} {shift:.2f} standard "
                                     "deviations off, while training moved the weights by {moved:.2%} of "
                                     "their norm."),
    "statistics_close": RECOVERED + (", though the running statistics are close to the recomputed ones (at "
                                     "most a factor {factor:.2f} in one layer's variances, {shift:.2f} "
                                     "standard deviations in its means): this measure does not show what "
                                     "recomputing changes."),
    "not_the_statistics": RUNNING_STATS + RECOMPUTED + (": the running statistics do not explain the low "
                                                        "accuracy."),
    "recomputed_higher": BN_STATISTICS + (": the network learned the task, and what fails in eval mode is "
                                          "BatchNorm's running statistics (measured per model in the "
                                          "findings of its baseline)."),
    "recomputed_lower": BN_STATISTICS + (": recomputed statistics score lower, so the running statistics are "
                                         "not what holds it back."),
    "same": BN_STATISTICS + ": within {margin:.3f}, so the running statistics are not what holds it back.",
    "not_run": lambda f: f"Not run: {f['reason']}" + (f". Fix: {f['fix']}." if f["fix"] else "."),
    "every_lr_diverged": lambda f: f"Every lr diverged ({', '.join(f['lrs'])}).",
    "best": "Best: {name}, test accuracy {acc:.3f} (AUROC {auroc:.3f}), " + ONE_CLASS_RATE,
    "signal": "It finds a real-vs-fake signal in its inputs.",
    "chance": "That is chance: it finds no real-vs-fake signal in its inputs.",
    "learned": lambda f: f"Learned: lr {', '.join(f['lrs'])}" + (
        f"; of them, {len(f['stale'])} only show it once BatchNorm's statistics are recomputed ("
        + ", ".join(f"lr {lr}: {recomputed:.3f} against {acc:.3f}" for lr, recomputed, acc in f["stale"])
        + " in eval mode with the running statistics training left)" if f["stale"] else "") + ".",
    "did_not_learn": lambda f: f"Did not learn: lr {', '.join(f['lrs'])}.",
    "did_not_learn_larger": lambda f: (f"Did not learn: lr {', '.join(f['lrs'])}, all larger than every lr "
                                       "that learned: steps that big wreck the weights in one epoch."),
    "diverged": lambda f: f"Diverged: lr {', '.join(f['lrs'])}.",
    "no_model": "No model ran.",
    "stand_in": "(On the generated stand-in: a pipeline check, not a finding about real and fake images.)",
    "pipeline_check": ("On the generated stand-in this is a pipeline check, not a finding about real and "
                       "fake images: its builder set the fakes' upsampling trace so that XGBoost scores "
                       "between 0.6 and 0.9, and real and fake images are crops of the same three "
                       "photographs, so only that trace separates them; which baseline wins is a property of "
                       "the stand-in."),
    "overall": ("Best overall: {best} ({best_acc:.3f}; an accuracy on {n} test images carries a standard "
                "error of about ±{se:.3f})."),
    "worst": "Worst: {last} ({acc:.3f}), " + ONE_CLASS_RATE,
    "worst_tie": lambda f: (f"Worst: a tie at {f['acc']:.3f} between {', '.join(f['names'])}, against "
                            f"{f['majority']:.3f} for calling every image one class; the ranking puts "
                            f"{f['last']} last (ties go by baseline, then by lr), and the mistakes take it "
                            "as the worst."),
    "baseline_at_chance": ("Baseline {baseline}: no model beats chance in eval mode by two standard errors "
                           "(its best, {name}, {acc:.3f}), so it has no best two."),
    "baseline_did_not_run": lambda f: f"Baseline {f['baseline']}: {f['status']}" + (
        f" ({f['reason']})." if f["reason"] else "."),
    "baseline_best_two": lambda f: f"Baseline {f['baseline']}: best " + ", ".join(
        f"{name} {acc:.3f}" for name, acc in f["best_two"]) + ".",
    "nothing_to_compare": "Fewer than two models ran: there is nothing to compare.",
    "shown": ("The best model, {best}, gets {candidates} test images right that the worst, {worst}, gets "
              "wrong; the figure shows {shown} of them ({real} real, {fake} fake): {rule}."),
    "worst_calls_all_one_class": "The worst model calls each of them {said}, as it calls {share:.0%} of all "
                                 "test images.",
    "worst_one_class": lambda f: (
        f"The worst model, {f['worst']}, calls {f['share']:.0%} of the test images {f['said']}, so "
        f"{'every' if f['share'] == 1 else 'nearly every'} image it gets wrong is {f['wrong']}: the figure "
        f"shows {f['wrong']} images."),
    "shown_one_class": ("The best model, {best}, gets {candidates} of those right; the figure shows {shown}, "
                        "the worst's most confident mistakes first."),
}


def sentences(findings):
    return [text for text in (render(TEXT, f) for f in findings) if text]


def finish(ax, **labels):
    ax.set(**labels)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    ax.grid(alpha=0.3)


def baseline_figure(result):
    """Training loss per step (torch baselines) and the test ROC of every model that ran: in eval mode, and
    (dashed) with BatchNorm's statistics recomputed where they were."""
    name, settings = result["question"], result["settings"]
    torch_based = "lrs" in settings
    fig, axes = plt.subplots(1, 1 + torch_based, figsize=(7 + 6.5 * torch_based, 5.5), layout="constrained",
                             squeeze=False)
    loss_ax, roc_ax = axes[0, 0], axes[0, -1]
    y_test = [c == "fake" for c in result["test_classes"]]
    for color, m in zip(PALETTE, result["models"]):
        if torch_based and m.get("train_loss"):
            loss_ax.plot(range(1, len(m["train_loss"]) + 1), m["train_loss"], color=color, marker=".",
                         label=f"lr {m['lr']:g} ({m['status']})")
        if m["status"] == "ok":
            fpr, tpr, _ = roc_curve(y_test, m["test_prob"])
            roc_ax.plot(fpr, tpr, color=color, label=f"{model_name(m)}: AUROC {m['test_auroc']:.3f}")
        if m.get("test_prob_recomputed_bn"):
            fpr, tpr, _ = roc_curve(y_test, m["test_prob_recomputed_bn"])
            roc_ax.plot(fpr, tpr, color=color, linestyle="--",
                        label=f"{model_name(m)}, BN recomputed: AUROC {m['test_auroc_recomputed_bn']:.3f}")
    roc_ax.plot([0, 1], [0, 1], color="gray", linewidth=0.8, linestyle=":", label="chance")
    if torch_based:
        finish(loss_ax, xlabel=f"optimizer step (batch of {settings['batch_size']} images)", yscale="log",
               ylabel="training loss (binary cross-entropy, nats)", title=f"{name}: training loss per step")
    finish(roc_ax, xlabel="false positive rate (fraction of real test images called fake)",
           ylabel="true positive rate (fraction of fake test images called fake)", title=f"{name}: test ROC")
    return fig


def report_baseline(result):
    models, shares = result["models"], test_shares(result["data"])
    ok = [m for m in models if m["status"] == "ok"]
    findings = [f"{model_name(m)} {status_text(m)}." for m in models if m["status"] == "diverged"]
    if ok:
        findings += sentences([one_class_finding(ok)] + [running_stats_finding(m) for m in ok])
    findings += [f"sklearn raised a ConvergenceWarning ({m['convergence_warning']}); the protocol keeps "
                 "LogisticRegression's defaults, so this is the model it fitted." for m in models
                 if m.get("convergence_warning")]
    check = [dict(case="stand_in")] if result["data"].get("demo") else []
    answer = from_sentences(result["section"], f"{result['title']}: how well does it tell real from fake?",
                    sentences(baseline_findings(models, max(shares)) + check))
    note = ("the positive class is fake; ± is the binomial standard error of an accuracy on the test "
            "images. Beyond the protocol (ResNets only): 'BN recomputed statistics' scores the trained "
            "network in eval mode after one pass over the training images recomputes every BatchNorm's "
            "running statistics with the final weights; 'BN test-batch statistics' normalizes each "
            "shuffled test batch of the training batch size by its own statistics.")
    caption = ("Left: each lr's training loss per step; right: each model's test ROC, solid in eval mode, "
               "dashed with BatchNorm's statistics recomputed: how far above the chance diagonal each lies.")
    figures = {f"{result['question']}.png": (baseline_figure(result), caption)} if any(
        m["status"] != "not run" for m in models) else {}
    return Report([results_table(models) + THRESHOLD + note], figures, findings, [answer])
