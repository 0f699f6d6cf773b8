"""Shared by mlp.py and cnn.py: seeding, devices, atomic result files, the lockstep training
loop with its gradient record, and plotting helpers."""
import argparse
import copy
import hashlib
import json
import math
import os
import platform
import random
import sys
import tempfile
import time
import traceback
import warnings
from typing import Callable, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

import matplotlib

HERE = os.path.dirname(os.path.abspath(__file__))
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402


# ----------------------------------------------------------------------------- errors, seeds, devices

class UserError(Exception):
    """A problem with the user's input or flags: printed as one line, no traceback."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose errors (unknown question, bad value) are one-line UserErrors."""

    def error(self, message):
        raise UserError(f"{message} (see --help)")


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def pick_device(name):
    if name not in ("auto", "cpu", "cuda"):
        raise UserError(f"--device {name}: expected auto, cpu or cuda")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is available here (torch.cuda.is_available() is False); "
                        "use --device cpu")
    device = torch.device("cuda" if name == "cuda" or (name == "auto" and torch.cuda.is_available()) else "cpu")
    if device.type == "cuda":
        # PyTorch's reproducibility notes: deterministic cuBLAS workspace and cuDNN algorithms, a warning for any op
        # without a deterministic kernel; and convolutions in full float32 like the CPU (cuDNN's TF32 is on by default
        # on Ampere and later GPUs; --amp is the fast path).
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.allow_tf32 = False
        torch.use_deterministic_algorithms(True, warn_only=True)
    return device


