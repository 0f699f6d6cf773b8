"""The report the five Section 7 baselines share, and the reading of models that summary and mistakes use."""
import math

from plots import PALETTE, Answer, Report, markdown_table, render, subplots

MIN_MARGIN = 0.05  # accuracies closer than this are the same on any test set: less is a handful of images
COLUMNS = {"acc on real": "test_acc_real", "acc on fake": "test_acc_fake",
           "BN recomputed": "test_acc_recomputed_bn"}
HEADLINES = {
    "not_run": "Not run: {reason}.",
    "not_run_fixable": "Not run: {reason} (how to fix it: see the manifest, or below).",
    "every_lr_diverged": "Not at all: every lr diverged.",
    "scored": "{verdict}: the best model, {name}, scores test accuracy {acc:.3f} (AUROC {auroc:.3f}) against "
              "{majority:.3f} for calling every image one class.",
    "learned_once_recomputed": "At chance in eval mode (best {name}: {acc:.3f}, one class: {majority:.3f}), "
                               "yet lr {lr} learned: {recomputed:.3f} with BatchNorm statistics recomputed.",
}
TEXT = {
    "larger_lrs_failed": "Learned at lr {learned}; not at lr {failed}, all larger than any lr that learned.",
    "some_lrs_failed": "Learned at lr {learned}; not at lr {failed}.",
    "convergence": "sklearn warned: {warning}; the protocol keeps LogisticRegression's defaults.",
}


def beats_chance(accuracy, n, majority):
    """Above calling every image one class by more than the noise: two binomial standard errors at 0.5."""
    return accuracy is not None and accuracy > majority + max(MIN_MARGIN, 2 * math.sqrt(0.25 / n))


def majority_rate(meta):
    """The test accuracy of calling every image the larger class."""
    counts = meta["images"]["test"]
    return max(counts.values()) / sum(counts.values())


def lr_text(m):
    return "-" if m["lr"] is None else f"{m['lr']:g}"


def model_name(m):
    return m["baseline"] if m["lr"] is None else f"{m['baseline']} lr {lr_text(m)}"


def fmt(value):
    return "-" if value is None else f"{value:.3f}"


def note(models):
    """The test set's size, the largest standard error an accuracy on it can have, what BN recomputed is."""
    n = max(len(m["test_prob"] or []) for m in models)
    text = f"Accuracy: P(fake) > 0.5 on {n} test images (standard error at most {0.5 / math.sqrt(n):.3f})."
    if any(m.get("test_acc_recomputed_bn") is not None for m in models):
        text += (" BN recomputed, beyond the protocol: the same weights in eval mode after recomputing "
                 "BatchNorm's running statistics over the training images.")
    return text


def results_table(models, ranked=False):
    """A row per model that ran or diverged; ranked (the summary): rank and baseline first, no COLUMNS."""
    shown = [m for m in models if m["status"] != "not run"]
    extra = {} if ranked else {k: v for k, v in COLUMNS.items() if any(m.get(v) is not None for m in shown)}
    rows = [[lr_text(m), fmt(m["test_acc"]) if m["status"] == "ok" else m["status"], fmt(m["test_auroc"]),
             *(fmt(m.get(v)) for v in extra.values())] for m in shown]
    if ranked:
        rows = [[rank, m["baseline"], *row] for rank, (m, row) in enumerate(zip(shown, rows), 1)]
    return markdown_table(["rank", "model"] * ranked + ["lr", "test acc", "AUROC", *extra], rows)


def headline_finding(models, majority):
    """7.4: a baseline's best model in eval mode against chance; at chance, whether some lr learned once
    BatchNorm's statistics are recomputed (beyond the protocol); key: its key number for the summary."""
    if all(m["status"] == "not run" for m in models):
        case = "not_run_fixable" if models[0].get("fix") else "not_run"
        return dict(case=case, reason=models[0]["reason"].split(" (")[0], key="not run")
    ok = [m for m in models if m["status"] == "ok"]
    if not ok:
        return dict(case="every_lr_diverged", key="every lr diverged")
    top = max(ok, key=lambda m: m["test_acc"])
    n = len(top["test_prob"])
    numbers = dict(name=model_name(top), acc=top["test_acc"], auroc=top["test_auroc"], majority=majority,
                   key=f"test acc {top['test_acc']:.3f}")
    if beats_chance(top["test_acc"], n, majority):
        return dict(numbers, case="scored", verdict="Above chance")
    recovered = max(ok, key=lambda m: m.get("test_acc_recomputed_bn") or 0)
    if beats_chance(recovered.get("test_acc_recomputed_bn"), n, majority):
        recomputed = recovered["test_acc_recomputed_bn"]
        return dict(numbers, case="learned_once_recomputed", lr=lr_text(recovered), recomputed=recomputed,
                    key=f"test acc {top['test_acc']:.3f}; {recomputed:.3f} BN recomputed")
    return dict(numbers, case="scored", verdict="No better than chance")


def lr_finding(models, majority):
    """Where some of a torch baseline's lrs beat chance (eval mode or BN recomputed): are the rest larger?"""
    ok = sorted([m for m in models if m["status"] == "ok" and m["lr"] is not None], key=lambda m: -m["lr"])
    good = [m for m in ok if beats_chance(max(m["test_acc"], m.get("test_acc_recomputed_bn") or 0),
                                          len(m["test_prob"]), majority)]
    bad = [m for m in ok if m not in good]
    if not good or not bad:
        return None
    larger = min(m["lr"] for m in bad) > max(m["lr"] for m in good)
    case = "larger_lrs_failed" if larger else "some_lrs_failed"
    return dict(case=case, learned=", ".join(map(lr_text, good)), failed=", ".join(map(lr_text, bad)))


def roc_figure(result):
    from sklearn.metrics import roc_curve
    fig, ax = subplots(figsize=(6.5, 5.5))
    y_test = [c == "fake" for c in result["test_classes"]]
    for color, m in zip(PALETTE, result["models"]):
        if m["status"] == "ok":
            fpr, tpr, _ = roc_curve(y_test, m["test_prob"])
            ax.plot(fpr, tpr, color=color, label=f"{model_name(m)}: AUROC {m['test_auroc']:.3f}")
    ax.plot([0, 1], [0, 1], color="gray", linewidth=0.8, linestyle=":", label="chance")
    ax.set(xlabel="false positive rate (real images called fake)", title=f"{result['question']}: test ROC",
           ylabel="true positive rate (fake images called fake)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return fig


def report_baseline(result):
    models = result["models"]
    majority = majority_rate(result["data"])
    head = headline_finding(models, majority)
    found = [lr_finding(models, majority)]
    found += [dict(case="convergence", warning=m["convergence_warning"]) for m in models
              if m.get("convergence_warning")]
    answer = Answer(result["section"], f"{result['title']}: how well does it tell real from fake?",
                    render(HEADLINES, head), [render(TEXT, f) for f in found if f], head["key"])
    if head["case"].startswith("not_run"):
        fix = f". Fix: {models[0]['fix']}." if models[0].get("fix") else "."
        return Report([f"{models[0]['baseline']} not run: {models[0]['reason']}{fix}"], {}, [answer])
    figure = (roc_figure(result), "How far each test ROC curve (eval mode) lies above the chance diagonal.")
    return Report([results_table(models), note(models)], {f"{result['question']}.png": figure}, [answer])
