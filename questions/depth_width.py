"""6.2.1-1 to 4, depth and width: seven depth x width models and three of matched size; the best's and
the worst's fit and maps, the worst trained on, accuracy against depth and width.
"""
import math

import numpy as np

from plots import (PALETTE, from_sentences, Report, draw_map, finish, map_figure, markdown_table, plot_mean_band,
                   plot_split_curves, plt, render)
from runner import Question
from section6 import REPORT_62, arch_of, map_arrays, map_extent, seed_runs, test_points, train_group
from stats import (GAP_TOLERANCE, OVERFIT_GAP, arch_label, as_array, epochs_axis, final, finals, loss_trend,
                   mean_final, paired, seed_std, status_text)

PAD_RATIO = 4  # widths up to 4x apart train in one padded lockstep group, wider ones apart. Measured on a
#   2-core CPU at depth 6, 3 seeds a width: widths 8-64 in one group 173 s; 8-32 and 64 apart 118 s; each
#   width alone 149 s


def width_groups(widths):
    """The widths, narrowest first, in groups whose widest is at most PAD_RATIO times their narrowest."""
    groups = []
    for width in sorted(set(widths)):
        if groups and width <= PAD_RATIO * groups[-1][0]:
            groups[-1].append(width)
        else:
            groups.append([width])
    return groups


def seconds_per_epoch(arch, data, settings, env, repeats=3):
    """The fastest of `repeats` single epochs of one model of arch trained alone, evaluation included: depth's
    cost in time, which a lockstep group hides."""
    one_seed = {**settings, "seeds": 1}
    times = []
    for _ in range(repeats):
        results, _ = train_group(data, seed_runs(one_seed, settings["lr"]), arch, settings, env,
                                 f"{arch['depth']}x{arch['width']} alone", epochs=1)
        times.append(results[0]["group_wall_s"])
    return min(times)


def train_depth_width(settings, data, reads, env):
    """The architectures, and beyond the protocol the matched_architectures (of about the same parameter
    counts), grouped by depth and width_groups; results in the order of the architectures. Every run records
    its first batch's gradients at initialisation and at the end; every architecture, the time of an epoch
    alone; the worst architecture trains on, from its state after the settings' epochs, to longer_epochs.
    Each architecture's first seed is drawn."""
    architectures = settings["architectures"] + [arch for arch in settings["matched_architectures"]
                                                 if arch not in settings["architectures"]]
    results, states = [], []
    for depth in dict.fromkeys(depth for depth, _ in architectures):
        for widths in width_groups([width for d, width in architectures if d == depth]):
            runs = [run for width in widths for run in seed_runs(settings, settings["lr"], width=width)]
            arch = arch_of(settings, depth=depth, width=None)
            group, group_states = train_group(data, runs, arch, settings, env, f"depth {depth}, width "
                                              f"{'-'.join(map(str, widths))}", eval_train="final",
                                              diagnose=("init", "final"))
            results, states = results + group, states + group_states
    order = sorted(range(len(results)), key=lambda i: architectures.index([results[i]["depth"],
                                                                           results[i]["width"]]))
    arrays = test_points(data)
    seconds = {}
    for depth, width in architectures:
        first = next(i for i in order if (results[i]["depth"], results[i]["width"]) == (depth, width))
        arrays.update(map_arrays(f"{depth}x{width}", results[first], states[first], data))
        seconds[f"{depth}x{width}"] = seconds_per_epoch(arch_of(settings, depth=depth, width=width), data,
                                                        settings, env)
    result = {"runs": [results[i] for i in order], "map_extent": map_extent(data["meta"]["extent"]),
              "seconds_per_epoch_alone": seconds, "arrays": arrays,
              "weights": {"states": [states[i] for i in order]}}
    if settings["longer_epochs"]:
        def mean_val_acc(arch):
            accs = [r["history"]["val_acc"][-1] for r in results if [r["depth"], r["width"]] == arch]
            return np.mean([-1 if acc is None else acc for acc in accs])
        depth, width = min(settings["architectures"], key=mean_val_acc)
        runs = seed_runs(settings, settings["lr"])
        done = {results[i]["seed"]: i for i in order
                if (results[i]["depth"], results[i]["width"]) == (depth, width)}
        longer, _ = train_group(data, runs, arch_of(settings, depth=depth, width=width), settings, env,
                                f"{depth}x{width}, on to {settings['longer_epochs']} epochs",
                                settings["longer_epochs"], eval_train="final",
                                start=([states[done[run["seed"]]] for run in runs], settings["epochs"]))
        for run in longer:  # the whole run: its first epochs, then the epochs trained on
            first = results[done[run["seed"]]]["history"]
            run["history"] = {key: first[key] + values for key, values in run["history"].items()}
        result["longer_runs"] = longer
    return result


