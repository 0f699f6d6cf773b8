"""Section 7's reports: from a question's saved .json and .npz alone, its figures, tables, findings and the answers to
the exercise. Nothing here trains, measures or reads the images; `python cnn.py --question all --replot` runs only
this.

A finding function decides which case the numbers show and returns it with its numbers ({'case': ..., ...}); the
templates beside it (and only they) hold the wording, so rewording touches no test.
"""
import math
import textwrap

import numpy as np
from sklearn.metrics import roc_curve

from common import Answer, Report, markdown_table, plt, render, show_value

# ----------------------------------------------------------------------------- thresholds
# Every number that decides a case, and why it has its value.
MIN_MARGIN = 0.05  # accuracy: two accuracies closer than this count as the same, however many test images: below it
#   a difference is a handful of images even on the course's 400
ONE_CLASS = 0.05  # a model that gets less than 5% of one true class right puts (almost) every image in the other
LOW_TRAIN_LOSS = 0.3  # nats: a mean training loss below this over the last steps fitted the training batches (a
#   model that learned nothing sits near ln 2 = 0.69)
LOW_TEST_ACC = 0.6  # a test accuracy below this, after such a low training loss, is a model that fails in eval mode
LAST_STEPS = 5  # the training steps whose mean loss says where training ended


def same_accuracy_margin(n):
    """Two accuracies on n test images closer than this count as the same: two binomial standard errors at 0.5, and
    at least MIN_MARGIN."""
    return max(MIN_MARGIN, 2 * math.sqrt(0.25 / n))


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


def collapse_not_run(models):
    """The models, with one row per baseline for its not-run models (they share the reason)."""
    rows, seen = [], set()
    for m in models:
        if m["status"] != "not run":
            rows.append(m)
        elif m["baseline"] not in seen:
            seen.add(m["baseline"])
            rows.append({**m, "lr": None if m["lr"] is None else "every lr"})
    return rows


def not_run_reasons(models):
    """One line per reason: which baselines it stopped, and the fix."""
    reasons = {}
    for m in models:
        if m["status"] == "not run":
            reasons.setdefault((m["reason"], m.get("fix")), {})[m["baseline"]] = None
    return [f"{', '.join(baselines)} not run: {reason}" + (f". Fix: {fix}" if fix else "")
            for (reason, fix), baselines in reasons.items()]


def results_table(models, numbered=False):
    header = ["model", "lr", "test acc", "test AUROC", "val acc", "test acc on real", "test acc on fake",
              "test acc, BN recomputed statistics", "test acc, BN test-batch statistics", "train time (s)", "status",
              "notes"]
    rows = [[m["baseline"], lr_text(m), fmt(m["test_acc"]), fmt(m["test_auroc"]),
             fmt(m["val_acc"]), fmt(m["test_acc_real"]), fmt(m["test_acc_fake"]), fmt(m.get("test_acc_recomputed_bn")),
             fmt(m.get("test_acc_batch_stats")), fmt(m["train_seconds"], 1), status_text(m), notes(m)]
            for m in collapse_not_run(models)]
    if numbered:
        header, rows = ["rank"] + header, [[i + 1] + row for i, row in enumerate(rows)]
    return markdown_table(header, rows) + "".join(f"\n**{line}.**\n" for line in not_run_reasons(models))


# ----------------------------------------------------------------------------- findings

def one_class_finding(models):
    """Which models put (almost) every test image in one class?"""
    one_sided = [model_name(m) for m in models if min(m["test_acc_real"], m["test_acc_fake"]) < ONE_CLASS]
    return dict(case="one_class" if one_sided else "none", models=one_sided)


def running_stats_finding(m):
    """A model whose training loss ended low but whose test accuracy in eval mode is low: does recomputing BatchNorm's
    running statistics with its final weights recover it (so stale running statistics are what fails), or not?"""
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
    """Across a baseline's lrs: is its best accuracy with recomputed BatchNorm statistics above, about equal to, or
    below its best accuracy in eval mode with the running statistics training left?"""
    top = max(runs, key=lambda m: m["test_acc_recomputed_bn"])
    numbers = dict(baseline=baseline, eval_best=max(m["test_acc"] for m in runs), lr=lr_text(top),
                   recomputed=top["test_acc_recomputed_bn"], margin=same_accuracy_margin(len(top["test_prob"])))
    case = ("recomputed_higher" if numbers["recomputed"] > numbers["eval_best"] + numbers["margin"] else
            "recomputed_lower" if numbers["recomputed"] < numbers["eval_best"] - numbers["margin"] else "same")
    return dict(numbers, case=case)


