"""Linear regions of every trained depth_width model, counted on a grid, beside their bounds; whether more
regions go with higher accuracy, and which of two models of matched size draws more."""
from math import comb

import numpy as np
import torch

from plots import Answer, Report, map_aspect, map_figure, markdown_table, render
from questions.depth_width import matched_finding, short
from runner import Question
from section6 import ARCH_KEYS, borders, grid_points, load_model, relu_inputs, test_points
from stats import SIGNIFICANCE, arch_label, as_array

KEY_BITS = 62  # pattern columns packed into one int64 key: below its 63 value bits, so keys never overflow


def pattern_keys(patterns):
    """Rows of bool [N, units] as int64 keys of KEY_BITS columns, first column highest: keys sort as rows."""
    return torch.stack([(block.long() * 2 ** torch.arange(block.shape[1] - 1, -1, -1)).sum(1)
                        for block in patterns.split(KEY_BITS, dim=1)], dim=1)


def region_ids(keys):
    """Each row's id among the distinct rows of keys, in sorted order as unique(dim=0), one column folded in
    at a time (much faster); ids < N, so id * (column ids) + column id < N^2 fits in int64."""
    ids = torch.zeros(len(keys), dtype=torch.int64)
    for column in keys.T:
        column_ids = torch.unique(column, return_inverse=True)[1]
        ids = torch.unique(ids * (int(column_ids.max()) + 1) + column_ids, return_inverse=True)[1]
    return ids


@torch.no_grad()
def activation_regions(model, extent, resolution):
    """Id of the ReLU on/off pattern (all hidden layers) of every cell of a resolution^2 grid over extent:
    each distinct pattern is one linear region of the network (a grid sees a lower bound of their number)."""
    points = grid_points(extent, resolution)
    keys = torch.cat([pattern_keys(torch.cat(relu_inputs(model, chunk), dim=1) > 0)
                      for chunk in points.split(65536)])
    return region_ids(keys).view(resolution, resolution).numpy()


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


def train_regions(settings, data, reads, env):
    """No training: count the regions of the first seed of every model depth_width trained, beside the mean
    validation accuracy of all its seeds; the settings' architectures are drawn, over the test points."""
    source, results, arrays = reads["depth_width"], {}, test_points(data)
    for run, state in zip(source["runs"], source["weights"]["states"]):
        arch = (run["depth"], run["width"])
        accs = [r["history"]["val_acc"][-1] for r in source["runs"] if (r["depth"], r["width"]) == arch]
        if arch in results:
            continue
        model = load_model(run, data["meta"]["n_classes"], state)
        regions = activation_regions(model, data["meta"]["extent"], settings["resolution"])
        kept = {key: run[key] for key in ("seed", "lr", "epochs", "batch_size", "n_params", *ARCH_KEYS)}
        results[arch] = {**kept, "regions_on_grid": int(regions.max()) + 1,
                         "bound": region_bound([run["width"]] * run["depth"]),
                         "val_acc": float(np.nanmean(as_array(accs)))}
        if list(arch) in settings["architectures"]:
            arrays[f"regions_{run['depth']}x{run['width']}"] = regions.astype(np.int32)
    return {"runs": list(results.values()), "arrays": arrays}


def regions_finding(counts, accs, pairs):
    """Do models with more linear regions score higher? A Spearman rank correlation over the models; pairs:
    (deeper, shallower) indices of models of matched size, to count where the deeper draws more regions."""
    from scipy.stats import spearmanr  # here, not at the top: --help and --list need no scipy
    rho, p = spearmanr(counts, accs) if len(counts) > 2 else (np.nan, np.nan)
    return dict(case="related" if p < SIGNIFICANCE else "unrelated", rho=float(rho), n=len(counts),
                more="higher" if rho > 0 else "lower", p_text="p < 0.001" if p < 0.001 else f"p = {p:.3f}",
                deeper_more=sum(counts[deep] > counts[shallow] for deep, shallow in pairs), pairs=len(pairs))


TEXT = {
    "related": ("Nets that cut the plane into more linear regions score {more}: Spearman rho {rho:.2f} "
                "({p_text}) over {n} shapes."),
    "unrelated": ("The number of linear regions does not order the nets by accuracy: Spearman rho {rho:.2f} "
                  "({p_text}) over {n} shapes."),
    "pairs": "At matched size, the deeper net draws more regions in {deeper_more} of {pairs} pairs.",
}


def report_regions(result):
    resolution, extent, runs = result["settings"]["resolution"], result["data"]["extent"], result["runs"]
    archs = [(run["depth"], run["width"]) for run in runs]
    matched = matched_finding([(*arch, run["n_params"], [run["val_acc"]]) for arch, run in zip(archs, runs)])
    pairs = [(archs.index(deep[:2]), archs.index(shallow[:2])) for deep, shallow, _ in matched["pairs"]]
    found = regions_finding([run["regions_on_grid"] for run in runs], [run["val_acc"] for run in runs], pairs)
    answer = Answer("", "Do nets with more linear regions score higher?", render(TEXT, found),
                    [render(TEXT, dict(found, case="pairs"))] if found["pairs"] else [],
                    f"Spearman rho {found['rho']:.2f}")
    rows = [[short(arch), f"{run['regions_on_grid']:,}",
             f"{run['bound']:.0e}" if run["bound"] > 1e6 else f"{run['bound']:,}", f"{run['val_acc']:.3f}"]
            for arch, run in zip(archs, runs)]
    table = markdown_table(["model", f"regions on a {resolution}² grid", "bound", "val acc"], rows)
    drawn = [run for arch, run in zip(archs, runs) if list(arch) in result["settings"]["architectures"]]
    fig = map_figure(extent, 7, maps=len(drawn))
    rng = np.random.default_rng(0)
    for ax, run in zip(fig.subplots(1, len(drawn), squeeze=False)[0], drawn):
        regions = result["arrays"][f"regions_{run['depth']}x{run['width']}"]
        image = rng.uniform(0.25, 1.0, size=(regions.max() + 1, 3))[regions]
        image[borders(regions)] = 0
        ax.imshow(image, origin="lower", extent=extent, interpolation="nearest", aspect=map_aspect(extent))
        ax.set(xlabel="longitude (degrees)", ylabel="latitude (degrees)",
               title=f"{arch_label(run)}, seed {run['seed']}: {run['regions_on_grid']:,} regions")
    note = "Each model's first seed; val acc: the mean over seeds. A grid sees a lower bound of the regions."
    caption = "Each colour one linear region, where the net is one affine map."
    return Report([table, note], {"regions.png": (fig, caption)}, [answer])


QUESTION = Question("regions", "", "Linear regions of the trained ReLU nets (beyond the report)",
                    dict(architectures=[[1, 16], [2, 16]], resolution=400), train_regions, report_regions,
                    reads=("depth_width",))
