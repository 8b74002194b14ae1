"""Check shell command lines before a GPU minute is spent on them: every file they name exists and parses, every
flag of a Python script is one its parser knows (and a value given to a flag with choices is among them), and a
pytest marker they select is registered. For `benchmarks/gpu_check.sh --dry-run`, which pipes its steps' commands
here, one per line (`&&` chains are split; leading VAR=value assignments and `timeout N` are skipped).

A script's parser is read by running it with --help in this process (each imports torch once, not once per script);
test files and setup.py are compiled, not run.

    echo "python benchmarks/bench_attention.py --size gpu --out x.json" | python scripts/check_commands.py
Prints one line per checked command and exits 1 if any check failed.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
import runpy
import shlex
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))


def script_help(path: str) -> str:
    """The --help text of a Python script, run in this process (SystemExit caught)."""
    out = io.StringIO()
    argv, sys.argv = sys.argv, [path, "--help"]
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
            runpy.run_path(path, run_name="__main__")
    except SystemExit:
        pass
    finally:
        sys.argv = argv
    return out.getvalue()


def check_script(path: str, args: list[str]) -> list[str]:
    """Problems with `python path args...`: a flag its --help does not list, or a value outside a flag's choices."""
    text = script_help(path)
    if "usage" not in text.lower():
        return [f"{path} --help printed no usage (it failed to import or has no parser)"]
    problems = []
    for i, arg in enumerate(args):
        if not arg.startswith("--"):
            continue
        flag = arg.split("=", 1)[0]
        if not re.search(rf"(^|[\s,\[]){re.escape(flag)}([\s,=\]]|$)", text, re.M):
            problems.append(f"{path}: unknown flag {flag}")
            continue
        choices = re.search(rf"{re.escape(flag)} \{{([^}}]*)\}}", text)
        value = arg.split("=", 1)[1] if "=" in arg else (args[i + 1] if i + 1 < len(args) else None)
        if choices and value is not None and value not in choices.group(1).split(","):
            problems.append(f"{path}: {flag} {value!r} is not one of {{{choices.group(1)}}}")
    return problems


def check_pytest(args: list[str]) -> list[str]:
    """pytest's paths exist and their test files compile; a -m marker is registered in pyproject.toml."""
    problems = []
    for i, arg in enumerate(args):
        if arg == "-m" and i + 1 < len(args):
            markers = open(os.path.join(ROOT, "pyproject.toml")).read()
            for word in re.findall(r"[A-Za-z_]\w*", args[i + 1]):
                if word not in ("and", "or", "not") and f'"{word}:' not in markers:
                    problems.append(f"pytest marker {word!r} is not registered in pyproject.toml")
        elif not arg.startswith("-") and (i == 0 or args[i - 1] not in ("-m", "-p", "--junitxml", "-k")):
            path = os.path.join(ROOT, arg)
            if not os.path.exists(path):
                problems.append(f"pytest path {arg} does not exist")
                continue
            files = [path] if path.endswith(".py") else [os.path.join(d, f) for d, _, fs in os.walk(path)
                                                         for f in fs if f.endswith(".py")]
            problems += _compile(files)
    return problems


def _compile(files: list[str]) -> list[str]:
    """Each file parsed and compiled in memory (nothing written)."""
    problems = []
    for f in files:
        try:
            compile(open(f, encoding="utf-8").read(), f, "exec")
        except (SyntaxError, ValueError, UnicodeDecodeError) as exc:
            problems.append(f"{os.path.relpath(f, ROOT)} does not compile: {exc}")
    return problems


def check_command(words: list[str]) -> tuple[str, list[str]]:
    """(what was checked, problems) for one simple command."""
    while words and (re.fullmatch(r"[A-Za-z_]\w*=.*", words[0]) or words[0] == "timeout"):
        words = words[2:] if words[0] == "timeout" else words[1:]
    if not words:
        return "(nothing)", []
    if len(words) > 2 and words[1] == "-m" and words[2] == "pytest":
        return "pytest " + " ".join(words[3:]), check_pytest(words[3:])
    scripts = [i for i, w in enumerate(words) if w.endswith(".py")]
    if not scripts:
        return words[0], []
    i = scripts[0]
    path = os.path.join(ROOT, words[i])
    if not os.path.exists(path):
        return words[i], [f"{words[i]} does not exist"]
    if os.path.basename(path) == "setup.py":
        return words[i], _compile([path])
    return " ".join(words[i:]), check_script(path, words[i + 1:])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("commands", nargs="*", help="command lines (default: read from stdin, one per line)")
    args = ap.parse_args()
    sys.path.insert(0, ROOT)
    os.chdir(ROOT)
    lines = args.commands or [line for line in sys.stdin.read().splitlines() if line.strip()]
    failed = 0
    for line in lines:
        for part in line.split("&&"):
            what, problems = check_command(shlex.split(part))
            print(("ok      " if not problems else "PROBLEM ") + what)
            for p in problems:
                print("        " + p)
            failed += bool(problems)
    print(f"{failed} command(s) with problems")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
