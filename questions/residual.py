"""6.2.1-6 fixing the vanishing gradients: eight changes to the 100-layer net, and for each whether it
solves the problem, with the measured cause where it does not.
"""
import math

import numpy as np

from plots import PALETTE, from_sentences, Report, markdown_table, plt, render
from questions.gradients import (GRADIENT_LAYERS, ZERO_PANEL, dead_layer_finding, gradient_table, init_panels,
                                 layer_ranges, layer_series, lines_with_zero_row, seed_grads, zero_layers)
from runner import Question
from section6 import GRADIENTS, arch_of, seed_runs, train_group
from stats import GAP_TOLERANCE, as_array, final, seed_std

RESIDUAL_FIXES = {  # fix: (how the report names it, what it changes in the plain net)
    "skip_post": ("skips x + ReLU(Linear(x))", dict(residual="post")),
    "batch_norm": ("batch norm", dict(batch_norm=True)),
    "skip_post_bn": ("skips x + ReLU(BN(Linear(x)))", dict(residual="post", batch_norm=True)),
    "skip_pre": ("pre-activation skips x + Linear(ReLU(x))", dict(residual="pre")),
    "skip_pre_bn": ("pre-activation skips x + Linear(ReLU(BN(x)))", dict(residual="pre", batch_norm=True)),
    "skipinit": ("SkipInit x + g * ReLU(Linear(x)), g from 0", dict(residual="skipinit")),
    "he_init": ("He (Kaiming-normal) initialisation", dict(init="he")),
    "leaky_relu": ("LeakyReLU in place of ReLU", dict(activation="leaky_relu")),
}


def train_residual(settings, data, reads, env):
    results = []
    for fix, (_, changes) in RESIDUAL_FIXES.items():
        runs = seed_runs(settings, settings["lr"], fix=fix)
        results += train_group(data, runs, arch_of(settings, **changes), settings, env,
                               f"depth {settings['depth']} {fix}", record_grads=True, diagnose=("init",))[0]
    return {"runs": results, "baseline_runs": reads["gradients"]["runs"],
            "fixes": {fix: label for fix, (label, _) in RESIDUAL_FIXES.items()}}


SOLVED_SDS = 2  # a fix solves the problem when it beats the plain net by more than two seed std deviations


def first_dead_layer(run):
    """The first layer whose input is exactly 0 on the first batch at initialisation, with the norm of the
    input of the layer before it; None when there is none."""
    norms = run["init_activation_norm"]
    layer = next((i for i, norm in enumerate(norms) if norm == 0), None)
    return None if layer is None else (layer, norms[layer - 1] if layer else None)


def lowest_gradient(run):
    """(the lowest layer with a nonzero gradient in the last epoch, its ||grad W||^2, the decades from it to
    the output layer's)."""
    grads = seed_grads(run)[-1]
    layer = next((i for i, g in enumerate(grads) if g > 0), None)
    return None if layer is None else (layer, grads[layer], float(np.log10(grads[-1] / grads[layer])))


def fix_verdict(runs, plain_accs):
    """6.2.1-6 for one change, with its measured cause when it fails: 'diverged' (the first step's layer-0
    gradient), exact zeros below a dead layer (where and how small the activations above it are), without one
    or, with LeakyReLU, which passes no exact 0 back, by underflow (over how many decades); 'no_gain' when
    every layer gets a gradient but validation accuracy is not above the plain net's by SOLVED_SDS seed
    standard deviations (pooled over the two); else 'solved'. plain_accs: the plain net's final validation
    accuracy per seed."""
    diverged = [r for r in runs if r["status"] != "ok"]
    if diverged:
        first_grad = max(r["init_grad_sq_norm"][0] for r in runs)
        return dict(case="diverged", diverged=len(diverged), seeds=len(runs), first_grad=first_grad,
                    output_grad=max(r["init_grad_sq_norm"][-1] for r in runs), lr=runs[0]["lr"],
                    step=runs[0]["lr"] * math.sqrt(first_grad))
    zeros = [(r["seed"], zero_layers(r)) for r in runs if zero_layers(r)]
    if zeros:
        dead = [(r["seed"], first_dead_layer(r)) for r in runs if first_dead_layer(r)]
        lowest = [(r["seed"], lowest_gradient(r)) for r in runs if lowest_gradient(r)]
        case = ("zeros_dead_layer" if dead else "zeros_underflow" if runs[0].get("activation") == "leaky_relu"
                else "zeros_no_dead_layer")
        return dict(case=case, zeros=zeros, dead=dead, lowest=lowest)
    accs = [final(r, "val_acc") for r in runs]
    val, plain = float(np.mean(accs)), float(np.mean(as_array(plain_accs)))
    spread = math.sqrt((seed_std(accs) ** 2 + seed_std(as_array(plain_accs)) ** 2) / 2)
    margin = max(SOLVED_SDS * spread, GAP_TOLERANCE)
    return dict(case="solved" if val > plain + margin else "no_gain", val=val, plain=plain, margin=margin,
                std=seed_std(accs))


