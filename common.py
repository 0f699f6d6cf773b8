"""What mlp.py and cnn.py train with: seeds, devices, atomic result files and the lockstep training loop."""
import copy
import hashlib
import json
import math
import os
import pathlib
import platform
import random
import re
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

HERE = os.path.dirname(os.path.abspath(__file__))


class UserError(Exception):
    """A problem with the user's input or flags: printed as one line, no traceback."""


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def pick_device(name):
    if name not in ("auto", "cpu", "cuda"):
        raise UserError(f"--device {name}: expected auto, cpu or cuda")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is available here; use --device cpu")
    cuda = name == "cuda" or (name == "auto" and torch.cuda.is_available())
    if cuda:
        # PyTorch's reproducibility notes; convolutions in float32 as on the CPU, not TF32 (--amp is fast)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.allow_tf32 = False
        torch.use_deterministic_algorithms(True, warn_only=True)
    return torch.device("cuda" if cuda else "cpu")


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
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def write_atomic(path, write):
    """write(tmp), then rename onto path: a crash never leaves half a file. tmp is .NAME.PID.RANDOM.tmp."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.{os.getpid()}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600 files
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def writer_alive(pid):
    try:
        os.kill(pid, 0)
    except OSError as error:  # ProcessLookupError: no such process; PermissionError: another user's, alive
        return isinstance(error, PermissionError)
    return True


def remove_stale_temporaries(folder):
    """Remove what a killed write_atomic left (kill -9 skips its cleanup), not a live writer's: the names."""
    removed = []
    for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        match = re.fullmatch(r"\..+?(?:\.(\d+))?\.\w+\.tmp", name)
        if match and not (match[1] and writer_alive(int(match[1]))):
            os.remove(os.path.join(folder, name))
            removed.append(name)
    return removed


def save_text(path, text):
    write_atomic(path, lambda tmp: pathlib.Path(tmp).write_text(text))


def save_json(path, obj):
    """Compact JSON (the .md next to it is the readable form); NaN/inf are not allowed: store None."""
    save_text(path, json.dumps(obj, separators=(",", ":"), allow_nan=False) + "\n")


def rounded(obj, digits=9):
    """obj with every float rounded to `digits` significant digits: 9 keep a float32 exact, in less text."""
    if isinstance(obj, float):
        return float(f"{obj:.{digits}g}")
    if isinstance(obj, dict):
        return {key: rounded(value, digits) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [rounded(value, digits) for value in obj]
    return obj


def save_torch(path, obj):
    write_atomic(path, lambda tmp: torch.save(obj, tmp))


def save_arrays(path, arrays):
    def write(tmp):  # a file, not a path: savez would append .npz to tmp
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)
    write_atomic(path, write)


def shown_path(path):
    """A path as the reports show it: relative to the project, else its last part (naming no local folder)."""
    relative = os.path.relpath(os.path.abspath(path), HERE)
    if relative.startswith(".."):
        return f"{os.path.basename(os.path.normpath(path))}/ (outside the project)"
    return relative


def finite_or_none(value):
    value = float(value)
    return value if math.isfinite(value) else None


def padded(tensor, shape):
    out = tensor.new_zeros(shape)
    out[tuple(map(slice, tensor.shape))] = tensor  # the leading corner
    return out


class StackedLinear(nn.Module):
    """K nn.Linear layers at once: weight [K, out, in], bias [K, out, 1]; x [K, in, B] -> [K, out, B]."""

    def forward(self, x):
        return torch.baddbmm(self.bias, self.weight, x)


class StackedBatchNorm1d(nn.Module):
    """K BatchNorm1d as one over K * width features (so each model's statistics its own), x [K, width, B]."""

    def __init__(self, norm):
        super().__init__()
        self.momentum, self.eps = norm.momentum, norm.eps

    def forward(self, x):
        if not self.training:  # an affine map: far faster on a CPU than F.batch_norm's eval path
            scale = self.weight * torch.rsqrt(self.running_var + self.eps)
            shift = self.bias - self.running_mean * scale
            return torch.addcmul(shift.view(len(x), -1, 1), x, scale.view(len(x), -1, 1))
        self.num_batches_tracked.add_(1)
        return F.batch_norm(x.reshape(1, -1, x.shape[-1]), self.running_mean, self.running_var, self.weight,
                            self.bias, self.training, self.momentum, self.eps).view(x.shape)


