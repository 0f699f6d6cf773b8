"""Section 6: MLPs on 2-D coordinates (European cities -> country).

    python mlp.py --question lr            # one question; outputs in results/mlp/
    python mlp.py --question all           # every question, in order
    python mlp.py --list                   # the questions
    python mlp.py --help                   # every flag, with each question's protocol value

Each question writes results/mlp/<question>.md (settings, tables, findings), its .png figures and a
.json (settings, library versions, per-run histories); a rerun with the same settings, data and code
reuses the .json.
"""
import csv
import os
from math import comb

import numpy as np
from matplotlib.ticker import MaxNLocator
import torch
import torch.nn.functional as F
from torch import nn

import common
from common import (Question, Report, Setting, UserError, file_digest, finite_or_none, markdown_table, mean_std,
                    plot_mean_band, plot_prediction_map, plt, seed_everything, shown_path, train_lockstep)

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


def read_data(data_dir, device, quick=False):
    """{'train'|'val'|'test': (X, y) tensors on device, 'meta': the data's description (rows, classes, names)}."""
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
    data["meta"] = {"dir": os.path.abspath(data_dir),
                    "digest": file_digest([os.path.join(data_dir, f) for f in SPLIT_FILES.values()]),
                    "summary": f"{shown_path(data_dir)} ({rows['train']} / {rows['val']} / {rows['test']} rows, "
                               f"{len(classes)} classes)",
                    "rows": rows, "n_classes": len(classes), "class_names": class_names, "label_note": label_note,
                    "extent": [float(all_coords[:, 0].min()), float(all_coords[:, 0].max()),
                               float(all_coords[:, 1].min()), float(all_coords[:, 1].max())]}
    return data


def load_data(args, device):
    """The runner's data: the splits and their description, and how to train on them (device, progress bars)."""
    return {**read_data(args.data_dir or DEFAULT_DATA, device, args.quick), "device": device, "quiet": args.quiet}


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


# ----------------------------------------------------------------------------- training
# train(settings, data, reads) -> result

def seeds_of(settings):
    return [settings["seed"] + i for i in range(settings["seeds"])]


def seed_runs(settings, lr, **extra):
    """One run per seed at learning rate lr."""
    return [{"seed": s, "lr": lr, **extra} for s in seeds_of(settings)]


def arch_of(settings, **changes):
    """The architecture keys of a model: changes, else the settings, else plain (no batch norm, no skips, raw)."""
    plain = {"batch_norm": False, "residual": False, "features": "raw"}
    return {key: changes.get(key, settings.get(key, plain.get(key))) for key in ARCH_KEYS}


def train_group(data, runs, arch, epochs, batch_size, desc, diagnose_init=False, **record):
    """Train the runs (each with a seed and an lr) of one architecture in lockstep: (results, states)."""
    n_classes = data["meta"]["n_classes"]
    inputs = {split: (featurize(X, arch["features"]), y) for split, (X, y) in
              ((split, data[split]) for split in SPLIT_FILES)}
    results, states = train_lockstep(lambda: build_model(arch, n_classes), runs, inputs, epochs, batch_size,
                                     data["device"], quiet=data["quiet"], desc=desc, **record)
    for result in results:
        result.update(epochs=epochs, batch_size=batch_size, **arch)
        if diagnose_init:
            result.update(init_diagnostics(arch, n_classes, result["seed"], *(t.cpu() for t in inputs["train"]),
                                           batch_size))
    return results, states


def train_groups(data, groups, **record):
    """Train groups one after the other, each a (runs, arch, epochs, batch_size, desc), and concatenate."""
    results, states = [], []
    for runs, arch, epochs, batch_size, desc in groups:
        group, group_states = train_group(data, runs, arch, epochs, batch_size, desc, **record)
        results += group
        states += group_states
    return results, states


def train_lr(settings, data, reads):
    runs = [{"seed": s, "lr": lr} for s in seeds_of(settings) for lr in settings["lrs"]]
    results, states = train_group(data, runs, arch_of(settings), settings["epochs"], settings["batch_size"],
                                  desc="lr sweep")
    for result, state in zip(results, states):
        model = load_model(result, data["meta"]["n_classes"], state)
        ok = result["status"] == "ok"
        result["dead_relu_fraction"] = dead_relu_fraction(model, data["val"][0].cpu()) if ok else None
    return {"runs": results}


