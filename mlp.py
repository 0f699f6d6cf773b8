"""Section 6: MLPs on 2-D coordinates (European cities -> country). What is trained and how: the data, the
MLP, one train_<question> function per question of the exercise, and the question records at the end.

    python mlp.py --question lr            # one question; outputs in results/mlp/
    python mlp.py --question all           # every question, in order
    python mlp.py --list                   # the questions
    python mlp.py --help                   # every flag, with each question's protocol value

Training writes every number into results/mlp/<question>.json (the arrays its figures draw into a .npz);
a rerun with the same settings, data and code reuses them. mlp_report.py draws and writes the reports.
"""
import csv
import math
import os
from math import comb

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import mlp_report
import runner
from common import (UserError, borders, file_digest, finite_or_none, seed_everything, shown_path,
                    train_lockstep)
from runner import Question, Setting, non_negative

DEFAULT_DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "europe")
SPLIT_FILES = {"train": "train.csv", "val": "validation.csv", "test": "test.csv"}
COLUMNS = ("long", "lat", "country")
QUICK_ROWS = {"train": 2000, "val": 500, "test": 500}


# ----------------------------------------------------------------------------- data

def read_split(path):
    """(coordinates [N, 2] float32, labels as strings) from a CSV with columns long, lat, country, by name."""
    if not os.path.isfile(path):
        raise UserError(f"{path}: file not found (a data folder holds train.csv, validation.csv, test.csv)")
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
    """{'train'|'val'|'test': (X, y) tensors on device, 'meta': the data's description (rows, classes)}."""
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
    class_id = {c: i for i, c in enumerate(classes)}
    data, rows = {}, {}
    for name, (coords, labels) in splits.items():
        y = np.array([class_id[label] for label in labels], dtype=np.int64)
        if quick:
            coords, y = coords[:QUICK_ROWS[name]], y[:QUICK_ROWS[name]]
        data[name] = (torch.from_numpy(coords).to(device), torch.from_numpy(y).to(device))
        rows[name] = len(y)
    all_coords = np.concatenate([c for c, _ in splits.values()])
    low, high = all_coords.min(0), all_coords.max(0)
    data["meta"] = {"dir": shown_path(data_dir),
                    "digest": file_digest([os.path.join(data_dir, f) for f in SPLIT_FILES.values()]),
                    "summary": f"{shown_path(data_dir)} ({rows['train']} / {rows['val']} / {rows['test']} "
                               f"rows, {len(classes)} classes)",
                    "rows": rows, "n_classes": len(classes), "label_note": label_note,
                    "class_names": [country_names.get(c, c) for c in classes],
                    "extent": [float(low[0]), float(high[0]), float(low[1]), float(high[1])]}
    return data


def load_data(args, device):
    """The runner's data: the splits on the device and their description."""
    data = read_data(args.data_dir or DEFAULT_DATA, device, args.quick)
    if args.data_dir is None:  # what the study report says the numbers are (data/europe/README.md)
        data["meta"]["stand_in"] = (f"Section 6 on GeoNames cities of {data['meta']['n_classes']} European "
                                    "countries (`data/europe/`)")
    return data


# ----------------------------------------------------------------------------- inputs and model

SIN_FREQUENCIES = [round(0.1 * i, 1) for i in range(1, 11)]  # 6.2.1-7: a in {0.1, ..., 1.0}


def featurize(X, features, train_X):
    """raw: the (long, lat) coordinates; standardized: each coordinate less its mean over the training split's
    rows train_X, over its standard deviation there; sin: sin(a * x) for every a in SIN_FREQUENCIES and each
    coordinate (20 features, those of the longitude first)."""
    if features == "raw":
        return X
    if features == "standardized":
        return (X - train_X.mean(0)) / train_X.std(0)
    a = torch.tensor(SIN_FREQUENCIES, device=X.device)
    return torch.sin(X[:, :, None] * a).flatten(1)


ACTIVATIONS = {"relu": nn.ReLU, "leaky_relu": nn.LeakyReLU}  # LeakyReLU: negative slope 0.01


