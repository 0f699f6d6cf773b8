"""The report the five Section 7 baselines share (a table, a loss and ROC figure, the answer), and the reading
of models that summary and mistakes use too.
"""
import math

import numpy as np

from plots import PALETTE, Answer, Report, markdown_table, render, subplots

MIN_MARGIN = 0.05  # accuracies closer than this are the same on any test set: less is a handful of images
ONE_CLASS = 0.05  # under 5% of one true class right: (almost) every image is put in the other class
COINCIDE = 0.01  # ROC curves this close everywhere (in true positive rate) overlap at a figure's line width
NOTE = "Accuracy: P(fake) > 0.5 on {n} test images (standard error at most {se:.3f})."
BN_NOTE = (" BN recomputed, beyond the protocol: the same weights in eval mode after recomputing BatchNorm's "
           "running statistics over the training images.")
COLUMNS = {"acc on real": "test_acc_real", "acc on fake": "test_acc_fake",
           "BN recomputed": "test_acc_recomputed_bn"}
HEADLINES = {
    "not_run": "Not run: {reason}.",
    "not_run_fixable": "Not run: {reason} (how to fix it: see the manifest, or below).",
    "every_lr_diverged": "Not at all: every lr diverged ({lrs}).",
    "learned": "Above chance: {name} scores test accuracy {acc:.3f} (AUROC {auroc:.3f}) against "
               "{majority:.3f} for calling every image one class.",
    "chance": "No better than chance: its best, {name}, scores {acc:.3f} (AUROC {auroc:.3f}) against "
              "{majority:.3f} for calling every image one class.",
    "learned_once_recomputed": "At chance in eval mode (best {name}: {acc:.3f}), yet lr {lr} learned: "
                               "{recomputed:.3f} once BatchNorm's statistics are recomputed.",
}
KEYS = {"not_run": "not run", "not_run_fixable": "not run", "every_lr_diverged": "every lr diverged",
        "learned": "test acc {acc:.3f}, AUROC {auroc:.3f}", "chance": "test acc {acc:.3f}, AUROC {auroc:.3f}",
        "learned_once_recomputed": "test acc {acc:.3f}; {recomputed:.3f} BN recomputed"}
TEXT = {
    "none": None,
    "larger_lrs_failed": "Learned at {learned}; not at {failed}, each larger than every lr that learned.",
    "some_lrs_failed": "Learned at {learned}; not at {failed}.",
    "every_lr_learned": "Every lr that ran learned.",
    "no_lr_learned": "No lr learned.",
    "diverged": "Diverged: {lrs}.",
    "running_stats_fail": "At {lrs}, the running BatchNorm statistics that training left fail, not the "
                          "weights: {acc} in eval mode, {recomputed} recomputed.",
    "convergence": "sklearn warned: {warning}; the protocol keeps LogisticRegression's defaults.",
}


def same_accuracy_margin(n):
    """Accuracies on n test images closer than this are the same: two binomial standard errors at 0.5."""
    return max(MIN_MARGIN, 2 * math.sqrt(0.25 / n))


def beats_chance(accuracy, n, majority):
    """Is an accuracy on n test images above calling every image one class by more than the noise?"""
    return accuracy is not None and accuracy > majority + same_accuracy_margin(n)


def majority_rate(meta):
    """The test accuracy of calling every image the larger class."""
    counts = meta["images"]["test"]
    return max(counts.values()) / sum(counts.values())


def lr_text(m):
    return "-" if m["lr"] is None else f"{m['lr']:g}"


def model_name(m):
    return m["baseline"] if m["lr"] is None else f"{m['baseline']} lr {lr_text(m)}"


def names(models):
    """'lr 0.1, 0.01' for one baseline's models, else their names."""
    if all(m["lr"] is not None for m in models) and len({m["baseline"] for m in models}) == 1:
        return "lr " + ", ".join(lr_text(m) for m in models)
    return ", ".join(model_name(m) for m in models)


def span(values):
    return f"{min(values):.3f}" if min(values) == max(values) else f"{min(values):.3f}-{max(values):.3f}"


def fmt(value):
    return "-" if value is None else f"{value:.3f}"


def note(models):
    """NOTE, with the test set's size and the largest standard error an accuracy on it can have; BN_NOTE where
    some model has BatchNorm's statistics recomputed."""
    n = max(len(m["test_prob"] or []) for m in models)
    recomputed = any(m.get("test_acc_recomputed_bn") is not None for m in models)
    return NOTE.format(n=n, se=0.5 / math.sqrt(n)) + BN_NOTE * recomputed


