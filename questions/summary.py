"""7.6-1 summary: the two best models of each baseline, the worst overall, every model ranked."""
from plots import Answer, Report, markdown_table, render
from questions.baselines import beats_chance, fmt, headline_finding, majority_rate, model_name, results_table
from runner import Question
from section7 import BASELINES, baseline_result

TEXT = {
    "best_worst": "{best} is best (test accuracy {best_acc:.3f}); worst, at {worst_acc:.3f} against "
                  "{majority:.3f} for calling every image one class: {worst}.",
    "left_out": lambda f: "No best two (none beats chance in eval mode): " + "; ".join(
        f"{baseline} ({head['key']})" for baseline, head in f["baselines"]) + ".",
}


def train_summary(settings, data, reads, env):
    """Every baseline's models, ranked: ok by test accuracy (best first), the diverged, the not run."""
    models = [m for name in BASELINES for m in reads[name]["models"]]
    keys = [(("ok", "diverged", "not run").index(m["status"]), -(m["test_acc"] or 0),
             BASELINES.index(m["baseline"]), m["lr"] or 0) for m in models]
    return {**baseline_result(data, models), "ranking": sorted(range(len(models)), key=keys.__getitem__)}


def best_two(runs, majority):
    """A baseline's two best models by test accuracy, among those that beat chance (runs ranked)."""
    return [m for m in runs if m["status"] == "ok" and beats_chance(m["test_acc"], len(m["test_prob"]),
                                                                    majority)][:2]


def summary_findings(ranked, majority):
    """7.6-1: the best and worst (ties too), and the baselines left without a best two."""
    ok = [m for m in ranked if m["status"] == "ok"]
    worst = [model_name(m) for m in ok if m["test_acc"] == ok[-1]["test_acc"]]
    found = [dict(case="best_worst", best=model_name(ok[0]), best_acc=ok[0]["test_acc"], majority=majority,
                  worst=", ".join(worst), worst_acc=ok[-1]["test_acc"])]
    runs = {b: [m for m in ranked if m["baseline"] == b] for b in BASELINES}
    left_out = [(b, headline_finding(r, majority)) for b, r in runs.items()
                if r and not best_two(r, majority)]
    return found + [dict(case="left_out", baselines=left_out)] * bool(left_out)


def report_summary(result):
    majority = majority_rate(result["data"])
    ranked = [result["models"][i] for i in result["ranking"]]
    best = [m for b in BASELINES for m in best_two([m for m in ranked if m["baseline"] == b], majority)]
    body = ["### Two best models of each baseline (among those that beat chance)\n",
            markdown_table(["model", "test acc"], [[model_name(m), fmt(m["test_acc"])] for m in best]),
            "\n### Full ranking, best first\n", results_table(ranked, result["data"])]
    head, *rest = summary_findings(ranked, majority)
    key = "best {best_acc:.3f}, worst {worst_acc:.3f}".format(**head)
    asked = "The two best models of each baseline and the worst overall: why these trends?"
    answer = Answer(result["section"], asked, render(TEXT, head), [render(TEXT, f) for f in rest], key)
    return Report(body, {}, [answer])


QUESTION = Question("summary", "7.6-1", "Summary: the best and worst models, every model ranked", {},
                    train_summary, report_summary, reads=tuple(BASELINES))
