"""6.2.1-7 implicit representation: sin(a x) input features against raw coordinates: accuracy, both maps,
and whether the countries the sin features help are the small ones.
"""
import numpy as np
import torch

from plots import Answer, Report, draw_map, map_figure, markdown_table, render
from runner import Question
from section6 import (REPORT_62, SIN_FREQUENCIES, arch_of, featurize, load_model, map_arrays, map_extent,
                      seed_runs, test_points, train_group)
from stats import SIGNIFICANCE, arch_label, final, finals, mean_final, paired


@torch.no_grad()
def val_acc_per_class(run, state, data):
    """The run's validation accuracy on each class (None for a class with no validation point)."""
    model, n_classes = load_model(run, data["meta"]["n_classes"], state), data["meta"]["n_classes"]
    X, y = (t.cpu() for t in data["val"])
    hits = (model(featurize(X, run["features"], data["train"][0].cpu())).argmax(1) == y).double()
    counts = torch.bincount(y, minlength=n_classes)
    return [float(h / c) if c else None for h, c in zip(torch.bincount(y, hits, n_classes), counts)]


def train_implicit(settings, data, reads, env):
    """The sin-feature model, beside the same model on raw coordinates: depth_width's runs when it trained
    that model with these settings, else trained here. The first seed of each is drawn as a map; every run's
    validation accuracy per class is kept."""
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
    case = {"none": "no_seed", "above": "sin_better", "below": "raw_better"}.get(comparison["case"],
                                                                               comparison["case"])
    return dict(comparison, case=case, acc_raw=mean_final(raw, "val_acc"), acc_sin=mean_final(sin, "val_acc"))


def patches(grid):
    """Connected patches of one predicted class on a map (4-connected cells): a class drawn as several
    islands counts each."""
    from scipy.ndimage import label  # scipy here, not at the top: --help and --list need none of it
    return sum(label(grid == c)[1] for c in np.unique(grid))


PATCH_RATIO = 1.5  # the sin map is more fragmented with half as many patches again as the raw map; a
#   smaller excess could be one seed's map against another's


def maps_finding(patches_raw, patches_sin):
    """Does the sin model's map break the plane into more patches (islands) than the raw model's?"""
    case = "fragmented" if patches_sin > PATCH_RATIO * patches_raw else "not_fragmented"
    return dict(case=case, raw=patches_raw, sin=patches_sin)


MIN_POINTS = 30  # a country's accuracy on fewer validation points moves by more than 3 points per point


def size_finding(changes, rows, areas):
    """Raw coordinates bias a ReLU net toward smooth, low-frequency borders (Tancik et al. 2020): if sin
    features lift that bias, they help small countries most. changes: each country's validation accuracy,
    sin minus raw; its size in validation rows and in area; a Spearman rank correlation over the countries
    against each size, significant in either direction or not."""
    from scipy.stats import spearmanr
    tests = [spearmanr(sizes, changes) if len(changes) > 2 else (np.nan, np.nan) for sizes in (rows, areas)]
    signs = {int(np.sign(rho)) for rho, p in tests if p < SIGNIFICANCE}
    case = {frozenset(): "no_size_relation", frozenset({-1}): "small_gain", frozenset({1}): "large_gain"}.get(
        frozenset(signs), "mixed")
    (rho_rows, p_rows), (rho_area, p_area) = tests
    return dict(case=case, rho_rows=float(rho_rows), p_rows=float(p_rows), rho_area=float(rho_area),
                p_area=float(p_area), n=len(changes))


def hull_area(points):
    """Area of the convex hull of (longitude, latitude) points, in square degrees of latitude (longitude
    scaled by the cosine of their mean latitude)."""
    from scipy.spatial import ConvexHull
    scaled = points * [np.cos(np.radians(points[:, 1].mean())), 1.0]
    return ConvexHull(scaled).volume


