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
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, stack_module_state, vmap
from tqdm import tqdm

import matplotlib

HERE = os.path.dirname(os.path.abspath(__file__))
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.colors import hsv_to_rgb  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402


# ----------------------------------------------------------------------------- errors, seeds, devices

class UserError(Exception):
    """A problem with the user's input or flags: printed as one line, no traceback."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose errors (unknown question, bad value) are one-line UserErrors."""

    def error(self, message):
        raise UserError(f"{message} (see --help)")


def run_main(main, argv=None):
    """Run main(argv); a UserError becomes one line on stderr and exit code 2 (a traceback with --debug)."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        main(argv)
    except UserError as e:
        if "--debug" in argv:
            raise
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


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
        # PyTorch's reproducibility notes: deterministic cuBLAS workspace and cuDNN algorithms.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    return device


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


def load_cached(path, config):
    """The saved result at path if it was made with exactly this config, else None.
    A file that does not parse is reported and ignored (it will be recomputed)."""
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            result = json.load(f)
    except (OSError, ValueError) as e:
        warnings.warn(f"{path}: unreadable cache ({e}); recomputing", stacklevel=2)
        return None
    return result if result.get("config") == config else None


def load_result(path):
    """The saved result for --replot; a missing or broken file is a UserError."""
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise UserError(f"{path}: no saved result to replot; run the question without --replot first") from None
    except ValueError as e:
        raise UserError(f"{path}: not valid JSON ({e}); rerun the question with --force") from None


def shown_path(path):
    """A path as the reports show it: relative to the project when inside it, so results/ reads the same on
    every machine."""
    relative = os.path.relpath(os.path.abspath(path), HERE)
    return path if relative.startswith("..") else relative


def finite_or_none(value):
    value = float(value)
    return value if math.isfinite(value) else None


# ----------------------------------------------------------------------------- lockstep training

def linear_weight_names(model):
    """Names of every nn.Linear weight, in module order (layer 0 first)."""
    return [f"{name}.weight" for name, module in model.named_modules() if isinstance(module, nn.Linear)]


def grad_sq_norms(grads, linear_index):
    """The gradient hook: ||grad of weight||_2^2 for each Linear layer (grads[i] for i in linear_index), per
    stacked model -> [K, L]."""
    return torch.stack([grads[i].pow(2).sum(dim=(1, 2)) for i in linear_index], dim=1)


def train_lockstep(build_model, runs, data, epochs, batch_size, device, record_steps=False, record_grads=False,
                   eval_train=False, quiet=False, desc="train"):
    """Train one model per entry of runs (each a dict with 'seed' and 'lr') in lockstep, with plain SGD
    and cross-entropy, on data = {'train'|'val'|'test': (X, y)} tensors on device.

    Model k is built right after seed_everything(seed_k), has its own learning rate and its own
    shuffling order (a generator seeded with seed_k), so its numbers do not depend on the other
    models it trains beside. The K models are stacked with torch.func and called through vmap;
    the summed loss gives every model exactly its own gradient.

    Returns (results, states): per run its history (per epoch: train_loss/train_acc averaged over
    the epoch's batches in train mode; val_*, test_* and, with eval_train, train_eval_* over the
    whole split in eval mode; with record_steps, step_loss per optimizer step; with record_grads,
    grad_sq_norm: per epoch, the per-Linear-layer mean over the epoch's steps of ||grad W||_2^2),
    status 'ok' or 'diverged' with diverged_epoch (1-based; later values are None), and its final
    state_dict on the CPU.
    """
    K = len(runs)
    models = []
    for run in runs:
        seed_everything(run["seed"])
        models.append(build_model().to(device))
    params, buffers = stack_module_state(models)
    plist = list(params.values())
    base = copy.deepcopy(models[0]).to("meta")
    linear_index = [list(params).index(name) for name in linear_weight_names(base)]
    lrs = torch.tensor([float(run["lr"]) for run in runs], device=device)
    lr_views = [lrs.view(-1, *[1] * (p.dim() - 1)) for p in plist]

    def call(p, b, x):
        return functional_call(base, (p, b), (x,), tie_weights=False)  # no tied weights here; skips a per-call scan
    forward_train = vmap(call)  # each model its own batch
    forward_eval = vmap(call, in_dims=(0, 0, None))  # every model the same inputs

    @torch.no_grad()
    def evaluate(X, y, chunk=4096):
        loss_sum = torch.zeros(K, device=device)
        correct = torch.zeros(K, device=device)
        for start in range(0, len(y), chunk):
            xb, yb = X[start:start + chunk], y[start:start + chunk]
            logits = forward_eval(params, buffers, xb)
            loss_sum += F.cross_entropy(logits.flatten(0, 1), yb.repeat(K), reduction="none").view(K, -1).sum(1)
            correct += (logits.argmax(-1) == yb).sum(1)
        return loss_sum / len(y), correct / len(y)

    X_train, y_train = data["train"]
    n_train = len(y_train)
    steps = math.ceil(n_train / batch_size)
    if n_train % batch_size == 1 and any(isinstance(m, nn.BatchNorm1d) for m in base.modules()):
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
        base.train()
        step_loss = torch.empty(steps, K, device=device)
        correct = torch.zeros(K, device=device)
        grad_record = torch.empty(steps, K, len(linear_index), device=device) if record_grads else None
        for i in range(steps):
            xb = X_shuffled[:, i * batch_size:(i + 1) * batch_size]
            yb = y_shuffled[:, i * batch_size:(i + 1) * batch_size]
            logits = forward_train(params, buffers, xb)
            loss = F.cross_entropy(logits.flatten(0, 1), yb.flatten(), reduction="none").view(K, -1).mean(1)
            grads = torch.autograd.grad(loss.sum(), plist)
            with torch.no_grad():
                torch._foreach_sub_(plist, torch._foreach_mul(grads, lr_views))
                step_loss[i] = loss
                correct += (logits.argmax(-1) == yb).sum(1)
                if record_grads:
                    grad_record[i] = grad_sq_norms(grads, linear_index)
            bar.update()
        n_seen = min(steps * batch_size, n_train)
        epoch_values = {"train_loss": step_loss.mean(0), "train_acc": correct / n_seen}
        base.eval()
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
        states.append({n: t[k].detach().cpu().clone() for n, t in {**params, **buffers}.items()})
    return results, states


# ----------------------------------------------------------------------------- plotting and tables

def plot_mean_band(ax, x, runs_values, label, color=None, **kwargs):
    """Mean over seeds as a line, min..max over seeds as a band. None (diverged) breaks the line."""
    values = np.array([[np.nan if v is None else v for v in vs] for vs in runs_values], dtype=float)
    mean = values.mean(0)
    line, = ax.plot(x, mean, label=label, color=color, **kwargs)
    if len(values) > 1:
        ax.fill_between(x, values.min(0), values.max(0), color=line.get_color(), alpha=0.2, linewidth=0)
    return line


def write_question_markdown(path, title, settings_rows, body, figures, observations):
    """A question's .md: settings table, results (tables and text), figure links, observations."""
    lines = [f"# {title}\n", "## Settings\n", markdown_table(["setting", "value"], settings_rows), "\n## Results\n",
             *body, *[f"![{os.path.splitext(figure)[0]}]({figure})\n" for figure in figures], "\n## Observations\n",
             *[f"- {obs}" for obs in observations]]
    save_text(path, "\n".join(lines) + "\n")


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


def class_colors(n):
    """n distinct RGB colors, one per class id: hues stepped by the golden ratio (so ids that are close get
    far-apart hues) over three lightness levels, so that 30-60 classes stay tellable apart."""
    hues = (np.arange(n) * 0.618033988749895) % 1.0
    levels = [(0.85, 0.95), (0.55, 0.80), (0.95, 0.60)]  # (saturation, value)
    hsv = np.array([(h, *levels[i % 3]) for i, h in enumerate(hues)])
    return hsv_to_rgb(hsv)


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


def plot_prediction_map(ax, predict, extent, points, labels, class_names, title, resolution=400, legend=True):
    """The plane colored by predicted class, the given (test) points on top colored by their true class,
    longitude/latitude aspect so the map is not stretched, one fixed color per class id."""
    grid, extent = prediction_grid(predict, extent, resolution)
    colors = class_colors(len(class_names))
    ax.imshow(colors[grid], origin="lower", extent=extent, interpolation="nearest", alpha=0.55)
    points = np.asarray(points)
    ax.scatter(points[:, 0], points[:, 1], c=colors[np.asarray(labels)], s=4, edgecolors="black", linewidths=0.15)
    ax.set_aspect(1 / np.cos(np.radians(np.clip(np.mean(extent[2:]), -80, 80))))
    ax.set(xlim=extent[:2], ylim=extent[2:], xlabel="longitude (degrees)", ylabel="latitude (degrees)", title=title)
    if legend:
        handles = [Patch(color=colors[i], label=name) for i, name in enumerate(class_names)]
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=7,
                  ncol=1 + len(class_names) // 25, title="true class (points) / predicted (area)", title_fontsize=7)
    return grid


# ----------------------------------------------------------------------------- the study report (run_all.sh)

REPORT_SECTIONS = [  # (results subfolder, question), in SPEC.md's order
    ("mlp", "lr"), ("mlp", "epochs"), ("mlp", "batchnorm"), ("mlp", "batch_size"), ("mlp", "depth_width"),
    ("mlp", "gradients"), ("mlp", "residual"), ("mlp", "implicit"), ("mlp", "regions"),
    ("cnn", "xgb"), ("cnn", "scratch"), ("cnn", "linear_probe"), ("cnn", "sklearn_probe"), ("cnn", "finetune"),
    ("cnn", "summary"), ("cnn", "mistakes")]


def git_commit():
    import subprocess
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit + (" (with uncommitted changes)" if dirty else "")


def section_text(out, folder, question, seconds):
    """A question's own .md, headings one level down and figure links relative to out/."""
    path = os.path.join(out, folder, f"{question}.md")
    if not os.path.exists(path):
        return f"## {folder}/{question}\n\nNo result: the question failed or was not run (see run_all.sh's output).\n"
    lines = []
    for line in open(path).read().splitlines():
        if line.startswith("#"):
            line = "#" + line
        if line.startswith("!["):
            line = line.replace("](", f"]({folder}/", 1)
        lines.append(line)
    lines.insert(1, f"\n*`{folder}.py --question {question}`; wall time in this run: "
                    f"{seconds if seconds is not None else '?'} s.*")
    return "\n".join(lines) + "\n"


def write_study_report(out, times, total, seeds, mlp_data, cnn_data, image_size):
    """results/README.md and results/manifest.json from the saved per-question files and run_all's timings."""
    wall = {key: float(seconds) for key, seconds, _ in times}
    status = {key: state for key, _, state in times}
    results = {}
    for folder, question in REPORT_SECTIONS:
        try:
            with open(os.path.join(out, folder, f"{question}.json")) as f:
                results[f"{folder}/{question}"] = json.load(f)
        except (OSError, ValueError):
            pass
    devices = sorted({r["device"] for r in results.values() if "device" in r})
    data = {}
    for section in ("mlp", "cnn"):
        source = next((r["data"] for k, r in results.items() if k.startswith(section) and "data" in r), None)
        images = source.get("images", {}) if source else {}
        rows = (source.get("rows") or {split: sum(counts.values()) for split, counts in images.items()}
                if source else None)
        data[section] = {"source": mlp_data if section == "mlp" else cnn_data,
                         "dir": shown_path(source["dir"]) if source else None, "rows": rows}
    manifest = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "git_commit": git_commit(), "seeds": seeds,
                "devices": devices, "versions": library_versions(), "data": data, "cnn_image_size": image_size,
                "total_wall_s": total, "questions": wall, "status": status}
    save_json(os.path.join(out, "manifest.json"), manifest)

    embedded = [name for name, source in (("Section 6", mlp_data), ("Section 7", cnn_data)) if source == "embedded"]
    lines = ["# The study, answered\n",
             "Generated by `bash run_all.sh` from the files in this folder; do not edit by hand.\n"]
    if embedded:
        lines.append(f"> **Stand-in data.** {' and '.join(embedded)} ran on the data embedded in the project, not "
                     "on the course's: Section 6 on GeoNames cities of 39 European countries (`data/europe/`), "
                     "Section 7 on a generated real-vs-fake image set (photographs vs. the same photographs through a "
                     f"simulated generator's upsampling, {image_size} px). The numbers answer the same questions but "
                     "are not the report's. To run the course data: `bash run_all.sh --mlp-data "
                     "../shared/data/europe-course --cnn-data DIR` (DIR: an ImageFolder with train/, val/, test/).\n")
    failed = [k for k, v in status.items() if v != "ok"]
    if failed:
        lines.append(f"> **Failed in this run:** {', '.join(failed)}. Their sections below are missing or stale.\n")
    rows = [("date", manifest["date"]), ("git commit", manifest["git_commit"]), ("seeds", seeds),
            ("device", ", ".join(devices)), ("total wall time", f"{total:.0f} s")]
    for section, info in data.items():
        rows_text = ", ".join(f"{split} {n:,}" for split, n in (info["rows"] or {}).items())
        rows.append((f"{section} data", f"{info['source']}: {info['dir']} ({rows_text})"))
    rows += [(package, version) for package, version in manifest["versions"].items()]
    lines += ["## Manifest\n", markdown_table(["", ""], rows),
              "Section 6's questions ran in parallel lanes, so their times add up to more than the total.\n",
              markdown_table(["question", "wall time in this run (s)", "status"],
                             [(k, f"{wall[k]:.1f}", status[k]) for k in wall])]
    for folder, question in REPORT_SECTIONS:
        lines.append(section_text(out, folder, question, wall.get(f"{folder}/{question}")))
    save_text(os.path.join(out, "README.md"), "\n".join(lines))


if __name__ == "__main__":
    parser = ArgumentParser(description="Write results/README.md and manifest.json (called by run_all.sh).")
    parser.add_argument("command", choices=["report"])
    parser.add_argument("--out", required=True, help="results folder")
    parser.add_argument("--times", required=True, help="run_all.sh's tab-separated question, seconds, status file")
    parser.add_argument("--total", type=float, required=True, help="total wall seconds")
    parser.add_argument("--seeds", type=int, required=True)
    parser.add_argument("--mlp-data", required=True, help="'embedded' or the Section 6 folder")
    parser.add_argument("--cnn-data", required=True, help="'embedded' or the Section 7 folder")
    parser.add_argument("--image-size", type=int, required=True)
    cli = parser.parse_args()
    with open(cli.times) as f:
        timings = [line.rstrip("\n").split("\t") for line in f if line.strip()]
    write_study_report(cli.out, timings, cli.total, cli.seeds, cli.mlp_data, cli.cnn_data, cli.image_size)
