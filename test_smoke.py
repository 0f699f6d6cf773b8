"""Smoke and property tests. Run: python -m pytest test_smoke.py"""
import json
import os
import re
import shutil
import subprocess
import sys
import urllib.error

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from PIL import Image
from torch import nn

import cnn
import common
import mlp
from cnn import build_realfake

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


@pytest.mark.parametrize("flags, expected", [
    (["--question", "scratch", "--lrs", "-1"], "--lrs values must be positive"),
    (["--question", "scratch", "--batch-size", "0"], "--batch-size must be positive"),
    (["--question", "nope"], "invalid choice: 'nope'"),
    (["--question", "xgb", "--image-size", "8"], "--image-size must be at least 32"),
])
def test_bad_cnn_flags_give_one_line_error(tmp_path, flags, expected):
    proc = run_script("cnn.py", *flags, "--quick", "--out", tmp_path, "--cache-dir", tmp_path / "cache")
    assert one_line_error(proc, expected), proc.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_missing_cuda_is_a_clear_error(tmp_path):
    proc = run_script("mlp.py", "--question", "epochs", "--device", "cuda", "--quick", "--out", tmp_path)
    assert one_line_error(proc, "no CUDA device is available"), proc.stderr


def test_interrupted_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "result.json"
    common.save_json(path, {"old": 1})

    def crash_halfway(tmp):
        open(tmp, "w").write('{"new": ')  # half written, then Ctrl-C
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        common.write_atomic(path, crash_halfway)
    assert json.loads(path.read_text()) == {"old": 1}
    assert os.listdir(tmp_path) == ["result.json"]  # no temporary file left behind


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


# ============================================================================= Section 7: cnn.py

