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

import numpy as np
import torch
from torch import nn

from common import (ArgumentParser, UserError, file_digest, library_versions, load_cached, load_result, markdown_table, mean_std,
                    pick_device, plot_mean_band, plt, run_main, save_figure, save_json, save_text, save_torch,
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
            raise UserError(f"{path}: missing column(s) {', '.join(missing)}; the header is {','.join(header) or '(empty)'}")
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
        raise UserError(f"{path}: line {int(np.argmax(bad)) + 2}: coordinates must be finite numbers (found NaN or inf)")
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
        label_note = f"labels {', '.join(classes[:5])}{', ...' if len(classes) > 5 else ''} mapped onto 0..{len(classes) - 1}"
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
    meta = {"dir": os.path.abspath(data_dir), "digest": file_digest([os.path.join(data_dir, f) for f in SPLIT_FILES.values()]),
            "rows": rows, "n_classes": len(classes), "class_names": class_names, "label_note": label_note,
            "extent": [float(all_coords[:, 0].min()), float(all_coords[:, 0].max()),
                       float(all_coords[:, 1].min()), float(all_coords[:, 1].max())]}
    return data, meta


# ----------------------------------------------------------------------------- model

class MLP(nn.Module):
    """`depth` hidden layers of `width` units, the first taking the input, then an output Linear:
    depth 6 has 7 nn.Linear. A hidden layer is Linear -> ReLU, or Linear -> BatchNorm1d -> ReLU."""

    def __init__(self, n_in=2, n_classes=33, depth=6, width=16, batch_norm=False):
        super().__init__()
        self.hidden = nn.ModuleList()
        for i in range(depth):
            layers = [nn.Linear(n_in if i == 0 else width, width)]
            if batch_norm:
                layers.append(nn.BatchNorm1d(width))
            layers.append(nn.ReLU())
            self.hidden.append(nn.Sequential(*layers))
        self.out = nn.Linear(width, n_classes)

    def forward(self, x):
        for layer in self.hidden:
            x = layer(x)
        return self.out(x)


@torch.no_grad()
def dead_relu_fraction(model, X):
    """Per hidden layer, the fraction of ReLU units that output 0 for every row of X (eval mode)."""
    outputs = []
    hooks = [m.register_forward_hook(lambda m, i, o: outputs.append(o)) for m in model.modules() if isinstance(m, nn.ReLU)]
    model.eval()
    model(X)
    for hook in hooks:
        hook.remove()
    return [float((out <= 0).all(0).float().mean()) for out in outputs]


# ----------------------------------------------------------------------------- training a group of runs

def train_group(args, data, meta, runs, epochs, batch_size, depth, width, batch_norm, desc, **record):
    """Train the runs (each with a seed and an lr) of one architecture in lockstep."""
    def build():
        return MLP(data["train"][0].shape[1], meta["n_classes"], depth, width, batch_norm)
    results, states = train_lockstep(build, runs, data, epochs, batch_size, args.device, quiet=args.quiet,
                                     desc=desc, **record)
    for result in results:
        result.update(epochs=epochs, batch_size=batch_size, depth=depth, width=width, batch_norm=batch_norm)
    return results, states, build


def seeds_of(args):
    return [args.seed + i for i in range(args.seeds)]


def train_lr(args, data, meta, settings):
    runs = [{"seed": s, "lr": lr} for s in seeds_of(args) for lr in settings["lrs"]]
    results, states, build = train_group(args, data, meta, runs, settings["epochs"], settings["batch_size"],
                                         settings["depth"], settings["width"], settings["batch_norm"], desc="lr sweep")
    for result, state in zip(results, states):
        model = build()
        model.load_state_dict(state)
        result["dead_relu_fraction"] = dead_relu_fraction(model, data["val"][0].cpu())
    return results, states


def train_epochs(args, data, meta, settings):
    runs = [{"seed": s, "lr": settings["lr"]} for s in seeds_of(args)]
    return train_group(args, data, meta, runs, settings["epochs"], settings["batch_size"], settings["depth"],
                       settings["width"], settings["batch_norm"], desc=f"{settings['epochs']} epochs",
                       eval_train=True)[:2]


def train_batch_size(args, data, meta, settings):
    results, states = [], []
    for batch_size, epochs in zip(settings["batch_sizes"], settings["batch_size_epochs"]):
        runs = [{"seed": s, "lr": settings["lr"]} for s in seeds_of(args)]
        group, group_states, _ = train_group(args, data, meta, runs, epochs, batch_size, settings["depth"],
                                             settings["width"], settings["batch_norm"], desc=f"batch {batch_size}",
                                             record_steps=True)
        results += group
        states += group_states
    return results, states


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


def write_markdown(out_dir, name, title, result, tables, figures, observations):
    settings = result["settings"]
    lines = [f"# {title}\n", "## Settings\n",
             markdown_table(["setting", "value"], [(k, v) for k, v in settings.items()] +
                            [("seeds", ", ".join(str(s) for s in sorted({r["seed"] for r in result["runs"]}))),
                             ("data", f"{result['data']['dir']} ({result['data']['rows']['train']} / "
                                      f"{result['data']['rows']['val']} / {result['data']['rows']['test']} rows, "
                                      f"{result['data']['n_classes']} classes)"),
                             ("device", result["device"]), ("wall time", f"{result['wall_s']:.1f} s")]),
             "\n## Results\n"]
    for table in tables:
        lines.append(table + "\n")
    lines += [f"![{name}]({figure})\n" for figure in figures]
    lines.append("\n## Observations\n")
    lines += [f"- {obs}" for obs in observations]
    save_text(os.path.join(out_dir, f"{name}.md"), "\n".join(lines) + "\n")


def report_lr(result, out_dir):
    by_lr = group_by(result["runs"], "lr")
    fig, ax = plt.subplots(figsize=(8, 5), layout="constrained")
    for lr, runs in by_lr.items():
        plot_mean_band(ax, epochs_axis(runs), [r["history"]["val_loss"] for r in runs], label=f"lr {lr:g}")
    ax.set(xlabel="epoch", ylabel="validation loss (cross-entropy, nats)",
           title="Validation loss per epoch by learning rate (mean over seeds, band = min..max)")
    ax.legend()
    ax.grid(alpha=0.3)
    save_figure(fig, os.path.join(out_dir, "lr.png"))

    rows = []
    for lr, runs in by_lr.items():
        dead = np.array([r["dead_relu_fraction"] for r in runs]).mean(0)
        rows.append((f"{lr:g}", mean_std([final(r, "val_loss") for r in runs]), mean_std([best(r, "val_loss") for r in runs]),
                     mean_std([final(r, "val_acc") for r in runs]), mean_std([best(r, "val_acc", max) for r in runs]),
                     " / ".join(f"{d:.2f}" for d in dead), status_text(runs)))
    table = markdown_table(["lr", "final val loss", "best val loss", "final val acc", "best val acc",
                            "dead ReLU fraction per hidden layer (val set, mean over seeds)", "status"], rows)
    finals = {lr: np.mean([final(r, "val_loss") for r in runs]) for lr, runs in by_lr.items()
              if all(r["status"] == "ok" for r in runs)}
    observations = []
    if finals:
        best_lr = min(finals, key=finals.get)
        observations.append(f"lr {best_lr:g} reached the lowest final validation loss, {finals[best_lr]:.3f}; "
                            + ", ".join(f"lr {lr:g}: {v:.3f}" for lr, v in finals.items() if lr != best_lr) + ".")
    for lr, runs in by_lr.items():
        first = np.mean([r["history"]["val_loss"][0] for r in runs if r["history"]["val_loss"][0] is not None] or [np.nan])
        last = finals.get(lr)
        if last is not None and abs(first - last) < 0.02:
            observations.append(f"lr {lr:g} barely moved: validation loss {first:.3f} after epoch 1, {last:.3f} at the end.")
    for lr, runs in by_lr.items():
        dead = np.mean([np.mean(r["dead_relu_fraction"]) for r in runs])
        observations.append(f"lr {lr:g}: {dead:.0%} of hidden ReLU units are dead at the end (output 0 on every validation point).")
    if any(r["status"] == "diverged" for r in result["runs"]):
        observations.append("diverged runs: " + "; ".join(f"lr {lr:g}: {status_text(runs)}" for lr, runs in by_lr.items()
                                                        if status_text(runs) != "ok") + ".")
    write_markdown(out_dir, "lr", "6.1.1 Learning rate", result, [table], ["lr.png"], observations)


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


def report_epochs(result, out_dir):
    runs = result["runs"]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(13, 4.5), layout="constrained")
    plot_split_curves(ax_loss, ax_acc, runs, f"{len(epochs_axis(runs))} epochs, no batch norm")
    save_figure(fig, os.path.join(out_dir, "epochs.png"))
    val_acc = [final(r, "val_acc") for r in runs]
    observations = [f"final accuracy train {mean_std([final(r, 'train_acc') for r in runs])}, "
                    f"validation {mean_std(val_acc)}, test {mean_std([final(r, 'test_acc') for r in runs])}.",
                    f"final validation loss {mean_std([final(r, 'val_loss') for r in runs])}, "
                    f"lowest {mean_std([best(r, 'val_loss') for r in runs])}: "
                    + ("still falling at the last epoch." if all(final(r, "val_loss") == best(r, "val_loss") for r in runs
                                                                if r["status"] == "ok") else "not at its minimum at the last epoch.")]
    write_markdown(out_dir, "epochs", "6.1.2 Training for longer (no batch norm)", result,
                   [split_table([("no batch norm", runs)])], ["epochs.png"], observations)


