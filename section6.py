"""What Section 6 questions share: the CSV data, the MLP, lockstep groups, prediction maps, diagnostics."""
import csv
import math
import os

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from common import UserError, file_digest, finite_or_none, seed_everything, shown_path, train_lockstep

DEFAULT_DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "europe")
SPLIT_FILES = {"train": "train.csv", "val": "validation.csv", "test": "test.csv"}
COLUMNS = ("long", "lat", "country")
SIN_FREQUENCIES = [round(0.1 * i, 1) for i in range(1, 11)]  # 6.2.1-7: a in {0.1, ..., 1.0}
ACTIVATIONS = {"relu": nn.ReLU, "leaky_relu": nn.LeakyReLU}  # LeakyReLU: negative slope 0.01
ARCH_KEYS = ("depth", "width", "batch_norm", "residual", "activation", "init", "features")
PLAIN = {"batch_norm": False, "residual": "none", "activation": "relu", "init": "default", "features": "raw"}
MAP_RESOLUTION = 400  # cells per side of a prediction map
SKELETON = dict(seed=42, seeds=3, lr=1e-3, depth=6, width=16)  # the exercise skeleton's (and batch 256)
SKELETON_WITHOUT_LR = {key: value for key, value in SKELETON.items() if key != "lr"}  # the lr sweeps': lrs
REPORT_62 = dict(seed=42, seeds=3, lr=1e-3, epochs=50, batch_size=128, batch_norm=True)  # the report's choice
GRADIENTS = dict(SKELETON, batch_size=256, batch_norm=False, epochs=10, depth=100, width=4)


def read_split(path):
    """(coordinates [N, 2] float32, labels as strings) from a CSV with columns long, lat, country, by name."""
    if not os.path.isfile(path):
        raise UserError(f"{path}: file not found (a data folder holds train.csv, validation.csv, test.csv)")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)  # skips blank lines
        reader.fieldnames = [h.strip() for h in reader.fieldnames or []]
        missing = [c for c in COLUMNS if c not in reader.fieldnames]
        if missing:
            raise UserError(f"{path}: missing column(s) {', '.join(missing)}; "
                            f"the header is {','.join(reader.fieldnames) or '(empty)'}")
        coords, labels = [], []
        for row in reader:
            where = f"{path}: line {reader.line_num}"
            try:
                coords.append((float(row["long"]), float(row["lat"])))
                labels.append(row["country"].strip())
            except (TypeError, ValueError, AttributeError):  # a short row holds None
                raise UserError(f"{where}: expected numbers in long and lat, got {row}") from None
            if not all(map(math.isfinite, coords[-1])):
                raise UserError(f"{where}: coordinates must be finite numbers (found NaN or inf)")
    if not coords:
        raise UserError(f"{path}: no data rows (empty split)")
    return np.array(coords, dtype=np.float32), labels


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
    if not numeric or [int(c) for c in classes] != list(range(len(classes))):
        shown = ", ".join(classes[:5]) + (", ..." if len(classes) > 5 else "")
        print(f"note: labels {shown} mapped onto 0..{len(classes) - 1}")
    names_path, country_names = os.path.join(data_dir, "countries.csv"), {}
    if numeric and os.path.isfile(names_path):  # id,iso,name: the legends' names
        with open(names_path, newline="") as f:
            country_names = {row["id"].strip(): row["name"].strip() for row in csv.DictReader(f)}
    class_id = {c: i for i, c in enumerate(classes)}
    data, rows = {}, {}
    for name, (coords, labels) in splits.items():
        kept = {"train": 2000, "val": 500, "test": 500}[name] if quick else len(labels)  # --quick's rows
        y = np.array([class_id[label] for label in labels[:kept]], dtype=np.int64)
        data[name] = (torch.from_numpy(coords[:kept]).to(device), torch.from_numpy(y).to(device))
        rows[name] = len(y)
    all_coords = np.concatenate([c for c, _ in splits.values()])
    data["meta"] = {"dir": shown_path(data_dir),
                    "digest": file_digest([os.path.join(data_dir, f) for f in SPLIT_FILES.values()]),
                    "summary": f"{shown_path(data_dir)} ({rows['train']} / {rows['val']} / {rows['test']} "
                               f"rows, {len(classes)} classes)",
                    "rows": rows, "n_classes": len(classes),
                    "class_names": [country_names.get(c, c) for c in classes],
                    "extent": [float(v) for pair in zip(all_coords.min(0), all_coords.max(0)) for v in pair]}
    return data


