"""7.6-1 summary: the two best models of each baseline, the worst overall, every model ranked."""
import math

from plots import PALETTE, from_sentences, Report, markdown_table, plt, show_value
from questions.baselines import (THRESHOLD, accuracy_text, baseline_findings, finish, lr_text, model_name,
                                 not_run_reasons, results_table, same_accuracy_margin, sentences, status_text,
                                 test_shares)
from runner import Question
from section7 import BASELINES, baseline_result


def ranking(models):
    """Indices of models: status ok by test accuracy (best first), then the diverged, then the not run."""
    rank = {"ok": 0, "diverged": 1, "not run": 2}
    return sorted(range(len(models)), key=lambda i: (rank[models[i]["status"]], -(models[i]["test_acc"] or 0),
                                                     BASELINES.index(models[i]["baseline"]),
                                                     models[i]["lr"] or 0))


def train_summary(settings, data, reads, env):
    """Every baseline's models, read from their results, and their ranking."""
    models = [m for name in BASELINES for m in reads[name]["models"]]
    return {**baseline_result(data, models), "ranking": ranking(models),
            "baselines": {name: {"settings": reads[name]["settings"], "wall_s": reads[name]["wall_s"]}
                          for name in BASELINES}}


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


def beats_chance(accuracy, n, shares):
    """Is an accuracy on n test images above every guess's by more than two binomial standard errors: a coin
    (0.5) and one class for every image (each class's share)?"""
    return all(accuracy > p + 2 * math.sqrt(p * (1 - p) / n) for p in (0.5, *shares))


def summary_findings(models, ranked, shares, demo=False):
    """7.6-1: the best and the worst overall (a tie for worst named as one), then per baseline its two best
    models among those that beat chance, and its trend over its lrs. shares: each class's share of the test
    images; demo: the generated stand-in, where this is a pipeline check."""
    ok = [models[i] for i in ranked if models[i]["status"] == "ok"]
    findings = [dict(case="pipeline_check")] if demo else []
    if not ok:
        return findings + [dict(case="no_model")]
    n, worst = len(ok[0]["test_prob"]), ok[-1]
    tied = [model_name(m) for m in ok if m["test_acc"] == worst["test_acc"]]
    findings += [dict(case="overall", best=model_name(ok[0]), best_acc=ok[0]["test_acc"], n=n,
                      se=math.sqrt(0.25 / n)),
                 dict(case="worst_tie" if len(tied) > 1 else "worst", names=tied, acc=worst["test_acc"],
                      last=model_name(worst), majority=max(shares))]
    for baseline in dict.fromkeys(m["baseline"] for m in models):
        runs = [m for m in models if m["baseline"] == baseline]
        ran = [m for m in ok if m["baseline"] == baseline]
        best_two = [(model_name(m), m["test_acc"]) for m in ran if beats_chance(m["test_acc"], n, shares)][:2]
        if best_two:
            findings.append(dict(case="baseline_best_two", baseline=baseline, best_two=best_two))
        elif ran:
            findings.append(dict(case="baseline_at_chance", baseline=baseline, name=model_name(ran[0]),
                                 acc=ran[0]["test_acc"]))
        else:
            findings.append(dict(case="baseline_did_not_run", baseline=baseline, status=runs[0]["status"],
                                 reason=runs[0]["reason"]))
        findings += baseline_findings(runs, max(shares))[1:] if ran else []
    return findings