# act on [K, width, B] as they do on [B, width], or only hold layers
STACKABLE = (nn.ReLU, nn.LeakyReLU, nn.Identity, nn.Sequential, nn.ModuleList, nn.ParameterList)


def stacked_module(model, tensors):
    """K copies of model in one call (as vmap(functional_call(model))), holding views of tensors; x
    [K, features, B] -> [K, classes, B] (feature-major). forward may combine outputs only elementwise."""
    stacked = copy.deepcopy(model).to("meta")
    for parent in list(stacked.modules()):
        for name, child in parent.named_children():
            if isinstance(child, nn.Linear):
                setattr(parent, name, StackedLinear())
            elif isinstance(child, nn.BatchNorm1d):
                setattr(parent, name, StackedBatchNorm1d(child))
            elif not isinstance(child, STACKABLE):
                raise ValueError(f"{type(child).__name__} ({name}): only Linear, BatchNorm1d, ReLUs stack")
    for name, tensor in tensors.items():
        module_name, _, attribute = name.rpartition(".")
        module = stacked.get_submodule(module_name)
        module._parameters.pop(attribute, None)  # a ParameterList's gain: the view replaces it
        if isinstance(module, StackedLinear) and attribute == "bias":
            tensor = tensor.unsqueeze(-1)
        elif isinstance(module, StackedBatchNorm1d) and attribute != "num_batches_tracked":
            tensor = tensor.view(-1)  # F.batch_norm's flat K * width
        setattr(module, attribute, tensor)
    return stacked


def held_tensor(stacked, name):
    module_name, _, attribute = name.rpartition(".")
    return getattr(stacked.get_submodule(module_name), attribute)