def train_epochs(settings, data, reads, batch_norm=None):
    arch = arch_of(settings) if batch_norm is None else arch_of(settings, batch_norm=batch_norm)
    results, _ = train_group(data, seed_runs(settings, settings["lr"]), arch, settings["epochs"],
                             settings["batch_size"], desc=f"{settings['epochs']} epochs" + ", batch norm" *
                             arch["batch_norm"], eval_train=True)
    return {"runs": results}


def train_batchnorm(settings, data, reads):
    """The epochs question with batch norm, beside the epochs question's runs."""
    return {**train_epochs(settings, data, reads, batch_norm=True), "baseline_runs": reads["epochs"]["runs"]}


def train_batch_size(settings, data, reads):
    results, _ = train_groups(data, [
        (seed_runs(settings, settings["lr"]), arch_of(settings), epochs, batch_size, f"batch {batch_size}")
        for batch_size, epochs in zip(settings["batch_sizes"], settings["batch_size_epochs"])], record_steps=True)
    return {"runs": results}


def train_depth_width(settings, data, reads):
    results, states = train_groups(data, [
        (seed_runs(settings, settings["lr"]), arch_of(settings, depth=depth, width=width), settings["epochs"],
         settings["batch_size"], f"depth {depth} width {width}") for depth, width in settings["architectures"]])
    return {"runs": results, "weights": {"states": states}}


def train_gradients(settings, data, reads):
    results, _ = train_group(data, seed_runs(settings, settings["lr"]), arch_of(settings), settings["epochs"],
                             settings["batch_size"], desc=f"depth {settings['depth']} gradients", record_grads=True,
                             diagnose_init=True)
    return {"runs": results}


RESIDUAL_FIXES = {"residual": dict(residual=True), "batch_norm": dict(batch_norm=True),
                  "residual_batch_norm": dict(residual=True, batch_norm=True)}


def train_residual(settings, data, reads):
    results, _ = train_groups(data, [
        (seed_runs(settings, settings["lr"], fix=fix), arch_of(settings, **changes), settings["epochs"],
         settings["batch_size"], f"depth {settings['depth']} {fix}") for fix, changes in RESIDUAL_FIXES.items()],
        record_grads=True, diagnose_init=True)
    return {"runs": results, "baseline_runs": reads["gradients"]["runs"]}


def same_training(run, settings, arch):
    """Whether a saved run was trained as this question's settings and architecture would train it."""
    return (all(run[key] == value for key, value in arch.items()) and run["seed"] in seeds_of(settings)
            and all(run[key] == settings[key] for key in ("lr", "epochs", "batch_size")))


def train_implicit(settings, data, reads):
    """The sin-feature model, beside the same model on raw coordinates: depth_width's runs when it trained that
    model with these settings, else trained here."""
    raw = arch_of(settings, features="raw")
    source = reads["depth_width"]
    baseline = [(run, state) for run, state in zip(source["runs"], source["weights"]["states"])
                if same_training(run, settings, raw)]
    if sorted(run["seed"] for run, _ in baseline) != seeds_of(settings):
        baseline = list(zip(*train_group(data, seed_runs(settings, settings["lr"]), raw, settings["epochs"],
                                         settings["batch_size"], desc="raw coordinates")))
    results, states = train_group(data, seed_runs(settings, settings["lr"]), arch_of(settings), settings["epochs"],
                                  settings["batch_size"], desc="sin features")
    return {"runs": results, "baseline_runs": [run for run, _ in baseline],
            "weights": {"states": states, "baseline_states": [state for _, state in baseline]}}


def train_regions(settings, data, reads):
    """No training: count the regions of the depth_width question's trained models."""
    source = reads["depth_width"]
    results, kept_states = [], []
    for run, state in zip(source["runs"], source["weights"]["states"]):
        if [run["depth"], run["width"]] not in settings["architectures"]:
            continue
        model = load_model(run, data["meta"]["n_classes"], state)
        regions = activation_regions(model, data["meta"]["extent"], settings["resolution"])
        results.append({**{k: run[k] for k in ("seed", "lr", "epochs", "batch_size", *ARCH_KEYS)},
                        "status": run["status"], "regions_on_grid": int(regions.max()) + 1,
                        "bound": region_bound([run["width"]] * run["depth"]),
                        "test_acc": run["history"]["test_acc"][-1]})
        kept_states.append(state)
    return {"runs": results, "weights": {"states": kept_states}}


# ----------------------------------------------------------------------------- findings
# Sentences that say more than a number: each decided by the numbers, each case tested.

def as_array(values):
    """Floats with NaN where a run diverged (None)."""
    return np.array([np.nan if v is None else v for v in values], dtype=float)


