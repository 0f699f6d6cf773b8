"""The command line of mlp.py and cnn.py: flags from the question records, each question trained or its saved
result reused (cache.py), --list, --lanes, --replot, and each question's .md written from its saved files."""
import argparse
import difflib
import io
import json
import os
import re
import shutil
import sys
import textwrap
import time
import traceback
from typing import Callable, NamedTuple

import numpy as np
import torch
from PIL import Image

from cache import full_results, load_cached, read_result, read_saved, training_digest
from common import (UserError, device_name, library_versions, pick_device, remove_stale_temporaries, rounded,
                    save_arrays, save_json, save_text, save_torch, write_atomic)
from plots import markdown_table, show_value

HERE = os.path.dirname(os.path.abspath(__file__))
QUICK_OUT = "results-quick"  # --quick's default folder: a quick run never writes where the study's are
QUICK_BANNER = ("> **Quick run (`--quick`).** A tiny budget (a small subset of the data, one to three "
                "epochs, small images) that only checks that the pipeline runs: its numbers and answers mean "
                "nothing. Run without `--quick` for the study.\n")


class Question(NamedTuple):
    """train(settings, data, reads, env) -> result ('arrays' go to a .npz, 'weights' to a .pt); report(result)
    -> Report; protocol: its settings, each overridden by its flag; reads: the questions it trains on."""
    name: str
    section: str
    title: str
    protocol: dict
    train: Callable
    report: Callable
    reads: tuple = ()


class Env(NamedTuple):
    """How to run, not what: the device, no progress bars, the folder of cached decoded inputs."""
    device: torch.device
    quiet: bool
    cache_dir: str = None


def positive(value):
    """None when every number given is positive, else what is wrong."""
    if (np.asarray(value) > 0).all():
        return None
    return f"{'values ' if isinstance(value, list) else ''}must be positive, got {value}"


def non_negative(value):
    """The check of a count whose 0 turns something off."""
    return None if value >= 0 else f"must be 0 or more, got {value}"


class Setting(NamedTuple):
    """The flag --KEY, which sets `key` in every question that has it; check(value): None or what's wrong."""
    key: str
    help: str
    argparse: dict
    show: Callable = show_value
    check: Callable = positive


SHARED_SETTINGS = [Setting("seed", "seed of the first run (numpy and torch seeded before each model is "
                                   "built; also seeds its batch order)", dict(type=int), check=None)]


class Script(NamedTuple):
    """What mlp.py or cnn.py hands the runner. load_data(args, device) -> data with its 'meta';
    resolve(settings, quick) -> settings checked, under the --quick budget; inputs(...) -> their cache key."""
    name: str  # the results subfolder, and the script's file name without .py
    doc: str
    questions: list
    settings: list
    load_data: Callable
    resolve: Callable
    data_help: str
    data_holds: str  # what --data-dir's folder holds, for the error that a file was given
    add_flags: Callable = None
    inputs: Callable = lambda settings, data: data["meta"]["digest"]
    shared_code: tuple = ("common.py",)  # files whose every edit retrains each question (training_digest)
    demo_settings: dict = {}  # what the embedded data runs at (no --data-dir) where no flag sets it


def heading(question):
    return f"{question.section} {question.title}".strip()


def exercise_items(section):
    """'6.1.2-1' -> ['6.1.2-1'], '6.2.1-1 to 6.2.1-4' -> the four, '' -> []."""
    span = re.fullmatch(r"(.+-)(\d+) to \1(\d+)", section)
    if span is None:
        return [section] if section else []
    prefix, first, last = span.groups()
    return [f"{prefix}{number}" for number in range(int(first), int(last) + 1)]


# ----------------------------------------------------------------------------- flags

class ArgumentParser(argparse.ArgumentParser):
    """argparse whose errors (unknown question, bad value) are one-line UserErrors."""

    def error(self, message):
        raise UserError(f"{message} (see --help)")


def defaults_text(questions, key, show):
    """For --help: 'default: 0.001', or 'default: q1, q2 50; q3 100' where the questions' protocols differ."""
    values = {}
    for question in questions:
        if key in question.protocol:
            values.setdefault(show(question.protocol[key]), []).append(question.name)
    return "default: " + "; ".join(value if len(values) == 1 else f"{', '.join(names)} {value}"
                                    for value, names in values.items())