def generalisation_finding(label, train, val, test):
    """6.2.1-1: did a model generalise? Its final accuracy on train (eval mode), validation and test."""
    case = ("overfits" if train - val > OVERFIT_GAP else "val_test_disagree" if abs(val - test) > OVERFIT_GAP
            else "yes")
    return dict(case=case, label=label, train=train, val=val, test=test, gap=train - val,
                within=max(abs(train - val), abs(val - test)))


def ranking_finding(label, top, runner_up):
    """Is the best model ahead of the runner-up beyond the seeds' noise? top, runner_up: (label, final
    validation accuracy per seed)."""
    comparison = paired(runner_up[1], top[1])
    case = {"above": "clear_best", "tie": "tied_best"}.get(comparison["case"], "unranked_best")
    return dict(comparison, case=case, label=label, top=top[0], runner_up=runner_up[0])


def fit_finding(label, train, val, best_train, params):
    """6.2.1-2: did the worst model over- or under-fit? Its train (eval mode) and validation accuracy,
    against the best model's train accuracy."""
    case = "over" if train - val > OVERFIT_GAP else "under" if best_train - train > OVERFIT_GAP else "neither"
    return dict(case=case, label=label, train=train, val=val, best_train=best_train, params=params)


def longer_finding(runs, longer, next_acc):
    """Was the worst model short of training or of capacity? Its validation accuracy after the protocol's
    epochs and after training on for longer (the same runs), where the longer run's validation loss
    ends (loss_trend), against the next-worst model's accuracy next_acc."""
    ok, ok_longer = ([r for r in rs if r["status"] == "ok"] for rs in (runs, longer))
    if not ok or not ok_longer:
        return dict(case="longer_diverged")
    acc, acc_longer = mean_final(ok, "val_acc"), mean_final(ok_longer, "val_acc")
    trend = loss_trend(np.nanmean([as_array(r["history"]["val_loss"]) for r in ok_longer], axis=0))
    gain = acc_longer - acc
    case = ("capacity" if gain <= GAP_TOLERANCE else "training" if acc_longer >= next_acc - GAP_TOLERANCE
            else "both")
    return dict(case=case, epochs=len(epochs_axis(ok)), longer_epochs=len(epochs_axis(ok_longer)), acc=acc,
                acc_longer=acc_longer, gain=gain, next_acc=next_acc, trend=trend["case"],
                previous=trend["previous"], last=trend["last"], window=trend["window"])


MATCH_TOLERANCE = 0.10  # two models are of about the same size when their parameter counts differ by <= 10%


