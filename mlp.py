"""Section 6: MLPs on 2-D coordinates (European cities -> country).

    python mlp.py --question lr            # one question; outputs in results/mlp/
    python mlp.py --question all           # every question
    python mlp.py --help                   # every flag

Each question writes results/mlp/<question>.png, .md (tables and observations) and .json (settings,
library versions, per-run histories); a rerun with the same settings reuses the .json.
"""
import csv
from argparse import RawDescriptionHelpFormatter
import os
import time
from math import comb

import numpy as np
from matplotlib.ticker import MaxNLocator
import torch
import torch.nn.functional as F
from torch import nn

from common import (ArgumentParser, UserError, file_digest, finite_or_none, library_versions, load_cached, load_result,
                    markdown_table, mean_std, pick_device, plot_mean_band, plot_prediction_map, plt, run_main,
                    save_figure, save_json, save_torch, seed_everything, shown_path, write_question_markdown,
                    train_lockstep)

DEFAULT_DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "europe")
SPLIT_FILES = {"train": "train.csv", "val": "validation.csv", "test": "test.csv"}
COLUMNS = ("long", "lat", "country")
QUICK_ROWS = {"train": 2000, "val": 500, "test": 500}


# ----------------------------------------------------------------------------- data

def read_split(path):
    """(coordinates [N, 2] float32, labels as strings) from a CSV with columns long, lat, country (by name)."""
    if not os.path.isfile(path):
        raise UserError(f"{path}: file not found (a data folder holds train.csv, validation.csv and test.csv)")
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = [h.strip() for h in next(reader, [])]
        missing = [c for c in COLUMNS if c not in header]
        if missing:
            raise UserError(f"{path}: missing column(s) {', '.join(missing)}; "
                            f"the header is {','.join(header) or '(empty)'}")
        index = [header.index(c) for c in COLUMNS]
        coords, labels = [], []
        for line, row in enumerate(reader, start=2):
            if not row:
                continue
            try:
                long, lat, label = (row[i].strip() for i in index)
                coords.append((float(long), float(lat)))
            except (IndexError, ValueError):
                raise UserError(f"{path}: line {line}: expected numbers in long and lat, got {row}") from None
            labels.append(label)
    if not coords:
        raise UserError(f"{path}: no data rows (empty split)")
    coords = np.array(coords, dtype=np.float32)
    bad = ~np.isfinite(coords).all(1)
    if bad.any():
        raise UserError(f"{path}: line {int(np.argmax(bad)) + 2}: coordinates must be finite numbers "
                        "(found NaN or inf)")
    return coords, labels


def read_country_names(data_dir):
    path = os.path.join(data_dir, "countries.csv")
    if not os.path.isfile(path):
        return {}
    with open(path, newline="") as f:
        return {row["id"].strip(): row["name"].strip() for row in csv.DictReader(f)}


def load_data(data_dir, device, quick=False):
    """The three splits as tensors on device, and a description of the data (rows, classes, names)."""
    if not os.path.isdir(data_dir):
        raise UserError(f"{data_dir}: data folder not found")
    splits = {name: read_split(os.path.join(data_dir, file)) for name, file in SPLIT_FILES.items()}
    train_labels = set(splits["train"][1])
    for name in ("val", "test"):
        unseen = sorted(set(splits[name][1]) - train_labels)
        if unseen:
            raise UserError(f"{os.path.join(data_dir, SPLIT_FILES[name])}: class(es) {', '.join(unseen[:5])} "
                            "do not appear in train.csv, so no model can learn them")
    numeric = all(label.lstrip("-").isdigit() for label in train_labels)
    classes = sorted(train_labels, key=int if numeric else str)
    label_note = None
    if not numeric or [int(c) for c in classes] != list(range(len(classes))):
        shown = ", ".join(classes[:5]) + (", ..." if len(classes) > 5 else "")
        label_note = f"labels {shown} mapped onto 0..{len(classes) - 1}"
        print(f"note: {label_note}")
    country_names = read_country_names(data_dir) if numeric else {}
    class_names = [country_names.get(c, c) for c in classes]
    class_id = {c: i for i, c in enumerate(classes)}
    data, rows = {}, {}
    for name, (coords, labels) in splits.items():
        y = np.array([class_id[label] for label in labels], dtype=np.int64)
        if quick:
            coords, y = coords[:QUICK_ROWS[name]], y[:QUICK_ROWS[name]]
        data[name] = (torch.from_numpy(coords).to(device), torch.from_numpy(y).to(device))
        rows[name] = len(y)
    all_coords = np.concatenate([c for c, _ in splits.values()])
    meta = {"dir": os.path.abspath(data_dir),
            "digest": file_digest([os.path.join(data_dir, f) for f in SPLIT_FILES.values()]),
            "rows": rows, "n_classes": len(classes), "class_names": class_names, "label_note": label_note,
            "extent": [float(all_coords[:, 0].min()), float(all_coords[:, 0].max()),
                       float(all_coords[:, 1].min()), float(all_coords[:, 1].max())]}
    return data, meta


# ----------------------------------------------------------------------------- inputs and model

SIN_FREQUENCIES = [round(0.1 * i, 1) for i in range(1, 11)]  # 6.2.7: a in {0.1, ..., 1.0}


def featurize(X, features):
    """raw: the (long, lat) coordinates; sin: sin(a * x) for every a in SIN_FREQUENCIES and each coordinate
    (20 features, those of the longitude first)."""
    if features == "raw":
        return X
    a = torch.tensor(SIN_FREQUENCIES, device=X.device)
    return torch.sin(X[:, :, None] * a).flatten(1)


class MLP(nn.Module):
    """`depth` hidden layers of `width` units, the first taking the input, then an output Linear:
    depth 6 has 7 nn.Linear. A hidden layer is Linear -> ReLU, or Linear -> BatchNorm1d -> ReLU.
    residual=True adds an identity skip around every hidden layer but the first (whose input is
    not `width` wide): x <- x + ReLU(Linear(x)), or x + ReLU(BatchNorm1d(Linear(x))) with batch norm."""

    def __init__(self, n_in=2, n_classes=33, depth=6, width=16, batch_norm=False, residual=False):
        super().__init__()
        self.residual = residual
        self.hidden = nn.ModuleList()
        for i in range(depth):
            layers = [nn.Linear(n_in if i == 0 else width, width)]
            if batch_norm:
                layers.append(nn.BatchNorm1d(width))
            layers.append(nn.ReLU())
            self.hidden.append(nn.Sequential(*layers))
        self.out = nn.Linear(width, n_classes)

    def forward(self, x):
        for i, layer in enumerate(self.hidden):
            x = x + layer(x) if self.residual and i > 0 else layer(x)
        return self.out(x)


ARCH_KEYS = ("depth", "width", "batch_norm", "residual", "features")


def build_model(arch, n_classes):
    n_in = 2 if arch["features"] == "raw" else 2 * len(SIN_FREQUENCIES)
    return MLP(n_in, n_classes, arch["depth"], arch["width"], arch["batch_norm"], arch["residual"])


def load_model(run, n_classes, state):
    model = build_model(run, n_classes)
    model.load_state_dict(state)
    return model.eval()


def predictor(model, features):
    """Points [M, 2] (long, lat) -> predicted class ids, for prediction maps."""
    @torch.no_grad()
    def predict(points):
        return model(featurize(points, features)).argmax(1)
    return predict


