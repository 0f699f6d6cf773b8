"""6.1.2-4 batch size: batch 1, 16, 128 and 1024: accuracy, iterations per epoch, the step losses' noise."""
import numpy as np
import torch
import torch.nn.functional as F
from torch.func import functional_call, grad, vmap

from common import finite_or_none, held_tensor, seed_everything
from plots import PALETTE, Answer, Report, finish, markdown_table, plot_mean_band, render, subplots
from questions.epochs import spread
from runner import Question
from section6 import SKELETON, arch_of, build_model, seed_runs, train_group
from stats import as_array, best, epochs_axis, falls_with, group_by, mean_std, paired

NOISE_STEPS = 100  # the last step losses, whose spread measures how noisy a batch size's steps are
WINDOWS = 300  # windows the step losses are drawn in, log-spaced as the step axis: the first steps alone
NOISE_ROWS = 4096  # one fixed draw of training rows: their per-example gradients take a tenth of a second
NOISE_EVERY = 5  # epochs between noise-scale measurements (also after epoch 1, for the first-epoch gains)
PAYS = 0.5  # half the best loss drop an epoch: examples needed, E_min (1 + B / B_noise), double at B_noise
ACCURACY_TEXT = {
    "highest": "(i) Batch {batch} is the most accurate ({acc:.3f} best validation accuracy)",
    "tied": ("(i) Batch {batch} and {other} tie as the most accurate ({acc:.3f}, {other_acc:.3f} best "
             "validation accuracy; {n} seeds cannot separate them at 95%)"),
}
TREND_TEXT = {"falls": "falls", "uneven": "does not fall"}
NOISE_TEXT = {
    "stops": "more samples per step stop paying {where} B_simple.",
    "pays_above": "batch sizes above B_simple still pay.",
    "one_side": "no batch sizes lie on both sides of B_simple to tell.",
}


def step_windows(losses, n_windows=WINDOWS):
    """Log-spaced windows of step losses: each's last step (1-based), mean, p10, p90 (NaN: none finite)."""
    ends = np.unique(np.geomspace(1, len(losses), n_windows).round().astype(int))
    pooled = [window[np.isfinite(window)] for window in np.split(losses, ends[:-1])]
    stats = np.array([[np.mean(p), *np.percentile(p, [10, 90])] if len(p) else [np.nan] * 3 for p in pooled],
                     dtype=np.float32)
    return {"end": ends.astype(np.int32), "mean": stats[:, 0], "p10": stats[:, 1], "p90": stats[:, 2]}


def noise_scale(model, params, X, y):
    """B_simple = tr(Sigma) / |G|^2 (McCandlish et al. 2018, eq. 2.8), |G|^2 less its bias tr(Sigma) / n."""
    def example_loss(example_params, x, label):
        return F.cross_entropy(functional_call(model, example_params, (x[None],)), label[None])
    grads = vmap(grad(example_loss), in_dims=(None, 0, 0))(params, X, y)
    flat = torch.cat([g.flatten(1) for g in grads.values()], 1)
    trace = flat.var(0).sum()
    squared_norm = flat.mean(0).pow(2).sum() - trace / len(y)
    return trace / squared_norm if squared_norm > 0 else torch.tensor(torch.nan)


def noise_scale_runs(settings, data, env):
    """Beyond the protocol: B_simple at epochs 0, 1 and every NOISE_EVERY, and the initial val loss."""
    arch, runs, (X, y) = arch_of(settings), seed_runs(settings, settings["lr"]), data["train"]
    rows = torch.randperm(len(y), generator=torch.Generator().manual_seed(settings["seed"]))[:NOISE_ROWS]
    X_rows, y_rows = X[rows.to(X.device)], y[rows.to(y.device)]
    for run in runs:  # the initial nets, as train_group builds them from the seeds
        seed_everything(run["seed"])
        model = build_model(arch, data["meta"]["n_classes"]).to(X.device)
        params = {name: p.detach() for name, p in model.named_parameters()}
        run["noise_scale_init"] = finite_or_none(noise_scale(model, params, X_rows, y_rows))
        with torch.no_grad():
            run["val_loss_init"] = float(F.cross_entropy(model(data["val"][0]), data["val"][1]))
    epochs = iter(range(1, settings["noise_epochs"] + 1))

    def each_model(stacked, _):
        epoch = next(epochs)
        if epoch > 1 and epoch % NOISE_EVERY:
            return {"noise_scale": torch.full((len(runs),), torch.nan)}
        weights = [{name: held_tensor(stacked, name)[k].reshape(p.shape) for name, p in params.items()}
                   for k in range(len(runs))]
        return {"noise_scale": torch.stack([noise_scale(model, w, X_rows, y_rows) for w in weights])}
    return train_group(data, runs, arch, settings, env, "noise scale", settings["noise_epochs"],
                       epoch_measure=each_model)[0]