TREND_TOLERANCE = 0.005  # a change in validation loss under 0.5% counts as no change
GAP_TOLERANCE = 0.01  # accuracies within 0.01 count as equal


def loss_trend(curve):
    """('improving' | 'overfitting' | 'flat', window, last, previous, lowest, lowest_epoch) of a validation-loss curve
    (None where a run diverged is left out): the mean of the last tenth of the epochs against the tenth before, and
    against the lowest value."""
    values = as_array(curve)
    window = max(1, len(values) // 10)
    last, previous = np.nanmean(values[-window:]), np.nanmean(values[-2 * window:-window])
    lowest_epoch = int(np.nanargmin(values)) + 1
    lowest = values[lowest_epoch - 1]
    if last < previous * (1 - TREND_TOLERANCE):
        case = "improving"
    elif last > lowest * (1 + TREND_TOLERANCE) and lowest_epoch <= len(values) - window:
        case = "overfitting"
    else:
        case = "flat"
    return case, window, last, previous, lowest, lowest_epoch


def epochs_finding(runs):
    """Is validation loss still falling at the end, rising from an earlier minimum, or flat? (mean over seeds)"""
    curves = np.array([as_array(r["history"]["val_loss"]) for r in runs])
    if curves.shape[1] < 2 or np.isnan(curves).all():
        return "too few epochs (or none finite) to tell a trend of the validation loss."
    case, window, last, previous, lowest, lowest_epoch = loss_trend(np.nanmean(curves, axis=0))
    span = f"mean validation loss over the last {window} epoch(s) {last:.3f}, over the {window} before {previous:.3f}"
    if case == "improving":
        return f"still improving at the last epoch: {span}; its lowest, {lowest:.3f}, is at epoch {lowest_epoch}."
    if case == "overfitting":
        return (f"overfitting: validation loss reached its lowest, {lowest:.3f}, at epoch {lowest_epoch} and rose "
                f"since ({span}).")
    return (f"flat: {span}, a change of less than {TREND_TOLERANCE:.1%}; its lowest, {lowest:.3f}, is at epoch "
            f"{lowest_epoch}.")


def eval_gap_finding(train_batch, train_eval, val):
    """With batch norm: does the final model in eval mode score the training set as it scores validation (so a
    val-above-train gap is only how train accuracy is measured)? Accuracies are means over seeds."""
    measured = (f"train accuracy averaged over the last epoch's batches in train mode {train_batch:.3f}, the final "
                f"model in eval mode {train_eval:.3f} on the training set and {val:.3f} on validation")
    if train_batch >= val - GAP_TOLERANCE:
        return f"{measured}: validation is not above train, so there is no gap to explain."
    if abs(train_eval - val) <= GAP_TOLERANCE:
        return (f"{measured}: in eval mode train matches validation, so the val-above-train gap comes from measuring "
                "train in train mode during the epoch (batch statistics, weights still moving), not from the splits.")
    return (f"{measured}: in eval mode train and validation still differ by {train_eval - val:+.3f}, so the way train "
            "accuracy is measured does not explain the whole gap.")


def steps_finding(rows):
    """Does more optimizer steps mean higher validation accuracy across batch sizes? rows: (batch size, total
    steps, best validation accuracy)."""
    by_steps = sorted(rows, key=lambda row: -row[1])
    for i, (batch, steps, acc) in enumerate(by_steps):
        for other_batch, other_steps, other_acc in by_steps[i + 1:]:
            if other_acc > acc + GAP_TOLERANCE:
                return (f"more optimizer steps did not mean higher accuracy: batch {batch} took {steps:,} steps and "
                        f"reached {acc:.3f}, batch {other_batch} took {other_steps:,} and reached {other_acc:.3f}.")
    listed = ", ".join(f"batch {batch}: {steps:,} steps, {acc:.3f}" for batch, steps, acc in by_steps)
    if max(row[2] for row in rows) - min(row[2] for row in rows) <= GAP_TOLERANCE:
        return f"accuracy is the same within {GAP_TOLERANCE} whatever the number of optimizer steps: {listed}."
    return f"accuracy never falls as the number of optimizer steps grows: {listed}."


def dead_layer_finding(runs):
    """Are the layers with an exactly-zero gradient in every epoch those at and below a layer that is dead at
    initialisation (its input exactly 0 on the whole first batch)?"""
    zeros = {r["seed"]: zero_layers(r) for r in runs}
    if not any(zeros.values()):
        return "no layer has an exactly-zero gradient in every epoch."
    explained, unexplained = [], []
    for r in runs:
        cut = max([layer for layer, norm in enumerate(r["init_activation_norm"]) if norm == 0], default=None)
        if zeros[r["seed"]] and cut is not None and zeros[r["seed"]] == list(range(cut + 1)):
            explained.append(f"seed {r['seed']}: layers 0-{cut}, dead layer {cut}")
        elif zeros[r["seed"]]:
            unexplained.append(f"seed {r['seed']} (layers {layer_ranges(zeros[r['seed']])})")
    text = ""
    if explained:
        text = ("exact zeros from a dead layer: " + "; ".join(explained) + ". At initialisation every ReLU before "
                "the dead layer is off on every row of the first batch, so its input is exactly 0: its own weight "
                "gets a zero gradient and nothing below it reaches the output. The zeros are not floating-point "
                "underflow.")
    if unexplained:
        text += (" " if text else "") + ("exact zeros without a dead layer at initialisation: "
                                         + ", ".join(unexplained) + ".")
    return text


def lowest_loss_finding(finals):
    """Which lr ends at the lowest validation loss? finals: lr -> mean final validation loss (runs that did not
    diverge)."""
    if not finals:
        return "every lr diverged in at least one seed: no lowest final validation loss."
    best_lr = min(finals, key=finals.get)
    others = ", ".join(f"lr {lr:g}: {v:.3f}" for lr, v in finals.items() if lr != best_lr)
    return f"lr {best_lr:g} reached the lowest final validation loss, {finals[best_lr]:.3f}" + (
        f"; {others}." if others else ".")


def flat_finding(lr, after_two, last, tolerance=0.02):
    """Did validation loss at this lr stay where it was after epoch 2 (a flat line)? Means over seeds."""
    if abs(after_two - last) < tolerance:
        return f"lr {lr:g} is flat: validation loss {after_two:.3f} after epoch 2, {last:.3f} at the end."
    return None


# ----------------------------------------------------------------------------- reports
# report(result, data) -> Report(body, figures, findings)

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


def report_lr(result, data):
    by_lr = group_by(result["runs"], "lr")
    fig, ax = plt.subplots(figsize=(8, 5), layout="constrained")
    for lr, runs in by_lr.items():
        plot_mean_band(ax, epochs_axis(runs), [r["history"]["val_loss"] for r in runs], label=f"lr {lr:g}")
    ax.set(xlabel="epoch", ylabel="validation loss (cross-entropy, nats)",
           title="Validation loss per epoch by learning rate (mean over seeds, band = min..max)")
    ax.legend()
    ax.grid(alpha=0.3)

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
    findings = [lowest_loss_finding(finals)]
    for lr, runs in by_lr.items():
        if lr in finals and len(epochs_axis(runs)) > 2:
            findings.append(flat_finding(lr, np.mean([r["history"]["val_loss"][1] for r in runs]), finals[lr]))
    findings.append("dead hidden ReLU units at the end (output 0 on every validation point), mean over layers and "
                    "seeds: " + ", ".join(f"lr {lr:g}: {np.mean(d):.0%}" for lr, d in dead.items() if d) + ".")
    diverged = [f"lr {lr:g}: {status_text(runs)}" for lr, runs in by_lr.items() if status_text(runs) != "ok"]
    if diverged:
        findings.append("diverged runs: " + "; ".join(diverged) + ".")
    return Report([table], {"lr.png": fig}, [f for f in findings if f])


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


def report_epochs(result, data):
    runs = result["runs"]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(13, 4.5), layout="constrained")
    plot_split_curves(ax_loss, ax_acc, runs, f"{len(epochs_axis(runs))} epochs, no batch norm")
    findings = [f"final accuracy train {mean_std([final(r, 'train_acc') for r in runs])}, validation "
                f"{mean_std([final(r, 'val_acc') for r in runs])}, test "
                f"{mean_std([final(r, 'test_acc') for r in runs])}; final validation loss "
                f"{mean_std([final(r, 'val_loss') for r in runs])}, lowest "
                f"{mean_std([best(r, 'val_loss') for r in runs])}.",
                epochs_finding(runs)]
    return Report([split_table([("no batch norm", runs)])], {"epochs.png": fig}, findings)


