"""Linear regions of every trained depth_width model, counted on a grid, beside its accuracy."""
import numpy as np
import torch

from plots import Answer, Report, map_aspect, map_figure, markdown_table, render
from questions.depth_width import short
from runner import Question
from section6 import ARCH_KEYS, borders, grid_points, load_model, relu_inputs
from stats import SIGNIFICANCE, arch_label, as_array


@torch.no_grad()
def activation_regions(model, extent, resolution):
    """Id, in sorted order, of each grid cell's ReLU on/off pattern: the linear region it lies in."""
    packed = np.concatenate([np.packbits((torch.cat(relu_inputs(model, chunk), dim=1) > 0).numpy(), axis=1)
                             for chunk in grid_points(extent, resolution).split(65536)])
    rows = packed.view(np.dtype((np.void, packed.shape[1])))[:, 0]  # a row's bytes sort as its bits do
    return np.unique(rows, return_inverse=True)[1].reshape(resolution, resolution)


def train_regions(settings, data, reads, env):
    """No training: the regions of each depth_width model's first seed beside its seeds' mean val acc."""
    source, results, arrays = reads["depth_width"], {}, {}
    for run, state in zip(source["runs"], source["weights"]["states"]):
        arch = (run["depth"], run["width"])
        if arch in results:
            continue
        accs = [r["history"]["val_acc"][-1] for r in source["runs"] if (r["depth"], r["width"]) == arch]
        model = load_model(run, data["meta"]["n_classes"], state)
        regions = activation_regions(model, data["meta"]["extent"], settings["resolution"])
        results[arch] = {**{key: run[key] for key in ("seed", "lr", "epochs", "batch_size", *ARCH_KEYS)},
                         "regions_on_grid": int(regions.max()) + 1,
                         "val_acc": float(np.nanmean(as_array(accs)))}
        if list(arch) in settings["architectures"]:
            arrays[f"regions_{short(arch)}"] = regions.astype(np.int32)
    return {"runs": list(results.values()), "arrays": arrays}


def regions_finding(counts, accs):
    """Does accuracy rise with the number of linear regions? A Spearman rank correlation over the models."""
    from scipy.stats import spearmanr  # here, not at the top: --help and --list need no scipy
    rho, p = spearmanr(counts, accs) if len(counts) > 2 else (np.nan, np.nan)
    verdict = ("is not ordered by" if not p < SIGNIFICANCE else "rises with" if rho > 0 else "falls with")
    return dict(case="spearman", verdict=verdict, rho=float(rho), n=len(counts),
                p_text="p < 0.001" if p < 0.001 else f"p = {p:.3f}")


TEXT = {"spearman": ("Accuracy {verdict} the number of linear regions a net cuts the plane into: "
                     "Spearman rho {rho:.2f} ({p_text}) over {n} shapes.")}


def report_regions(result):
    resolution, extent, runs = result["settings"]["resolution"], result["data"]["extent"], result["runs"]
    found = regions_finding([run["regions_on_grid"] for run in runs], [run["val_acc"] for run in runs])
    answer = Answer("", "Do nets with more linear regions score higher?", render(TEXT, found), [],
                    f"Spearman rho {found['rho']:.2f}")
    rows = [[short((run["depth"], run["width"])), f"{run['regions_on_grid']:,}", f"{run['val_acc']:.3f}"]
            for run in runs]
    table = markdown_table(["model", f"regions on a {resolution}² grid (first seed)", "mean val acc"], rows)
    drawn = [run for run in runs if [run["depth"], run["width"]] in result["settings"]["architectures"]]
    fig = map_figure(extent, 7, maps=len(drawn))
    rng = np.random.default_rng(0)
    for ax, run in zip(fig.subplots(1, len(drawn), squeeze=False)[0], drawn):
        regions = result["arrays"][f"regions_{short((run['depth'], run['width']))}"]
        image = rng.uniform(0.25, 1.0, size=(regions.max() + 1, 3))[regions]
        image[borders(regions)] = 0
        ax.imshow(image, origin="lower", extent=extent, interpolation="nearest", aspect=map_aspect(extent))
        ax.set(xlabel="longitude (degrees)", ylabel="latitude (degrees)",
               title=f"{arch_label(run)}, seed {run['seed']}: {run['regions_on_grid']:,} regions")
    caption = "Each colour one linear region, where the net is one affine map."
    return Report([table], {"regions.png": (fig, caption)}, [answer])


QUESTION = Question("regions", "", "Linear regions of the trained ReLU nets (beyond the report)",
                    dict(architectures=[[1, 16], [2, 16]], resolution=400), train_regions, report_regions,
                    reads=("depth_width",))
