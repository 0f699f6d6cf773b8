"""Learning rate by batch size (beyond the report): every lr at every batch size, 3 seeds each."""
import math

import numpy as np

from plots import from_sentences, Report, finish, markdown_table, plt, render
from runner import Question
from section6 import SKELETON_WITHOUT_LR, arch_of, lr_runs, train_group
from stats import as_array, falls_with, final, listed, mean_std, paired


def train_sweep(settings, data, reads, env):
    """Beyond the protocol: every lr at every batch size, for the same epochs; one lockstep group per batch
    size."""
    results = []
    for batch_size in settings["batch_sizes"]:
        results += train_group(data, lr_runs(settings), arch_of(settings), settings, env,
                               f"sweep, batch {batch_size}", batch_size=batch_size)[0]
    return {"runs": results}


def sweep_findings(finals_of, lrs, sizes):
    """Does the best lr grow with the batch size, as the linear scaling rule (lr in proportion to the batch,
    Goyal et al. 2017) says? finals_of: (batch size, lr) -> final validation accuracy per seed (None:
    diverged, counted as 0). Per batch size: the lr of the highest mean, the lrs tied with it (paired over
    seeds), and the centre of those (their geometric mean), which a flat top leaves steadier than the argmax;
    then the trend of the centres, and their growth against the batch's."""
    def mean(key):
        return float(np.mean([0.0 if v is None else v for v in finals_of[key]]))
    rows = []
    for size in sizes:
        ranked = sorted(lrs, key=lambda lr: -mean((size, lr)))
        top = ranked[0]
        tied = [lr for lr in ranked[1:]
                if paired(finals_of[(size, lr)], finals_of[(size, top)])["case"] == "tie"]
        rows.append((size, top, mean((size, top)), tied, float(np.exp(np.mean(np.log([top] + tied))))))
    if len(sizes) < 2:
        return [dict(case="one_batch_size", rows=rows)]
    centres = [row[4] for row in rows]
    rises, falls = falls_with(sizes, [-c for c in centres]), falls_with(sizes, centres)
    case = ("same_lr" if rises and falls else "grows" if rises else "shrinks" if falls else "mixed")
    lr_ratio, batch_ratio = centres[-1] / centres[0], sizes[-1] / sizes[0]
    step = float(np.median(np.diff(np.log(sorted(lrs))))) if len(lrs) > 1 else 0.0
    rule = ("linear" if abs(math.log(lr_ratio) - math.log(batch_ratio)) <= step else
            "slower" if lr_ratio < batch_ratio else "faster")
    return [dict(case=case, rows=rows, lr_ratio=lr_ratio, batch_ratio=batch_ratio, rule=rule,
                 step=math.exp(step), small=sizes[0], large=sizes[-1])]


def best_lrs_listed(rows):
    return "; ".join(f"batch {size}: lr {lr:g} ({acc:.3f}"
                     + (f"; tied: {listed(tied, '{:g}')}" if tied else "") + f"; centre {centre:.2g})"
                     for size, lr, acc, tied, centre in rows)


RULE = {"linear": "as the linear scaling rule says (within one step of the lr grid, {step:.1f}x)",
        "slower": "slower than the linear scaling rule, which would multiply it by {batch_ratio:g}",
        "faster": "faster than the linear scaling rule, which would multiply it by {batch_ratio:g}"}
BEST = ("the best lr (highest mean final validation accuracy; lrs within the seeds' noise of it tied, and "
        "their centre)")
