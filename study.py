"""The study report OUT/README.md (a summary, a manifest, every question's .md) and OUT/manifest.json."""
import argparse
import json
import os
import subprocess
import time
from pathlib import Path

import numpy as np

import cnn
import mlp
import runner
from cache import read_result
from common import HERE, library_versions, save_json, save_text
from plots import markdown_table
from stats import best, final, finals, group_by, listed, mean_std

COURSE_REPORT = {  # per question: what the row shows, and the course report's numbers, as it gives them
    "lr": ("6.1.2-1 final validation loss by lr",
           "0.01: ~1.5-1.6; 0.001: ~2.1; 0.0005: ~2.7; 1e-5: ~3.48; 1 and 0.2: flat ~3.26"),
    "epochs": ("6.1.2-2 100 epochs, no batch norm: validation loss; accuracy", "~1.5-1.6; ~0.40"),
    "batchnorm": ("6.1.2-3 batch norm: validation loss; accuracy", "~0.3; ~0.92; validation above train"),
    "batch_size": ("6.1.2-4 best validation accuracy by batch size", "16 and 128: ~0.38-0.39; 1024: ~0.16"),
    "depth_width": ("6.2.1 validation accuracy by depth (width 16)",
                    "1: ~0.54, 2: ~0.80, 6: ~0.86, 10: ~0.86; best depth 6 width 32"),
    "gradients": ("6.2.1-5 \\|\\|grad W\\|\\|² in the last epoch, by layer",
                  "0, 30, 60: exactly 0; 90: ~1e-12-1e-13; 95: ~1e-7-1e-8; 99: ~1e-3-1e-4"),
}


