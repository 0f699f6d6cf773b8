"""6.2.1-1 to 4, depth and width: seven depth x width models and three of matched size; the best's and
the worst's fit and maps, the worst trained on, accuracy against depth and width.
"""
import numpy as np

from plots import (PALETTE, Answer, Report, draw_map, finish, map_figure, markdown_table, plot_mean_band,
                   plot_split_curves, render, subplots)
from runner import Question
from section6 import REPORT_62, arch_of, map_arrays, map_extent, seed_runs, test_points, train_group
from stats import (GAP_TOLERANCE, OVERFIT_GAP, as_array, epochs_axis, final, finals, loss_trend, mean_final,
                   mean_std, paired, seed_std)

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
    return dict(case=case, label=label, train=train, val=val, test=test,
                within=max(abs(train - val), abs(val - test)))


def ranking_finding(top, runner_up):
    """Is the best model ahead of the runner-up beyond the seeds' noise? top, runner_up: (label, final
    validation accuracy per seed)."""
    comparison = paired(runner_up[1], top[1])
    case = {"above": "clear_best", "tie": "tied_best"}.get(comparison["case"], "unranked_best")
    return dict(comparison, case=case, runner_up=runner_up[0])


def fit_finding(label, train, val, best_train):
    """6.2.1-2: did the worst model over- or under-fit? Its train (eval mode) and validation accuracy,
    against the best model's train accuracy."""
    case = ("overfits" if train - val > OVERFIT_GAP else "under" if best_train - train > OVERFIT_GAP
            else "neither")
    return dict(case=case, label=label, train=train, val=val, best_train=best_train)


def training_share_finding(acc, acc_longer, best_acc, trend, epochs, longer_epochs):
    """6.2.1-2: which share of the worst model's validation-accuracy gap to the best model is training and
    which capacity. Training's share is what the same runs gain from training on to longer_epochs; what
    remains is capacity's, an upper bound while the longer runs' validation loss still falls (trend)."""
    gap, gain = best_acc - acc, acc_longer - acc
    case = ("diverged" if np.isnan(acc_longer) else "training" if acc_longer >= best_acc - GAP_TOLERANCE
            else "capacity" if gain <= GAP_TOLERANCE else "split_still_learning" if trend == "improving"
            else "split")
    return dict(case=case, acc=acc, acc_longer=acc_longer, best_acc=best_acc, gap=gap, gain=gain,
                rest=gap - gain, share=gain / gap if gap > 0 else 1.0, epochs=epochs,
                longer_epochs=longer_epochs)


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
                pairs.append((deep[:3], shallow[:3], paired(shallow[3], deep[3])))
    verdicts = [comparison["case"] for *_, comparison in pairs]
    wins, losses = verdicts.count("above"), verdicts.count("below")
    case = ("no_pairs" if not pairs else "deeper" if wins and not losses else
            "shallower" if losses and not wins else "no_winner")
    return dict(case=case, pairs=pairs, n=len(pairs), wins=wins, losses=losses,
                ties=len(pairs) - wins - losses, tolerance=MATCH_TOLERANCE)


def sized(kind, size):
    unit = "layer" if kind == "depth" else "unit"
    return f"{size} {unit}{'s' * (size != 1)}"


def shape_finding(kind, rows):
    """6.2.1-3 (kind 'depth') and 6.2.1-4 ('width'): does more of kind raise the validation accuracy, and
    does it still at the largest size? rows: (size, mean validation accuracy, its std over seeds)."""
    rows = sorted(rows)
    (small, acc_small, _), (large, acc_large, std_large) = rows[0], rows[-1]
    best_size, best_acc, _ = max(rows, key=lambda row: row[1])
    gain = acc_large - rows[-2][1] if len(rows) > 1 else 0.0
    case = ("flat" if acc_large <= acc_small + GAP_TOLERANCE else
            "saturates" if gain < max(2 * std_large, GAP_TOLERANCE) else "rises")
    return dict(case=case, small=sized(kind, small), large=sized(kind, large), best=sized(kind, best_size),
                acc_small=acc_small, acc_large=acc_large, best_acc=best_acc, gain=gain,
                things="layers" if kind == "depth" else "units")


TIME_NOISE = 1.31  # two runs of the same code on one 2-core CPU timed the same model's epoch up to 1.31x
#   apart (depth 6, width 16: 0.32 s and 0.42 s): a smaller ratio is no measured cost