def fixes_findings(plain, fixes):
    """6.2.1-6: fixes: (label, runs) per change tried."""
    plain_accs = [final(r, "val_acc") for r in plain]
    verdicts = [dict(fix_verdict(runs, plain_accs), label=label) for label, runs in fixes]
    solved = [f["label"] for f in verdicts if f["case"] == "solved"]
    return [dict(case="solved_by" if solved else "none_solved", solved=solved,
                 plain_acc=float(np.mean(as_array(plain_accs))), sds=SOLVED_SDS), *verdicts]


def zeros_text(f):
    return "layers still get exactly zero gradient (" + "; ".join(
        f"seed {seed}: {layer_ranges(z)}" for seed, z in f["zeros"]) + ")"


def dead_text(f):
    return "; ".join(f"seed {seed}: layer {layer}'s input is exactly 0 at initialisation"
                     + ("" if before is None else f", the layer before it gets inputs of norm {before:.1e}")
                     for seed, (layer, before) in f["dead"])


def underflow_text(f):
    return "; ".join(f"seed {seed}: the lowest layer with a gradient is layer {layer}, ||grad W||^2 "
                     f"{value:.1e}, {decades:.0f} decades below the output layer's"
                     for seed, (layer, value, decades) in f["lowest"])


NO_DEAD_LAYER = ", though no layer is dead at initialisation"
FIXES_TEXT = {
    "solved_by": lambda f: (f"Solved by: {', '.join(f['solved'])} (every layer gets a gradient, and "
                            f"validation accuracy rises above the plain net's {f['plain_acc']:.3f} by more "
                            f"than {f['sds']:g} seed standard deviations)."),
    "none_solved": ("No change solved it: none gives every layer a gradient and validation accuracy above "
                    "the plain net's {plain_acc:.3f} by more than {sds:g} seed standard deviations."),
    "solved": ("With {label}: yes, every layer gets a gradient and validation accuracy rises to {val:.3f} ± "
               "{std:.3f}, beyond the plain net's {plain:.3f} + {margin:.3f}."),
    "diverged": ("With {label}: no, {diverged} of {seeds} seeds diverged: the first step's ||grad W||^2 is "
                 "{first_grad:.1e} at layer 0 (against {output_grad:.1e} at the output layer), so at lr "
                 "{lr:g} the first update moves layer 0's weights by {step:.2g} (the norm of the step)."),
    "zeros_dead_layer": lambda f: f"With {f['label']}: no, {zeros_text(f)}: {dead_text(f)}.",
    "zeros_no_dead_layer": lambda f: f"With {f['label']}: no, {zeros_text(f)}{NO_DEAD_LAYER}.",
    "zeros_underflow": lambda f: (f"With {f['label']}: no, {zeros_text(f)}{NO_DEAD_LAYER}; "
                                  f"{underflow_text(f)}: through layer after layer of slope 0.01 the "
                                  "gradient shrinks below what float32 holds."),
    "no_gain": ("With {label}: no, every layer gets a gradient, but validation accuracy {val:.3f} ± "
                "{std:.3f} is not above the plain net's {plain:.3f} by more than {margin:.3f}."),
}


