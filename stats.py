"""Reading runs over seeds: means and spreads, final values, the paired t-test, a loss's slope, thresholds."""
import math

import numpy as np

GAP_TOLERANCE = 0.01  # accuracies this close are equal: the std error on 6,315 val points is <= 0.0063
OVERFIT_GAP = 0.03  # accuracy: train (eval mode) over val, or val apart from test, by 3 tolerances
SIGNIFICANCE = 0.05  # a rank correlation with a p-value below this is a relation, not chance
TIE_FLOOR = 0.005  # accuracy: a paired difference under this is a tie even when the seeds agree closely
SLOPE_EPOCHS = 20  # a loss's trend: its line over the protocol's last fifth, enough to see past the wiggle
FALL_WIGGLES = 2  # a loss moves when its line's change exceeds twice its wiggle: one epoch's could hide less


def seed_std(values):
    """The sample standard deviation (ddof=1) over seeds, the one convention of every report; 0 for one."""
    return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def mean_std(values, digits=3):
    """'mean +- std' over seeds (seed_std); None values (diverged runs) are left out and counted."""
    finite = [v for v in values if v is not None]
    if not finite:
        return "diverged"
    text = f"{np.mean(finite):.{digits}f}"
    if len(finite) > 1:
        text += f" ± {seed_std(finite):.{digits}f}"
    if len(finite) < len(values):
        text += f" ({len(values) - len(finite)} diverged)"
    return text


def as_array(values):  # None (a diverged run) as NaN
    return np.array([np.nan if v is None else v for v in values], dtype=float)


def final(run, key):
    return run["history"][key][-1]


def best(run, key, pick=min):
    values = [v for v in run["history"][key] if v is not None]
    return pick(values) if values else None


def mean_final(runs, key):
    return float(np.mean([final(r, key) for r in runs if final(r, key) is not None]))


def finals(runs, key):
    return mean_std([final(r, key) for r in runs])


def status_text(runs):
    return "; ".join(f"seed {r['seed']} diverged at epoch {r['diverged_epoch']}" for r in runs
                     if r["status"] == "diverged") or "ok"


def group_by(runs, key):
    groups = {}
    for run in runs:
        groups.setdefault(run[key], []).append(run)
    return groups


def epochs_axis(runs):
    return np.arange(1, len(runs[0]["history"]["val_loss"]) + 1)


def arch_label(run):
    return f"depth {run['depth']}, width {run['width']}"


def paired(base, other):
    """other - base by seed, diverged left out; 'tie' within a paired t-test's 95% half-width or TIE_FLOOR."""
    from scipy.stats import t as student_t  # here, not at the top: scipy.stats takes 0.5 s, --help none
    diffs = [o - b for b, o in zip(base, other) if b is not None and o is not None]
    if not diffs:
        return dict(case="none", n=0)
    mean, std, n = float(np.mean(diffs)), seed_std(diffs), len(diffs)
    noise = float(student_t.ppf(0.975, n - 1)) * std / math.sqrt(n) if n > 1 else None
    case = ("one_seed" if noise is None else "tie" if abs(mean) <= max(noise, TIE_FLOOR) else
            "above" if mean > 0 else "below")
    return dict(case=case, difference=mean, std=std, n=n, noise=noise, diffs=diffs)


def listed(values, form="{}"):
    return ", ".join("diverged" if v is None else form.format(v) for v in values)


def falling_finding(curves, window=SLOPE_EPOCHS):
    """Is a loss still falling? Per seed (none diverged), its line's change over `window` epochs vs wiggle."""
    values = [as_array(curve)[-window:] for curve in curves]
    x = np.arange(len(values[0]))
    if len(x) < 3:
        return dict(case="too_short")
    fits = [np.polyfit(x, v, 1) for v in values]
    change = float(np.mean([fit[0] for fit in fits])) * (len(x) - 1)
    wiggle = float(np.mean([np.std(v - np.polyval(fit, x), ddof=2) for v, fit in zip(values, fits)]))
    case = ("falling" if change < -FALL_WIGGLES * wiggle else "rising" if change > FALL_WIGGLES * wiggle
            else "flat")
    return dict(case=case, change=change, wiggle=wiggle, window=len(x),
                wiggle_share=abs(change) / wiggle if wiggle else math.inf)


def falls_with(xs, ys):  # ys never rises as xs grows
    ordered = [y for _, y in sorted(zip(xs, ys))]
    return all(b <= a for a, b in zip(ordered, ordered[1:]))


def at_chance(values, chance):
    """A diverged seed (None) counted at chance, a net that learned nothing: it loses comparisons."""
    return [chance if v is None else v for v in values]


def mean_std_at_chance(values, chance):
    diverged = values.count(None)
    return mean_std(at_chance(values, chance)) + (f" ({diverged} diverged)" if diverged else "")