def device_name(device):
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def library_versions():
    from importlib.metadata import PackageNotFoundError, version
    versions = {"python": platform.python_version()}
    for package in ("torch", "torchvision", "numpy", "matplotlib", "scikit-learn", "xgboost"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = None
    return versions


def file_digest(paths):
    """sha256 over the files' bytes: the identity of a dataset in a cache key."""
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


# ----------------------------------------------------------------------------- atomic result files

def write_atomic(path, write):
    """Call write(tmp_path), then rename onto path: a crash or Ctrl-C never leaves half a file."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600 files
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def save_text(path, text):
    def write(tmp):
        with open(tmp, "w") as f:
            f.write(text)
    write_atomic(path, write)


def save_json(path, obj):
    """Compact JSON (the .md next to it is the readable form); NaN/inf are not allowed: store None."""
    save_text(path, json.dumps(obj, separators=(",", ":"), allow_nan=False) + "\n")


def save_figure(fig, path):
    write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=120, bbox_inches="tight", format="png"))
    plt.close(fig)


def save_torch(path, obj):
    write_atomic(path, lambda tmp: torch.save(obj, tmp))


def shown_path(path):
    """A path as the reports show it: relative to the project when inside it, else its last part only, so that
    results/ reads the same on every machine and names no folder of the machine that made it."""
    relative = os.path.relpath(os.path.abspath(path), HERE)
    if relative.startswith(".."):
        return f"{os.path.basename(os.path.normpath(path))}/ (outside the project)"
    return relative


def finite_or_none(value):
    value = float(value)
    return value if math.isfinite(value) else None


# ----------------------------------------------------------------------------- lockstep training

def linear_weight_names(model):
    """Names of every nn.Linear weight, in module order (layer 0 first)."""
    return [f"{name}.weight" for name, module in model.named_modules() if isinstance(module, nn.Linear)]


def same_shape_groups(tensors, indices):
    """indices into tensors grouped by their tensor's shape: [(columns, group's indices)], columns being the group's
    positions in indices."""
    groups = {}
    for column, i in enumerate(indices):
        columns, members = groups.setdefault(tensors[i].shape, ([], []))
        columns.append(column)
        members.append(i)
    return list(groups.values())


def grad_sq_norms(grads, linear_groups):
    """The gradient hook: ||grad of weight||_2^2 for each Linear layer, per stacked model -> [K, L]. linear_groups:
    same_shape_groups(grads, the Linear weights' indices), so that layers of one shape are squared and summed together
    (3 groups of calls for a depth-100 net, not 100)."""
    first = grads[linear_groups[0][1][0]]
    norms = first.new_empty(len(first), sum(len(columns) for columns, _ in linear_groups))
    for columns, indices in linear_groups:
        norms[:, columns] = torch.stack([grads[i] for i in indices], dim=1).pow(2).sum(dim=(2, 3))
    return norms


def corner(shape):
    """The index of a tensor of this shape's place in the leading corner of a larger one."""
    return tuple(slice(0, n) for n in shape)


def padded(tensor, shape):
    """tensor in the leading corner of a zero tensor of shape (every dimension at least tensor's)."""
    out = tensor.new_zeros(shape)
    out[corner(tensor.shape)] = tensor
    return out


class StackedLinear(nn.Module):
    """K nn.Linear layers called at once: weight [K, out, in] and bias [K, out] (bound by stacked_module),
    x [K, B, in] -> [K, B, out]."""

    def forward(self, x):
        return torch.baddbmm(self.bias.unsqueeze(1), x, self.weight.mT)


class StackedBatchNorm1d(nn.Module):
    """K nn.BatchNorm1d layers of `width` features called at once, as one batch norm over K * width features (each
    feature's statistics are its own, so each model's are too): x [K, B, width]; weight, bias, running_mean and
    running_var [K, width], num_batches_tracked [K] (bound by stacked_module). Under vmap a batch norm costs about 3x
    this on a CPU."""

    def __init__(self, norm):
        super().__init__()
        if not (norm.affine and norm.track_running_stats and norm.momentum is not None):
            raise ValueError(f"{norm}: only affine batch norm with running statistics and a momentum can be stacked")
        self.momentum, self.eps = norm.momentum, norm.eps

    def forward(self, x):
        K, B, width = x.shape
        if self.training:
            self.num_batches_tracked.add_(1)
        flat = F.batch_norm(x.transpose(0, 1).reshape(B, K * width), self.running_mean.view(-1),
                            self.running_var.view(-1), self.weight.view(-1), self.bias.view(-1), self.training,
                            self.momentum, self.eps)
        return flat.view(B, K, width).transpose(0, 1)


ELEMENTWISE = (nn.ReLU, nn.LeakyReLU, nn.Identity)  # act on [K, B, width] as they do on [B, width]
CONTAINERS = (nn.Sequential, nn.ModuleList)


def stacked_module(model, tensors):
    """K copies of model called at once on a stacked input [K, B, features]: a copy of model whose every nn.Linear
    and nn.BatchNorm1d is its stacked form, holding tensors ({name: the K models' tensors stacked} for every entry
    of model's state_dict; used in place, so that training them trains this module). model's own forward must
    combine its submodules' outputs elementwise (as MLP's skips do). The same function as
    vmap(functional_call(model)) with the tensors, with fewer and cheaper calls per step."""
    stacked = copy.deepcopy(model).to("meta")
    for parent in list(stacked.modules()):
        for name, child in parent.named_children():
            if isinstance(child, nn.Linear):
                setattr(parent, name, StackedLinear())
            elif isinstance(child, nn.BatchNorm1d):
                setattr(parent, name, StackedBatchNorm1d(child))
            elif not isinstance(child, ELEMENTWISE + CONTAINERS):
                raise ValueError(f"{type(child).__name__} ({name}): train_lockstep stacks only Linear, BatchNorm1d, "
                                 "ReLU and LeakyReLU layers")
    for name, tensor in tensors.items():
        module_name, _, attribute = name.rpartition(".")
        setattr(stacked.get_submodule(module_name), attribute, tensor)
    return stacked


def train_lockstep(build_model, runs, data, epochs, batch_size, device, record_steps=False, record_grads=False,
                   eval_train=False, quiet=False, desc="train"):
    """Train one model per entry of runs (each a dict with 'seed' and 'lr') in lockstep, with plain SGD
    and cross-entropy, on data = {'train'|'val'|'test': (X, y)} tensors on device.

    Model k is build_model(run_k), built right after seed_everything(seed_k); it has its own learning rate and its
    own shuffling order (a generator seeded with seed_k), so its numbers do not depend on the other models it trains
    beside. The K models' tensors are stacked and called at once through stacked_module; the summed loss gives every
    model exactly its own gradient.

    Models may differ in width: each tensor of a narrower model sits in the leading corner of the widest model's
    tensor, the rest zero and never updated (its learning rate is zero there). That leaves a narrow model's function,
    gradients and batch-norm statistics its own for nets whose units with zero incoming weights, bias and batch-norm
    affine output zero (Linear, BatchNorm1d, ReLU and LeakyReLU nets); the returned state is cropped back to its shape.

    Returns (results, states): per run its history (per epoch: train_loss/train_acc averaged over
    the epoch's batches in train mode, a tie for the top logit counted as correct; val_*, test_* and, with
    eval_train, train_eval_* over the whole split in eval mode; with record_steps, step_loss per optimizer step;
    with record_grads, grad_sq_norm: per epoch, the per-Linear-layer mean over the epoch's steps of ||grad W||_2^2),
    status 'ok' or 'diverged' with diverged_epoch (1-based; later values are None), and its final state_dict on the
    CPU.
    """
    K = len(runs)
    models = []
    for run in runs:
        seed_everything(run["seed"])
        models.append(build_model(run).to(device))
    states = [dict(model.state_dict(keep_vars=False)) for model in models]
    widest = max(range(K), key=lambda k: sum(t.numel() for t in states[k].values()))
    shapes = {name: t.shape for name, t in states[widest].items()}
    for run, state in zip(runs, states):
        if state.keys() != shapes.keys() or any(len(t.shape) != len(shapes[name]) or any(
                a > b for a, b in zip(t.shape, shapes[name])) for name, t in state.items()):
            raise ValueError(f"run {run}: its tensors do not fit in the largest model's; cannot pad it to train beside")
    param_names = [name for name, _ in models[widest].named_parameters()]
    params = {name: torch.stack([padded(state[name].detach(), shapes[name]) for state in states]).requires_grad_()
              for name in param_names}
    buffers = {name: torch.stack([padded(state[name], shapes[name]) for state in states])
               for name in shapes if name not in params}
    plist = list(params.values())
    linear_index = [param_names.index(name) for name in linear_weight_names(models[widest])]
    linear_groups = same_shape_groups(plist, linear_index)  # once per group, not per step
    # minus each model's learning rate, in full shape (a fused update on CUDA), zero where a model is padding
    neg_lrs = [torch.stack([padded(torch.full(state[name].shape, -float(run["lr"]), device=device), shapes[name])
                            for state, run in zip(states, runs)]) for name in param_names]
    own_shapes = [{name: t.shape for name, t in state.items()} for state in states]
    stacked = stacked_module(models[widest], {**params, **buffers})  # x [K, B, features]: each model its own batch
    del models, states

    @torch.no_grad()
    def evaluate(X, y, chunk=4096):
        loss_sum = torch.zeros(K, device=device)
        correct = torch.zeros(K, device=device)
        for start in range(0, len(y), chunk):
            xb, yb = X[start:start + chunk], y[start:start + chunk]
            logits = stacked(xb.expand(K, *xb.shape))  # every model the same inputs
            loss_sum += F.cross_entropy(logits.flatten(0, 1), yb.repeat(K), reduction="none").view(K, -1).sum(1)
            correct += (logits.argmax(-1) == yb).sum(1)
        return loss_sum / len(y), correct / len(y)

    X_train, y_train = data["train"]
    n_train = len(y_train)
    steps = math.ceil(n_train / batch_size)
    if n_train % batch_size == 1 and any(isinstance(m, StackedBatchNorm1d) for m in stacked.modules()):
        steps -= 1  # batch norm cannot train on a last batch of one sample; it is skipped each epoch
        warnings.warn(f"{n_train} training rows leave a last batch of 1 at batch size {batch_size}; "
                      "batch norm cannot use it, so it is skipped every epoch", stacklevel=2)
    generators = [torch.Generator().manual_seed(run["seed"]) for run in runs]
    eval_splits = [("train", "train_eval")] * eval_train + [("val", "val"), ("test", "test")]
    keys = ["train_loss", "train_acc"] + [f"{prefix}_{m}" for _, prefix in eval_splits for m in ("loss", "acc")]
    histories = [{key: [] for key in keys} for _ in runs]
    if record_steps:
        for h in histories:
            h["step_loss"] = []
    if record_grads:
        for h in histories:
            h["grad_sq_norm"] = []
    diverged_epoch = [None] * K

    start_time = time.perf_counter()
    bar = tqdm(total=epochs * steps, desc=desc, unit="step", disable=quiet, mininterval=1.0, dynamic_ncols=True)
    for epoch in range(1, epochs + 1):
        order = torch.stack([torch.randperm(n_train, generator=g) for g in generators]).to(device)
        X_shuffled, y_shuffled = X_train[order], y_train[order]  # [K, N, d], [K, N]
        stacked.train()
        step_loss = torch.empty(steps, K, device=device)
        n_seen = min(steps * batch_size, n_train)
        hits = torch.empty(K, n_seen, dtype=torch.bool, device=device)
        grad_record = torch.empty(steps, K, len(linear_index), device=device) if record_grads else None
        for i in range(steps):
            batch = slice(i * batch_size, (i + 1) * batch_size)
            logits = stacked(X_shuffled[:, batch])
            log_probs = logits.log_softmax(-1)  # F.cross_entropy in its two steps: log_probs serves accuracy too
            sample_loss = F.nll_loss(log_probs.flatten(0, 1), y_shuffled[:, batch].flatten(), reduction="none")
            sample_loss = sample_loss.view(K, -1)
            loss = sample_loss.mean(1)
            grads = torch.autograd.grad(loss.sum(), plist)
            with torch.no_grad():
                torch._foreach_addcmul_(plist, grads, neg_lrs)
                step_loss[i] = loss
                hits[:, batch] = -sample_loss >= log_probs.amax(-1)  # amax: ~20x cheaper than argmax on a CPU
                if record_grads:
                    grad_record[i] = grad_sq_norms(grads, linear_groups)
            bar.update()
        epoch_values = {"train_loss": step_loss.mean(0), "train_acc": hits.sum(1) / n_seen}
        stacked.eval()
        for split, prefix in eval_splits:
            epoch_values[f"{prefix}_loss"], epoch_values[f"{prefix}_acc"] = evaluate(*data[split])
        epoch_values = {key: value.tolist() for key, value in epoch_values.items()}
        step_loss = step_loss.T.tolist()
        grad_means = grad_record.mean(0).tolist() if record_grads else None
        for k, h in enumerate(histories):
            finite = all(math.isfinite(v) for v in step_loss[k]) and math.isfinite(epoch_values["val_loss"][k])
            if diverged_epoch[k] is None and not finite:
                diverged_epoch[k] = epoch
            alive = diverged_epoch[k] is None
            for key in keys:
                h[key].append(finite_or_none(epoch_values[key][k]) if alive else None)
            if record_steps:
                h["step_loss"] += [finite_or_none(float(f"{v:.4g}")) for v in step_loss[k]]
            if record_grads:
                h["grad_sq_norm"].append([finite_or_none(v) for v in grad_means[k]] if alive else None)
        val_acc = [h["val_acc"][-1] for h in histories if h["val_acc"][-1] is not None]
        bar.set_postfix(epoch=epoch, val_acc=f"{np.mean(val_acc):.3f}" if val_acc else "nan")
        if all(d is not None for d in diverged_epoch):  # nothing left to train: fill the remaining epochs
            for h in histories:
                for key in h:
                    h[key] += [None] * ((epochs - epoch) * (steps if key == "step_loss" else 1))
            break
    bar.close()
    wall_s = time.perf_counter() - start_time

    results, states = [], []
    for k, run in enumerate(runs):
        results.append({**run, "status": "ok" if diverged_epoch[k] is None else "diverged",
                        "diverged_epoch": diverged_epoch[k], "steps_per_epoch": steps,
                        "group_wall_s": round(wall_s, 3), "history": histories[k]})
        states.append({name: t[k][corner(own_shapes[k][name])].detach().cpu().clone()
                       for name, t in {**params, **buffers}.items()})
    return results, states


# ----------------------------------------------------------------------------- plotting and tables

def plot_mean_band(ax, x, runs_values, label, color=None, each_seed=False, **kwargs):
    """Mean over seeds as a line, min..max over seeds as a band; with each_seed (for seeds that disagree, where a mean
    would hide a collapsed seed), every seed's own line instead. None (diverged) breaks a line."""
    values = np.array([[np.nan if v is None else v for v in vs] for vs in runs_values], dtype=float)
    if each_seed:
        lines = [ax.plot(x, seed_values, color=color, linewidth=1, linestyle=style, **kwargs)[0]
                 for seed_values, style in zip(values, ["-", "--", ":", "-."] * len(values))]
        lines[0].set_label(f"{label} (each seed: they disagree)")
        return lines[0]
    line, = ax.plot(x, values.mean(0), label=label, color=color, **kwargs)
    if len(values) > 1:
        ax.fill_between(x, values.min(0), values.max(0), color=line.get_color(), alpha=0.2, linewidth=0)
    return line


def markdown_table(header, rows):
    lines = ["| " + " | ".join(str(h) for h in header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def mean_std(values, digits=3):
    """'mean +- std' over seeds; None values (diverged runs) are left out and counted."""
    finite = [v for v in values if v is not None]
    if not finite:
        return "diverged"
    text = f"{np.mean(finite):.{digits}f}"
    if len(finite) > 1:
        text += f" ± {np.std(finite):.{digits}f}"
    if len(finite) < len(values):
        text += f" ({len(values) - len(finite)} diverged)"
    return text


def cielab(rgb):
    """sRGB colors [N, 3] in 0..1 to CIELAB (D65 white), where a Euclidean distance approximates a seen difference."""
    linear = np.where(rgb > 0.04045, ((rgb + 0.055) / 1.055) ** 2.4, rgb / 12.92)
    xyz = linear @ np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]).T
    xyz = xyz / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16 / 116)
    return np.stack([116 * f[:, 1] - 16, 500 * (f[:, 0] - f[:, 1]), 200 * (f[:, 1] - f[:, 2])], axis=1)


