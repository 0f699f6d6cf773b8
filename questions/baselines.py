"""The report the five Section 7 baselines share, and the reading of models that summary and mistakes use."""
import math

from plots import PALETTE, Answer, Report, markdown_table, render, subplots

MIN_MARGIN = 0.05  # accuracies closer than this are the same on any test set: less is a handful of images
COLUMNS = {"acc on real": "test_acc_real", "acc on fake": "test_acc_fake",
           "BN recomputed": "test_acc_recomputed_bn"}
TEXT = {
    "not_run": "Not run: {reason}.",
    "every_lr_diverged": "Not at all: every lr diverged.",
    "scored": "{verdict}: the best model, {name}, scores test accuracy {acc:.3f} (AUROC {auroc:.3f}) against "
              "{majority:.3f} for calling every image one class.",
    "learned_once_recomputed": "At chance in eval mode (best {name}: {acc:.3f}, one class: {majority:.3f}), "
                               "yet lr {lr} learned: {recomputed:.3f} with BatchNorm statistics recomputed.",
    "larger_lrs_failed": "Learned at lr {learned}; not at lr {failed}, all larger than any lr that learned.",
    "some_lrs_failed": "Learned at lr {learned}; not at lr {failed}.",
}
NOT_CONVERGED = "{name} stopped at its iteration limit ({max_iter}) before it converged."


def beats_chance(accuracy, n, majority):
    """Above calling every image one class by more than the noise: two binomial standard errors at 0.5."""
    return accuracy is not None and accuracy > majority + max(MIN_MARGIN, 2 * math.sqrt(0.25 / n))


def majority_rate(meta):
    return max(meta["images"]["test"].values()) / sum(meta["images"]["test"].values())


def model_name(m):
    return m["baseline"] if m["lr"] is None else f"{m['baseline']} lr {m['lr']:g}"


def fmt(value):
    return "-" if value is None else f"{value:.3f}"


def results_table(models, meta):
    shown = [m for m in models if m["status"] != "not run"]
    extra = {k: v for k, v in COLUMNS.items() if any(m.get(v) is not None for m in shown)}
    rows = [[model_name(m), fmt(m["test_acc"]) if m["status"] == "ok" else m["status"], fmt(m["test_auroc"]),
             *(fmt(m.get(v)) for v in extra.values())] for m in shown]
    n = sum(meta["images"]["test"].values())
    note = f"Accuracy: P(fake) > 0.5 on {n} test images (standard error at most {0.5 / math.sqrt(n):.3f})."
    if "BN recomputed" in extra:
        note += " BN recomputed, beyond the protocol: eval mode, BatchNorm's statistics recomputed on train."
    return markdown_table(["model", "test acc", "AUROC", *extra], rows) + "\n" + note


def headline_finding(models, majority):
    """7.4: the best model in eval mode against chance; at chance, did some lr learn, BN recomputed?"""
    if all(m["status"] == "not run" for m in models):
        return dict(case="not_run", reason=models[0]["reason"].split(" (")[0], key="not run")
    ok = [m for m in models if m["status"] == "ok"]
    if not ok:
        return dict(case="every_lr_diverged", key="every lr diverged")
    top = max(ok, key=lambda m: m["test_acc"])
    numbers = dict(name=model_name(top), acc=top["test_acc"], auroc=top["test_auroc"], majority=majority,
                   key=f"test acc {top['test_acc']:.3f}")
    if beats_chance(top["test_acc"], len(top["test_prob"]), majority):
        return dict(numbers, case="scored", verdict="Above chance")
    recovered = max(ok, key=lambda m: m.get("test_acc_recomputed_bn") or 0)
    if beats_chance(recovered.get("test_acc_recomputed_bn"), len(top["test_prob"]), majority):
        recomputed = recovered["test_acc_recomputed_bn"]
        return dict(numbers, case="learned_once_recomputed", lr=f"{recovered['lr']:g}", recomputed=recomputed,
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
    case = "larger_lrs_failed" if bad[-1]["lr"] > good[0]["lr"] else "some_lrs_failed"
    return dict(case=case, learned=", ".join(f"{m['lr']:g}" for m in good),
                failed=", ".join(f"{m['lr']:g}" for m in bad))


def roc_figure(result):
    from sklearn.metrics import roc_curve
    fig, ax = subplots(figsize=(6.5, 5.5))
    for color, m in zip(PALETTE, result["models"]):
        if m["status"] == "ok":
            fpr, tpr, _ = roc_curve([c == "fake" for c in result["test_classes"]], m["test_prob"])
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
    found = lr_finding(models, majority)
    bullets = [render(TEXT, found)] if found else []
    bullets += [NOT_CONVERGED.format(name=model_name(m), **m) for m in models if m.get("converged") is False]
    answer = Answer(result["section"], f"{result['title']}: how well does it tell real from fake?",
                    render(TEXT, head), bullets, head["key"])
    if head["case"] == "not_run":
        fix = f". Fix: {models[0]['fix']}." if models[0]["fix"] else "."
        return Report([f"{models[0]['baseline']} not run: {models[0]['reason']}{fix}"], {}, [answer])
    figure = (roc_figure(result), "How far each test ROC curve (eval mode) lies above the chance diagonal.")
    return Report([results_table(models, result["data"])], {f"{result['question']}.png": figure}, [answer])