class Lockstep:
    """K models trained as one. A narrower model fills the leading corner of the widest's tensors, the rest
    zero and never updated: it trains as if alone, as a unit of zero weights and bias outputs 0."""

    def __init__(self, build_model, runs, device, start_states=None):
        models = []
        for k, run in enumerate(runs):
            seed_everything(run["seed"])
            models.append(build_model(run).to(device))
            if start_states is not None:
                models[-1].load_state_dict(start_states[k])
        states = [model.state_dict() for model in models]
        widest = max(range(len(runs)), key=lambda k: sum(t.numel() for t in states[k].values()))
        shapes = {name: t.shape for name, t in states[widest].items()}
        for run, state in zip(runs, states):
            if state.keys() != shapes.keys() or any(len(t.shape) != len(shapes[name]) or any(
                    a > b for a, b in zip(t.shape, shapes[name])) for name, t in state.items()):
                raise ValueError(f"run {run}: its tensors do not fit in the largest model's: cannot pad it")
        param_names = [name for name, _ in models[widest].named_parameters()]
        # the K models' tensors, padded to the widest's shape, stacked: parameters first, then buffers
        self.tensors = {name: torch.stack([padded(state[name], shapes[name]) for state in states])
                        for name in param_names + [name for name in shapes if name not in param_names]}
        self.stacked = stacked_module(models[widest], self.tensors)  # x [K, features, B]: a batch per model
        # the leaves are the views the layers hold: a view taken in every call would cost a graph node a step
        self.leaves = [held_tensor(self.stacked, name).requires_grad_() for name in param_names]
        linear = [param_names.index(f"{name}.weight") for name, module in models[widest].named_modules()
                  if isinstance(module, nn.Linear)]  # in module order: layer 0 first
        self.n_linear = len(linear)
        self.linear_groups = {}  # the Linear layers by weight shape: {shape: (columns, indices in leaves)}
        for column, i in enumerate(linear):
            columns, members = self.linear_groups.setdefault(self.leaves[i].shape, ([], []))
            columns.append(column)
            members.append(i)
        # minus each model's learning rate, in full shape for a fused update, zero where a model is padding
        self.neg_lrs = [torch.stack([padded(torch.full(state[name].shape, -float(run["lr"]), device=device),
                                            shapes[name]) for state, run in zip(states, runs)]).view_as(leaf)
                        for name, leaf in zip(param_names, self.leaves)]
        self.own_shapes = [{name: t.shape for name, t in state.items()} for state in states]
        self.device = device

    def loss_and_hits(self, X, y):
        """Losses and hits [K, B] on X [K, features, B]; a top-logit tie is a hit (amax: cheaper on a CPU)."""
        log_probs = self.stacked(X).log_softmax(1)  # F.cross_entropy in two steps: log_probs serves accuracy
        sample_loss = F.nll_loss(log_probs, y, reduction="none")
        return sample_loss, -sample_loss >= log_probs.amax(1)

    @torch.no_grad()
    def evaluate(self, X, y, chunk=4096):
        """Each model's mean loss and accuracy [K] over all rows of X, [N, features] or [K, N, features]."""
        K = len(self.own_shapes)
        loss_sum, correct = torch.zeros(2, K, device=self.device)
        for first in range(0, len(y), chunk):
            xb, yb = X[..., first:first + chunk, :], y[first:first + chunk]
            sample_loss, hit = self.loss_and_hits(xb.expand(K, *xb.shape[-2:]).mT, yb.expand(K, -1))
            loss_sum += sample_loss.sum(1)
            correct += hit.sum(1)
        return loss_sum / len(y), correct / len(y)

    def train_epoch(self, X, y, order, batch_size, steps, record_grads, bar):
        """An epoch of SGD steps, model k's rows in order[k]: step losses [steps, K], the epoch's values."""
        K, device = len(order), self.device
        rows = (torch.arange(K, device=device)[:, None], order) if X.dim() == 3 else (order,)
        X_shuffled, y_shuffled = X[rows], y[order]  # [K, N, d], [K, N]
        self.stacked.train()
        step_loss = torch.empty(steps, K, device=device)
        n_seen = min(steps * batch_size, len(y))
        hits = torch.empty(K, n_seen, dtype=torch.bool, device=device)
        grad_record = torch.empty(steps, K, self.n_linear, device=device) if record_grads else None
        for i in range(steps):
            batch = slice(i * batch_size, (i + 1) * batch_size)
            sample_loss, hit = self.loss_and_hits(X_shuffled[:, batch].mT, y_shuffled[:, batch])
            loss = sample_loss.mean(1)
            grads = torch.autograd.grad(loss.sum(), self.leaves)  # of the sum: each model its own gradient
            with torch.no_grad():
                torch._foreach_addcmul_(self.leaves, grads, self.neg_lrs)
                step_loss[i] = loss
                hits[:, batch] = hit
                if record_grads:  # ||grad W||_2^2 of each Linear layer, those of one shape at once
                    for columns, members in self.linear_groups.values():
                        squares = torch.stack([grads[j] for j in members], dim=1).pow(2)
                        grad_record[i][:, columns] = squares.sum(dim=(2, 3))
            bar.update()
        values = {"train_loss": step_loss.mean(0), "train_acc": hits.sum(1) / n_seen}
        return step_loss, {**values, "grad_sq_norm": grad_record.mean(0)} if record_grads else values