def class_colors(n):
    """n RGB colors, one per class id, as far apart to the eye as can be: greedy farthest points in CIELAB among a
    12-level RGB grid, the darkest and lightest left out so that black rings and the map's lines stay visible."""
    levels = np.linspace(0, 1, 12)
    grid = np.stack(np.meshgrid(levels, levels, levels, indexing="ij"), axis=-1).reshape(-1, 3)
    lab = cielab(grid)
    keep = (lab[:, 0] > 35) & (lab[:, 0] < 90)
    grid, lab = grid[keep], lab[keep]
    chosen = [int(np.argmax(np.hypot(lab[:, 1], lab[:, 2])))]  # the most saturated first
    distance = np.linalg.norm(lab - lab[chosen[0]], axis=1)
    while len(chosen) < n:
        chosen.append(int(np.argmax(distance)))
        distance = np.minimum(distance, np.linalg.norm(lab - lab[chosen[-1]], axis=1))
    return grid[chosen]


def prediction_grid(predict, extent, resolution=400, margin=0.03):
    """Predicted class of every cell of a resolution x resolution grid over extent = (x0, x1, y0, y1) plus a
    margin. predict maps an [M, 2] float tensor of (x, y) points to [M] class ids. Row 0 is the lowest y."""
    x0, x1, y0, y1 = extent
    dx, dy = (x1 - x0) * margin, (y1 - y0) * margin
    extent = (x0 - dx, x1 + dx, y0 - dy, y1 + dy)
    xs = torch.linspace(extent[0], extent[1], resolution)
    ys = torch.linspace(extent[2], extent[3], resolution)
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    points = torch.stack([grid_x.flatten(), grid_y.flatten()], dim=1)
    labels = torch.cat([predict(chunk) for chunk in points.split(65536)])
    return labels.view(resolution, resolution).cpu().numpy(), extent


