"""7.6-1 summary: the two best models of each baseline, the worst overall, every model ranked."""
from plots import Answer, Report, markdown_table, render
from questions.baselines import TEXT as BASELINE_TEXT
from questions.baselines import (beats_chance, fmt, headline_finding, lr_finding, lr_text, majority_rate,
                                 model_name, note, results_table)
from runner import Question
from section7 import BASELINES, baseline_result

TEXT = {
    "best_worst": "{best} is best (test accuracy {best_acc:.3f}); worst, at {worst_acc:.3f} against "
                  "{majority:.3f} for calling every image one class: {worst}.",
    "left_out": lambda f: "No best two (none beats chance in eval mode): " + "; ".join(
        f"{baseline} ({head['key']})" for baseline, head in f["baselines"]) + ".",
    "trends": lambda f: "By lr, " + "; ".join(f"{baseline}: {render(BASELINE_TEXT, found)[:-1].lower()}"
                                              for baseline, found in f["baselines"]) + ".",
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


def summary_findings(ranked, majority):
    """7.6-1: the best and worst (ties too), baselines left without a best two, each baseline's lr trend."""
    ok = [m for m in ranked if m["status"] == "ok"]
    worst = [model_name(m) for m in ok if m["test_acc"] == ok[-1]["test_acc"]]
    found = [dict(case="best_worst", best=model_name(ok[0]), best_acc=ok[0]["test_acc"], majority=majority,
                  worst=", ".join(worst), worst_acc=ok[-1]["test_acc"])]
    runs = {b: [m for m in ranked if m["baseline"] == b] for b in BASELINES}
    left_out = [(b, headline_finding(r, majority)) for b, r in runs.items()
                if r and not best_two(r, majority)]
    trends = [(b, lr_finding(r, majority)) for b, r in runs.items() if lr_finding(r, majority)]
    found += [dict(case="left_out", baselines=left_out)] * bool(left_out)
    return found + [dict(case="trends", baselines=trends)] * bool(trends)


def report_summary(result):
    majority = majority_rate(result["data"])
    ranked = [result["models"][i] for i in result["ranking"]]
    best = [m for b in BASELINES for m in best_two([m for m in ranked if m["baseline"] == b], majority)]
    body = ["### Two best models of each baseline (by test accuracy, among those that beat chance)\n",
            markdown_table(["baseline", "lr", "test acc"], [[m["baseline"], lr_text(m), fmt(m["test_acc"])]
                                                             for m in best]),
            "\n### Full ranking\n", results_table(ranked, ranked=True), note(ranked)]
    found = summary_findings(ranked, majority)
    key = "best {best_acc:.3f}, worst {worst_acc:.3f}".format(**found[0])
    asked = "The two best models of each baseline and the worst overall: why these trends?"
    bullets = [render(TEXT, f) for f in found[1:]]
    return Report(body, {}, [Answer(result["section"], asked, render(TEXT, found[0]), bullets, key)])


QUESTION = Question("summary", "7.6-1", "Summary: the best and worst models, every model ranked", {},
                    train_summary, report_summary, reads=tuple(BASELINES))
