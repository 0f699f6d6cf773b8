"""Learning rate by batch size, beyond the protocol: every lr at every batch size, on standardised inputs."""
import numpy as np

from plots import Answer, Report, finish, markdown_table, render, subplots
from runner import Question
from section6 import SKELETON_WITHOUT_LR, arch_of, lr_runs, train_group
from stats import GAP_TOLERANCE, at_chance, falls_with, final, mean_std_at_chance, paired

SWEEP_TEXT = {
    "decided": ("{answer}: the best lr (the centre of it and its ties) {verb} with the batch: {low:.2g} at "
                "batch {small}, {high:.2g} at {large} ({lr_ratio:.2g}x for a {batch_ratio:g}x batch)."),
    "undecided": "The grid cannot tell: {decided} batch size(s) name a best lr beyond the seeds' noise.",
}
MARKED = {"best": "**{}**", "tied": "≈{}"}  # in the table; in the figure, a solid and a dashed box


def train_sweep(settings, data, reads, env):
    """Every lr at every batch size; chance: the share of the most frequent validation class."""
    results = []
    for batch_size in settings["batch_sizes"]:
        results += train_group(data, lr_runs(settings), arch_of(settings), settings, env,
                               f"sweep, batch {batch_size}", batch_size=batch_size)[0]
    return {"runs": results, "chance": data["val"][1].bincount().max().item() / len(data["val"][1])}


def row_finding(cells, chance):
    """A row's best lr, the lrs paired-tied with it, their geometric centre; none at chance or if all tie."""
    means = {lr: float(np.mean(values)) for lr, values in cells.items()}
    top = max(means, key=means.get)
    learned = [lr for lr in cells if means[lr] > chance + GAP_TOLERANCE]
    tied = [lr for lr in learned if lr != top and paired(cells[lr], cells[top])["case"] == "tie"]
    if top not in learned or len(tied) == len(cells) - 1:
        return dict(best=None, marks={})
    return dict(best=top, marks={top: "best", **dict.fromkeys(tied, "tied")},
                centre=float(np.exp(np.mean(np.log([top] + tied)))))


def sweep_finding(grid, chance):
    """Do the rows' centres (row_finding) never fall, and rise? grid: size -> {lr: accs, None diverged}."""
    rows = {size: row_finding({lr: at_chance(values, chance) for lr, values in cells.items()}, chance)
            for size, cells in grid.items()}
    decided = sorted(size for size, row in rows.items() if row["best"] is not None)
    if len(decided) < 2:
        return dict(case="undecided", rows=rows, decided=len(decided))
    centres = [rows[size]["centre"] for size in decided]
    grows = falls_with(decided, [-c for c in centres]) and centres[-1] > centres[0]
    return dict(case="decided", grows=grows, answer="Yes" if grows else "No", rows=rows, small=decided[0],
                large=decided[-1], low=centres[0], high=centres[-1], lr_ratio=centres[-1] / centres[0],
                batch_ratio=decided[-1] / decided[0], verb="grows" if grows else "does not grow steadily")


def report_sweep(result):
    runs, chance = result["runs"], result["chance"]
    lrs = sorted({r["lr"] for r in runs}, reverse=True)
    sizes = sorted({r["batch_size"] for r in runs})
    grid = {size: {lr: [final(r, "val_acc") for r in runs if (r["batch_size"], r["lr"]) == (size, lr)]
                   for lr in lrs} for size in sizes}
    found = sweep_finding(grid, chance)
    marks = {(size, lr): mark for size, row in found["rows"].items() for lr, mark in row["marks"].items()}
    means = [[np.mean(at_chance(grid[size][lr], chance)) for lr in lrs] for size in sizes]
    from matplotlib.patches import Rectangle  # here: matplotlib is imported at the first figure
    fig, ax = subplots(figsize=(1.3 * len(lrs) + 3, 0.8 * len(sizes) + 2))
    image = ax.imshow(means, cmap="viridis", aspect="auto", vmin=0, vmax=1)
    labels = {"best": "best lr of the batch size", "tied": "tied with it within the seeds' noise"}
    for (size, lr), mark in marks.items():
        ax.add_patch(Rectangle((lrs.index(lr) - 0.45, sizes.index(size) - 0.45), 0.9, 0.9, fill=False,
                               edgecolor="red", linewidth=2.5 if mark == "best" else 1.2,
                               linestyle="-" if mark == "best" else "--", label=labels.pop(mark, None)))
    ax.set_xticks(range(len(lrs)), [f"{lr:g}" for lr in lrs])
    ax.set_yticks(range(len(sizes)), [str(size) for size in sizes])
    fig.colorbar(image, ax=ax, label="final validation accuracy (mean over seeds)")
    finish(ax, "learning rate (log spaced)", "batch size", f"Final validation accuracy after "
           f"{runs[0]['epochs']} epochs, {runs[0]['features']} inputs", loc="upper left",
           bbox_to_anchor=(0, -0.15), fontsize=8)
    ax.grid(False)
    table = markdown_table(["batch size"] + [f"lr {lr:g}" for lr in lrs], [[size] + [
        MARKED.get(marks.get((size, lr)), "{}").format(mean_std_at_chance(grid[size][lr], chance))
        for lr in lrs] for size in sizes])
    note = (f"Final validation accuracy, mean ± std over {len({r['seed'] for r in runs})} seeds (a diverged "
            f"seed at chance, {chance:.3f}); **best**, ≈tied.")
    key = "best lr (centre) {low:.2g} at batch {small}, {high:.2g} at {large}"
    answer = Answer("", "Does the best learning rate grow with the batch size?", render(SWEEP_TEXT, found),
                    [], key.format(**found) if found["case"] == "decided" else "no best lr")
    caption = "Each batch size's best lr (solid box) and its ties (dashed)."
    return Report([note, table], {"sweep.png": (fig, caption)}, [answer])


QUESTION = Question("sweep", "", "Learning rate by batch size (beyond the report)",
                    dict(SKELETON_WITHOUT_LR, seeds=5, batch_norm=False, features="standardized",
                         lrs=[1, 0.3, 0.1, 0.03, 0.01, 0.003], batch_sizes=[32, 128, 512, 2048], epochs=10),
                    train_sweep, report_sweep)