def map_height_ratio(extent):
    """Height over width of a map of extent (degrees) drawn with the longitude/latitude aspect of plot_prediction_map:
    for sizing a figure so that the map fills its panel."""
    return (extent[3] - extent[2]) / (extent[1] - extent[0]) / np.cos(np.radians(np.clip(np.mean(extent[2:]), -80, 80)))


def plot_prediction_map(ax, predict, extent, points, labels, class_names, title, resolution=400, legend=True):
    """The plane colored by predicted class and the given (test) points on top in the color of their true class (the
    same color as that class's area), a black ring around each point the map gets wrong, longitude/latitude aspect so
    the map is not stretched. Returns the grid of predicted classes."""
    grid, extent = prediction_grid(predict, extent, resolution)
    colors = class_colors(len(class_names))
    ax.imshow(colors[grid], origin="lower", extent=extent, interpolation="nearest")
    points, labels = np.asarray(points), np.asarray(labels)
    predicted = predict(torch.as_tensor(points, dtype=torch.float32)).cpu().numpy()
    wrong = predicted != labels
    ax.scatter(points[~wrong, 0], points[~wrong, 1], c=colors[labels[~wrong]], s=5, edgecolors="white",
               linewidths=0.2)
    ax.scatter(points[wrong, 0], points[wrong, 1], c=colors[labels[wrong]], s=14, edgecolors="black", linewidths=0.9,
               label=f"misclassified test point ({wrong.mean():.1%}), in its true class's color")
    ax.set_aspect(1 / np.cos(np.radians(np.clip(np.mean(extent[2:]), -80, 80))))
    ax.set(xlim=extent[:2], ylim=extent[2:], xlabel="longitude (degrees)", ylabel="latitude (degrees)", title=title)
    if legend:
        class_legend(ax, class_names, ax.get_legend_handles_labels()[0])
    return grid


def class_legend(target, class_names, extra_handles=(), **kwargs):
    """The class colors of the prediction maps, on an axes (beside it) or a figure (outside on the right)."""
    colors = class_colors(len(class_names))
    handles = [Patch(color=colors[i], label=name) for i, name in enumerate(class_names)] + list(extra_handles)
    place = dict(loc="outside right upper") if isinstance(target, plt.Figure) else dict(loc="upper left",
                                                                                       bbox_to_anchor=(1.01, 1))
    target.legend(handles=handles, fontsize=7, ncol=1 + len(class_names) // 25, title="class: area predicted, dot true",
                  title_fontsize=7, **place, **kwargs)


# ----------------------------------------------------------------------------- questions and the runner

