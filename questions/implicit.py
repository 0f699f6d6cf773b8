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
    model, n_classes = load_model(run, data["meta"]["n_classes"], state), data["meta"]["n_classes"]
    X, y = (t.cpu() for t in data["val"])
    hits = (model(featurize(X, run["features"], data["train"][0].cpu())).argmax(1) == y).double()
    counts = torch.bincount(y, minlength=n_classes)
    return [float(h / c) if c else None for h, c in zip(torch.bincount(y, hits, n_classes), counts)]


def train_implicit(settings, data, reads, env):
    """The sin-feature model beside the raw one (depth_width's runs if it trained that model with these
    settings); first seeds' maps; every run's per-class val accuracy."""
    raw, seeds = arch_of(settings, features="raw"), seed_runs(settings, settings["lr"])
    same = {**raw, **{key: settings[key] for key in ("lr", "epochs", "batch_size")}}
    source = reads["depth_width"]
    baseline = [(run, state) for run, state in zip(source["runs"], source["weights"]["states"])
                if all(run[key] == value for key, value in same.items())
                and run["seed"] in [seed_run["seed"] for seed_run in seeds]]
    if sorted(run["seed"] for run, _ in baseline) != [run["seed"] for run in seeds]:
        baseline = list(zip(*train_group(data, seeds, raw, settings, env, "raw coordinates")))
    results, states = train_group(data, seeds, arch_of(settings), settings, env, "sin features")
    arrays = test_points(data)
    for tag, (run, state) in (("raw", baseline[0]), ("sin", (results[0], states[0]))):
        arrays.update(map_arrays(tag, run, state, data))
    baseline_runs = [{**run, "val_acc_per_class": val_acc_per_class(run, state, data)}
                     for run, state in baseline]
    for run, state in zip(results, states):
        run["val_acc_per_class"] = val_acc_per_class(run, state, data)
    counts = torch.bincount(data["val"][1].cpu(), minlength=data["meta"]["n_classes"]).tolist()
    return {"runs": results, "baseline_runs": baseline_runs, "arrays": arrays,
            "sin_frequencies": SIN_FREQUENCIES, "map_extent": map_extent(data["meta"]["extent"]),
            "val_class_counts": counts}


def comparison_finding(raw, sin):
    """6.2.1-7: is the sin-feature model better, against the spread over seeds (a paired t-test at 95%)?"""
    comparison = paired([final(r, "val_acc") for r in raw], [final(r, "val_acc") for r in sin])
    case = {"none": "too_few", "one_seed": "too_few", "above": "better", "below": "better"}.get(
        comparison["case"], comparison["case"])
    return dict(comparison, case=case, better="sin" if comparison["case"] == "above" else "raw",
                acc_raw=mean_final(raw, "val_acc"), acc_sin=mean_final(sin, "val_acc"))


def patches(grid):
    """Connected patches of one predicted class on a map (4-connected cells), each island counted."""
    from scipy.ndimage import label  # scipy here, not at the top: --help and --list need none of it
    return sum(label(grid == c)[1] for c in np.unique(grid))


PATCH_RATIO = 1.5  # more fragmented: half as many patches again; less could be one seed's map against another


def maps_finding(patches_raw, patches_sin):
    """Does the sin model's map break the plane into more patches (islands) than the raw model's?"""
    more = "more" if patches_sin > PATCH_RATIO * patches_raw else "no more"
    return dict(case="maps", more=more, raw=patches_raw, sin=patches_sin)


def hull_area(points):
    """Convex hull area of (longitude, latitude) points, longitude scaled by cos(their mean latitude)."""
    from scipy.spatial import ConvexHull
    return ConvexHull(points * [np.cos(np.radians(points[:, 1].mean())), 1.0]).volume


MIN_POINTS = 30  # a country's accuracy on fewer validation points moves by more than 3 points per point


def size_finding(changes, rows, areas):
    """Spearman correlation of each country's val acc change (sin - raw) with its rows and its area."""
    from scipy.stats import spearmanr
    tests = [spearmanr(sizes, changes) if len(changes) > 2 else (np.nan, np.nan) for sizes in (rows, areas)]
    signs = {int(np.sign(rho)) for rho, p in tests if p < SIGNIFICANCE}
    (rho_rows, p_rows), (rho_area, p_area) = tests
    return dict(case="mixed" if len(signs) > 1 else "size_related" if signs else "no_size_relation",
                gainers="small" if signs == {-1} else "large", rho_rows=float(rho_rows), p_rows=float(p_rows),
                rho_area=float(rho_area), p_area=float(p_area), n=len(changes))


CHANGE = "sin features change validation accuracy by {difference:+.3f} ± {std:.3f}, "
SIZE = (" (Spearman rho {rho_rows:.2f}, p = {p_rows:.2f} against validation rows; {rho_area:.2f}, p = "
        "{p_area:.2f} against area; {n} countries).")
TEXT = {
    "too_few": "Cannot tell: a paired test needs two seeds that trained both models; {n} did.",
    "tie": "Neither is better: " + CHANGE + "within the seeds' noise ({noise:.3f}).",
    "better": "The {better} model is better: " + CHANGE + "beyond the seeds' noise ({noise:.3f}).",
    "maps": "The sin model's map is {more} fragmented: {sin} one-class patches against {raw} (first seed).",
    "size_related": "Its gains go to {gainers} countries" + SIZE,
    "no_size_relation": "Its gains show no relation to country size" + SIZE,
    "mixed": "Its gains relate to country size one way by rows and the other by area" + SIZE,
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
    findings = [comparison_finding(result["baseline_runs"], result["runs"]),
                maps_finding(patches(arrays["grid_raw"]), patches(arrays["grid_sin"])),
                size_finding(sin - raw, [counts[c] for c in kept], areas)]
    headline, *bullets = (render(TEXT, finding) for finding in findings)
    key = f"val acc {findings[0]['acc_sin']:.3f} sin, {findings[0]['acc_raw']:.3f} raw"
    answer = Answer("6.2.1-7", "Which model is better, and what can the sin model learn that the other had "
                    "trouble with?", headline, bullets, key)
    rows = [[name] + [finals(runs, key) for key in ("train_acc", "val_acc", "test_acc")]
            for name, runs, _ in variants]
    frequencies = result["sin_frequencies"]
    note = (f"Features: sin(a*x), a in {frequencies[0]:g}..{frequencies[-1]:g}, on longitude and latitude in "
            f"degrees. Country size: validation rows, or the hull of its test cities ({MIN_POINTS}+ rows).")
    table = markdown_table(["input", "train acc", "val acc", "test acc"], rows)
    return Report([table, note], {"implicit.png": (fig, "Raw coordinates (left), sin features (right).")},
                  [answer])


QUESTION = Question("implicit", "6.2.1-7", "Implicit representation: sin features (bonus)",
                    dict(REPORT_62, depth=6, width=16, features="sin"), train_implicit, report_implicit,
                    reads=("depth_width",))