def train_batch_size(settings, data, reads, env):
    """loss_noise: the std of a run's last NOISE_STEPS step losses; then noise_scale_runs."""
    results, arrays = [], {}
    for batch_size, epochs in zip(settings["batch_sizes"], settings["batch_size_epochs"]):
        group, _ = train_group(data, seed_runs(settings, settings["lr"]), arch_of(settings), settings, env,
                               f"batch {batch_size}", epochs, batch_size, record_steps=True)
        for run in group:
            losses = np.array(run["history"].pop("step_loss"), dtype=float)
            run["loss_noise"] = finite_or_none(np.nanstd(losses[-NOISE_STEPS:], ddof=1))
            if run is group[0]:
                arrays.update({f"steps_{batch_size}_{key}": v for key, v in step_windows(losses).items()})
        results += group
    noise_runs = noise_scale_runs(settings, data, env) if settings["noise_epochs"] else []
    return {"runs": results, "noise_runs": noise_runs, "arrays": arrays}


def noise_scale_finding(b_simple, gains):
    """Do batches above B_simple (low, high) stop paying? gains: batch -> first-epoch val loss drop."""
    best_gain = max(gains.values())
    pays = {b: gain >= PAYS * best_gain for b, gain in gains.items()}
    below = [pays[b] for b in gains if b < b_simple[0]]
    above = [pays[b] for b in gains if b > b_simple[1]]
    case = "one_side" if not below or not above else "pays_above" if all(below) and any(above) else "stops"
    return dict(case=case, where="above" if all(below) else "already below",
                share={b: gain / best_gain for b, gain in gains.items()})


def accuracy_finding(best_acc):
    """The most accurate batch size, tied with the runner-up where a paired t-test cannot separate them."""
    means = {b: float(np.mean(as_array(accs))) for b, accs in best_acc.items()}
    top, *others = sorted(means, key=means.get, reverse=True)
    if not others:
        return dict(case="highest", batch=top, acc=means[top])
    versus = paired(best_acc[others[0]], best_acc[top])
    return dict(versus, case="tied" if versus["case"] == "tie" else "highest", batch=top, acc=means[top],
                other=others[0], other_acc=means[others[0]])


def trend_finding(values):
    """Whether a measure (batch size -> its value) falls with every larger batch."""
    small, large = min(values), max(values)
    return dict(case="falls" if falls_with(list(values), list(values.values())) else "uneven", small=small,
                large=large, at_small=values[small], at_large=values[large])


def noise_scale_panel(ax, by_bs, noise_runs):
    """Draws B_simple per epoch against the batch sizes; returns the bullet of noise_scale_finding."""
    history = np.array([as_array([r["noise_scale_init"]] + r["history"]["noise_scale"]) for r in noise_runs])
    epochs = np.flatnonzero(~np.isnan(history).all(0))  # those measured
    plot_mean_band(ax, epochs, history[:, epochs], "B_simple (mean over seeds, band min..max)", color="black",
                   linewidth=2, marker="o", markersize=4)
    for color, batch_size in zip(PALETTE, by_bs):
        ax.axhline(batch_size, color=color, linestyle="--", linewidth=1.5, label=f"batch {batch_size}")
    ax.set_yscale("log")
    finish(ax, "epoch (0: initialisation)", "B_simple = tr(Sigma) / |G|^2 (log scale)",
           f"beyond the protocol: noise scale at batch {noise_runs[0]['batch_size']}, {NOISE_ROWS:,} rows",
           loc="upper left", bbox_to_anchor=(1, 1), fontsize=8)  # outside: no room inside is free of data
    gains = {b: float(np.nanmean([n["val_loss_init"] - as_array(r["history"]["val_loss"])[0]
                                  for n, r in zip(noise_runs, runs)])) for b, runs in by_bs.items()}
    first_epoch = np.nanmean(history[:, :2], axis=0)  # at initialisation and after epoch 1
    found = noise_scale_finding((float(np.nanmin(first_epoch)), float(np.nanmax(first_epoch))), gains)
    shares = ", ".join(f"{b}: {share:.0%}" for b, share in found["share"].items())
    return (f"Beyond the protocol, the gradient noise scale B_simple is {spread(first_epoch, '{:.0f}')} in "
            f"the first epoch; first-epoch loss drop as a share of the best: {shares}; "
            f"{render(NOISE_TEXT, found)}")