def summary_figure(result, majority):
    """Test accuracy by lr of each torch baseline; the others and the one-class rate as horizontal lines."""
    models = result["models"]
    fig, ax = plt.subplots(figsize=(11, 5.5), layout="constrained")
    torch_baselines = [b for b, info in result["baselines"].items() if "lrs" in info["settings"]]
    for color, baseline in zip(PALETTE, torch_baselines):
        runs = [m for m in models if m["baseline"] == baseline]
        ok = [m for m in runs if m["status"] == "ok"]
        diverged = [m["lr"] for m in runs if m["status"] == "diverged"]
        if not ok and not diverged:
            ax.plot([], [], "x", color="gray", label=f"{baseline}: not run (why: below the figure)")
            continue
        ax.plot([m["lr"] for m in ok], [m["test_acc"] for m in ok], marker="o", color=color, label=baseline)
        recomputed = [m for m in ok if m.get("test_acc_recomputed_bn") is not None]
        if recomputed:
            ax.plot([m["lr"] for m in recomputed], [m["test_acc_recomputed_bn"] for m in recomputed],
                    marker="o", markerfacecolor="white", linestyle="--", color=color,
                    label=f"{baseline}, BatchNorm statistics recomputed (beyond the protocol)")
        if diverged:
            ax.scatter(diverged, [0.03] * len(diverged), marker="x", color=color,
                       transform=ax.get_xaxis_transform(), label=f"{baseline}: diverged (no accuracy)")
    for (baseline, style), color in zip((("xgb", "--"), ("sklearn_probe", "-.")), PALETTE[3:]):
        m = next(m for m in models if m["baseline"] == baseline)
        if m["status"] == "ok":
            ax.axhline(m["test_acc"], linestyle=style, color=color, label=f"{baseline} (no lr): "
                                                                          f"{m['test_acc']:.3f}")
        else:
            ax.plot([], [], "x", color="gray", label=f"{baseline}: {m['status']}")
    ax.axhline(majority, color="gray", linewidth=0.8, linestyle=":",
               label=f"one class for every image: {majority:.3f}")
    image_size = next(iter(result["baselines"].values()))["settings"]["image_size"]
    finish(ax, xscale="log", xlabel="learning rate (Adam, log scale)",
           ylabel="test accuracy (fraction of real and fake test images correct)",
           title=f"Real vs fake: test accuracy by learning rate (image size {image_size})")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    lrs = [m["lr"] for m in models if m["lr"] is not None]
    if lrs:
        ax.set_xlim(min(lrs) / 2, max(lrs) * 2)
    return fig


def report_summary(result):
    models, shares = result["models"], test_shares(result["data"])
    ranked = [models[i] for i in result["ranking"]]
    ok = [m for m in ranked if m["status"] == "ok"]
    n = len(ok[0]["test_prob"]) if ok else 1
    settings_rows, best_rows, findings = [], [], []
    for baseline, info in result["baselines"].items():
        settings = ", ".join(f"{k} {show_value(v)}" for k, v in info["settings"].items())
        settings_rows.append((baseline, settings, f"{info['wall_s']:.1f}"))
        runs = [m for m in ranked if m["baseline"] == baseline]
        top_two = [m for m in runs if m["status"] == "ok" and beats_chance(m["test_acc"], n, shares)][:2]
        best_rows += [[baseline, i + 1, lr_text(m), accuracy_text(m), status_text(m)]
                      for i, m in enumerate(top_two)]
        if not top_two:
            best_rows.append([baseline, "-", "-", "-", "no model beats chance" if any(
                m["status"] == "ok" for m in runs) else status_text(runs[0])])
    body = ["### The baselines, as each ran\n",
            markdown_table(["baseline", "settings", "wall time (s)"], settings_rows),
            "### Two best models of each baseline (by test accuracy, among those that beat chance)\n",
            markdown_table(["baseline", "place", "lr", "test acc", "status"], best_rows),
            "\n### Full ranking\n", results_table(ranked, numbered=True),
            THRESHOLD + "AUROC is sklearn's roc_auc_score of P(fake) on the test set; ± is the binomial "
                        "standard error of an accuracy on the test images.\n"]
    for baseline in result["baselines"]:
        runs = [m for m in ok if m["baseline"] == baseline and m.get("test_acc_recomputed_bn") is not None]
        if runs:
            findings += sentences([bn_statistics_finding(baseline, runs)])
    found = summary_findings(models, result["ranking"], shares, demo=result["data"].get("demo", False))
    answer = from_sentences(result["section"], "The two best models of each baseline and the worst overall: why "
                    "these trends?", sentences(found))
    caption = ("Each torch baseline's test accuracy against its lr (open circles: BatchNorm statistics "
               "recomputed), the baselines without an lr as lines, calling every image one class dotted.")
    reasons = not_run_reasons(models)
    if reasons:
        caption += " " + " ".join(line + "." for line in reasons)
    return Report(body, {"summary.png": (summary_figure(result, max(shares)), caption)}, findings, [answer])


QUESTION = Question(
    "summary", "7.6-1", "Summary: the best and worst models, every model ranked",
    {},
    train_summary,
    report_summary,
    reads=tuple(BASELINES))
