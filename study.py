"""The study report, OUT/README.md (a summary, a manifest, then every question's .md in the exercise's order),
and OUT/manifest.json, from the saved results and run_all.sh's timings. run_all.sh calls it last."""
import argparse
import json
import os
import subprocess
import time

import numpy as np

import cnn
import mlp
import runner
from cache import read_result
from common import HERE, UserError, library_versions, save_json, save_text
from plots import markdown_table
from stats import mean_std

COURSE_ROWS = {"train": 106_897, "val": 13_363, "test": 13_363}  # the course's CSVs, which the report used
COURSE_REPORT = {  # the course report's numbers, as it gives them
    "lr": "0.01: ~1.5-1.6; 0.001: ~2.1; 0.0005: ~2.7; 1e-5: ~3.48; 1 and 0.2: flat ~3.26",
    "epochs": "~1.5-1.6; ~0.40",
    "batchnorm": "~0.3; ~0.92; validation above train",
    "batch_size": "16 and 128: ~0.38-0.39; 1024: ~0.16",
    "depth_width": "1: ~0.54, 2: ~0.80, 6: ~0.86, 10: ~0.86; best depth 6 width 32",
    "gradients": "0, 30, 60: exactly 0; 90: ~1e-12-1e-13; 95: ~1e-7-1e-8; 99: ~1e-3-1e-4",
}


