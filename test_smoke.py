"""Smoke and property tests. Run: python -m pytest test_smoke.py"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import common
import mlp

HERE = os.path.dirname(os.path.abspath(__file__))


def run_script(script, *args, cwd=HERE):
    return subprocess.run([sys.executable, os.path.join(HERE, script), *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=600)


def write_csv_dir(folder, n=(300, 80, 80), header=("long", "lat", "country"), seed=0, labels=(0, 1, 2, 3)):
    """A tiny 2-D dataset whose class is the quadrant of the point (labels[quadrant])."""
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    for file, rows in zip(("train.csv", "validation.csv", "test.csv"), n):
        xy = rng.uniform(-1, 1, size=(rows, 2))
        quadrant = (xy[:, 0] > 0).astype(int) * 2 + (xy[:, 1] > 0)
        with open(os.path.join(folder, file), "w") as f:
            f.write(",".join(header) + "\n")
            for i, ((x, y), q) in enumerate(zip(xy, quadrant)):
                values = {"long": f"{x:.5f}", "lat": f"{y:.5f}", "country": str(labels[q]), "": str(i)}
                f.write(",".join(values[h] for h in header) + "\n")
    return str(folder)


def tiny_data(n=240, classes=4, dim=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    data = {}
    for split, rows in (("train", n), ("val", 64), ("test", 64)):
        X = torch.randn(rows, dim, generator=g)
        y = ((X[:, 0] > 0).long() * 2 + (X[:, 1] > 0).long()) % classes
        data[split] = (X, y)
    return data


# ----------------------------------------------------------------------------- model

@pytest.mark.parametrize("batch_norm", [False, True])
def test_mlp_layers_match_protocol(batch_norm):
    model = mlp.MLP(n_in=2, n_classes=33, depth=6, width=16, batch_norm=batch_norm)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(2, 16)] + [(16, 16)] * 5 + [(16, 33)]
    kinds = [type(m).__name__ for m in model.modules() if not isinstance(m, (nn.Sequential, nn.ModuleList, mlp.MLP))]
    hidden = ["Linear", "BatchNorm1d", "ReLU"] if batch_norm else ["Linear", "ReLU"]
    assert kinds == hidden * 6 + ["Linear"]


# ----------------------------------------------------------------------------- the lockstep loop

def reference_sgd(build, seed, lr, data, epochs, batch_size):
    """The exercise's way: one model, torch.optim.SGD, the same init and batch order as train_lockstep."""
    common.seed_everything(seed)
    model = build()
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    X, y = data["train"]
    grad_sq = []
    for _ in range(epochs):
        order = torch.randperm(len(y), generator=generator)
        model.train()
        for i in range(0, len(y), batch_size):
            idx = order[i:i + batch_size]
            optimizer.zero_grad()
            F.cross_entropy(model(X[idx]), y[idx]).backward()
            grad_sq.append([m.weight.grad.pow(2).sum().item() for m in model.modules() if isinstance(m, nn.Linear)])
            optimizer.step()
    return model, np.array(grad_sq)


@pytest.mark.parametrize("batch_norm", [False, True])
def test_lockstep_equals_torch_sgd(batch_norm):
    data = tiny_data()
    build = lambda: mlp.MLP(2, 4, depth=3, width=8, batch_norm=batch_norm)  # noqa: E731
    runs = [{"seed": 1, "lr": 0.1}, {"seed": 2, "lr": 0.03}, {"seed": 1, "lr": 0.01}]
    results, states = common.train_lockstep(build, runs, data, epochs=2, batch_size=32, device=torch.device("cpu"),
                                            record_grads=True, quiet=True)
    for run, result, state in zip(runs, results, states):
        model, grad_sq = reference_sgd(build, run["seed"], run["lr"], data, epochs=2, batch_size=32)
        for name, value in model.state_dict().items():
            assert torch.allclose(state[name].float(), value.float(), atol=1e-5), name
        # the gradient hook: per-epoch mean of ||grad W||^2 per Linear layer
        steps = grad_sq.shape[0] // 2
        expected = [grad_sq[:steps].mean(0), grad_sq[steps:].mean(0)]
        assert np.allclose(result["history"]["grad_sq_norm"], expected, rtol=1e-4, atol=1e-9)
        # eval-mode validation loss, recomputed independently
        model.eval()
        with torch.no_grad():
            val_loss = F.cross_entropy(model(data["val"][0]), data["val"][1]).item()
        assert result["history"]["val_loss"][-1] == pytest.approx(val_loss, abs=1e-5)


def test_divergence_is_isolated():
    data = tiny_data()
    build = lambda: mlp.MLP(2, 4, depth=3, width=8)  # noqa: E731
    cpu = torch.device("cpu")
    with_bad, _ = common.train_lockstep(build, [{"seed": 1, "lr": 0.05}, {"seed": 2, "lr": 1e30}], data, 3, 32, cpu,
                                        quiet=True)
    with_good, _ = common.train_lockstep(build, [{"seed": 1, "lr": 0.05}, {"seed": 2, "lr": 0.01}], data, 3, 32, cpu,
                                         quiet=True)
    assert with_bad[1]["status"] == "diverged" and with_bad[1]["diverged_epoch"] == 1
    assert with_bad[1]["history"]["val_loss"] == [None, None, None]
    assert with_bad[0]["status"] == "ok"
    assert with_bad[0]["history"] == with_good[0]["history"]