def build_parser(script):
    parser = ArgumentParser(description=script.doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    questions = "; ".join(f"{q.name} ({heading(q)})" for q in script.questions)
    parser.add_argument("--question", nargs="+", metavar="QUESTION",
                        help=f"which question(s): {questions}; or all; or an exercise item (6.1.2-1). One "
                             "that fails does not stop the others (exit code 1)")
    parser.add_argument("--list", action="store_true",
                        help="print the questions, their items, titles and last run times in OUT, and exit")
    parser.add_argument("--lanes", type=int, metavar="N",
                        help="print N lanes of questions to run side by side, balanced by the CPU times "
                             "saved in OUT, then 'after QUESTION...' (those that read several), and exit")
    parser.add_argument("--data-dir", help=script.data_help)
    parser.add_argument("--out", help=f"results folder; outputs go to OUT/{script.name}/ (default: results; "
                                      f"with --quick, {QUICK_OUT}, and a folder of full results is refused)")
    for setting in SHARED_SETTINGS + script.settings:
        defaults = defaults_text(script.questions, setting.key, setting.show)
        parser.add_argument("--" + setting.key.replace("_", "-"), dest=setting.key, **setting.argparse,
                            help=f"{setting.help} ({defaults})")
    parser.add_argument("--device", default="auto", help="auto (cuda if there is one), cpu or cuda")
    parser.add_argument("--threads", type=int,
                        help="CPU threads of torch, XGBoost and image decoding (default: every core)")
    if script.add_flags:
        script.add_flags(parser)
    parser.add_argument("--times", metavar="FILE",
                        help="append a line per question (script/question, wall seconds, state) to FILE")
    parser.add_argument("--quick", action="store_true",
                        help=f"a tiny budget (small data, few epochs) for tests: its numbers mean nothing; "
                             f"it writes to {QUICK_OUT}/ unless --out names a folder without full results")
    parser.add_argument("--force", action="store_true",
                        help="retrain even if a saved result has the same settings")
    parser.add_argument("--replot", action="store_true",
                        help="only redraw the figures and .md from the saved .json and .npz: no data, no "
                             "training")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    return parser


def question_names(questions, values):
    """--question's names, each once, as asked: a name (hyphens for underscores, any case), an exercise item
    (6.1.2-1), or all (every question); an unknown one is a UserError with the closest name."""
    every_name = [q.name for q in questions]
    aliases = {"all": "all"}
    for question in questions:
        for alias in [question.name, question.name.replace("_", "-")] + exercise_items(question.section):
            aliases[alias] = question.name
    names = []
    for value in values:
        if value.lower() not in aliases:
            guess = difflib.get_close_matches(value.lower().replace("-", "_"), every_name, n=1)
            hint = f"did you mean {guess[0]}?" if guess else f"the questions: {', '.join(every_name)}, or all"
            raise UserError(f"--question {value}: no such question; {hint}")
        names.append(aliases[value.lower()])
    return every_name if "all" in names else list(dict.fromkeys(names))


def readers(script, key):
    """The questions whose protocol, or that of a question they read, has the setting key."""
    by_name = {q.name: q for q in script.questions}
    return [q.name for q in script.questions
            if any(key in by_name[name].protocol for name in with_reads(script.questions, [q.name]))]


def refuse_unread_settings(script, args):
    """A flag that no question asked reads would change nothing: a UserError."""
    for setting in SHARED_SETTINGS + script.settings:
        if getattr(args, setting.key) is None:
            continue
        reading = readers(script, setting.key)
        if not set(args.question) & set(reading):
            raise UserError(f"--{setting.key.replace('_', '-')}: not read by {', '.join(args.question)}; "
                            f"read by {', '.join(reading)}")


def parse_args(script, argv):
    args = build_parser(script).parse_args(argv)
    checks = [(setting.key, setting.check) for setting in SHARED_SETTINGS + script.settings if setting.check]
    for key, check in checks + [("threads", positive), ("lanes", positive)]:
        value = getattr(args, key)
        if value is not None and check(value):
            raise UserError(f"--{key.replace('_', '-')} {check(value)}")
    if args.question is None and not (args.list or args.lanes):
        raise UserError("--question is required (or --list, --lanes N)")
    if args.question is not None:
        args.question = question_names(script.questions, args.question)
        refuse_unread_settings(script, args)
    for key, value in script.demo_settings.items():
        if args.data_dir is None and getattr(args, key) is None:
            setattr(args, key, value)
    if args.out is None:
        args.out = QUICK_OUT if args.quick else "results"
    return args


def resolve_settings(script, question, args):
    """Its protocol, the flags set on top, then the script's resolve."""
    settings = dict(question.protocol)
    for setting in SHARED_SETTINGS + script.settings:
        if getattr(args, setting.key) is not None and setting.key in settings:
            settings[setting.key] = getattr(args, setting.key)
    return script.resolve(settings, args.quick)


# ----------------------------------------------------------------------------- saved results

def get_result(script, question, args, data, env, reads, force, with_states):
    """(the saved result if its config matches, else the question trained and saved; the paths saved).
    with_states(name): the result of a question it reads, with that question's model states."""
    settings = resolve_settings(script, question, args)
    config = rounded({"question": question.name, "settings": settings, "data": script.inputs(settings, data),
                      "code": training_digest(script, question), "device": env.device.type,
                      "quick": args.quick,
                      "reads": {name: result["config"] for name, result in reads.items()}})
    path = os.path.join(args.out, script.name, f"{question.name}.json")
    cached = None if force else load_cached(path, config)
    if cached is not None:
        print(f"{question.name}: reusing {path} (same settings, data and training code; --force retrains)")
        return cached, []
    reads = {name: with_states(name) for name in reads}
    start, cpu_start = time.perf_counter(), time.process_time()
    trained = question.train(settings, data, reads, env)
    arrays, weights = trained.pop("arrays", None), trained.pop("weights", None)
    result = rounded({"question": question.name, "section": question.section, "title": question.title,
                      "config": config, "settings": settings, "data": data["meta"],
                      "versions": library_versions(), "device": device_name(env.device),
                      "wall_s": round(time.perf_counter() - start, 2),
                      "cpu_s": round(time.process_time() - cpu_start, 2), **trained})  # as the .json holds it
    saved = [path]
    if arrays is not None:
        result["arrays_file"] = f"{question.name}.npz"
        saved.append(os.path.join(os.path.dirname(path), result["arrays_file"]))
        save_arrays(saved[-1], {**arrays, "config": np.array(json.dumps(config))})
    if weights is not None:
        result["weights_file"] = f"{question.name}.pt"
        saved.append(os.path.join(os.path.dirname(path), result["weights_file"]))
        save_torch(saved[-1], {"config": config, "weights": weights})
    save_json(path, result)
    print(f"{question.name}: trained in {result['wall_s']:.1f} s; saved {', '.join(saved)}", flush=True)
    return {**result, "arrays": arrays, "weights": weights}, saved


def save_figure(fig, path):
    """A 128-colour palette PNG at 100 dpi: a fraction of a full-colour file, alike to the eye."""
    rendered = io.BytesIO()
    fig.savefig(rendered, dpi=100, bbox_inches="tight", format="png")
    with Image.open(rendered) as image:
        palette = image.convert("RGB").quantize(128, method=Image.Quantize.MEDIANCUT,
                                                dither=Image.Dither.NONE)
    write_atomic(path, lambda tmp: palette.save(tmp, format="PNG", optimize=True))


def answer_heading(answer):
    return f"{answer.item + ': ' if answer.item else ''}{answer.asked}"


def write_report(script, question, result, out_dir):
    """The question's figures and .md, from the saved result alone; returns the Report."""
    report = question.report(result)
    for file, (fig, _) in report.figures.items():
        save_figure(fig, os.path.join(out_dir, file))
    show = {setting.key: setting.show for setting in SHARED_SETTINGS + script.settings}
    settings = [(key, show.get(key, show_value)(value)) for key, value in result["settings"].items()] + [
        ("data", result["data"]["summary"]), ("device", result["device"]),
        ("wall time", f"{result['wall_s']:.1f} s"),
        ("versions", ", ".join(f"{k} {v}" for k, v in result["versions"].items()))]
    lines = [f"# {heading(question)}\n"] + [QUICK_BANNER] * bool(result["config"].get("quick"))
    for answer in report.answers:
        lines += [f"## {answer_heading(answer)}\n", f"**{answer.headline}**\n"]
        lines += [f"- {bullet}" for bullet in answer.bullets] + [""] * bool(answer.bullets)
    for file, (_, caption) in report.figures.items():
        lines += [f"![{os.path.splitext(file)[0]}]({file})\n", f"*{caption}*\n"]
    lines += ["## Results\n", *[block + "\n" for block in report.body]]
    lines += ["\n## Settings\n", markdown_table(["setting", "value"], settings)]
    save_text(os.path.join(out_dir, f"{question.name}.md"), "\n".join(lines) + "\n")
    return report


def terminal_lines(report, width):
    """Each answer's heading, headline, then bullets, wrapped to width for the terminal."""
    def wrap(text, indent, then):
        return textwrap.wrap(text, width, initial_indent=indent, subsequent_indent=then,
                             break_long_words=False, break_on_hyphens=False)
    lines = []
    for answer in report.answers:
        lines += wrap(answer_heading(answer), "", "") + wrap(answer.headline, "  ", "  ")
        for bullet in answer.bullets:
            lines += wrap(bullet, "  - ", "    ")
    return lines


# ----------------------------------------------------------------------------- lanes and the run

def saved_seconds(path, key):
    """The result file's cpu_s or wall_s; None without one."""
    try:
        with open(path) as f:
            return json.load(f).get(key)
    except (OSError, ValueError, AttributeError):
        return None


def plan_lanes(questions, n_lanes, seconds):
    """(at most n_lanes lanes to run side by side, the questions to run after them). A question joins the lane
    of the one it reads; one that reads several, or reads such a question, runs after the lanes. Groups go,
    costliest first, to the lane with the least work; seconds: name -> cost (None: the mean of the known)."""
    order = {q.name: i for i, q in enumerate(questions)}
    groups, after = [], []
    for question in questions:
        if len(question.reads) > 1 or set(question.reads) & set(after):
            after.append(question.name)
            continue
        touching = [g for g in groups if set(g) & set(question.reads)]
        merged = [n for g in touching for n in g] + [question.name]
        groups = [g for g in groups if g not in touching] + [merged]
    known = [s for s in seconds.values() if s is not None]
    default = float(np.mean(known)) if known else 1.0
    cost = {name: default if seconds.get(name) is None else seconds[name] for name in order}
    lanes, load = [[] for _ in range(n_lanes)], [0.0] * n_lanes
    for group in sorted(groups, key=lambda g: -sum(cost[n] for n in g)):
        lane = load.index(min(load))
        lanes[lane] += group
        load[lane] += sum(cost[n] for n in group)
    return [sorted(lane, key=order.get) for lane in lanes if lane], after


def with_reads(questions, names):
    """names and every question they read, each once, in the questions' order."""
    by_name = {q.name: q for q in questions}
    needed, todo = set(), list(names)
    while todo:
        name = todo.pop()
        if name not in needed:
            needed.add(name)
            todo += by_name[name].reads
    return [q.name for q in questions if q.name in needed]


def refuse_quick_over_full(folder):
    """A --quick run never writes over full results with numbers that mean nothing."""
    full = full_results(folder)
    if full:
        raise UserError(f"{folder}: holds full results ({len(full)} files, such as {full[0]}); a --quick "
                        f"run never writes there: leave out --out (quick runs write to {QUICK_OUT}/) or name "
                        "another folder")


def prepare_output(folder):
    """Refuse a folder that cannot be written (creating nothing); remove a killed run's temporary files."""
    existing = os.path.abspath(folder)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing) or not os.access(existing, os.W_OK | os.X_OK):
        problem = "is not writable" if os.path.isdir(existing) else "is not a folder"
        raise UserError(f"{folder}: cannot write results there ({existing} {problem})")
    for name in remove_stale_temporaries(folder):
        print(f"removed {os.path.join(folder, name)}, left by an interrupted run")