def mean_final(runs, key):
    return float(np.mean([final(r, key) for r in runs if final(r, key) is not None]))


def report_batchnorm(result, data):
    plain, normed = result["baseline_runs"], result["runs"]
    fig, axes = plt.subplots(2, 2, figsize=(13, 9), sharey="row", layout="constrained")
    plot_split_curves(axes[0, 0], axes[1, 0], plain, "no batch norm", eval_mode_train=True)
    plot_split_curves(axes[0, 1], axes[1, 1], normed, "batch norm", eval_mode_train=True)
    gap = [final(n, "val_acc") - final(p, "val_acc") for p, n in zip(plain, normed)
           if final(n, "val_acc") is not None and final(p, "val_acc") is not None]
    findings = [
        f"batch norm changes final validation accuracy by {mean_std(gap)} (paired by seed): "
        f"{mean_std([final(r, 'val_acc') for r in plain])} without, "
        f"{mean_std([final(r, 'val_acc') for r in normed])} with.",
        f"final validation loss {mean_std([final(r, 'val_loss') for r in plain])} without batch norm, "
        f"{mean_std([final(r, 'val_loss') for r in normed])} with."]
    ok = [r for r in normed if r["status"] == "ok"]
    if ok:
        findings.append("with batch norm, " + eval_gap_finding(mean_final(ok, "train_acc"),
                                                               mean_final(ok, "train_eval_acc"),
                                                               mean_final(ok, "val_acc")))
    return Report([split_table([("no batch norm", plain), ("batch norm", normed)])], {"batchnorm.png": fig},
                  findings)