@torch.no_grad()
def relu_inputs(model, X):
    """The input of every ReLU (eval mode) for the rows of X: one [N, width] tensor per hidden layer."""
    inputs = []
    hooks = [m.register_forward_hook(lambda m, i, o: inputs.append(i[0])) for m in model.modules()
             if isinstance(m, nn.ReLU)]
    model.eval()
    model(X)
    for hook in hooks:
        hook.remove()
    return inputs


def init_diagnostics(arch, n_classes, seed, X, y, batch_size):
    """At initialisation, on the run's first training batch (same init and shuffle as train_lockstep): the mean
    norm of the activation entering every Linear layer, and every Linear layer's ||grad W||_2^2."""
    seed_everything(seed)
    model = build_model(arch, n_classes)
    first_batch = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))[:batch_size]
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    norms = []
    hooks = [m.register_forward_hook(lambda m, i, o: norms.append(i[0].detach().norm(dim=1).mean())) for m in linears]
    F.cross_entropy(model(X[first_batch]), y[first_batch]).backward()
    for hook in hooks:
        hook.remove()
    return {"init_activation_norm": [finite_or_none(v) for v in norms],
            "first_step_grad_sq_norm": [finite_or_none(m.weight.grad.pow(2).sum()) for m in linears]}


def dead_relu_fraction(model, X):
    """Per hidden layer, the fraction of ReLU units that output 0 for every row of X (eval mode)."""
    return [float((pre <= 0).all(0).float().mean()) for pre in relu_inputs(model, X)]


def activation_regions(model, extent, resolution):
    """Id of the ReLU on/off pattern (all hidden layers) of every cell of a resolution^2 grid over extent:
    each distinct pattern is one linear region of the network (a grid sees a lower bound of their number)."""
    x0, x1, y0, y1 = extent
    grid_y, grid_x = torch.meshgrid(torch.linspace(y0, y1, resolution), torch.linspace(x0, x1, resolution),
                                    indexing="ij")
    points = torch.stack([grid_x.flatten(), grid_y.flatten()], dim=1)
    patterns = torch.cat([torch.cat(relu_inputs(model, chunk), dim=1) > 0 for chunk in points.split(65536)])
    _, region = torch.unique(patterns, dim=0, return_inverse=True)
    return region.view(resolution, resolution).numpy()


def region_bound(widths, n_in=2):
    """Serra, Tjandraatmadja & Ramalingam (ICML 2018, Theorem 1): a ReLU net with input dimension n_in and
    hidden widths n_1..n_L has at most sum over (j_1..j_L) in J of prod_l C(n_l, j_l) linear regions,
    J = {0 <= j_l <= min(n_in, n_1 - j_1, ..., n_(l-1) - j_(l-1), n_l)}. For one layer this is
    sum_(k=0..n_in) C(n_1, k), the report's 137 for width 16."""
    def count(layer, caps):
        if layer == len(widths):
            return 1
        top = min([n_in, widths[layer]] + caps)
        return sum(comb(widths[layer], j) * count(layer + 1, caps + [widths[layer] - j]) for j in range(top + 1))
    return count(0, [])


# ----------------------------------------------------------------------------- training a group of runs

def train_group(args, data, meta, runs, arch, epochs, batch_size, desc, diagnose_init=False, **record):
    """Train the runs (each with a seed and an lr) of one architecture in lockstep."""
    inputs = {split: (featurize(X, arch["features"]), y) for split, (X, y) in data.items()}
    results, states = train_lockstep(lambda: build_model(arch, meta["n_classes"]), runs, inputs, epochs, batch_size,
                                     args.device, quiet=args.quiet, desc=desc, **record)
    for result in results:
        result.update(epochs=epochs, batch_size=batch_size, **arch)
        if diagnose_init:
            result.update(init_diagnostics(arch, meta["n_classes"], result["seed"], *(t.cpu() for t in inputs["train"]),
                                           batch_size))
    return results, states


def seeds_of(args):
    return [args.seed + i for i in range(args.seeds)]


def seed_runs(args, lr, **extra):
    """One run per seed at learning rate lr."""
    return [{"seed": s, "lr": lr, **extra} for s in seeds_of(args)]


def arch_of(settings, **changes):
    return {key: changes.get(key, settings.get(key, False if key != "features" else "raw")) for key in ARCH_KEYS}


def train_groups(args, data, meta, groups, **record):
    """Train groups one after the other, each a (runs, arch, epochs, batch_size, desc), and concatenate."""
    results, states = [], []
    for runs, arch, epochs, batch_size, desc in groups:
        group, group_states = train_group(args, data, meta, runs, arch, epochs, batch_size, desc, **record)
        results += group
        states += group_states
    return results, states


def train_lr(args, data, meta, settings):
    runs = [{"seed": s, "lr": lr} for s in seeds_of(args) for lr in settings["lrs"]]
    results, states = train_group(args, data, meta, runs, arch_of(settings), settings["epochs"],
                                  settings["batch_size"], desc="lr sweep")
    for result, state in zip(results, states):
        model = load_model(result, meta["n_classes"], state)
        ok = result["status"] == "ok"
        result["dead_relu_fraction"] = dead_relu_fraction(model, data["val"][0].cpu()) if ok else None
    return results, states


def train_epochs(args, data, meta, settings):
    return train_group(args, data, meta, seed_runs(args, settings["lr"]), arch_of(settings), settings["epochs"],
                       settings["batch_size"],
                       desc=f"{settings['epochs']} epochs" + (", batch norm" * settings["batch_norm"]),
                       eval_train=True)


def train_batch_size(args, data, meta, settings):
    return train_groups(args, data, meta, [
        (seed_runs(args, settings["lr"]), arch_of(settings), epochs, batch_size, f"batch {batch_size}")
        for batch_size, epochs in zip(settings["batch_sizes"], settings["batch_size_epochs"])], record_steps=True)


def train_depth_width(args, data, meta, settings):
    return train_groups(args, data, meta, [
        (seed_runs(args, settings["lr"]), arch_of(settings, depth=depth, width=width), settings["epochs"],
         settings["batch_size"], f"depth {depth} width {width}") for depth, width in settings["architectures"]])


def train_gradients(args, data, meta, settings):
    return train_group(args, data, meta, seed_runs(args, settings["lr"]), arch_of(settings), settings["epochs"],
                       settings["batch_size"], desc=f"depth {settings['depth']} gradients", record_grads=True,
                       diagnose_init=True)


RESIDUAL_FIXES = {"residual": dict(residual=True), "batch_norm": dict(batch_norm=True),
                  "residual_batch_norm": dict(residual=True, batch_norm=True)}


def train_residual(args, data, meta, settings):
    return train_groups(args, data, meta, [
        (seed_runs(args, settings["lr"], fix=fix), arch_of(settings, **changes), settings["epochs"],
         settings["batch_size"], f"depth {settings['depth']} {fix}") for fix, changes in RESIDUAL_FIXES.items()],
        record_grads=True, diagnose_init=True)


def train_implicit(args, data, meta, settings):
    return train_group(args, data, meta, seed_runs(args, settings["lr"]), arch_of(settings), settings["epochs"],
                       settings["batch_size"], desc="sin features")