def learned(m, majority):
    """Did a model learn the task: is its test accuracy, in eval mode or with recomputed BatchNorm statistics, above
    the one-class rate by more than the noise of the test set?"""
    best_acc = max(m["test_acc"], m.get("test_acc_recomputed_bn") or 0)
    return best_acc > majority + same_accuracy_margin(len(m["test_prob"]))


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
    findings = [dict(case="overall", best=model_name(ok[0]), best_acc=ok[0]["test_acc"], worst=model_name(ok[-1]),
                     worst_acc=ok[-1]["test_acc"], majority=majority)]
    for baseline in dict.fromkeys(m["baseline"] for m in models):
        runs = [m for m in models if m["baseline"] == baseline]
        best_two = [(model_name(m), m["test_acc"]) for m in ok if m["baseline"] == baseline][:2]
        if not best_two:
            findings.append(dict(case="baseline_did_not_run", baseline=baseline, status=runs[0]["status"],
                                 reason=runs[0]["reason"]))
            continue
        findings.append(dict(case="baseline_best_two", baseline=baseline, best_two=best_two))
        findings += baseline_findings(runs, majority)[1:]
    return findings


def mistakes_findings(result):
    """7.6-2: which images, chosen how, and whether the worst model calls them all one class."""
    models, chosen = result["models"], result["chosen"]
    if result["best"] is None:
        return [dict(case="nothing_to_compare")]
    best, worst = models[result["best"]], models[result["worst"]]
    truth = np.array([c == "fake" for c in result["test_classes"]])
    right = (np.array(best["test_prob"]) > 0.5) == truth
    wrong = (np.array(worst["test_prob"]) > 0.5) != truth
    classes = [result["test_classes"][i] for i in chosen]
    findings = [dict(case="shown", best=model_name(best), worst=model_name(worst), candidates=int((right & wrong).sum()),
                     shown=len(chosen), real=classes.count("real"), fake=classes.count("fake"), rule=result["rule"])]
    said = [("fake" if worst["test_prob"][i] > 0.5 else "real") for i in chosen]
    if chosen and len(set(said)) == 1:
        share = float(np.mean((np.array(worst["test_prob"]) > 0.5) == (said[0] == "fake")))
        findings.append(dict(case="worst_calls_all_one_class", said=said[0], share=share))
    return findings


RUNNING_STATS = ("{name}: mean training loss of the last {steps} steps {last_loss:.3f} (train mode), yet test accuracy "
                 "{test_acc:.3f} in eval mode")
RECOMPUTED = ("; {recomputed:.3f} once BatchNorm's running statistics are recomputed over the training images "
              "({batch_stats:.3f} on each test batch's own statistics)")
BN_STATISTICS = ("{baseline}: best test accuracy {eval_best:.3f} in eval mode with the running statistics training "
                 "left, {recomputed:.3f} (lr {lr}) with the statistics recomputed over the training images")
