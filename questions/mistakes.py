"""7.6-2 mistakes: 5 test images the best model gets right and the worst gets wrong."""
import os

import numpy as np

from plots import Answer, Report, markdown_table, subplots
from questions.baselines import model_name
from questions.summary import train_summary
from runner import Question
from section7 import BASELINES, decode_one

RULES = ("the worst's most confident mistakes first, as evenly between the true classes as they allow, each "
         "from a photograph not yet shown while there is one")
HEADLINE = ("The worst model, {worst}, calls {share:.0%} of the test images {said}; shown: {shown} ({real} "
            "real, {fake} fake) of the {candidates} that {best} gets right and it gets wrong.")


def pick_mistakes(models, ranked, test_classes, test_sources, n=5):
    """Best and worst ok model (the tied worst's last), up to n images right for best, wrong for worst."""
    ok = [i for i in ranked if models[i]["status"] == "ok"]
    y = np.array([c == "fake" for c in test_classes])
    p_best, p_worst = np.array(models[ok[0]]["test_prob"]), np.array(models[ok[-1]]["test_prob"])
    candidates = np.flatnonzero(((p_best > 0.5) == y) & ((p_worst > 0.5) != y))
    candidates = candidates[np.argsort(-np.abs(p_worst[candidates] - 0.5), kind="stable")]
    by_class = [list(candidates[y[candidates] == truth]) for truth in (True, False)]
    chosen, shown = [], set()
    while len(chosen) < n and any(by_class):
        for queue in by_class:
            if queue and len(chosen) < n:
                pick = next((i for i in queue if test_sources[i] not in shown), queue[0])
                queue.remove(pick)
                chosen.append(int(pick))
                shown.add(test_sources[pick])
    return ok[0], ok[-1], chosen


def train_mistakes(settings, data, reads, env):
    result = train_summary(settings, data, reads, env)
    sources = [data["sources"].get(path, path) for path in result["test_paths"]]
    result["best"], result["worst"], result["chosen"] = pick_mistakes(result["models"], result["ranking"],
                                                                      result["test_classes"], sources)
    result["sources"] = [sources[i] for i in result["chosen"]]
    result["arrays"] = {}
    for k, i in enumerate(result["chosen"]):
        image = decode_one(os.path.join(data["dir"], result["test_paths"][i]), [lambda rgb: rgb])[0]
        image.thumbnail((256, 256))  # uint8 pixels, the longest side at most 256, as the figure shows it
        result["arrays"][f"image_{k}"] = np.asarray(image)
    return result


def mistakes_finding(result):
    """7.6-2: the class the worst model calls most test images, and how many images are shown of how many."""
    best, worst = result["models"][result["best"]], result["models"][result["worst"]]
    truth = np.array([c == "fake" for c in result["test_classes"]])
    worst_fake = np.array(worst["test_prob"]) > 0.5
    candidates = int((((np.array(best["test_prob"]) > 0.5) == truth) & (worst_fake != truth)).sum())
    classes = [result["test_classes"][i] for i in result["chosen"]]
    share_fake = float(np.mean(worst_fake))
    return dict(best=model_name(best), worst=model_name(worst), shown=len(classes),
                candidates=candidates, real=classes.count("real"), fake=classes.count("fake"),
                said="fake" if share_fake >= 0.5 else "real", share=max(share_fake, 1 - share_fake),
                key=f"{candidates} right for the best, wrong for the worst")


def report_mistakes(result, n=5):
    found = mistakes_finding(result)
    answer = Answer(result["section"], "Five test images the best model classifies correctly and the worst "
                    "does not", HEADLINE.format(**found), [], found["key"])
    best, worst = result["models"][result["best"]], result["models"][result["worst"]]

    def said(m, i):
        p = m["test_prob"][i]
        return f"{'fake' if p > 0.5 else 'real'} (p={max(p, 1 - p):.2f})"
    fig, axes = subplots(1, n, figsize=(3.2 * n, 4.4), subplot_kw=dict(frame_on=False, xticks=[], yticks=[]))
    for k, i in enumerate(result["chosen"]):
        axes[k].imshow(result["arrays"][f"image_{k}"])
        axes[k].set_title(f"true: {result['test_classes'][i]} ({result['sources'][k]})\nbest says "
                          f"{said(best, i)}\nworst says {said(worst, i)}", fontsize=9)
    fig.suptitle(f"Right for the best model, {found['best']} ({best['test_acc']:.3f}); wrong for the worst, "
                 f"{found['worst']} ({worst['test_acc']:.3f}); p: probability of the class said", fontsize=10)
    rows = [[result["test_paths"][i], said(best, i), said(worst, i)] for i in result["chosen"]]
    table = markdown_table(["test image (class folder: the truth)", "best says", "worst says"], rows)
    return Report([table], {"mistakes.png": (fig, f"Picked: {RULES}.")}, [answer])


QUESTION = Question("mistakes", "7.6-2", "Mistakes: right for the best model, wrong for the worst", {},
                    train_mistakes, report_mistakes, reads=tuple(BASELINES))