def report_batch_size(result):
    by_bs = group_by(result["runs"], "batch_size")
    panels = 2 + bool(result["noise_runs"])
    fig, (ax_epoch, ax_loss, *ax_noise) = subplots(1, panels, figsize=(7.5 * panels, 6))
    rows, best_acc, seconds, loss_std = [], {}, {}, {}
    for order, (color, (batch_size, runs)) in enumerate(zip(PALETTE, by_bs.items())):
        steps, epochs = runs[0]["steps_per_epoch"], runs[0]["epochs"]
        plot_mean_band(ax_epoch, epochs_axis(runs), [r["history"]["val_acc"] for r in runs],
                       label=f"batch {batch_size}", color=color, marker="o", markersize=4)
        window = {key: result["arrays"][f"steps_{batch_size}_{key}"] for key in ("end", "mean", "p10", "p90")}
        # the smallest batch's wide band lightest and lowest, so the bands of the others show on top of it
        ax_loss.fill_between(window["end"], window["p10"], window["p90"], color=color, linewidth=0,
                             alpha=0.08 if order == 0 else 0.25, zorder=order)
        ax_loss.plot(window["end"], window["mean"], color=color, linewidth=1 if order == 0 else 2,
                     zorder=10 + order, label=f"batch {batch_size}")
        best_acc[batch_size] = [best(r, "val_acc", max) for r in runs]
        seconds[batch_size] = runs[0]["group_wall_s"] / epochs
        loss_std[batch_size] = float(np.mean([r["loss_noise"] for r in runs if r["status"] == "ok"]))
        rows.append((batch_size, epochs, steps, f"{seconds[batch_size]:.2f}", f"{loss_std[batch_size]:.3f}",
                     mean_std(best_acc[batch_size])))
    finish(ax_epoch, "epoch", "validation accuracy (fraction correct)",
           "(i) validation accuracy per epoch (mean over seeds, band = min..max)", fontsize=8)
    finish(ax_loss, "optimizer step (log scale)", "training loss of the step's batch (nats)",
           f"(iii) training loss per step, seed {result['runs'][0]['seed']} (band: 10th..90th percentile)",
           fontsize=8)
    ax_loss.set_xscale("log")
    table = markdown_table(["batch", "epochs", "iterations per epoch", "seconds per epoch",
                            "step loss std (last 100)", "best val acc"], rows)
    highest = accuracy_finding(best_acc)
    trends = [("ii", "the time per epoch", " s", trend_finding(seconds)),
              ("iii", "the step losses' std (last 100 steps)", "", trend_finding(loss_std))]
    bullets = [f"({item}) {measure.capitalize()} {TREND_TEXT[f['case']]} with every larger batch: "
               f"{f['at_small']:.3g}{unit} at batch {f['small']}, {f['at_large']:.3g}{unit} at {f['large']}."
               for item, measure, unit, f in trends]
    if result["noise_runs"]:
        bullets.append(noise_scale_panel(ax_noise[0], by_bs, result["noise_runs"]))
    cut = " and ".join(measure for _, measure, _, f in trends if f["case"] == "falls")
    headline = render(ACCURACY_TEXT, highest) + (f"; every larger batch cuts {cut}." if cut else ".")
    answer = Answer("6.1.2-4", "How does the batch size affect (i) accuracy, (ii) speed, (iii) stability?",
                    headline, bullets, f"best val acc {highest['acc']:.3f} at batch {highest['batch']}")
    caption = "Left to right: accuracy per epoch, the step losses' scatter, the noise scale."
    return Report([table], {"batch_size.png": (fig, caption)}, [answer])


QUESTION = Question("batch_size", "6.1.2-4", "Batch size",
                    dict(SKELETON, batch_norm=False, batch_sizes=[1, 16, 128, 1024],
                         batch_size_epochs=[1, 10, 50, 50], batch_size=256, noise_epochs=30),
                    train_batch_size, report_batch_size)