TEXT = {
    "none": None,
    "one_class": lambda f: f"{', '.join(f['models'])} put (almost) every test image in one class.",
    "not_applicable": None,
    "fits_but_fails": RUNNING_STATS + ".",
    "stale_statistics": RUNNING_STATS + RECOMPUTED + (": the weights learned the task, and what fails in eval mode is "
                                                      "stale running statistics."),
    "not_the_statistics": RUNNING_STATS + RECOMPUTED + ": the running statistics do not explain the low accuracy.",
    "recomputed_higher": BN_STATISTICS + (": the network learned the task, and what fails in eval mode is BatchNorm's "
                                          "running statistics, which one short epoch leaves behind the weights."),
    "recomputed_lower": BN_STATISTICS + ": recomputed statistics score lower, so the running statistics are not what "
                                        "holds it back.",
    "same": BN_STATISTICS + ": within {margin:.3f}, so the running statistics are not what holds it back.",
    "not_run": lambda f: f"Not run: {f['reason']}" + (f". Fix: {f['fix']}." if f["fix"] else "."),
    "every_lr_diverged": lambda f: f"Every lr diverged ({', '.join(f['lrs'])}).",
    "best": ("Best: {name}, test accuracy {acc:.3f} (AUROC {auroc:.3f}), against {majority:.3f} for calling every "
             "image one class."),
    "signal": "It finds a real-vs-fake signal in its inputs.",
    "chance": "That is chance: it finds no real-vs-fake signal in its inputs.",
    "learned": lambda f: f"Learned: lr {', '.join(f['lrs'])}" + (
        f"; of them, {len(f['stale'])} only show it once BatchNorm's statistics are recomputed ("
        + ", ".join(f"lr {lr}: {recomputed:.3f} against {acc:.3f}" for lr, recomputed, acc in f["stale"])
        + " in eval mode with the running statistics training left)" if f["stale"] else "") + ".",
    "did_not_learn": lambda f: f"Did not learn: lr {', '.join(f['lrs'])}.",
    "did_not_learn_larger": lambda f: (f"Did not learn: lr {', '.join(f['lrs'])}, all larger than every lr that "
                                       "learned: steps that big wreck the weights in one epoch."),
    "diverged": lambda f: f"Diverged: lr {', '.join(f['lrs'])}.",
    "no_model": "No model ran.",
    "overall": ("Best overall: {best} ({best_acc:.3f}); worst: {worst} ({worst_acc:.3f}), against {majority:.3f} for "
                "calling every image one class."),
    "baseline_did_not_run": lambda f: f"Baseline {f['baseline']}: {f['status']}" + (
        f" ({f['reason']})." if f["reason"] else "."),
    "baseline_best_two": lambda f: f"Baseline {f['baseline']}: best " + ", ".join(
        f"{name} {acc:.3f}" for name, acc in f["best_two"]) + ".",
    "nothing_to_compare": "Fewer than two models ran: there is nothing to compare.",
    "shown": ("The best model, {best}, gets {candidates} test images right that the worst, {worst}, gets wrong; the "
              "figure shows {shown} of them ({real} real, {fake} fake): {rule}."),
    "worst_calls_all_one_class": "The worst model calls each of them {said}, as it calls {share:.0%} of all test images.",
}


def sentences(findings):
    return [text for text in (render(TEXT, f) for f in findings) if text]


# ----------------------------------------------------------------------------- reports

def caption(fig, lines):
    if lines:
        fig.text(0, -0.02, "\n".join(textwrap.fill(line, 150) for line in lines), va="top", fontsize=8)


def baseline_figure(result):
    """Training loss per step (torch baselines) and the test ROC curve of every model that ran."""
    name, models = result["question"], result["models"]
    torch_based = "lrs" in result["settings"]
    fig, axes = plt.subplots(1, 1 + torch_based, figsize=(7 + 6 * torch_based, 5), layout="constrained", squeeze=False)
    ax_roc = axes[0, -1]
    y_test = [c == "fake" for c in result["test_classes"]]
    for i, m in enumerate(models):
        if torch_based and m.get("train_loss"):
            axes[0, 0].plot(range(1, len(m["train_loss"]) + 1), m["train_loss"], color=f"C{i}", marker=".",
                            label=f"lr {m['lr']:g} ({m['status']})")
        if m["status"] == "ok":
            fpr, tpr, _ = roc_curve(y_test, m["test_prob"])
            ax_roc.plot(fpr, tpr, color=f"C{i}", label=f"{model_name(m)}: AUROC {m['test_auroc']:.3f}")
    ax_roc.plot([0, 1], [0, 1], color="gray", linewidth=0.8, linestyle=":", label="chance")
    ax_roc.set(xlabel="false positive rate (fraction of real test images called fake)",
               ylabel="true positive rate (fraction of fake test images called fake)", title=f"{name}: test ROC")
    if torch_based:
        axes[0, 0].set(xlabel=f"optimizer step (batch of {result['settings']['batch_size']} images)",
                       ylabel="training loss (binary cross-entropy, nats)", title=f"{name}: training loss per step",
                       yscale="log")
    for ax in axes[0]:
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    return fig