def train_regions(args, data, meta, settings):
    """No training: count the regions of the depth_width question's trained models."""
    source = get_result(args, "depth_width", data, meta, force=False)
    states = load_states(os.path.join(args.out, "mlp"), "depth_width")["states"]
    results, kept_states = [], []
    for run, state in zip(source["runs"], states):
        if (run["depth"], run["width"]) not in [tuple(a) for a in settings["architectures"]]:
            continue
        model = load_model(run, meta["n_classes"], state)
        regions = activation_regions(model, meta["extent"], settings["resolution"])
        results.append({**{k: run[k] for k in ("seed", "lr", "epochs", "batch_size", *ARCH_KEYS)},
                        "status": run["status"], "regions_on_grid": int(regions.max()) + 1,
                        "bound": region_bound([run["width"]] * run["depth"]),
                        "test_acc": run["history"]["test_acc"][-1]})
        kept_states.append(state)
    return results, kept_states


# ----------------------------------------------------------------------------- reports

def final(run, key):
    return run["history"][key][-1]


def best(run, key, pick=min):
    values = [v for v in run["history"][key] if v is not None]
    return pick(values) if values else None


def status_text(runs):
    diverged = [r for r in runs if r["status"] == "diverged"]
    if not diverged:
        return "ok"
    return "; ".join(f"seed {r['seed']} diverged at epoch {r['diverged_epoch']}" for r in diverged)


def group_by(runs, key):
    groups = {}
    for run in runs:
        groups.setdefault(run[key], []).append(run)
    return groups


def epochs_axis(runs):
    return np.arange(1, len(runs[0]["history"]["val_loss"]) + 1)


def write_markdown(out_dir, name, result, tables, figures, observations):
    data = result["data"]
    rows = [(k, v) for k, v in result["settings"].items()] + [
        ("seeds", ", ".join(str(s) for s in sorted({r["seed"] for r in result["runs"]}))),
        ("data", f"{shown_path(data['dir'])} ({data['rows']['train']} / {data['rows']['val']} / "
                 f"{data['rows']['test']} rows, {data['n_classes']} classes)"),
        ("device", result["device"]), ("wall time", f"{result['wall_s']:.1f} s")]
    write_question_markdown(os.path.join(out_dir, f"{name}.md"), QUESTIONS[name]["title"], rows,
                            [table + "\n" for table in tables], figures, observations)


def report_lr(result, out_dir, data):
    by_lr = group_by(result["runs"], "lr")
    fig, ax = plt.subplots(figsize=(8, 5), layout="constrained")
    for lr, runs in by_lr.items():
        plot_mean_band(ax, epochs_axis(runs), [r["history"]["val_loss"] for r in runs], label=f"lr {lr:g}")
    ax.set(xlabel="epoch", ylabel="validation loss (cross-entropy, nats)",
           title="Validation loss per epoch by learning rate (mean over seeds, band = min..max)")
    ax.legend()
    ax.grid(alpha=0.3)
    save_figure(fig, os.path.join(out_dir, "lr.png"))

    dead = {lr: [r["dead_relu_fraction"] for r in runs if r["dead_relu_fraction"] is not None]
            for lr, runs in by_lr.items()}
    rows = []
    for lr, runs in by_lr.items():
        dead_per_layer = " / ".join(f"{d:.2f}" for d in np.mean(dead[lr], axis=0)) if dead[lr] else "diverged"
        rows.append((f"{lr:g}", mean_std([final(r, "val_loss") for r in runs]),
                     mean_std([best(r, "val_loss") for r in runs]),
                     mean_std([final(r, "val_acc") for r in runs]), mean_std([best(r, "val_acc", max) for r in runs]),
                     dead_per_layer, status_text(runs)))
    table = markdown_table(["lr", "final val loss", "best val loss", "final val acc", "best val acc",
                            "dead ReLU fraction per hidden layer (val set, mean over seeds)", "status"], rows)
    finals = {lr: np.mean([final(r, "val_loss") for r in runs]) for lr, runs in by_lr.items()
              if all(r["status"] == "ok" for r in runs)}
    observations = []
    if finals:
        best_lr = min(finals, key=finals.get)
        others = ", ".join(f"lr {lr:g}: {v:.3f}" for lr, v in finals.items() if lr != best_lr)
        observations.append(f"lr {best_lr:g} reached the lowest final validation loss, {finals[best_lr]:.3f}"
                            + (f"; {others}." if others else "."))
    for lr, runs in by_lr.items():
        second = [r["history"]["val_loss"][1] for r in runs if len(r["history"]["val_loss"]) > 2]
        if lr in finals and second and None not in second and abs(np.mean(second) - finals[lr]) < 0.02:
            observations.append(f"lr {lr:g} is flat: validation loss {np.mean(second):.3f} after epoch 2, "
                                f"{finals[lr]:.3f} at the end.")
    observations.append("dead hidden ReLU units at the end (output 0 on every validation point), mean over layers "
                        "and seeds: " + ", ".join(f"lr {lr:g}: {np.mean(d):.0%}" for lr, d in dead.items() if d) + ".")
    if any(r["status"] == "diverged" for r in result["runs"]):
        diverged = [f"lr {lr:g}: {status_text(runs)}" for lr, runs in by_lr.items() if status_text(runs) != "ok"]
        observations.append("diverged runs: " + "; ".join(diverged) + ".")
    write_markdown(out_dir, "lr", result, [table], ["lr.png"], observations)


def plot_split_curves(ax_loss, ax_acc, runs, title, eval_mode_train=False):
    x = epochs_axis(runs)
    for split, color in (("train", "C0"), ("val", "C1"), ("test", "C2")):
        for ax, metric in ((ax_loss, "loss"), (ax_acc, "acc")):
            plot_mean_band(ax, x, [r["history"][f"{split}_{metric}"] for r in runs], label=split, color=color)
    if eval_mode_train:
        for ax, metric in ((ax_loss, "loss"), (ax_acc, "acc")):
            plot_mean_band(ax, x, [r["history"][f"train_eval_{metric}"] for r in runs], color="C4", linestyle="--",
                           label="train, eval mode")
    ax_loss.set(xlabel="epoch", ylabel="loss (cross-entropy, nats)", title=f"{title}: loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (fraction correct)", title=f"{title}: accuracy")
    for ax in (ax_loss, ax_acc):
        ax.legend()
        ax.grid(alpha=0.3)


def split_table(named_runs):
    rows = []
    for label, runs in named_runs:
        rows.append([label] + [mean_std([final(r, key) for r in runs]) for key in
                               ("train_loss", "train_eval_loss", "val_loss", "test_loss", "train_acc", "train_eval_acc",
                                "val_acc", "test_acc")] + [status_text(runs)])
    return markdown_table(["model", "train loss", "train loss (eval mode)", "val loss", "test loss", "train acc",
                           "train acc (eval mode)", "val acc", "test acc", "status"], rows)


def report_epochs(result, out_dir, data):
    runs = result["runs"]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(13, 4.5), layout="constrained")
    plot_split_curves(ax_loss, ax_acc, runs, f"{len(epochs_axis(runs))} epochs, no batch norm")
    save_figure(fig, os.path.join(out_dir, "epochs.png"))
    val_acc = [final(r, "val_acc") for r in runs]
    observations = [f"final accuracy train {mean_std([final(r, 'train_acc') for r in runs])}, "
                    f"validation {mean_std(val_acc)}, test {mean_std([final(r, 'test_acc') for r in runs])}.",
                    f"final validation loss {mean_std([final(r, 'val_loss') for r in runs])}, "
                    f"lowest {mean_std([best(r, 'val_loss') for r in runs])}: "
                    + ("still falling at the last epoch." if all(final(r, "val_loss") == best(r, "val_loss")
                                                                for r in runs if r["status"] == "ok")
                       else "not at its minimum at the last epoch.")]
    write_markdown(out_dir, "epochs", result, [split_table([("no batch norm", runs)])], ["epochs.png"],
                   observations)


