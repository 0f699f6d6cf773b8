"""6.2.1-7 implicit representation: sin(a x) input features against raw coordinates, both maps, borders
where the data is, the countries that gain and lose most.
"""
import numpy as np
import torch
import torch.nn.functional as F

from plots import from_sentences, Report, draw_map, map_figure, markdown_table, render
from runner import Question
from section6 import (MAP_RESOLUTION, REPORT_62, SIN_FREQUENCIES, arch_of, borders, featurize, load_model,
                      map_arrays, map_extent, seed_runs, test_points, train_group)
from stats import arch_label, final, finals, mean_final, paired, status_text

NEAR_DATA_CELLS = 5  # a map cell is near the data within this many cells (Chebyshev) of a training point's
#   cell: about 0.9 degrees (60-100 km) on the embedded data's map, so that land with cities counts and open
#   sea and empty land do not


def near_data_mask(points, extent, resolution, radius=NEAR_DATA_CELLS):
    """The cells of a resolution^2 grid over extent (as grid_points) within radius cells of a point."""
    x0, x1, y0, y1 = extent
    cols = ((points[:, 0] - x0) / (x1 - x0) * (resolution - 1)).round().long().clamp(0, resolution - 1)
    rows = ((points[:, 1] - y0) / (y1 - y0) * (resolution - 1)).round().long().clamp(0, resolution - 1)
    occupied = torch.zeros(1, 1, resolution, resolution)
    occupied[0, 0, rows, cols] = 1
    return F.max_pool2d(occupied, 2 * radius + 1, stride=1, padding=radius)[0, 0].bool().numpy()


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
    that model with these settings, else trained here. The first seed of each is drawn as a map; beyond the
    protocol, each map's share of border cells over the whole grid and near the data (near_data_mask), and
    every run's validation accuracy per class."""
    raw, seeds = arch_of(settings, features="raw"), seed_runs(settings, settings["lr"])
    same = {**raw, **{key: settings[key] for key in ("lr", "epochs", "batch_size")}}
    source = reads["depth_width"]
    baseline = [(run, state) for run, state in zip(source["runs"], source["weights"]["states"])
                if all(run[key] == value for key, value in same.items())
                and run["seed"] in [seed_run["seed"] for seed_run in seeds]]
    if sorted(run["seed"] for run, _ in baseline) != [run["seed"] for run in seeds]:
        baseline = list(zip(*train_group(data, seeds, raw, settings, env, "raw coordinates")))
    results, states = train_group(data, seeds, arch_of(settings), settings, env, "sin features")
    near = near_data_mask(data["train"][0].cpu(), map_extent(data["meta"]["extent"]), MAP_RESOLUTION)
    arrays, border_fraction = test_points(data), {}
    for tag, (run, state) in (("raw", baseline[0]), ("sin", (results[0], states[0]))):
        arrays.update(map_arrays(tag, run, state, data))
        border = borders(arrays[f"grid_{tag}"])
        border_fraction[tag] = {"grid": float(border.mean()), "near_data": float(border[near].mean())}
    baseline_runs = [{**run, "val_acc_per_class": val_acc_per_class(run, state, data)}
                     for run, state in baseline]
    for run, state in zip(results, states):
        run["val_acc_per_class"] = val_acc_per_class(run, state, data)
    counts = torch.bincount(data["val"][1].cpu(), minlength=data["meta"]["n_classes"]).tolist()
    return {"runs": results, "baseline_runs": baseline_runs, "arrays": arrays,
            "sin_frequencies": SIN_FREQUENCIES, "map_extent": map_extent(data["meta"]["extent"]),
            "border_fraction": border_fraction, "near_data_share": float(near.mean()),
            "val_class_counts": counts}


BORDER_RATIO = 1.2  # the sin map draws more border than the raw map with 20% more border cells; two seeds'
#   maps of one model differ by less


def implicit_findings(raw, sin, border_raw, border_sin):
    """6.2.1-7: is the sin-feature model better, against the spread over seeds (a paired t-test at 95%), and
    does its map draw more border between classes where the data is? border_*: the fraction of the map's
    cells near the data (within a fixed distance of a training point) on a border."""
    comparison = paired([final(r, "val_acc") for r in raw], [final(r, "val_acc") for r in sin])
    case = {"none": "no_seed", "above": "sin_better", "below": "raw_better"}.get(comparison["case"],
                                                                               comparison["case"])
    ratio = border_sin / border_raw if border_raw else None
    return [dict(comparison, case=case, loss_sin=mean_final(sin, "val_loss"),
                 loss_raw=mean_final(raw, "val_loss")),
            dict(case="more_border" if border_sin > BORDER_RATIO * border_raw else "no_more_border",
                 ratio=ratio, sin=border_sin, raw=border_raw)]


CHANGE = "sin features change validation accuracy by {difference:+.3f}"
T_TEST = (" ± {std:.3f} over {n} seeds, {} the noise (a paired t-test at 95% needs {noise:.3f}; validation "
          "loss {loss_sin:.3f} against {loss_raw:.3f}).")