def git_commit():
    """The commit the code ran from, and whether tracked files outside results/ differ from it."""
    def git(*args):
        return subprocess.check_output(["git", *args], text=True, cwd=HERE, stderr=subprocess.DEVNULL).strip()
    try:
        dirty = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)results")
        return git("rev-parse", "HEAD") + (" (with uncommitted changes)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return None


def section_text(out, key):
    """A question's .md: headings one level down, links relative to out/, its settings a link to the .md."""
    folder, question = key.split("/")
    path = os.path.join(out, folder, f"{question}.md")
    if not os.path.exists(path):
        return f"## {key}\n\nNo result: the question failed or was not run (see run_all.sh's output).\n"
    link = f"{folder}/{question}.md"
    text = open(path).read().split("\n## Settings\n")[0] + f"\nSettings: [{link}]({link}).\n"
    lines = ["#" + line if line.startswith("#") else line.replace("](", f"]({folder}/", 1)
             if line.startswith("![") else line for line in text.splitlines()]
    command = f"\n*`python {folder}.py --question {question}`*"
    return "\n".join([f'<a id="{key.replace("/", "-")}"></a>\n', lines[0], command, *lines[1:]]) + "\n"


def data_cell(info):
    """'embedded: data/europe (train N, ...)', or the folder."""
    if not info["dir"]:
        return "no result in this folder"
    rows = ", ".join(f"{split} {n:,}" for split, n in info["rows"].items())
    return ("embedded: " if info["stand_in"] else "") + f"{info['dir']} ({rows})"


def stand_in_note(stand_ins):
    """The warning, a line or none, for the sections that ran on the embedded data."""
    return [f"> **Stand-in data.** {' and '.join(stand_ins)}: the project's embedded data, not the course's, "
            "so the numbers are not the course report's. For the course data: `bash run_all.sh --mlp-data "
            "CSV_DIR --cnn-data IMAGE_DIR` (the project's README says what each holds).\n"] * bool(stand_ins)


def reproduction_rows(results):
    """Section 6 on the course's CSVs beside the course report's numbers: (what, this suite, the report)."""
    def by(question, name):
        return group_by(results[question]["runs"], name).items()
    cells = {}
    if "lr" in results:
        losses = {lr: [final(run, "val_loss") for run in runs] for lr, runs in by("lr", "lr")}
        cells["lr"] = "; ".join(f"{lr:g}: {np.mean([v for v in values if v is not None]):.2f} (seeds "
                                f"{listed(values, '{:.2f}')})" for lr, values in losses.items())
    for name in [name for name in ("epochs", "batchnorm") if name in results]:
        loss, acc, train, train_eval = [finals(results[name]["runs"], key)
                                        for key in ("val_loss", "val_acc", "train_acc", "train_eval_acc")]
        cells[name] = f"{loss}; {acc}; train {train} in train mode, {train_eval} in eval mode"
    if "batch_size" in results:
        cells["batch_size"] = ", ".join(f"{bs}: {np.mean([best(run, 'val_acc', max) for run in runs]):.3f}"
                                        for bs, runs in by("batch_size", "batch_size"))
    if "depth_width" in results:
        by_arch = {}
        for run in results["depth_width"]["runs"]:  # the protocol's shapes, not the matched-size extras
            if [run["depth"], run["width"]] in results["depth_width"]["settings"]["architectures"]:
                by_arch.setdefault((run["depth"], run["width"]), []).append(final(run, "val_acc"))
        top = max(by_arch, key=lambda arch: np.mean(by_arch[arch]))
        width_16 = ", ".join(f"{d}: {np.mean(values):.3f}" for (d, w), values in by_arch.items() if w == 16)
        cells["depth_width"] = f"{width_16}; best depth {top[0]} width {top[1]} ({mean_std(by_arch[top])})"
    if "gradients" in results:
        runs = [run for run in results["gradients"]["runs"] if run["status"] == "ok"]
        norms = [final(run, "grad_sq_norm") for run in runs]
        cells["gradients"] = "; ".join(
            f"{layer}: (" + ", ".join("0" if n[layer] == 0 else f"{n[layer]:.0e}" for n in norms) + ")"
            for layer in (0, 30, 60, 90, 95, 99)) + " for seeds " + ", ".join(str(r["seed"]) for r in runs)
    return [(COURSE_REPORT[name][0], cell, COURSE_REPORT[name][1]) for name, cell in cells.items()]


def seeds_cell(results):
    """'3', or '3 (sweep 5)' where a question ran another number of seeds; None where none has seeds."""
    counts = {k.split("/")[1]: r["settings"]["seeds"] for k, r in results.items() if "seeds" in r["settings"]}
    usual = max(set(counts.values()), key=list(counts.values()).count, default=None)
    others = ", ".join(f"{name} {n}" for name, n in counts.items() if n != usual)
    return None if usual is None else f"{usual}" + (f" ({others})" if others else "")


def write_study_report(out, times, lanes, total, image_size):
    """times: (key, seconds, status) rows; lanes: the processes run side by side (script, questions)."""
    questions = {f"{script.SCRIPT.name}/{q.name}": q for script in (mlp, cnn) for q in script.QUESTIONS
                 if os.path.isdir(os.path.join(out, script.SCRIPT.name))}  # a section not run: left out
    wall = {key: float(seconds) for key, seconds, _ in times}
    status = {key: state for key, _, state in times}
    trained_nothing = set(status.values()) == {"reused"}
    paths = {key: os.path.join(out, f"{key}.json") for key in questions}
    results = {key: read_result(path) for key, path in paths.items() if os.path.exists(path)}  # failed: none
    for key, r in results.items():  # a question that ran but whose models could not run is not "ok"
        if status.get(key) in ("ok", "reused") and {m["status"] for m in r.get("models", [])} == {"not run"}:
            status[key] = "not run"
    data = {}
    for section in ("mlp", "cnn"):
        meta = next((r["data"] for k, r in results.items() if k.startswith(section)), {})
        data[section] = {name: meta.get(name) for name in ("dir", "rows", "stand_in")}
    previous = os.path.join(out, "manifest.json")
    if trained_nothing and os.path.exists(previous):  # the run that trained every result still describes them
        manifest = json.loads(Path(previous).read_text())
        total, status, wall = manifest["total_wall_s"], manifest["status"], manifest["questions"]
    else:
        manifest = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "git_commit": git_commit(),
                    "seeds": seeds_cell(results), "devices": sorted({r["device"] for r in results.values()}),
                    "versions": library_versions(), "data": data, "cnn_image_size": image_size,
                    "total_wall_s": total, "questions": wall, "status": status, "lanes": lanes}
        save_json(previous, manifest)

    lines = ["# The study, answered\n",
             "Generated by `bash run_all.sh` from the files in this folder; do not edit by hand.\n"]
    failed = [k for k, v in status.items() if v == "failed"]
    lines += [runner.QUICK_BANNER] * any(r.get("config", {}).get("quick") for r in results.values())
    lines += stand_in_note([info["stand_in"] for info in data.values() if info["stand_in"]])
    lines += [f"> **Failed in this run:** {', '.join(failed)}. Their sections below are missing or stale.\n"
              ] if failed else []
    rows = [("date", manifest["date"]), ("git commit", manifest["git_commit"]), ("seeds", manifest["seeds"]),
            ("device", ", ".join(manifest["devices"])), ("total wall time", f"{total:.0f} s")]
    rows += [(f"{section} data", data_cell(info)) for section, info in data.items()]
    rows += [("versions", ", ".join(f"{name} {version}" for name, version in manifest["versions"].items()))]
    not_run = {(m["reason"], m.get("fix")) for r in results.values() for m in r.get("models", [])
               if m["status"] == "not run"}
    rows += [("not run", f"{reason}. Fix: {fix}" if fix else reason) for reason, fix in sorted(not_run)]
    summary = [(f"[{answer.item or questions[key].name}](#{key.replace('/', '-')})", answer.headline,
                answer.key) for key, r in results.items() for answer in questions[key].report(r).answers]
    lines += ["## Summary\n", markdown_table(["item", "answer", "key number"], summary)]  # reports made again
    lines += ["## Manifest\n", markdown_table(["", ""], rows),
              markdown_table(["question", "wall time (s; lanes side by side)", "status"],
                             [(k, f"{wall[k]:.1f}", status[k]) for k in questions if k in wall])]
    if data["mlp"]["rows"] == {"train": 106_897, "val": 13_363, "test": 13_363}:  # the course report's CSVs
        section_6 = {key.split("/")[1]: r for key, r in results.items() if key.startswith("mlp/")}
        lines += ["## Section 6 against the course report\n",
                  "Mean over seeds (± their standard deviation); the report trained one model per setting, "
                  "seed 42, the first of the suite's seeds.\n",
                  markdown_table(["question", "this suite, course data", "the course report"],
                                 reproduction_rows(section_6))]
    sections = "\n".join(section_text(out, key) for key in questions)
    for reason, fix in sorted(not_run):  # each question's .md says it whole; here the manifest says it once
        short = f"{reason.split(' (')[0]} (see the manifest)"
        sections = sections.replace(f"{reason}. Fix: {fix}", short).replace(reason, short)
    lines.append(sections)
    save_text(os.path.join(out, "README.md"), "\n".join(lines))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", required=True, help="results folder")
    parser.add_argument("--times", required=True, help="--times' file: question, seconds, status a line")
    parser.add_argument("--lanes", required=True, help="the lanes run side by side: script, questions a line")
    parser.add_argument("--total", type=float, required=True, help="total wall seconds")
    parser.add_argument("--image-size", type=int, required=True, help="Section 7's image size, as run")
    cli = parser.parse_args()
    timings = [line.split("\t") for line in Path(cli.times).read_text().splitlines() if line.strip()]
    lanes_run = [line.split() for line in Path(cli.lanes).read_text().splitlines() if line.strip()]
    write_study_report(cli.out, timings, lanes_run, cli.total, cli.image_size)