def running_mean(values, window):
    values = as_array(values)
    if window <= 1:
        return values
    kernel = np.ones(window) / window
    return np.convolve(values, kernel, mode="valid")


def report_batch_size(result, data):
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
                ylim=(0, 1.5 * max(np.nanmax(line.get_ydata()) for line in ax_loss.get_lines()[1::2])))
    for ax in (ax_epoch, ax_steps, ax_loss):
        ax.legend()
        ax.grid(alpha=0.3)
    table = markdown_table(["batch size", "epochs", "iterations per epoch", "total steps", "wall time of the group (s)",
                            "final val acc", "best val acc", "status"], rows)
    peak = {bs: np.mean(as_array([best(r, "val_acc", max) for r in runs])) for bs, runs in by_bs.items()}
    top = max(peak, key=peak.get)
    findings = [f"batch {top} reached the highest validation accuracy, {peak[top]:.3f}; "
                + ", ".join(f"batch {bs}: {v:.3f}" for bs, v in peak.items() if bs != top) + ".",
                steps_finding([(bs, runs[0]["steps_per_epoch"] * runs[0]["epochs"], peak[bs])
                               for bs, runs in by_bs.items()])]
    return Report([table], {"batch_size.png": fig}, findings)


def value_range(values):
    return f"{min(values)}" if min(values) == max(values) else f"{min(values)}-{max(values)}"


def arch_label(run):
    return f"depth {run['depth']}, width {run['width']}"


def draw_map(ax, run, state, data, title_prefix=""):
    meta = data["meta"]
    model = load_model(run, meta["n_classes"], state)
    X_test, y_test = (t.cpu() for t in data["test"])
    plot_prediction_map(ax, predictor(model, run["features"]), meta["extent"], X_test, y_test, meta["class_names"],
                        f"{title_prefix}{arch_label(run)}, seed {run['seed']}: "
                        f"test accuracy {run['history']['test_acc'][-1]:.3f}")


def curves_and_map(runs, state, data, title):
    """Train/val/test loss per epoch (mean over seeds) beside the first seed's prediction map."""
    fig, (ax_loss, ax_map) = plt.subplots(1, 2, figsize=(17, 6.5), layout="constrained",
                                          gridspec_kw={"width_ratios": [1, 1.6]})
    x = epochs_axis(runs)
    for split, color in (("train", "C0"), ("val", "C1"), ("test", "C2")):
        plot_mean_band(ax_loss, x, [r["history"][f"{split}_loss"] for r in runs], label=split, color=color)
    ax_loss.set(xlabel="epoch", ylabel="loss (cross-entropy, nats)", title=f"{title}: loss per epoch")
    ax_loss.legend()
    ax_loss.grid(alpha=0.3)
    draw_map(ax_map, runs[0], state, data, f"{title}: ")
    return fig