class MLP(nn.Module):
    """`depth` hidden layers of `width` units, the first taking the input, then an output Linear: depth 6 has
    7 nn.Linear. A hidden layer is Linear -> ReLU, or Linear -> BatchNorm1d -> ReLU.
    residual adds an identity skip around every hidden layer but the first (whose input is not `width` wide):
      'post': x <- x + ReLU([BatchNorm1d](Linear(x))), the hidden layer as it is;
      'skipinit': x <- x + g * ReLU([BatchNorm1d](Linear(x))), g a learnable scalar per layer, initialised
              to 0 (SkipInit, De & Smith 2020; ReZero, Bachlechner et al. 2020): a block starts as identity;
      'pre':  x <- x + Linear(ReLU([BatchNorm1d](x))), the pre-activation form of He et al. (2016, "Identity
              Mappings in Deep Residual Networks"), whose output layer takes ReLU([BatchNorm1d](x)).
    activation 'leaky_relu' puts LeakyReLU in place of every ReLU; init 'he' draws every weight from
    Kaiming-normal (ReLU gain, fan in) with zero biases instead of PyTorch's default."""

    def __init__(self, n_in=2, n_classes=33, depth=6, width=16, batch_norm=False, residual="none",
                 activation="relu", init="default"):
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
        if residual == "skipinit":  # [1, 1]: broadcasts over a batch, and over a stack of models' batches
            self.gains = nn.ParameterList(nn.Parameter(torch.zeros(1, 1)) for _ in range(depth - 1))
        self.out = nn.Linear(width, n_classes)
        if init == "he":
            for module in self.modules():
                if isinstance(module, nn.Linear):
                    nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
                    nn.init.zeros_(module.bias)

    def forward(self, x):
        for i, layer in enumerate(self.hidden):
            if i == 0 or self.residual == "none":
                x = layer(x)
            else:
                x = x + (self.gains[i - 1] * layer(x) if self.residual == "skipinit" else layer(x))
        if self.residual == "pre":
            x = self.final(x)
        return self.out(x)


ARCH_KEYS = ("depth", "width", "batch_norm", "residual", "activation", "init", "features")
PLAIN = {"batch_norm": False, "residual": "none", "activation": "relu", "init": "default", "features": "raw"}


def build_model(arch, n_classes):
    n_in = 2 * len(SIN_FREQUENCIES) if arch["features"] == "sin" else 2
    return MLP(n_in, n_classes, arch["depth"], arch["width"], arch["batch_norm"], arch["residual"],
               arch["activation"], arch["init"])


def load_model(run, n_classes, state):
    model = build_model(run, n_classes)
    model.load_state_dict(state)
    return model.eval()


# ----------------------------------------------------------------------------- measurements

MAP_RESOLUTION = 400  # cells per side of a prediction map
MAP_MARGIN = 0.03  # a map shows the data's extent and this fraction of it on every side


def grid_points(extent, resolution):
    """The (x, y) points of a resolution^2 grid over extent (x0, x1, y0, y1), row 0 the lowest y."""
    x0, x1, y0, y1 = extent
    grid_y, grid_x = torch.meshgrid(torch.linspace(y0, y1, resolution), torch.linspace(x0, x1, resolution),
                                    indexing="ij")
    return torch.stack([grid_x.flatten(), grid_y.flatten()], dim=1)


def map_extent(extent):
    x0, x1, y0, y1 = extent
    dx, dy = (x1 - x0) * MAP_MARGIN, (y1 - y0) * MAP_MARGIN
    return [x0 - dx, x1 + dx, y0 - dy, y1 + dy]


def test_points(data):
    """The test points and their classes, which the maps draw on top."""
    X, y = (t.cpu().numpy() for t in data["test"])
    return {"test_points": X.astype(np.float32), "test_labels": y.astype(np.int16)}


@torch.no_grad()
def map_arrays(tag, run, state, data):
    """The arrays a map of the run's predictions draws, named by tag: the predicted class of every cell of a
    MAP_RESOLUTION grid over map_extent, and of every test point; and the fraction of cells on a border."""
    model, train_X = load_model(run, data["meta"]["n_classes"], state), data["train"][0].cpu()

    def predict(points):
        return model(featurize(points, run["features"], train_X)).argmax(1).to(torch.int16)
    points = grid_points(map_extent(data["meta"]["extent"]), MAP_RESOLUTION)
    grid = torch.cat([predict(chunk) for chunk in points.split(65536)]).view(MAP_RESOLUTION, -1).numpy()
    return {f"grid_{tag}": grid, f"test_pred_{tag}": predict(data["test"][0].cpu()).numpy()}


NEAR_DATA_CELLS = 5  # a map cell is near the data within this many cells (Chebyshev) of a training point's
#   cell: about 0.9 degrees (60-100 km) on the embedded data's map, so that land with cities counts and open
#   sea and empty land do not


def near_data_mask(points, extent, resolution, radius=NEAR_DATA_CELLS):
    """The cells of a resolution^2 grid over extent (as grid_points) within radius cells of a point."""
    x0, x1, y0, y1 = extent
    cols = ((points[:, 0] - x0) / (x1 - x0) * (resolution - 1)).round().long().clamp(0, resolution - 1)
    rows = ((points[:, 1] - y0) / (y1 - y0) * (resolution - 1)).round().long().clamp(0, resolution - 1)
    occupied = torch.zeros(1, 1, resolution, resolution)
    occupied[0, 0, rows, cols] = 1
    return F.max_pool2d(occupied, 2 * radius + 1, stride=1, padding=radius)[0, 0].bool().numpy()


