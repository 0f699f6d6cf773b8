"""The command line of mlp.py and cnn.py: flags from the question records, the result cache, --list, --lanes,
--replot, and each question's .md.

A question trains (mlp.py, cnn.py) into OUT/<script>/<question>.json, with the arrays its figures draw in a .npz and
the model states other questions read in a .pt; its report (mlp_report.py, cnn_report.py) reads only those files.
"""
import argparse
import json
import os
import sys
import time
import traceback
import warnings
from typing import Callable, NamedTuple

import numpy as np
import torch

from common import (UserError, device_name, file_digest, library_versions, markdown_table, pick_device,
                    remove_stale_temporaries, save_arrays, save_figure, save_json, save_text, save_torch, show_value)

HERE = os.path.dirname(os.path.abspath(__file__))


class Question(NamedTuple):
    """One question of the study. protocol: its settings as the protocol gives them (a flag of the same name
    overrides one); reads: the questions whose results train takes (they run first, through the cache).
    train(settings, data, reads, env) -> result dict: an 'arrays' entry goes to a .npz beside the .json (what the
    figures draw), a 'weights' entry to a .pt (model states that other questions read). report(result) -> Report."""
    name: str
    section: str
    title: str
    protocol: dict
    train: Callable
    report: Callable
    reads: tuple = ()


class Env(NamedTuple):
    """How to run, not what: the device, progress bars or not, and the folder of cached decoded inputs."""
    device: torch.device
    quiet: bool
    cache_dir: str = None


def positive(value):
    """The check of a numeric flag: None when every number given is positive, else what is wrong."""
    if (np.asarray(value) > 0).all():
        return None
    return f"values must be positive, got {value}" if isinstance(value, list) else f"must be positive, got {value}"


class Setting(NamedTuple):
    """A flag that overrides the question setting `key` in every question whose protocol has it: --batch-size sets
    batch_size. check(value) -> None, or what is wrong with the value given."""
    key: str
    help: str
    argparse: dict
    show: Callable = show_value
    check: Callable = positive


SHARED_SETTINGS = [Setting("seed", "seed of the first run (numpy and torch seeded before each model is built; "
                                   "also seeds its batch order)", dict(type=int), check=None)]


def data_digest(settings, data):
    return data["meta"]["digest"]


class Script(NamedTuple):
    """What mlp.py or cnn.py hands the runner. load_data(args, device) -> data, a dict whose 'meta' describes the
    data (meta['digest'] names it by content, meta['summary'] is one line for the reports); resolve(settings, quick)
    -> settings: the --quick budget and the checks across settings; inputs(settings, data) -> what identifies a
    question's inputs in its cache key (the data, and any other file its settings name)."""
    name: str  # the results subfolder, and the script file's name without .py
    doc: str
    questions: list
    settings: list
    load_data: Callable
    resolve: Callable
    data_help: str
    add_flags: Callable = None
    inputs: Callable = data_digest


def heading(question):
    return f"{question.section} {question.title}".strip()


# ----------------------------------------------------------------------------- flags

class ArgumentParser(argparse.ArgumentParser):
    """argparse whose errors (unknown question, bad value) are one-line UserErrors."""

    def error(self, message):
        raise UserError(f"{message} (see --help)")


def protocol_text(questions, key, show):
    """The protocol's value of a setting in every question that has it, for --help: 'protocol: 0.001', or
    'protocol: q1, q2 50; q3 100' where questions differ."""
    values = {}
    for question in questions:
        if key in question.protocol:
            values.setdefault(show(question.protocol[key]), []).append(question.name)
    if len(values) == 1:
        return f"protocol: {next(iter(values))}"
    return "protocol: " + "; ".join(f"{', '.join(names)} {value}" for value, names in values.items())