def train_lockstep(build_model, runs, data, epochs, batch_size, device, record_steps=False,
                   record_grads=False, eval_train=False, epoch_measure=None, quiet=False, desc="train",
                   start=None):
    """Plain SGD on cross-entropy, a model per run {'seed', 'lr'} (own lr, seeded order: as if alone), on data
    {split: (X [N, features] or [K, N, features], y)} -> (results, final CPU state_dicts). A result: status,
    diverged_epoch (1-based; later values None), history per epoch: train_* over the batches, eval-mode val_*,
    test_*, train_eval_* (eval_train; 'final': last epoch only), step_loss, grad_sq_norm (Linear ||grad W||^2,
    epoch mean), epoch_measure(stacked) -> {name: [K]}. start=(states, done) resumes (stateless SGD)."""
    K = len(runs)
    lockstep = Lockstep(build_model, runs, device, start[0] if start else None)
    n_train = len(data["train"][1])
    steps = math.ceil(n_train / batch_size)
    batch_norm = any(isinstance(m, StackedBatchNorm1d) for m in lockstep.stacked.modules())
    if n_train % batch_size == 1 and batch_norm:
        steps -= 1  # batch norm cannot train on one sample
        print(f"note: {n_train} rows in batches of {batch_size} leave 1; batch norm skips it", flush=True)
    done = start[1] if start else 0
    generators = [torch.Generator().manual_seed(run["seed"]) for run in runs]
    for generator in generators:  # the orders of the epochs done
        for _ in range(done):
            torch.randperm(n_train, generator=generator)
    eval_splits = [("train", "train_eval")] * bool(eval_train) + [("val", "val"), ("test", "test")]
    histories = [{} for _ in runs]
    diverged_epoch = [None] * K
    start_time = time.perf_counter()
    bar = tqdm(total=(epochs - done) * steps, desc=desc, unit="step", disable=quiet, mininterval=1.0,
               dynamic_ncols=True)
    for epoch in range(done + 1, epochs + 1):
        order = torch.stack([torch.randperm(n_train, generator=g) for g in generators]).to(device)
        step_loss, values = lockstep.train_epoch(*data["train"], order, batch_size, steps, record_grads, bar)
        lockstep.stacked.eval()
        for split, prefix in eval_splits:
            skipped = split == "train" and eval_train == "final" and epoch < epochs  # None in the history
            loss_acc = (torch.full((K,), math.nan),) * 2 if skipped else lockstep.evaluate(*data[split])
            values[f"{prefix}_loss"], values[f"{prefix}_acc"] = loss_acc
        if epoch_measure:
            with torch.no_grad():
                values.update(epoch_measure(lockstep.stacked))
        values = {key: value.tolist() for key, value in values.items()}  # each [K]: None once diverged
        for k, (history, losses) in enumerate(zip(histories, step_loss.T.tolist())):
            if diverged_epoch[k] is None and not all(map(math.isfinite, losses + [values["val_loss"][k]])):
                diverged_epoch[k] = epoch
            for key, value in values.items():
                own = value[k]
                own = [finite_or_none(v) for v in own] if isinstance(own, list) else finite_or_none(own)
                history.setdefault(key, []).append(own if diverged_epoch[k] is None else None)
            if record_steps:
                history.setdefault("step_loss", []).extend(finite_or_none(float(f"{v:.4g}")) for v in losses)
        val_acc = [h["val_acc"][-1] for h in histories if h["val_acc"][-1] is not None]
        bar.set_postfix(epoch=epoch, val_acc=f"{np.mean(val_acc):.3f}" if val_acc else "nan")
        if all(d is not None for d in diverged_epoch):  # nothing left to train: fill the remaining epochs
            for history in histories:
                for key in history:
                    history[key] += [None] * ((epochs - epoch) * (steps if key == "step_loss" else 1))
            break
    bar.close()
    wall_s = time.perf_counter() - start_time
    results = [{**run, "status": "ok" if diverged is None else "diverged", "diverged_epoch": diverged,
                "steps_per_epoch": steps, "group_wall_s": round(wall_s, 3), "history": history}
               for run, diverged, history in zip(runs, diverged_epoch, histories)]
    states = [{name: tensor[k][tuple(map(slice, shapes[name]))].detach().cpu().clone()
               for name, tensor in lockstep.tensors.items()} for k, shapes in enumerate(lockstep.own_shapes)]
    return results, states