def report_batchnorm(result, out_dir):
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
        f"{mean_std([final(r, 'val_acc') for r in plain])} without, {mean_std([final(r, 'val_acc') for r in normed])} with.",
        f"final validation loss {mean_std([final(r, 'val_loss') for r in plain])} without batch norm, "
        f"{mean_std([final(r, 'val_loss') for r in normed])} with.",
        f"with batch norm, train accuracy averaged over the epoch's batches in train mode is {mean_std(train_batch)}; "
        f"the same final model in eval mode scores {mean_std(train_eval)} on the training set and "
        f"{mean_std([final(r, 'val_acc') for r in normed])} on validation. "
        "If eval-mode train accuracy matches validation, the val-above-train gap comes from measuring train in train "
        "mode during the epoch (batch statistics, weights still moving), not from the data splits."]
    write_markdown(out_dir, "batchnorm", "6.1.3 Batch norm (compared with 6.1.2)", result,
                   [split_table([("no batch norm", plain), ("batch norm", normed)])], ["batchnorm.png"], observations)


def running_mean(values, window):
    values = np.array([np.nan if v is None else v for v in values], dtype=float)
    if window <= 1:
        return values
    kernel = np.ones(window) / window
    return np.convolve(values, kernel, mode="valid")


def report_batch_size(result, out_dir):
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
                title=f"(iii) training loss per step, seed {result['runs'][0]['seed']}")
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
                    "total optimizer steps: " + ", ".join(f"batch {bs}: {runs[0]['steps_per_epoch'] * runs[0]['epochs']:,}"
                                                          for bs, runs in by_bs.items())
                    + "; at a fixed lr, accuracy follows the number of steps more than the number of epochs "
                    "(middle panel)."]
    write_markdown(out_dir, "batch_size", "6.1.4 Batch size", result, [table], ["batch_size.png"], observations)