def build_parser(script):
    parser = ArgumentParser(description=script.doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    names = [q.name for q in script.questions]
    parser.add_argument("--question", choices=names + ["all"], metavar="QUESTION", nargs="+",
                        help="which question(s): " + "; ".join(f"{q.name} ({heading(q)})" for q in script.questions)
                             + "; or all, in that order. With several, one that fails does not stop the others "
                               "(exit code 1)")
    parser.add_argument("--list", action="store_true", help="print the questions, one per line in order, and exit")
    parser.add_argument("--lanes", type=int, metavar="N",
                        help="print the questions split into N lanes to run side by side, one lane per line, and "
                             "exit: a question shares the lane of the questions it reads, and lanes are balanced by "
                             "each question's wall time saved in OUT")
    parser.add_argument("--data-dir", help=script.data_help)
    parser.add_argument("--out", default="results",
                        help=f"results folder; outputs go to OUT/{script.name}/ (default: results)")
    for setting in SHARED_SETTINGS + script.settings:
        parser.add_argument("--" + setting.key.replace("_", "-"), dest=setting.key, **setting.argparse,
                            help=f"{setting.help} ({protocol_text(script.questions, setting.key, setting.show)})")
    parser.add_argument("--device", default="auto", help="auto (cuda when available), cpu or cuda (default auto)")
    parser.add_argument("--threads", type=int,
                        help="CPU threads of torch, XGBoost and image decoding (default: torch's, every core; "
                             "run_all.sh gives each of its parallel processes its share; see the README)")
    if script.add_flags:
        script.add_flags(parser)
    parser.add_argument("--times", metavar="FILE",
                        help="append a line per question (script/question, wall seconds, ok or failed) to FILE")
    parser.add_argument("--quick", action="store_true",
                        help="a tiny budget (small data, few epochs) for tests; never for results/")
    parser.add_argument("--force", action="store_true", help="retrain even if a saved result has the same settings")
    parser.add_argument("--replot", action="store_true",
                        help="only redraw the figures and rewrite the .md from the saved .json and .npz: no data, no "
                             "training (the other flags do not matter then)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    return parser


def parse_args(script, argv):
    args = build_parser(script).parse_args(argv)
    for setting in SHARED_SETTINGS + script.settings:
        value = getattr(args, setting.key)
        problem = setting.check(value) if setting.check and value is not None else None
        if problem:
            raise UserError(f"--{setting.key.replace('_', '-')} {problem}")
    for flag, value in (("--threads", args.threads), ("--lanes", args.lanes)):
        if value is not None and value < 1:
            raise UserError(f"{flag} must be positive, got {value}")
    if args.question is None and not (args.list or args.lanes):
        raise UserError("--question is required (or --list, --lanes N)")
    return args


def resolve_settings(script, question, args):
    """A question's settings, resolved once: its protocol, the flags the user set on top, then the script's
    resolve (the --quick budget, checks across settings)."""
    settings = dict(question.protocol)
    for setting in SHARED_SETTINGS + script.settings:
        value = getattr(args, setting.key)
        if value is not None and setting.key in settings:
            settings[setting.key] = value
    return script.resolve(settings, args.quick)


# ----------------------------------------------------------------------------- saved results

def code_digest(script_name):
    """sha256 of the training code (the script and common.py): part of every cache key, so that a result is never
    reused once the code that made it has changed. The report modules are not in it: a report is redrawn on every
    run, and --replot redraws it alone."""
    return file_digest([os.path.join(HERE, f"{script_name}.py"), os.path.join(HERE, "common.py")])


def first_line(error):
    return (str(error).strip().splitlines() or [""])[0].split(". ")[0]


def read_result(path, weights=False):
    """The saved result at path, with its arrays (.npz) and, if asked, its model states (.pt, which must come from the
    same config). Both files are read as plain numbers and tensors, so a file from elsewhere cannot run code. A
    missing or unreadable file is a UserError that says what to do."""
    try:
        with open(path) as f:
            result = json.load(f)
    except FileNotFoundError:
        raise UserError(f"{path}: no saved result; run the question without --replot first") from None
    except ValueError as e:
        raise UserError(f"{path}: not valid JSON ({e}); rerun the question with --force") from None
    folder = os.path.dirname(path)
    try:
        if "arrays_file" in result:
            file = os.path.join(folder, result["arrays_file"])
            with np.load(file, allow_pickle=False) as arrays:
                result["arrays"] = dict(arrays)
            if str(result["arrays"].pop("config")) != json.dumps(result["config"]):
                raise ValueError("its config is not the .json's")
        if weights and "weights_file" in result:
            file = os.path.join(folder, result["weights_file"])
            saved = torch.load(file, map_location="cpu", weights_only=True)
            if saved["config"] != result["config"]:
                raise ValueError("its config is not the .json's")
            result["weights"] = saved["weights"]
    except FileNotFoundError:
        raise UserError(f"{file}: missing beside {os.path.basename(path)}; rerun the question with --force") from None
    except Exception as e:  # a truncated or foreign file: numpy and torch raise several types
        raise UserError(f"{file}: unreadable ({type(e).__name__}: {first_line(e)}); rerun the question with "
                        "--force") from None
    return result


def load_cached(path, config):
    """The saved result (with arrays and weights) if it was made with exactly this config, else None. A file that
    does not read is reported and ignored: the question is trained again."""
    if not os.path.exists(path):
        return None
    try:
        result = read_result(path, weights=True)
    except UserError as e:
        warnings.warn(f"unreadable cache: {e}; recomputing", stacklevel=2)
        return None
    return result if result.get("config") == config else None


def get_result(script, question, args, data, env, reads, force):
    """The question's saved result if its config (settings, data, code, device, what it reads) matches, else train
    it and save it: .json, .npz for its arrays, .pt for its model states."""
    settings = resolve_settings(script, question, args)
    config = {"question": question.name, "settings": settings, "data": script.inputs(settings, data),
              "code": code_digest(script.name), "device": env.device.type, "quick": args.quick,
              "reads": {name: result["config"] for name, result in reads.items()}}
    path = os.path.join(args.out, script.name, f"{question.name}.json")
    cached = None if force else load_cached(path, config)
    if cached is not None:
        print(f"{question.name}: reusing {path} (same settings, data and code; --force retrains)")
        return cached
    start = time.perf_counter()
    trained = question.train(settings, data, reads, env)
    arrays, weights = trained.pop("arrays", None), trained.pop("weights", None)
    result = {"question": question.name, "section": question.section, "title": question.title, "config": config,
              "settings": settings, "data": data["meta"], "versions": library_versions(),
              "device": device_name(env.device), "wall_s": round(time.perf_counter() - start, 2), **trained}
    folder = os.path.dirname(path)
    if arrays is not None:
        result["arrays_file"] = f"{question.name}.npz"
        save_arrays(os.path.join(folder, result["arrays_file"]), {**arrays, "config": np.array(json.dumps(config))})
    if weights is not None:
        result["weights_file"] = f"{question.name}.pt"
        save_torch(os.path.join(folder, result["weights_file"]), {"config": config, "weights": weights})
    save_json(path, result)
    return {**result, "arrays": arrays, "weights": weights}


# ----------------------------------------------------------------------------- a question's .md

def answer_text(answer):
    return " ".join(s for s in answer.sentences if s)


def write_report(script, question, result, out_dir):
    """Draw the question's figures and write its .md from the saved result alone; returns what the console prints."""
    report = question.report(result)
    for file, fig in report.figures.items():
        save_figure(fig, os.path.join(out_dir, file))
    show = {setting.key: setting.show for setting in SHARED_SETTINGS + script.settings}
    settings = [(key, show.get(key, show_value)(value)) for key, value in result["settings"].items()] + [
        ("data", result["data"]["summary"]), ("device", result["device"]), ("wall time", f"{result['wall_s']:.1f} s"),
        ("versions", ", ".join(f"{k} {v}" for k, v in result["versions"].items()))]
    lines = [f"# {heading(question)}\n"]
    for answer in report.answers:
        lines += [f"## {answer.item}: {answer.asked}\n", f"**Answer.** {answer_text(answer)}\n"]
    lines += [f"![{os.path.splitext(figure)[0]}]({figure})\n" for figure in report.figures]
    lines += ["## Results\n", *[block + "\n" for block in report.body]]
    if report.findings:
        lines += ["\n## Findings\n", *[f"- {finding}" for finding in report.findings]]
    lines += ["\n## Settings\n", markdown_table(["setting", "value"], settings)]
    save_text(os.path.join(out_dir, f"{question.name}.md"), "\n".join(lines) + "\n")
    return [answer_text(answer) for answer in report.answers] + report.findings


# ----------------------------------------------------------------------------- lanes and the run

def saved_seconds(path):
    """The wall time saved in a result file, or None."""
    try:
        with open(path) as f:
            return json.load(f)["wall_s"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def plan_lanes(questions, n_lanes, seconds):
    """Split questions into at most n_lanes lanes to run side by side. A question joins the lane of the questions it
    reads, which run before it; the groups so formed go, longest first, to the lane with the least work so far.
    seconds: name -> expected wall time (None: unknown, counted as the mean of the known, or 1)."""
    order = {q.name: i for i, q in enumerate(questions)}
    groups = []
    for question in questions:
        touching = [g for g in groups if set(g) & set(question.reads)]
        groups = [g for g in groups if g not in touching] + [[n for g in touching for n in g] + [question.name]]
    known = [s for s in seconds.values() if s is not None]
    default = float(np.mean(known)) if known else 1.0
    cost = {name: default if seconds.get(name) is None else seconds[name] for name in order}
    lanes, load = [[] for _ in range(n_lanes)], [0.0] * n_lanes
    for group in sorted(groups, key=lambda g: -sum(cost[n] for n in g)):
        lane = load.index(min(load))
        lanes[lane] += group
        load[lane] += sum(cost[n] for n in group)
    return [sorted(lane, key=order.get) for lane in lanes if lane]


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


def prepare_output(folder):
    """Refuse, before anything trains, a results folder that cannot be created or written (creating nothing), and
    remove the temporary files that an earlier run left there when it was killed."""
    existing = os.path.abspath(folder)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing) or not os.access(existing, os.W_OK | os.X_OK):
        problem = "is not a folder" if not os.path.isdir(existing) else "is not writable"
        raise UserError(f"{folder}: cannot write results there ({existing} {problem})")
    for name in remove_stale_temporaries(folder):
        print(f"removed {os.path.join(folder, name)}, left by an interrupted run")


def run(script, args):
    """--list, --lanes, or the questions asked (with what they read) through the cache, then their reports; with
    --replot, only the reports. Returns the questions that failed."""
    out_dir = os.path.join(args.out, script.name)
    by_name = {q.name: q for q in script.questions}
    if args.list:
        print("\n".join(by_name))
        return []
    if args.lanes:
        seconds = {name: saved_seconds(os.path.join(out_dir, f"{name}.json")) for name in by_name}
        print("\n".join(" ".join(lane) for lane in plan_lanes(script.questions, args.lanes, seconds)))
        return []
    names = list(by_name) if "all" in args.question else list(dict.fromkeys(args.question))
    if not args.replot:
        for name in with_reads(script.questions, names):  # bad flags fail here, before any data is read
            resolve_settings(script, by_name[name], args)
        device = pick_device(args.device)
        if args.threads:  # on a GPU too: the CPU ops around it and parallel lanes share the machine's cores
            torch.set_num_threads(args.threads)
        data = script.load_data(args, device)
        env = Env(device, args.quiet, getattr(args, "cache_dir", None))
    prepare_output(out_dir)  # bad input has written nothing; a bad folder is refused before any training
    results, failed = {}, []

    def result_of(name, force=False):  # each question once per process; what it reads first
        if name not in results:
            question = by_name[name]
            reads = {read: result_of(read) for read in question.reads}
            results[name] = get_result(script, question, args, data, env, reads, force)
        return results[name]

    for name in names:
        start = time.perf_counter()
        try:
            if args.replot:
                result = read_result(os.path.join(out_dir, f"{name}.json"))
            else:
                result = result_of(name, force=args.force)
            findings = write_report(script, by_name[name], result, out_dir)
            print("\n".join([f"{name}: wrote {os.path.join(out_dir, name)}.{{md,json}} and its figures"]
                            + [f"  {finding}" for finding in findings]), flush=True)
        except Exception as e:
            if len(names) == 1 or isinstance(e, UserError):
                raise
            traceback.print_exc()  # one question's bug does not stop the others
            print(f"{name}: failed", flush=True)
            failed.append(name)
        if args.times:
            with open(args.times, "a") as f:
                f.write(f"{script.name}/{name}\t{time.perf_counter() - start:.1f}\t"
                        f"{'failed' if name in failed else 'ok'}\n")
    return failed


def main(script, argv=None):
    """The command line of mlp.py and cnn.py. An error in the user's input (a UserError) is one line on stderr and
    exit code 2; --debug shows the traceback."""
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    try:
        failed = run(script, parse_args(script, argv))
    except UserError as e:
        if "--debug" in argv:
            raise
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        sys.exit(1)