class Question(NamedTuple):
    """One question of the study. protocol: its settings as the protocol gives them (a flag of the same name
    overrides one); reads: the questions whose results train takes (they run first, through the cache).
    train(settings, data, reads) -> result dict; a 'weights' entry in it is saved to a .pt beside the .json.
    report(result, data) -> Report."""
    name: str
    section: str
    title: str
    protocol: dict
    train: Callable
    report: Callable
    reads: tuple = ()


class Answer(NamedTuple):
    """The reply to one question of the exercise: its number there (6.1.2-1), what it asks, and the reply, every
    sentence of which comes from a finding function that decides its case from the numbers."""
    item: str
    asked: str
    sentences: list


class Report(NamedTuple):
    body: list  # markdown blocks (tables, notes), in order
    figures: dict  # file name -> matplotlib figure
    findings: list  # sentences; every one that says more than a number comes from a tested finding function
    answers: list = []  # Answers, shown first


def show_value(value):
    """A setting as --help and the reports show it."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, list):
        return " ".join(show_value(v) for v in value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def positive(value):
    """The check of a numeric flag: None when every number given is positive, else what is wrong."""
    if (np.asarray(value) > 0).all():
        return None
    return f"values must be positive, got {value}" if isinstance(value, list) else f"must be positive, got {value}"


class Setting(NamedTuple):
    """A flag that overrides the question setting `key` in every question whose protocol has it: --batch-size sets
    batch_size. check(value) -> None, or what is wrong with the value given."""
    key: str
    help: str
    argparse: dict
    show: Callable = show_value
    check: Callable = positive


SHARED_SETTINGS = [Setting("seed", "seed of the first run (numpy and torch seeded before each model is built; "
                                   "also seeds its batch order)", dict(type=int), check=None)]


def data_digest(settings, data):
    return data["meta"]["digest"]


class Script(NamedTuple):
    """What mlp.py or cnn.py hands the runner. load_data(args, device) -> data, a dict whose 'meta' describes the
    data (meta['digest'] names it by content, meta['summary'] is one line for the reports); resolve(settings, quick)
    -> settings: the --quick budget and the checks across settings; inputs(settings, data) -> what identifies a
    question's inputs in its cache key (the data, and any other file its settings name)."""
    name: str  # the results subfolder, and the script file's name without .py
    doc: str
    questions: list
    settings: list
    load_data: Callable
    resolve: Callable
    data_help: str
    add_flags: Callable = None
    inputs: Callable = data_digest


def heading(question):
    return f"{question.section} {question.title}".strip()


def protocol_text(questions, key, show):
    """The protocol's value of a setting in every question that has it, for --help: 'protocol: 0.001', or
    'protocol: q1, q2 50; q3 100' where questions differ."""
    values = {}
    for question in questions:
        if key in question.protocol:
            values.setdefault(show(question.protocol[key]), []).append(question.name)
    if len(values) == 1:
        return f"protocol: {next(iter(values))}"
    return "protocol: " + "; ".join(f"{', '.join(names)} {value}" for value, names in values.items())