# ----------------------------------------------------------------------------- questions

QUESTIONS = {
    # name: (protocol settings, train function, report function)
    "lr": (dict(lrs=[1, 0.2, 0.01, 0.001, 0.0005, 0.00001], epochs=50, batch_size=256, depth=6, width=16,
                batch_norm=False), train_lr, report_lr),
    "epochs": (dict(lr=1e-3, epochs=100, batch_size=256, depth=6, width=16, batch_norm=False), train_epochs,
               report_epochs),
    "batchnorm": (dict(lr=1e-3, epochs=100, batch_size=256, depth=6, width=16, batch_norm=True), train_epochs,
                  report_batchnorm),
    "batch_size": (dict(lr=1e-3, batch_sizes=[1, 16, 128, 1024], batch_size_epochs=[1, 10, 50, 50], depth=6, width=16,
                        batch_norm=False), train_batch_size, report_batch_size),
}
CODE_VERSION = 1  # bump when a change alters the numbers a question produces


def settings_for(args, name):
    """The protocol's settings for a question, with the flags the user set on top."""
    settings = dict(QUESTIONS[name][0])
    for key in ("lr", "lrs", "epochs", "batch_size", "batch_sizes", "batch_size_epochs", "depth", "width"):
        value = getattr(args, key)
        if value is not None and key in settings:
            settings[key] = value
    if args.batch_norm and name != "batchnorm":
        settings["batch_norm"] = True
    if args.quick:
        if "epochs" in settings:
            settings["epochs"] = min(settings["epochs"], 2)
        if "batch_size_epochs" in settings:
            settings["batch_size_epochs"] = [1] * len(settings["batch_sizes"])
    if len(settings.get("batch_sizes", [])) != len(settings.get("batch_size_epochs", [])):
        raise UserError("--batch-sizes and --batch-size-epochs need the same number of values")
    if settings["batch_norm"] and min(settings.get("batch_sizes", [settings.get("batch_size", 2)])) < 2:
        raise UserError("batch norm needs a batch size of at least 2 (BatchNorm1d cannot train on one sample)")
    return settings