def matched_finding(rows):
    """6.2.1-3 at matched size: every pair of models of different depth whose parameter counts are within
    MATCH_TOLERANCE, the deeper one's final validation accuracy against the shallower's, paired by seed.
    rows: (depth, width, parameters, final validation accuracy per seed)."""
    pairs = []
    for i, a in enumerate(rows):
        for b in rows[i + 1:]:
            if a[0] != b[0] and abs(a[2] - b[2]) <= MATCH_TOLERANCE * min(a[2], b[2]):
                deep, shallow = (a, b) if a[0] > b[0] else (b, a)
                comparison = paired(shallow[3], deep[3])
                pairs.append((deep[:3], shallow[:3], float(np.mean(as_array(deep[3]))),
                              float(np.mean(as_array(shallow[3]))), comparison["case"]))
    verdicts = {pair[4] for pair in pairs}
    case = ("no_pairs" if not pairs else "deeper_wins" if verdicts == {"above"} else
            "shallower_wins" if verdicts == {"below"} else "all_tie" if verdicts <= {"tie", "one_seed"}
            else "mixed")
    return dict(case=case, pairs=pairs, tolerance=MATCH_TOLERANCE)


def shape_findings(kind, rows):
    """6.2.1-3 (kind 'depth') and 6.2.1-4 ('width') from rows (size, validation accuracy, its std over seeds,
    parameters, seconds per epoch of the model alone, first over last layer's gradient norm at initialisation
    and at the end): whether more of `kind` raised the accuracy, whether the gain shrinks, and the cost."""
    rows = sorted(rows)
    (small, acc_small, *_), (large, acc_large, std_large, *_) = rows[0], rows[-1]
    findings = [dict(case="table_" + kind, rows=rows)]
    best_size, best_acc = max(((size, acc) for size, acc, *_ in rows), key=lambda pair: pair[1])
    numbers = dict(kind=kind, small=small, acc_small=acc_small, large=large, acc_large=acc_large)
    if acc_large > acc_small + GAP_TOLERANCE:
        findings.append(dict(numbers, case="more_fits_better", best_size=best_size, best_acc=best_acc))
        previous = rows[-2]
        if acc_large - previous[1] < max(2 * std_large, GAP_TOLERANCE):
            findings.append(dict(numbers, case="gain_shrinks", previous=previous[0],
                                 gain=acc_large - previous[1]))
    else:
        findings.append(dict(numbers, case="no_gain"))
    first, last = rows[0], rows[-1]
    return findings + [dict(numbers, case="cost_" + kind, params_ratio=last[3] / first[3],
                            time_ratio=last[4] / first[4], seconds_small=first[4], seconds_large=last[4],
                            grad_init=(first[5], last[5]), grad_final=(first[6], last[6]))]


