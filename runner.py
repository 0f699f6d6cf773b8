"""The command line of mlp.py and cnn.py: flags from the Question records, the cache, each question's .md."""
import difflib
import glob
import io
import json
import os
import re
import shutil
import sys
import textwrap
import time
import traceback
from argparse import ArgumentParser, RawDescriptionHelpFormatter
from typing import Callable, NamedTuple

import numpy as np
import torch
from PIL import Image

from cache import read_result, read_saved, training_digest
from common import (UserError, device_name, library_versions, pick_device, remove_stale_temporaries, rounded,
                    save_arrays, save_json, save_text, save_torch, write_atomic)
from plots import markdown_table, show_value

QUICK_OUT = "results-quick"  # --quick's default folder: a quick run never writes where the study's are
QUICK_BANNER = "> **Quick run (`--quick`):** a tiny budget to test the code; its numbers mean nothing.\n"


class Question(NamedTuple):
    name: str
    section: str
    title: str
    protocol: dict  # its settings, each overridden by its flag
    train: Callable  # (settings, data, reads, env) -> result; its 'arrays' go to a .npz, 'weights' to a .pt
    report: Callable
    reads: tuple = ()  # the questions it trains on


class Env(NamedTuple):  # how to run, not what
    device: torch.device
    quiet: bool  # no progress bars
    cache_dir: str = None  # the folder of cached decoded inputs


def positive(value):
    wrong = f"{'values ' * isinstance(value, list)}must be positive, got {value}"
    return None if (np.asarray(value) > 0).all() else wrong


def non_negative(value):
    return None if value >= 0 else f"must be 0 or more, got {value}"


class Setting(NamedTuple):
    """The flag --KEY, which sets `key` in every question that has it; check(value): None or what's wrong."""
    key: str
    help: str
    argparse: dict
    show: Callable = show_value
    check: Callable = positive


SHARED_SETTINGS = [Setting("seed", "the first run's seed (init and batch order)", dict(type=int), check=None)]


class Script(NamedTuple):
    """What mlp.py or cnn.py hands the runner."""
    name: str  # the results subfolder, and the script's file name without .py
    doc: str
    questions: list
    settings: list
    load_data: Callable  # (args, device) -> data with its 'meta'
    resolve: Callable  # (settings, quick) -> settings checked, under the --quick budget
    data_help: str
    data_holds: str  # what --data-dir's folder holds, for the error that a file was given
    add_flags: Callable = None
    inputs: Callable = lambda settings, data: data["meta"]["digest"]  # what of the data the cache keys on
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


def build_parser(script):
    parser = ArgumentParser(description=script.doc, formatter_class=RawDescriptionHelpFormatter)

    def error(message):  # an unknown question or a bad value: one line, not argparse's usage
        raise UserError(f"{message} (see --help)")
    parser.error = error
    questions = "; ".join(f"{q.name} ({heading(q)})" for q in script.questions)
    parser.add_argument("--question", nargs="+", metavar="QUESTION", help=f"which question(s): {questions}; "
                        "or all; or an exercise item (6.1.2-1); one that fails does not stop the others")
    parser.add_argument("--list", action="store_true", help="print the questions and their last run times")
    parser.add_argument("--lanes", type=int, metavar="N", help="print N lanes to run side by side, balanced "
                        "by the CPU times saved in OUT, then 'after QUESTION...' (those that read several)")
    parser.add_argument("--data-dir", help=script.data_help)
    parser.add_argument("--out", help=f"results folder, outputs in OUT/{script.name}/ (default: results)")
    for setting in SHARED_SETTINGS + script.settings:
        defaults = {}  # the value shown -> the questions whose protocol has it
        for question in script.questions:
            if setting.key in question.protocol:
                defaults.setdefault(setting.show(question.protocol[setting.key]), []).append(question.name)
        shown = "; ".join(value if len(defaults) == 1 else f"{', '.join(names)} {value}"
                          for value, names in defaults.items())
        parser.add_argument("--" + setting.key.replace("_", "-"), dest=setting.key, **setting.argparse,
                            help=f"{setting.help} (default: {shown})")
    parser.add_argument("--device", default="auto", help="auto (cuda if there is one), cpu or cuda")
    parser.add_argument("--threads", type=int, help="CPU threads (default: every core)")
    if script.add_flags:
        script.add_flags(parser)
    parser.add_argument("--times", metavar="FILE", help="append each question's seconds and state to FILE")
    parser.add_argument("--quick", action="store_true", help="a tiny budget for tests, its numbers mean "
                        f"nothing; OUT defaults to {QUICK_OUT} and may not hold full results")
    parser.add_argument("--force", action="store_true", help="retrain even if a saved result matches")
    parser.add_argument("--replot", action="store_true", help="only redraw the figures and .md: no training")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    return parser