def report_residual(result):
    variants = [("plain", result["baseline_runs"])] + [
        (label, [r for r in result["runs"] if r["fix"] == fix]) for fix, label in result["fixes"].items()]
    layers = [layer for layer in GRADIENT_LAYERS if layer < len(variants[0][1][0]["init_activation_norm"])]
    drawn = [(label, next(r for r in runs if r["status"] == "ok")) for label, runs in variants
             if any(r["status"] == "ok" for r in runs)]
    not_drawn = [label for label, runs in variants if not any(r["status"] == "ok" for r in runs)]
    columns = math.ceil(len(drawn) / 2) if len(drawn) > 4 else len(drawn)
    rows = math.ceil(len(drawn) / columns)
    fig = plt.figure(figsize=(5 * columns + 2, 4.6 * rows + 0.6), layout="constrained")
    grid = fig.add_gridspec(rows, columns)
    panels = []
    for i, (label, run) in enumerate(drawn):
        grads = seed_grads(run)
        panels.append(lines_with_zero_row(grid[i // columns, i % columns], np.arange(1, len(grads) + 1),
                                          layer_series(grads, layers), f"{label}\n(seed {run['seed']})",
                                          "epoch", "||grad W||², mean over the epoch",
                                          render(ZERO_PANEL, dead_layer_finding([run]))))
    positive = np.concatenate([seed_grads(run)[:, layers].ravel() for _, run in drawn])
    positive = positive[positive > 0]
    for ax in panels:  # one y range for every change, so that they compare by eye
        if ax.get_lines() and positive.size and ax.get_yticks().size:
            ax.set_ylim(positive.min() / 3, positive.max() * 3)
    panels[-1].legend(fontsize=9, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.suptitle("Per-layer gradient of the 100-layer net with each change, one seed each (the table has "
                 "every seed); one y axis for all", fontsize=13)
    init = plt.figure(figsize=(16, 5.5), layout="constrained")
    init_panels(init.add_gridspec(1, 1)[0, 0], lambda key: [(label, runs[0][key], (["0.65"] + PALETTE)[i])
                                                            for i, (label, runs) in enumerate(variants)])
    init.suptitle(f"At initialisation, seed {variants[0][1][0]['seed']}, first batch: why each change trains "
                  "or not")
    rows = [[label, f"{runs[0]['init_activation_norm'][1]:.2g} / {runs[0]['init_activation_norm'][-1]:.2g}",
             f"{runs[0]['init_grad_sq_norm'][0]:.2g} / {runs[0]['init_grad_sq_norm'][-1]:.2g}"]
            for label, runs in variants]
    init_table = markdown_table(["model", "activation norm at initialisation: layer 1 / output layer",
                                 "first step's ||grad W||²: layer 0 / output layer"], rows)
    answer = from_sentences("6.2.1-6", "Implement the change: did it solve the problem?",
                    [render(FIXES_TEXT, f) for f in fixes_findings(variants[0][1], variants[1:])])
    blocks = ("Blocks: 'skips x + ReLU(Linear(x))' adds the hidden layer's output to its input (a "
              "post-activation skip, whose increments are never negative); 'pre-activation skips x + "
              "Linear(ReLU(x))' is He et al. (2016)'s form, whose increments can take either sign; "
              "'SkipInit' scales each block's increment by a learnable scalar that starts at 0 (De & Smith "
              "2020), so that the net starts as its first layer and the output layer; all skip every hidden "
              "layer but the first.")
    body = [gradient_table(variants, layers), f"At initialisation, seed {variants[0][1][0]['seed']}:\n",
            init_table, blocks]
    caption = ("A change works where every layer's line stays well above 0, with no ▼ (an exactly-zero "
               "gradient) in the strip under it.")
    if not_drawn:
        caption += f" Not drawn, no finite gradient (diverged in the first epoch): {', '.join(not_drawn)}."
    init_caption = ("At initialisation, per layer: the activation reaching it (left) and its first gradient "
                    "(right); the widest, grey line, drawn first, is the plain net.")
    return Report(body, {"residual.png": (fig, caption), "residual_init.png": (init, init_caption)}, [],
                  [answer])


QUESTION = Question(
    "residual", "6.2.1-6", "Fixing the vanishing gradients (bonus)",
    GRADIENTS,
    train_residual,
    report_residual,
    reads=("gradients",))
