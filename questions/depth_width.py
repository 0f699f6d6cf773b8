"""6.2.1-1 to 4 depth and width: seven models and three of matched size; fits, maps, accuracy against each."""
import numpy as np

from plots import (PALETTE, Answer, Report, draw_map, finish, map_figure, markdown_table, plot_mean_band,
                   plot_split_curves, render, subplots)
from runner import Question
from section6 import REPORT_62, arch_of, map_arrays, map_extent, seed_runs, test_points, train_group
from stats import (GAP_TOLERANCE, OVERFIT_GAP, as_array, epochs_axis, falling_finding, final, finals,
                   mean_final, paired, seed_std)

KINDS = ("depth", "width")  # what arch[0] and arch[1] are
MATCH_TOLERANCE = 0.10  # two models are of about the same size when their parameter counts differ by <= 10%
PAD_RATIO = 4  # widths up to 4x apart train padded in one lockstep group: on 2 CPU cores faster than apart


def width_groups(widths):
    """The widths, narrowest first, in groups whose widest is at most PAD_RATIO times their narrowest."""
    groups = []
    for width in sorted(set(widths)):
        if groups and width <= PAD_RATIO * groups[-1][0]:
            groups[-1].append(width)
        else:
            groups.append([width])
    return groups


def train_depth_width(settings, data, reads, env):
    """The architectures, then the matched ones, by depth and width_groups; the worst on to longer_epochs."""
    architectures = settings["architectures"] + [arch for arch in settings["matched_architectures"]
                                                 if arch not in settings["architectures"]]
    trained = []
    for depth in dict.fromkeys(depth for depth, _ in architectures):
        for widths in width_groups([width for d, width in architectures if d == depth]):
            runs = [run for width in widths for run in seed_runs(settings, settings["lr"], width=width)]
            trained += zip(*train_group(data, runs, arch_of(settings, depth=depth, width=None), settings, env,
                                        f"depth {depth}, width {'-'.join(map(str, widths))}",
                                        eval_train="final"))
    trained.sort(key=lambda pair: architectures.index([pair[0]["depth"], pair[0]["width"]]))
    arrays = test_points(data)
    for run, state in trained:
        if run["seed"] == settings["seed"]:
            arrays.update(map_arrays(f"{run['depth']}x{run['width']}", run, state, data))
    result = {"runs": [run for run, _ in trained], "map_extent": map_extent(data["meta"]["extent"]),
              "arrays": arrays, "weights": {"states": [state for _, state in trained]}}
    if settings["longer_epochs"]:
        def mean_val_acc(arch):
            accs = [final(run, "val_acc") for run, _ in trained if [run["depth"], run["width"]] == arch]
            return np.mean([-1 if acc is None else acc for acc in accs])
        depth, width = min(settings["architectures"], key=mean_val_acc)
        worst = [(run, state) for run, state in trained if (run["depth"], run["width"]) == (depth, width)]
        arch = arch_of(settings, depth=depth, width=width)
        longer, _ = train_group(data, seed_runs(settings, settings["lr"]), arch, settings, env,
                                f"{depth}x{width}, on to {settings['longer_epochs']} epochs",
                                settings["longer_epochs"], eval_train="final",
                                start=([state for _, state in worst], settings["epochs"]))
        for run, (first, _) in zip(longer, worst):  # the whole run: its first epochs, then those trained on
            run["history"] = {key: first["history"][key] + values for key, values in run["history"].items()}
        result["longer_runs"] = longer
    return result


def fit_finding(label, runs, best_train=None):
    """6.2.1-1 and 2: over- or under-fit? Mean final train (eval mode), val, test acc against best_train."""
    train, val, test = (mean_final(runs, f"{split}_acc") for split in ("train_eval", "val", "test"))
    best_train = train if best_train is None else best_train
    case = ("overfits" if train - val > OVERFIT_GAP else "under" if best_train - train > OVERFIT_GAP
            else "fits")
    return dict(case=case, label=label, train=train, val=val, test=test, best_train=best_train)


def training_share_finding(worst, best, longer):
    """6.2.1-2: the share of the worst's gap to the best that training on closes; the rest is capacity."""
    ok = [run for run in longer if run["status"] == "ok"]
    if not ok:
        return dict(case="diverged")
    acc_longer, gap = mean_final(ok, "val_acc"), best["val"] - worst["val"]
    gain = min(max(acc_longer - worst["val"], 0.0), gap)  # training closes at most all the gap, at least none
    falling = falling_finding([run["history"]["val_loss"] for run in ok])["case"] == "falling"
    return dict(case="share", bound="at most " * falling, loss=("no longer", "still")[falling],
                acc=worst["val"], acc_longer=acc_longer, best_acc=best["val"], gap=gap, rest=gap - gain,
                share=gain / gap if gap > 0 else 1.0, longer_epochs=ok[0]["epochs"], falling=falling)