@torch.no_grad()
def val_acc_per_class(run, state, data):
    """The run's validation accuracy on each class (None for a class with no validation point)."""
    model, n_classes = load_model(run, data["meta"]["n_classes"], state), data["meta"]["n_classes"]
    X, y = (t.cpu() for t in data["val"])
    hits = (model(featurize(X, run["features"], data["train"][0].cpu())).argmax(1) == y).double()
    counts = torch.bincount(y, minlength=n_classes)
    return [float(h / c) if c else None for h, c in zip(torch.bincount(y, hits, n_classes), counts)]


def batch_major(model, X):
    """model's logits for the rows of X [N, features]: [N, classes]; for a stacked module and X [K, N,
    features], [K, N, classes] (a stacked module works feature-major: common.stacked_module)."""
    return model(X.mT).mT if X.dim() == 3 else model(X)


@torch.no_grad()
def relu_inputs(model, X, train_mode=False):
    """The input of every ReLU for the rows of X, in eval mode (or train mode: batch norm normalizing by X's
    own statistics, as in a training step): one [N, width] tensor per hidden layer ([K, N, width] for a
    stacked module and X [K, N, features], as batch_major)."""
    inputs = []
    hooks = [m.register_forward_hook(lambda m, i, o: inputs.append(i[0].mT if X.dim() == 3 else i[0]))
             for m in model.modules() if isinstance(m, tuple(ACTIVATIONS.values()))]
    model.train(train_mode)
    batch_major(model, X)
    for hook in hooks:
        hook.remove()
    return inputs


def batch_diagnostics(arch, n_classes, seed, X, y, batch_size, state=None):
    """On the run's first training batch (same shuffle as train_lockstep), in train mode, at initialisation
    (the same init) or with a trained state: the mean norm of the activation entering every Linear layer, and
    every Linear layer's ||grad W||_2^2: (activation norms, squared gradient norms)."""
    seed_everything(seed)
    model = build_model(arch, n_classes)
    if state is not None:
        model.load_state_dict(state)
    first_batch = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))[:batch_size]
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    norms = []
    hooks = [m.register_forward_hook(lambda m, i, o: norms.append(i[0].detach().norm(dim=1).mean()))
             for m in linears]
    F.cross_entropy(model(X[first_batch]), y[first_batch]).backward()
    for hook in hooks:
        hook.remove()
    return [finite_or_none(v) for v in norms], [finite_or_none(m.weight.grad.pow(2).sum()) for m in linears]


def dead_relu_fraction(model, X):
    """Per hidden layer, the fraction of ReLU units that output 0 for every row of X (eval mode): [layers], or
    [K, layers] for a stacked module and X [K, N, features]."""
    return torch.stack([(pre <= 0).all(-2).float().mean(-1) for pre in relu_inputs(model, X)], -1)


def output_summary(model, X):
    """What the nets say on the rows of X (eval mode): the mean entropy of their predicted distributions
    (nats), and the share of rows given the class each predicts most; [] or [K] for a stacked module."""
    log_probs = batch_major(model, X).log_softmax(-1)
    entropy = -(log_probs.exp() * log_probs).sum(-1).mean(-1)
    predicted = F.one_hot(log_probs.argmax(-1), log_probs.shape[-1])
    return {"val_entropy": entropy, "val_mode_share": predicted.sum(-2).amax(-1) / predicted.shape[-2]}


def relu_input_rms(model, X, train_mode=False):
    """Per hidden layer, the root mean square of its ReLUs' inputs over X: the scale the layer works at."""
    return [float(pre.pow(2).mean().sqrt()) for pre in relu_inputs(model, X, train_mode)]


def class_prior_entropy(y, n_classes):
    """The cross-entropy (nats) of always predicting the class frequencies of labels y: what a net that
    ignores its input can reach at best."""
    p = torch.bincount(y.cpu(), minlength=n_classes).double() / len(y)
    return float(-(p[p > 0] * p[p > 0].log()).sum())


def activation_regions(model, extent, resolution):
    """Id of the ReLU on/off pattern (all hidden layers) of every cell of a resolution^2 grid over extent:
    each distinct pattern is one linear region of the network (a grid sees a lower bound of their number)."""
    points = grid_points(extent, resolution)
    patterns = torch.cat([torch.cat(relu_inputs(model, chunk), dim=1) > 0 for chunk in points.split(65536)])
    return pattern_ids(patterns).view(resolution, resolution).numpy()


def pattern_ids(patterns):
    """Id of each row of a bool matrix [N, units] among its distinct rows, numbered in the rows' sorted order
    (as torch.unique(dim=0) numbers them). Up to 63 units a row is packed into one int64, its first column
    the highest bit, so that numbers and rows sort alike: about 20x faster than unique over rows."""
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
        return sum(comb(widths[layer], j) * count(layer + 1, caps + [widths[layer] - j])
                   for j in range(top + 1))
    return count(0, [])


# ----------------------------------------------------------------------------- training
# train_<question>(settings, data, reads, env) -> result

