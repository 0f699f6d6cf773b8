"""A question's saved result (.json, its arrays' .npz, its model states' .pt), its training code's digest."""
import ast
import functools
import hashlib
import inspect
import json
import os
import sys

import numpy as np
import torch

from common import HERE, UserError, file_digest


@functools.cache
def definitions(module_name):
    """(name -> (source, names used) per top-level definition, name -> (module, name) per project import)."""
    source = inspect.getsource(sys.modules[module_name])
    defined, imported = {}, {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.ImportFrom) and node.module and os.path.exists(
                os.path.join(HERE, *node.module.split(".")) + ".py"):
            imported.update({alias.asname or alias.name: (node.module, alias.name) for alias in node.names})
        names = ([node.name] if isinstance(node, (ast.FunctionDef, ast.ClassDef)) else
                 [t.id for t in node.targets if isinstance(t, ast.Name)] if isinstance(node, ast.Assign)
                 else [])
        used = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
        defined.update({name: (ast.get_source_segment(source, node), used) for name in names})
    return defined, imported


def training_code(script, question):
    """(module, name) -> source of the train function and all it reaches, but shared_code (counted whole)."""
    shared = {os.path.splitext(file)[0] for file in script.shared_code}
    sources, todo = {}, [(question.train.__module__, question.train.__name__)]
    while todo:
        module_name, name = todo.pop()
        if (module_name, name) in sources or module_name in shared:
            continue
        defined, imported = definitions(module_name)  # each module parsed once (functools.cache)
        source, used = defined.get(name, ("", set()))
        sources[module_name, name] = source
        todo += [(module_name, n) for n in used if n in defined]
        todo += [imported[n] for n in used if n in imported]
    return sources


def training_digest(script, question):
    """sha256 of training_code and shared_code: an edit of a report retrains nothing."""
    code = file_digest([os.path.join(HERE, file) for file in script.shared_code])
    for (module, name), source in sorted(training_code(script, question).items()):
        code += f"\n{module}.{name}\n{source}"
    return hashlib.sha256(code.encode()).hexdigest()[:16]


def read_saved(file, result, key, advice):
    """The arrays (.npz) or model states (.pt) of result's config, read as plain numbers (no code runs)."""
    try:
        if key == "arrays":
            with np.load(file, allow_pickle=False) as arrays:
                saved = {"arrays": dict(arrays)}
            saved["config"] = json.loads(str(saved["arrays"].pop("config")))
        else:
            saved = torch.load(file, map_location="cpu", weights_only=True)
        if saved["config"] != result["config"]:
            raise ValueError("its config is not the .json's")
    except Exception as e:  # missing, truncated or foreign: numpy and torch raise several types
        reason = (str(e).strip().splitlines() or [""])[0].split(". ")[0]
        raise UserError(f"{file}: unreadable ({type(e).__name__}: {reason}); {advice}") from None
    return saved[key]


def read_result(path, advice="rerun the question with --force"):
    """The saved result at path with its arrays (its model states are read only when needed)."""
    try:
        with open(path) as f:
            result = json.load(f)
    except FileNotFoundError:
        raise UserError(f"{path}: no saved result; run the question without --replot first") from None
    except ValueError as e:
        raise UserError(f"{path}: not valid JSON ({e}); {advice}") from None
    if result.get("arrays_file"):
        file = os.path.join(os.path.dirname(path), result["arrays_file"])
        result["arrays"] = read_saved(file, result, "arrays", advice)
    return result