def matched_finding(rows):
    """6.2.1-3: deeper vs shallower val acc by seed, of models of matched size. rows: (d, w, params, accs)."""
    pairs = []
    for i, a in enumerate(rows):
        for b in rows[i + 1:]:
            if a[0] != b[0] and abs(a[2] - b[2]) <= MATCH_TOLERANCE * min(a[2], b[2]):
                deep, shallow = (a, b) if a[0] > b[0] else (b, a)
                pairs.append((deep[:3], shallow[:3], paired(shallow[3], deep[3])))
    verdicts = [comparison["case"] for *_, comparison in pairs]
    wins, losses = verdicts.count("above"), verdicts.count("below")
    return dict(case="pairs", pairs=pairs, n=len(pairs), wins=wins, losses=losses,
                ties=len(pairs) - wins - losses, tolerance=MATCH_TOLERANCE)


def shape_finding(kind, rows):
    """6.2.1-3 and 4: does more of kind raise val acc, still at the largest? rows: (size, mean, std)."""
    rows = sorted(rows)
    (small, acc_small, _), (large, acc_large, std_large) = rows[0], rows[-1]
    best_size, best_acc, _ = max(rows, key=lambda row: row[1])
    gain = acc_large - rows[-2][1] if len(rows) > 1 else 0.0
    rises = acc_large > acc_small + GAP_TOLERANCE
    case = "saturates" if rises and gain < max(2 * std_large, GAP_TOLERANCE) else "more"
    return dict(case=case, rises=rises, verb="raises" if rises else "does not raise", kind=kind,
                small=f"{kind} {small}", large=f"{kind} {large}", best=f"{kind} {best_size}",
                acc_small=acc_small, acc_large=acc_large, best_acc=best_acc, gain=gain)


TEXT = {
    "fits": ("It generalises, neither over- nor under-fitting: the {label} scores {train:.3f} on train, "
             "{val:.3f} on validation and {test:.3f} on test."),
    "overfits": "It over-fits: the {label} scores {train:.3f} on train but {val:.3f} on validation.",
    "under": ("It under-fits: the {label} scores {train:.3f} on train and {val:.3f} on validation, far below "
              "the best model's {best_train:.3f} on train."),
    "diverged": "Its longer runs diverged: they cannot tell training from capacity.",
    "share": ("Training on to {longer_epochs} epochs closes {share:.0%} of its {gap:.3f} gap to the best "
              "model ({acc:.3f} to {acc_longer:.3f}, the best {best_acc:.3f}); capacity accounts for "
              "{bound}{rest:.3f}, as validation loss {loss} falls."),
    "more": "More {kind} {verb} validation accuracy: {acc_small:.3f} at {small}, {acc_large:.3f} at {large}.",
    "saturates": ("More {kind} raises validation accuracy to {best_acc:.3f} at {best} ({acc_small:.3f} at "
                  "{small}); {large} changes it by {gain:+.3f}, within the seeds' spread."),
    "pairs": ("At matched size (parameters within {tolerance:.0%}), the deeper net wins {wins} of {n} pairs, "
              "the shallower {losses}; ties (within the seeds' noise): {ties}."),
}


def short(arch):
    return f"{arch[0]}x{arch[1]}"


def models(result):
    """Runs by arch; protocol archs; those worst first by mean val acc (NaN left out); final val accs."""
    by_arch = {}
    for run in result["runs"]:
        by_arch.setdefault((run["depth"], run["width"]), []).append(run)
    val = {arch: as_array([final(run, "val_acc") for run in runs]) for arch, runs in by_arch.items()}
    protocol = [tuple(arch) for arch in result["settings"]["architectures"] if tuple(arch) in by_arch]
    finite = [arch for arch in protocol if not np.isnan(val[arch]).any()]
    return by_arch, protocol, sorted(finite, key=lambda arch: val[arch].mean()), val


def series(protocol, vary):
    """The protocol's models that differ only in arch[vary] (0: depth, 1: width), at the commonest other."""
    others = [arch[1 - vary] for arch in protocol]
    fixed = max(others, key=others.count)
    return f"{KINDS[1 - vary]} {fixed}", sorted(arch for arch in protocol if arch[1 - vary] == fixed)