def question_names(questions, values):
    """--question's names, each once: a name (hyphens for underscores, any case), an exercise item, or all."""
    every_name = [q.name for q in questions]
    aliases = {alias: q.name for q in questions
               for alias in [q.name, q.name.replace("_", "-"), *exercise_items(q.section)]} | {"all": "all"}
    for value in values:
        if value.lower() not in aliases:
            guess = difflib.get_close_matches(value.lower().replace("-", "_"), every_name, n=1)
            hint = f"did you mean {guess[0]}?" if guess else f"the questions: {', '.join(every_name)}, or all"
            raise UserError(f"--question {value}: no such question; {hint}")
    names = [aliases[value.lower()] for value in values]
    return every_name if "all" in names else list(dict.fromkeys(names))


def readers(script, key):
    """The questions whose protocol, or that of a question they read, has the setting key."""
    by_name = {q.name: q for q in script.questions}
    return [q.name for q in script.questions
            if any(key in by_name[name].protocol for name in with_reads(script.questions, [q.name]))]


def parse_args(script, argv):
    args = build_parser(script).parse_args(argv)
    settings = SHARED_SETTINGS + script.settings
    checks = [(setting.key, setting.check) for setting in settings if setting.check]
    for key, check in checks + [("threads", positive), ("lanes", positive)]:
        value = getattr(args, key)
        if value is not None and check(value):
            raise UserError(f"--{key.replace('_', '-')} {check(value)}")
    if args.question is None and not (args.list or args.lanes):
        raise UserError("--question is required (or --list, --lanes N)")
    if args.question is not None:
        args.question = question_names(script.questions, args.question)
        for setting in [s for s in settings if getattr(args, s.key) is not None]:
            reading = readers(script, setting.key)  # a flag that no question asked reads would change nothing
            if not set(args.question) & set(reading):
                raise UserError(f"--{setting.key.replace('_', '-')}: not read by {', '.join(args.question)}; "
                                f"read by {', '.join(reading)}")
    for key, value in script.demo_settings.items():
        if args.data_dir is None and getattr(args, key) is None:
            setattr(args, key, value)
    args.out = args.out or (QUICK_OUT if args.quick else "results")
    return args


def resolve_settings(script, question, args):
    settings = dict(question.protocol)
    for setting in SHARED_SETTINGS + script.settings:
        if getattr(args, setting.key) is not None and setting.key in settings:
            settings[setting.key] = getattr(args, setting.key)
    return script.resolve(settings, args.quick)