def git_commit(out):
    """The commit the code ran from, and whether tracked files other than results/ and out differ from it."""
    def git(*args):
        done = subprocess.run(["git", *args], capture_output=True, text=True, check=True, cwd=HERE)
        return done.stdout.strip()
    out = os.path.relpath(os.path.abspath(out), HERE)
    excluded = [":(exclude)results"] + ([f":(exclude){out}"] if not out.startswith("..") else [])
    try:
        dirty = git("status", "--porcelain", "--untracked-files=no", "--", ".", *excluded)
        return git("rev-parse", "HEAD") + (" (with uncommitted changes)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return None


def section_text(out, key, said_once):
    """A question's .md, headings one level down, links relative to out/, its settings a link to the .md, and
    messages the manifest gives once shortened (said_once: {long text: its short form})."""
    folder, question = key.split("/")
    path = os.path.join(out, folder, f"{question}.md")
    if not os.path.exists(path):
        return f"## {key}\n\nNo result: the question failed or was not run (see run_all.sh's output).\n"
    text = open(path).read()
    for long, short in said_once.items():
        text = text.replace(long, short)
    link = f"{folder}/{question}.md"
    text = text.split("\n## Settings\n")[0] + f"\nSettings: [{link}]({link}).\n"
    kept = text.splitlines()
    lines = ["#" + line if line.startswith("#") else line.replace("](", f"]({folder}/", 1)
             if line.startswith("![") else line for line in kept]
    lines.insert(0, f'<a id="{anchor(key)}"></a>\n')
    lines.insert(2, f"\n*`python {folder}.py --question {question}`*")
    return "\n".join(lines) + "\n"


def anchor(key):
    return key.replace("/", "-")


def summary_rows(out, keys):
    """A row per answer, from the reports made again from the saved files: item (a link), headline, key."""
    rows = []
    for key in keys:
        folder, name = key.split("/")
        question = next(q for q in (mlp if folder == "mlp" else cnn).QUESTIONS if q.name == name)
        try:
            report = question.report(read_result(os.path.join(out, f"{key}.json")))
        except UserError:
            continue
        rows += [(f"[{answer.item or name}](#{anchor(key)})", answer.headline, answer.key)
                 for answer in report.answers]
    return rows


def data_cell(info):
    """'embedded: data/europe (train N, ...)', or the folder."""
    if not info["dir"]:
        return "no result in this folder"
    rows = ", ".join(f"{split} {n:,}" for split, n in info["rows"].items())
    return ("embedded: " if info["source"] == "embedded" else "") + f"{info['dir']} ({rows})"


def stand_in_note(stand_ins):
    """The warning for the sections that ran on the embedded data."""
    if not stand_ins:
        return None
    return (f"> **Stand-in data.** {' and '.join(stand_ins)}: the project's embedded data, not the course's, "
            "so the numbers are not the course report's. For the course data: `bash run_all.sh --mlp-data "
            "CSV_DIR --cnn-data IMAGE_DIR` (the project's README says what each holds).\n")


def reproduction_rows(results):
    """Section 6 on the course's CSVs beside the course report's numbers."""
    def per(question, key, value):  # {key(run): [value(run) for each of its runs]}
        groups = {}
        for run in results[question]["runs"]:
            groups.setdefault(key(run), []).append(value(run))
        return groups

    def last(key):
        return lambda run: run["history"][key][-1]
    rows = []
    if "lr" in results:
        rows.append(("6.1.2-1 final validation loss by lr", "; ".join(
            f"{lr:g}: {np.mean([v for v in losses if v is not None]):.2f} (seeds "
            + ", ".join("diverged" if v is None else f"{v:.2f}" for v in losses) + ")"
            for lr, losses in per("lr", lambda r: r["lr"], last("val_loss")).items()), COURSE_REPORT["lr"]))
    for name, label in (("epochs", "6.1.2-2 100 epochs, no batch norm"), ("batchnorm", "6.1.2-3 batch norm")):
        if name in results:
            cells = [mean_std([last(key)(run) for run in results[name]["runs"]])
                     for key in ("val_loss", "val_acc", "train_acc", "train_eval_acc")]
            cell = f"{cells[0]}; {cells[1]}; train {cells[2]} in train mode, {cells[3]} in eval mode"
            rows.append((f"{label}: validation loss; accuracy", cell, COURSE_REPORT[name]))
    if "batch_size" in results:
        best = per("batch_size", lambda r: r["batch_size"],
                   lambda r: max(v for v in r["history"]["val_acc"] if v is not None))
        rows.append(("6.1.2-4 best validation accuracy by batch size",
                     ", ".join(f"{bs}: {np.mean(values):.3f}" for bs, values in best.items()),
                     COURSE_REPORT["batch_size"]))
    if "depth_width" in results:
        protocol = results["depth_width"]["settings"]["architectures"]  # not the matched-size extras
        by_arch = {arch: values for arch, values in per("depth_width", lambda r: (r["depth"], r["width"]),
                                                        last("val_acc")).items() if list(arch) in protocol}
        top = max(by_arch, key=lambda arch: np.mean(by_arch[arch]))
        cell = ", ".join(f"{d}: {np.mean(values):.3f}" for (d, w), values in by_arch.items() if w == 16)
        cell += f"; best depth {top[0]} width {top[1]} ({mean_std(by_arch[top])})"
        rows.append(("6.2.1 validation accuracy by depth (width 16)", cell, COURSE_REPORT["depth_width"]))
    if "gradients" in results:
        runs = [r for r in results["gradients"]["runs"] if r["status"] == "ok"]
        rows.append(("6.2.1-5 \\|\\|grad W\\|\\|² in the last epoch, by layer", "; ".join(
            f"{layer}: (" + ", ".join("0" if r["history"]["grad_sq_norm"][-1][layer] == 0 else
                                      f"{r['history']['grad_sq_norm'][-1][layer]:.0e}" for r in runs) + ")"
            for layer in (0, 30, 60, 90, 95, 99)) + " for seeds " + ", ".join(str(r["seed"]) for r in runs),
            COURSE_REPORT["gradients"]))
    return rows


def seeds_cell(results):
    """'3', or '3 (sweep 5)' where a question ran another number of seeds."""
    counts = {key.split("/")[1]: r["settings"]["seeds"] for key, r in results.items()
              if "seeds" in r["settings"]}
    if not counts:
        return None
    usual = max(set(counts.values()), key=list(counts.values()).count)
    others = ", ".join(f"{name} {n}" for name, n in counts.items() if n != usual)
    return f"{usual}" + (f" ({others})" if others else "")


def write_study_report(out, times, lanes, total, image_size):
    """times: (key, seconds, status) rows; lanes: the processes run side by side (script, questions)."""
    keys = [f"{script.SCRIPT.name}/{q.name}" for script in (mlp, cnn) for q in script.QUESTIONS
            if os.path.isdir(os.path.join(out, script.SCRIPT.name))]  # a section not run into out: left out
    wall = {key: float(seconds) for key, seconds, _ in times}
    status = {key: state for key, _, state in times}
    trained_nothing = set(status.values()) == {"reused"}
    results = {}
    for key in keys:
        try:
            with open(os.path.join(out, f"{key}.json")) as f:
                results[key] = json.load(f)
        except (OSError, ValueError):
            pass
    for key, result in results.items():  # a question that ran but whose models could not run is not "ok"
        if status.get(key) in ("ok", "reused") and result.get("models") and all(m["status"] == "not run"
                                                                    for m in result["models"]):
            status[key] = "not run"
    data = {}
    for section in ("mlp", "cnn"):
        meta = next((r["data"] for k, r in results.items() if k.startswith(section)), {})
        data[section] = {"source": "embedded" if "stand_in" in meta else meta.get("dir"),
                         "dir": meta.get("dir"), "rows": meta.get("rows"), "stand_in": meta.get("stand_in")}
    previous = os.path.join(out, "manifest.json")
    if trained_nothing and os.path.exists(previous):
        with open(previous) as f:  # nothing trained: the run that trained every result still describes them
            manifest = json.load(f)
        total, status = manifest["total_wall_s"], manifest["status"]
        wall = {key: float(seconds) for key, seconds in manifest["questions"].items()}
    else:
        manifest = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "git_commit": git_commit(out),
                    "seeds": seeds_cell(results), "devices": sorted({r["device"] for r in results.values()}),
                    "versions": library_versions(), "data": data, "cnn_image_size": image_size,
                    "total_wall_s": total, "questions": wall, "status": status, "lanes": lanes}
        save_json(previous, manifest)

    lines = ["# The study, answered\n",
             "Generated by `bash run_all.sh` from the files in this folder; do not edit by hand.\n"]
    note = stand_in_note([info["stand_in"] for info in data.values() if info["stand_in"]])
    failed = [k for k, v in status.items() if v == "failed"]
    lines += [runner.QUICK_BANNER] * any(r.get("config", {}).get("quick") for r in results.values())
    lines += [note] if note else []
    lines += [f"> **Failed in this run:** {', '.join(failed)}. Their sections below are missing or stale.\n"
              ] if failed else []
    rows = [("date", manifest["date"]), ("git commit", manifest["git_commit"]), ("seeds", manifest["seeds"]),
            ("device", ", ".join(manifest["devices"])), ("total wall time", f"{total:.0f} s")]
    rows += [(f"{section} data", data_cell(info)) for section, info in data.items()]
    rows += [("versions", ", ".join(f"{name} {version}" for name, version in manifest["versions"].items()))]
    not_run = {(m["reason"], m.get("fix")) for r in results.values() for m in r.get("models", [])
               if m["status"] == "not run"}
    rows += [("not run", f"{reason}. Fix: {fix}" if fix else reason) for reason, fix in sorted(not_run)]
    said_once = {}
    for reason, fix in sorted(not_run):  # each question's .md says it whole; here the manifest says it once
        short = f"{reason.split(' (')[0]} (see the manifest)"
        said_once.update({f"{reason}. Fix: {fix}": short, reason: short} if fix else {reason: short})
    lines += ["## Summary\n", markdown_table(["item", "answer", "key number"], summary_rows(out, keys))]
    lines += ["## Manifest\n", markdown_table(["", ""], rows),
              markdown_table(["question", "wall time (s; lanes side by side)", "status"],
                             [(k, f"{wall[k]:.1f}", status[k]) for k in keys if k in wall])]
    if data["mlp"]["rows"] == COURSE_ROWS:
        section_6 = {key.split("/")[1]: r for key, r in results.items() if key.startswith("mlp/")}
        lines += ["## Section 6 against the course report\n",
                  "Mean over seeds (± their standard deviation); the report trained one model per setting, "
                  "seed 42, the first of the suite's seeds.\n",
                  markdown_table(["question", "this suite, course data", "the course report"],
                                 reproduction_rows(section_6))]
    lines += [section_text(out, key, said_once) for key in keys]
    save_text(os.path.join(out, "README.md"), "\n".join(lines))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", required=True, help="results folder")
    parser.add_argument("--times", required=True, help="--times' file: question, seconds, status a line")
    parser.add_argument("--lanes", required=True,
                        help="the processes run side by side, a line each: the script, then its questions")
    parser.add_argument("--total", type=float, required=True, help="total wall seconds")
    parser.add_argument("--image-size", type=int, required=True, help="Section 7's image size, as run")
    cli = parser.parse_args()
    with open(cli.times) as f:
        timings = [line.rstrip("\n").split("\t") for line in f if line.strip()]
    with open(cli.lanes) as f:
        lanes_run = [line.split() for line in f if line.strip()]
    write_study_report(cli.out, timings, lanes_run, cli.total, cli.image_size)