def seed_runs(settings, lr, **extra):
    """One run per seed at learning rate lr."""
    return [{"seed": settings["seed"] + i, "lr": lr, **extra} for i in range(settings["seeds"])]


def lr_runs(settings):
    """One run per seed and lr of settings['lrs']."""
    return [{**run, "lr": lr} for run in seed_runs(settings, None) for lr in settings["lrs"]]


def arch_of(settings, **changes):
    """The architecture keys of a model: changes, else the settings, else plain (no batch norm, no skips,
    ReLU, PyTorch's init, raw coordinates)."""
    return {key: changes.get(key, settings.get(key, PLAIN.get(key))) for key in ARCH_KEYS}


def train_group(data, runs, arch, settings, env, desc, epochs=None, batch_size=None, diagnose=(),
                epoch_measure=None, **record):
    """Train the runs (each with a seed, an lr, and its own width or features if it names them) of one
    architecture in lockstep, for the settings' epochs and batch size unless given: (results, states).
    Narrower models train padded to the widest (see train_lockstep). diagnose: 'init' and/or 'final', the
    batch_diagnostics to record; epoch_measure(model, X): values on the validation rows after every epoch."""
    epochs, batch_size = epochs or settings["epochs"], batch_size or settings["batch_size"]
    n_classes, train_X = data["meta"]["n_classes"], data["train"][0]

    def arch_of_run(run):
        return {**arch, **{key: run[key] for key in ("width", "features") if key in run}}
    features = [arch_of_run(run)["features"] for run in runs]
    inputs = {}
    for split in SPLIT_FILES:
        X = {f: featurize(data[split][0], f, train_X) for f in set(features)}
        inputs[split] = (X[features[0]] if len(X) == 1 else torch.stack([X[f] for f in features]),
                         data[split][1])
    if epoch_measure:
        X_val = inputs["val"][0]
        X_val = X_val.expand(len(runs), *X_val.shape[-2:])
        record["epoch_measure"] = lambda stacked: epoch_measure(stacked, X_val)
    results, states = train_lockstep(lambda run: build_model(arch_of_run(run), n_classes), runs, inputs,
                                     epochs, batch_size, env.device, quiet=env.quiet, desc=desc, **record)
    X, y = (t.cpu() for t in inputs["train"])
    for k, (result, state) in enumerate(zip(results, states)):
        run_arch = arch_of_run(result)
        n_params = sum(p.numel() for p in build_model(run_arch, n_classes).parameters())
        result.update(epochs=epochs, batch_size=batch_size, **run_arch, n_params=n_params)
        for when in diagnose:
            norms, grads = batch_diagnostics(run_arch, n_classes, result["seed"], X[k] if X.dim() == 3 else X,
                                             y, batch_size, state if when == "final" else None)
            result.update({f"{when}_activation_norm": norms, f"{when}_grad_sq_norm": grads})
    return results, states


def train_lr(settings, data, reads, env):
    """The lr sweep; beyond the protocol, each layer's dead ReLUs on the validation set after every epoch."""
    def dead_units(model, X):
        return {"dead_relu_fraction": dead_relu_fraction(model, X)}
    results, _ = train_group(data, lr_runs(settings), arch_of(settings), settings, env, "lr sweep",
                             epoch_measure=dead_units)
    n_classes = data["meta"]["n_classes"]
    prior = class_prior_entropy(data["train"][1], n_classes)
    return {"runs": results, "reference_losses": {"class_prior": prior, "uniform": math.log(n_classes)}}


def train_epochs(settings, data, reads, env, batch_norm=None):
    """100 epochs; beyond the protocol, what the nets predict on the validation set after every epoch (the
    entropy of their outputs, the share given to one class), each run's ReLU-input scale per layer at
    initialisation (as the first step sees it) and at the end, and its dead units at the end, on the
    validation set; and, for the plain net, the over-fitting control."""
    arch = arch_of(settings) if batch_norm is None else arch_of(settings, batch_norm=batch_norm)
    desc = f"{settings['epochs']} epochs" + ", batch norm" * arch["batch_norm"]
    results, states = train_group(data, seed_runs(settings, settings["lr"]), arch, settings, env, desc,
                                  eval_train=True, epoch_measure=output_summary)
    X, n_classes = data["val"][0].cpu(), data["meta"]["n_classes"]
    for result, state in zip(results, states):
        seed_everything(result["seed"])
        result["relu_input_rms_init"] = relu_input_rms(build_model(arch, n_classes), X, train_mode=True)
        model = load_model(result, n_classes, state) if result["status"] == "ok" else None
        result["relu_input_rms"] = relu_input_rms(model, X) if model else None
        result["dead_relu_fraction"] = dead_relu_fraction(model, X).tolist() if model else None
    y = data["train"][1].cpu()
    top_share = float(torch.bincount(y, minlength=n_classes).max() / len(y))
    result = {"runs": results,
              "class_prior": {"entropy": class_prior_entropy(y, n_classes), "top_share": top_share}}
    if batch_norm is None and settings["overfit_per_class"]:
        result["overfit_runs"] = overfit_control(settings, data, env)
    return result