TINY = {"train": 16, "val": 8, "test": 8}  # images per class, as --quick uses
MODEL_KEYS = {"baseline", "lr", "status", "reason", "test_acc", "test_auroc", "val_acc", "train_seconds", "test_prob"}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny ImageFolder from the demo generator: 16 / 8 / 8 images per class, 32 x 32."""
    return build_realfake.build(str(tmp_path_factory.mktemp("tiny")), counts=TINY, size=32)


@pytest.fixture(scope="module")
def random_weights(tmp_path_factory):
    """A randomly initialized torchvision ResNet18 state dict (1000-class fc included, as torchvision saves it)."""
    path = tmp_path_factory.mktemp("weights") / "resnet18-random.pth"
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18().state_dict(), path)
    return str(path)


def copy_tree(folder, tmp_path):
    return shutil.copytree(folder, tmp_path / "data")


def read_json(out, name):
    return json.loads((out / "cnn" / f"{name}.json").read_text())


def cpu_args(*argv):
    args = cnn.parse_args([str(a) for a in argv])
    args.device = torch.device("cpu")
    return args


def run_main(argv, capsys):
    """cnn.py in this process, through common.run_main as the script runs: (exit code, stdout, stderr)."""
    try:
        common.run_main(cnn.main, [str(a) for a in argv])
        code = 0
    except SystemExit as e:
        code = e.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# ----------------------------------------------------------------------------- demo data

def test_demo_generator_is_deterministic_balanced_and_leaves_a_checkerboard(tmp_path):
    first = build_realfake.build(str(tmp_path / "a"), counts={"train": 12, "test": 2}, size=32)
    build_realfake.build(str(tmp_path / "b"), counts={"train": 12, "test": 2}, size=32)
    for split, n in (("train", 12), ("test", 2)):
        for name in ("real", "fake"):
            files = sorted(os.listdir(os.path.join(first, split, name)))
            assert len(files) == n
            for f in files:
                a, b = (tmp_path / root / split / name / f for root in ("a", "b"))
                assert a.read_bytes() == b.read_bytes()
    with Image.open(os.path.join(first, "train", "fake", "0000.png")) as image:
        assert image.size == (32, 32) and image.mode == "RGB"

    # the generator's trace: the unequal phase gains put power at the Nyquist frequency of the fakes
    def nyquist_power(name):
        x = np.stack([np.asarray(Image.open(os.path.join(first, "train", name, f)), dtype=float).mean(2)
                      for f in sorted(os.listdir(os.path.join(first, "train", name)))])
        spectrum = np.abs(np.fft.fft2(x - x.mean((1, 2), keepdims=True))) ** 2
        return spectrum[:, 16, 16].mean() / spectrum.mean()
    assert nyquist_power("fake") > 5 * nyquist_power("real")


# ----------------------------------------------------------------------------- data loading

def test_class_folder_names_decide_real_and_fake():
    for name, word in [("real", "real"), ("0_real", "real"), ("Real-faces", "real"), ("fake", "fake"),
                       ("1_fake", "fake"), ("FAKE", "fake"), ("cats", None), ("unreal", None), ("real_or_fake", None)]:
        assert cnn.class_word(name) == word, name


@pytest.mark.parametrize("class_names", [("0_real", "1_fake"), ("real", "fake")])
def test_labels_come_from_folder_names_not_alphabetical_order(tmp_path, class_names):
    # with real/fake, alphabetical order would make fake class 0; the label must still be 1 = fake
    folder = build_realfake.build(str(tmp_path), counts={"train": 3, "val": 2, "test": 2}, size=32,
                                  class_names=class_names)
    splits = cnn.list_images(folder)
    for paths, words in splits.values():
        for path, word in zip(paths, words):
            assert word == ("real" if os.path.basename(os.path.dirname(path)) == class_names[0] else "fake")
    args = cpu_args("--question", "xgb", "--data-dir", folder, "--cache-dir", tmp_path / "cache")
    data = cnn.load_data(args)
    real_folder = [p.endswith(os.path.join(class_names[0], os.path.basename(p))) for p in data["paths"]["train"]]
    assert data["labels"]["train"].tolist() == [0.0 if r else 1.0 for r in real_folder]
    assert data["meta"]["images"]["train"] == {"real": 3, "fake": 3}


def test_grayscale_rgba_and_palette_images_load(tiny, tmp_path):
    folder = copy_tree(tiny, tmp_path)
    real = folder / "train" / "real"
    files = sorted(real.iterdir())
    with Image.open(files[0]) as image:
        rgb = image.convert("RGB")
    rgb.convert("L").save(files[0])
    rgb.convert("RGBA").save(files[1])
    palette = rgb.convert("P")
    palette.info["transparency"] = 0
    palette.save(files[2])
    rgb.resize((37, 53)).save(files[3])  # odd sizes, portrait and landscape
    rgb.resize((101, 29)).save(files[4])
    args = cpu_args("--question", "scratch", "--quiet", "--data-dir", folder, "--cache-dir", tmp_path / "cache")
    data = cnn.load_data(args)
    x = cnn.images(args, data, "resize")["train"]
    assert x.shape == (2 * TINY["train"], 3, 224, 224) and x.dtype == torch.uint8
    gray = x[data["paths"]["train"].index(str(files[0]))]
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])
    assert cnn.images(args, data, "imagenet")["train"].shape == (2 * TINY["train"], 3, 224, 224)


def break_corrupt_image(folder):
    path = folder / "train" / "fake" / "0003.png"
    path.write_bytes(b"this is not an image")
    return str(path)


def break_truncated_image(folder):
    path = folder / "test" / "real" / "0001.png"
    path.write_bytes(path.read_bytes()[:200])
    return str(path)


def break_missing_split(folder):
    shutil.rmtree(folder / "val")
    return f"{folder}: no val/ or validation/ folder"


def break_single_class(folder):
    shutil.rmtree(folder / "test" / "fake")
    return f"{folder / 'test'}: class folders real;"


def break_images_without_class_folders(folder):
    for name in ("real", "fake"):
        for f in (folder / "train" / name).iterdir():
            f.rename(folder / "train" / f"{name}-{f.name}")
        (folder / "train" / name).rmdir()
    return f"{folder / 'train'}: class folders (none)"


def break_empty_class(folder):
    for f in (folder / "val" / "real").iterdir():
        f.unlink()
    return f"{folder / 'val' / 'real'}: no image files"


@pytest.mark.parametrize("breaker", [break_corrupt_image, break_truncated_image, break_missing_split,
                                     break_single_class, break_images_without_class_folders, break_empty_class])
def test_bad_data_gives_one_line_error_naming_it(tiny, tmp_path, capsys, breaker):
    folder = copy_tree(tiny, tmp_path)
    expected = breaker(folder)
    code, _, err = run_main(["--question", "xgb", "--quiet", "--data-dir", folder, "--out", tmp_path / "out",
                             "--cache-dir", tmp_path / "cache"], capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], err
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------- weights

def weights_not_a_file(tmp_path):
    return tmp_path / "missing.pth", "weights file not found"


def weights_not_a_checkpoint(tmp_path):
    (tmp_path / "notes.pth").write_text("not a checkpoint")
    return tmp_path / "notes.pth", "not a PyTorch state-dict file"


def weights_of_another_model(tmp_path):
    torch.save(torch.nn.Linear(4, 2).state_dict(), tmp_path / "linear.pth")
    return tmp_path / "linear.pth", "not a torchvision ResNet18 state dict"


def weights_of_other_shapes(tmp_path):
    state = torchvision.models.resnet18().state_dict()
    state["conv1.weight"] = torch.zeros(32, 3, 7, 7)
    torch.save(state, tmp_path / "wide.pth")
    return tmp_path / "wide.pth", "not a torchvision ResNet18 state dict"


@pytest.mark.parametrize("make", [weights_not_a_file, weights_not_a_checkpoint, weights_of_another_model,
                                  weights_of_other_shapes])
def test_bad_weights_file_gives_one_line_error(tiny, tmp_path, capsys, make):
    path, expected = make(tmp_path)
    code, _, err = run_main(["--question", "linear_probe", "--quick", "--quiet", "--data-dir", tiny, "--weights", path,
                             "--out", tmp_path / "out", "--cache-dir", tmp_path / "cache"], capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and f"error: {path}: {expected}" in lines[0], err


def test_imagenet_offline_is_not_run_with_the_fix(tiny, tmp_path, capsys, monkeypatch):
    """No network: torchvision's download fails, the pretrained baselines are 'not run' with the fix, the others run.
    The download is replaced by one that fails, so the test behaves the same with or without internet."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    calls = []

    def offline(url, *args, **kwargs):
        calls.append(url)
        raise urllib.error.URLError("[Errno -2] Name or service not known")
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    out = tmp_path / "out"
    # lr 1e30 also checks that a diverged model is ranked and plotted, not a crash
    code, stdout, err = run_main(["--question", "all", "--quick", "--quiet", "--data-dir", tiny, "--out", out,
                                  "--cache-dir", tmp_path / "cache", "--lrs", 1e30, 1e-3, "--batch-size", 8], capsys)
    assert code == 0, err
    assert calls == [torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url]
    fix_folder = str(tmp_path / "torch-home" / "hub" / "checkpoints")
    assert fix_folder in stdout
    for name in cnn.PRETRAINED:
        models = read_json(out, name)["models"]
        assert models and all(m["status"] == "not run" and m["test_acc"] is None and m["test_prob"] is None
                               for m in models)
        for m in models:
            assert m["reason"].startswith("ImageNet weights unavailable (URLError")
            assert "resnet18-f37072fd.pth" in m["fix"] and fix_folder in m["fix"] and "--weights" in m["fix"]
        assert "not run" in (out / "cnn" / f"{name}.md").read_text()
    scratch = {m["lr"]: m for m in read_json(out, "scratch")["models"]}
    assert scratch[1e30]["status"] == "diverged" and scratch[1e30]["test_acc"] is None
    assert scratch[1e-3]["status"] == "ok" and read_json(out, "xgb")["models"][0]["status"] == "ok"
    summary = (out / "cnn" / "summary.md").read_text()
    assert fix_folder in summary and "diverged" in summary
    assert read_json(out, "mistakes")["best"]["baseline"] in ("xgb", "scratch")


