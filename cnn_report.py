"""Section 7's reports, from a question's saved .json and .npz alone (`cnn.py --replot` runs only this):
nothing here trains, measures or reads the images. A finding function decides which case the numbers show
and returns it with its numbers ({'case': ..., ...}); only the templates in TEXT hold wording.
"""
import math
import textwrap

import numpy as np
from sklearn.metrics import roc_curve

from common import Answer, Report, markdown_table, plt, render, show_value

# Every number that decides a case, and why it has its value.
MIN_MARGIN = 0.05  # accuracies closer than this are the same on any test set: less is a handful of images
ONE_CLASS = 0.05  # under 5% of one true class right: (almost) every image is put in the other class
LOW_TRAIN_LOSS = 0.3  # nats: a mean training loss below this fitted the training batches (chance: ln 2)
LOW_TEST_ACC = 0.6  # below this test accuracy, after such a low training loss, a model fails in eval mode
LAST_STEPS = 5  # the training steps whose mean loss says where training ended
THRESHOLD = "\nAccuracy is at threshold P(fake) > 0.5; "
COLUMNS = {"test acc": "test_acc", "test AUROC": "test_auroc", "val acc": "val_acc",
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


# ----------------------------------------------------------------------------- reading models

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


def majority_rate(meta):
    return max(meta["images"]["test"].values()) / sum(meta["images"]["test"].values())


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
        rows.append([m["baseline"], lr_text(m), *(fmt(m.get(key)) for key in COLUMNS.values()),
                     fmt(m["train_seconds"], 1), status_text(m), notes(m)])
    header = ["model", "lr", *COLUMNS, "train time (s)", "status", "notes"]
    if numbered:
        header, rows = ["rank"] + header, [[i + 1] + row for i, row in enumerate(rows)]
    return markdown_table(header, rows) + "".join(f"\n**{line}.**\n" for line in not_run_reasons(models))


# ----------------------------------------------------------------------------- findings

def one_class_finding(models):
    """Which models put (almost) every test image in one class?"""
    one_sided = [model_name(m) for m in models if min(m["test_acc_real"], m["test_acc_fake"]) < ONE_CLASS]
    return dict(case="one_class" if one_sided else "none", models=one_sided)


def running_stats_finding(m):
    """Low training loss but low eval-mode test accuracy: do recomputed BatchNorm statistics recover it?"""
    last_loss = np.mean([v for v in m.get("train_loss", [])[-LAST_STEPS:] if v is not None] or [np.nan])
    numbers = dict(name=model_name(m), last_loss=last_loss, test_acc=m["test_acc"], steps=LAST_STEPS,
                   recomputed=m.get("test_acc_recomputed_bn"), batch_stats=m.get("test_acc_batch_stats"))
    if not (last_loss < LOW_TRAIN_LOSS and m["test_acc"] < LOW_TEST_ACC):
        return dict(numbers, case="not_applicable")
    if numbers["recomputed"] is None:
        return dict(numbers, case="fits_but_fails")
    recovered = numbers["recomputed"] > m["test_acc"] + same_accuracy_margin(len(m["test_prob"]))
    return dict(numbers, case="stale_statistics" if recovered else "not_the_statistics")


def bn_statistics_finding(baseline, runs):
    """Is a baseline's best accuracy with recomputed BatchNorm statistics above, level with or below its best
    in eval mode with the running statistics training left?"""
    top = max(runs, key=lambda m: m["test_acc_recomputed_bn"])
    recomputed, eval_best = top["test_acc_recomputed_bn"], max(m["test_acc"] for m in runs)
    margin = same_accuracy_margin(len(top["test_prob"]))
    case = ("recomputed_higher" if recomputed > eval_best + margin else
            "recomputed_lower" if recomputed < eval_best - margin else "same")
    return dict(case=case, baseline=baseline, eval_best=eval_best, lr=lr_text(top), recomputed=recomputed,
                margin=margin)


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


def summary_findings(models, ranked, majority):
    """7.6-1: the best and worst overall, then each baseline's best two and its trend over its lrs."""
    ok = [models[i] for i in ranked if models[i]["status"] == "ok"]
    if not ok:
        return [dict(case="no_model")]
    findings = [dict(case="overall", best=model_name(ok[0]), best_acc=ok[0]["test_acc"],
                     worst=model_name(ok[-1]), worst_acc=ok[-1]["test_acc"], majority=majority)]
    for baseline in dict.fromkeys(m["baseline"] for m in models):
        runs = [m for m in models if m["baseline"] == baseline]
        best_two = [(model_name(m), m["test_acc"]) for m in ok if m["baseline"] == baseline][:2]
        if best_two:
            findings.append(dict(case="baseline_best_two", baseline=baseline, best_two=best_two))
            findings += baseline_findings(runs, majority)[1:]
        else:
            findings.append(dict(case="baseline_did_not_run", baseline=baseline, status=runs[0]["status"],
                                 reason=runs[0]["reason"]))
    return findings


def mistakes_findings(result):
    """7.6-2: which images, chosen how, and whether the worst model calls them all one class."""
    models, chosen = result["models"], result["chosen"]
    if result["best"] is None:
        return [dict(case="nothing_to_compare")]
    best, worst = models[result["best"]], models[result["worst"]]
    truth = np.array([c == "fake" for c in result["test_classes"]])
    worst_fake = np.array(worst["test_prob"]) > 0.5
    candidates = int((((np.array(best["test_prob"]) > 0.5) == truth) & (worst_fake != truth)).sum())
    classes = [result["test_classes"][i] for i in chosen]
    findings = [dict(case="shown", best=model_name(best), worst=model_name(worst), candidates=candidates,
                     shown=len(chosen), real=classes.count("real"), fake=classes.count("fake"),
                     rule=result["rule"])]
    said = {bool(worst_fake[i]) for i in chosen}
    if len(said) == 1:
        fake = said.pop()
        findings.append(dict(case="worst_calls_all_one_class", said="fake" if fake else "real",
                             share=float(np.mean(worst_fake == fake))))
    return findings


RUNNING_STATS = ("{name}: mean training loss of the last {steps} steps {last_loss:.3f} (train mode), yet "
                 "test accuracy {test_acc:.3f} in eval mode")
RECOMPUTED = ("; {recomputed:.3f} once BatchNorm's running statistics are recomputed over the training "
              "images ({batch_stats:.3f} on each test batch's own statistics)")
BN_STATISTICS = ("{baseline}: best test accuracy {eval_best:.3f} in eval mode with the running statistics "
                 "training left, {recomputed:.3f} (lr {lr}) with the statistics recomputed over the training "
                 "images")
ONE_CLASS_RATE = "against {majority:.3f} for calling every image one class."


TEXT = {
    "none": None,
    "one_class": lambda f: f"{', '.join(f['models'])} put (almost) every test image in one class.",
    "not_applicable": None,
    "fits_but_fails": RUNNING_STATS + ".",
    "stale_statistics": RUNNING_STATS + RECOMPUTED + (": the weights learned the task, and what fails in "
                                                      "eval mode is stale running statistics."),
    "not_the_statistics": RUNNING_STATS + RECOMPUTED + (": the running statistics do not explain the low "
                                                        "accuracy."),
    "recomputed_higher": BN_STATISTICS + (": the network learned the task, and what fails in eval mode is "
                                          "BatchNorm's running statistics, which one short epoch leaves "
                                          "behind the weights."),
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
    "overall": "Best overall: {best} ({best_acc:.3f}); worst: {worst} ({worst_acc:.3f}), " + ONE_CLASS_RATE,
    "baseline_did_not_run": lambda f: f"Baseline {f['baseline']}: {f['status']}" + (
        f" ({f['reason']})." if f["reason"] else "."),
    "baseline_best_two": lambda f: f"Baseline {f['baseline']}: best " + ", ".join(
        f"{name} {acc:.3f}" for name, acc in f["best_two"]) + ".",
    "nothing_to_compare": "Fewer than two models ran: there is nothing to compare.",
    "shown": ("The best model, {best}, gets {candidates} test images right that the worst, {worst}, gets "
              "wrong; the figure shows {shown} of them ({real} real, {fake} fake): {rule}."),
    "worst_calls_all_one_class": "The worst model calls each of them {said}, as it calls {share:.0%} of all "
                                 "test images.",
}


def sentences(findings):
    return [text for text in (render(TEXT, f) for f in findings) if text]


# ----------------------------------------------------------------------------- reports

def finish(ax, **labels):
    ax.set(**labels)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    ax.grid(alpha=0.3)


def baseline_figure(result):
    """Training loss per step (torch baselines) and the test ROC curve of every model that ran."""
    name, settings = result["question"], result["settings"]
    torch_based = "lrs" in settings
    fig, axes = plt.subplots(1, 1 + torch_based, figsize=(7 + 6 * torch_based, 5), layout="constrained",
                             squeeze=False)
    loss_ax, roc_ax = axes[0, 0], axes[0, -1]
    y_test = [c == "fake" for c in result["test_classes"]]
    for i, m in enumerate(result["models"]):
        if torch_based and m.get("train_loss"):
            loss_ax.plot(range(1, len(m["train_loss"]) + 1), m["train_loss"], color=f"C{i}", marker=".",
                         label=f"lr {m['lr']:g} ({m['status']})")
        if m["status"] == "ok":
            fpr, tpr, _ = roc_curve(y_test, m["test_prob"])
            roc_ax.plot(fpr, tpr, color=f"C{i}", label=f"{model_name(m)}: AUROC {m['test_auroc']:.3f}")
    roc_ax.plot([0, 1], [0, 1], color="gray", linewidth=0.8, linestyle=":", label="chance")
    if torch_based:
        finish(loss_ax, xlabel=f"optimizer step (batch of {settings['batch_size']} images)", yscale="log",
               ylabel="training loss (binary cross-entropy, nats)", title=f"{name}: training loss per step")
    finish(roc_ax, xlabel="false positive rate (fraction of real test images called fake)",
           ylabel="true positive rate (fraction of fake test images called fake)", title=f"{name}: test ROC")
    return fig


def report_baseline(result):
    models = result["models"]
    ok = [m for m in models if m["status"] == "ok"]
    findings = [f"{model_name(m)} {status_text(m)}." for m in models if m["status"] == "diverged"]
    findings += [line + "." for line in not_run_reasons(models)]
    if ok:
        top = max(ok, key=lambda m: m["test_acc"])
        findings.append(f"best: {model_name(top)}, test accuracy {top['test_acc']:.3f} (AUROC "
                        f"{top['test_auroc']:.3f}; {top['test_acc_real']:.3f} of real and "
                        f"{top['test_acc_fake']:.3f} of fake test images classified correctly).")
        findings += sentences([one_class_finding(ok)] + [running_stats_finding(m) for m in ok])
    findings += [f"sklearn raised a ConvergenceWarning ({m['convergence_warning']}); the protocol keeps "
                 "LogisticRegression's defaults, so this is the model it fitted." for m in models
                 if m.get("convergence_warning")]
    answer = Answer(result["section"], f"{result['title']}: how well does it tell real from fake?",
                    sentences(baseline_findings(models, majority_rate(result["data"]))))
    ran = any(m["status"] != "not run" for m in models)
    note = ("the positive class is fake. Beyond the protocol (ResNets only): 'BN recomputed statistics' "
            "scores the trained network in eval mode after one pass over the training images recomputes "
            "every BatchNorm's running statistics with the final weights; 'BN test-batch statistics' "
            "normalizes each shuffled test batch of the training batch size by its own statistics.")
    return Report([results_table(models) + THRESHOLD + note],
                  {f"{result['question']}.png": baseline_figure(result)} if ran else {}, findings, [answer])


def summary_figure(result, majority):
    """Test accuracy by lr of each torch baseline; the others and the one-class rate as horizontal lines."""
    models = result["models"]
    fig, ax = plt.subplots(figsize=(9, 5.5), layout="constrained")
    for i, baseline in enumerate(b for b, info in result["baselines"].items() if "lrs" in info["settings"]):
        runs = [m for m in models if m["baseline"] == baseline]
        ok = [m for m in runs if m["status"] == "ok"]
        diverged = [m["lr"] for m in runs if m["status"] == "diverged"]
        if not ok and not diverged:
            ax.plot([], [], " ", label=f"{baseline}: not run")
            continue
        ax.plot([m["lr"] for m in ok], [m["test_acc"] for m in ok], marker="o", color=f"C{i}", label=baseline)
        recomputed = [m for m in ok if m.get("test_acc_recomputed_bn") is not None]
        if recomputed:
            ax.plot([m["lr"] for m in recomputed], [m["test_acc_recomputed_bn"] for m in recomputed],
                    marker="o", markerfacecolor="white", linestyle="--", color=f"C{i}",
                    label=f"{baseline}, BatchNorm statistics recomputed (beyond the protocol)")
        if diverged:
            ax.scatter(diverged, [0.03] * len(diverged), marker="x", color=f"C{i}",
                       transform=ax.get_xaxis_transform(), label=f"{baseline}: diverged (no accuracy)")
    for baseline, style, color in (("xgb", "--", "C3"), ("sklearn_probe", "-.", "C4")):
        m = next(m for m in models if m["baseline"] == baseline)
        if m["status"] == "ok":
            label = f"{baseline} (no lr): {m['test_acc']:.3f}"
            ax.axhline(m["test_acc"], linestyle=style, color=color, label=label)
        else:
            ax.plot([], [], " ", label=f"{baseline}: {m['status']}")
    label = f"one class for every image: {majority:.3f}"
    ax.axhline(majority, color="gray", linewidth=0.8, linestyle=":", label=label)
    image_size = next(iter(result["baselines"].values()))["settings"]["image_size"]
    finish(ax, xscale="log", xlabel="learning rate (Adam, log scale)",
           ylabel="test accuracy (fraction of real and fake test images correct)",
           title=f"Real vs fake: test accuracy by learning rate (image size {image_size})")
    lrs = [m["lr"] for m in models if m["lr"] is not None]
    if lrs:
        ax.set_xlim(min(lrs) / 2, max(lrs) * 2)
    if not_run_reasons(models):  # a caption under the figure
        fig.text(0, -0.02, "\n".join(textwrap.fill(line, 150) for line in not_run_reasons(models)), va="top",
                 fontsize=8)
    return fig


def report_summary(result):
    models, majority = result["models"], majority_rate(result["data"])
    ranked = [models[i] for i in result["ranking"]]
    ok = [m for m in ranked if m["status"] == "ok"]
    settings_rows, best_rows, findings = [], [], []
    for baseline, info in result["baselines"].items():
        settings = ", ".join(f"{k} {show_value(v)}" for k, v in info["settings"].items())
        settings_rows.append((baseline, settings, f"{info['wall_s']:.1f}"))
        runs = [m for m in ranked if m["baseline"] == baseline]
        top_two = [m for m in runs if m["status"] == "ok"][:2]
        best_rows += [[baseline, i + 1, lr_text(m), fmt(m["test_acc"]), status_text(m)]
                      for i, m in enumerate(top_two)]
        if not top_two:
            best_rows.append([baseline, "-", "-", "-", status_text(runs[0])])
    worst = f"{model_name(ok[-1])}, test accuracy {ok[-1]['test_acc']:.3f}" if ok else "no model ran"
    body = ["### The baselines, as each ran\n",
            markdown_table(["baseline", "settings", "wall time (s)"], settings_rows),
            "### Two best models of each baseline (by test accuracy)\n",
            markdown_table(["baseline", "place", "lr", "test acc", "status"], best_rows),
            f"\n**Worst overall:** {worst}.\n", "\n### Full ranking\n", results_table(ranked, numbered=True),
            THRESHOLD + "AUROC is sklearn's roc_auc_score of P(fake) on the test set.\n"]
    if ok:
        findings.append(f"best overall: {model_name(ok[0])}, test accuracy {ok[0]['test_acc']:.3f}; worst: "
                        f"{model_name(ok[-1])}, {ok[-1]['test_acc']:.3f}; a model that calls every image one "
                        f"class scores {majority:.3f}.")
    for baseline in result["baselines"]:
        runs = [m for m in ok if m["baseline"] == baseline and m.get("test_acc_recomputed_bn") is not None]
        if runs:
            findings += sentences([bn_statistics_finding(baseline, runs)])
    answer = Answer(result["section"], "The two best models of each baseline and the worst overall: why "
                    "these trends?", sentences(summary_findings(models, result["ranking"], majority)))
    return Report(body, {"summary.png": summary_figure(result, majority)}, findings, [answer])


def report_mistakes(result, n=5):
    models, chosen, classes = result["models"], result["chosen"], result["test_classes"]
    best = None if result["best"] is None else models[result["best"]]
    worst = None if result["worst"] is None else models[result["worst"]]

    def said(m, i):
        p = m["test_prob"][i]
        return f"{'fake' if p > 0.5 else 'real'} (p={max(p, 1 - p):.2f})"
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 4.6), layout="constrained")
    for ax in axes:
        ax.axis("off")
    for k, (ax, i) in enumerate(zip(axes, chosen)):
        ax.imshow(result["arrays"][f"image_{k}"])
        ax.set_title(f"true: {classes[i]}\nbest says {said(best, i)}\nworst says {said(worst, i)}",
                     fontsize=9)
    if best is None:
        headline = "fewer than two models with status ok: nothing to compare"
    else:
        headline = (f"Best model {model_name(best)} (test accuracy {best['test_acc']:.3f}), worst "
                    f"{model_name(worst)} ({worst['test_acc']:.3f}). Shown: {result['rule']}; p = "
                    "probability of the class said")
        if len(chosen) < n:
            headline += f"\nonly {len(chosen)} such test images exist, not {n}"
    fig.suptitle(textwrap.fill(headline, 130), fontsize=10)
    rows = [[result["test_paths"][i], classes[i], said(best, i), said(worst, i)] for i in chosen]
    table = markdown_table(["test image", "true class", "best model says", "worst model says"], rows)
    note = ("Images are shown as saved when the question ran (at most 256 pixels a side); predictions are "
            "the ones saved when each model was evaluated.")
    findings = [headline.replace("\n", "; ") + "."] + [line + "." for line in not_run_reasons(models)]
    answer = Answer(result["section"], "Five test images the best model classifies correctly and the worst "
                    "does not", sentences(mistakes_findings(result)))
    return Report([table, note], {"mistakes.png": fig}, findings, [answer])