def get_result(args, name, data, meta, force):
    """The question's saved result if its config matches, else train it and save it."""
    settings = settings_for(args, name)
    config = {"question": name, "code_version": CODE_VERSION, "data": meta["digest"], "quick": args.quick,
              "seeds": seeds_of(args), "device": args.device.type, **settings}
    path = os.path.join(args.out, "mlp", f"{name}.json")
    cached = None if force else load_cached(path, config)
    if cached is not None:
        print(f"{name}: reusing {path} (same settings; --force retrains)")
        return cached
    start = time.perf_counter()
    runs, states = QUESTIONS[name][1](args, data, meta, settings)
    result = {"question": name, "config": config, "settings": settings, "data": meta, "versions": library_versions(),
              "device": torch.cuda.get_device_name(args.device) if args.device.type == "cuda" else "cpu",
              "wall_s": round(time.perf_counter() - start, 2), "runs": runs}
    if name == "batchnorm":
        result["baseline_runs"] = get_result(args, "epochs", data, meta, force=False)["runs"]
    save_torch(os.path.join(args.out, "mlp", f"{name}.pt"), {"config": config, "states": states})
    save_json(path, result)
    return result


def parse_args(argv):
    parser = ArgumentParser(description=__doc__, formatter_class=RawDescriptionHelpFormatter)
    parser.add_argument("--question", required=True, choices=list(QUESTIONS) + ["all"],
                        help="which experiment: lr (6.1.1), epochs (6.1.2), batchnorm (6.1.3), batch_size (6.1.4), "
                             "or all")
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
    parser.add_argument("--epochs", type=int, help="epochs (protocol: lr 50, epochs and batchnorm 100)")
    parser.add_argument("--batch-size", type=int, help="batch size (protocol: 256)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", help="batch sizes of the batch_size question "
                                                                   "(protocol: 1 16 128 1024)")
    parser.add_argument("--batch-size-epochs", type=int, nargs="+",
                        help="epochs for each of --batch-sizes (protocol: 1 10 50 50)")
    parser.add_argument("--depth", type=int, help="hidden layers, the input layer included (protocol: 6)")
    parser.add_argument("--width", type=int, help="units per hidden layer (protocol: 16)")
    parser.add_argument("--batch-norm", action="store_true",
                        help="BatchNorm1d between each hidden Linear and its ReLU (protocol: off, except batchnorm)")
    parser.add_argument("--quick", action="store_true",
                        help="tiny budget (2,000 training rows, at most 2 epochs) for tests; never for results/")
    parser.add_argument("--force", action="store_true", help="retrain even if a saved result has the same settings")
    parser.add_argument("--replot", action="store_true", help="redraw figures and tables from the saved .json, no training")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    args = parser.parse_args(argv)
    positive = {"--seeds": args.seeds, "--lr": args.lr, "--epochs": args.epochs, "--batch-size": args.batch_size,
                "--depth": args.depth, "--width": args.width}
    for flag, value in positive.items():
        if value is not None and not value > 0:
            raise UserError(f"{flag} must be positive, got {value}")
    for flag, values in {"--lrs": args.lrs, "--batch-sizes": args.batch_sizes,
                         "--batch-size-epochs": args.batch_size_epochs}.items():
        if values is not None and not all(v > 0 for v in values):
            raise UserError(f"{flag} values must be positive, got {values}")
    return args


def main(argv):
    args = parse_args(argv)
    args.device = pick_device(args.device)
    names = list(QUESTIONS) if args.question == "all" else [args.question]
    out_dir = os.path.join(args.out, "mlp")
    data, meta = load_data(args.data_dir, args.device, args.quick)
    for name in names:
        if args.replot:
            result = load_result(os.path.join(out_dir, f"{name}.json"))
        else:
            result = get_result(args, name, data, meta, force=args.force)
        QUESTIONS[name][2](result, out_dir)
        print(f"{name}: wrote {os.path.join(out_dir, name)}.{{png,md,json}}")


if __name__ == "__main__":
    run_main(main)