def test_same_seed_same_history():
    data = tiny_data()
    build = lambda: mlp.MLP(2, 4, depth=2, width=8, batch_norm=True)  # noqa: E731
    runs = [{"seed": 42, "lr": 0.05}]
    first, _ = common.train_lockstep(build, runs, data, 2, 16, torch.device("cpu"), record_steps=True, quiet=True)
    second, _ = common.train_lockstep(build, runs, data, 2, 16, torch.device("cpu"), record_steps=True, quiet=True)
    assert first[0]["history"] == second[0]["history"]
    assert len(first[0]["history"]["step_loss"]) == 2 * 15  # 240 rows / 16 per batch, 2 epochs


# ----------------------------------------------------------------------------- data loading

def test_loader_reads_course_format_and_maps_labels(tmp_path, capsys):
    folder = write_csv_dir(tmp_path / "course", header=("", "long", "lat", "country"), labels=(5, 10, 20, 7))
    data, meta = mlp.load_data(folder, torch.device("cpu"))
    assert meta["n_classes"] == 4 and meta["rows"] == {"train": 300, "val": 80, "test": 80}
    assert sorted(data["train"][1].unique().tolist()) == [0, 1, 2, 3]
    assert "mapped onto 0..3" in capsys.readouterr().out
    # the mapping keeps the order of the original ids: 5 -> 0, 7 -> 1, 10 -> 2, 20 -> 3
    with open(os.path.join(folder, "train.csv")) as f:
        first = f.readlines()[1].strip().split(",")
    assert data["train"][1][0].item() == [5, 7, 10, 20].index(int(first[3]))
    assert data["train"][0][0].tolist() == pytest.approx([float(first[1]), float(first[2])])


def test_loader_uses_country_names(tmp_path):
    folder = write_csv_dir(tmp_path / "named")
    with open(os.path.join(folder, "countries.csv"), "w") as f:
        f.write("id,iso,name\n0,AA,Aland\n1,BB,Bland\n2,CC,Cland\n3,DD,Dland\n")
    _, meta = mlp.load_data(folder, torch.device("cpu"))
    assert meta["class_names"] == ["Aland", "Bland", "Cland", "Dland"] and meta["label_note"] is None


def break_missing_file(folder):
    os.remove(os.path.join(folder, "validation.csv"))
    return "validation.csv: file not found"


def break_missing_column(folder):
    path = os.path.join(folder, "train.csv")
    lines = open(path).read().splitlines()
    open(path, "w").write("\n".join(["long,latitude,country"] + lines[1:]) + "\n")
    return "train.csv: missing column(s) lat"


def break_nan(folder):
    path = os.path.join(folder, "test.csv")
    lines = open(path).read().splitlines()
    lines[3] = "nan,1.0,0"
    open(path, "w").write("\n".join(lines) + "\n")
    return "test.csv: line 4: coordinates must be finite"


def break_empty_split(folder):
    open(os.path.join(folder, "validation.csv"), "w").write("long,lat,country\n")
    return "validation.csv: no data rows"


@pytest.mark.parametrize("breaker", [break_missing_file, break_missing_column, break_nan, break_empty_split])
def test_bad_csv_gives_one_line_error(tmp_path, breaker):
    folder = write_csv_dir(tmp_path / "bad")
    expected = breaker(folder)
    proc = run_script("mlp.py", "--question", "epochs", "--quick", "--quiet", "--data-dir", folder,
                      "--out", tmp_path / "out")
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], proc.stderr
    assert not os.path.exists(tmp_path / "out")


# ----------------------------------------------------------------------------- questions end to end

@pytest.mark.parametrize("question", ["lr", "epochs", "batchnorm", "batch_size"])
def test_mlp_question_end_to_end(tmp_path, question):
    proc = run_script("mlp.py", "--question", question, "--quick", "--quiet", "--seeds", 2, "--out", tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "mlp"
    assert (out / f"{question}.png").stat().st_size > 10_000
    assert "## Observations" in (out / f"{question}.md").read_text()
    result = json.loads((out / f"{question}.json").read_text())
    assert {r["seed"] for r in result["runs"]} == {42, 43}
    for run in result["runs"]:
        assert {"seed", "lr", "batch_size", "epochs", "depth", "width", "batch_norm"} <= run.keys()
        assert {"train_loss", "val_loss", "test_loss", "train_acc", "val_acc", "test_acc"} <= run["history"].keys()
        assert len(run["history"]["val_loss"]) == run["epochs"]
    # a rerun with the same settings reuses the saved result
    again = run_script("mlp.py", "--question", question, "--quick", "--quiet", "--seeds", 2, "--out", tmp_path)
    assert again.returncode == 0 and "reusing" in again.stdout
    assert json.loads((out / f"{question}.json").read_text()) == result