def overfit_control(settings, data, env):
    """Beyond the protocol: the plain net, overfit_width wide, on overfit_per_class training rows of every
    class (the first of each class in a permutation drawn with the first seed; all of a class that has
    fewer), its inputs overfit_features (standardized: with the subset's statistics), trained at the
    overfit_* settings until it over-fits. Every class is in the subset, so a rise of the validation loss is
    not the cost of classes it never saw. Validation and test stay whole; train_eval_* is on the subset."""
    y = data["train"][1].cpu()
    counts, rows = {}, []
    for i in torch.randperm(len(y), generator=torch.Generator().manual_seed(settings["seed"])).tolist():
        label = int(y[i])
        if counts.get(label, 0) < settings["overfit_per_class"]:
            counts[label] = counts.get(label, 0) + 1
            rows.append(i)
    rows = torch.tensor(sorted(rows), device=data["train"][1].device)
    subset = {**data, "train": tuple(t[rows] for t in data["train"])}
    arch = arch_of(settings, width=settings["overfit_width"], batch_norm=False,
                   features=settings["overfit_features"])
    results, _ = train_group(subset, seed_runs(settings, settings["overfit_lr"]), arch, settings, env,
                             f"over-fitting control, {len(rows)} rows", settings["overfit_epochs"],
                             settings["overfit_batch_size"], eval_train=True)
    for result in results:
        result.update(train_rows=len(rows), rows_per_class=settings["overfit_per_class"])
    return results


BATCHNORM_CONTROLS = {  # control: (its inputs, the setting that is its lr); no batch norm, same net and seeds
    "larger_lr": ("raw", "larger_lr"),
    "standardized": ("standardized", "lr"),
    "standardized_larger_lr": ("standardized", "larger_lr"),
}


def train_batchnorm(settings, data, reads, env):
    """The epochs question with batch norm, beside the epochs question's runs; beyond the protocol, the
    controls without batch norm that tell its parts apart (BATCHNORM_CONTROLS), in one lockstep group.
    Not in the epochs question's group, whose net they share: it scores the training set every epoch, and
    with them in it epochs + batchnorm took 115 CPU-s against 103 apart (measured beside run_all.sh)."""
    result = train_epochs(settings, data, reads, env, batch_norm=True)
    runs = [run for control, (features, lr) in BATCHNORM_CONTROLS.items()
            for run in seed_runs(settings, settings[lr], control=control, features=features)]
    controls, _ = train_group(data, runs, arch_of(settings, batch_norm=False), settings, env,
                              "controls without batch norm", eval_train="final")
    return {**result, "baseline_runs": reads["epochs"]["runs"], "control_runs": controls}


NOISE_STEPS = 100  # the last step losses, whose spread measures how noisy a batch size's steps are


def train_batch_size(settings, data, reads, env):
    """One lockstep group per batch size. A run's loss noise is the standard deviation of its last NOISE_STEPS
    step losses; the first seed's step losses are kept to be drawn, as float16 (the figure's resolution)."""
    results, arrays = [], {}
    for batch_size, epochs in zip(settings["batch_sizes"], settings["batch_size_epochs"]):
        group, _ = train_group(data, seed_runs(settings, settings["lr"]), arch_of(settings), settings, env,
                               f"batch {batch_size}", epochs, batch_size, record_steps=True)
        for run in group:
            losses = np.array([np.nan if v is None else v for v in run["history"].pop("step_loss")])
            run["loss_noise"] = finite_or_none(np.nanstd(losses[-NOISE_STEPS:], ddof=1))
            arrays.setdefault(f"step_loss_{batch_size}", losses.astype(np.float16))
        results += group
    return {"runs": results, "arrays": arrays}


def train_sweep(settings, data, reads, env):
    """Beyond the protocol: every lr at every batch size, for the same epochs; one lockstep group per batch
    size."""
    results = []
    for batch_size in settings["batch_sizes"]:
        results += train_group(data, lr_runs(settings), arch_of(settings), settings, env,
                               f"sweep, batch {batch_size}", batch_size=batch_size)[0]
    return {"runs": results}


PAD_RATIO = 4  # widths up to 4x apart train in one padded lockstep group, wider ones apart. Measured on a
#   2-core CPU at depth 6, 3 seeds a width: widths 8-64 in one group 173 s; 8-32 and 64 apart 118 s; each
#   width alone 149 s


def width_groups(widths):
    """The widths, narrowest first, in groups whose widest is at most PAD_RATIO times their narrowest."""
    groups = []
    for width in sorted(set(widths)):
        if groups and width <= PAD_RATIO * groups[-1][0]:
            groups[-1].append(width)
        else:
            groups.append([width])
    return groups