def load_data(args, device):
    data = read_data(args.data_dir or DEFAULT_DATA, device, args.quick)
    if args.data_dir is None:  # what the study report says the numbers are (data/europe/README.md)
        data["meta"]["stand_in"] = (f"Section 6 on GeoNames cities of {data['meta']['n_classes']} European "
                                    "countries (`data/europe/`)")
    return data


def featurize(X, features, train_X):
    """raw: (long, lat); standardized: by train_X's mean and std; sin: sin(a * x), a in SIN_FREQUENCIES."""
    if features == "raw":
        return X
    if features == "standardized":
        return (X - train_X.mean(0)) / train_X.std(0)
    return torch.sin(X[:, :, None] * torch.tensor(SIN_FREQUENCIES, device=X.device)).flatten(1)


class MLP(nn.Module):
    """`depth` hidden layers of `width` units, Linear -> [BatchNorm1d] -> ReLU, then an output Linear.
    residual, a skip around each hidden layer but the first: 'post' x + ReLU([BN](Linear(x))); 'skipinit' the
    same with ReLU(...) times a learnable scalar from 0 (De & Smith 2020); 'pre' x + Linear(ReLU([BN](x))),
    the output layer on ReLU([BN](x)) (He et al. 2016). init 'he': Kaiming-normal (fan in), zero biases."""

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
        self.final = nn.Sequential(*norm(), act()) if residual == "pre" else nn.Sequential()
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
        return self.out(self.final(x))


def build_model(arch, n_classes):
    n_in = 2 * len(SIN_FREQUENCIES) if arch["features"] == "sin" else 2
    return MLP(n_in, n_classes, **{key: arch[key] for key in ARCH_KEYS if key != "features"})


def load_model(run, n_classes, state):
    model = build_model(run, n_classes)
    model.load_state_dict(state)
    return model.eval()


def grid_points(extent, resolution):
    """The (x, y) points of a resolution^2 grid over extent (x0, x1, y0, y1), row 0 the lowest y."""
    x0, x1, y0, y1 = extent
    xs, ys = torch.linspace(x0, x1, resolution), torch.linspace(y0, y1, resolution)
    return torch.stack([xs.repeat(resolution), ys.repeat_interleave(resolution)], dim=1)


def map_extent(extent):
    """What a prediction map shows: the data's extent (x0, x1, y0, y1) and 3% of it on every side."""
    x0, x1, y0, y1 = extent
    dx, dy = (x1 - x0) * 0.03, (y1 - y0) * 0.03
    return [x0 - dx, x1 + dx, y0 - dy, y1 + dy]


def test_points(data):
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


@torch.no_grad()
def relu_inputs(model, X):
    """Every ReLU's input for the rows of X [N, features], in eval mode: one [N, width] per hidden layer."""
    inputs = []
    hooks = [m.register_forward_hook(lambda m, i, o: inputs.append(i[0]))
             for m in model.modules() if isinstance(m, tuple(ACTIVATIONS.values()))]
    model.eval()
    model(X)
    for hook in hooks:
        hook.remove()
    return inputs


def batch_diagnostics(arch, n_classes, seed, X, y, batch_size):
    """(Each Linear's mean input norm, its ||grad W||_2^2) at init on the run's first batch, in train mode."""
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
    """The runs (each a seed, an lr, maybe a width or features) of one arch in lockstep: (results, states)."""
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
        X_val = inputs["val"][0].expand(len(runs), *inputs["val"][0].shape[-2:])
        record["epoch_measure"] = lambda stacked: epoch_measure(stacked, X_val)
    results, states = train_lockstep(lambda run: build_model(arch_of_run(run), n_classes), runs, inputs,
                                     epochs, batch_size, env.device, quiet=env.quiet, desc=desc, **record)
    for result in results:
        run_arch = arch_of_run(result)
        n_params = sum(p.numel() for p in build_model(run_arch, n_classes).parameters())
        result.update(epochs=epochs, batch_size=batch_size, **run_arch, n_params=n_params)
        if diagnose:
            X, y = featurize(data["train"][0], run_arch["features"], train_X).cpu(), data["train"][1].cpu()
            norms, grads = batch_diagnostics(run_arch, n_classes, result["seed"], X, y, batch_size)
            result.update(init_activation_norm=norms, init_grad_sq_norm=grads)
    return results, states