NUMBERS = "train {train:.3f} (eval mode), validation {val:.3f}, test {test:.3f}"
GRADIENT_RATIO = "||grad W|| of the first layer over the last"
DEPTH_WIDTH_TEXT = {
    "overfits": ("Not fully: the {label} fits the training set better than new data (" + NUMBERS + "): it "
                 "over-fits by {gap:.3f}."),
    "val_test_disagree": ("Validation and test disagree for the {label} (" + NUMBERS + "), so its validation "
                          "score does not carry over to new data."),
    "yes": ("Yes: the {label} scores the same on data it never saw as on its training set (" + NUMBERS + "), "
            "within {within:.3f}."),
    "clear_best": ("It is the best beyond the seeds' noise: {difference:+.3f} over the runner-up, the "
                   "{runner_up} (a paired t-test at 95% needs {noise:.3f})."),
    "tied_best": ("It ties with the runner-up, the {runner_up}: {difference:+.3f}, within the seeds' noise "
                  "(a paired t-test at 95% needs {noise:.3f})."),
    "unranked_best": "With one seed, nothing tells it from the runner-up, the {runner_up}.",
    "over": ("It over-fits: the {label} reaches {train:.3f} on the training set (eval mode) and {val:.3f} on "
             "validation."),
    "under": ("It under-fits: the {label} scores about as low on its own training set ({train:.3f}, eval "
              "mode) as on validation ({val:.3f}), far below what the best model fits ({best_train:.3f})."),
    "neither": "Neither clearly: the {label} reaches {train:.3f} on train and {val:.3f} on validation.",
    "longer_diverged": "Its longer run diverged, so it cannot tell training from capacity.",
    "capacity": ("Trained on to {longer_epochs} epochs instead of {epochs}, it ends at {acc_longer:.3f} "
                 "({gain:+.3f}), its validation loss {trend} at the end: it lacks capacity, not training."),
    "training": ("Trained on to {longer_epochs} epochs instead of {epochs}, it reaches {acc_longer:.3f} "
                 "({gain:+.3f}), at least the next-worst model's {next_acc:.3f} after {epochs}: it lacked "
                 "training, not capacity."),
    "both": ("Trained on to {longer_epochs} epochs instead of {epochs}, it gains {gain:+.3f} (to "
             "{acc_longer:.3f}; its validation loss {trend} at the end, {previous:.3f} to {last:.3f} over "
             "the last {window} epochs) but stays below the next-worst model ({next_acc:.3f}): it lacked "
             "training, and capacity too."),
    "table_depth": lambda f: "By depth: " + "; ".join(
        f"{size} layer{'s' * (size != 1)}: validation {acc:.3f}, {params:,} parameters, {sec:.2f} s an epoch "
        f"alone, {GRADIENT_RATIO} {init:.2g} at initialisation and {end:.2g} at the end"
        for size, acc, _, params, sec, init, end in f["rows"]) + ".",
    "table_width": lambda f: "By width: " + "; ".join(
        f"{size} units: validation {acc:.3f}, {params:,} parameters, {sec:.2f} s an epoch alone"
        for size, acc, _, params, sec, *_ in f["rows"]) + ".",
    "more_fits_better": lambda f: (
        f"The advantage: more {'layers' if f['kind'] == 'depth' else 'units'} fit the data better "
        f"({f['acc_small']:.3f} at {f['kind']} {f['small']}, {f['best_acc']:.3f} at {f['best_size']})."),
    "gain_shrinks": ("The gain shrinks: from {kind} {previous} to {large} it is {gain:+.3f}, within the "
                     "spread over seeds."),
    "no_gain": ("More {kind} did not raise the accuracy here ({acc_small:.3f} at {small}, {acc_large:.3f} at "
                "{large})."),
    "cost_depth": lambda f: (
        f"The cost, from {f['small']} to {f['large']} layers: {f['params_ratio']:.1f}x the parameters, "
        f"{f['time_ratio']:.1f}x the time of an epoch ({f['seconds_small']:.2f} s to "
        f"{f['seconds_large']:.2f} s, each model alone: the layers run one after another), and a gradient "
        f"that changes with depth: the {GRADIENT_RATIO} goes from {f['grad_init'][0]:.2g} to "
        f"{f['grad_init'][1]:.2g} at initialisation, and from {f['grad_final'][0]:.2g} to "
        f"{f['grad_final'][1]:.2g} at the end."),
    "cost_width": lambda f: (
        f"The cost, from {f['small']} to {f['large']} units: {f['params_ratio']:.1f}x the parameters and "
        f"{f['time_ratio']:.1f}x the time of an epoch ({f['seconds_small']:.2f} s to "
        f"{f['seconds_large']:.2f} s, each model alone)."),
}


def matched_text(f):
    pairs = "; ".join(f"{deep[0]}x{deep[1]} ({deep[2]:,} parameters) {acc_deep:.3f} against {shallow[0]}x"
                      f"{shallow[1]} ({shallow[2]:,}) {acc_shallow:.3f}, {VERDICT[verdict]}"
                      for deep, shallow, acc_deep, acc_shallow, verdict in f["pairs"])
    return {"no_pairs": f"No two models of different depth are within {f['tolerance']:.0%} of each other's "
                        "parameters, so depth and width are not compared at the same size.",
            "deeper_wins": f"At the same size (parameters within {f['tolerance']:.0%}), deeper wins: "
                           f"{pairs}.",
            "shallower_wins": f"At the same size (parameters within {f['tolerance']:.0%}), wider and "
                              f"shallower wins: {pairs}.",
            "all_tie": f"At the same size (parameters within {f['tolerance']:.0%}), depth and width tie: "
                       f"{pairs}.",
            "mixed": f"At the same size (parameters within {f['tolerance']:.0%}), neither wins throughout: "
                     f"{pairs}."}[f["case"]]