def report_depth_width(result, data):
    states = result["weights"]["states"]
    groups = {}
    for i, run in enumerate(result["runs"]):
        groups.setdefault((run["depth"], run["width"]), []).append(i)
    val = {arch: np.mean(as_array([final(result["runs"][i], "val_acc") for i in idx])) for arch, idx in groups.items()}
    ranked = sorted((a for a in val if not np.isnan(val[a])), key=val.get)  # diverged architectures left out
    worst, top = (ranked[0], ranked[-1]) if ranked else (None, None)
    rows = []
    for arch, idx in groups.items():
        runs = [result["runs"][i] for i in idx]
        n_params = sum(p.numel() for p in build_model(runs[0], data["meta"]["n_classes"]).parameters())
        mark = " **best**" if arch == top else " **worst**" if arch == worst else ""
        rows.append([f"{arch_label(runs[0])}{mark}", f"{n_params:,}"] +
                    [mean_std([final(r, key) for r in runs]) for key in
                     ("train_acc", "val_acc", "test_acc", "train_loss", "val_loss", "test_loss")] + [status_text(runs)])
    table = markdown_table(["model", "parameters", "train acc", "val acc", "test acc", "train loss", "val loss",
                            "test loss", "status"], rows)

    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8), layout="constrained")
    for ax, vary, fixed_key, fixed in ((axes[0], "depth", "width", 16), (axes[1], "width", "depth", 6)):
        archs = sorted(a for a in groups if a[1 if fixed_key == "width" else 0] == fixed)
        xs = [a[0] if vary == "depth" else a[1] for a in archs]
        for split, color in (("train", "C0"), ("val", "C1"), ("test", "C2")):
            values = [as_array([final(result["runs"][i], f"{split}_acc") for i in groups[a]]) for a in archs]
            ax.errorbar(xs, [np.mean(v) for v in values], yerr=[np.std(v) for v in values], marker="o", capsize=3,
                        color=color, label=split)
        ax.set(xlabel="hidden layers (depth)" if vary == "depth" else "units per hidden layer (width, log scale)",
               ylabel="final accuracy (mean ± std over seeds)", title=f"accuracy vs {vary} ({fixed_key} {fixed})")
        if vary == "width":
            ax.set_xscale("log", base=2)
        ax.set_xticks(xs, [str(x) for x in xs])
        ax.legend()
        ax.grid(alpha=0.3)
    figures = {"depth_width.png": fig}
    for tag, arch in (("best", top), ("worst", worst)) if ranked else ():
        idx = groups[arch]
        figures[f"depth_width_{tag}.png"] = curves_and_map([result["runs"][i] for i in idx], states[idx[0]], data,
                                                           f"{tag} model")

    depth_text = ", ".join(f"depth {d}: {val[(d, w)]:.3f}" for d, w in sorted(groups) if w == 16)
    width_text = ", ".join(f"width {w}: {val[(d, w)]:.3f}" for d, w in sorted(groups, key=lambda a: a[1]) if d == 6)
    findings = [f"best by validation accuracy: {arch_label(dict(depth=top[0], width=top[1]))} ({val[top]:.3f}); "
                f"worst: {arch_label(dict(depth=worst[0], width=worst[1]))} ({val[worst]:.3f})." if ranked else
                "every architecture diverged in at least one seed: no best or worst model.",
                f"validation accuracy by depth (width 16): {depth_text}.",
                f"validation accuracy by width (depth 6): {width_text}."]
    gaps = [final(r, "val_acc") - final(r, "train_acc") for r in result["runs"] if r["status"] == "ok"]
    if gaps:
        findings.append(f"validation accuracy is above train accuracy (train measured in train mode over the epoch, "
                        f"as in 6.1.3) in {sum(g > 0 for g in gaps)} of {len(gaps)} runs; mean gap "
                        f"{np.mean(gaps):+.3f}.")
    return Report([table], figures, findings)


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
    cmap = plt.get_cmap("viridis").with_extremes(bad="black")
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
    values = as_array(values)
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


def gradient_report(variants):
    """Per-epoch gradient lines and heat map for every variant, the first-step picture below: (table, figure)."""
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
    table = markdown_table(["model"] + [f"layer {layer}: epoch 1 / last" for layer in layers] +
                           ["layers exactly 0 in every epoch", "final val acc", "status"],
                           [gradient_rows(label, runs, layers) for label, runs in variants])
    return table, fig


def report_gradients(result, data):
    runs = result["runs"]
    table, fig = gradient_report([(f"depth {runs[0]['depth']}, width {runs[0]['width']}", runs)])
    grads = grad_matrix([r for r in runs if r["status"] == "ok"] or runs)
    n_layers = grads.shape[1]
    findings = ["layers with exactly zero gradient in every epoch: "
                + "; ".join(f"seed {r['seed']}: {layer_ranges(zero_layers(r))}" for r in runs) + ".",
                dead_layer_finding(runs),
                "last epoch, mean over seeds: " + ", ".join(f"layer {layer} {grads[-1, layer]:.1e}"
                                                           for layer in (0, 30, 60, 90, 95, 99, n_layers - 1)
                                                           if layer < n_layers)
                + f" (layer {n_layers - 1} is the output layer); final validation accuracy "
                f"{mean_std([final(r, 'val_acc') for r in runs])}."]
    return Report([table], {"gradients.png": fig}, findings)