def report_batchnorm(result, out_dir, data):
    plain, normed = result["baseline_runs"], result["runs"]
    fig, axes = plt.subplots(2, 2, figsize=(13, 9), sharey="row", layout="constrained")
    plot_split_curves(axes[0, 0], axes[1, 0], plain, "no batch norm", eval_mode_train=True)
    plot_split_curves(axes[0, 1], axes[1, 1], normed, "batch norm", eval_mode_train=True)
    save_figure(fig, os.path.join(out_dir, "batchnorm.png"))
    gap = [final(n, "val_acc") - final(p, "val_acc") for p, n in zip(plain, normed)
           if final(n, "val_acc") is not None and final(p, "val_acc") is not None]
    train_batch = [final(r, "train_acc") for r in normed]
    train_eval = [final(r, "train_eval_acc") for r in normed]
    observations = [
        f"batch norm changes final validation accuracy by {mean_std(gap)} (paired by seed): "
        f"{mean_std([final(r, 'val_acc') for r in plain])} without, "
        f"{mean_std([final(r, 'val_acc') for r in normed])} with.",
        f"final validation loss {mean_std([final(r, 'val_loss') for r in plain])} without batch norm, "
        f"{mean_std([final(r, 'val_loss') for r in normed])} with.",
        f"with batch norm, train accuracy averaged over the epoch's batches in train mode is {mean_std(train_batch)}; "
        f"the same final model in eval mode scores {mean_std(train_eval)} on the training set and "
        f"{mean_std([final(r, 'val_acc') for r in normed])} on validation. "
        "If eval-mode train accuracy matches validation, the val-above-train gap comes from measuring train in train "
        "mode during the epoch (batch statistics, weights still moving), not from the data splits."]
    write_markdown(out_dir, "batchnorm", result, [split_table([("no batch norm", plain), ("batch norm", normed)])],
                   ["batchnorm.png"], observations)


def running_mean(values, window):
    values = np.array([np.nan if v is None else v for v in values], dtype=float)
    if window <= 1:
        return values
    kernel = np.ones(window) / window
    return np.convolve(values, kernel, mode="valid")


def report_batch_size(result, out_dir, data):
    by_bs = group_by(result["runs"], "batch_size")
    fig, (ax_epoch, ax_steps, ax_loss) = plt.subplots(1, 3, figsize=(19, 5), layout="constrained")
    rows = []
    for i, (batch_size, runs) in enumerate(by_bs.items()):
        color = f"C{i}"
        label = f"batch {batch_size}"
        x = epochs_axis(runs)
        plot_mean_band(ax_epoch, x, [r["history"]["val_acc"] for r in runs], label=label, color=color, marker="o",
                       markersize=3)
        steps = runs[0]["steps_per_epoch"]
        plot_mean_band(ax_steps, x * steps, [r["history"]["val_acc"] for r in runs], label=label, color=color,
                       marker="o", markersize=3)
        step_loss = runs[0]["history"]["step_loss"]
        window = max(1, len(step_loss) // 200)
        ax_loss.plot(np.arange(1, len(step_loss) + 1), step_loss, color=color, alpha=0.15, linewidth=0.5)
        smooth = running_mean(step_loss, window)
        ax_loss.plot(np.arange(window, len(step_loss) + 1), smooth, color=color,
                     label=f"{label} (running mean of {window})")
        rows.append((batch_size, runs[0]["epochs"], steps, steps * runs[0]["epochs"], f"{runs[0]['group_wall_s']:.1f}",
                     mean_std([final(r, "val_acc") for r in runs]), mean_std([best(r, "val_acc", max) for r in runs]),
                     status_text(runs)))
    ax_epoch.set(xlabel="epoch", ylabel="validation accuracy", title="(i) validation accuracy per epoch")
    ax_steps.set(xlabel="optimizer steps (log scale)", ylabel="validation accuracy", xscale="log",
                 title="validation accuracy vs optimizer steps")
    ax_loss.set(xlabel="optimizer step (log scale)", ylabel="training loss of the batch (nats)", xscale="log",
                title=f"(iii) training loss per step, seed {result['runs'][0]['seed']}",
                ylim=(0, 1.5 * max(max(line.get_ydata()) for line in ax_loss.get_lines()[1::2])))
    for ax in (ax_epoch, ax_steps, ax_loss):
        ax.legend()
        ax.grid(alpha=0.3)
    save_figure(fig, os.path.join(out_dir, "batch_size.png"))
    table = markdown_table(["batch size", "epochs", "iterations per epoch", "total steps", "wall time of the group (s)",
                            "final val acc", "best val acc", "status"], rows)
    peak = {bs: np.mean([best(r, "val_acc", max) or np.nan for r in runs]) for bs, runs in by_bs.items()}
    top = max(peak, key=peak.get)
    observations = [f"batch {top} reached the highest validation accuracy, {peak[top]:.3f}; "
                    + ", ".join(f"batch {bs}: {v:.3f}" for bs, v in peak.items() if bs != top) + ".",
                    "total optimizer steps: " + ", ".join(f"batch {bs}: "
                                                          f"{runs[0]['steps_per_epoch'] * runs[0]['epochs']:,}"
                                                          for bs, runs in by_bs.items())
                    + "; at a fixed lr, accuracy follows the number of steps more than the number of epochs "
                    "(middle panel)."]
    write_markdown(out_dir, "batch_size", result, [table], ["batch_size.png"], observations)


def arch_label(run):
    return f"depth {run['depth']}, width {run['width']}"


def draw_map(ax, run, state, data, meta, title_prefix=""):
    model = load_model(run, meta["n_classes"], state)
    X_test, y_test = (t.cpu() for t in data["test"])
    plot_prediction_map(ax, predictor(model, run["features"]), meta["extent"], X_test, y_test, meta["class_names"],
                        f"{title_prefix}{arch_label(run)}, seed {run['seed']}: "
                        f"test accuracy {run['history']['test_acc'][-1]:.3f}")


def save_curves_and_map(path, runs, state, data, meta, title):
    """Train/val/test loss per epoch (mean over seeds) beside the first seed's prediction map."""
    fig, (ax_loss, ax_map) = plt.subplots(1, 2, figsize=(17, 6.5), layout="constrained",
                                          gridspec_kw={"width_ratios": [1, 1.6]})
    x = epochs_axis(runs)
    for split, color in (("train", "C0"), ("val", "C1"), ("test", "C2")):
        plot_mean_band(ax_loss, x, [r["history"][f"{split}_loss"] for r in runs], label=split, color=color)
    ax_loss.set(xlabel="epoch", ylabel="loss (cross-entropy, nats)", title=f"{title}: loss per epoch")
    ax_loss.legend()
    ax_loss.grid(alpha=0.3)
    draw_map(ax_map, runs[0], state, data, meta, f"{title}: ")
    save_figure(fig, path)


def report_depth_width(result, out_dir, data):
    meta = result["data"]
    states = load_states(out_dir, "depth_width")["states"]
    groups = {}
    for i, run in enumerate(result["runs"]):
        groups.setdefault((run["depth"], run["width"]), []).append(i)
    val = {arch: np.mean([final(result["runs"][i], "val_acc") or np.nan for i in idx]) for arch, idx in groups.items()}
    ranked = sorted((a for a in val if not np.isnan(val[a])), key=val.get)  # diverged architectures left out
    worst, top = (ranked[0], ranked[-1]) if ranked else (None, None)
    rows = []
    for arch, idx in groups.items():
        runs = [result["runs"][i] for i in idx]
        n_params = sum(p.numel() for p in build_model(runs[0], meta["n_classes"]).parameters())
        mark = " **best**" if arch == top else " **worst**" if arch == worst else ""
        rows.append([f"{arch_label(runs[0])}{mark}", f"{n_params:,}"] +
                    [mean_std([final(r, key) for r in runs]) for key in
                     ("train_acc", "val_acc", "test_acc", "train_loss", "val_loss", "test_loss")] + [status_text(runs)])
    table = markdown_table(["model", "parameters", "train acc", "val acc", "test acc", "train loss", "val loss",
                            "test loss", "status"], rows)

    for tag, arch in (("best", top), ("worst", worst)) if ranked else ():
        idx = groups[arch]
        save_curves_and_map(os.path.join(out_dir, f"depth_width_{tag}.png"), [result["runs"][i] for i in idx],
                            states[idx[0]], data, meta, f"{tag} model")

    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8), layout="constrained")
    for ax, vary, fixed_key, fixed in ((axes[0], "depth", "width", 16), (axes[1], "width", "depth", 6)):
        archs = sorted(a for a in groups if a[1 if fixed_key == "width" else 0] == fixed)
        xs = [a[0] if vary == "depth" else a[1] for a in archs]
        for split, color in (("train", "C0"), ("val", "C1"), ("test", "C2")):
            values = [[final(result["runs"][i], f"{split}_acc") or np.nan for i in groups[a]] for a in archs]
            ax.errorbar(xs, [np.mean(v) for v in values], yerr=[np.std(v) for v in values], marker="o", capsize=3,
                        color=color, label=split)
        ax.set(xlabel="hidden layers (depth)" if vary == "depth" else "units per hidden layer (width, log scale)",
               ylabel="final accuracy (mean ± std over seeds)", title=f"accuracy vs {vary} ({fixed_key} {fixed})")
        if vary == "width":
            ax.set_xscale("log", base=2)
        ax.set_xticks(xs, [str(x) for x in xs])
        ax.legend()
        ax.grid(alpha=0.3)
    save_figure(fig, os.path.join(out_dir, "depth_width.png"))

    depth_text = ", ".join(f"depth {d}: {val[(d, w)]:.3f}" for d, w in sorted(groups) if w == 16)
    width_text = ", ".join(f"width {w}: {val[(d, w)]:.3f}" for d, w in sorted(groups, key=lambda a: a[1]) if d == 6)
    observations = [f"best by validation accuracy: {arch_label(dict(depth=top[0], width=top[1]))} ({val[top]:.3f}); "
                    f"worst: {arch_label(dict(depth=worst[0], width=worst[1]))} ({val[worst]:.3f})." if ranked else
                    "every architecture diverged in at least one seed: no best or worst model.",
                    f"validation accuracy by depth (width 16): {depth_text}.",
                    f"validation accuracy by width (depth 6): {width_text}."]
    gaps = [final(r, "val_acc") - final(r, "train_acc") for r in result["runs"] if r["status"] == "ok"]
    if gaps:
        observations.append(f"validation accuracy is above train accuracy (train measured in train mode over the "
                            f"epoch, as in 6.1.3) in {sum(g > 0 for g in gaps)} of {len(gaps)} runs; mean gap "
                            f"{np.mean(gaps):+.3f}.")
    write_markdown(out_dir, "depth_width", result, [table],
                   ["depth_width.png"] + ["depth_width_best.png", "depth_width_worst.png"] * bool(ranked), observations)


