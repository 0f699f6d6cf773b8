"""6.2.1-6 fixing the vanishing gradients: eight changes to the 100-layer net, each judged on two criteria."""
import math

import numpy as np

from plots import Answer, Report, figure, markdown_table, render
from questions.gradients import gradient_panels, zero_layers
from runner import Question
from section6 import GRADIENTS, arch_of, seed_runs, train_group
from stats import GAP_TOLERANCE, final, mean_std, seed_std

RESIDUAL_FIXES = {  # fix: (how the report names it, what it changes in the plain net)
    "skip_post": ("skips x + ReLU(Linear(x))", dict(residual="post")),
    "batch_norm": ("batch norm", dict(batch_norm=True)),
    "skip_post_bn": ("skips x + ReLU(BN(Linear(x)))", dict(residual="post", batch_norm=True)),
    "skip_pre": ("pre-activation skips x + Linear(ReLU(x))", dict(residual="pre")),
    "skip_pre_bn": ("pre-activation skips x + Linear(ReLU(BN(x)))", dict(residual="pre", batch_norm=True)),
    "skipinit": ("SkipInit x + g * ReLU(Linear(x)), g from 0", dict(residual="skipinit")),
    "he_init": ("He (Kaiming-normal) initialisation", dict(init="he")),
    "leaky_relu": ("LeakyReLU in place of ReLU", dict(activation="leaky_relu")),
}


def train_residual(settings, data, reads, env):
    results = []
    for fix, (_, changes) in RESIDUAL_FIXES.items():
        runs = seed_runs(settings, settings["lr"], fix=fix)
        results += train_group(data, runs, arch_of(settings, **changes), settings, env,
                               f"depth {settings['depth']} {fix}", record_grads=True, diagnose=True)[0]
    return {"runs": results, "baseline_runs": reads["gradients"]["runs"]}


SOLVED_SDS = 2  # accuracy beats the plain net's when above it by more than two pooled seed std deviations
MAX_STEP = 1.0  # a first layer-0 step (lr * ||grad W||) longer rewrites it: its default init has norm ~1.2


def criteria(runs, plain_accs):
    """Both need every seed to train; gradient: no layer exactly 0 all epochs; accuracy: val acc > bar."""
    trained = [r for r in runs if r["status"] == "ok"]
    accs = [final(r, "val_acc") for r in trained]
    spread = math.sqrt((seed_std(accs) ** 2 + seed_std(plain_accs) ** 2) / 2)
    bar = float(np.mean(plain_accs)) + max(SOLVED_SDS * spread, GAP_TOLERANCE)
    val = float(np.mean(accs)) if accs else math.nan
    zero_seeds = sum(bool(zero_layers(r)) for r in trained)
    gradient = len(trained) == len(runs) and not zero_seeds
    accuracy = len(trained) == len(runs) and val > bar
    grad_sq = max(math.inf if r["init_grad_sq_norm"][0] is None else r["init_grad_sq_norm"][0] for r in runs)
    case = "solved" if gradient and accuracy else "disagree" if gradient or accuracy else "neither"
    return dict(case=case, gradient=gradient, accuracy=accuracy, val=val, bar=bar, seeds=len(runs),
                diverged=len(runs) - len(trained), step=runs[0]["lr"] * math.sqrt(grad_sq))


def fix_findings(plain_accs, judged):
    """The headline: changes meeting both criteria; bullets: criteria that disagree, steps over MAX_STEP."""
    solved = [f for f in judged if f["case"] == "solved"]
    headline = dict(case="solved_by" if solved else "none_solved", names="; ".join(f["name"] for f in solved),
                    plain=float(np.mean(plain_accs)), best=max(solved, key=lambda f: f["val"], default=None))
    groups = {"disagree": [f for f in judged if f["case"] == "disagree"],
              "blown": [f for f in judged if f["case"] != "solved" and f["step"] > MAX_STEP]}
    return [headline] + [dict(case=case, items=items) for case, items in groups.items() if items]


TEXT = {  # the bullets: an opening, then each of their changes
    "solved_by": ("Solved by {names}: every layer gets a gradient and validation accuracy beats the plain "
                  "net's {plain:.3f} beyond the seed noise."),
    "none_solved": ("Not solved: no change both gives every layer a gradient and beats the plain net's "
                    "validation accuracy {plain:.3f} beyond the seed noise."),
    "disagree": lambda b: "The criteria disagree for " + "; ".join(
        f"{f['name']} (meets {'gradient' if f['gradient'] else 'accuracy'} only)" for f in b["items"]) + ".",
    "blown": lambda b: "A first step far longer than layer 0's weights (norm ~1.2) breaks " + "; ".join(
        f"{f['name']} (a step of {f['step']:.1e}; {f['diverged']} of {f['seeds']} seeds diverge)"
        for f in b["items"]) + ".",
}


def report_residual(result):
    fixes = [("plain", result["baseline_runs"])] + [
        (label, [r for r in result["runs"] if r["fix"] == fix]) for fix, (label, _) in RESIDUAL_FIXES.items()]
    shown = [next((r for r in runs if r["status"] == "ok"), runs[0]) for _, runs in fixes]
    fig = figure((17, 12))
    titles = [f"{name} (seed {run['seed']})" for (name, _), run in zip(fixes, shown)]
    gradient_panels(fig.subplots(3, 3, sharey=True).ravel(), shown, titles)
    fig.suptitle("||grad W||² per layer of the 100-layer net with each change, one seed each")
    plain_accs = [final(r, "val_acc") for r in result["baseline_runs"] if r["status"] == "ok"]
    judged = [dict(criteria(runs, plain_accs), name=name) for name, runs in fixes]
    headline, *bullets = fix_findings(plain_accs, judged[1:])
    best = headline["best"]
    key = f"{best['name']}: val acc {best['val']:.3f} vs {headline['plain']:.3f}" if best else "none"
    answer = Answer("6.2.1-6", "Implement the change: did it solve the problem?", render(TEXT, headline),
                    [render(TEXT, b) for b in bullets], key)
    rows = [[f["name"], mean_std([final(r, "val_acc") for r in runs]), "yes" if f["gradient"] else "no",
             f"{'yes' if f['accuracy'] else 'no'} (bar {f['bar']:.3f})"]
            for f, (_, runs) in zip(judged, fixes)]
    table = markdown_table(["change", "val acc", "gradient in every layer", "accuracy beyond noise"], rows)
    caption = "A change keeps every layer's gradient alive where no line falls toward 0."
    return Report([table], {"residual.png": (fig, caption)}, [answer])


QUESTION = Question("residual", "6.2.1-6", "Fixing the vanishing gradients (bonus)", GRADIENTS,
                    train_residual, report_residual, reads=("gradients",))