# ----------------------------------------------------------------------------- the linear probe

def test_cached_feature_probe_equals_in_loop_frozen_probe(tiny, tmp_path):
    args = cpu_args("--question", "linear_probe", "--quick", "--quiet", "--data-dir", tiny, "--lrs", 1e-2,
                    "--batch-size", 8, "--cache-dir", tmp_path / "cache")
    torch.manual_seed(1)
    state = {k: v for k, v in torchvision.models.resnet18().state_dict().items() if not k.startswith("fc.")}
    args.backbone = {"state": state, "id": "test", "reason": None}
    data = cnn.load_data(args)
    record = cnn.run_linear_probe(args, data)[0]
    assert record["status"] == "ok"

    # the reference: the whole model in the loop, backbone frozen and in eval mode, only fc trained
    common.seed_everything(args.seed)
    model = cnn.build_resnet(state)
    for name, p in model.named_parameters():
        p.requires_grad = name.startswith("fc.")
    model.eval()
    x, prepare, y = cnn.images(args, data, "imagenet"), cnn.normalizer(args, "imagenet"), data["labels"]["train"]
    optimizer = torch.optim.Adam(model.fc.parameters(), lr=1e-2)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(args.seed))
    losses = []
    for idx in order.split(8):
        loss = F.binary_cross_entropy_with_logits(model(prepare(x["train"][idx])).squeeze(1), y[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    with torch.no_grad():
        test_prob = model(prepare(x["test"])).squeeze(1).sigmoid()
    assert len(losses) == 4 and losses[0] != pytest.approx(losses[-1], rel=1e-3)  # the head did move
    assert record["train_loss"] == pytest.approx(losses, rel=1e-4, abs=1e-5)
    assert record["test_prob"] == pytest.approx(test_prob.tolist(), abs=1e-4)


# ----------------------------------------------------------------------------- every question end to end

def test_every_question_end_to_end_with_a_weights_file(tiny, random_weights, tmp_path):
    out = tmp_path / "out"
    common_args = ["--quick", "--quiet", "--data-dir", tiny, "--weights", random_weights, "--out", out,
                   "--cache-dir", tmp_path / "cache"]
    proc = run_script("cnn.py", "--question", "all", *common_args)
    assert proc.returncode == 0, proc.stderr
    n_test = 2 * TINY["test"]
    for name in cnn.QUESTIONS:
        assert (out / "cnn" / f"{name}.png").stat().st_size > 10_000
        assert "## Observations" in (out / "cnn" / f"{name}.md").read_text()
        result = read_json(out, name)
        assert len(result["test_paths"]) == n_test and set(result["test_classes"]) == {"real", "fake"}
        for m in result["models"]:
            assert MODEL_KEYS <= m.keys()
            assert m["status"] == "ok" and len(m["test_prob"]) == n_test and 0 <= m["test_acc"] <= 1
            assert (m["lr"] is None) == (m["baseline"] in ("xgb", "sklearn_probe"))
    assert [m["baseline"] for m in read_json(out, "summary")["models"]] == \
        ["xgb"] + ["scratch"] * 2 + ["linear_probe"] * 2 + ["sklearn_probe"] + ["finetune"] * 2
    summary = (out / "cnn" / "summary.md").read_text()
    assert "Two best models of each baseline" in summary and "Full ranking" in summary and "test acc on fake" in summary
    mistakes = read_json(out, "mistakes")
    assert mistakes["best"]["test_acc"] >= mistakes["worst"]["test_acc"]
    for i in mistakes["chosen"]:
        truth = mistakes["test_classes"][i] == "fake"
        assert (mistakes["best"]["test_prob"][i] > 0.5) == truth != (mistakes["worst"]["test_prob"][i] > 0.5)
    if len(mistakes["chosen"]) < 5:
        assert f"only {len(mistakes['chosen'])} such test image" in (out / "cnn" / "mistakes.md").read_text()

    # a rerun with the same settings reuses every saved baseline; --replot redraws without data
    again = run_script("cnn.py", "--question", "mistakes", *common_args)
    assert again.returncode == 0 and again.stdout.count("reusing") == len(cnn.BASELINES), again.stdout
    assert read_json(out, "mistakes")["chosen"] == mistakes["chosen"]
    replot = run_script("cnn.py", "--question", "summary", "--replot", "--out", out)
    assert replot.returncode == 0, replot.stderr


# ============================================================================= run_all.sh and the report

def test_run_all_writes_the_report_and_resumes(tiny, tmp_path):
    out = tmp_path / "results"
    command = ["bash", os.path.join(HERE, "run_all.sh"), "--quick", "--seeds", "1", "--out", str(out),
               "--cnn-data", tiny, "--cnn-weights", "none", "--cache-dir", str(tmp_path / "cache")]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    questions = {f"mlp/{q}" for q in mlp.QUESTIONS} | {f"cnn/{q}" for q in cnn.QUESTIONS}
    assert set(manifest["questions"]) == questions and set(manifest["status"].values()) == {"ok"}
    assert manifest["total_wall_s"] > 0 and manifest["seeds"] == 1
    report = (out / "README.md").read_text()
    for title in [q["title"] for q in mlp.QUESTIONS.values()] + ["7.1 XGBoost", "7.6.1 Summary", "7.6.2 Mistakes"]:
        assert title in report
    figures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report)
    assert len(figures) >= 16 and all((out / f).is_file() for f in figures)

    # an interrupted run lost one result: a rerun redoes that question only
    (out / "mlp" / "gradients.json").unlink()
    proc = subprocess.run(command + ["--section", "6"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "reusing" not in (out / "logs" / "mlp_gradients.log").read_text()
    assert "residual: reusing" in (out / "logs" / "mlp_residual.log").read_text()  # its inputs did not change
    assert "lr: reusing" in (out / "logs" / "mlp_lr.log").read_text()
    assert (out / "mlp" / "gradients.json").is_file()
