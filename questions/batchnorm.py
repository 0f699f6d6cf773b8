"""6.1.2-3 batch norm: the epochs question's net with batch norm, and the controls without it (a larger lr,
standardised inputs, both) that tell its parts apart.
"""
import numpy as np

from plots import (PALETTE, from_sentences, Report, finish, markdown_table, plot_mean_band, plot_split_curves, plt,
                   render)
from questions.epochs import split_table, train_epochs
from runner import Question
from section6 import SKELETON, arch_of, seed_runs, train_group
from stats import DEAD_MARGIN, GAP_TOLERANCE, epochs_axis, final, group_by, mean_final, mean_std

BATCHNORM_CONTROLS = {  # control: (its inputs, the setting that is its lr); no batch norm, same net and seeds
    "larger_lr": ("raw", "larger_lr"),
    "standardized": ("standardized", "lr"),
    "standardized_larger_lr": ("standardized", "larger_lr"),
}


def train_batchnorm(settings, data, reads, env):
    """The epochs question with batch norm, beside the epochs question's runs; beyond the protocol, the
    controls without batch norm that tell its parts apart (BATCHNORM_CONTROLS), in one lockstep group.
    Not in the epochs question's group, whose net they share: it scores the training set every epoch, and
    with them in it epochs + batchnorm took 115 CPU-s against 103 apart (measured beside run_all.sh)."""
    result = train_epochs(settings, data, reads, env, batch_norm=True)
    runs = [run for control, (features, lr) in BATCHNORM_CONTROLS.items()
            for run in seed_runs(settings, settings[lr], control=control, features=features)]
    controls, _ = train_group(data, runs, arch_of(settings, batch_norm=False), settings, env,
                              "controls without batch norm", eval_train="final")
    return {**result, "baseline_runs": reads["epochs"]["runs"], "control_runs": controls}


RECOVERS_MOST = 0.8  # a control that closes 80% of batch norm's accuracy gain accounts for most of it


def eval_gap_finding(train_batch, train_eval, val):
    """With batch norm: does the final model in eval mode score the training set as it scores validation (so
    a val-above-train gap is only how train accuracy is measured)? Accuracies are means over seeds."""
    if train_batch >= val - GAP_TOLERANCE:
        case = "no_gap"
    elif abs(train_eval - val) <= GAP_TOLERANCE:
        case = "eval_mode_explains"
    else:
        case = "eval_mode_does_not_explain"
    return dict(case=case, train_batch=train_batch, train_eval=train_eval, val=val,
                difference=train_eval - val)


def batchnorm_findings(plain, normed, extent):
    """6.1.2-3: how batch norm helps, measured: every layer's ReLU-input scale at initialisation with and
    without it, accuracy after the same training, dead units at the end, train accuracy in eval mode."""
    if not normed:
        return [dict(case="all_diverged")]

    def mean_layers(runs, key):
        values = [r[key] for r in runs if r.get(key) is not None]
        return np.mean(values, axis=0) if values else None
    rms_plain = mean_layers(plain, "relu_input_rms_init")
    rms_normed = mean_layers(normed, "relu_input_rms_init")
    acc_plain, acc_normed = mean_final(plain, "val_acc"), mean_final(normed, "val_acc")
    case = ("trains_further" if acc_normed > acc_plain + GAP_TOLERANCE else
            "does_not_help" if acc_normed < acc_plain - GAP_TOLERANCE else "no_difference")
    findings = [dict(case="scales", extent=extent, first=rms_plain[0], low=rms_plain[1:].min(),
                     high=rms_plain[1:].max(), spread=rms_plain.max() / rms_plain.min(),
                     normed_low=rms_normed.min(), normed_high=rms_normed.max()),
                dict(case=case, epochs=len(epochs_axis(normed)), acc_normed=acc_normed, acc_plain=acc_plain,
                     loss_normed=mean_final(normed, "val_loss"), loss_plain=mean_final(plain, "val_loss"))]
    dead_plain = mean_layers(plain, "dead_relu_fraction")
    dead_normed = mean_layers(normed, "dead_relu_fraction")
    if dead_plain is not None and dead_normed is not None:
        alive = dead_plain.mean() > dead_normed.mean() + DEAD_MARGIN
        findings.append(dict(case="keeps_units_alive" if alive else "dead_units_do_not_explain",
                             dead_plain=dead_plain.mean(), dead_normed=dead_normed.mean()))
    return findings + [eval_gap_finding(mean_final(normed, "train_acc"), mean_final(normed, "train_eval_acc"),
                                        mean_final(normed, "val_acc"))]


def rounded_range(low, high):
    """'1.00' when the values agree to 2 decimals, else '0.98 to 1.02'."""
    low, high = f"{low:.2f}", f"{high:.2f}"
    return low if low == high else f"{low} to {high}"


COMPARED = ("after the same {epochs} epochs, validation accuracy {acc_normed:.3f} with batch norm against "
            "{acc_plain:.3f} without (loss {loss_normed:.3f} against {loss_plain:.3f})")