def seconds_per_epoch(arch, data, settings, env, repeats=3):
    """The fastest of `repeats` single epochs of one model of arch trained alone, evaluation included: depth's
    cost in time, which a lockstep group hides."""
    one_seed = {**settings, "seeds": 1}
    times = []
    for _ in range(repeats):
        results, _ = train_group(data, seed_runs(one_seed, settings["lr"]), arch, settings, env,
                                 f"{arch['depth']}x{arch['width']} alone", epochs=1)
        times.append(results[0]["group_wall_s"])
    return min(times)


def train_depth_width(settings, data, reads, env):
    """The architectures, and beyond the protocol the matched_architectures (of about the same parameter
    counts), grouped by depth and width_groups; results in the order of the architectures. Every run records
    its first batch's gradients at initialisation and at the end; every architecture, the time of an epoch
    alone; the worst architecture trains on, from its state after the settings' epochs, to longer_epochs.
    Each architecture's first seed is drawn."""
    architectures = settings["architectures"] + [arch for arch in settings["matched_architectures"]
                                                 if arch not in settings["architectures"]]
    results, states = [], []
    for depth in dict.fromkeys(depth for depth, _ in architectures):
        for widths in width_groups([width for d, width in architectures if d == depth]):
            runs = [run for width in widths for run in seed_runs(settings, settings["lr"], width=width)]
            arch = arch_of(settings, depth=depth, width=None)
            group, group_states = train_group(data, runs, arch, settings, env, f"depth {depth}, width "
                                              f"{'-'.join(map(str, widths))}", eval_train="final",
                                              diagnose=("init", "final"))
            results, states = results + group, states + group_states
    order = sorted(range(len(results)), key=lambda i: architectures.index([results[i]["depth"],
                                                                           results[i]["width"]]))
    arrays = test_points(data)
    seconds = {}
    for depth, width in architectures:
        first = next(i for i in order if (results[i]["depth"], results[i]["width"]) == (depth, width))
        arrays.update(map_arrays(f"{depth}x{width}", results[first], states[first], data))
        seconds[f"{depth}x{width}"] = seconds_per_epoch(arch_of(settings, depth=depth, width=width), data,
                                                        settings, env)
    result = {"runs": [results[i] for i in order], "map_extent": map_extent(data["meta"]["extent"]),
              "seconds_per_epoch_alone": seconds, "arrays": arrays,
              "weights": {"states": [states[i] for i in order]}}
    if settings["longer_epochs"]:
        def mean_val_acc(arch):
            accs = [r["history"]["val_acc"][-1] for r in results if [r["depth"], r["width"]] == arch]
            return np.mean([-1 if acc is None else acc for acc in accs])
        depth, width = min(settings["architectures"], key=mean_val_acc)
        runs = seed_runs(settings, settings["lr"])
        done = {results[i]["seed"]: i for i in order
                if (results[i]["depth"], results[i]["width"]) == (depth, width)}
        longer, _ = train_group(data, runs, arch_of(settings, depth=depth, width=width), settings, env,
                                f"{depth}x{width}, on to {settings['longer_epochs']} epochs",
                                settings["longer_epochs"], eval_train="final",
                                start=([states[done[run["seed"]]] for run in runs], settings["epochs"]))
        for run in longer:  # the whole run: its first epochs, then the epochs trained on
            first = results[done[run["seed"]]]["history"]
            run["history"] = {key: first[key] + values for key, values in run["history"].items()}
        result["longer_runs"] = longer
    return result


def train_gradients(settings, data, reads, env):
    results, _ = train_group(data, seed_runs(settings, settings["lr"]), arch_of(settings), settings, env,
                             f"depth {settings['depth']} gradients", record_grads=True, diagnose=("init",))
    return {"runs": results}


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
                               f"depth {settings['depth']} {fix}", record_grads=True, diagnose=("init",))[0]
    return {"runs": results, "baseline_runs": reads["gradients"]["runs"],
            "fixes": {fix: label for fix, (label, _) in RESIDUAL_FIXES.items()}}