def cost_finding(kind, rows):
    """What the largest model of rows costs against the smallest: time of an epoch (each model alone) and
    parameters. rows: (size, parameters, seconds per epoch)."""
    (small, params_small, seconds_small), (large, params_large, seconds_large) = min(rows), max(rows)
    ratio = seconds_large / seconds_small
    return dict(case="slower" if ratio > TIME_NOISE else "not_slower", small=sized(kind, small),
                large=sized(kind, large), time_ratio=ratio, seconds_small=seconds_small,
                seconds_large=seconds_large, params_ratio=params_large / params_small, noise=TIME_NOISE)


TEXT = {
    "yes": "Yes: the {label} scores {val:.3f} on validation, {test:.3f} on test and {train:.3f} on train.",
    "overfits": "No, it over-fits: the {label} scores {train:.3f} on train but {val:.3f} on validation.",
    "val_test_disagree": "Not reliably: the {label} scores {val:.3f} on validation but {test:.3f} on test.",
    "clear_best": "It beats the runner-up, {runner_up}: {difference:+.3f}, beyond the noise ({noise:.3f}).",
    "tied_best": "It ties the runner-up, {runner_up}: {difference:+.3f}, within the noise ({noise:.3f}).",
    "unranked_best": "With one seed, nothing tells it from the runner-up, {runner_up}.",
    "under": ("It under-fits: the {label} scores {train:.3f} on train, as low as on validation ({val:.3f}) "
              "and far below the best model's {best_train:.3f}."),
    "neither": "Neither: the {label} scores {train:.3f} on train and {val:.3f} on validation.",
    "diverged": "Its longer runs diverged: they cannot tell training from capacity.",
    "training": ("Training closes the gap: trained on to {longer_epochs} epochs, it reaches "
                 "{acc_longer:.3f}, the best model's {best_acc:.3f} at {epochs}."),
    "capacity": ("Capacity, not training: trained on to {longer_epochs} epochs, it gains only {gain:+.3f} of "
                 "its {gap:.3f} gap to the best model."),
    "split": ("Training is {share:.0%} of its {gap:.3f} gap to the best model ({acc:.3f} to {acc_longer:.3f} "
              "at {longer_epochs} epochs); capacity the other {rest:.3f}, its validation loss flat by then."),
    "split_still_learning": (
        "Training is at least {share:.0%} of its {gap:.3f} gap to the best model ({acc:.3f} to "
        "{acc_longer:.3f} at {longer_epochs} epochs); capacity at most {rest:.3f}, as validation loss "
        "still falls at {longer_epochs}."),
    "rises": ("More {things} raise validation accuracy, from {acc_small:.3f} at {small} to {acc_large:.3f} "
              "at {large}."),
    "saturates": ("More {things} raise validation accuracy to {best_acc:.3f} at {best} ({acc_small:.3f} at "
                  "{small}); {large} change it by {gain:+.3f}, within the seeds' spread."),
    "flat": ("More {things} do not raise validation accuracy: {acc_small:.3f} at {small}, {acc_large:.3f} "
             "at {large}."),
    "deeper": ("At matched size (parameters within {tolerance:.0%}), the deeper net wins {wins} of {n} "
               "pairs and ties {ties}."),
    "shallower": ("At matched size (parameters within {tolerance:.0%}), the shallower, wider net wins "
                  "{losses} of {n} pairs and ties {ties}."),
    "no_winner": ("At matched size (parameters within {tolerance:.0%}), neither shape wins throughout: the "
                  "deeper net wins {wins} of {n} pairs, the shallower {losses}, {ties} tie."),
    "no_pairs": "No two models of different depth are within {tolerance:.0%} of each other's parameters.",
    "slower": ("An epoch takes {time_ratio:.1f}x as long at {large} as at {small} ({seconds_small:.2f} s to "
               "{seconds_large:.2f} s, each model alone), for {params_ratio:.1f}x the parameters."),
    "not_slower": ("An epoch takes about as long at {large} as at {small} ({seconds_small:.2f} s, "
                   "{seconds_large:.2f} s, each model alone; within the {noise}x between reruns), for "
                   "{params_ratio:.1f}x the parameters."),
}
VERDICT = {"above": "deeper", "below": "shallower", "tie": "tie", "one_seed": "one seed", "none": "diverged"}