MEASURED = ("With batch norm, train accuracy averaged over the last epoch's batches in train mode "
            "{train_batch:.3f}, the final model in eval mode {train_eval:.3f} on the training set and "
            "{val:.3f} on validation")
BATCHNORM_TEXT = {
    "all_diverged": "Every run with batch norm diverged.",
    "scales": lambda f: (
        f"The inputs are raw degrees (longitude {f['extent'][0]:.0f} to {f['extent'][1]:.0f}, latitude "
        f"{f['extent'][2]:.0f} to {f['extent'][3]:.0f}). At initialisation, without batch norm the first "
        f"layer's ReLUs get inputs of RMS {f['first']:.3g} and the others {f['low']:.2g} to {f['high']:.2g}, "
        f"a spread of {f['spread']:.0f}x across layers that one learning rate has to serve; batch norm puts "
        f"every layer's at {rounded_range(f['normed_low'], f['normed_high'])}."),
    "trains_further": "So batch norm trains further in the same steps: " + COMPARED + ".",
    "does_not_help": "Here it does not help: " + COMPARED + ".",
    "no_difference": "Here it makes no difference: " + COMPARED + ".",
    "keeps_units_alive": ("It also keeps units alive: {dead_plain:.0%} of the hidden ReLUs are dead at the "
                          "end without it, {dead_normed:.0%} with it, since normalised inputs straddle 0."),
    "dead_units_do_not_explain": ("Dead units do not explain it: {dead_plain:.0%} of the hidden ReLUs are "
                                  "dead at the end without batch norm, {dead_normed:.0%} with it."),
    "no_gap": MEASURED + ": validation is not above train, so there is no gap to explain.",
    "eval_mode_explains": MEASURED + (": in eval mode train matches validation, so the val-above-train gap "
                                      "comes from measuring train in train mode during the epoch (batch "
                                      "statistics, weights still moving), not from the splits."),
    "eval_mode_does_not_explain": MEASURED + (": in eval mode train and validation still differ by "
                                              "{difference:+.3f}, so how train accuracy is measured does not "
                                              "explain the whole gap."),
}


def controls_findings(plain, normed, controls):
    """What batch norm's gain is made of: each control without batch norm (name -> runs; its inputs scaled,
    its lr larger, or both) against the plain net and batch norm, as the share of batch norm's gain in final
    validation accuracy it recovers; then which part the best control leaves to the normalisation between
    layers."""
    acc_plain, acc_normed = mean_final(plain, "val_acc"), mean_final(normed, "val_acc")
    gain = acc_normed - acc_plain
    if gain <= GAP_TOLERANCE:
        return [dict(case="no_gain_to_explain", acc_plain=acc_plain, acc_normed=acc_normed)]
    findings = []
    for name, runs in controls.items():
        ok = [r for r in runs if r["status"] == "ok"]
        if not ok:
            findings.append(dict(case="control_diverged", control=name, lr=runs[0]["lr"]))
            continue
        acc = mean_final(ok, "val_acc")
        recovered = (acc - acc_plain) / gain
        case = ("recovers_all" if recovered >= 1 else "recovers_most" if recovered >= RECOVERS_MOST
                else "below_plain" if acc < acc_plain - GAP_TOLERANCE
                else "recovers_none" if acc <= acc_plain + GAP_TOLERANCE else "recovers_part")
        findings.append(dict(case=case, control=name, lr=ok[0]["lr"], features=ok[0]["features"], acc=acc,
                             recovered=recovered, acc_plain=acc_plain, acc_normed=acc_normed))
    recovered = [f for f in findings if "recovered" in f]
    if recovered:
        top = max(recovered, key=lambda f: f["recovered"])
        case = ("between_layers" if top["recovered"] < RECOVERS_MOST
                else "inputs_and_step" if top["recovered"] < 1 else "inputs_and_step_all")
        findings.append(dict(case=case, control=top["control"], left=1 - top["recovered"], acc=top["acc"],
                             acc_normed=acc_normed))
    return findings


CONTROL_NAMES = {"larger_lr": "raw inputs at lr {lr:g}", "standardized": "standardised inputs at lr {lr:g}",
                 "standardized_larger_lr": "standardised inputs at lr {lr:g}"}
RECOVERED = ("Without batch norm, {name} reach validation accuracy {acc:.3f} (plain {acc_plain:.3f}, batch "
             "norm {acc_normed:.3f}): {recovered:.0%} of batch norm's gain")
