"""Reading runs, as several questions' findings do: means and spreads over seeds, final values, the paired
t-test that tells a difference from the seeds' noise, a loss's slope against its wiggle, shared thresholds."""
import math

import numpy as np

# Every number that decides a case, and why it has its value.
GAP_TOLERANCE = 0.01  # accuracies this close are equal: the standard error of an accuracy on the embedded
#   data's 6,315 validation points is at most 0.0063
OVERFIT_GAP = 0.03  # accuracy: train (eval mode) above validation, or validation apart from test, by three
#   times GAP_TOLERANCE is a real gap
SIGNIFICANCE = 0.05  # a rank correlation with a p-value below this is a relation, not chance
TIE_FLOOR = 0.005  # accuracy: a paired difference under this is a tie even when the seeds agree closely


def t_95(n):
    """The two-sided 95% critical value of Student's t for the mean of n paired differences (n - 1 df)."""
    from scipy.stats import t as student_t  # here, not at the top: scipy.stats takes 0.5 s, --help none
    return float(student_t.ppf(0.975, n - 1))


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


def as_array(values):
    """Floats with NaN where a run diverged (None)."""
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
    diverged = [f"seed {r['seed']} diverged at epoch {r['diverged_epoch']}" for r in runs
                if r["status"] == "diverged"]
    return "; ".join(diverged) or "ok"


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
    """other's values minus base's, paired by seed (lists in seed order; None, a diverged seed, left out): the
    differences, their mean, sample std and n, and the noise, the half-width a paired t-test at 95% needs
    (None with one seed). case: 'tie' within the noise or TIE_FLOOR, else 'above' or 'below'; 'one_seed',
    'none'."""
    diffs = [o - b for b, o in zip(base, other) if b is not None and o is not None]
    if not diffs:
        return dict(case="none", n=0)
    mean, std, n = float(np.mean(diffs)), seed_std(diffs), len(diffs)
    noise = t_95(n) * std / math.sqrt(n) if n > 1 else None
    case = ("one_seed" if noise is None else "tie" if abs(mean) <= max(noise, TIE_FLOOR) else
            "above" if mean > 0 else "below")
    return dict(case=case, difference=mean, std=std, n=n, noise=noise, diffs=diffs)


def listed(values, form="{}"):
    return ", ".join("diverged" if v is None else form.format(v) for v in values)


SLOPE_EPOCHS = 20  # the last epochs whose least-squares line says whether a loss still moves: the last
#   fifth of the protocol's 100, enough epochs to see a trend through the epoch-to-epoch wiggle
FALL_WIGGLES = 2  # a loss still moves when its line's change over those epochs exceeds twice its wiggle (the
#   std of the epochs about the line): a smaller change is one a single epoch's scatter could hide


def falling_finding(curves, window=SLOPE_EPOCHS):
    """Is a validation loss still falling (or rising) at the end? curves: one per seed, none diverged. Per
    seed, the least-squares line over its last `window` epochs: its change over them, and the std of the
    epochs about it (the wiggle); 'falling' or 'rising' when the mean change over seeds exceeds FALL_WIGGLES
    times the mean wiggle, else 'flat'."""
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


def falls_with(xs, ys):
    """Whether ys never rises as xs grows."""
    ordered = [y for _, y in sorted(zip(xs, ys))]
    return all(b <= a for a, b in zip(ordered, ordered[1:]))


def at_chance(values, chance):
    """Per-seed values with a diverged seed (None) counted at chance, the score of a net that learned nothing:
    a failure that loses comparisons, not a missing value."""
    return [chance if v is None else v for v in values]


def mean_std_at_chance(values, chance):
    """'mean ± std' over every seed, a diverged one counted at chance (at_chance), then how many diverged."""
    diverged = values.count(None)
    return mean_std(at_chance(values, chance)) + (f" ({diverged} diverged)" if diverged else "")