VERDICT = {"above": "the deeper ahead beyond the noise", "below": "the shallower ahead beyond the noise",
           "tie": "a tie within the noise", "one_seed": "one seed, no noise to judge", "none": "diverged"}


def gradient_ratio(run, when):
    """||grad W|| of the first Linear layer over the last's, on the run's first batch ('init' or 'final')."""
    grads = run[f"{when}_grad_sq_norm"]
    return math.sqrt(grads[0] / grads[-1]) if grads[-1] else math.inf


def most_common(values):
    """The value that occurs most often (the first of them in a tie): the width the depth models share."""
    return max(dict.fromkeys(values), key=values.count)


def depth_width_findings(result, groups, protocol):
    """6.2.1-1 to 6.2.1-4 from the runs (groups: (depth, width) -> indices into runs) of the protocol's
    architectures (ranked by final validation accuracy) and the matched ones: per question, its number, what
    it asks and its findings."""
    runs, seconds = result["runs"], result["seconds_per_epoch_alone"]

    def accs(arch):
        return [final(runs[i], "val_acc") for i in groups[arch]]

    def mean_of(arch, key):
        return mean_final([runs[i] for i in groups[arch] if runs[i]["status"] == "ok"], key)
    val = {arch: float(np.mean(as_array(accs(arch)))) for arch in protocol}
    ranked = sorted((a for a in protocol if not np.isnan(val[a])), key=val.get)  # diverged ones left out
    worst, top = ranked[0], ranked[-1]

    def label(tag, arch):
        return f"{tag} model ({arch_label(dict(depth=arch[0], width=arch[1]))})"

    def shape_rows(fixed_index, fixed):
        rows = []
        for arch in sorted(a for a in protocol if a[fixed_index] == fixed):
            ok = [runs[i] for i in groups[arch] if runs[i]["status"] == "ok"]
            rows.append((arch[1 - fixed_index], val[arch], seed_std(as_array(accs(arch))),
                         runs[groups[arch][0]]["n_params"], seconds[f"{arch[0]}x{arch[1]}"],
                         float(np.mean([gradient_ratio(r, "init") for r in ok])),
                         float(np.mean([gradient_ratio(r, "final") for r in ok]))))
        return rows
    width, depth = (most_common([arch[i] for arch in protocol]) for i in (1, 0))
    best_found = [generalisation_finding(label("best", top), mean_of(top, "train_eval_acc"),
                                         mean_of(top, "val_acc"), mean_of(top, "test_acc"))]
    if len(ranked) > 1:
        best_found.append(ranking_finding(label("best", top), (label("best", top), accs(top)),
                                          (arch_label(dict(depth=ranked[-2][0], width=ranked[-2][1])),
                                           accs(ranked[-2]))))
    worst_found = [fit_finding(label("worst", worst), mean_of(worst, "train_eval_acc"),
                               mean_of(worst, "val_acc"), mean_of(top, "train_eval_acc"),
                               runs[groups[worst][0]]["n_params"])]
    longer = result.get("longer_runs", [])
    if longer and (longer[0]["depth"], longer[0]["width"]) == worst and len(ranked) > 1:
        worst_found.append(longer_finding([runs[i] for i in groups[worst]], longer,
                                          val[ranked[1]]))
    matched = matched_finding([(d, w, runs[groups[(d, w)][0]]["n_params"], accs((d, w))) for d, w in groups])
    return [("6.2.1-1", "Did the best model generalise?", best_found),
            ("6.2.1-2", "Did the worst model over-fit or under-fit?", worst_found),
            ("6.2.1-3", f"How does depth affect the MLP (width {width})?",
             shape_findings("depth", shape_rows(1, width)) + [matched]),
            ("6.2.1-4", f"How does width affect the MLP (depth {depth})?", shape_findings("width",
                                                                                     shape_rows(0, depth)))]