def grad_matrix(runs):
    """Mean over seeds of ||grad W||^2: [epochs, layers]; NaN where a run diverged."""
    n_layers = len(runs[0]["init_activation_norm"])
    return np.array([[[np.nan] * n_layers if epoch is None else epoch for epoch in r["history"]["grad_sq_norm"]]
                     for r in runs], dtype=float).mean(0)


def zero_layers(run):
    """Layers whose gradient is exactly zero in every epoch."""
    epochs = [e for e in run["history"]["grad_sq_norm"] if e is not None]
    return [layer for layer in range(len(epochs[0])) if all(e[layer] == 0 for e in epochs)] if epochs else []


def layer_ranges(layers):
    ranges, start = [], None
    for i, layer in enumerate(layers):
        if start is None:
            start = layer
        if i + 1 == len(layers) or layers[i + 1] != layer + 1:
            ranges.append(f"{start}" if start == layer else f"{start}-{layer}")
            start = None
    return ", ".join(ranges) if ranges else "none"


def draw_gradients(ax_lines, ax_heat, runs, title, layers):
    grads = grad_matrix(runs)
    floor = at_floor(grads.flatten())[2]
    epochs = np.arange(1, grads.shape[0] + 1)
    for i, layer in enumerate(layers):
        values = grads[:, layer]
        zero = values == 0
        label = f"layer {layer}"
        if zero.all():
            label += f" (exactly 0: drawn at {floor:.0e})"
        elif zero.any():
            label += f" (exactly 0 in some epochs: drawn at {floor:.0e})"
        ax_lines.plot(epochs, np.where(zero, floor, values), color=f"C{i}", marker="v" if zero.any() else "o",
                      markersize=4, linestyle=":" if zero.all() else "-", label=label)
    ax_lines.axhline(floor, color="gray", linewidth=0.8, linestyle="--")
    ax_lines.set(yscale="log", xlabel="epoch", ylabel="mean over the epoch's steps of ||grad W||² (log scale)",
                 title=f"{title}: per-layer gradient magnitude")
    ax_lines.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_lines.legend(fontsize=8)
    ax_lines.grid(alpha=0.3)
    masked = np.ma.masked_where(~(grads > 0), grads).T
    cmap = plt.get_cmap("viridis").copy()
    cmap.set_bad("black")
    image = ax_heat.imshow(np.ma.log10(masked), aspect="auto", origin="lower", cmap=cmap, interpolation="nearest",
                           extent=(0.5, grads.shape[0] + 0.5, -0.5, grads.shape[1] - 0.5))
    plt.colorbar(image, ax=ax_heat, label="log10 ||grad W||² (black: exactly 0)")
    ax_heat.set(xlabel="epoch", ylabel="Linear layer (0 = input layer)", title=f"{title}: all layers")


def gradient_rows(label, runs, layers):
    grads = grad_matrix(runs)
    zeros = [zero_layers(r) for r in runs]
    return [label] + [f"{grads[0, layer]:.2e} / {grads[-1, layer]:.2e}" for layer in layers] + \
        ["; ".join(f"seed {r['seed']}: {layer_ranges(z)}" for r, z in zip(runs, zeros)),
         mean_std([final(r, "val_acc") for r in runs]), status_text(runs)]


def at_floor(values):
    """Values for a log plot: exact zeros moved to a floor one decade below the smallest positive value."""
    values = np.array([np.nan if v is None else v for v in values], dtype=float)
    positive = values[values > 0]
    floor = 10.0 ** (np.floor(np.log10(positive.min())) - 1) if positive.size else 1e-45
    return np.where(values == 0, floor, values), values == 0, floor


