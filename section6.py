"""What Section 6 questions train with: the CSV data, the MLP, lockstep groups (train_group), prediction maps,
per-layer diagnostics and the protocol settings they share."""
import csv
import os

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from common import UserError, file_digest, finite_or_none, seed_everything, shown_path, train_lockstep

DEFAULT_DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "europe")
SPLIT_FILES = {"train": "train.csv", "val": "validation.csv", "test": "test.csv"}
COLUMNS = ("long", "lat", "country")
QUICK_ROWS = {"train": 2000, "val": 500, "test": 500}


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
    data = read_data(args.data_dir or DEFAULT_DATA, device, args.quick)
    if args.data_dir is None:  # what the study report says the numbers are (data/europe/README.md)
        data["meta"]["stand_in"] = (f"Section 6 on GeoNames cities of {data['meta']['n_classes']} European "
                                    "countries (`data/europe/`)")
    return data


SIN_FREQUENCIES = [round(0.1 * i, 1) for i in range(1, 11)]  # 6.2.1-7: a in {0.1, ..., 1.0}


def featurize(X, features, train_X):
    """raw: (long, lat); standardized: by the training rows' mean and std; sin: sin(a * x) for every a in
    SIN_FREQUENCIES, longitude's first (20 features)."""
    if features == "raw":
        return X
    if features == "standardized":
        return (X - train_X.mean(0)) / train_X.std(0)
    a = torch.tensor(SIN_FREQUENCIES, device=X.device)
    return torch.sin(X[:, :, None] * a).flatten(1)


ACTIVATIONS = {"relu": nn.ReLU, "leaky_relu": nn.LeakyReLU}  # LeakyReLU: negative slope 0.01


class MLP(nn.Module):
    """`depth` hidden layers of `width` units, Linear -> [BatchNorm1d] -> ReLU, then an output Linear.
    residual: an identity skip around every hidden layer but the first:
      'post': x + ReLU([BN](Linear(x)));
      'skipinit': x + g * ReLU([BN](Linear(x))), g a learnable scalar per layer from 0 (SkipInit, De & Smith
              2020; ReZero, Bachlechner et al. 2020);
      'pre': x + Linear(ReLU([BN](x))), output layer on ReLU([BN](x)) (He et al. 2016, Identity Mappings).
    init 'he': Kaiming-normal weights (ReLU gain, fan in), zero biases."""

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
    """Predicted class of each MAP_RESOLUTION^2 cell over map_extent and each test point, named by tag."""
    model, train_X = load_model(run, data["meta"]["n_classes"], state), data["train"][0].cpu()

    def predict(points):
        return model(featurize(points, run["features"], train_X)).argmax(1).to(torch.int16)
    points = grid_points(map_extent(data["meta"]["extent"]), MAP_RESOLUTION)
    grid = torch.cat([predict(chunk) for chunk in points.split(65536)]).view(MAP_RESOLUTION, -1).numpy()
    return {f"grid_{tag}": grid, f"test_pred_{tag}": predict(data["test"][0].cpu()).numpy()}


def borders(grid):
    """The cells of a 2-D grid of ids whose right or upper neighbour holds another id: a map's borders."""
    border = np.zeros(grid.shape, bool)
    border[:, :-1] |= grid[:, :-1] != grid[:, 1:]
    border[:-1, :] |= grid[:-1, :] != grid[1:, :]
    return border


def batch_major(model, X):
    """Logits [N, classes] for X [N, features]; [K, N, classes] for stacked and X [K, N, features]."""
    return model(X.mT).mT if X.dim() == 3 else model(X)


@torch.no_grad()
def relu_inputs(model, X, train_mode=False):
    """Every ReLU's input for the rows of X: one [N, width] ([K, N, width] stacked) per hidden layer;
    train_mode: batch norm uses X's own statistics, as in a training step."""
    inputs = []
    hooks = [m.register_forward_hook(lambda m, i, o: inputs.append(i[0].mT if X.dim() == 3 else i[0]))
             for m in model.modules() if isinstance(m, tuple(ACTIVATIONS.values()))]
    model.train(train_mode)
    batch_major(model, X)
    for hook in hooks:
        hook.remove()
    return inputs


def batch_diagnostics(arch, n_classes, seed, X, y, batch_size):
    """On the run's first training batch (train_lockstep's shuffle), in train mode, at init: (each Linear
    layer's mean input norm, its ||grad W||_2^2)."""
    seed_everything(seed)
    model = build_model(arch, n_classes)
    first_batch = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))[:batch_size]
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    norms = []
    hooks = [m.register_forward_hook(lambda m, i, o: norms.append(i[0].detach().norm(dim=1).mean()))
             for m in linears]
    F.cross_entropy(model(X[first_batch]), y[first_batch]).backward()
    for hook in hooks:
        hook.remove()
    return [finite_or_none(v) for v in norms], [finite_or_none(m.weight.grad.pow(2).sum()) for m in linears]


def class_prior_entropy(y, n_classes):
    """Cross-entropy (nats) of predicting y's class frequencies: the best a net blind to its input can do."""
    p = torch.bincount(y.cpu(), minlength=n_classes).double() / len(y)
    return float(-(p[p > 0] * p[p > 0].log()).sum())


def seed_runs(settings, lr, **extra):
    return [{"seed": settings["seed"] + i, "lr": lr, **extra} for i in range(settings["seeds"])]


def lr_runs(settings):
    return [{**run, "lr": lr} for run in seed_runs(settings, None) for lr in settings["lrs"]]


def arch_of(settings, **changes):
    """ARCH_KEYS: changes, else settings, else PLAIN."""
    return {key: changes.get(key, settings.get(key, PLAIN.get(key))) for key in ARCH_KEYS}


def train_group(data, runs, arch, settings, env, desc, epochs=None, batch_size=None, diagnose=False,
                epoch_measure=None, **record):
    """The runs (each a seed, an lr, maybe a width or features) of one arch in lockstep: (results, states).
    diagnose: record batch_diagnostics; epoch_measure(model, X_val) after each epoch."""
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
        if diagnose:
            norms, grads = batch_diagnostics(run_arch, n_classes, result["seed"], X[k] if X.dim() == 3 else X,
                                             y, batch_size)
            result.update(init_activation_norm=norms, init_grad_sq_norm=grads)
    return results, states


SKELETON = dict(seed=42, seeds=3, lr=1e-3, depth=6, width=16)  # the exercise skeleton's (and batch 256)
SKELETON_WITHOUT_LR = {key: value for key, value in SKELETON.items() if key != "lr"}  # the lr sweeps': lrs
REPORT_62 = dict(seed=42, seeds=3, lr=1e-3, epochs=50, batch_size=128, batch_norm=True)  # the report's choice
GRADIENTS = dict(SKELETON, batch_size=256, batch_norm=False, epochs=10, depth=100, width=4)