CONTROLS_TEXT = {
    "no_gain_to_explain": ("Batch norm gains nothing here (validation accuracy {acc_normed:.3f} against "
                           "{acc_plain:.3f}), so the controls have no gain to split."),
    "control_diverged": lambda f: f"Without batch norm, {control_name(f)} diverged.",
    "recovers_all": lambda f: RECOVERED.format(name=control_name(f), **f) + ", all of it.",
    "recovers_most": lambda f: RECOVERED.format(name=control_name(f), **f) + ", most of it.",
    "recovers_part": lambda f: RECOVERED.format(name=control_name(f), **f) + ", part of it.",
    "recovers_none": lambda f: RECOVERED.format(name=control_name(f), **f) + ", none of it.",
    "below_plain": lambda f: (
        f"Without batch norm, {control_name(f)} reach validation accuracy {f['acc']:.3f}, below the plain "
        f"net's {f['acc_plain']:.3f} (batch norm {f['acc_normed']:.3f}): none of batch norm's gain."),
    "between_layers": lambda f: (
        f"Even the best control ({CONTROL_NAMES[f['control']].split(' at ')[0]}) leaves {f['left']:.0%} of "
        "the gain to what only batch norm does: normalising every layer's inputs, at every step."),
    "inputs_and_step": lambda f: (
        f"So the input's scale and the step size account for most of it: "
        f"{CONTROL_NAMES[f['control']].split(' at ')[0]} reach {f['acc']:.3f} against batch norm's "
        f"{f['acc_normed']:.3f}, leaving {f['left']:.0%} to normalising between layers."),
    "inputs_and_step_all": lambda f: (
        f"So the input's scale and the step size account for all of it: "
        f"{CONTROL_NAMES[f['control']].split(' at ')[0]} reach {f['acc']:.3f}, at least batch norm's "
        f"{f['acc_normed']:.3f}, so on this net normalising between layers adds nothing beyond them."),
}


def control_name(f):
    return CONTROL_NAMES[f["control"]].format(lr=f["lr"])


def report_batchnorm(result):
    plain, normed, controls = result["baseline_runs"], result["runs"], result.get("control_runs", [])
    by_control = group_by(controls, "control")
    fig, axes = plt.subplots(2, 2 + bool(controls), figsize=(19 if controls else 13, 9), sharey="row",
                             layout="constrained")
    plot_split_curves(axes[0, 0], axes[1, 0], plain, "no batch norm", eval_mode_train=True)
    plot_split_curves(axes[0, 1], axes[1, 1], normed, "batch norm", eval_mode_train=True)
    if controls:
        named = [(f"no batch norm (lr {plain[0]['lr']:g})", plain), ("batch norm", normed)]
        for color, (label, runs) in zip(PALETTE, named + [(control_name(runs[0]), runs)
                                                          for runs in by_control.values()]):
            for ax, metric in ((axes[0, 2], "loss"), (axes[1, 2], "acc")):
                plot_mean_band(ax, epochs_axis(runs), [r["history"][f"val_{metric}"] for r in runs], label,
                               color=color, linewidth=2)
        finish(axes[0, 2], "epoch", "loss (cross-entropy, nats)",
               "controls without batch norm: validation loss", fontsize=8)
        finish(axes[1, 2], "epoch", "accuracy (fraction correct)", "controls: validation accuracy",
               legend=False)
    ok = [r for r in normed if r["status"] == "ok"]
    plain_ok = [r for r in plain if r["status"] == "ok"]
    found = batchnorm_findings(plain_ok, ok, result["data"]["extent"])
    if controls and ok and plain_ok:
        found = found[:2] + controls_findings(plain_ok, ok, by_control) + found[2:]
    answer = from_sentences("6.1.2-3", "How does batch norm contribute to training?",
                    [render({**BATCHNORM_TEXT, **CONTROLS_TEXT}, f) for f in found])
    gap = [final(n, "val_acc") - final(p, "val_acc") for p, n in zip(plain, normed)
           if final(n, "val_acc") is not None and final(p, "val_acc") is not None]
    paired = f"Batch norm changes the final validation accuracy by {mean_std(gap)}, paired by seed."

    def layers(runs, key):
        return " / ".join(f"{v:.3g}" for v in np.mean([r[key] for r in runs if r[key]], 0))
    scales = markdown_table(["model", "RMS of each hidden layer's ReLU input at initialisation (first step, "
                             "val set)", "at the end (eval mode, val set)"],
                            [[label, layers(runs, "relu_input_rms_init"), layers(runs, "relu_input_rms")]
                             for label, runs in (("no batch norm", plain), ("batch norm", ok))])
    named_runs = [("no batch norm", plain), ("batch norm", normed)] + [
        (f"control: {control_name(runs[0])}, no batch norm", runs) for runs in by_control.values()]
    caption = ("The same net without (left) and with (middle) batch norm, on shared axes: how far each gets "
               "in the same epochs" + ("; right, the controls without batch norm: how close each gets to "
                                       "batch norm's validation curve." if controls else "."))
    return Report([split_table(named_runs), paired, scales], {"batchnorm.png": (fig, caption)}, [], [answer])


QUESTION = Question(
    "batchnorm", "6.1.2-3", "Batch norm (compared with 6.1.2-2)",
    dict(SKELETON, batch_size=256, epochs=100, larger_lr=0.01),
    train_batchnorm,
    report_batchnorm,
    reads=("epochs",))