def report_baseline(result):
    name, models = result["question"], result["models"]
    ran = not all(m["status"] == "not run" for m in models)
    ok = [m for m in models if m["status"] == "ok"]
    findings = [f"{model_name(m)} {status_text(m)}." for m in models if m["status"] == "diverged"]
    findings += [line + "." for line in not_run_reasons(models)]
    if ok:
        top = max(ok, key=lambda m: m["test_acc"])
        findings.append(f"best: {model_name(top)}, test accuracy {top['test_acc']:.3f} (AUROC {top['test_auroc']:.3f}; "
                        f"{top['test_acc_real']:.3f} of real and {top['test_acc_fake']:.3f} of fake test images "
                        "classified correctly).")
        findings += sentences([one_class_finding(ok)] + [running_stats_finding(m) for m in ok])
    findings += [f"sklearn raised a ConvergenceWarning ({m['convergence_warning']}); the protocol keeps "
                 "LogisticRegression's defaults, so this is the model it fitted." for m in models
                 if m.get("convergence_warning")]
    answer = Answer(result["section"], f"{result['title']}: how well does it tell real from fake?",
                    sentences(baseline_findings(models, majority_rate(result["data"]))))
    return Report([results_table(models) + "\nAccuracy is at threshold P(fake) > 0.5; the positive class is fake. "
                   "Beyond the protocol (ResNets only): 'BN recomputed statistics' scores the trained network in eval "
                   "mode after one pass over the training images recomputes every BatchNorm's running statistics "
                   "with the final weights; 'BN test-batch statistics' normalizes each shuffled test batch of the "
                   "training batch size by its own statistics."],
                  {f"{name}.png": baseline_figure(result)} if ran else {}, findings, [answer])


def report_summary(result):
    models, majority = result["models"], majority_rate(result["data"])
    ranked = [models[i] for i in result["ranking"]]
    fig, ax = plt.subplots(figsize=(9, 5.5), layout="constrained")
    torch_baselines = [name for name, b in result["baselines"].items() if "lrs" in b["settings"]]
    for i, baseline in enumerate(torch_baselines):
        runs = [m for m in models if m["baseline"] == baseline]
        ok = [m for m in runs if m["status"] == "ok"]
        diverged = [m["lr"] for m in runs if m["status"] == "diverged"]
        if not ok and not diverged:
            ax.plot([], [], " ", label=f"{baseline}: not run")
            continue
        ax.plot([m["lr"] for m in ok], [m["test_acc"] for m in ok], marker="o", color=f"C{i}", label=baseline)
        recomputed = [m for m in ok if m.get("test_acc_recomputed_bn") is not None]
        if recomputed:
            ax.plot([m["lr"] for m in recomputed], [m["test_acc_recomputed_bn"] for m in recomputed], marker="o",
                    markerfacecolor="white", linestyle="--", color=f"C{i}",
                    label=f"{baseline}, BatchNorm statistics recomputed (beyond the protocol)")
        if diverged:
            ax.scatter(diverged, [0.03] * len(diverged), marker="x", color=f"C{i}", transform=ax.get_xaxis_transform(),
                       label=f"{baseline}: diverged (no accuracy)")
    for (baseline, style), color in zip(((b, s) for b, s in (("xgb", "--"), ("sklearn_probe", "-.")) if b in
                                         result["baselines"]), ("C3", "C4")):
        m = next(m for m in models if m["baseline"] == baseline)
        if m["status"] == "ok":
            ax.axhline(m["test_acc"], linestyle=style, color=color, label=f"{baseline} (no lr): {m['test_acc']:.3f}")
        else:
            ax.plot([], [], " ", label=f"{baseline}: {m['status']}")
    ax.axhline(majority, color="gray", linewidth=0.8, linestyle=":", label=f"one class for every image: {majority:.3f}")
    image_size = next(iter(result["baselines"].values()))["settings"]["image_size"]
    ax.set(xscale="log", xlabel="learning rate (Adam, log scale)",
           ylabel="test accuracy (fraction of real and fake test images correct)",
           title=f"Real vs fake: test accuracy by learning rate (image size {image_size})")
    lrs = [m["lr"] for m in models if m["lr"] is not None]
    if lrs:
        ax.set_xlim(min(lrs) / 2, max(lrs) * 2)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    caption(fig, not_run_reasons(models))

    ok = [m for m in ranked if m["status"] == "ok"]
    best_rows = []
    for baseline in result["baselines"]:
        runs = [m for m in ranked if m["baseline"] == baseline]
        best_rows += [[baseline, i + 1, lr_text(m), fmt(m["test_acc"]), status_text(m)]
                      for i, m in enumerate(r for r in runs if r["status"] == "ok")][:2]
        if not any(m["status"] == "ok" for m in runs):
            best_rows.append([baseline, "-", "-", "-", status_text(runs[0])])
    body = ["### The baselines, as each ran\n", markdown_table(["baseline", "settings", "wall time (s)"], [
                (name, ", ".join(f"{k} {show_value(v)}" for k, v in b["settings"].items()), f"{b['wall_s']:.1f}")
                for name, b in result["baselines"].items()]),
            "### Two best models of each baseline (by test accuracy)\n",
            markdown_table(["baseline", "place", "lr", "test acc", "status"], best_rows),
            f"\n**Worst overall:** {model_name(ok[-1])}, test accuracy {ok[-1]['test_acc']:.3f}.\n" if ok else
            "\n**Worst overall:** no model ran.\n",
            "\n### Full ranking\n", results_table(ranked, numbered=True),
            "\nAccuracy is at threshold P(fake) > 0.5; AUROC is sklearn's roc_auc_score of P(fake) on the test set.\n"]
    findings = []
    if ok:
        findings.append(f"best overall: {model_name(ok[0])}, test accuracy {ok[0]['test_acc']:.3f}; worst: "
                        f"{model_name(ok[-1])}, {ok[-1]['test_acc']:.3f}; a model that calls every image one class "
                        f"scores {majority:.3f}.")
    for baseline in torch_baselines:
        runs = [m for m in ok if m["baseline"] == baseline and m.get("test_acc_recomputed_bn") is not None]
        if runs:
            findings += sentences([bn_statistics_finding(baseline, runs)])
    answer = Answer(result["section"], "The two best models of each baseline and the worst overall: why these trends?",
                    sentences(summary_findings(models, result["ranking"], majority)))
    return Report(body, {"summary.png": fig}, findings, [answer])