def report_residual(result, data):
    variants = [("plain", result["baseline_runs"])] + [
        (fix.replace("_", " + ").replace("batch + norm", "batch norm"), [r for r in result["runs"] if r["fix"] == fix])
        for fix in RESIDUAL_FIXES]
    table, fig = gradient_report(variants)
    findings = []
    for label, runs in variants:
        run = runs[0]
        text = (f"{label}: {status_text(runs)}, validation accuracy {mean_std([final(r, 'val_acc') for r in runs])}; "
                f"at initialisation the activation norm goes from {run['init_activation_norm'][1]:.2g} (layer 1) to "
                f"{run['init_activation_norm'][-1]:.2g} (output layer) and the first step's ||grad W||² from "
                f"{run['first_step_grad_sq_norm'][0]:.2g} (layer 0) to {run['first_step_grad_sq_norm'][-1]:.2g} "
                f"(output layer), seed {run['seed']}")
        if any(r["status"] == "ok" for r in runs):
            text += f"; exactly-zero layers {layer_ranges(zero_layers(next(r for r in runs if r['status'] == 'ok')))}"
        findings.append(text + ".")
    return Report([table], {"residual.png": fig}, findings)


def report_implicit(result, data):
    weights = result["weights"]
    variants = [("raw coordinates", result["baseline_runs"], weights["baseline_states"][0]),
                ("sin features", result["runs"], weights["states"][0])]
    fig, axes = plt.subplots(1, 2, figsize=(20, 7), layout="constrained")
    for ax, (label, runs, state) in zip(axes, variants):
        draw_map(ax, runs[0], state, data, f"{label}: ")
        if ax is axes[0]:
            ax.get_legend().remove()
    rows = [[label, runs[0]["features"]] + [mean_std([final(r, key) for r in runs]) for key in
                                            ("train_acc", "val_acc", "test_acc", "val_loss")] + [status_text(runs)]
            for label, runs, _ in variants]
    table = markdown_table(["input", "features", "train acc", "val acc", "test acc", "val loss", "status"], rows)
    gap = [final(s, "val_acc") - final(r, "val_acc") for r, s in zip(variants[0][1], variants[1][1])
           if final(s, "val_acc") is not None and final(r, "val_acc") is not None]
    run = result["runs"][0]
    findings = [f"sin features change validation accuracy by {mean_std(gap)} (paired by seed) against raw "
                f"coordinates; both models {arch_label(run)}, batch norm {'on' if run['batch_norm'] else 'off'}, "
                f"{run['epochs']} epochs at lr {run['lr']:g}, batch {run['batch_size']}."]
    note = (f"Features: sin(a*x) for a in {', '.join(f'{a:g}' for a in SIN_FREQUENCIES)} on longitude and latitude in "
            f"degrees ({2 * len(SIN_FREQUENCIES)} inputs).")
    return Report([table, note], {"implicit.png": fig}, findings)


def report_regions(result, data):
    meta = data["meta"]
    states = result["weights"]["states"]
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
    findings = [f"{arch_label(runs[0])}: {value_range([r['regions_on_grid'] for r in runs])} regions over the "
                f"data's extent against a bound of {runs[0]['bound']:,} for the whole plane."
                for runs in group_by(result["runs"], "depth").values()]
    note = ("Each distinct on/off pattern of the hidden ReLUs is one linear region: the inputs that share a pattern "
            "form one convex polygon on which the network is a single affine map (batch norm in eval mode is affine "
            "and adds none). Counting patterns on a grid gives a lower bound: regions thinner than a cell, or outside "
            "the data's extent, are missed.")
    return Report([table, note], {"regions.png": fig}, findings)
# ----------------------------------------------------------------------------- questions