def plot_size(ax, runs, groups, protocol):
    """Every model's final validation accuracy (mean, ± seed std) against its parameter count, coloured by
    depth; models of matched size (matched_finding's pairs) joined by a dotted line."""
    depths = sorted({depth for depth, _ in groups})
    colors = dict(zip(depths, plt.cm.viridis(np.linspace(0, 0.85, len(depths)))))  # ordered, as depth is
    points = {}
    for arch, indices in groups.items():
        accs = as_array([final(runs[i], "val_acc") for i in indices])
        points[arch] = (runs[indices[0]]["n_params"], float(np.mean(accs)))
        ax.errorbar(*points[arch], yerr=seed_std(accs), capsize=3, linestyle="none",
                    marker="o" if arch in protocol else "s", color=colors[arch[0]])
        ax.annotate(f"{arch[0]}x{arch[1]}", points[arch], textcoords="offset points", fontsize=8,
                    xytext=(6, 4) if arch in protocol else (6, -11))  # matched sizes sit beside others
    pairs = matched_finding([(d, w, points[(d, w)][0], [final(runs[i], "val_acc") for i in indices])
                             for (d, w), indices in groups.items()])["pairs"]
    for deep, shallow, *_ in pairs:
        ends = [points[(deep[0], deep[1])], points[(shallow[0], shallow[1])]]
        ax.plot(*zip(*ends), color="grey", linestyle=":", linewidth=1.2)
    for depth in depths:
        ax.plot([], [], marker="o", linestyle="none", color=colors[depth], label=f"depth {depth}")
    ax.plot([], [], marker="s", linestyle="none", color="grey", label="matched size (beyond the protocol)")
    ax.plot([], [], color="grey", linestyle=":", label=f"parameters within {MATCH_TOLERANCE:.0%}")
    ax.set_xscale("log")
    finish(ax, "parameters (log scale)", "final validation accuracy (mean ± std over seeds)",
           "accuracy vs size (DEPTHxWIDTH)", fontsize=8)


