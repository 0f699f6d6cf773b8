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
                values = {"long": f"{x:.5f}", "lat": f"{y:.5f}", "country": str(labels[q]), "": str(i),
                          "population": "7"}
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


def test_residual_skip_sits_around_each_hidden_layer_but_the_first():
    torch.manual_seed(0)
    model = mlp.MLP(2, 3, depth=3, width=4, residual=True)
    x = torch.randn(5, 2)
    h = model.hidden[0](x)  # 2 -> 4: no identity skip possible
    h = h + model.hidden[1](h)
    h = h + model.hidden[2](h)
    assert torch.allclose(model(x), model.out(h))


def test_gradient_record_equals_hand_computation():
    """A 3-Linear ReLU net with chosen weights, one full-batch step: ||grad W||^2 per layer by explicit backprop."""
    W = [np.array([[1.0, -0.5], [0.3, 0.8]]), np.array([[0.7, -0.2], [0.4, 0.9]]), np.array([[0.5, -1.0], [-0.3, 0.6]])]
    b = [np.array([0.1, 0.2]), np.array([0.05, -0.1]), np.array([0.0, 0.1])]
    X = np.array([[1.0, 2.0], [-1.0, 0.5], [0.5, -1.5], [2.0, 1.0]])
    y = np.array([0, 1, 1, 0])

    def build():
        model = mlp.MLP(2, 2, depth=2, width=2)
        with torch.no_grad():
            for layer, w, bias in zip([m for m in model.modules() if isinstance(m, nn.Linear)], W, b):
                layer.weight.copy_(torch.tensor(w))
                layer.bias.copy_(torch.tensor(bias))
        return model

    data = {split: (torch.tensor(X, dtype=torch.float32), torch.tensor(y)) for split in ("train", "val", "test")}
    result, _ = common.train_lockstep(build, [{"seed": 0, "lr": 0.1}], data, epochs=1, batch_size=4,
                                      device=torch.device("cpu"), record_grads=True, quiet=True)
    # forward
    z1 = X @ W[0].T + b[0]
    h1 = np.maximum(z1, 0)
    z2 = h1 @ W[1].T + b[1]
    h2 = np.maximum(z2, 0)
    logits = h2 @ W[2].T + b[2]
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    # backward of the mean cross-entropy
    d3 = (p - np.eye(2)[y]) / len(y)
    d2 = (d3 @ W[2]) * (z2 > 0)
    d1 = (d2 @ W[1]) * (z1 > 0)
    expected = [np.sum((d1.T @ X) ** 2), np.sum((d2.T @ h1) ** 2), np.sum((d3.T @ h2) ** 2)]
    assert np.allclose(result[0]["history"]["grad_sq_norm"][0], expected, rtol=1e-5)


def test_prediction_map_colors_grid_by_argmax():
    model = nn.Linear(2, 3)
    with torch.no_grad():  # logits (-x, x, 0.5): class 0 left of -0.5, class 1 right of 0.5, class 2 between
        model.weight.copy_(torch.tensor([[-1.0, 0.0], [1.0, 0.0], [0.0, 0.0]]))
        model.bias.copy_(torch.tensor([0.0, 0.0, 0.5]))
    predict = lambda points: model(points).argmax(1)  # noqa: E731
    grid, extent = common.prediction_grid(predict, (-2, 2, -1, 1), resolution=101, margin=0)
    xs = np.linspace(-2, 2, 101)
    expected_row = np.where(xs > 0.5, 1, np.where(xs < -0.5, 0, 2))
    assert grid.shape == (101, 101) and extent == (-2, 2, -1, 1)
    assert (grid == expected_row[None, :]).all()
    fig, ax = common.plt.subplots()
    drawn = common.plot_prediction_map(ax, predict, (-2, 2, -1, 1), np.zeros((1, 2)), [2], ["a", "b", "c"], "t",
                                       resolution=50)
    image = ax.images[0].get_array()
    colors = common.class_colors(3)
    assert np.allclose(image, colors[drawn]) and set(np.unique(drawn)) == {0, 1, 2}
    assert len({tuple(c) for c in common.class_colors(40)}) == 40
    common.plt.close(fig)