def report_mistakes(result, n=5):
    models, chosen = result["models"], result["chosen"]
    best, worst = (None, None) if result["best"] is None else (models[result["best"]], models[result["worst"]])
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 4.6), layout="constrained")
    for ax in axes:
        ax.axis("off")

    def said(m, i):
        p = m["test_prob"][i]
        return f"{'fake' if p > 0.5 else 'real'} (p={max(p, 1 - p):.2f})"
    for k, (ax, i) in enumerate(zip(axes, chosen)):
        ax.imshow(result["arrays"][f"image_{k}"])
        ax.set_title(f"true: {result['test_classes'][i]}\nbest says {said(best, i)}\nworst says {said(worst, i)}",
                     fontsize=9)
    if best is None:
        headline = "fewer than two models with status ok: nothing to compare"
    else:
        headline = (f"Best model {model_name(best)} (test accuracy {best['test_acc']:.3f}), worst {model_name(worst)} "
                    f"({worst['test_acc']:.3f}). Shown: {result['rule']}; p = probability of the class said")
        if len(chosen) < n:
            headline += f"\nonly {len(chosen)} such test images exist, not {n}"
    fig.suptitle(textwrap.fill(headline, 130), fontsize=10)

    rows = [[result["test_paths"][i], result["test_classes"][i], said(best, i), said(worst, i)] for i in chosen]
    findings = [headline.replace("\n", "; ") + "."] + [line + "." for line in not_run_reasons(models)]
    return Report([markdown_table(["test image", "true class", "best model says", "worst model says"], rows),
                   "Images are shown as saved when the question ran (at most 256 pixels a side); predictions are the "
                   "ones saved when each model was evaluated."], {"mistakes.png": fig}, findings,
                  [Answer(result["section"], "Five test images the best model classifies correctly and the worst does "
                                             "not", sentences(mistakes_findings(result)))])