BORDER = "({sin:.1%} of the cells near the data against {raw:.1%})"
IMPLICIT_TEXT = {
    "no_seed": "No seed trained both models without diverging.",
    "one_seed": ("One seed cannot tell: " + CHANGE + " (validation loss {loss_sin:.3f} against "
                 "{loss_raw:.3f}), with no spread over seeds to judge it against."),
    "tie": "Neither is better: " + CHANGE + T_TEST.replace("{}", "within"),
    "sin_better": "The sin model is better: " + CHANGE + T_TEST.replace("{}", "beyond"),
    "raw_better": "The raw model is better: " + CHANGE + T_TEST.replace("{}", "beyond"),
    "more_border": ("Its map has more border than the raw model's " + BORDER + ": sin(a x) features bend "
                    "and repeat across the plane, so it can draw curved, many-sided borders that a "
                    "raw-coordinate ReLU net builds from few straight pieces."),
    "no_more_border": "Its map has no more border than the raw model's " + BORDER + ".",
    "per_country": lambda f: (
        "Per country (validation accuracy, mean over seeds, countries with at least "
        f"{f['min_points']} validation points), sin features gain most on " + country_changes(f["gains"])
        + " and lose most on " + country_changes(f["losses"]) + "."),
}
MIN_POINTS = 30  # a country's accuracy on fewer validation points moves by more than 3 points per point
COUNTRIES_SHOWN = 3  # the countries named for the largest gains and the largest losses


def country_changes(rows):
    """'Austria (0.60 to 0.89), ...'; a bare code (data without country names) as 'class 28'."""
    return ", ".join(f"{'class ' * str(name).isdigit()}{name} ({raw:.2f} to {sin:.2f})"
                     for name, raw, sin in rows) or "none"


def per_country_finding(raw, sin, counts, names):
    """The countries whose mean validation accuracy the sin features change most, up and down, among those
    with at least MIN_POINTS validation points."""
    def mean_of(runs, c):
        return float(np.mean([r["val_acc_per_class"][c] for r in runs if r["status"] == "ok"]))
    rows = sorted(((mean_of(sin, c) - mean_of(raw, c), names[c], mean_of(raw, c), mean_of(sin, c))
                   for c in range(len(counts)) if counts[c] >= MIN_POINTS), key=lambda row: row[0])
    gains = [row[1:] for row in reversed(rows[-COUNTRIES_SHOWN:]) if row[0] > 0]
    losses = [row[1:] for row in rows[:COUNTRIES_SHOWN] if row[0] < 0]
    return dict(case="per_country", gains=gains, losses=losses, min_points=MIN_POINTS)


def report_implicit(result):
    variants = [("raw coordinates", result["baseline_runs"], "raw"), ("sin features", result["runs"], "sin")]
    fig = map_figure(result["map_extent"], 8.5, maps=2)
    for ax, (label, runs, tag) in zip(fig.subplots(1, 2), variants):
        draw_map(ax, result, tag, runs[0], f"{label}: ")
    rows = [[label, runs[0]["features"]] + [finals(runs, key) for key in ("train_acc", "val_acc", "test_acc",
                                                                          "val_loss")] + [status_text(runs)]
            for label, runs, _ in variants]
    run, frequencies = result["runs"][0], result["sin_frequencies"]
    note = (f"Both models {arch_label(run)}, batch norm {'on' if run['batch_norm'] else 'off'}, "
            f"{run['epochs']} epochs at lr {run['lr']:g}, batch {run['batch_size']}. Features: sin(a*x) for "
            f"a in {', '.join(f'{a:g}' for a in frequencies)} on longitude and latitude in degrees "
            f"({2 * len(frequencies)} inputs).")
    border = result["border_fraction"]
    found = implicit_findings(variants[0][1], variants[1][1], border["raw"]["near_data"],
                              border["sin"]["near_data"])
    found.append(per_country_finding(variants[0][1], variants[1][1], result["val_class_counts"],
                                     result["data"]["class_names"]))
    answer = from_sentences("6.2.1-7", "Which model is better, and what can the sin model learn that the other had "
                               "trouble with?", [render(IMPLICIT_TEXT, f) for f in found])
    header = ["input", "features", "train acc", "val acc", "test acc", "val loss",
              "border cells near the data (first seed's map)", "border cells, whole grid", "status"]
    rows = [row[:-1] + [f"{border[tag]['near_data']:.1%}", f"{border[tag]['grid']:.1%}", row[-1]]
            for row, (_, _, tag) in zip(rows, variants)]
    note += (f" Near the data: the {result['near_data_share']:.0%} of the map's cells within a fixed "
             "distance of a training point, where borders separate real cities, not empty land or sea.")
    table = markdown_table(header, rows)
    caption = "The same net on raw coordinates (left) and on sin features (right): the shapes of the borders."
    return Report([table, note], {"implicit.png": (fig, caption)}, [], [answer])


QUESTION = Question("implicit", "6.2.1-7", "Implicit representation: sin features (bonus)",
                    dict(REPORT_62, depth=6, width=16, features="sin"), train_implicit, report_implicit,
                    reads=("depth_width",))
