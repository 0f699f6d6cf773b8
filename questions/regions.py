"""Linear regions of the trained depth-1 and depth-2 ReLU nets, counted on a grid, beside their bounds."""
from math import comb

import numpy as np
import torch

from plots import Report, map_aspect, map_figure, markdown_table
from runner import Question
from section6 import ARCH_KEYS, borders, grid_points, load_model, relu_inputs
from stats import arch_label, group_by, mean_std


def activation_regions(model, extent, resolution):
    """Id of the ReLU on/off pattern (all hidden layers) of every cell of a resolution^2 grid over extent:
    each distinct pattern is one linear region of the network (a grid sees a lower bound of their number)."""
    points = grid_points(extent, resolution)
    patterns = torch.cat([torch.cat(relu_inputs(model, chunk), dim=1) > 0 for chunk in points.split(65536)])
    return pattern_ids(patterns).view(resolution, resolution).numpy()


def pattern_ids(patterns):
    """Id of each row of a bool matrix [N, units] among its distinct rows, numbered in the rows' sorted order
    (as torch.unique(dim=0) numbers them). Up to 63 units a row is packed into one int64, its first column
    the highest bit, so that numbers and rows sort alike: about 20x faster than unique over rows."""
    if patterns.shape[1] > 63:
        return torch.unique(patterns, dim=0, return_inverse=True)[1]
    bits = 2 ** torch.arange(patterns.shape[1] - 1, -1, -1, dtype=torch.int64)
    keys = torch.cat([(chunk.long() * bits).sum(1) for chunk in patterns.split(65536)])
    return torch.unique(keys, return_inverse=True)[1]


def region_bound(widths, n_in=2):
    """Serra, Tjandraatmadja & Ramalingam (ICML 2018, Theorem 1): a ReLU net with input dimension n_in and
    hidden widths n_1..n_L has at most sum over (j_1..j_L) in J of prod_l C(n_l, j_l) linear regions,
    J = {0 <= j_l <= min(n_in, n_1 - j_1, ..., n_(l-1) - j_(l-1), n_l)}. For one layer this is
    sum_(k=0..n_in) C(n_1, k), the report's 137 for width 16."""
    def count(layer, caps):
        if layer == len(widths):
            return 1
        top = min([n_in, widths[layer]] + caps)
        return sum(comb(widths[layer], j) * count(layer + 1, caps + [widths[layer] - j])
                   for j in range(top + 1))
    return count(0, [])


DRAWN_EVERY = 2  # the figure draws every other cell of the counting grid: at a figure's width, the same map


def train_regions(settings, data, reads, env):
    """No training: count the regions of the depth_width question's trained models; the first seed of each
    is drawn."""
    source = reads["depth_width"]
    results, arrays = [], {}
    for run, state in zip(source["runs"], source["weights"]["states"]):
        if [run["depth"], run["width"]] not in settings["architectures"]:
            continue
        model = load_model(run, data["meta"]["n_classes"], state)
        regions = activation_regions(model, data["meta"]["extent"], settings["resolution"])
        results.append({**{k: run[k] for k in ("seed", "lr", "epochs", "batch_size", *ARCH_KEYS)},
                        "status": run["status"], "regions_on_grid": int(regions.max()) + 1,
                        "bound": region_bound([run["width"]] * run["depth"]),
                        "test_acc": run["history"]["test_acc"][-1]})
        drawn = regions[::DRAWN_EVERY, ::DRAWN_EVERY]
        arrays.setdefault(f"regions_{run['depth']}x{run['width']}",
                          drawn.astype(np.int16 if drawn.max() < 2 ** 15 else np.int32))
    return {"runs": results, "arrays": arrays}


def report_regions(result):
    resolution, extent = result["settings"]["resolution"], result["data"]["extent"]
    by_depth = group_by(result["runs"], "depth").values()
    rows = [[arch_label(runs[0]), f"{runs[0]['bound']:,}", ", ".join(f"{r['regions_on_grid']} (seed "
                                                                     f"{r['seed']})"
                                                                     for r in runs),
             mean_std([r["test_acc"] for r in runs])] for runs in by_depth]
    counted = f"regions seen on a {resolution}x{resolution} grid over the data (a lower bound)"
    table = markdown_table(["model", "upper bound on regions (whole plane)", counted, "test acc"], rows)
    fig = map_figure(extent, 7, maps=len(by_depth))
    axes = fig.subplots(1, len(by_depth), squeeze=False)
    rng = np.random.default_rng(0)
    for ax, run in zip(axes[0], [runs[0] for runs in by_depth]):
        regions = result["arrays"][f"regions_{run['depth']}x{run['width']}"]
        image = rng.uniform(0.25, 1.0, size=(regions.max() + 1, 3))[regions]
        image[borders(regions)] = 0
        ax.imshow(image, origin="lower", extent=extent, interpolation="nearest")
        ax.set_aspect(map_aspect(extent))
        ax.set(xlabel="longitude (degrees)", ylabel="latitude (degrees)", title=f"{arch_label(run)}, seed "
               f"{run['seed']}: {run['regions_on_grid']} regions on the grid (bound {run['bound']:,})")
    note = ("Each distinct on/off pattern of the hidden ReLUs is one linear region: the inputs that share a "
            "pattern form one convex polygon on which the network is a single affine map (batch norm in eval "
            "mode is affine and adds none). Counting patterns on a grid gives a lower bound: regions thinner "
            "than a cell, or outside the data's extent, are missed.")
    caption = ("Each colour is one linear region of a trained net (one seed), black lines their borders: "
               "how many of the bound's regions fall where the data is.")
    return Report([table, note], {"regions.png": (fig, caption)}, [])


QUESTION = Question("regions", "", "Linear regions of the trained ReLU nets (beyond the report)",
                    dict(architectures=[[1, 16], [2, 16]], resolution=2000), train_regions,
                    report_regions, reads=("depth_width",))