def question_table(script, out_dir):
    """--list: aligned columns of each question's name, exercise item, title and saved result's wall time."""
    rows = [["question", "item", "title", "last run"]]
    for question in script.questions:
        wall = saved_seconds(os.path.join(out_dir, f"{question.name}.json"), "wall_s")
        last_run = "" if wall is None else f"{wall:.1f} s"
        rows.append([question.name, question.section, question.title, last_run])
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]


def refuse_data_file(script, data_dir):
    """--data-dir names a folder, not a file in it."""
    if data_dir and os.path.isfile(data_dir):
        raise UserError(f"{data_dir}: is a file; --data-dir wants the folder that holds {script.data_holds} "
                        f"({os.path.dirname(data_dir) or '.'}/)")


def run(script, args):
    """--list, --lanes, or the questions asked (and what they read) through the cache, then their reports
    (--replot: the reports alone). Returns the questions that failed."""
    out_dir = os.path.join(args.out, script.name)
    by_name = {q.name: q for q in script.questions}
    if args.list or args.lanes:
        if args.lanes:
            # lanes side by side share the cores: their CPU time, not the wall time, says when each ends
            seconds = {name: saved_seconds(os.path.join(out_dir, f"{name}.json"), "cpu_s")
                       for name in by_name}
            lanes, after = plan_lanes(script.questions, args.lanes, seconds)
            print("\n".join([" ".join(lane) for lane in lanes] + [" ".join(["after"] + after)] * bool(after)))
        else:
            print("\n".join(question_table(script, out_dir)))
        return []
    names = args.question
    if args.quick and not args.replot:
        refuse_quick_over_full(args.out)
    if not args.replot:
        for name in with_reads(script.questions, names):  # bad flags fail here, before any data is read
            resolve_settings(script, by_name[name], args)
        refuse_data_file(script, args.data_dir)
        device = pick_device(args.device)
        if args.threads:  # on a GPU too: the CPU ops around it and parallel lanes share the cores
            torch.set_num_threads(args.threads)
        data = script.load_data(args, device)
        env = Env(device, args.quiet, getattr(args, "cache_dir", None))
    prepare_output(out_dir)  # bad input has written nothing; a bad folder is refused before any training
    results, saved, failed = {}, {}, []

    def result_of(name, force=False):  # each question once per process; what it reads first
        if name not in results:
            reads = {read: result_of(read) for read in by_name[name].reads}
            results[name], saved[name] = get_result(script, by_name[name], args, data, env, reads, force,
                                                    with_states)
        return results[name]

    def with_states(name):  # the model states are read only for a question that trains on them
        result = results[name]
        if result.get("weights_file") and result.get("weights") is None:
            file = os.path.join(out_dir, result["weights_file"])
            try:
                result["weights"] = read_saved(file, result, "weights", f"retraining {name} for them")
            except UserError as e:
                print(f"{e} (it took {result['wall_s']:.0f} s last time)", flush=True)
                del results[name]
                result_of(name, force=True)
        return results[name]

    width = shutil.get_terminal_size().columns
    for name in names:
        start = time.perf_counter()
        try:
            path = os.path.join(out_dir, f"{name}.json")
            result = read_result(path) if args.replot else result_of(name, force=args.force)
            report = write_report(script, by_name[name], result, out_dir)
            quick = ["(--quick: a tiny budget; these numbers mean nothing)"] * bool(result["config"]["quick"])
            source = f"saved {', '.join(saved[name])}" if saved.get(name) else f"reused {path}"
            written = [os.path.join(out_dir, file) for file in [f"{name}.md", *report.figures]]
            print("\n".join([""] + quick + terminal_lines(report, width)
                            + [f"{name}: {source}; wrote {', '.join(written)}"]), flush=True)
        except Exception as e:
            if len(names) == 1 or (isinstance(e, UserError) and not args.replot):
                raise
            if isinstance(e, UserError):  # --replot: a question whose saved files are missing or unreadable
                print(f"{name}: not drawn: {e}", file=sys.stderr, flush=True)
            else:
                traceback.print_exc()  # one question's bug does not stop the others
                print(f"{name}: failed", flush=True)
            failed.append(name)
        if args.times:
            with open(args.times, "a") as f:
                state = "failed" if name in failed else "ok" if saved.get(name) else "reused"
                f.write(f"{script.name}/{name}\t{time.perf_counter() - start:.1f}\t{state}\n")
    return failed


def main(script, argv=None):
    """A UserError is one line on stderr and exit code 2 (--debug: the traceback); a failed question, 1."""
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    try:
        args = parse_args(script, argv)
        failed = run(script, args)
    except UserError as e:
        if "--debug" in argv:
            raise
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    if failed:
        print(f"{'not drawn' if args.replot else 'failed'}: {', '.join(failed)}", file=sys.stderr)
        sys.exit(1)