def build_parser(script):
    parser = ArgumentParser(description=script.doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    names = [q.name for q in script.questions]
    parser.add_argument("--question", choices=names + ["all"], metavar="QUESTION", nargs="+",
                        help="which question(s): " + "; ".join(f"{q.name} ({heading(q)})" for q in script.questions)
                             + "; or all, in that order. With several, one that fails does not stop the others "
                               "(exit code 1)")
    parser.add_argument("--list", action="store_true", help="print the questions, one per line in order, and exit")
    parser.add_argument("--lanes", type=int, metavar="N",
                        help="print the questions split into N lanes to run side by side, one lane per line, and "
                             "exit: a question shares the lane of the questions it reads, and lanes are balanced by "
                             "each question's wall time saved in OUT")
    parser.add_argument("--data-dir", help=script.data_help)
    parser.add_argument("--out", default="results",
                        help=f"results folder; outputs go to OUT/{script.name}/ (default: results)")
    for setting in SHARED_SETTINGS + script.settings:
        parser.add_argument("--" + setting.key.replace("_", "-"), dest=setting.key, **setting.argparse,
                            help=f"{setting.help} ({protocol_text(script.questions, setting.key, setting.show)})")
    parser.add_argument("--device", default="auto", help="auto (cuda when available), cpu or cuda (default auto)")
    parser.add_argument("--threads", type=int,
                        help="CPU threads of torch, XGBoost and image decoding (default: torch's, every core; "
                             "run_all.sh gives each of its parallel processes its share; see the README)")
    if script.add_flags:
        script.add_flags(parser)
    parser.add_argument("--times", metavar="FILE",
                        help="append a line per question (script/question, wall seconds, ok or failed) to FILE")
    parser.add_argument("--quick", action="store_true",
                        help="a tiny budget (small data, few epochs) for tests; never for results/")
    parser.add_argument("--force", action="store_true", help="retrain even if a saved result has the same settings")
    parser.add_argument("--replot", action="store_true",
                        help="redraw figures and tables from the saved .json (and .pt), no training")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    return parser


def parse_args(script, argv):
    args = build_parser(script).parse_args(argv)
    for setting in SHARED_SETTINGS + script.settings:
        value = getattr(args, setting.key)
        problem = setting.check(value) if setting.check and value is not None else None
        if problem:
            raise UserError(f"--{setting.key.replace('_', '-')} {problem}")
    for flag, value in (("--threads", args.threads), ("--lanes", args.lanes)):
        if value is not None and value < 1:
            raise UserError(f"{flag} must be positive, got {value}")
    if args.question is None and not (args.list or args.lanes):
        raise UserError("--question is required (or --list, --lanes N)")
    return args


def resolve_settings(script, question, args):
    """A question's settings, resolved once: its protocol, the flags the user set on top, then the script's
    resolve (the --quick budget, checks across settings)."""
    settings = dict(question.protocol)
    for setting in SHARED_SETTINGS + script.settings:
        value = getattr(args, setting.key)
        if value is not None and setting.key in settings:
            settings[setting.key] = value
    return script.resolve(settings, args.quick)


def code_digest(script_name):
    """sha256 of the script's and common.py's source: part of every cache key, so that a result is never reused
    once the code that made it has changed."""
    return file_digest([os.path.join(HERE, f"{script_name}.py"), os.path.join(HERE, "common.py")])


def read_weights(path):
    """(config, weights) from a .pt written beside a result; weights_only=True, so a file from elsewhere cannot run
    code when it is read."""
    saved = torch.load(path, map_location="cpu", weights_only=True)
    return saved["config"], saved["weights"]


def load_cached(path, config):
    """The saved result at path (with its weights) if it was made with exactly this config, else None. A file that
    does not parse is reported and ignored (it will be recomputed)."""
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            result = json.load(f)
    except (OSError, ValueError) as e:
        warnings.warn(f"{path}: unreadable cache ({e}); recomputing", stacklevel=2)
        return None
    if result.get("config") != config:
        return None
    if "weights_file" in result:
        weights_path = os.path.join(os.path.dirname(path), result["weights_file"])
        try:
            saved_config, result["weights"] = read_weights(weights_path)
        except Exception:  # missing, truncated or foreign: torch raises several types; retrain
            return None
        if saved_config != config:
            return None
    return result


def load_result(path):
    """The saved result (with its weights) for --replot; a missing or broken file is a UserError."""
    try:
        with open(path) as f:
            result = json.load(f)
    except FileNotFoundError:
        raise UserError(f"{path}: no saved result to replot; run the question without --replot first") from None
    except ValueError as e:
        raise UserError(f"{path}: not valid JSON ({e}); rerun the question with --force") from None
    if "weights_file" in result:
        weights_path = os.path.join(os.path.dirname(path), result["weights_file"])
        try:
            _, result["weights"] = read_weights(weights_path)
        except FileNotFoundError:
            raise UserError(f"{weights_path}: no saved models; run the question without --replot first") from None
        except Exception as e:  # a truncated or foreign file: torch raises several types
            reason = (str(e).strip().splitlines() or [""])[0].split(". ")[0]
            raise UserError(f"{weights_path}: unreadable saved models ({type(e).__name__}: {reason}); rerun the "
                            "question with --force") from None
    return result


def get_result(script, question, args, data, device, reads, force):
    """The question's saved result if its config (settings, data, code, device, what it reads) matches, else train
    it and save it: .json, and .pt for its weights."""
    settings = resolve_settings(script, question, args)
    config = {"question": question.name, "settings": settings, "data": script.inputs(settings, data),
              "code": code_digest(script.name), "device": device.type, "quick": args.quick,
              "reads": {name: result["config"] for name, result in reads.items()}}
    path = os.path.join(args.out, script.name, f"{question.name}.json")
    cached = None if force else load_cached(path, config)
    if cached is not None:
        print(f"{question.name}: reusing {path} (same settings, data and code; --force retrains)")
        return cached
    start = time.perf_counter()
    trained = question.train(settings, data, reads)
    weights = trained.pop("weights", None)
    result = {"question": question.name, "section": question.section, "title": question.title, "config": config,
              "settings": settings, "data": data["meta"], "versions": library_versions(),
              "device": device_name(device), "wall_s": round(time.perf_counter() - start, 2), **trained}
    if weights is not None:
        result["weights_file"] = f"{question.name}.pt"
        save_torch(os.path.join(os.path.dirname(path), result["weights_file"]), {"config": config, "weights": weights})
    save_json(path, result)
    return {**result, "weights": weights}


def answer_text(answer):
    """An answer's sentences as one paragraph."""
    return " ".join(s for s in answer.sentences if s)


def write_question_markdown(path, title, settings_rows, body, figures, findings, answers=()):
    """A question's .md: the answers to the exercise's questions, figure links, results (tables and text), findings,
    settings."""
    lines = [f"# {title}\n"]
    for answer in answers:
        lines += [f"## {answer.item}: {answer.asked}\n", f"**Answer.** {answer_text(answer)}\n"]
    lines += [*[f"![{os.path.splitext(figure)[0]}]({figure})\n" for figure in figures], "## Results\n", *body]
    if findings:
        lines += ["\n## Findings\n", *[f"- {finding}" for finding in findings]]
    lines += ["\n## Settings\n", markdown_table(["setting", "value"], settings_rows)]
    save_text(path, "\n".join(lines) + "\n")


def write_report(script, question, result, data, out_dir):
    """Draw the question's figures and write its .md; returns the findings."""
    report = question.report(result, data)
    for file, fig in report.figures.items():
        save_figure(fig, os.path.join(out_dir, file))
    show = {setting.key: setting.show for setting in SHARED_SETTINGS + script.settings}
    rows = [(key, show.get(key, show_value)(value)) for key, value in result["settings"].items()] + [
        ("data", result["data"]["summary"]), ("device", result["device"]), ("wall time", f"{result['wall_s']:.1f} s"),
        ("versions", ", ".join(f"{k} {v}" for k, v in result["versions"].items()))]
    write_question_markdown(os.path.join(out_dir, f"{question.name}.md"), heading(question), rows,
                            [block + "\n" for block in report.body], list(report.figures), report.findings,
                            report.answers)
    return [answer_text(answer) for answer in report.answers] + report.findings


def saved_seconds(path):
    """The wall time saved in a result file, or None."""
    try:
        with open(path) as f:
            return json.load(f)["wall_s"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def plan_lanes(questions, n_lanes, seconds):
    """Split questions into at most n_lanes lanes to run side by side. A question joins the lane of the questions it
    reads, which run before it; the groups so formed go, longest first, to the lane with the least work so far.
    seconds: name -> expected wall time (None: unknown, counted as the mean of the known, or 1)."""
    order = {q.name: i for i, q in enumerate(questions)}
    groups = []
    for question in questions:
        touching = [g for g in groups if set(g) & set(question.reads)]
        groups = [g for g in groups if g not in touching] + [[n for g in touching for n in g] + [question.name]]
    known = [s for s in seconds.values() if s is not None]
    default = float(np.mean(known)) if known else 1.0
    cost = {name: default if seconds.get(name) is None else seconds[name] for name in order}
    lanes, load = [[] for _ in range(n_lanes)], [0.0] * n_lanes
    for group in sorted(groups, key=lambda g: -sum(cost[n] for n in g)):
        lane = load.index(min(load))
        lanes[lane] += group
        load[lane] += sum(cost[n] for n in group)
    return [sorted(lane, key=order.get) for lane in lanes if lane]


def with_reads(questions, names):
    """names and every question they read, each once, in the questions' order."""
    by_name = {q.name: q for q in questions}
    needed, todo = set(), list(names)
    while todo:
        name = todo.pop()
        if name not in needed:
            needed.add(name)
            todo += by_name[name].reads
    return [q.name for q in questions if q.name in needed]


def run(script, args):
    """--list, --lanes, or the questions asked (with what they read) through the cache, then their reports.
    Returns the questions that failed."""
    out_dir = os.path.join(args.out, script.name)
    by_name = {q.name: q for q in script.questions}
    if args.list:
        print("\n".join(by_name))
        return []
    if args.lanes:
        seconds = {name: saved_seconds(os.path.join(out_dir, f"{name}.json")) for name in by_name}
        print("\n".join(" ".join(lane) for lane in plan_lanes(script.questions, args.lanes, seconds)))
        return []
    names = list(by_name) if "all" in args.question else list(dict.fromkeys(args.question))
    for name in with_reads(script.questions, names):  # bad flags fail here, before any data is read
        resolve_settings(script, by_name[name], args)
    device = pick_device(args.device)
    if args.threads:  # on a GPU too: the CPU ops around it and parallel lanes share the machine's cores
        torch.set_num_threads(args.threads)
    data = script.load_data(args, device)
    results, failed = {}, []

    def result_of(name, force=False):  # each question once per process; what it reads first
        if name not in results:
            question = by_name[name]
            reads = {read: result_of(read) for read in question.reads}
            results[name] = get_result(script, question, args, data, device, reads, force)
        return results[name]

    for name in names:
        start = time.perf_counter()
        try:
            if args.replot:
                result = load_result(os.path.join(out_dir, f"{name}.json"))
            else:
                result = result_of(name, force=args.force)
            findings = write_report(script, by_name[name], result, data, out_dir)
            print("\n".join([f"{name}: wrote {os.path.join(out_dir, name)}.{{md,json}} and its figures"]
                            + [f"  {finding}" for finding in findings]), flush=True)
        except Exception as e:
            if len(names) == 1 or isinstance(e, UserError):
                raise
            traceback.print_exc()  # one question's bug does not stop the others
            print(f"{name}: failed", flush=True)
            failed.append(name)
        if args.times:
            with open(args.times, "a") as f:
                f.write(f"{script.name}/{name}\t{time.perf_counter() - start:.1f}\t"
                        f"{'failed' if name in failed else 'ok'}\n")
    return failed


def main(script, argv=None):
    """The command line of mlp.py and cnn.py. An error in the user's input (a UserError) is one line on stderr and
    exit code 2; --debug shows the traceback."""
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    try:
        failed = run(script, parse_args(script, argv))
    except UserError as e:
        if "--debug" in argv:
            raise
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        sys.exit(1)


# ----------------------------------------------------------------------------- the study report (run_all.sh)

def git_commit(out):
    """The commit the code ran from, and whether tracked files other than results (the project's results/ folder and
    out, the one being written) differ from it."""
    import subprocess
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                                cwd=HERE).stdout.strip()
        out = os.path.relpath(os.path.abspath(out), HERE)
        results = ["--", ".", ":(exclude)results"] + ([f":(exclude){out}"] if not out.startswith("..") else [])
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", *results],
                               capture_output=True, text=True, check=True, cwd=HERE).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit + (" (with uncommitted changes)" if dirty else "")