def depth_width_answers(result, groups, protocol):
    """6.2.1-1 to 6.2.1-4 from the runs (groups: (depth, width) -> indices into runs) of the protocol's
    architectures (ranked by final validation accuracy) and the matched ones."""
    runs, seconds = result["runs"], result["seconds_per_epoch_alone"]

    def accs(arch):
        return [final(runs[i], "val_acc") for i in groups[arch]]

    def mean_of(arch, key):
        return mean_final([runs[i] for i in groups[arch] if runs[i]["status"] == "ok"], key)
    val = {arch: float(np.mean(as_array(accs(arch)))) for arch in protocol}
    ranked = sorted((a for a in protocol if not np.isnan(val[a])), key=val.get)  # diverged ones left out
    worst, top = ranked[0], ranked[-1]
    best = generalisation_finding(f"best model ({short(top)})", mean_of(top, "train_eval_acc"), val[top],
                                  mean_of(top, "test_acc"))
    best_bullets = []
    if len(ranked) > 1:
        best_bullets.append(ranking_finding((short(top), accs(top)), (short(ranked[-2]), accs(ranked[-2]))))
    fit = fit_finding(f"worst model ({short(worst)})", mean_of(worst, "train_eval_acc"), val[worst],
                      best["train"])
    worst_bullets = []
    longer = [r for r in result.get("longer_runs", []) if (r["depth"], r["width"]) == worst]
    if longer:
        ok = [r for r in longer if r["status"] == "ok"]
        curves = [as_array(r["history"]["val_loss"]) for r in ok]
        trend = loss_trend(np.mean(curves, axis=0))["case"] if ok else None
        worst_bullets.append(training_share_finding(val[worst], mean_final(ok, "val_acc") if ok else np.nan,
                                                    val[top], trend, runs[groups[worst][0]]["epochs"],
                                                    longer[0]["epochs"]))
    width, depth = (most_common([arch[i] for arch in protocol]) for i in (1, 0))
    answers = [Answer("6.2.1-1", "Did the best model generalise?", render(TEXT, best),
                      [render(TEXT, f) for f in best_bullets], f"{short(top)}: val acc {val[top]:.3f}"),
               Answer("6.2.1-2", "Did the worst model over-fit or under-fit?", render(TEXT, fit),
                      [render(TEXT, f) for f in worst_bullets],
                      f"{short(worst)}: train acc {fit['train']:.3f}")]
    matched = matched_finding([(d, w, runs[groups[(d, w)][0]]["n_params"], accs((d, w))) for d, w in groups])
    for item, kind, fixed_index, fixed in (("6.2.1-3", "depth", 1, width), ("6.2.1-4", "width", 0, depth)):
        archs = sorted(a for a in protocol if a[fixed_index] == fixed)
        sizes = [a[1 - fixed_index] for a in archs]
        spreads = [seed_std(as_array(accs(a))) for a in archs]
        shape = shape_finding(kind, [(size, val[a], std) for size, a, std in zip(sizes, archs, spreads)])
        cost = cost_finding(kind, [(size, runs[groups[a][0]]["n_params"], seconds[short(a)])
                                   for size, a in zip(sizes, archs)])
        bullets = [matched, cost] if kind == "depth" else [cost]
        asked = f"How does {kind} affect the MLP ({['depth', 'width'][fixed_index]} {fixed})?"
        key = (f"val acc {shape['acc_small']:.3f} at {shape['small']}, {shape['best_acc']:.3f} at "
               f"{shape['best']}")
        answers.append(Answer(item, asked, render(TEXT, shape), [render(TEXT, f) for f in bullets], key))
    return answers


def short(arch):
    return f"{arch[0]}x{arch[1]}"


def most_common(values):
    """The value that occurs most often (the first of them in a tie): the width the depth models share."""
    return max(dict.fromkeys(values), key=values.count)


def plot_accuracy_against(ax, runs, groups, archs, vary, fixed):
    """Final train (eval mode), validation and test accuracy of archs against their depth or width."""
    xs = [a[0] if vary == "depth" else a[1] for a in archs]
    for key, label, color, style in (("train_eval", "train (eval mode)", "C0", "-"),
                                     ("val", "validation", "C1", "-"), ("test", "test (dashed)", "C2", "--")):
        values = [as_array([final(runs[i], f"{key}_acc") for i in groups[a]]) for a in archs]
        ax.errorbar(xs, [np.mean(v) for v in values], yerr=[seed_std(v) for v in values], marker="o",
                    capsize=3, color=color, linestyle=style, label=label)
    if vary == "width":
        ax.set_xscale("log", base=2)
    ax.set_xticks(xs, [str(x) for x in xs])
    xlabel = "hidden layers (depth)" if vary == "depth" else "units per hidden layer (width, log scale)"
    finish(ax, xlabel, "final accuracy (mean ± std over seeds)", f"accuracy vs {vary} ({fixed})")


