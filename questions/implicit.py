"""6.2.1-7 implicit representation: sin(a x) input features against raw coordinates."""
import numpy as np
import torch

from plots import Answer, Report, draw_map, map_figure, markdown_table, render
from runner import Question
from section6 import (REPORT_62, SIN_FREQUENCIES, arch_of, featurize, load_model, map_arrays, map_extent,
                      seed_runs, test_points, train_group)
from stats import SIGNIFICANCE, final, finals, mean_final, paired


@torch.no_grad()
def val_acc_per_class(run, state, data):
    """The run's validation accuracy on each class (None for a class with no validation point)."""
    X, y = (t.cpu() for t in data["val"])
    model, n_classes = load_model(run, data["meta"]["n_classes"], state), data["meta"]["n_classes"]
    hits = (model(featurize(X, run["features"], data["train"][0].cpu())).argmax(1) == y).double()
    return [float(hits[y == c].sum() / (y == c).sum()) if (y == c).any() else None for c in range(n_classes)]


def train_implicit(settings, data, reads, env):
    """The sin model beside the raw one (depth_width's runs where it trained that one), first seeds' maps."""
    raw, seeds = arch_of(settings, features="raw"), seed_runs(settings, settings["lr"])
    same = {**raw, **{key: settings[key] for key in ("lr", "epochs", "batch_size")}}
    source, wanted = reads["depth_width"], [run["seed"] for run in seeds]
    baseline = [(run, state) for run, state in zip(source["runs"], source["weights"]["states"])
                if all(run[key] == value for key, value in same.items()) and run["seed"] in wanted]
    if sorted(run["seed"] for run, _ in baseline) != wanted:
        baseline = list(zip(*train_group(data, seeds, raw, settings, env, "raw coordinates")))
    sin = list(zip(*train_group(data, seeds, arch_of(settings), settings, env, "sin features")))
    arrays = test_points(data)
    for tag, (run, state) in (("raw", baseline[0]), ("sin", sin[0])):
        arrays.update(map_arrays(tag, run, state, data))
    baseline_runs, runs = ([{**run, "val_acc_per_class": val_acc_per_class(run, state, data)}
                            for run, state in pairs] for pairs in (baseline, sin))
    counts = torch.bincount(data["val"][1].cpu(), minlength=data["meta"]["n_classes"]).tolist()
    return {"runs": runs, "baseline_runs": baseline_runs, "arrays": arrays,
            "map_extent": map_extent(data["meta"]["extent"]), "val_class_counts": counts}


def comparison_finding(raw, sin):
    """6.2.1-7: is the sin-feature model better, against the spread over seeds (a paired t-test at 95%)?"""
    comparison = paired([final(r, "val_acc") for r in raw], [final(r, "val_acc") for r in sin])
    case = {"tie": "tie", "above": "better", "below": "better"}.get(comparison["case"], "too_few")
    return dict(comparison, case=case, better="sin" if comparison["case"] == "above" else "raw",
                acc_raw=mean_final(raw, "val_acc"), acc_sin=mean_final(sin, "val_acc"))


def patches(grid):
    """Connected patches of one predicted class on a map (4-connected cells), each island counted."""
    from scipy.ndimage import label  # scipy here, not at the top: --help and --list need none of it
    return sum(label(grid == c)[1] for c in np.unique(grid))


def hull_area(points):
    """Convex hull area of (longitude, latitude) points, longitude scaled by cos(their mean latitude)."""
    from scipy.spatial import ConvexHull
    return ConvexHull(points * [np.cos(np.radians(points[:, 1].mean())), 1.0]).volume


MIN_POINTS = 30  # a country's accuracy on fewer validation points moves by more than 3 points per point


def size_finding(changes, areas):
    """Spearman correlation of each country's val acc change (sin - raw) with its area: which gain more?"""
    from scipy.stats import spearmanr
    rho, p = spearmanr(areas, changes) if len(changes) > 2 else (np.nan, np.nan)
    return dict(case="size_related" if p < SIGNIFICANCE else "no_size_relation", rho=float(rho), p=float(p),
                gainers="small" if rho < 0 else "large", n=len(changes), min_points=MIN_POINTS)


CHANGE = "sin features change validation accuracy by {difference:+.3f} ± {std:.3f}, "
SIZE = (" (Spearman rho {rho:.2f}, p = {p:.2f}, against the area of its test cities' hull; {n} countries "
        "with {min_points}+ validation rows).")
TEXT = {
    "too_few": "Cannot tell: a paired test needs two seeds that trained both models; {n} did.",
    "tie": "Neither is better: " + CHANGE + "within the seeds' noise ({noise:.3f}).",
    "better": "The {better} model is better: " + CHANGE + "beyond the seeds' noise ({noise:.3f}).",
    "size_related": "Its gains go to {gainers} countries" + SIZE,
    "no_size_relation": "Its gains show no relation to country size" + SIZE,
}


def report_implicit(result):
    variants = [("raw coordinates", result["baseline_runs"], "raw"), ("sin features", result["runs"], "sin")]
    arrays, counts = result["arrays"], result["val_class_counts"]
    fig = map_figure(result["map_extent"], 8.5, maps=2)
    for ax, (name, runs, tag) in zip(fig.subplots(1, 2), variants):
        draw_map(ax, result, tag, runs[0], f"{name}: ")
    kept = [c for c, count in enumerate(counts) if count >= MIN_POINTS]
    raw, sin = (np.array([np.mean([r["val_acc_per_class"][c] for r in runs if r["status"] == "ok"])
                          for c in kept]) for _, runs, _ in variants)
    areas = [hull_area(arrays["test_points"][arrays["test_labels"] == c]) for c in kept]
    comparison = comparison_finding(result["baseline_runs"], result["runs"])
    maps = (f"The maps (first seed) split into {patches(arrays['grid_sin'])} one-class patches with sin "
            f"features, {patches(arrays['grid_raw'])} without.")
    bullets = [maps, render(TEXT, size_finding(sin - raw, areas))]
    answer = Answer("6.2.1-7", "Which model is better, and what can the sin model learn that the other had "
                    "trouble with?", render(TEXT, comparison), bullets,
                    f"val acc {comparison['acc_sin']:.3f} sin, {comparison['acc_raw']:.3f} raw")
    rows = [[name] + [finals(runs, key) for key in ("train_acc", "val_acc", "test_acc")]
            for name, runs, _ in variants]
    caption = f"Raw coordinates (left); sin(a·x), a in {SIN_FREQUENCIES[0]}..{SIN_FREQUENCIES[-1]} (right)."
    table = markdown_table(["input", "train acc", "val acc", "test acc"], rows)
    return Report([table], {"implicit.png": (fig, caption)}, [answer])


QUESTION = Question("implicit", "6.2.1-7", "Implicit representation: sin features (bonus)",
                    dict(REPORT_62, depth=6, width=16, features="sin"), train_implicit, report_implicit,
                    reads=("depth_width",))