SWEEP_TEXT = {
    "one_batch_size": lambda f: f"Best lr: {best_lrs_listed(f['rows'])}; one batch size shows no trend.",
    "grows": lambda f: (f"The best lr grows with the batch size: {BEST}: {best_lrs_listed(f['rows'])}. From "
                        f"batch {f['small']} to {f['large']} the centre is {f['lr_ratio']:.2g}x larger, "
                        + RULE[f["rule"]].format(**f) + "."),
    "same_lr": lambda f: (f"The best lr stays put: {BEST}: {best_lrs_listed(f['rows'])}; so on this grid it "
                          f"does not follow the linear scaling rule ({f['batch_ratio']:g}x)."),
    "shrinks": lambda f: (f"The best lr shrinks as the batch grows, against the linear scaling rule: {BEST}: "
                          f"{best_lrs_listed(f['rows'])}."),
    "mixed": lambda f: (f"The best lr moves with no steady trend: {BEST}: {best_lrs_listed(f['rows'])}; so "
                        "the grid does not show the linear scaling rule."),
}


def report_sweep(result):
    runs = result["runs"]
    lrs = sorted({r["lr"] for r in runs}, reverse=True)
    sizes = sorted({r["batch_size"] for r in runs})
    finals_of = {(size, lr): [final(r, "val_acc") for r in runs if (r["batch_size"], r["lr"]) == (size, lr)]
                 for size in sizes for lr in lrs}
    accs = np.array([[np.mean(as_array(finals_of[(size, lr)])) for lr in lrs] for size in sizes])
    found = sweep_findings(finals_of, lrs, sizes)
    fig, ax = plt.subplots(figsize=(1.3 * len(lrs) + 3, 0.8 * len(sizes) + 2), layout="constrained")
    cmap = plt.get_cmap("viridis").with_extremes(bad="0.85")  # a cell where every seed diverged: light grey
    image = ax.imshow(np.ma.masked_invalid(accs), cmap=cmap, aspect="auto", vmin=0, vmax=1)
    for i, row in enumerate(accs):
        for j, acc in enumerate(row):
            ax.text(j, i, "diverged" if np.isnan(acc) else f"{acc:.3f}", ha="center", va="center", fontsize=9,
                    color="black" if np.isnan(acc) or acc > 0.6 else "white")
    labels = {True: "best lr of the batch size", False: "tied with it within the seeds' noise"}
    for i, (_, top, _, tied, _) in enumerate(found[0]["rows"]):
        for lr in [top] + tied:
            best = lr == top
            ax.add_patch(plt.Rectangle((lrs.index(lr) - 0.45, i - 0.45), 0.9, 0.9, fill=False,
                                       edgecolor="red", linewidth=2.5 if best else 1.2,
                                       linestyle="-" if best else "--", label=labels.pop(best, None)))
    ax.set_xticks(range(len(lrs)), [f"{lr:g}" for lr in lrs])
    ax.set_yticks(range(len(sizes)), [str(size) for size in sizes])
    fig.colorbar(image, ax=ax, label="final validation accuracy (mean over seeds)")
    epochs = runs[0]["epochs"]
    finish(ax, "learning rate (log spaced)", "batch size", f"Final validation accuracy after {epochs} epochs",
           loc="upper left", bbox_to_anchor=(0, -0.15), fontsize=8)
    ax.grid(False)
    table = markdown_table(["batch size"] + [f"lr {lr:g}" for lr in lrs],
                           [[size] + [mean_std(finals_of[(size, lr)]) for lr in lrs] for size in sizes])
    note = (f"Every cell: depth {runs[0]['depth']}, width {runs[0]['width']}, batch norm "
            f"{'on' if runs[0]['batch_norm'] else 'off'}, {epochs} epochs, plain SGD; final validation "
            "accuracy, mean ± std over seeds.")
    caption = ("Where the red boxes (each batch size's best lr, solid, and those tied with it, dashed) move "
               "as the batch grows.")
    return Report([note, table], {"sweep.png": (fig, caption)}, [],
                  [from_sentences("", "Does the best learning rate grow with the batch size?",
                          [render(SWEEP_TEXT, f) for f in found])])


QUESTION = Question("sweep", "", "Learning rate by batch size (beyond the report)",
                    dict(SKELETON_WITHOUT_LR, batch_norm=False, lrs=[1, 0.3, 0.1, 0.03, 0.01, 0.003],
                         batch_sizes=[32, 128, 512, 2048], epochs=10), train_sweep, report_sweep)
