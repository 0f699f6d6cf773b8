"""6.1.2-1 learning rate: the lr sweep, against the loss of a uniform guess and of the class frequencies."""
import math

import numpy as np

from plots import PALETTE, Answer, Report, finish, markdown_table, plot_mean_band, subplots
from runner import Question
from section6 import SKELETON_WITHOUT_LR, arch_of, class_prior_entropy, lr_runs, train_group
from stats import epochs_axis, falling_finding, final, finals, group_by, listed, mean_std, paired, status_text

NEAR = 0.03  # nats: a loss this close to a reference sits on it; a net that learns leaves them by 0.1 or more
SEED_SPREAD = 0.3  # nats: seeds whose final losses span more disagree; a healthy setting's end within 0.1


def train_lr(settings, data, reads, env):
    results, _ = train_group(data, lr_runs(settings), arch_of(settings), settings, env, "lr sweep")
    prior = class_prior_entropy(data["train"][1], data["meta"]["n_classes"])
    return {"runs": results, "reference_losses": {"class_prior": prior}}


def seeds_disagree(values):
    """Do the seeds of one setting end far apart (or some diverge and others not)? values: one per seed."""
    finite = [v for v in values if v is not None]
    return 0 < len(finite) < len(values) or (len(finite) > 1 and max(finite) - min(finite) > SEED_SPREAD)


def lr_case(finals, prior, uniform):
    """'too_high' (a seed diverged or at the class-frequency loss), 'stuck' (a uniform guess), 'learning'."""
    if any(v is None or abs(v - prior) < NEAR for v in finals):
        return "too_high"
    return "stuck" if abs(np.mean(finals) - uniform) < NEAR else "learning"


def lr_findings(stats, prior, uniform):
    """The lrs too high, stuck, best (against the runner-up, paired by seed), still falling; each in one."""
    cases = {lr: lr_case(st["finals"], prior, uniform) for lr, st in stats.items()}
    high = [lr for lr in stats if cases[lr] == "too_high"]
    seeds = [v for lr in high for v in stats[lr]["finals"]]
    mean = {lr: float(np.mean(st["finals"])) for lr, st in stats.items() if lr not in high}
    found = dict(high=high, n=len(seeds), diverged=seeds.count(None), prior=prior, uniform=uniform,
                 collapsed=sum(v is not None and abs(v - prior) < NEAR for v in seeds),
                 low={lr: mean[lr] for lr in stats if cases[lr] == "stuck"}, slow=[])
    ranked = sorted((lr for lr in stats if cases[lr] == "learning"), key=mean.get)
    if not ranked:
        return found
    found["best"] = best = dict(lr=ranked[0], final=mean[ranked[0]])
    versus = paired(stats[ranked[0]]["finals"], stats[ranked[1]]["finals"]) if len(ranked) > 1 else {}
    if versus.get("case") in ("tie", "above"):  # which was ahead, in how many seeds and by how much
        best.update(versus, other=ranked[1], ahead=sum(d > 0 for d in versus["diffs"]),
                    low=min(versus["diffs"]), high=max(versus["diffs"]))
    found["slow"] = [lr for lr in ranked[1:] if stats[lr]["trend"] == "falling" and lr < ranked[0]
                     and lr != best.get("other")]
    return found


def lr_answer(found, epochs):
    best, parts, bullets = found.get("best"), [], []
    if found["high"]:
        fates = [f"{k} {fate}" for k, fate in ((found["collapsed"], "collapse to the class-frequency loss "
                 f"({found['prior']:.3f})"), (found["diverged"], "diverge")) if k]
        parts.append(f"too high (lr {listed(found['high'], '{:g}')}), of their {found['n']} seeds "
                     + " and ".join(fates))
    if found["low"]:
        parts.append(f"too low, the net ends near a uniform guess ({found['uniform']:.3f}): "
                     + ", ".join(f"lr {lr:g} at {loss:.3f}" for lr, loss in found["low"].items()))
    if found["slow"]:
        bullets.append(f"Too low to finish in {epochs} epochs: lr {listed(found['slow'], '{:g}')}, whose "
                       "validation loss still falls at the end.")
    if best:
        parts.append(f"lr {best['lr']:g} ends lowest ({best['final']:.3f})")
    if best and "other" in best:
        shown = "can" if best["case"] == "above" else "cannot"
        bullets.append("Best: lr {lr:g} ends below lr {other:g} in {ahead} of {n} seeds, by {low:.2f} to "
                       "{high:.2f} (mean {difference:.2f}); a paired t-test at 95% needs {noise:.2f}, so {n} "
                       "seeds {shown} show it.".format(**best, shown=shown))
    headline = "; ".join(parts)
    key = f"val loss {best['final']:.2f} at lr {best['lr']:g}" if best else "no lr learned"
    return Answer("6.1.2-1", "What do a too-high and a too-low learning rate do?",
                  headline[:1].upper() + headline[1:] + ".", bullets, key)


def report_lr(result):
    by_lr = group_by(result["runs"], "lr")
    n_classes, prior = result["data"]["n_classes"], result["reference_losses"]["class_prior"]
    fig, ax = subplots(figsize=(11, 5.5))
    rows, stats = [], {}
    for color, (lr, runs) in zip([PALETTE[i] for i in (0, 1, 2, 6, 4, 5, 3, 7)], by_lr.items()):  # far apart
        losses, ok = [final(r, "val_loss") for r in runs], [r for r in runs if r["status"] == "ok"]
        apart = seeds_disagree(losses)
        plot_mean_band(ax, epochs_axis(runs), [r["history"]["val_loss"] for r in runs], label=f"lr {lr:g}",
                       color=color, each_seed=apart, linewidth=1.2 if apart else 2)
        rows.append((f"{lr:g}", f"{listed(losses, '{:.3f}')} (each seed)" if apart else mean_std(losses),
                     finals(runs, "val_acc"), status_text(runs)))
        stats[lr] = {"finals": losses,
                     "trend": falling_finding([r["history"]["val_loss"] for r in ok])["case"] if ok else None}
    uniform = math.log(n_classes)
    for y, name in ((uniform, f"uniform guess\nln {n_classes} = {uniform:.3f}"),
                    (prior, f"class frequencies\n{prior:.3f}")):  # dashed: a line that ends on it shows
        ax.axhline(y, color="0.4", linewidth=0.9, linestyle=(0, (4, 4)), zorder=5)
        ax.annotate(name, (1, y), xycoords=("axes fraction", "data"), xytext=(4, 0),
                    textcoords="offset points", va="center", fontsize=8, color="0.3", annotation_clip=False)
    finish(ax, "epoch", "validation loss (cross-entropy, nats)", "Validation loss per epoch by learning "
           "rate (mean over seeds, band = min..max)", loc="upper left", bbox_to_anchor=(1.16, 1), fontsize=9)
    table = markdown_table(["lr", "final val loss", "final val acc", "status"], rows)
    answer = lr_answer(lr_findings(stats, prior, uniform), len(epochs_axis(result["runs"])))
    return Report([table], {"lr.png": (fig, "Where each lr ends against the dashed references.")}, [answer])


QUESTION = Question("lr", "6.1.2-1", "Learning rate",
                    dict(SKELETON_WITHOUT_LR, batch_size=256, batch_norm=False,
                         lrs=[1, 0.2, 0.01, 0.001, 0.0005, 0.00001], epochs=50), train_lr, report_lr)