SECTION_61 = dict(seed=42, seeds=3, lr=1e-3, batch_size=256, depth=6, width=16, batch_norm=False)  # the skeleton's
SECTION_62 = dict(seed=42, seeds=3, lr=1e-3, epochs=50, batch_size=128, depth=6, width=16, batch_norm=True)  # report's
GRADIENTS = dict(SECTION_61, epochs=10, depth=100, width=4)
ARCHITECTURES = [[1, 16], [2, 16], [6, 16], [10, 16], [6, 8], [6, 32], [6, 64]]
QUESTIONS = [
    Question("lr", "6.1.1", "Learning rate", dict(SECTION_61, lrs=[1, 0.2, 0.01, 0.001, 0.0005, 0.00001], epochs=50),
             train_lr, report_lr),
    Question("epochs", "6.1.2", "Training for longer (no batch norm)", dict(SECTION_61, epochs=100), train_epochs,
             report_epochs),
    Question("batchnorm", "6.1.3", "Batch norm (compared with 6.1.2)",
             {k: v for k, v in dict(SECTION_61, epochs=100).items() if k != "batch_norm"}, train_batchnorm,
             report_batchnorm, reads=("epochs",)),
    Question("batch_size", "6.1.4", "Batch size",
             {k: v for k, v in dict(SECTION_61, batch_sizes=[1, 16, 128, 1024], batch_size_epochs=[1, 10, 50, 50])
              .items() if k != "batch_size"}, train_batch_size, report_batch_size),
    Question("depth_width", "6.2.1-6.2.4", "Depth and width",
             {k: v for k, v in dict(SECTION_62, architectures=ARCHITECTURES).items() if k not in ("depth", "width")},
             train_depth_width, report_depth_width),
    Question("gradients", "6.2.5", "Vanishing gradients", GRADIENTS, train_gradients, report_gradients),
    Question("residual", "6.2.6", "Fixing the vanishing gradients (bonus)", GRADIENTS, train_residual,
             report_residual, reads=("gradients",)),
    Question("implicit", "6.2.7", "Implicit representation: sin features (bonus)", dict(SECTION_62, features="sin"),
             train_implicit, report_implicit, reads=("depth_width",)),
    Question("regions", "", "Linear regions of the trained ReLU nets (beyond the report)",
             dict(architectures=[[1, 16], [2, 16]], resolution=2000), train_regions, report_regions,
             reads=("depth_width",)),
]


def architecture(text):
    """'DxW' -> [D, W], for --architectures."""
    try:
        depth, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise UserError(f"--architectures {text}: expected DEPTHxWIDTH, e.g. 6x16") from None
    return [depth, width]


def on_off(text):
    if text not in ("on", "off"):
        raise UserError(f"--batch-norm {text}: expected on or off")
    return text == "on"


SETTINGS = [
    Setting("seeds", "runs per setting, seeds SEED, SEED+1, ... (1 = the exercise's single run)", dict(type=int)),
    Setting("lr", "SGD learning rate", dict(type=float)),
    Setting("lrs", "learning rates of the lr sweep", dict(type=float, nargs="+")),
    Setting("epochs", "epochs", dict(type=int)),
    Setting("batch_size", "batch size", dict(type=int)),
    Setting("batch_sizes", "batch sizes compared", dict(type=int, nargs="+")),
    Setting("batch_size_epochs", "epochs for each of --batch-sizes", dict(type=int, nargs="+")),
    Setting("depth", "hidden layers, the input layer included", dict(type=int)),
    Setting("width", "units per hidden layer", dict(type=int)),
    Setting("architectures", "models, each DEPTHxWIDTH", dict(type=architecture, nargs="+", metavar="DxW"),
            show=lambda archs: " ".join(f"{d}x{w}" for d, w in archs)),
    Setting("batch_norm", "BatchNorm1d between each hidden Linear and its ReLU",
            dict(type=on_off, metavar="on|off"), check=None),
    Setting("resolution", "grid cells per side for counting regions", dict(type=int)),
]


def resolve(settings, quick):
    """The --quick budget (at most 2 epochs, 1 per batch size, a 200-cell grid), then the checks across settings."""
    if quick:
        caps = {"epochs": 2, "resolution": 200}
        settings = {key: min(value, caps[key]) if key in caps else value for key, value in settings.items()}
        if "batch_size_epochs" in settings:
            settings["batch_size_epochs"] = [1] * len(settings["batch_size_epochs"])
    if len(settings.get("batch_sizes", [])) != len(settings.get("batch_size_epochs", [])):
        raise UserError("--batch-sizes and --batch-size-epochs need the same number of values")
    if settings.get("batch_norm") and min(settings.get("batch_sizes", [settings.get("batch_size", 2)])) < 2:
        raise UserError("batch norm needs a batch size of at least 2 (BatchNorm1d cannot train on one sample)")
    return settings


SCRIPT = common.Script(
    name="mlp", doc=__doc__, questions=QUESTIONS, settings=SETTINGS, load_data=load_data, resolve=resolve,
    data_help="folder with train.csv, validation.csv, test.csv (columns long, lat, country; optional countries.csv "
              "with id,iso,name for legends). Default: the embedded data/europe",
    threads=1)

if __name__ == "__main__":
    common.main(SCRIPT)