def train_implicit(settings, data, reads, env):
    """The sin-feature model, beside the same model on raw coordinates: depth_width's runs when it trained
    that model with these settings, else trained here. The first seed of each is drawn as a map; beyond the
    protocol, each map's share of border cells over the whole grid and near the data (near_data_mask), and
    every run's validation accuracy per class."""
    raw, seeds = arch_of(settings, features="raw"), seed_runs(settings, settings["lr"])
    same = {**raw, **{key: settings[key] for key in ("lr", "epochs", "batch_size")}}
    source = reads["depth_width"]
    baseline = [(run, state) for run, state in zip(source["runs"], source["weights"]["states"])
                if all(run[key] == value for key, value in same.items())
                and run["seed"] in [seed_run["seed"] for seed_run in seeds]]
    if sorted(run["seed"] for run, _ in baseline) != [run["seed"] for run in seeds]:
        baseline = list(zip(*train_group(data, seeds, raw, settings, env, "raw coordinates")))
    results, states = train_group(data, seeds, arch_of(settings), settings, env, "sin features")
    near = near_data_mask(data["train"][0].cpu(), map_extent(data["meta"]["extent"]), MAP_RESOLUTION)
    arrays, border_fraction = test_points(data), {}
    for tag, (run, state) in (("raw", baseline[0]), ("sin", (results[0], states[0]))):
        arrays.update(map_arrays(tag, run, state, data))
        border = borders(arrays[f"grid_{tag}"])
        border_fraction[tag] = {"grid": float(border.mean()), "near_data": float(border[near].mean())}
    baseline_runs = [{**run, "val_acc_per_class": val_acc_per_class(run, state, data)}
                     for run, state in baseline]
    for run, state in zip(results, states):
        run["val_acc_per_class"] = val_acc_per_class(run, state, data)
    counts = torch.bincount(data["val"][1].cpu(), minlength=data["meta"]["n_classes"]).tolist()
    return {"runs": results, "baseline_runs": baseline_runs, "arrays": arrays,
            "sin_frequencies": SIN_FREQUENCIES, "map_extent": map_extent(data["meta"]["extent"]),
            "border_fraction": border_fraction, "near_data_share": float(near.mean()),
            "val_class_counts": counts}


def train_regions(settings, data, reads, env):
    """No training: count the regions of the depth_width question's trained models; the first seed of each
    is drawn."""
    source = reads["depth_width"]
    results, arrays = [], {}
    for run, state in zip(source["runs"], source["weights"]["states"]):
        if [run["depth"], run["width"]] not in settings["architectures"]:
            continue
        model = load_model(run, data["meta"]["n_classes"], state)
        regions = activation_regions(model, data["meta"]["extent"], settings["resolution"])
        results.append({**{k: run[k] for k in ("seed", "lr", "epochs", "batch_size", *ARCH_KEYS)},
                        "status": run["status"], "regions_on_grid": int(regions.max()) + 1,
                        "bound": region_bound([run["width"]] * run["depth"]),
                        "test_acc": run["history"]["test_acc"][-1]})
        arrays.setdefault(f"regions_{run['depth']}x{run['width']}", regions.astype(np.int32))
    return {"runs": results, "arrays": arrays}


# ----------------------------------------------------------------------------- questions

SKELETON = dict(seed=42, seeds=3, lr=1e-3, depth=6, width=16)  # the exercise skeleton's (and batch 256)
REPORT_62 = dict(seed=42, seeds=3, lr=1e-3, epochs=50, batch_size=128, batch_norm=True)  # the report's choice
GRADIENTS = dict(SKELETON, batch_size=256, batch_norm=False, epochs=10, depth=100, width=4)
OVERFIT = dict(overfit_per_class=3, overfit_features="standardized", overfit_width=32, overfit_lr=0.03,
               overfit_batch_size=8, overfit_epochs=800)  # found by a search: README, "Protocol choices"
QUESTIONS = [
    Question("lr", "6.1.2-1", "Learning rate",
             dict(SKELETON, batch_size=256, batch_norm=False, lrs=[1, 0.2, 0.01, 0.001, 0.0005, 0.00001],
                  epochs=50), train_lr, mlp_report.report_lr),
    Question("epochs", "6.1.2-2", "Training for longer (no batch norm)",
             dict(SKELETON, batch_size=256, batch_norm=False, epochs=100, **OVERFIT), train_epochs,
             mlp_report.report_epochs),
    Question("batchnorm", "6.1.2-3", "Batch norm (compared with 6.1.2-2)", dict(SKELETON, batch_size=256,
             epochs=100, larger_lr=0.01), train_batchnorm, mlp_report.report_batchnorm, reads=("epochs",)),
    Question("batch_size", "6.1.2-4", "Batch size",
             dict(SKELETON, batch_norm=False, batch_sizes=[1, 16, 128, 1024],
                  batch_size_epochs=[1, 10, 50, 50]),
             train_batch_size, mlp_report.report_batch_size),
    Question("sweep", "", "Learning rate by batch size (beyond the report)",
             dict(SKELETON, batch_norm=False, lrs=[1, 0.3, 0.1, 0.03, 0.01, 0.003],
                  batch_sizes=[32, 128, 512, 2048], epochs=10), train_sweep, mlp_report.report_sweep),
    Question("depth_width", "6.2.1-1 to 6.2.1-4", "Depth and width",
             dict(REPORT_62, architectures=[[1, 16], [2, 16], [6, 16], [10, 16], [6, 8], [6, 32], [6, 64]],
                  matched_architectures=[[1, 52], [2, 28], [2, 64]], longer_epochs=200),
             train_depth_width, mlp_report.report_depth_width),
    Question("gradients", "6.2.1-5", "Vanishing gradients", GRADIENTS, train_gradients,
             mlp_report.report_gradients),
    Question("residual", "6.2.1-6", "Fixing the vanishing gradients (bonus)", GRADIENTS, train_residual,
             mlp_report.report_residual, reads=("gradients",)),
    Question("implicit", "6.2.1-7", "Implicit representation: sin features (bonus)",
             dict(REPORT_62, depth=6, width=16, features="sin"), train_implicit, mlp_report.report_implicit,
             reads=("depth_width",)),
    Question("regions", "", "Linear regions of the trained ReLU nets (beyond the report)",
             dict(architectures=[[1, 16], [2, 16]], resolution=2000), train_regions,
             mlp_report.report_regions, reads=("depth_width",)),
]