def not_run_reasons(models):
    """One line per reason: which baselines it stopped, and the fix."""
    reasons = {}
    for m in models:
        if m["status"] == "not run":
            reasons.setdefault((m["reason"], m.get("fix")), {})[m["baseline"]] = None
    return [f"{', '.join(baselines)} not run: {reason}" + (f". Fix: {fix}." if fix else ".")
            for (reason, fix), baselines in reasons.items()]


def results_table(models, ranked=False):
    """A row per model that ran or diverged: lr, test accuracy (or status), AUROC, then the COLUMNS some model
    has; ranked (the summary): rank and baseline first, no COLUMNS (each baseline's own table has them)."""
    shown = [m for m in models if m["status"] != "not run"]
    extra = {} if ranked else {k: v for k, v in COLUMNS.items() if any(m.get(v) is not None for m in shown)}
    rows = [[lr_text(m), fmt(m["test_acc"]) if m["status"] == "ok" else m["status"], fmt(m["test_auroc"]),
             *(fmt(m.get(v)) for v in extra.values())] for m in shown]
    if ranked:
        rows = [[rank, m["baseline"], *row] for rank, (m, row) in enumerate(zip(shown, rows), 1)]
    return markdown_table(["rank", "model"] * ranked + ["lr", "test acc", "AUROC", *extra], rows)


def headline_finding(models, majority):
    """7.4: how well a baseline tells real from fake: its best model in eval mode (the protocol) against
    calling every image one class and, where that is chance, whether some lr learned once BatchNorm's
    statistics are recomputed (beyond the protocol)."""
    if all(m["status"] == "not run" for m in models):
        case = "not_run_fixable" if models[0].get("fix") else "not_run"
        return dict(case=case, reason=models[0]["reason"].split(" (")[0])
    ok = [m for m in models if m["status"] == "ok"]
    if not ok:
        return dict(case="every_lr_diverged", lrs=names(models))
    top = max(ok, key=lambda m: m["test_acc"])
    n = len(top["test_prob"])
    numbers = dict(name=model_name(top), acc=top["test_acc"], auroc=top["test_auroc"], majority=majority)
    if beats_chance(top["test_acc"], n, majority):
        return dict(numbers, case="learned")
    recovered = max(ok, key=lambda m: m.get("test_acc_recomputed_bn") or 0)
    if beats_chance(recovered.get("test_acc_recomputed_bn"), n, majority):
        return dict(numbers, case="learned_once_recomputed", lr=lr_text(recovered),
                    recomputed=recovered["test_acc_recomputed_bn"])
    return dict(numbers, case="chance")


def learned(m, majority):
    """Did a model's weights learn: does it beat chance in eval mode or with BatchNorm's statistics
    recomputed?"""
    accuracies = (m["test_acc"], m.get("test_acc_recomputed_bn"))
    return any(beats_chance(accuracy, len(m["test_prob"]), majority) for accuracy in accuracies)


def lr_finding(models, majority):
    """Over a torch baseline's lrs that ran: which learned, and are the ones that did not all larger?"""
    ok = [m for m in models if m["status"] == "ok" and m["lr"] is not None]
    good = [m for m in ok if learned(m, majority)]
    bad = [m for m in ok if not learned(m, majority)]
    if not ok:
        return dict(case="none")
    if not bad or not good:
        return dict(case="every_lr_learned" if good else "no_lr_learned")
    larger = min(m["lr"] for m in bad) > max(m["lr"] for m in good)
    case = "larger_lrs_failed" if larger else "some_lrs_failed"
    return dict(case=case, learned=names(good), failed=names(bad))


def running_stats_finding(models, majority):
    """The models at chance in eval mode that beat it with BatchNorm's statistics recomputed over the training
    images: the same weights, so what fails is the running statistics training left. The recomputation is the
    run that could refute it."""
    hidden = [m for m in models if m["status"] == "ok" and learned(m, majority)
              and not beats_chance(m["test_acc"], len(m["test_prob"]), majority)]
    if not hidden:
        return dict(case="none")
    return dict(case="running_stats_fail", lrs=names(hidden), acc=span([m["test_acc"] for m in hidden]),
                recomputed=span([m["test_acc_recomputed_bn"] for m in hidden]))