def test_region_count_of_known_lines():
    """Three ReLU units whose lines x = 0, y = 0 and x + y = 1 are in general position: 1 + 3 + 3 = 7 regions
    of the plane, all of which meet the box [-3, 3]^2."""
    model = mlp.MLP(2, 2, depth=1, width=3)
    with torch.no_grad():
        model.hidden[0][0].weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
        model.hidden[0][0].bias.copy_(torch.tensor([0.0, 0.0, -1.0]))
    regions = mlp.activation_regions(model, (-3, 3, -3, 3), resolution=300)
    assert regions.max() + 1 == 7
    assert mlp.region_bound([3]) == 7  # C(3,0) + C(3,1) + C(3,2)
    assert mlp.region_bound([16]) == 137  # the report's bound
    assert mlp.region_bound([16, 16]) == 137 * 137  # caps min(2, 16 - j1) never bind at width 16


def test_sin_features():
    X = torch.tensor([[10.0, 50.0]])
    features = mlp.featurize(X, "sin")
    assert features.shape == (1, 20)
    assert features[0, 0].item() == pytest.approx(np.sin(0.1 * 10.0), abs=1e-6)
    assert features[0, 19].item() == pytest.approx(np.sin(1.0 * 50.0), abs=1e-6)


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


def rewrite(path, edit):
    lines = open(path).read().splitlines()
    open(path, "w").write("\n".join(edit(lines)) + "\n")


def break_missing_folder(folder):
    os.rename(folder, folder + "_gone")
    return "bad: data folder not found"


def break_missing_file(folder):
    os.remove(os.path.join(folder, "validation.csv"))
    return "validation.csv: file not found"


def break_missing_column(folder):
    rewrite(os.path.join(folder, "train.csv"), lambda lines: ["long,latitude,country"] + lines[1:])
    return "train.csv: missing column(s) lat"


def break_nan(folder):
    rewrite(os.path.join(folder, "test.csv"), lambda lines: lines[:3] + ["nan,1.0,0"] + lines[4:])
    return "test.csv: line 4: coordinates must be finite"


def break_inf(folder):
    rewrite(os.path.join(folder, "train.csv"), lambda lines: lines[:2] + ["0.5,inf,1"] + lines[3:])
    return "train.csv: line 3: coordinates must be finite"


def break_non_numeric(folder):
    rewrite(os.path.join(folder, "train.csv"), lambda lines: lines[:5] + ["east,1.0,1"] + lines[6:])
    return "train.csv: line 6: expected numbers in long and lat"


def break_empty_split(folder):
    open(os.path.join(folder, "validation.csv"), "w").write("long,lat,country\n")
    return "validation.csv: no data rows"


def break_unseen_class(folder):
    rewrite(os.path.join(folder, "test.csv"), lambda lines: lines + ["0.1,0.2,9"])
    return "test.csv: class(es) 9 do not appear in train.csv"


def one_line_error(proc, expected):
    lines = proc.stderr.strip().splitlines()
    return proc.returncode != 0 and len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0]


@pytest.mark.parametrize("breaker", [break_missing_folder, break_missing_file, break_missing_column, break_nan,
                                     break_inf, break_non_numeric, break_empty_split, break_unseen_class])
def test_bad_csv_gives_one_line_error(tmp_path, breaker):
    folder = write_csv_dir(tmp_path / "bad")
    expected = breaker(folder)
    proc = run_script("mlp.py", "--question", "epochs", "--quick", "--quiet", "--data-dir", folder,
                      "--out", tmp_path / "out")
    assert one_line_error(proc, expected), proc.stderr
    assert not os.path.exists(tmp_path / "out")


@pytest.mark.parametrize("header", [("long", "lat", "country", "population"), ("country", "lat", "long"),
                                    ("", "lat", "country", "long")])
def test_csv_columns_found_by_name(tmp_path, header):
    folder = write_csv_dir(tmp_path / "cols", header=header)
    reference = write_csv_dir(tmp_path / "plain")
    data, _ = mlp.load_data(folder, torch.device("cpu"))
    expected, _ = mlp.load_data(reference, torch.device("cpu"))
    for split in ("train", "val", "test"):
        assert torch.equal(data[split][0], expected[split][0]) and torch.equal(data[split][1], expected[split][1])


def test_string_labels_become_class_names(tmp_path):
    folder = write_csv_dir(tmp_path / "names", labels=("PT", "ES", "FR", "DE"))
    data, meta = mlp.load_data(folder, torch.device("cpu"))
    assert meta["class_names"] == ["DE", "ES", "FR", "PT"] and meta["n_classes"] == 4
    assert "mapped onto 0..3" in meta["label_note"]


