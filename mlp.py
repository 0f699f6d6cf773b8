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
import math
import os
from math import comb

import numpy as np
from matplotlib.ticker import MaxNLocator, NullLocator
import torch
import torch.nn.functional as F
from torch import nn

import common
from common import (Answer, Question, Report, Setting, UserError, class_legend, file_digest, finite_or_none,
                    map_height_ratio, markdown_table, mean_std, plot_mean_band, plot_prediction_map, plt,
                    seed_everything, shown_path, train_lockstep)

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
    data["meta"] = {"dir": shown_path(data_dir),
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

SIN_FREQUENCIES = [round(0.1 * i, 1) for i in range(1, 11)]  # 6.2.1-7: a in {0.1, ..., 1.0}


def featurize(X, features):
    """raw: the (long, lat) coordinates; sin: sin(a * x) for every a in SIN_FREQUENCIES and each coordinate
    (20 features, those of the longitude first)."""
    if features == "raw":
        return X
    a = torch.tensor(SIN_FREQUENCIES, device=X.device)
    return torch.sin(X[:, :, None] * a).flatten(1)


ACTIVATIONS = {"relu": nn.ReLU, "leaky_relu": nn.LeakyReLU}  # LeakyReLU: negative slope 0.01


class MLP(nn.Module):
    """`depth` hidden layers of `width` units, the first taking the input, then an output Linear: depth 6 has 7
    nn.Linear. A hidden layer is Linear -> ReLU, or Linear -> BatchNorm1d -> ReLU.
    residual adds an identity skip around every hidden layer but the first (whose input is not `width` wide):
      'post': x <- x + ReLU([BatchNorm1d](Linear(x))), the hidden layer as it is;
      'pre':  x <- x + Linear(ReLU([BatchNorm1d](x))), the pre-activation form of He et al. (2016, "Identity Mappings
              in Deep Residual Networks"), whose output layer takes ReLU([BatchNorm1d](x)).
    activation 'leaky_relu' puts LeakyReLU in place of every ReLU; init 'he' draws every weight from Kaiming-normal
    (ReLU gain, fan in) with zero biases instead of PyTorch's default."""

    def __init__(self, n_in=2, n_classes=33, depth=6, width=16, batch_norm=False, residual="none", activation="relu",
                 init="default"):
        super().__init__()
        self.residual = residual
        norm = (lambda: [nn.BatchNorm1d(width)]) if batch_norm else (lambda: [])
        act = ACTIVATIONS[activation]
        self.hidden = nn.ModuleList()
        for i in range(depth):
            if residual == "pre" and i > 0:
                layers = norm() + [act(), nn.Linear(width, width)]
            else:
                layers = [nn.Linear(n_in if i == 0 else width, width)] + norm() + [act()]
            self.hidden.append(nn.Sequential(*layers))
        if residual == "pre":
            self.final = nn.Sequential(*norm(), act())
        self.out = nn.Linear(width, n_classes)
        if init == "he":
            for module in self.modules():
                if isinstance(module, nn.Linear):
                    nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
                    nn.init.zeros_(module.bias)

    def forward(self, x):
        for i, layer in enumerate(self.hidden):
            x = x + layer(x) if self.residual != "none" and i > 0 else layer(x)
        if self.residual == "pre":
            x = self.final(x)
        return self.out(x)


ARCH_KEYS = ("depth", "width", "batch_norm", "residual", "activation", "init", "features")
PLAIN = {"batch_norm": False, "residual": "none", "activation": "relu", "init": "default", "features": "raw"}


def build_model(arch, n_classes):
    n_in = 2 if arch["features"] == "raw" else 2 * len(SIN_FREQUENCIES)
    return MLP(n_in, n_classes, arch["depth"], arch["width"], arch["batch_norm"], arch["residual"], arch["activation"],
               arch["init"])


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
def relu_inputs(model, X, train_mode=False):
    """The input of every ReLU for the rows of X, in eval mode (or train mode: batch norm normalizing by X's own
    statistics, as in a training step): one [N, width] tensor per hidden layer."""
    inputs = []
    hooks = [m.register_forward_hook(lambda m, i, o: inputs.append(i[0])) for m in model.modules()
             if isinstance(m, tuple(ACTIVATIONS.values()))]
    model.train(train_mode)
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


def relu_input_rms(model, X, train_mode=False):
    """Per hidden layer, the root mean square of the ReLUs' inputs over the rows of X: the scale a layer works at."""
    return [float(pre.pow(2).mean().sqrt()) for pre in relu_inputs(model, X, train_mode)]


def class_prior_entropy(y, n_classes):
    """The cross-entropy (nats) of always predicting the class frequencies of labels y: what a net that ignores its
    input can reach at best."""
    p = torch.bincount(y.cpu(), minlength=n_classes).double() / len(y)
    return float(-(p[p > 0] * p[p > 0].log()).sum())


def activation_regions(model, extent, resolution):
    """Id of the ReLU on/off pattern (all hidden layers) of every cell of a resolution^2 grid over extent:
    each distinct pattern is one linear region of the network (a grid sees a lower bound of their number)."""
    x0, x1, y0, y1 = extent
    grid_y, grid_x = torch.meshgrid(torch.linspace(y0, y1, resolution), torch.linspace(x0, x1, resolution),
                                    indexing="ij")
    points = torch.stack([grid_x.flatten(), grid_y.flatten()], dim=1)
    patterns = torch.cat([torch.cat(relu_inputs(model, chunk), dim=1) > 0 for chunk in points.split(65536)])
    return pattern_ids(patterns).view(resolution, resolution).numpy()


def pattern_ids(patterns):
    """Id of each row of a bool matrix [N, units] among its distinct rows, numbered in the rows' sorted order (as
    torch.unique(dim=0) numbers them). Up to 63 units a row is packed into one int64, its first column the highest
    bit, so that numbers and rows sort alike: about 20x faster than unique over rows."""
    if patterns.shape[1] > 63:
        return torch.unique(patterns, dim=0, return_inverse=True)[1]
    bits = 2 ** torch.arange(patterns.shape[1] - 1, -1, -1, dtype=torch.int64)
    keys = torch.cat([(chunk.long() * bits).sum(1) for chunk in patterns.split(65536)])
    return torch.unique(keys, return_inverse=True)[1]


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
    """The architecture keys of a model: changes, else the settings, else plain (no batch norm, no skips, ReLU,
    PyTorch's init, raw coordinates)."""
    return {key: changes.get(key, settings.get(key, PLAIN.get(key))) for key in ARCH_KEYS}


def train_group(data, runs, arch, epochs, batch_size, desc, diagnose_init=False, **record):
    """Train the runs (each with a seed and an lr, and its own width if it names one) of one architecture in
    lockstep: (results, states). Narrower models train padded to the widest (see train_lockstep)."""
    n_classes = data["meta"]["n_classes"]
    inputs = {split: (featurize(X, arch["features"]), y) for split, (X, y) in
              ((split, data[split]) for split in SPLIT_FILES)}
    def arch_of_run(run):
        return {**arch, "width": run.get("width", arch["width"])}
    results, states = train_lockstep(lambda run: build_model(arch_of_run(run), n_classes), runs, inputs, epochs,
                                     batch_size, data["device"], quiet=data["quiet"], desc=desc, **record)
    for result in results:
        run_arch = arch_of_run(result)
        result.update(epochs=epochs, batch_size=batch_size, **run_arch)
        if diagnose_init:
            result.update(init_diagnostics(run_arch, n_classes, result["seed"], *(t.cpu() for t in inputs["train"]),
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
    n_classes = data["meta"]["n_classes"]
    return {"runs": results, "reference_losses": {"class_prior": class_prior_entropy(data["train"][1], n_classes),
                                                  "uniform": math.log(n_classes)}}


def train_epochs(settings, data, reads, batch_norm=None):
    """100 epochs; beyond the protocol, each run's ReLU-input scale per layer at initialisation (as the first step
    sees it) and at the end, and its dead units at the end, on the validation set."""
    arch = arch_of(settings) if batch_norm is None else arch_of(settings, batch_norm=batch_norm)
    results, states = train_group(data, seed_runs(settings, settings["lr"]), arch, settings["epochs"],
                                  settings["batch_size"], desc=f"{settings['epochs']} epochs" + ", batch norm" *
                                  arch["batch_norm"], eval_train=True)
    X, n_classes = data["val"][0].cpu(), data["meta"]["n_classes"]
    for result, state in zip(results, states):
        seed_everything(result["seed"])
        result["relu_input_rms_init"] = relu_input_rms(build_model(arch, n_classes), X, train_mode=True)
        model = load_model(result, n_classes, state) if result["status"] == "ok" else None
        result["relu_input_rms"] = relu_input_rms(model, X) if model else None
        result["dead_relu_fraction"] = dead_relu_fraction(model, X) if model else None
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
    """One lockstep group per depth, its widths padded to the widest; results in the order of the architectures."""
    runs_by_depth = {}
    for depth, width in settings["architectures"]:
        runs_by_depth.setdefault(depth, []).extend(seed_runs(settings, settings["lr"], width=width))
    results, states = train_groups(data, [
        (runs, arch_of(settings, depth=depth, width=None), settings["epochs"], settings["batch_size"], f"depth {depth}")
        for depth, runs in runs_by_depth.items()], eval_train=True)
    order = sorted(range(len(results)), key=lambda i: settings["architectures"].index(
        [results[i]["depth"], results[i]["width"]]))
    return {"runs": [results[i] for i in order], "weights": {"states": [states[i] for i in order]}}


def train_gradients(settings, data, reads):
    results, _ = train_group(data, seed_runs(settings, settings["lr"]), arch_of(settings), settings["epochs"],
                             settings["batch_size"], desc=f"depth {settings['depth']} gradients", record_grads=True,
                             diagnose_init=True)
    return {"runs": results}


RESIDUAL_FIXES = {  # fix: (how the report names it, what it changes in the plain net)
    "skip_post": ("skips x + ReLU(Linear(x))", dict(residual="post")),
    "batch_norm": ("batch norm", dict(batch_norm=True)),
    "skip_post_bn": ("skips x + ReLU(BN(Linear(x)))", dict(residual="post", batch_norm=True)),
    "skip_pre": ("pre-activation skips x + Linear(ReLU(x))", dict(residual="pre")),
    "skip_pre_bn": ("pre-activation skips x + Linear(ReLU(BN(x)))", dict(residual="pre", batch_norm=True)),
    "he_init": ("He (Kaiming-normal) initialisation", dict(init="he")),
    "leaky_relu": ("LeakyReLU in place of ReLU", dict(activation="leaky_relu")),
}


def train_residual(settings, data, reads):
    results, _ = train_groups(data, [
        (seed_runs(settings, settings["lr"], fix=fix), arch_of(settings, **changes), settings["epochs"],
         settings["batch_size"], f"depth {settings['depth']} {fix}")
        for fix, (_, changes) in RESIDUAL_FIXES.items()], record_grads=True, diagnose_init=True)
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


# ----------------------------------------------------------------------------- answers
# The reply to each question of the exercise, in its terms; every sentence decided by the numbers, each case tested.

NEAR = 0.03  # nats: a loss this close to a reference value sits on it
SEED_SPREAD = 0.3  # nats: seeds whose final validation losses span more than this disagree
OVERFIT_GAP = 0.03  # accuracy: train (eval mode) above validation by more than this is over-fitting


def seeds_disagree(values):
    """Do the seeds of one setting end far apart (or some diverge and others not)? values: one per seed."""
    finite = [v for v in values if v is not None]
    some_diverged = 0 < len(finite) < len(values)
    return some_diverged or (len(finite) > 1 and max(finite) - min(finite) > SEED_SPREAD)


def lr_case(finals, first, prior, uniform):
    """What one learning rate did: 'diverged', 'unstable' (some seeds collapse to the class-frequency loss or
    diverge, others train), 'collapsed' (ends at the loss of predicting the class frequencies), 'stuck' (ends where
    it started, near a uniform guess) or 'learning'. finals: final validation loss per seed; first: mean validation
    loss after epoch 1."""
    finite = [v for v in finals if v is not None]
    if not finite:
        return "diverged"
    wrecked = len(finite) < len(finals) or any(abs(v - prior) < NEAR for v in finite)
    if wrecked and not all(abs(v - prior) < NEAR for v in finite):
        return "unstable"
    final = float(np.mean(finite))
    if abs(final - prior) < NEAR:
        return "collapsed"
    if abs(final - first) < NEAR and abs(final - uniform) < 3 * NEAR:
        return "stuck"
    return "learning"


def lr_answer(stats, prior, uniform, n_classes, epochs):
    """6.1.2-1 from per-lr stats: lr -> dict(finals=[per seed], first=mean after epoch 1, dead=mean dead fraction or
    None, trend=loss_trend case of the mean curve)."""
    cases = {lr: lr_case(st["finals"], st["first"], prior, uniform) for lr, st in stats.items()}
    mean = {lr: float(np.mean([v for v in st["finals"] if v is not None])) for lr, st in stats.items()
            if cases[lr] != "diverged"}
    sentences = []
    for lr in [lr for lr, case in cases.items() if case == "collapsed"]:
        text = (f"Too high: lr {lr:g} ends at validation loss {mean[lr]:.3f}, the entropy of the training labels' "
                f"class frequencies ({prior:.3f}), so the net outputs those frequencies whatever its input.")
        dead = stats[lr]["dead"]
        if dead is not None and dead > 0.5:
            text += (f" {dead:.0%} of its hidden ReLUs are dead (0 on every validation point): steps this large push "
                     "pre-activations below 0 for every input, a dead ReLU passes no gradient, and the units never "
                     "come back.")
        sentences.append(text)
    for lr in [lr for lr, case in cases.items() if case == "diverged"]:
        sentences.append(f"Too high: lr {lr:g} diverged (its loss became infinite or NaN).")
    for lr in [lr for lr, case in cases.items() if case == "unstable"]:
        finals = ", ".join("diverged" if v is None else f"{v:.3f}" for v in stats[lr]["finals"])
        collapsed = sum(v is not None and abs(v - prior) < NEAR for v in stats[lr]["finals"])
        sentences.append(f"At lr {lr:g} the net is on the edge: its seeds end at {finals}" + (
            f", {collapsed} of them at the class-frequency loss" if collapsed else "") + ", so a step this large "
            "trains some seeds and wrecks others (the figure draws each seed).")
    for lr in [lr for lr, case in cases.items() if case == "stuck"]:
        sentences.append(f"Too low: lr {lr:g} ends at {mean[lr]:.3f}, near ln {n_classes} = {uniform:.3f} (a uniform "
                         f"guess) and where it started ({stats[lr]['first']:.3f} after epoch 1): steps of lr times "
                         f"the gradient are too small to move the weights in {epochs} epochs.")
    learning = {lr: mean[lr] for lr, case in cases.items() if case == "learning"}
    if learning:
        best_lr = min(learning, key=learning.get)
        sentences.append(f"Of the rest, lr {best_lr:g} reaches the lowest validation loss, {learning[best_lr]:.3f}.")
        slow = [lr for lr in learning if stats[lr]["trend"] == "improving" and lr < best_lr]
        if slow:
            sentences.append(f"Smaller ones ({', '.join(f'{lr:g}' for lr in slow)}) are still falling at epoch "
                             f"{epochs}: too slow for this budget rather than wrong.")
        spread = [lr for lr in learning if seeds_disagree(stats[lr]["finals"])]
        if spread:
            sentences.append("Seeds end far apart at lr " + "; ".join(
                f"{lr:g} ({', '.join(f'{v:.3f}' for v in stats[lr]['finals'])})" for lr in spread)
                + ", more than a mean shows: the figure draws each seed.")
    return sentences


def epochs_answer(runs):
    """6.1.2-2: what too few and too many epochs do, from where the validation loss bottoms out (loss_trend of the
    mean curve) and the gap between training (eval mode) and validation loss at the end."""
    ok = [r for r in runs if r["status"] == "ok"]
    if not ok or len(epochs_axis(ok)) < 2:
        return ["No run trained long enough without diverging to tell."]
    case, window, last, previous, lowest, lowest_epoch = loss_trend(np.nanmean([as_array(r["history"]["val_loss"])
                                                                                for r in ok], axis=0))
    epochs = len(epochs_axis(ok))
    train, val = mean_final(ok, "train_eval_loss"), mean_final(ok, "val_loss")
    gap = (f"the training loss (eval mode, {train:.3f}) and the validation loss ({val:.3f}) are "
           f"{abs(val - train):.3f} apart")
    if case == "improving":
        return [f"Too few epochs leave the net undertrained, and {epochs} are still too few here: the validation "
                f"loss is still falling at the end ({previous:.3f} to {last:.3f} over the last {2 * window} epochs), "
                f"and {gap}, so it is not overfitting.",
                "Too many epochs would show as a validation loss that turns up while the training loss keeps "
                f"falling (overfitting); that does not happen within these {epochs}."]
    if case == "overfitting":
        return [f"Too many epochs overfit: the validation loss was lowest ({lowest:.3f}) at epoch {lowest_epoch} and "
                f"rose after it ({last:.3f} over the last {window}), while {gap}.",
                f"Stopping near epoch {lowest_epoch} keeps the best model; stopping much earlier leaves it "
                "undertrained."]
    return [f"By epoch {epochs} the net has converged: the validation loss moved by less than "
            f"{TREND_TOLERANCE:.1%} over the last {2 * window} epochs, and {gap}; more epochs add nothing, fewer "
            f"would stop it before its lowest loss (epoch {lowest_epoch})."]


def rounded_range(values):
    """'1.00' when the values agree to 2 decimals, else '0.98 to 1.02'."""
    low, high = f"{min(values):.2f}", f"{max(values):.2f}"
    return low if low == high else f"{low} to {high}"


def batchnorm_answer(plain, normed, extent):
    """6.1.2-3: how batch norm helps, measured: the scale of every layer's ReLU inputs at initialisation with and
    without it, accuracy and loss after the same training, and dead units at the end."""
    def mean_layers(runs, key):
        values = [r[key] for r in runs if r.get(key) is not None]
        return np.mean(values, axis=0) if values else None
    rms_plain, rms_normed = mean_layers(plain, "relu_input_rms_init"), mean_layers(normed, "relu_input_rms_init")
    sentences = [f"The inputs are raw degrees (longitude {extent[0]:.0f} to {extent[1]:.0f}, latitude {extent[2]:.0f} "
                 f"to {extent[3]:.0f}). At initialisation, without batch norm the first layer's ReLUs get inputs of "
                 f"RMS {rms_plain[0]:.3g} and the others {rms_plain[1:].min():.2g} to {rms_plain[1:].max():.2g}, a "
                 f"spread of {rms_plain.max() / rms_plain.min():.0f}x across layers that one learning rate has to "
                 f"serve; batch norm puts every layer's at {rounded_range(rms_normed)}."]
    acc_plain, acc_normed = mean_final(plain, "val_acc"), mean_final(normed, "val_acc")
    loss_plain, loss_normed = mean_final(plain, "val_loss"), mean_final(normed, "val_loss")
    compared = (f"after the same {len(epochs_axis(normed))} epochs, validation accuracy {acc_normed:.3f} with batch "
                f"norm against {acc_plain:.3f} without (loss {loss_normed:.3f} against {loss_plain:.3f})")
    if acc_normed > acc_plain + GAP_TOLERANCE:
        sentences.append(f"So batch norm trains further in the same steps: {compared}.")
    elif acc_normed < acc_plain - GAP_TOLERANCE:
        sentences.append(f"Here it does not help: {compared}.")
    else:
        sentences.append(f"Here it makes no difference: {compared}.")
    dead_plain, dead_normed = mean_layers(plain, "dead_relu_fraction"), mean_layers(normed, "dead_relu_fraction")
    if dead_plain is not None and dead_normed is not None:
        if dead_plain.mean() > dead_normed.mean() + 0.05:
            sentences.append(f"It also keeps units alive: {dead_plain.mean():.0%} of the hidden ReLUs are dead at "
                             f"the end without it, {dead_normed.mean():.0%} with it, since normalised inputs straddle "
                             "0.")
        else:
            sentences.append(f"Dead units do not explain it: {dead_plain.mean():.0%} of the hidden ReLUs are dead "
                             f"at the end without batch norm, {dead_normed.mean():.0%} with it.")
    return sentences


def loss_noise(step_loss, window=100):
    """The spread of the training loss from step to step: the standard deviation of the last `window` per-step
    losses."""
    values = as_array(step_loss)[-window:]
    return float(np.nanstd(values))


def falls_with(xs, ys, tolerance=0.0):
    """Whether ys never rises as xs grows (sorted by xs)."""
    ordered = [y for _, y in sorted(zip(xs, ys))]
    return all(b <= a + tolerance for a, b in zip(ordered, ordered[1:]))


def batch_size_answer(rows):
    """6.1.2-4 from rows (batch size, iterations per epoch, seconds per epoch, total steps, best validation
    accuracy, loss noise): (i) accuracy, (ii) speed, (iii) stability."""
    sizes = [row[0] for row in rows]
    top = max(rows, key=lambda row: row[4])
    accuracy = (f"(i) Batch {top[0]} reaches the highest validation accuracy, {top[4]:.3f}; "
                + steps_finding([(row[0], row[3], row[4]) for row in rows]))
    per_epoch = ", ".join(f"batch {b}: {it:,} iterations, {sec:.2f} s" for b, it, sec, *_ in rows)
    if falls_with(sizes, [row[2] for row in rows]):
        speed = (f"(ii) An epoch takes ceil(N / B) iterations ({per_epoch}): a larger batch does more of the work "
                 "in one vectorised step, so an epoch is faster, but it makes fewer updates.")
    else:
        speed = (f"(ii) An epoch takes ceil(N / B) iterations ({per_epoch}); here a larger batch did not make an "
                 "epoch faster.")
    noise = ", ".join(f"batch {row[0]}: {row[5]:.3f}" for row in rows)
    if falls_with(sizes, [row[5] for row in rows]):
        stability = (f"(iii) The training loss gets steadier as the batch grows (its standard deviation over the last "
                     f"100 steps: {noise}): a batch of B examples estimates the gradient with a variance that "
                     "shrinks like 1/B, so small batches take noisy steps.")
    else:
        stability = (f"(iii) The spread of the training loss over the last 100 steps ({noise}) does not fall "
                     "steadily with the batch size here.")
    return [accuracy, speed, stability]


def generalisation_answer(label, train, val, test):
    """6.2.1-1: did a model generalise? Its final accuracy on train (eval mode), validation and test."""
    numbers = f"train {train:.3f} (eval mode), validation {val:.3f}, test {test:.3f}"
    if train - val > OVERFIT_GAP:
        return [f"Not fully: the {label} fits the training set better than new data ({numbers}): it over-fits by "
                f"{train - val:.3f}."]
    if abs(val - test) > OVERFIT_GAP:
        return [f"Validation and test disagree for the {label} ({numbers}), so its validation score does not carry "
                "over to new data."]
    return [f"Yes: the {label} scores the same on data it never saw as on its training set ({numbers}), within "
            f"{max(abs(train - val), abs(val - test)):.3f}."]


def fit_answer(label, train, val, best_train, params):
    """6.2.1-2: did the worst model over- or under-fit? Its train (eval mode) and validation accuracy, against the
    best model's train accuracy."""
    if train - val > OVERFIT_GAP:
        return [f"It over-fits: the {label} reaches {train:.3f} on the training set (eval mode) and {val:.3f} on "
                "validation."]
    if best_train - train > OVERFIT_GAP:
        return [f"It under-fits: the {label} scores about as low on its own training set ({train:.3f}, eval mode) as "
                f"on validation ({val:.3f}), far below what the best model fits ({best_train:.3f}); with "
                f"{params:,} parameters it cannot draw the borders, whatever the data."]
    return [f"Neither clearly: the {label} reaches {train:.3f} on train and {val:.3f} on validation."]


def shape_answer(kind, rows):
    """6.2.1-3 (kind 'depth') and 6.2.1-4 ('width') from rows (size, validation accuracy, its std over seeds,
    parameters, training seconds or None for a model that trained in one group with others), in increasing size."""
    rows = sorted(rows)
    (small, acc_small, _, params_small, sec_small), (large, acc_large, std_large, params_large, sec_large) = \
        rows[0], rows[-1]
    table = ", ".join(f"{kind} {size}: {acc:.3f} ({params:,} parameters" + (f", {sec:.0f} s)" if sec else ")")
                      for size, acc, _, params, sec in rows)
    sentences = [f"Validation accuracy by {kind}: {table}."]
    if any(sec is None for *_, sec in rows):
        sentences.append("The models without a time trained together in one lockstep group (narrower ones padded to "
                         "the widest), so each has no time of its own.")
    best_size, best_acc = max(((size, acc) for size, acc, *_ in rows), key=lambda pair: pair[1])
    if acc_large > acc_small + GAP_TOLERANCE:
        unit, units = ("layer", "layers") if kind == "depth" else ("unit per layer", "units")
        sentences.append(f"The advantage: more {units} fit the borders better ({acc_small:.3f} at {kind} {small}, "
                         f"{best_acc:.3f} at {best_size}), since every added {unit} adds pieces to the "
                         "piecewise-linear function the net draws.")
        previous = rows[-2]
        if acc_large - previous[1] < max(2 * std_large, GAP_TOLERANCE):
            sentences.append(f"The gain shrinks: from {kind} {previous[0]} to {large} it is "
                             f"{acc_large - previous[1]:+.3f}, within the spread over seeds.")
    else:
        sentences.append(f"More {kind} did not raise the accuracy here ({acc_small:.3f} at {small}, {acc_large:.3f} "
                         f"at {large}).")
    time_ratio = f" and {sec_large / sec_small:.1f}x the training time" if sec_small and sec_large else ""
    sentences.append(f"The cost: {params_large / params_small:.1f}x the parameters{time_ratio} from {kind} {small} to "
                     f"{large}.")
    return sentences


def capitalized(sentence):
    """A finding (lower-case, as a bullet) as a sentence of an answer."""
    return sentence[0].upper() + sentence[1:]


def vanishing_answer(runs):
    """6.2.1-5: vanishing or exploding? The last epoch's mean ||grad W||^2 per layer (mean over seeds that trained),
    and the exactly-zero layers, which dead_layer_finding explains."""
    ok = [r for r in runs if r["status"] == "ok"]
    if not ok:
        return ["Every seed diverged: the gradients exploded."]
    last = grad_matrix(ok)[-1]
    output = last[-1]
    zeros = [zero_layers(r) for r in ok]
    if last[0] > 100 * output:
        return [f"Exploding: the first layer's gradient ({last[0]:.1e}) is {last[0] / output:.0e} times the output "
                f"layer's ({output:.1e}).", "Batch norm, smaller initial weights or gradient clipping would tame it."]
    if any(zeros):
        lowest = []  # per seed: the lowest layer that still gets a gradient in the last epoch (no mean over zeros)
        for r in ok:
            grads = seed_grads(r)[-1]
            layer = next((i for i, g in enumerate(grads) if g > 0), None)
            if layer is not None:
                lowest.append(f"seed {r['seed']}: layer {layer}, {grads[layer]:.1e}, "
                              f"{np.log10(grads[-1] / grads[layer]):.0f} decades below the output layer")
        sentences = [f"Vanishing, down to exactly zero: in the last epoch the output layer's ||grad W||^2 is "
                     f"{output:.1e} (mean over seeds); the lowest layer that still gets one is "
                     + "; ".join(lowest) + "; below it " + "; ".join(f"seed {r['seed']}: layers {layer_ranges(z)}"
                                                                     for r, z in zip(ok, zeros) if z)
                     + " get none at all.", capitalized(dead_layer_finding(ok))]
        sentences.append("So the fix must keep a path for the gradient that no dead ReLU can cut, or keep ReLUs from "
                         "dying: skip connections (an identity path around each layer), batch norm (inputs that "
                         "straddle 0), He initialisation (activations that keep their scale), or LeakyReLU (a "
                         "gradient below 0 too); 6.2.1-6 tries each.")
        return sentences
    if output > 100 * last[0]:
        return [f"Vanishing: the output layer's ||grad W||^2 ({output:.1e}) is {output / last[0]:.0e} times the first "
                f"layer's ({last[0]:.1e}); skip connections or batch norm would keep it from shrinking."]
    return [f"Neither: the first layer's ||grad W||^2 ({last[0]:.1e}) and the output layer's ({output:.1e}) are within "
            "two decades."]


def fix_verdict(runs, plain_val_acc):
    """6.2.1-6 for one change: ('yes' | 'diverged' | 'zeros' | 'no gain', reason). It solved the problem if every
    seed trained, every layer got a gradient in every epoch, and validation accuracy rose above the plain net's."""
    diverged = [r for r in runs if r["status"] != "ok"]
    if diverged:
        norms = [r["init_activation_norm"][-1] for r in runs]
        return "diverged", (f"{len(diverged)} of {len(runs)} seeds diverged (at initialisation the activations "
                            f"reaching the output layer have norm {max(norms):.1e})")
    zeros = {r["seed"]: zero_layers(r) for r in runs if zero_layers(r)}
    if zeros:
        dead = any(norm == 0 for r in runs for norm in r["init_activation_norm"])
        leaky = runs[0].get("activation") == "leaky_relu"  # no unit passes exactly 0 back: zeros are underflow
        return "zeros", "layers still get exactly zero gradient (" + "; ".join(
            f"seed {seed}: {layer_ranges(z)}" for seed, z in zeros.items()) + ")" + (
            "" if dead else ", though no layer is dead at initialisation" + (
                ": through layer after layer of slope 0.01 the gradient shrinks below what float32 holds" if leaky
                else ""))
    val = mean_final(runs, "val_acc")
    if val <= plain_val_acc + GAP_TOLERANCE:
        return "no gain", f"every layer gets a gradient, but validation accuracy {val:.3f} is not above the plain net's"
    return "yes", f"every layer gets a gradient and validation accuracy rises to {val:.3f}"


def fixes_answer(plain, fixes):
    """6.2.1-6: fixes: (label, runs) per change tried."""
    plain_acc = mean_final([r for r in plain if r["status"] == "ok"] or plain, "val_acc")
    verdicts = {label: fix_verdict(runs, plain_acc) for label, runs in fixes}
    solved = [label for label, (case, _) in verdicts.items() if case == "yes"]
    sentences = [(f"Solved by: {', '.join(solved)}." if solved else "No change solved it.") +
                 f" The plain net reaches validation accuracy {plain_acc:.3f}."]
    sentences += [f"With {label}: {'yes' if case == 'yes' else 'no'}, {reason}." for label, (case, reason) in
                  verdicts.items()]
    return sentences


T_95 = {2: 12.71, 3: 4.30, 4: 3.18, 5: 2.78, 6: 2.57, 7: 2.45, 8: 2.36, 9: 2.31, 10: 2.26}  # two-sided, n - 1 df


def paired_difference(base, other):
    """(mean, sample std, n) over seeds of other's final validation accuracy minus base's, paired by seed."""
    diffs = [final(o, "val_acc") - final(b, "val_acc") for b, o in zip(base, other)
             if final(o, "val_acc") is not None and final(b, "val_acc") is not None]
    if not diffs:
        return None, None, 0
    return float(np.mean(diffs)), float(np.std(diffs, ddof=1)) if len(diffs) > 1 else 0.0, len(diffs)


def implicit_answer(raw, sin, boundary_raw, boundary_sin):
    """6.2.1-7: is the sin-feature model better, judged against the spread over seeds, and what does its map draw
    that the raw one does not? boundary_*: the fraction of the map's grid cells at a border between classes."""
    mean, std, n = paired_difference(raw, sin)
    if n == 0:
        return ["No seed trained both models without diverging."]
    noise = T_95.get(n, 2.0) * std / math.sqrt(n) if n > 1 else None  # a paired t-test at 95%
    loss = f"validation loss {mean_final(sin, 'val_loss'):.3f} against {mean_final(raw, 'val_loss'):.3f}"
    if noise is None:
        verdict = (f"One seed cannot tell: sin features change validation accuracy by {mean:+.3f} ({loss}), with no "
                   "spread over seeds to judge it against.")
    elif abs(mean) <= max(noise, 0.005):
        verdict = (f"Neither is better: sin features change validation accuracy by {mean:+.3f} ± {std:.3f} over "
                   f"{n} seeds, within the noise (a paired t-test at 95% needs {noise:.3f}; {loss}).")
    else:
        verdict = (f"{'The sin model' if mean > 0 else 'The raw model'} is better: sin features change validation "
                   f"accuracy by {mean:+.3f} ± {std:.3f} over {n} seeds, beyond the noise (a paired t-test at 95% "
                   f"needs {noise:.3f}; {loss}).")
    if boundary_sin > 1.2 * boundary_raw:
        drawn = (f"Its map has {boundary_sin / boundary_raw:.1f}x the border of the raw model's ({boundary_sin:.1%} of "
                 f"the grid's cells against {boundary_raw:.1%}): sin(a x) features bend and repeat across the plane, "
                 "so it can draw curved, many-sided borders that a raw-coordinate ReLU net builds from few straight "
                 "pieces.")
    else:
        drawn = (f"Its map has no more border than the raw model's ({boundary_sin:.1%} of the grid's cells against "
                 f"{boundary_raw:.1%}).")
    return [verdict, drawn]


def boundary_fraction(grid):
    """The fraction of a prediction map's cells whose right or upper neighbour is another class."""
    border = np.zeros(grid.shape, bool)
    border[:, :-1] |= grid[:, :-1] != grid[:, 1:]
    border[:-1, :] |= grid[:-1, :] != grid[1:, :]
    return float(border.mean())


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
    reference = result["reference_losses"]
    n_classes = data["meta"]["n_classes"]
    fig, ax = plt.subplots(figsize=(9, 5.5), layout="constrained")
    for i, (lr, runs) in enumerate(by_lr.items()):
        plot_mean_band(ax, epochs_axis(runs), [r["history"]["val_loss"] for r in runs], label=f"lr {lr:g}",
                       color=f"C{i}", each_seed=seeds_disagree([final(r, "val_loss") for r in runs]))
    ax.axhline(reference["uniform"], color="black", linestyle=":", linewidth=1,
               label=f"uniform guess: ln {n_classes} = {reference['uniform']:.3f}")
    ax.axhline(reference["class_prior"], color="black", linestyle="--", linewidth=1,
               label=f"predicting the class frequencies: {reference['class_prior']:.3f}")
    ax.set(xlabel="epoch", ylabel="validation loss (cross-entropy, nats)",
           title="Validation loss per epoch by learning rate\n(mean over seeds, band = min..max; where seeds disagree, "
                 "each seed)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=9)
    ax.grid(alpha=0.3)

    dead = {lr: [r["dead_relu_fraction"] for r in runs if r["dead_relu_fraction"] is not None]
            for lr, runs in by_lr.items()}
    rows = []
    for lr, runs in by_lr.items():
        dead_per_layer = " / ".join(f"{d:.2f}" for d in np.mean(dead[lr], axis=0)) if dead[lr] else "diverged"
        finals = [final(r, "val_loss") for r in runs]
        final_text = (", ".join("diverged" if v is None else f"{v:.3f}" for v in finals) + " (each seed)"
                      if seeds_disagree(finals) else mean_std(finals))
        rows.append((f"{lr:g}", final_text, mean_std([best(r, "val_loss") for r in runs]),
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
    stats = {}
    for lr, runs in by_lr.items():
        ok = [r for r in runs if r["status"] == "ok"]
        curve = np.nanmean([as_array(r["history"]["val_loss"]) for r in ok], axis=0) if ok else None
        stats[lr] = {"finals": [final(r, "val_loss") for r in runs],
                     "first": float(curve[0]) if ok else None,
                     "dead": float(np.mean(dead[lr])) if dead[lr] else None,
                     "trend": loss_trend(curve)[0] if ok and len(curve) > 1 else None}
    answer = Answer("6.1.2-1", "What do a too-high and a too-low learning rate do?",
                    lr_answer(stats, reference["class_prior"], reference["uniform"], n_classes,
                              len(epochs_axis(result["runs"]))))
    return Report([table], {"lr.png": fig}, [f for f in findings if f], [answer])


SPLIT_STYLES = (("train", "train (train mode, over the epoch)", "C0", "-"), ("val", "validation", "C1", "-"),
                ("test", "test (dashed)", "C2", "--"))


def plot_split_curves(ax_loss, ax_acc, runs, title, eval_mode_train=False):
    x = epochs_axis(runs)
    for split, label, color, style in SPLIT_STYLES:
        for ax, metric in ((ax_loss, "loss"), (ax_acc, "acc")):
            plot_mean_band(ax, x, [r["history"][f"{split}_{metric}"] for r in runs], label=label, color=color,
                           linestyle=style, linewidth=2 if split == "val" else 1.2)
    if eval_mode_train:
        for ax, metric in ((ax_loss, "loss"), (ax_acc, "acc")):
            plot_mean_band(ax, x, [r["history"][f"train_eval_{metric}"] for r in runs], color="C4", linestyle=":",
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
    answer = Answer("6.1.2-2", "How does the number of epochs affect training: too many, too few?",
                    epochs_answer(runs))
    return Report([split_table([("no batch norm", runs)])], {"epochs.png": fig}, findings, [answer])


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
    gap = ("With batch norm, " + eval_gap_finding(mean_final(ok, "train_acc"), mean_final(ok, "train_eval_acc"),
                                                  mean_final(ok, "val_acc"))) if ok else None
    answer = Answer("6.1.2-3", "How does batch norm contribute to training?",
                    batchnorm_answer([r for r in plain if r["status"] == "ok"], ok, data["meta"]["extent"]) + [gap]
                    if ok else ["Every run with batch norm diverged."])
    scale_rows = [[label, " / ".join(f"{v:.3g}" for v in np.mean([r["relu_input_rms_init"] for r in runs], 0)),
                   " / ".join(f"{v:.3g}" for v in np.mean([r["relu_input_rms"] for r in runs if r["relu_input_rms"]],
                                                          0))]
                  for label, runs in (("no batch norm", plain), ("batch norm", ok))]
    scales = markdown_table(["model", "RMS of each hidden layer's ReLU input at initialisation (first step, val set)",
                             "at the end (eval mode, val set)"], scale_rows)
    return Report([split_table([("no batch norm", plain), ("batch norm", normed)]), scales], {"batchnorm.png": fig},
                  findings, [answer])


def report_batch_size(result, data):
    by_bs = group_by(result["runs"], "batch_size")
    fig = plt.figure(figsize=(16, 9), layout="constrained")
    top, bottom = fig.subfigures(2, 1, height_ratios=[1.1, 1])
    ax_epoch, ax_steps = top.subplots(1, 2)
    ax_losses = bottom.subplots(1, len(by_bs), sharey=True, squeeze=False)[0]
    seed = result["runs"][0]["seed"]
    rows, answer_rows = [], []
    for i, (batch_size, runs) in enumerate(by_bs.items()):
        color, label = f"C{i}", f"batch {batch_size}"
        x = epochs_axis(runs)
        steps = runs[0]["steps_per_epoch"]
        for ax, xs in ((ax_epoch, x), (ax_steps, x * steps)):
            plot_mean_band(ax, xs, [r["history"]["val_acc"] for r in runs], label=label, color=color, marker="o",
                           markersize=3)
        noise = float(np.mean([loss_noise(r["history"]["step_loss"]) for r in runs if r["status"] == "ok"]))
        step_loss = next(r for r in runs if r["seed"] == seed)["history"]["step_loss"]
        ax_loss = ax_losses[i]
        ax_loss.plot(np.arange(1, len(step_loss) + 1), step_loss, color=color, linewidth=0.4)
        ax_loss.set(xlabel="optimizer step", title=f"{label}: std of the last 100 steps {loss_noise(step_loss):.3f}")
        ax_loss.grid(alpha=0.3)
        seconds_per_epoch = runs[0]["group_wall_s"] / runs[0]["epochs"]
        rows.append((batch_size, runs[0]["epochs"], steps, steps * runs[0]["epochs"], f"{runs[0]['group_wall_s']:.1f}",
                     f"{noise:.3f}", mean_std([final(r, "val_acc") for r in runs]),
                     mean_std([best(r, "val_acc", max) for r in runs]), status_text(runs)))
        answer_rows.append((batch_size, steps, seconds_per_epoch, steps * runs[0]["epochs"],
                            float(np.mean(as_array([best(r, "val_acc", max) for r in runs]))), noise))
    ax_losses[0].set_ylabel("training loss of the batch (nats)")
    bottom.suptitle(f"(iii) training loss at every optimizer step, seed {seed} (linear axes, one panel per batch size)")
    ax_epoch.set(xlabel="epoch", ylabel="validation accuracy (fraction correct)",
                 title="(i) validation accuracy per epoch (mean over seeds, band = min..max)")
    ax_steps.set(xlabel="optimizer steps (log scale)", ylabel="validation accuracy (fraction correct)", xscale="log",
                 title="validation accuracy vs optimizer steps taken")
    for ax in (ax_epoch, ax_steps):
        ax.legend()
        ax.grid(alpha=0.3)
    table = markdown_table(["batch size", "epochs", "iterations per epoch", "total steps", "wall time of the group (s)",
                            "std of the training loss over the last 100 steps (mean over seeds)", "final val acc",
                            "best val acc", "status"], rows)
    answer = Answer("6.1.2-4", "How does the batch size affect (i) accuracy, (ii) speed, (iii) stability?",
                    batch_size_answer(answer_rows))
    return Report([table], {"batch_size.png": fig}, [], [answer])


def most_common(values):
    """The value that occurs most often (the first of them in a tie): the width the depth models share, say."""
    return max(dict.fromkeys(values), key=values.count)


def value_range(values):
    return f"{min(values)}" if min(values) == max(values) else f"{min(values)}-{max(values)}"


def arch_label(run):
    return f"depth {run['depth']}, width {run['width']}"


def draw_map(ax, run, state, data, title_prefix="", legend=True):
    """The run's prediction map with the test points on top; returns the grid of predicted classes."""
    meta = data["meta"]
    model = load_model(run, meta["n_classes"], state)
    X_test, y_test = (t.cpu() for t in data["test"])
    return plot_prediction_map(ax, predictor(model, run["features"]), meta["extent"], X_test, y_test,
                               meta["class_names"], f"{title_prefix}{arch_label(run)}, seed {run['seed']}: "
                               f"test accuracy {run['history']['test_acc'][-1]:.3f}", legend=legend)


def curves_and_map(runs, state, data, title):
    """Train/val/test loss per epoch (mean over seeds) beside the first seed's prediction map."""
    map_width = 7.5
    fig, (ax_loss, ax_map) = plt.subplots(1, 2, figsize=(7 + map_width + 3.5, map_width * map_height_ratio(
        data["meta"]["extent"]) + 1), layout="constrained", gridspec_kw={"width_ratios": [7, map_width + 3.5]})
    x = epochs_axis(runs)
    for split, label, color, style in SPLIT_STYLES:
        plot_mean_band(ax_loss, x, [r["history"][f"{split}_loss"] for r in runs], label=label, color=color,
                       linestyle=style, linewidth=2 if split == "val" else 1.2)
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
    common_width, common_depth = (most_common([arch[i] for arch in groups]) for i in (1, 0))
    for ax, vary, fixed_key, fixed in ((axes[0], "depth", "width", common_width),
                                       (axes[1], "width", "depth", common_depth)):
        archs = sorted(a for a in groups if a[1 if fixed_key == "width" else 0] == fixed)
        xs = [a[0] if vary == "depth" else a[1] for a in archs]
        for key, label, color, style in (("train_eval", "train (eval mode)", "C0", "-"),
                                         ("val", "validation", "C1", "-"), ("test", "test (dashed)", "C2", "--")):
            values = [as_array([final(result["runs"][i], f"{key}_acc") for i in groups[a]]) for a in archs]
            ax.errorbar(xs, [np.mean(v) for v in values], yerr=[np.std(v) for v in values], marker="o", capsize=3,
                        color=color, linestyle=style, label=label)
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

    findings = [f"best by validation accuracy: {arch_label(dict(depth=top[0], width=top[1]))} ({val[top]:.3f}); "
                f"worst: {arch_label(dict(depth=worst[0], width=worst[1]))} ({val[worst]:.3f})." if ranked else
                "every architecture diverged in at least one seed: no best or worst model."]
    gaps = [final(r, "val_acc") - final(r, "train_acc") for r in result["runs"] if r["status"] == "ok"]
    if gaps:
        findings.append(f"validation accuracy is above train accuracy (train measured in train mode over the epoch, "
                        f"as in 6.1.3) in {sum(g > 0 for g in gaps)} of {len(gaps)} runs; mean gap "
                        f"{np.mean(gaps):+.3f}.")
    return Report([table], figures, findings, depth_width_answers(result["runs"], groups, val, top, worst,
                                                                  data["meta"]["n_classes"]) if ranked else [])


def depth_width_answers(runs, groups, val, top, worst, n_classes):
    """6.2.1-1 to 6.2.1-4 from the seven models' runs (groups: (depth, width) -> indices into runs)."""
    def mean_of(arch, key):
        return mean_final([runs[i] for i in groups[arch] if runs[i]["status"] == "ok"], key)

    group_seconds = {arch: runs[groups[arch][0]]["group_wall_s"] for arch in groups}

    def shape_rows(fixed_index, fixed, varied_index):
        rows = []
        for arch in sorted(a for a in groups if a[fixed_index] == fixed):
            accs = [final(runs[i], "val_acc") for i in groups[arch] if final(runs[i], "val_acc") is not None]
            model = build_model(arch_of(runs[groups[arch][0]]), n_classes)
            # one measured group time shared by several architectures (width padding) is no model's own time
            shared = list(group_seconds.values()).count(group_seconds[arch]) > 1
            rows.append((arch[varied_index], val[arch], float(np.std(accs)), sum(p.numel() for p in model.parameters()),
                         None if shared else group_seconds[arch]))
        return rows
    best_label, worst_label = f"best model ({arch_label(dict(depth=top[0], width=top[1]))})", \
        f"worst model ({arch_label(dict(depth=worst[0], width=worst[1]))})"
    worst_params = sum(p.numel() for p in build_model(arch_of(runs[groups[worst][0]]), n_classes).parameters())
    common_width, common_depth = (most_common([arch[i] for arch in groups]) for i in (1, 0))
    return [Answer("6.2.1-1", "Did the best model generalise?",
                   generalisation_answer(best_label, mean_of(top, "train_eval_acc"), mean_of(top, "val_acc"),
                                         mean_of(top, "test_acc"))),
            Answer("6.2.1-2", "Did the worst model over-fit or under-fit?",
                   fit_answer(worst_label, mean_of(worst, "train_eval_acc"), mean_of(worst, "val_acc"),
                              mean_of(top, "train_eval_acc"), worst_params)),
            Answer("6.2.1-3", f"How does depth affect the MLP (width {common_width})?",
                   shape_answer("depth", shape_rows(1, common_width, 0))),
            Answer("6.2.1-4", f"How does width affect the MLP (depth {common_depth})?",
                   shape_answer("width", shape_rows(0, common_depth, 1)))]


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


GRADIENT_LAYERS = (0, 30, 60, 90, 95, 99)  # the layers the exercise asks to plot


def seed_grads(run):
    """One run's per-epoch mean ||grad W||^2: [epochs, layers]; NaN where it diverged."""
    n_layers = len(run["init_activation_norm"])
    return np.array([[np.nan] * n_layers if epoch is None else epoch for epoch in run["history"]["grad_sq_norm"]],
                    dtype=float)


def lines_with_zero_row(spec, x, series, title, xlabel, ylabel):
    """A log-scale panel of series (label, values, color) over x and, under it, a strip that marks exact zeros, which
    a log axis cannot show. Returns the panel."""
    ax, strip = spec.subgridspec(2, 1, height_ratios=[5, 1.4], hspace=0.04).subplots(sharex=True)
    for row, (label, values, color) in enumerate(series):
        values = np.asarray(values, dtype=float)
        zero = values == 0
        ax.plot(x, np.where(zero, np.nan, values), marker="o", markersize=3, color=color, label=label)
        strip.plot(x[zero], np.full(zero.sum(), row), "v", color=color, markersize=4, linestyle="none")
    ax.set(yscale="log", ylabel=ylabel, title=title)
    if not any((np.asarray(values, dtype=float) > 0).any() for _, values, _ in series):
        ax.text(0.5, 0.5, "every line is exactly 0 here (see the row below)", ha="center", va="center",
                transform=ax.transAxes)
        ax.set(yticks=[], ylabel="")  # a log axis with nothing on it would show a meaningless 1..10 scale
        ax.yaxis.set_minor_locator(NullLocator())
    ax.tick_params(labelbottom=False)
    ax.grid(alpha=0.3)
    strip.xaxis.set_major_locator(MaxNLocator(integer=True))
    strip.set(ylim=(-0.8, len(series) - 0.2), yticks=[], xlabel=xlabel)
    strip.set_ylabel("exactly 0", rotation=0, ha="right", va="center", fontsize=9)
    strip.grid(alpha=0.3, axis="x")
    return ax


def heat_map(ax, grads, title, limits):
    """Every layer's ||grad W||^2 per epoch on a log color scale (limits: log10 range, shared between panels); exact
    zeros black."""
    masked = np.ma.masked_where(~(grads > 0), grads).T
    image = ax.imshow(np.ma.log10(masked), aspect="auto", origin="lower", interpolation="nearest",
                      vmin=limits[0], vmax=limits[1],
                      cmap=plt.get_cmap("viridis").with_extremes(bad="black"),
                      extent=(0.5, grads.shape[0] + 0.5, -0.5, grads.shape[1] - 0.5))
    plt.colorbar(image, ax=ax, label="log10 ||grad W||² (black: exactly 0)")
    ax.set(xlabel="epoch", ylabel="Linear layer (0 = input layer)", title=title)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def init_panels(spec, series_of):
    """At initialisation, per Linear layer: the mean norm of the activation entering it, and its ||grad W||^2 at the
    first step; series_of(key) gives the (label, values, color) lines."""
    cells = spec.subgridspec(1, 2)
    for cell, key, ylabel, title in (
            (cells[0, 0], "init_activation_norm", "mean ||activation||₂ entering the layer", "activations at init"),
            (cells[0, 1], "first_step_grad_sq_norm", "||grad W||² at the first step", "gradients of the first step")):
        series = series_of(key)
        ax = lines_with_zero_row(cell, np.arange(len(series[0][1])), series, title, "Linear layer (0 = input layer)",
                                 ylabel)
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))


def layer_value_text(values):
    """One layer's value over seeds for the table: the mean where every seed is non-zero, '0' where every seed is
    exactly 0, and each seed's where they differ (a mean would hide the zeros)."""
    values = [v for v in values if not np.isnan(v)]
    if not values:
        return "-"
    if all(v == 0 for v in values):
        return "0"
    if any(v == 0 for v in values):
        return "(" + ", ".join("0" if v == 0 else f"{v:.1e}" for v in values) + ")"
    return f"{np.mean(values):.2e}"


def gradient_rows(label, runs, layers):
    grads = [seed_grads(r) for r in runs if r["status"] == "ok"]
    cells = [f"{layer_value_text([g[0, layer] for g in grads])} / {layer_value_text([g[-1, layer] for g in grads])}"
             if grads else "diverged" for layer in layers]
    return [label] + cells + ["; ".join(f"seed {r['seed']}: {layer_ranges(zero_layers(r))}" for r in runs
                                        if r["status"] == "ok") or "-",
                              mean_std([final(r, "val_acc") for r in runs]), status_text(runs)]


def gradient_table(variants, layers):
    return markdown_table(["model"] + [f"layer {layer}: epoch 1 / last" for layer in layers] +
                          ["layers exactly 0 in every epoch", "final val acc", "status"],
                          [gradient_rows(label, runs, layers) for label, runs in variants]) + (
        "\nMean ||grad W||² over the seeds that trained; in parentheses each seed's, where some are exactly 0 and "
        "others not (a mean would hide the zeros).")


def layer_series(grads, layers):
    return [(f"layer {layer}", grads[:, layer], f"C{i}") for i, layer in enumerate(layers)]


def report_gradients(result, data):
    runs = result["runs"]
    ok = [r for r in runs if r["status"] == "ok"]
    n_layers = len(runs[0]["init_activation_norm"])
    layers = [layer for layer in GRADIENT_LAYERS if layer < n_layers]
    label = f"depth {runs[0]['depth']}, width {runs[0]['width']}"
    fig = plt.figure(figsize=(5.5 * max(len(ok), 2), 15), layout="constrained")
    grid = fig.add_gridspec(3, max(len(ok), 1), height_ratios=[1.2, 1, 1.1])
    positive = np.concatenate([seed_grads(r)[seed_grads(r) > 0] for r in ok] or [np.ones(1)])
    limits = (np.log10(positive.min()), np.log10(positive.max()))
    for column, run in enumerate(ok):
        grads = seed_grads(run)
        ax = lines_with_zero_row(grid[0, column], np.arange(1, len(grads) + 1), layer_series(grads, layers),
                                 f"seed {run['seed']}: per-layer gradient", "epoch",
                                 "mean over the epoch's steps of ||grad W||²")
        heat_map(fig.add_subplot(grid[1, column]), grads, f"seed {run['seed']}: every layer", limits)
    if ok:
        ax.legend(fontsize=9, loc="upper left", bbox_to_anchor=(1.01, 1))
    init_panels(grid[2, :], lambda key: [(f"seed {r['seed']}", r[key], f"C{i}") for i, r in enumerate(runs)])
    fig.suptitle(f"{label}, {runs[0]['epochs']} epochs: ||grad W||² per Linear layer", fontsize=14)
    findings = ["layers with exactly zero gradient in every epoch: "
                + "; ".join(f"seed {r['seed']}: {layer_ranges(zero_layers(r))}" for r in ok) + ".",
                "last epoch: " + ", ".join(f"layer {layer} {layer_value_text([seed_grads(r)[-1, layer] for r in ok])}"
                                           for layer in layers + [n_layers - 1])
                + f" (layer {n_layers - 1} is the output layer); final validation accuracy "
                f"{mean_std([final(r, 'val_acc') for r in runs])}." if ok else "every seed diverged."]
    answer = Answer("6.2.1-5", "Is there a vanishing or exploding gradient problem, and what change would solve it?",
                    vanishing_answer(runs))
    return Report([gradient_table([(label, runs)], layers)], {"gradients.png": fig}, findings, [answer])


def report_residual(result, data):
    variants = [("plain", result["baseline_runs"])] + [
        (label, [r for r in result["runs"] if r["fix"] == fix]) for fix, (label, _) in RESIDUAL_FIXES.items()]
    n_layers = len(variants[0][1][0]["init_activation_norm"])
    layers = [layer for layer in GRADIENT_LAYERS if layer < n_layers]
    drawn = [(label, next(r for r in runs if r["status"] == "ok")) for label, runs in variants
             if any(r["status"] == "ok" for r in runs)]
    not_drawn = [label for label, runs in variants if not any(r["status"] == "ok" for r in runs)]
    columns = min(4, len(drawn))
    rows = math.ceil(len(drawn) / columns)
    fig = plt.figure(figsize=(5 * columns + 2, 4.6 * rows + 0.6), layout="constrained")
    grid = fig.add_gridspec(rows, columns)
    for i, (label, run) in enumerate(drawn):
        grads = seed_grads(run)
        ax = lines_with_zero_row(grid[i // columns, i % columns], np.arange(1, len(grads) + 1),
                                 layer_series(grads, layers), f"{label}\n(seed {run['seed']})", "epoch",
                                 "||grad W||², mean over the epoch")
    ax.legend(fontsize=9, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.suptitle("Per-layer gradient of the 100-layer net with each change, one seed each (the table has every seed)"
                 + (f"\nnot drawn, no finite gradient (diverged in the first epoch): {', '.join(not_drawn)}"
                    if not_drawn else ""), fontsize=13)
    init = plt.figure(figsize=(16, 5.5), layout="constrained")
    init_panels(init.add_gridspec(1, 1)[0, 0],
                lambda key: [(label, runs[0][key], f"C{i}") for i, (label, runs) in enumerate(variants)])
    init.suptitle(f"At initialisation, seed {variants[0][1][0]['seed']}, first batch: why each change trains or not")
    findings = [f"{label}: {status_text(runs)}, validation accuracy {mean_std([final(r, 'val_acc') for r in runs])}; "
                f"at initialisation the activation norm goes from {runs[0]['init_activation_norm'][1]:.2g} (layer 1) "
                f"to {runs[0]['init_activation_norm'][-1]:.2g} (output layer) and the first step's ||grad W||² from "
                f"{runs[0]['first_step_grad_sq_norm'][0]:.2g} (layer 0) to {runs[0]['first_step_grad_sq_norm'][-1]:.2g}"
                f" (output layer), seed {runs[0]['seed']}." for label, runs in variants]
    answer = Answer("6.2.1-6", "Implement the change: did it solve the problem?",
                    fixes_answer(variants[0][1], variants[1:]))
    blocks = ("Blocks: 'skips x + ReLU(Linear(x))' adds the hidden layer's output to its input (a post-activation "
              "skip, whose increments are never negative); 'pre-activation skips x + Linear(ReLU(x))' is He et al. "
              "(2016)'s form, whose increments can take either sign; both skip every hidden layer but the first.")
    return Report([gradient_table(variants, layers), blocks], {"residual.png": fig, "residual_init.png": init},
                  findings, [answer])


def report_implicit(result, data):
    weights = result["weights"]
    variants = [("raw coordinates", result["baseline_runs"], weights["baseline_states"][0]),
                ("sin features", result["runs"], weights["states"][0])]
    map_width = 8
    fig, axes = plt.subplots(1, 2, figsize=(2 * map_width + 3.5, map_width * map_height_ratio(data["meta"]["extent"])
                                            + 1), layout="constrained")
    grids = [draw_map(ax, runs[0], state, data, f"{label}: ", legend=False)
             for ax, (label, runs, state) in zip(axes, variants)]
    class_legend(fig, data["meta"]["class_names"], axes[1].get_legend_handles_labels()[0][:1])
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
    answer = Answer("6.2.1-7", "Which model is better, and what can the sin model learn that the other had trouble "
                               "with?", implicit_answer(variants[0][1], variants[1][1], *map(boundary_fraction, grids)))
    return Report([table, note], {"implicit.png": fig}, findings, [answer])


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
    Question("lr", "6.1.2-1", "Learning rate", dict(SECTION_61, lrs=[1, 0.2, 0.01, 0.001, 0.0005, 0.00001], epochs=50),
             train_lr, report_lr),
    Question("epochs", "6.1.2-2", "Training for longer (no batch norm)", dict(SECTION_61, epochs=100), train_epochs,
             report_epochs),
    Question("batchnorm", "6.1.2-3", "Batch norm (compared with 6.1.2-2)",
             {k: v for k, v in dict(SECTION_61, epochs=100).items() if k != "batch_norm"}, train_batchnorm,
             report_batchnorm, reads=("epochs",)),
    Question("batch_size", "6.1.2-4", "Batch size",
             {k: v for k, v in dict(SECTION_61, batch_sizes=[1, 16, 128, 1024], batch_size_epochs=[1, 10, 50, 50])
              .items() if k != "batch_size"}, train_batch_size, report_batch_size),
    Question("depth_width", "6.2.1-1 to 6.2.1-4", "Depth and width",
             {k: v for k, v in dict(SECTION_62, architectures=ARCHITECTURES).items() if k not in ("depth", "width")},
             train_depth_width, report_depth_width),
    Question("gradients", "6.2.1-5", "Vanishing gradients", GRADIENTS, train_gradients, report_gradients),
    Question("residual", "6.2.1-6", "Fixing the vanishing gradients (bonus)", GRADIENTS, train_residual,
             report_residual, reads=("gradients",)),
    Question("implicit", "6.2.1-7", "Implicit representation: sin features (bonus)", dict(SECTION_62, features="sin"),
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
              "with id,iso,name for legends). Default: the embedded data/europe")

if __name__ == "__main__":
    common.main(SCRIPT)