def baseline_answer(result, majority):
    models = result["models"]
    head = headline_finding(models, majority)
    diverged = [m for m in models if m["status"] == "diverged"]
    some_diverged = diverged and head["case"] != "every_lr_diverged"
    found = [dict(case="diverged", lrs=names(diverged)) if some_diverged else dict(case="none"),
             lr_finding(models, majority), running_stats_finding(models, majority)]
    found += [dict(case="convergence", warning=m["convergence_warning"]) for m in models
              if m.get("convergence_warning")]
    bullets = [text for text in (render(TEXT, f) for f in found) if text]
    return Answer(result["section"], f"{result['title']}: how well does it tell real from fake?",
                  render(HEADLINES, head), bullets, render(KEYS, head))


def finish(ax, **labels):
    ax.set(**labels)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    ax.grid(alpha=0.3)


def roc_panel(ax, y_test, curves, title):
    """curves: (name, colour, P(fake), AUROC). Curves that coincide (within COINCIDE) are drawn once, named
    together; returns whether some were."""
    from sklearn.metrics import roc_curve
    grid = np.linspace(0, 1, 501)
    drawn = []
    for name, color, prob, auroc in curves:
        fpr, tpr, _ = roc_curve(y_test, prob)
        steps = tpr[np.searchsorted(fpr, grid, side="right") - 1]  # the curve's height at each grid point
        same = [d for d in drawn if np.abs(d["steps"] - steps).max() <= COINCIDE]
        if same:
            same[0]["names"].append(name)
            same[0]["aurocs"].append(auroc)
        else:
            drawn.append(dict(fpr=fpr, tpr=tpr, steps=steps, names=[name], color=color, aurocs=[auroc]))
    for d in drawn:
        together = " (one curve)" if len(d["names"]) > 1 else ""
        ax.plot(d["fpr"], d["tpr"], color=d["color"], label=f"{', '.join(d['names'])}{together}: AUROC "
                                                             f"{span(d['aurocs'])}")
    ax.plot([0, 1], [0, 1], color="gray", linewidth=0.8, linestyle=":", label="chance")
    finish(ax, xlabel="false positive rate (real test images called fake)",
           ylabel="true positive rate (fake test images called fake)", title=title)
    return len(drawn) < len(curves)


def baseline_figure(result):
    """Training loss per step (torch baselines), the test ROC of every model that ran in eval mode, and with
    BatchNorm's statistics recomputed where they were; and whether some ROC curves coincide."""
    name, models = result["question"], result["models"]
    colors = dict(zip(map(id, models), PALETTE))
    ok = [m for m in models if m["status"] == "ok"]
    recomputed = [m for m in ok if m.get("test_prob_recomputed_bn")]
    losses = [m for m in models if m.get("train_loss")]
    panels = 1 + bool(losses) + bool(recomputed)
    fig, axes = subplots(1, panels, figsize=(6.5 * panels, 5.5), squeeze=False)
    y_test = [c == "fake" for c in result["test_classes"]]
    for m in losses:
        axes[0, 0].plot(range(1, len(m["train_loss"]) + 1), m["train_loss"], color=colors[id(m)], marker=".",
                        label=f"lr {lr_text(m)} ({m['status']})")
    if losses:
        finish(axes[0, 0], xlabel=f"optimizer step (batch of {result['settings']['batch_size']} images)",
               yscale="log", ylabel="training loss (binary cross-entropy)", title=f"{name}: training loss")
    joined = roc_panel(axes[0, int(bool(losses))], y_test,
                       [(model_name(m), colors[id(m)], m["test_prob"], m["test_auroc"]) for m in ok],
                       f"{name}: test ROC" + " in eval mode" * bool(recomputed))
    if recomputed:
        joined |= roc_panel(axes[0, -1], y_test, [(model_name(m), colors[id(m)], m["test_prob_recomputed_bn"],
                                                   m["test_auroc_recomputed_bn"]) for m in recomputed],
                            f"{name}: test ROC, BatchNorm statistics recomputed")
    return fig, joined


def report_baseline(result):
    models = result["models"]
    answer = baseline_answer(result, majority_rate(result["data"]))
    if all(m["status"] == "not run" for m in models):
        return Report(not_run_reasons(models), {}, [answer])
    fig, joined = baseline_figure(result)
    caption = "How far each test ROC curve lies above the chance diagonal" + (
        "; curves that coincide are drawn once, named together." if joined else ".")
    figures = {f"{result['question']}.png": (fig, caption)}
    return Report([results_table(models), note(models)], figures, [answer])