def draw_init(ax_activation, ax_grad, variants):
    """Per layer at initialisation (first seed): activation norm entering the layer, ||grad W||^2 of step 1."""
    for ax, key in ((ax_activation, "init_activation_norm"), (ax_grad, "first_step_grad_sq_norm")):
        for i, (label, runs) in enumerate(variants):
            values, zero, floor = at_floor(runs[0][key])
            layers = np.arange(len(values))
            ax.plot(layers, values, color=f"C{i}", label=label)
            if zero.any():
                ax.plot(layers[zero], values[zero], "v", color=f"C{i}", markersize=3,
                        label=f"{label}: exactly 0, drawn at {floor:.0e}")
        ax.set(yscale="log", xlabel="Linear layer (0 = input layer)")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    ax_activation.set(ylabel="mean ||activation||₂ entering the layer (log scale)",
                      title=f"at initialisation (seed {variants[0][1][0]['seed']}, first batch)")
    ax_grad.set(ylabel="||grad W||² at step 1 (log scale)", title="gradient of the first step")


def gradient_report(result, out_dir, name, variants):
    """Per-epoch gradient lines and heat map for every variant, the first-step picture below, and the table."""
    n_layers = len(variants[0][1][0]["init_activation_norm"])
    layers = [layer for layer in (0, 30, 60, 90, 95, 99) if layer < n_layers]
    columns = [str(i) for i in range(len(variants))]
    if len(variants) == 1:
        mosaic, size = [["lines0", "heat0"], ["activation", "grad"]], (15, 11)
    else:
        half = len(columns) // 2
        mosaic = [[f"lines{c}" for c in columns], [f"heat{c}" for c in columns],
                  ["activation"] * half + ["grad"] * (len(columns) - half)]
        size = (6.5 * len(variants), 16)
    fig, axes = plt.subplot_mosaic(mosaic, figsize=size, layout="constrained")
    for c, (label, runs) in zip(columns, variants):
        if any(r["status"] == "ok" for r in runs):
            draw_gradients(axes[f"lines{c}"], axes[f"heat{c}"], [r for r in runs if r["status"] == "ok"], label,
                           layers)
        else:
            for ax in (axes[f"lines{c}"], axes[f"heat{c}"]):
                ax.text(0.5, 0.5, f"{label}:\n{status_text(runs)}\n(no finite gradients to plot)", ha="center",
                        va="center", transform=ax.transAxes)
                ax.set_axis_off()
    draw_init(axes["activation"], axes["grad"], variants)
    save_figure(fig, os.path.join(out_dir, f"{name}.png"))
    table = markdown_table(["model"] + [f"layer {layer}: epoch 1 / last" for layer in layers] +
                           ["layers exactly 0 in every epoch", "final val acc", "status"],
                           [gradient_rows(label, runs, layers) for label, runs in variants])
    return table


def report_gradients(result, out_dir, data):
    runs = result["runs"]
    table = gradient_report(result, out_dir, "gradients", [(f"depth {runs[0]['depth']}, width {runs[0]['width']}",
                                                            runs)])
    grads = grad_matrix([r for r in runs if r["status"] == "ok"] or runs)
    n_layers = grads.shape[1]
    seeds = ", ".join(str(r["seed"]) for r in runs)
    cuts = [max([layer for layer, norm in enumerate(r["init_activation_norm"]) if norm == 0], default=None)
            for r in runs]
    observations = [f"seeds {seeds}: layers {', '.join(layer_ranges(zero_layers(r)) for r in runs)} have exactly zero "
                    "gradient in every epoch."]
    if all(cut is not None for cut in cuts):
        observations.append(f"why: at initialisation the input of layer {', '.join(map(str, cuts))} (same seeds) is "
                            "exactly 0 on every row of the first batch, since every ReLU of the layer before is off; "
                            "nothing below that layer reaches the output, so no gradient passes below it. The exact "
                            "zeros come from a dead layer, not from floating-point underflow.")
    observations += ["last epoch, mean over seeds: " + ", ".join(f"layer {layer} {grads[-1, layer]:.1e}"
                                                                for layer in (0, 30, 60, 90, 95, 99, n_layers - 1)
                                                                if layer < n_layers)
                     + f" (layer {n_layers - 1} is the output layer); final validation accuracy "
                     f"{mean_std([final(r, 'val_acc') for r in runs])}."]
    write_markdown(out_dir, "gradients", result, [table], ["gradients.png"], observations)


def report_residual(result, out_dir, data):
    variants = [("plain", result["baseline_runs"])] + [
        (fix.replace("_", " + ").replace("batch + norm", "batch norm"), [r for r in result["runs"] if r["fix"] == fix])
        for fix in RESIDUAL_FIXES]
    table = gradient_report(result, out_dir, "residual", variants)
    observations = []
    for label, runs in variants:
        run = runs[0]
        text = (f"{label}: {status_text(runs)}, validation accuracy {mean_std([final(r, 'val_acc') for r in runs])}; "
                f"at initialisation the activation norm goes from {run['init_activation_norm'][1]:.2g} (layer 1) to "
                f"{run['init_activation_norm'][-1]:.2g} (output layer) and the first step's ||grad W||² from "
                f"{run['first_step_grad_sq_norm'][0]:.2g} (layer 0) to {run['first_step_grad_sq_norm'][-1]:.2g} "
                f"(output layer), seed {run['seed']}")
        if any(r["status"] == "ok" for r in runs):
            text += f"; exactly-zero layers {layer_ranges(zero_layers(next(r for r in runs if r['status'] == 'ok')))}"
        observations.append(text + ".")
    write_markdown(out_dir, "residual", result, [table], ["residual.png"], observations)


def report_implicit(result, out_dir, data):
    meta = result["data"]
    saved = load_states(out_dir, "implicit")
    variants = [("raw coordinates", result["baseline_runs"], saved["baseline_states"][0]),
                ("sin features", result["runs"], saved["states"][0])]
    fig, axes = plt.subplots(1, 2, figsize=(20, 7), layout="constrained")
    for ax, (label, runs, state) in zip(axes, variants):
        draw_map(ax, runs[0], state, data, meta, f"{label}: ")
        if ax is axes[0]:
            ax.get_legend().remove()
    save_figure(fig, os.path.join(out_dir, "implicit.png"))
    rows = [[label, runs[0]["features"]] + [mean_std([final(r, key) for r in runs]) for key in
                                            ("train_acc", "val_acc", "test_acc", "val_loss")] + [status_text(runs)]
            for label, runs, _ in variants]
    table = markdown_table(["input", "features", "train acc", "val acc", "test acc", "val loss", "status"], rows)
    gap = [final(s, "val_acc") - final(r, "val_acc") for r, s in zip(variants[0][1], variants[1][1])
           if final(s, "val_acc") is not None and final(r, "val_acc") is not None]
    observations = [f"sin features change validation accuracy by {mean_std(gap)} (paired by seed) against raw "
                    f"coordinates, same depth 6 width 16 model and training.",
                    f"features: sin(a*x) for a in {SIN_FREQUENCIES} on longitude and latitude in degrees "
                    f"({2 * len(SIN_FREQUENCIES)} inputs)."]
    write_markdown(out_dir, "implicit", result, [table], ["implicit.png"], observations)


