"""7.6-1 summary: the two best models of each baseline, the worst overall, every model ranked."""
from plots import PALETTE, Answer, Report, markdown_table, render, subplots
from questions.baselines import (KEYS, ONE_CLASS, beats_chance, finish, fmt, headline_finding, lr_finding,
                                 lr_text, majority_rate, model_name, note, results_table)
from questions.baselines import TEXT as BASELINE_TEXT
from runner import Question
from section7 import BASELINES, baseline_result

HEADLINES = {
    "no_model": "No model ran.",
    "best_worst": "{best} is best (test accuracy {best_acc:.3f}); {worst} is worst ({worst_acc:.3f}, against "
                  "{majority:.3f} for calling every image one class).",
    "best_worst_one_class": "{best} is best (test accuracy {best_acc:.3f}); the worst, {worst} "
                            "({worst_acc:.3f}), calls (almost) every test image one class.",
}
TEXT = {
    "none": None,
    "tie": "Tied for worst at {acc:.3f}: {names}; the mistakes take {worst}, last by baseline, then lr.",
    "left_out": lambda f: "No best two (none beats chance in eval mode): " + "; ".join(
        f"{baseline} ({render(KEYS, head)})" for baseline, head in f["baselines"]) + ".",
    "trends": lambda f: "By lr, " + "; ".join(f"{baseline}: {render(BASELINE_TEXT, found)[:-1].lower()}"
                                              for baseline, found in f["baselines"]) + ".",
    "stand_in": "On the generated stand-in: a pipeline check; which baseline wins says nothing about faces.",
}


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
            "baselines": {name: {"settings": reads[name]["settings"]} for name in BASELINES}}


def best_two(runs, majority):
    """A baseline's two best models by test accuracy, among those that beat chance (runs ranked)."""
    return [m for m in runs if m["status"] == "ok" and beats_chance(m["test_acc"], len(m["test_prob"]),
                                                                    majority)][:2]


def summary_findings(models, ranked, majority, demo=False):
    """7.6-1: the best and the worst overall (headline), a tie for worst, the baselines the beats-chance
    filter leaves without a best two, each torch baseline's trend over its lrs, and whether the data is the
    stand-in."""
    ranked = [models[i] for i in ranked]
    ok = [m for m in ranked if m["status"] == "ok"]
    if not ok:
        return [dict(case="no_model")]
    worst = ok[-1]
    one_class = min(worst["test_acc_real"], worst["test_acc_fake"]) < ONE_CLASS
    found = [dict(case="best_worst_one_class" if one_class else "best_worst", best=model_name(ok[0]),
                  best_acc=ok[0]["test_acc"], worst=model_name(worst), worst_acc=worst["test_acc"],
                  majority=majority)]
    tied = [model_name(m) for m in ok if m["test_acc"] == worst["test_acc"]]
    found.append(dict(case="tie", names=", ".join(tied), acc=worst["test_acc"], worst=model_name(worst))
                 if len(tied) > 1 else dict(case="none"))
    left_out, trends = [], []
    for baseline in BASELINES:
        runs = [m for m in ranked if m["baseline"] == baseline]
        if runs and not best_two(runs, majority):
            left_out.append((baseline, headline_finding(runs, majority)))
        trend = lr_finding([m for m in models if m["baseline"] == baseline], majority)
        trends += [(baseline, trend)] if trend["case"] != "none" else []
    found.append(dict(case="left_out", baselines=left_out) if left_out else dict(case="none"))
    found.append(dict(case="trends", baselines=trends) if trends else dict(case="none"))
    return found + [dict(case="stand_in" if demo else "none")]


def summary_figure(result, majority):
    """Test accuracy by lr of each torch baseline (open circles: BatchNorm statistics recomputed; x:
    diverged), each baseline without an lr as a horizontal line, one with no model scored in the legend."""
    fig, ax = subplots(figsize=(11, 5.5))
    for color, baseline in zip(PALETTE, BASELINES):
        runs = [m for m in result["models"] if m["baseline"] == baseline]
        ok = [m for m in runs if m["status"] == "ok"]
        recomputed = [m for m in ok if m.get("test_acc_recomputed_bn") is not None]
        diverged = [m["lr"] for m in runs if m["status"] == "diverged"]
        if not ok:
            ax.plot([], [], "x", color="gray", label=f"{baseline}: {runs[0]['status']}")
        elif ok[0]["lr"] is None:
            ax.axhline(ok[0]["test_acc"], linestyle="--", color=color, label=f"{baseline} (no lr)")
        else:
            ax.plot([m["lr"] for m in ok], [m["test_acc"] for m in ok], marker="o", color=color,
                    label=baseline)
        if recomputed:
            ax.plot([m["lr"] for m in recomputed], [m["test_acc_recomputed_bn"] for m in recomputed],
                    marker="o", markerfacecolor="white", linestyle="--", color=color,
                    label=f"{baseline}, BatchNorm statistics recomputed (beyond the protocol)")
        if diverged:
            ax.scatter(diverged, [0.03] * len(diverged), marker="x", color=color,
                       transform=ax.get_xaxis_transform(), label=f"{baseline}: diverged (no accuracy)")
    ax.axhline(majority, color="gray", linewidth=0.8, linestyle=":", label="one class for every image")
    image_size = next(iter(result["baselines"].values()))["settings"]["image_size"]
    finish(ax, xscale="log", xlabel="learning rate (Adam, log scale)", ylabel="test accuracy",
           title=f"Real vs fake: test accuracy by learning rate (image size {image_size})")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    return fig


def report_summary(result):
    models, majority = result["models"], majority_rate(result["data"])
    ranked = [models[i] for i in result["ranking"]]
    best = [m for baseline in BASELINES for m in best_two([m for m in ranked if m["baseline"] == baseline],
                                                          majority)]
    best_rows = [[m["baseline"], lr_text(m), fmt(m["test_acc"])] for m in best]
    body = ["### Two best models of each baseline (by test accuracy, among those that beat chance)\n",
            markdown_table(["baseline", "lr", "test acc"], best_rows),
            "\n### Full ranking\n", results_table(ranked, ranked=True), note(models)]
    found = summary_findings(models, result["ranking"], majority, demo=result["data"].get("demo", False))
    bullets = [text for text in (render(TEXT, f) for f in found[1:]) if text]
    key = "" if found[0]["case"] == "no_model" else "best {best_acc:.3f}, worst {worst_acc:.3f}".format(
        **found[0])
    asked = "The two best models of each baseline and the worst overall: why these trends?"
    answer = Answer(result["section"], asked, render(HEADLINES, found[0]), bullets, key)
    caption = ("Each torch baseline's test accuracy by lr (open circles: BatchNorm statistics recomputed), "
               "the baselines without an lr as lines, calling every image one class dotted.")
    return Report(body, {"summary.png": (summary_figure(result, majority), caption)}, [answer])


QUESTION = Question("summary", "7.6-1", "Summary: the best and worst models, every model ranked", {},
                    train_summary, report_summary, reads=tuple(BASELINES))