def report_depth_width(result):
    runs, groups = result["runs"], {}
    for i, run in enumerate(runs):
        groups.setdefault((run["depth"], run["width"]), []).append(i)
    protocol = [tuple(arch) for arch in result["settings"]["architectures"] if tuple(arch) in groups]
    val = {arch: np.mean(as_array([final(runs[i], "val_acc") for i in groups[arch]])) for arch in protocol}
    ranked = sorted((a for a in protocol if not np.isnan(val[a])), key=val.get)  # diverged ones left out
    worst, top = (ranked[0], ranked[-1]) if ranked else (None, None)
    rows = []
    named = [(arch, [runs[i] for i in idx]) for arch, idx in groups.items()]
    if result.get("longer_runs"):
        named.append(("longer", result["longer_runs"]))
    for arch, arch_runs in named:
        mark = (" **best**" if arch == top else " **worst**" if arch == worst else
                f", {arch_runs[0]['epochs']} epochs" if arch == "longer" else
                " (matched size)" if arch not in protocol else "")
        rows.append([f"{arch_label(arch_runs[0])}{mark}", f"{arch_runs[0]['n_params']:,}"] +
                    [finals(arch_runs, key) for key in ("train_acc", "train_eval_acc", "val_acc", "test_acc",
                                                        "train_loss", "val_loss", "test_loss")]
                    + [status_text(arch_runs)])
    header = ["model", "parameters", "train acc (train mode)", "train acc (eval mode)", "val acc", "test acc",
              "train loss (train mode)", "val loss", "test loss", "status"]
    table = markdown_table(header, rows)

    fig, axes = plt.subplots(1, 3, figsize=(19.5, 4.8), sharey=True, layout="constrained")
    width, depth = (most_common([arch[i] for arch in protocol]) for i in (1, 0))
    for ax, vary, fixed_index, fixed in ((axes[0], "depth", 1, width), (axes[1], "width", 0, depth)):
        archs = sorted(a for a in protocol if a[fixed_index] == fixed)
        xs = [a[1 - fixed_index] for a in archs]
        for key, label, color, style in (("train_eval", "train (eval mode)", "C0", "-"), ("val", "validation",
                                         "C1", "-"), ("test", "test (dashed)", "C2", "--")):
            values = [as_array([final(runs[i], f"{key}_acc") for i in groups[a]]) for a in archs]
            ax.errorbar(xs, [np.mean(v) for v in values], yerr=[seed_std(v) for v in values], marker="o",
                        capsize=3, color=color, linestyle=style, label=label)
        if vary == "width":
            ax.set_xscale("log", base=2)
        ax.set_xticks(xs, [str(x) for x in xs])
        xlabel = "hidden layers (depth)" if vary == "depth" else "units per hidden layer (width, log scale)"
        finish(ax, xlabel, "final accuracy (mean ± std over seeds)",
               f"accuracy vs {vary} ({['depth', 'width'][fixed_index]} {fixed})")
    plot_size(axes[2], runs, groups, protocol)
    caption = ("Final accuracy against depth (left) and width (middle), on one y axis: where adding layers "
               "or units stops paying; right, every model against its parameter count: at one size, which "
               "depth scores higher.")
    figures = {"depth_width.png": (fig, caption)}
    for tag, arch in (("best", top), ("worst", worst)) if ranked else ():
        arch_runs = [runs[i] for i in groups[arch]]
        pair = map_figure(result["map_extent"], 8.5, other_width=6)
        longer = [r for r in result.get("longer_runs", []) if (r["depth"], r["width"]) == arch]
        caption = (f"The {tag} model's losses (left" + ", and its validation loss trained on for "
                   "longer" * bool(longer) + ") and its borders (right): ringed points are its mistakes.")
        figures[f"depth_width_{tag}.png"] = (pair, caption)
        ax_loss, ax_map = pair.subplots(1, 2, gridspec_kw={"width_ratios": [6, 8.5]})
        plot_split_curves(ax_loss, None, arch_runs, f"{tag} model")
        if longer:
            plot_mean_band(ax_loss, epochs_axis(longer), [r["history"]["val_loss"] for r in longer],
                           f"validation, trained on to {len(epochs_axis(longer))} epochs",
                           color=PALETTE[5], linewidth=2)
            ax_loss.legend()
        draw_map(ax_map, result, f"{arch[0]}x{arch[1]}", arch_runs[0], f"{tag} model: ")
    found = depth_width_findings(result, groups, protocol) if ranked else []
    matched_cases = ("no_pairs", "deeper_wins", "shallower_wins", "all_tie", "mixed")
    text = {**DEPTH_WIDTH_TEXT, **{case: matched_text for case in matched_cases}}
    answers = [from_sentences(item, asked, [render(text, f) for f in findings]) for item, asked, findings in found]
    return Report([table], figures, [] if ranked else ["Every architecture diverged in at least one seed: no "
                                                       "best or worst model."], answers)


QUESTION = Question(
    "depth_width", "6.2.1-1 to 6.2.1-4", "Depth and width",
    dict(REPORT_62, architectures=[[1, 16], [2, 16], [6, 16], [10, 16], [6, 8], [6, 32], [6, 64]],
         matched_architectures=[[1, 52], [2, 28], [2, 64]], longer_epochs=200),
    train_depth_width, report_depth_width)