def section_text(out, key, seconds):
    """A question's own .md, headings one level down and figure links relative to out/."""
    folder, question = key.split("/")
    path = os.path.join(out, folder, f"{question}.md")
    if not os.path.exists(path):
        return f"## {key}\n\nNo result: the question failed or was not run (see run_all.sh's output).\n"
    lines = []
    for line in open(path).read().splitlines():
        if line.startswith("#"):
            line = "#" + line
        if line.startswith("!["):
            line = line.replace("](", f"]({folder}/", 1)
        lines.append(line)
    lines.insert(1, f"\n*`python {folder}.py --question {question}`; wall time in this run: "
                    f"{seconds if seconds is not None else '?'} s.*")
    return "\n".join(lines) + "\n"


def lanes_sentence(lanes):
    """How run_all.sh ran the questions: lanes, one per process, each the script then the questions it ran in turn."""
    if len(lanes) < 2:
        return "The questions ran one after another, so their times add up to the total."
    return (f"The questions ran in {len(lanes)} processes side by side ("
            + "; ".join(f"{script}.py: {', '.join(questions)}" for script, *questions in lanes)
            + "), so their times add up to more than the total.")


def stand_in_note(data, image_size):
    """The warning at the top of the report when a section ran on the embedded data, named from what ran."""
    parts = []  # a section counts only if it has results in this folder (a --section 6 run has none for Section 7)
    if data["mlp"]["source"] == "embedded" and data["mlp"]["dir"]:
        classes = data["mlp"]["classes"]
        parts.append("Section 6 on GeoNames cities" + (f" of {classes} European countries" if classes else "")
                     + " (`data/europe/`)")
    if data["cnn"]["source"] == "embedded" and data["cnn"]["dir"]:
        parts.append("Section 7 on a generated real-vs-fake image set (photographs vs. the same photographs through a "
                     f"simulated generator's upsampling, {image_size} px)")
    if not parts:
        return None
    return (f"> **Stand-in data.** {' and '.join(parts)}: the data embedded in the project, not the course's. The "
            "numbers answer the same questions but are not the report's. To run the course data: `bash run_all.sh "
            "--mlp-data PATH/TO/COURSE_CSVS --cnn-data DIR` (the course's train.csv, validation.csv and test.csv; DIR: "
            "an ImageFolder with train/, val/, test/).\n")