def architecture(text):
    """'DxW' -> [D, W], for --architectures."""
    try:
        depth, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise UserError(f"--architectures {text}: expected DEPTHxWIDTH, e.g. 6x16") from None
    return [depth, width]


def show_architectures(architectures):
    return " ".join(f"{depth}x{width}" for depth, width in architectures) or "none"


def on_off(text):
    if text not in ("on", "off"):
        raise UserError(f"--batch-norm {text}: expected on or off")
    return text == "on"


SETTINGS = [
    Setting("seeds", "runs per setting, seeds SEED, SEED+1, ... (1 = the exercise's single run)",
            dict(type=int)),
    Setting("lr", "SGD learning rate", dict(type=float)),
    Setting("lrs", "learning rates of the lr sweep", dict(type=float, nargs="+")),
    Setting("epochs", "epochs", dict(type=int)),
    Setting("batch_size", "batch size", dict(type=int)),
    Setting("batch_sizes", "batch sizes compared", dict(type=int, nargs="+")),
    Setting("batch_size_epochs", "epochs for each of --batch-sizes", dict(type=int, nargs="+")),
    Setting("overfit_per_class", "training rows of every class in the over-fitting control's subset (0: no "
            "control)", dict(type=int), check=non_negative),
    Setting("overfit_features", "inputs of the over-fitting control", dict(choices=["raw", "standardized"]),
            check=None),
    Setting("overfit_width", "units per hidden layer of the over-fitting control", dict(type=int)),
    Setting("overfit_lr", "learning rate of the over-fitting control", dict(type=float)),
    Setting("overfit_batch_size", "batch size of the over-fitting control", dict(type=int)),
    Setting("overfit_epochs", "epochs of the over-fitting control", dict(type=int)),
    Setting("larger_lr", "the larger learning rate of batch norm's controls without batch norm",
            dict(type=float)),
    Setting("depth", "hidden layers, the input layer included", dict(type=int)),
    Setting("width", "units per hidden layer", dict(type=int)),
    Setting("architectures", "models, each DEPTHxWIDTH", dict(type=architecture, nargs="+", metavar="DxW"),
            show=show_architectures),
    Setting("matched_architectures", "more models, each DEPTHxWIDTH, to compare depth and width at about "
            "the same parameter count", dict(type=architecture, nargs="*", metavar="DxW"),
            show=show_architectures),
    Setting("longer_epochs", "the worst architecture trains on to this many epochs (0: not)",
            dict(type=int), check=non_negative),
    Setting("batch_norm", "BatchNorm1d between each hidden Linear and its ReLU",
            dict(type=on_off, metavar="on|off"), check=None),
    Setting("resolution", "grid cells per side for counting regions", dict(type=int)),
]


def resolve(settings, quick):
    """The --quick budget (at most 2 epochs, 3 for the longer run, 1 per batch size, a 200-cell grid), then
    the checks across settings."""
    if quick:
        caps = {"epochs": 2, "resolution": 200, "overfit_epochs": 2, "longer_epochs": 3}
        settings = {key: min(value, caps[key]) if key in caps else value for key, value in settings.items()}
        if "batch_size_epochs" in settings:
            settings["batch_size_epochs"] = [1] * len(settings["batch_size_epochs"])
    if 0 < settings.get("longer_epochs", 0) <= settings["epochs"]:
        raise UserError(f"--longer-epochs {settings['longer_epochs']}: the worst model trains on from epoch "
                        f"{settings['epochs']}, so it must be more than --epochs (or 0: not)")
    if "batch_size_epochs" in settings and len(settings["batch_size_epochs"]) != len(settings["batch_sizes"]):
        raise UserError("--batch-sizes and --batch-size-epochs need the same number of values")
    if settings.get("batch_norm") and min(settings.get("batch_sizes", [settings.get("batch_size", 2)])) < 2:
        raise UserError("batch norm needs a batch size of at least 2 (BatchNorm1d cannot train on one "
                        "sample)")
    return settings


SCRIPT = runner.Script(
    name="mlp", doc=__doc__, questions=QUESTIONS, settings=SETTINGS, load_data=load_data, resolve=resolve,
    data_help="folder with train.csv, validation.csv, test.csv (columns long, lat, country; optional "
              "countries.csv with id,iso,name for legends). Default: the embedded data/europe")

if __name__ == "__main__":
    runner.main(SCRIPT)