SIZE = (" (Spearman rho {rho_rows:.2f}, p = {p_rows:.2f} against validation rows; {rho_area:.2f}, p = "
        "{p_area:.2f} against area; {n} countries).")
CHANGE = "sin features change validation accuracy by {difference:+.3f} ± {std:.3f}, {} the seeds' "
TEXT = {
    "no_seed": "No seed trained both models without diverging.",
    "one_seed": "One seed cannot tell: sin features change validation accuracy by {difference:+.3f}.",
    "tie": "Neither is better: " + CHANGE.replace("{}", "within") + "noise ({noise:.3f}).",
    "sin_better": "The sin model is better: " + CHANGE.replace("{}", "beyond") + "noise ({noise:.3f}).",
    "raw_better": "The raw model is better: " + CHANGE.replace("{}", "beyond") + "noise ({noise:.3f}).",
    "fragmented": ("The sin model's map breaks into islands: {sin} one-class patches against {raw} (first "
                   "seed)."),
    "not_fragmented": "The sin model's map is no more fragmented: {sin} patches of one class against {raw}.",
    "small_gain": "Its gains go to small countries, as a lifted low-frequency bias predicts" + SIZE,
    "large_gain": "Its gains go to large countries, against the low-frequency-bias explanation" + SIZE,
    "no_size_relation": ("Its gains are unrelated to country size: the low-frequency-bias explanation does "
                         "not show" + SIZE),
    "mixed": "Its gains relate to country size one way by rows and the other by area" + SIZE,
}


def report_implicit(result):
    variants = [("raw coordinates", result["baseline_runs"], "raw"), ("sin features", result["runs"], "sin")]
    arrays, counts = result["arrays"], result["val_class_counts"]
    fig = map_figure(result["map_extent"], 8.5, maps=2)
    for ax, (name, runs, tag) in zip(fig.subplots(1, 2), variants):
        draw_map(ax, result, tag, runs[0], f"{name}: ")
    kept = [c for c in range(len(counts)) if counts[c] >= MIN_POINTS]
    per_class = {tag: np.array([np.mean([r["val_acc_per_class"][c] for r in runs if r["status"] == "ok"])
                                for c in kept]) for _, runs, tag in variants}
    changes = per_class["sin"] - per_class["raw"]
    areas = [hull_area(arrays["test_points"][arrays["test_labels"] == c]) for c in kept]
    bullets = [maps_finding(patches(arrays["grid_raw"]), patches(arrays["grid_sin"])),
               size_finding(changes, [counts[c] for c in kept], areas)]
    comparison = comparison_finding(variants[0][1], variants[1][1])
    answer = Answer("6.2.1-7", "Which model is better, and what can the sin model learn that the other had "
                    "trouble with?", render(TEXT, comparison), [render(TEXT, f) for f in bullets],
                    f"val acc {comparison['acc_sin']:.3f} sin, {comparison['acc_raw']:.3f} raw")
    rows = [[name] + [finals(runs, key) for key in ("train_acc", "val_acc", "test_acc", "val_loss")]
            for name, runs, _ in variants]
    run, frequencies = result["runs"][0], result["sin_frequencies"]
    note = (f"Both {arch_label(run)}, batch norm, {run['epochs']} epochs. Features: sin(a*x), a in "
            f"{frequencies[0]:g}..{frequencies[-1]:g}, on longitude and latitude in degrees. Country "
            f"size: its validation rows, or the convex hull of its test cities; countries with at least "
            f"{MIN_POINTS} validation rows.")
    table = markdown_table(["input", "train acc", "val acc", "test acc", "val loss"], rows)
    return Report([table, note], {"implicit.png": (fig, "Raw coordinates (left), sin features (right).")},
                  [answer])


QUESTION = Question("implicit", "6.2.1-7", "Implicit representation: sin features (bonus)",
                    dict(REPORT_62, depth=6, width=16, features="sin"), train_implicit, report_implicit,
                    reads=("depth_width",))