def data_cell(info):
    """The manifest's line for a section's data: 'embedded: data/europe (train N, ...)', or the folder alone."""
    if not info["dir"]:
        return "no result in this folder"
    rows_text = ", ".join(f"{split} {n:,}" for split, n in (info["rows"] or {}).items())
    return (f"embedded: {info['dir']}" if info["source"] == "embedded" else info["dir"]) + f" ({rows_text})"


def write_study_report(out, scripts, times, lanes, total, seeds, mlp_data, cnn_data, image_size):
    """results/README.md and results/manifest.json from the saved per-question files and run_all's timings.
    scripts: the script modules, whose questions give the report's order; times: (key, seconds, status) rows;
    lanes: the processes run side by side, each a list: the script, then the questions it ran."""
    import importlib
    questions = [f"{name}/{q.name}" for name in scripts for q in importlib.import_module(name).SCRIPT.questions
                 if os.path.isdir(os.path.join(out, name))]  # a section never run into out is left out
    wall = {key: float(seconds) for key, seconds, _ in times}
    status = {key: state for key, _, state in times}
    results = {}
    for key in questions:
        try:
            with open(os.path.join(out, f"{key}.json")) as f:
                results[key] = json.load(f)
        except (OSError, ValueError):
            pass
    for key, result in results.items():  # a question that ran but whose models could not run is not "ok"
        if status.get(key) == "ok" and result.get("models") and all(m["status"] == "not run" for m in result["models"]):
            status[key] = "not run"
    devices = sorted({r["device"] for r in results.values() if "device" in r})
    data = {}
    for section, source in (("mlp", mlp_data), ("cnn", cnn_data)):
        meta = next((r["data"] for k, r in results.items() if k.startswith(section) and "data" in r), None)
        data[section] = {"source": source if source == "embedded" else shown_path(source),
                         "dir": meta["dir"] if meta else None,
                         "rows": meta["rows"] if meta else None, "classes": meta.get("n_classes") if meta else None}
    manifest = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "git_commit": git_commit(out), "seeds": seeds,
                "devices": devices, "versions": library_versions(), "data": data, "cnn_image_size": image_size,
                "total_wall_s": total, "questions": wall, "status": status, "lanes": lanes}
    save_json(os.path.join(out, "manifest.json"), manifest)

    lines = ["# The study, answered\n",
             "Generated by `bash run_all.sh` from the files in this folder; do not edit by hand.\n"]
    note = stand_in_note(data, image_size)
    if note:
        lines.append(note)
    failed = [k for k, v in status.items() if v == "failed"]
    if failed:
        lines.append(f"> **Failed in this run:** {', '.join(failed)}. Their sections below are missing or stale.\n")
    rows = [("date", manifest["date"]), ("git commit", manifest["git_commit"]), ("seeds", seeds),
            ("device", ", ".join(devices)), ("total wall time", f"{total:.0f} s")]
    rows += [(f"{section} data", data_cell(info)) for section, info in data.items()]
    rows += [(package, version) for package, version in manifest["versions"].items()]
    lines += ["## Manifest\n", markdown_table(["", ""], rows), lanes_sentence(lanes) + "\n",
              markdown_table(["question", "wall time in this run (s)", "status"],
                             [(k, f"{wall[k]:.1f}", status[k]) for k in questions if k in wall])]
    lines += [section_text(out, key, wall.get(key)) for key in questions]
    save_text(os.path.join(out, "README.md"), "\n".join(lines))


if __name__ == "__main__":
    parser = ArgumentParser(description="Write results/README.md and manifest.json (called by run_all.sh).")
    parser.add_argument("command", choices=["report"])
    parser.add_argument("--out", required=True, help="results folder")
    parser.add_argument("--scripts", required=True, nargs="+", help="the scripts, whose questions the report shows")
    parser.add_argument("--times", required=True, help="the tab-separated file of --times: question, seconds, status")
    parser.add_argument("--lanes", required=True,
                        help="the processes run side by side, one line each: the script, then its questions")
    parser.add_argument("--total", type=float, required=True, help="total wall seconds")
    parser.add_argument("--seeds", type=int, required=True)
    parser.add_argument("--mlp-data", required=True, help="'embedded' or the Section 6 folder")
    parser.add_argument("--cnn-data", required=True, help="'embedded' or the Section 7 folder")
    parser.add_argument("--image-size", type=int, required=True)
    cli = parser.parse_args()
    with open(cli.times) as f:
        timings = [line.rstrip("\n").split("\t") for line in f if line.strip()]
    with open(cli.lanes) as f:
        lanes_run = [line.split() for line in f if line.strip()]
    write_study_report(cli.out, cli.scripts, timings, lanes_run, cli.total, cli.seeds, cli.mlp_data, cli.cnn_data,
                       cli.image_size)