@pytest.mark.parametrize("flags, expected", [
    (["--question", "lr", "--lrs", "-0.1"], "--lrs values must be positive"),
    (["--question", "epochs", "--lr", "-1"], "--lr must be positive"),
    (["--question", "epochs", "--batch-size", "0"], "--batch-size must be positive"),
    (["--question", "nope"], "invalid choice: 'nope'"),
    (["--question", "batch_size", "--batch-norm", "on"], "batch norm needs a batch size of at least 2"),
    (["--question", "epochs", "--seeds", "0"], "--seeds must be positive"),
    (["--question", "depth_width", "--architectures", "6by16"], "expected DEPTHxWIDTH"),
    (["--question", "epochs", "--device", "tpu"], "--device tpu: expected auto, cpu or cuda"),
])
def test_bad_flags_give_one_line_error(tmp_path, flags, expected):
    proc = run_script("mlp.py", *flags, "--quick", "--out", tmp_path)
    assert one_line_error(proc, expected), proc.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_missing_cuda_is_a_clear_error(tmp_path):
    proc = run_script("mlp.py", "--question", "epochs", "--device", "cuda", "--quick", "--out", tmp_path)
    assert one_line_error(proc, "no CUDA device is available"), proc.stderr


def test_cache_is_keyed_by_data_and_survives_corruption(tmp_path):
    folder = write_csv_dir(tmp_path / "data")
    args = ["--question", "epochs", "--quick", "--quiet", "--seeds", 1, "--data-dir", folder, "--out", tmp_path]
    assert run_script("mlp.py", *args).returncode == 0
    saved = tmp_path / "mlp" / "epochs.json"
    saved.write_text(saved.read_text()[:100])  # a truncated result, as a crash of an older version could leave
    proc = run_script("mlp.py", *args)
    assert proc.returncode == 0 and "unreadable cache" in proc.stderr and "reusing" not in proc.stdout
    first = json.loads(saved.read_text())
    rewrite(os.path.join(folder, "train.csv"), lambda lines: lines[:-1])  # the data changed: retrain
    proc = run_script("mlp.py", *args)
    assert proc.returncode == 0 and "reusing" not in proc.stdout
    assert json.loads(saved.read_text())["data"]["rows"]["train"] == first["data"]["rows"]["train"] - 1


def test_divergence_is_reported_not_a_crash(tmp_path):
    proc = run_script("mlp.py", "--question", "lr", "--lrs", "1e30", "0.01", "--quick", "--quiet", "--seeds", 2,
                      "--out", tmp_path)
    assert proc.returncode == 0, proc.stderr
    result = json.loads((tmp_path / "mlp" / "lr.json").read_text())
    bad = [r for r in result["runs"] if r["lr"] == 1e30]
    assert all(r["status"] == "diverged" and r["diverged_epoch"] == 1 for r in bad)
    assert all(r["status"] == "ok" for r in result["runs"] if r["lr"] == 0.01)
    assert "seed 42 diverged at epoch 1" in (tmp_path / "mlp" / "lr.md").read_text()
    assert (tmp_path / "mlp" / "lr.png").stat().st_size > 10_000


def test_same_flags_same_numbers_across_processes(tmp_path):
    args = ["--question", "batchnorm", "--quick", "--quiet", "--seeds", 2]
    assert run_script("mlp.py", *args, "--out", tmp_path / "a").returncode == 0
    assert run_script("mlp.py", *args, "--out", tmp_path / "b").returncode == 0
    first, second = (json.loads((tmp_path / d / "mlp" / "batchnorm.json").read_text()) for d in ("a", "b"))
    assert [r["history"] for r in first["runs"]] == [r["history"] for r in second["runs"]]


# ----------------------------------------------------------------------------- questions end to end

@pytest.mark.parametrize("question", ["lr", "epochs", "batchnorm", "batch_size", "depth_width", "gradients",
                                      "residual", "implicit", "regions"])
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
        if question != "regions":
            assert {"train_loss", "val_loss", "test_loss", "train_acc", "val_acc", "test_acc"} <= run["history"].keys()
            assert len(run["history"]["val_loss"]) == run["epochs"]
    if question in ("gradients", "residual"):
        for run in result["runs"]:
            grads = run["history"]["grad_sq_norm"]
            assert len(grads) == run["epochs"] and all(g is None or len(g) == run["depth"] + 1 for g in grads)
    # a rerun with the same settings reuses the saved result
    again = run_script("mlp.py", "--question", question, "--quick", "--quiet", "--seeds", 2, "--out", tmp_path)
    assert again.returncode == 0 and "reusing" in again.stdout
    assert json.loads((out / f"{question}.json").read_text()) == result