def plot_fit_and_map(result, arch, arch_runs, tag):
    """The losses of arch's runs per epoch (and, from where they start, its runs trained on) beside the
    first seed's prediction map."""
    fig = map_figure(result["map_extent"], 8.5, other_width=6)
    ax_loss, ax_map = fig.subplots(1, 2, gridspec_kw={"width_ratios": [6, 8.5]})
    plot_split_curves(ax_loss, None, arch_runs, f"{tag} model")
    longer = [r for r in result.get("longer_runs", []) if (r["depth"], r["width"]) == arch]
    if longer:
        start = arch_runs[0]["epochs"] - 1  # the longer runs' first epochs are these runs' own
        plot_mean_band(ax_loss, epochs_axis(longer)[start:],
                       [r["history"]["val_loss"][start:] for r in longer],
                       f"validation, trained on to {longer[0]['epochs']} epochs", color=PALETTE[6],
                       linewidth=2)
        ticks = [1, 10, start + 1, longer[0]["epochs"]]
        ax_loss.set(xscale="log", xlabel="epoch (log scale)", xticks=ticks, xticklabels=ticks)
        ax_loss.legend()
    draw_map(ax_map, result, short(arch), arch_runs[0], f"{tag} model: ")
    return fig


def report_depth_width(result):
    runs, groups = result["runs"], {}
    for i, run in enumerate(runs):
        groups.setdefault((run["depth"], run["width"]), []).append(i)
    protocol = [tuple(arch) for arch in result["settings"]["architectures"] if tuple(arch) in groups]
    val = {arch: np.mean(as_array([final(runs[i], "val_acc") for i in groups[arch]])) for arch in protocol}
    ranked = sorted((a for a in protocol if not np.isnan(val[a])), key=val.get)  # diverged ones left out
    marks = {ranked[-1]: " best", ranked[0]: " worst"} if ranked else {}
    named = [(short(arch) + marks.get(arch, " matched" * (arch not in protocol)), [runs[i] for i in indices],
              f"{result['seconds_per_epoch_alone'][short(arch)]:.2f}") for arch, indices in groups.items()]
    longer = result.get("longer_runs", [])
    if longer:
        arch = (longer[0]["depth"], longer[0]["width"])
        named.append((f"{short(arch)}, {longer[0]['epochs']} epochs", longer, ""))
    table = markdown_table(["model", "parameters", "val acc", "s an epoch alone"],
                           [[name, f"{arch_runs[0]['n_params']:,}", finals(arch_runs, "val_acc"), time]
                            for name, arch_runs, time in named])
    pairs = matched_finding([(d, w, runs[idx[0]]["n_params"], [final(runs[i], "val_acc") for i in idx])
                             for (d, w), idx in groups.items()])["pairs"]
    pair_table = markdown_table(["deeper", "shallower", "val acc, deeper minus shallower", "wins"],
                                [[short(deep), short(shallow), mean_std(comparison.get("diffs", [None])),
                                  VERDICT[comparison["case"]]] for deep, shallow, comparison in pairs])
    fig, axes = subplots(1, 2, figsize=(13, 4.8), sharey=True)
    width, depth = (most_common([arch[i] for arch in protocol]) for i in (1, 0))
    plot_accuracy_against(axes[0], runs, groups, sorted(a for a in protocol if a[1] == width), "depth",
                          f"width {width}")
    plot_accuracy_against(axes[1], runs, groups, sorted(a for a in protocol if a[0] == depth), "width",
                          f"depth {depth}")
    figures = {"depth_width.png": (fig, "Accuracy against depth and width.")}
    for tag, arch in zip(("best", "worst"), (ranked[-1:] + ranked[:1])):
        figure = plot_fit_and_map(result, arch, [runs[i] for i in groups[arch]], tag)
        figures[f"depth_width_{tag}.png"] = (figure, f"The {tag} model's losses and map (ringed: mistakes).")
    answers = depth_width_answers(result, groups, protocol) if ranked else []
    note = "Matched sizes, paired by seed (a win: beyond the 95% noise of a paired t-test):"
    return Report([table, note, pair_table], figures, answers)


QUESTION = Question(
    "depth_width", "6.2.1-1 to 6.2.1-4", "Depth and width",
    dict(REPORT_62, architectures=[[1, 16], [2, 16], [6, 16], [10, 16], [6, 8], [6, 32], [6, 64]],
         matched_architectures=[[1, 52], [2, 28], [2, 64]], longer_epochs=200),
    train_depth_width, report_depth_width)