def report_regions(result, out_dir, data):
    meta = result["data"]
    states = load_states(out_dir, "regions")["states"]
    resolution = result["settings"]["resolution"]
    rows = []
    for runs in group_by(result["runs"], "depth").values():
        rows.append([arch_label(runs[0]), f"{runs[0]['bound']:,}",
                     ", ".join(f"{r['regions_on_grid']} (seed {r['seed']})" for r in runs),
                     mean_std([r["test_acc"] for r in runs])])
    table = markdown_table(["model", "upper bound on regions (whole plane)", f"regions seen on a {resolution}x"
                            f"{resolution} grid over the data (a lower bound)", "test acc"], rows)
    firsts = [next(i for i, r in enumerate(result["runs"]) if r["depth"] == depth)
              for depth in group_by(result["runs"], "depth")]
    fig, axes = plt.subplots(1, len(firsts), figsize=(8 * len(firsts), 6.5), layout="constrained", squeeze=False)
    rng = np.random.default_rng(0)
    for ax, i in zip(axes[0], firsts):
        run = result["runs"][i]
        regions = activation_regions(load_model(run, meta["n_classes"], states[i]), meta["extent"], resolution)
        colors = rng.uniform(0.25, 1.0, size=(regions.max() + 1, 3))
        image = colors[regions]
        edge = np.zeros(regions.shape, bool)
        edge[1:] |= regions[1:] != regions[:-1]
        edge[:, 1:] |= regions[:, 1:] != regions[:, :-1]
        image[edge] = 0
        ax.imshow(image, origin="lower", extent=meta["extent"], interpolation="nearest")
        ax.set_aspect(1 / np.cos(np.radians(np.mean(meta["extent"][2:]))))
        ax.set(xlabel="longitude (degrees)", ylabel="latitude (degrees)",
               title=f"{arch_label(run)}, seed {run['seed']}: {run['regions_on_grid']} regions on the grid "
                     f"(bound {run['bound']:,})")
    save_figure(fig, os.path.join(out_dir, "regions.png"))
    observations = [f"{arch_label(runs[0])}: {min(r['regions_on_grid'] for r in runs)}-"
                    f"{max(r['regions_on_grid'] for r in runs)} regions over the data's extent against a bound of "
                    f"{runs[0]['bound']:,} for the whole plane." for runs in group_by(result["runs"], "depth").values()]
    observations.append("each distinct on/off pattern of the hidden ReLUs is one linear region: the inputs that share "
                        "a pattern form one convex polygon on which the network is a single affine map (batch norm "
                        "in eval mode is affine and adds none). Counting patterns on a grid gives a lower bound: "
                        "regions thinner than a cell, or outside the data's extent, are missed.")
    write_markdown(out_dir, "regions", result, [table], ["regions.png"], observations)


# ----------------------------------------------------------------------------- questions

SECTION_61 = dict(lr=1e-3, batch_size=256, depth=6, width=16, batch_norm=False)  # the exercise skeleton's defaults
SECTION_62 = dict(lr=1e-3, epochs=50, batch_size=128, depth=6, width=16, batch_norm=True)  # the report's choice
GRADIENTS = dict(SECTION_61, epochs=10, depth=100, width=4)
QUESTIONS = {
    # protocol: the settings SPEC.md gives; baseline: (question, which of its runs) shown beside this one, not
    # retrained; keeps_models: the trained weights are saved (.pt) because the report draws from them
    "lr": dict(title="6.1.1 Learning rate", train=train_lr, report=report_lr,
               protocol=dict(lrs=[1, 0.2, 0.01, 0.001, 0.0005, 0.00001], epochs=50, batch_size=256, depth=6, width=16,
                             batch_norm=False)),
    "epochs": dict(title="6.1.2 Training for longer (no batch norm)", train=train_epochs, report=report_epochs,
                   protocol=dict(SECTION_61, epochs=100)),
    "batchnorm": dict(title="6.1.3 Batch norm (compared with 6.1.2)", train=train_epochs, report=report_batchnorm,
                      protocol=dict(SECTION_61, epochs=100, batch_norm=True), baseline=("epochs", {})),
    "batch_size": dict(title="6.1.4 Batch size", train=train_batch_size, report=report_batch_size,
                       protocol=dict(SECTION_61, batch_sizes=[1, 16, 128, 1024], batch_size_epochs=[1, 10, 50, 50])),
    "depth_width": dict(title="6.2.1-6.2.4 Depth and width", train=train_depth_width, report=report_depth_width,
                        keeps_models=True,
                        protocol=dict(SECTION_62, architectures=[[1, 16], [2, 16], [6, 16], [10, 16], [6, 8], [6, 32],
                                                                 [6, 64]])),
    "gradients": dict(title="6.2.5 Vanishing gradients", train=train_gradients, report=report_gradients,
                      protocol=GRADIENTS),
    "residual": dict(title="6.2.6 Fixing the vanishing gradients (bonus)", train=train_residual,
                     report=report_residual, protocol=GRADIENTS, baseline=("gradients", {})),
    "implicit": dict(title="6.2.7 Implicit representation: sin features (bonus)", train=train_implicit,
                     report=report_implicit, protocol=dict(SECTION_62, features="sin"), keeps_models=True,
                     baseline=("depth_width", {"depth": 6, "width": 16})),
    "regions": dict(title="Linear regions of the trained ReLU nets (beyond the report)", train=train_regions,
                    report=report_regions, keeps_models=True,
                    protocol=dict(architectures=[[1, 16], [2, 16]], resolution=2000)),
}
CODE_VERSION = {"lr": 1, "epochs": 1, "batchnorm": 1, "batch_size": 1, "depth_width": 1, "gradients": 1,
                "residual": 1, "implicit": 1, "regions": 1}  # bump one when a change alters that question's numbers


def depends_on(name):
    """The question whose saved runs or models this one reads, if any."""
    return "depth_width" if name == "regions" else QUESTIONS[name].get("baseline", (None,))[0]


FLAG_SETTINGS = ("lr", "lrs", "epochs", "batch_size", "batch_sizes", "batch_size_epochs", "depth", "width",
                 "architectures", "resolution")


def settings_for(args, name):
    """The protocol's settings for a question, with the flags the user set on top."""
    settings = dict(QUESTIONS[name]["protocol"])
    for key in FLAG_SETTINGS:
        value = getattr(args, key)
        if value is not None and key in settings:
            settings[key] = value
    if args.batch_norm is not None and "batch_norm" in settings and name != "batchnorm":
        settings["batch_norm"] = args.batch_norm == "on"
    if args.quick:
        if "epochs" in settings:
            settings["epochs"] = min(settings["epochs"], 2)
        if "batch_size_epochs" in settings:
            settings["batch_size_epochs"] = [1] * len(settings["batch_sizes"])
        if "resolution" in settings:
            settings["resolution"] = min(settings["resolution"], 200)
    if len(settings.get("batch_sizes", [])) != len(settings.get("batch_size_epochs", [])):
        raise UserError("--batch-sizes and --batch-size-epochs need the same number of values")
    if settings.get("batch_norm") and min(settings.get("batch_sizes", [settings.get("batch_size", 2)])) < 2:
        raise UserError("batch norm needs a batch size of at least 2 (BatchNorm1d cannot train on one sample)")
    return settings


def config_for(args, name, meta):
    """Everything a question's numbers depend on: its cache key."""
    config = {"question": name, "code_version": CODE_VERSION[name], "data": meta["digest"], "quick": args.quick,
              "seeds": seeds_of(args), "device": args.device.type, **settings_for(args, name)}
    if depends_on(name):  # a change there must redo this one too
        config["depends_on"] = config_for(args, depends_on(name), meta)
    return config