def get_result(script, question, args, data, env, reads, force, with_states):
    """(the saved result if its config matches, else the question trained and saved; the paths saved)."""
    settings = resolve_settings(script, question, args)
    config = rounded({"question": question.name, "settings": settings, "data": script.inputs(settings, data),
                      "code": training_digest(script, question), "device": env.device.type,
                      "quick": args.quick, "reads": {name: read["config"] for name, read in reads.items()}})
    path = os.path.join(args.out, script.name, f"{question.name}.json")
    if not force and os.path.exists(path):
        try:
            cached = read_result(path, advice="retraining it")
        except UserError as e:
            print(e)
            cached = {}
        if cached.get("config") == config:
            print(f"{question.name}: reusing {path} (same settings, data and code; --force retrains)")
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
    with Image.open(rendered) as png:
        palette = png.convert("RGB").quantize(128, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
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
    def wrap(text, indent, then):
        return textwrap.wrap(text, width, initial_indent=indent, subsequent_indent=then,
                             break_long_words=False, break_on_hyphens=False)
    lines = []
    for answer in report.answers:
        lines += wrap(answer_heading(answer), "", "") + wrap(answer.headline, "  ", "  ")
        lines += [line for bullet in answer.bullets for line in wrap(bullet, "  - ", "    ")]
    return lines


def saved_value(path, key):
    try:
        with open(path) as f:
            return json.load(f).get(key)
    except (OSError, ValueError, AttributeError):
        return None


def plan_lanes(questions, n_lanes, seconds):
    """(lanes, questions run after): a reader joins what it reads; costliest group to the least loaded."""
    order = {q.name: i for i, q in enumerate(questions)}
    first, after = {}, []  # name -> the first question of its group
    for question in questions:
        if len(question.reads) > 1 or set(question.reads) & set(after):
            after.append(question.name)
        else:
            first[question.name] = first[question.reads[0]] if question.reads else question.name
    groups = [[name for name in first if first[name] == start] for start in dict.fromkeys(first.values())]
    known = [s for s in seconds.values() if s is not None] or [1.0]  # a question never run: the mean
    cost = {name: float(np.mean(known)) if seconds.get(name) is None else seconds[name] for name in order}
    lanes, load = [[] for _ in range(n_lanes)], [0.0] * n_lanes
    for group in sorted(groups, key=lambda g: -sum(cost[n] for n in g)):
        lane = load.index(min(load))
        lanes[lane] += group
        load[lane] += sum(cost[n] for n in group)
    return [sorted(lane, key=order.get) for lane in lanes if lane], after


def with_reads(questions, names):
    """names and every question they read, in the questions' order (a question reads only earlier ones)."""
    needed = set(names)
    for question in reversed(questions):
        if question.name in needed:
            needed |= set(question.reads)
    return [q.name for q in questions if q.name in needed]


def refuse_quick_over_full(folder):
    """A --quick run never writes over full results with numbers that mean nothing."""
    full = [path for path in sorted(glob.glob(os.path.join(folder, "*", "*.json")))
            if (saved_value(path, "config") or {}).get("quick") is False]
    if full:
        raise UserError(f"{folder}: holds full results ({len(full)} files, such as {full[0]}); --quick never "
                        f"writes there: leave out --out (then {QUICK_OUT}/) or name another folder")


def run(script, args):
    """--list; --lanes; or each question asked, through the cache, and its report. Returns the failed."""
    out_dir = os.path.join(args.out, script.name)
    by_name = {q.name: q for q in script.questions}
    if args.lanes:  # lanes side by side share the cores: CPU time, not wall time, says when each ends
        seconds = {name: saved_value(os.path.join(out_dir, f"{name}.json"), "cpu_s") for name in by_name}
        lanes, after = plan_lanes(script.questions, args.lanes, seconds)
        print("\n".join([" ".join(lane) for lane in lanes] + [" ".join(["after"] + after)] * bool(after)))
        return []
    if args.list:  # aligned columns: name, exercise item, title, the saved result's wall time
        rows = [["question", "item", "title", "last run"]]
        for q in script.questions:
            wall = saved_value(os.path.join(out_dir, f"{q.name}.json"), "wall_s")
            rows.append([q.name, q.section, q.title, "" if wall is None else f"{wall:.1f} s"])
        widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
        print("\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows))
        return []
    if not args.replot:
        if args.quick:
            refuse_quick_over_full(args.out)
        for name in with_reads(script.questions, args.question):  # bad flags fail before any data is read
            resolve_settings(script, by_name[name], args)
        if args.data_dir and os.path.isfile(args.data_dir):
            raise UserError(f"{args.data_dir}: is a file; --data-dir wants the folder that holds "
                            f"{script.data_holds} ({os.path.dirname(args.data_dir) or '.'}/)")
        device = pick_device(args.device)
        if args.threads:  # on a GPU too: the CPU ops around it and parallel lanes share the cores
            torch.set_num_threads(args.threads)
        data = script.load_data(args, device)
        env = Env(device, args.quiet, getattr(args, "cache_dir", None))
    existing = os.path.abspath(out_dir)  # bad input wrote nothing; an unwritable folder is refused, unmade
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing) or not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"{out_dir}: cannot write results there ({existing} is not a writable folder)")
    for file in remove_stale_temporaries(out_dir):
        print(f"removed {os.path.join(out_dir, file)}, left by an interrupted run")
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

    for name in args.question:
        start = time.perf_counter()
        try:
            path = os.path.join(out_dir, f"{name}.json")
            result = read_result(path) if args.replot else result_of(name, force=args.force)
            report = write_report(script, by_name[name], result, out_dir)
            quick = ["(--quick: a tiny budget; these numbers mean nothing)"] * bool(result["config"]["quick"])
            source = f"saved {', '.join(saved[name])}" if saved.get(name) else f"reused {path}"
            written = [os.path.join(out_dir, file) for file in [f"{name}.md", *report.figures]]
            lines = ["", *quick, *terminal_lines(report, shutil.get_terminal_size().columns)]
            print("\n".join(lines + [f"{name}: {source}; wrote {', '.join(written)}"]), flush=True)
        except Exception as e:
            if len(args.question) == 1 or (isinstance(e, UserError) and not args.replot):
                raise
            if not isinstance(e, UserError):  # a bug, not a missing or unreadable saved file (--replot)
                traceback.print_exc()  # one question's bug does not stop the others
            print(f"{name}: {'not drawn' if args.replot else 'failed'}: {e}", file=sys.stderr, flush=True)
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