def depth_width_answers(result, matched):
    """6.2.1-1 to 6.2.1-4 from the result's runs and the matched_finding of its models."""
    by_arch, protocol, ranked, val = models(result)
    best = fit_finding(f"best model ({short(ranked[-1])})", by_arch[ranked[-1]])
    worst = fit_finding(f"worst model ({short(ranked[0])})", by_arch[ranked[0]], best["train"])
    longer = [run for run in result.get("longer_runs", []) if (run["depth"], run["width"]) == ranked[0]]
    answers = [Answer("6.2.1-1", "Did the best model generalise?", render(TEXT, best), [],
                      f"{short(ranked[-1])}: val acc {best['val']:.3f}"),
               Answer("6.2.1-2", "Did the worst model over-fit or under-fit?", render(TEXT, worst),
                      [render(TEXT, training_share_finding(worst, best, longer))] if longer else [],
                      f"{short(ranked[0])}: train acc {worst['train']:.3f}")]
    for vary, kind in enumerate(KINDS):
        fixed, archs = series(protocol, vary)
        shape = shape_finding(kind, [(arch[vary], np.mean(val[arch]), seed_std(val[arch])) for arch in archs])
        bullets = [render(TEXT, matched)] if kind == "depth" and matched["n"] else []
        answers.append(Answer(f"6.2.1-{3 + vary}", f"How does {kind} affect the MLP ({fixed})?",
                              render(TEXT, shape), bullets, f"val acc {shape['acc_small']:.3f} at "
                              f"{shape['small']}, {shape['best_acc']:.3f} at {shape['best']}"))
    return answers


def plot_accuracy_against(ax, by_arch, protocol, vary):
    """Final train (eval mode), validation and test accuracy against depth (vary 0) or width (1)."""
    fixed, archs = series(protocol, vary)
    xs = [arch[vary] for arch in archs]
    for key, label, color, style in (("train_eval", "train (eval mode)", "C0", "-"),
                                     ("val", "validation", "C1", "-"), ("test", "test (dashed)", "C2", "--")):
        values = [as_array([final(run, f"{key}_acc") for run in by_arch[arch]]) for arch in archs]
        ax.errorbar(xs, [np.mean(v) for v in values], yerr=[seed_std(v) for v in values], marker="o",
                    capsize=3, color=color, linestyle=style, label=label)
    if vary:
        ax.set_xscale("log", base=2)
    ax.set_xticks(xs, [str(x) for x in xs])
    xlabel = ("hidden layers (depth)", "units per hidden layer (width, log scale)")[vary]
    finish(ax, xlabel, "final accuracy (mean ± std over seeds)", f"accuracy vs {KINDS[vary]} ({fixed})")


def plot_fit_and_map(result, arch, runs, tag):
    """arch's losses per epoch (and its longer runs') beside the first seed's prediction map."""
    fig = map_figure(result["map_extent"], 8.5, other_width=6)
    ax_loss, ax_map = fig.subplots(1, 2, gridspec_kw={"width_ratios": [6, 8.5]})
    plot_split_curves(ax_loss, None, runs, f"{tag} model")
    longer = [run for run in result.get("longer_runs", []) if (run["depth"], run["width"]) == arch]
    if longer:
        start = runs[0]["epochs"] - 1  # the longer runs' first epochs are these runs' own
        plot_mean_band(ax_loss, epochs_axis(longer)[start:],
                       [run["history"]["val_loss"][start:] for run in longer],
                       f"validation, trained on to {longer[0]['epochs']} epochs", color=PALETTE[6],
                       linewidth=2)
        ticks = [1, 10, start + 1, longer[0]["epochs"]]
        ax_loss.set(xscale="log", xlabel="epoch (log scale)", xticks=ticks, xticklabels=ticks)
        ax_loss.legend()
    draw_map(ax_map, result, short(arch), runs[0], f"{tag} model: ")
    return fig


def report_depth_width(result):
    by_arch, protocol, ranked, _ = models(result)
    marks = {ranked[-1]: " best", ranked[0]: " worst"} if ranked else {}
    rows = [[short(arch) + marks.get(arch, " matched" * (arch not in protocol)), f"{runs[0]['n_params']:,}",
             finals(runs, "val_acc")] for arch, runs in by_arch.items()]
    table = markdown_table(["model", "parameters", "val acc"], rows)
    matched = matched_finding([(*arch, runs[0]["n_params"], [final(run, "val_acc") for run in runs])
                               for arch, runs in by_arch.items()])
    fig, axes = subplots(1, 2, figsize=(13, 4.8), sharey=True)
    for vary, ax in enumerate(axes):
        plot_accuracy_against(ax, by_arch, protocol, vary)
    figures = {"depth_width.png": (fig, "Accuracy against depth and width.")}
    for tag, arch in zip(("best", "worst"), ranked[-1:] + ranked[:1]):
        figures[f"depth_width_{tag}.png"] = (plot_fit_and_map(result, arch, by_arch[arch], tag),
                                             f"The {tag} model's losses and map (ringed: mistakes).")
    return Report([table], figures, depth_width_answers(result, matched) if ranked else [])


QUESTION = Question(
    "depth_width", "6.2.1-1 to 6.2.1-4", "Depth and width",
    dict(REPORT_62, architectures=[[1, 16], [2, 16], [6, 16], [10, 16], [6, 8], [6, 32], [6, 64]],
         matched_architectures=[[1, 52], [2, 28], [2, 64]], longer_epochs=200),
    train_depth_width, report_depth_width)