def load_states(out_dir, name):
    path = os.path.join(out_dir, f"{name}.pt")
    try:
        return torch.load(path, map_location="cpu")
    except FileNotFoundError:
        raise UserError(f"{path}: no saved models; run the question without --replot first") from None
    except Exception as e:  # a truncated or foreign file: torch raises several types
        raise UserError(f"{path}: unreadable saved models ({e}); rerun the question with --force") from None


def saved_config(path):
    """The config stored in a question's .pt, or None when it is missing or unreadable."""
    try:
        return torch.load(path, map_location="cpu")["config"]
    except Exception:
        return None


def get_result(args, name, data, meta, force):
    """The question's saved result if its config matches, else train it and save it (.json, and .pt with the
    trained weights when its report draws from them)."""
    config = config_for(args, name, meta)
    path = os.path.join(args.out, "mlp", f"{name}.json")
    keeps_models = QUESTIONS[name].get("keeps_models", False)
    models_path = os.path.join(args.out, "mlp", f"{name}.pt")
    cached = None if force else load_cached(path, config)
    if cached is not None and (not keeps_models or saved_config(models_path) == config):
        print(f"{name}: reusing {path} (same settings; --force retrains)")
        return cached
    start = time.perf_counter()
    runs, states = QUESTIONS[name]["train"](args, data, meta, config)
    result = {"question": name, "config": config, "settings": settings_for(args, name), "data": meta,
              "versions": library_versions(),
              "device": torch.cuda.get_device_name(args.device) if args.device.type == "cuda" else "cpu",
              "wall_s": round(time.perf_counter() - start, 2), "runs": runs}
    saved = {"config": config, "states": states}
    if "baseline" in QUESTIONS[name]:
        source, match = QUESTIONS[name]["baseline"]
        source_runs = get_result(args, source, data, meta, force=False)["runs"]
        keep = [i for i, run in enumerate(source_runs) if all(run[k] == v for k, v in match.items())]
        result["baseline"] = source
        result["baseline_runs"] = [source_runs[i] for i in keep]
        if keeps_models:
            source_states = load_states(os.path.join(args.out, "mlp"), source)["states"]
            saved["baseline_states"] = [source_states[i] for i in keep]
    if keeps_models:
        save_torch(models_path, saved)
    save_json(path, result)
    return result


def architecture(text):
    """'DxW' -> [D, W], for --architectures."""
    try:
        depth, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise UserError(f"--architectures {text}: expected DEPTHxWIDTH, e.g. 6x16") from None
    return [depth, width]


def parse_args(argv):
    parser = ArgumentParser(description=__doc__, formatter_class=RawDescriptionHelpFormatter)
    parser.add_argument("--question", required=True, choices=list(QUESTIONS) + ["all"],
                        help="which experiment: lr (6.1.1), epochs (6.1.2), batchnorm (6.1.3), batch_size (6.1.4), "
                             "depth_width (6.2.1-6.2.4), gradients (6.2.5), residual (6.2.6), implicit (6.2.7), "
                             "regions (linear regions of the trained depth 1 and 2 nets), or all")
    parser.add_argument("--data-dir", default=DEFAULT_DATA,
                        help="folder with train.csv, validation.csv, test.csv (columns long, lat, country; optional "
                             "countries.csv with id,iso,name for legends). Default: the embedded data/europe")
    parser.add_argument("--out", default="results", help="results folder; outputs go to OUT/mlp/ (default: results)")
    parser.add_argument("--seeds", type=int, default=3,
                        help="number of seeds per setting, starting at --seed (default 3: 42, 43, 44; 1 = the "
                             "exercise's single run)")
    parser.add_argument("--seed", type=int, default=42, help="first seed (default 42)")
    parser.add_argument("--device", default="auto", help="auto (cuda when available), cpu or cuda (default auto)")
    parser.add_argument("--lr", type=float, help="SGD learning rate of every question but lr (protocol: 0.001)")
    parser.add_argument("--lrs", type=float, nargs="+", help="learning rates of the lr question "
                                                              "(protocol: 1 0.2 0.01 0.001 0.0005 0.00001)")
    parser.add_argument("--epochs", type=int, help="epochs (protocol: lr 50, epochs and batchnorm 100, 6.2 50, "
                                                   "gradients and residual 10)")
    parser.add_argument("--batch-size", type=int, help="batch size (protocol: 256 in 6.1 and gradients, 128 in 6.2)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", help="batch sizes of the batch_size question "
                                                                   "(protocol: 1 16 128 1024)")
    parser.add_argument("--batch-size-epochs", type=int, nargs="+",
                        help="epochs for each of --batch-sizes (protocol: 1 10 50 50)")
    parser.add_argument("--depth", type=int, help="hidden layers, the input layer included (protocol: 6; gradients "
                                                  "and residual 100)")
    parser.add_argument("--width", type=int, help="units per hidden layer (protocol: 16; gradients and residual 4)")
    parser.add_argument("--architectures", type=architecture, nargs="+", metavar="DxW",
                        help="depth_width models (protocol: 1x16 2x16 6x16 10x16 6x8 6x32 6x64); regions models "
                             "(protocol: 1x16 2x16, taken from depth_width's)")
    parser.add_argument("--batch-norm", choices=["on", "off"],
                        help="BatchNorm1d between each hidden Linear and its ReLU (protocol: off in 6.1 and "
                             "gradients, on in 6.2; batchnorm is always on)")
    parser.add_argument("--resolution", type=int, help="grid cells per side for counting regions (protocol: 2000)")
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads for torch (default 1: these small models are bound by per-operation "
                             "overhead, and more threads only add synchronisation, or stall on a busy machine)")
    parser.add_argument("--quick", action="store_true",
                        help="tiny budget (2,000 training rows, at most 2 epochs) for tests; never for results/")
    parser.add_argument("--force", action="store_true", help="retrain even if a saved result has the same settings")
    parser.add_argument("--replot", action="store_true",
                        help="redraw figures and tables from the saved .json and .pt, no training")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    args = parser.parse_args(argv)
    positive = {"--seeds": args.seeds, "--lr": args.lr, "--epochs": args.epochs, "--batch-size": args.batch_size,
                "--depth": args.depth, "--width": args.width, "--resolution": args.resolution,
                "--threads": args.threads}
    for flag, value in positive.items():
        if value is not None and not value > 0:
            raise UserError(f"{flag} must be positive, got {value}")
    for flag, values in {"--lrs": args.lrs, "--batch-sizes": args.batch_sizes, "--batch-size-epochs":
                         args.batch_size_epochs, "--architectures": args.architectures}.items():
        if values is not None and not all(v > 0 for v in np.ravel(values)):
            raise UserError(f"{flag} values must be positive, got {values}")
    return args


def main(argv):
    args = parse_args(argv)
    args.device = pick_device(args.device)
    if args.device.type == "cpu":
        torch.set_num_threads(args.threads)
    names = list(QUESTIONS) if args.question == "all" else [args.question]
    out_dir = os.path.join(args.out, "mlp")
    data, meta = load_data(args.data_dir, args.device, args.quick)
    for name in names:
        if args.replot:
            result = load_result(os.path.join(out_dir, f"{name}.json"))
        else:
            result = get_result(args, name, data, meta, force=args.force)
        QUESTIONS[name]["report"](result, out_dir, data)
        print(f"{name}: wrote {os.path.join(out_dir, name)}.{{png,md,json}}")


if __name__ == "__main__":
    run_main(main)
