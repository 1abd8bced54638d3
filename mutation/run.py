"""`make mutate`: mutmut on the functions that compute reported numbers, then the score and the survivors.

Runs `mutmut run` on the mutants of the functions `mutation/targets.toml`
lists (all of them, or the `sample = true` modules' with --sample), from a
fresh `mutants/` copy unless --keep. --ci (CI's check) runs a fixed part of
the sample modules' mutants, against their own fast tests only, in a scratch
copy of the project (targets.toml's [ci] table). Then per module: mutants killed
(a timeout counts as killed: the tests noticed), survived (a mutant no
test runs counts as survived), and excluded (the equivalent mutants of
`mutation/equivalents.toml`, each kept only while its mutated line still
reads as recorded); the score is killed / (all - excluded). Prints every
survivor's diff and exits 1 below --min-score. See docs/mutation-testing.md.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGETS = ROOT / "mutation" / "targets.toml"
EQUIVALENTS = ROOT / "mutation" / "equivalents.toml"
KILLED = {"killed", "timeout", "segfault", "caught by type check"}


@dataclass(frozen=True)
class Equivalent:
    """A mutant left out of the score: its id, its mutated line as recorded, and why it cannot change a number."""

    id: str
    mutated: str
    reason: str


@dataclass(frozen=True)
class Pattern:
    """A class of mutants left out: regexes on the original and the mutated line (and a mutant-name glob), and why."""

    removed: str
    added: str
    functions: str
    reason: str

    def matches(self, name: str, diff: str) -> bool:
        """Whether the mutant `name` with this diff is of the class."""
        return (
            fnmatch.fnmatchcase(name, self.functions)
            and any(re.search(self.removed, line) for line in changed_lines(diff, "-"))
            and any(re.search(self.added, line) for line in changed_lines(diff, "+"))
        )


def mutant_globs(targets: dict, sample: bool) -> list[str]:
    """mutmut mutant-name globs of the listed functions (``module.x_function__mutmut_*``, ``module.xǁClassǁmethod__mutmut_*``)."""
    globs = []
    for module, entry in targets["modules"].items():
        if sample and not entry.get("sample", False):
            continue
        for name in entry["functions"]:
            if "." in name:
                cls, method = name.split(".")
                globs.append(f"{module}.xǁ{cls}ǁ{method}__mutmut_*")
            else:
                globs.append(f"{module}.x_{name}__mutmut_*")
    return globs


def every_nth(globs: list[str], every: int, most: int = 1000) -> list[str]:
    """The fixed part of these functions' mutants CI runs: numbers 1, 1 + every, 1 + 2 every, ... of each function.

    mutmut numbers each function's mutants from 1 in a fixed order, so this
    is the same part for the same code, and it holds every function's first.
    """
    return [glob.removesuffix("*") + str(k) for glob in globs for k in range(1, most, every)]


def with_mutmut_lists(pyproject: str, lists: dict[str, list[str]]) -> str:
    """pyproject.toml's text with these list settings of [tool.mutmut] replaced (each must be there already)."""
    start = pyproject.index("[tool.mutmut]")
    following = re.search(r"^\[", pyproject[start + 1 :], re.M)  # the next table, if any
    end = start + 1 + following.start() if following else len(pyproject)
    section = pyproject[start:end]
    for key, values in lists.items():
        body = "".join(f"    {json.dumps(v)},\n" for v in values)
        section, found = re.subn(rf"^{key} = \[.*?^\]", f"{key} = [\n{body}]", section, count=1, flags=re.M | re.S)
        if not found:
            raise KeyError(f"[tool.mutmut] has no {key} list")
    return pyproject[:start] + section + pyproject[end:]


def run_ci(targets: dict, jobs: int, min_score: float) -> int:
    """CI's check: the fixed part of the sample modules' mutants, scored in a scratch copy of the project."""
    ci = targets["ci"]
    files = [module.replace(".", "/") + ".py" for module, entry in targets["modules"].items() if entry.get("sample")]
    with tempfile.TemporaryDirectory(prefix="mutate-ci-") as scratch:
        copy = Path(scratch)
        listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True)
        if listed.returncode != 0:
            print("error: make mutate-ci copies the project's git-tracked files: run it in a git clone", file=sys.stderr)
            return 2
        for name in filter(None, listed.stdout.decode().split("\0")):  # the project as committed, with this working tree's edits
            if (ROOT / name).is_file():
                (copy / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / name, copy / name)
        pyproject = (ROOT / "pyproject.toml").read_text()
        lists = {"only_mutate": files, "pytest_add_cli_args_test_selection": ci["tests"]}
        (copy / "pyproject.toml").write_text(with_mutmut_lists(pyproject, lists))
        command = [sys.executable, str(copy / "mutation" / "run.py"), "--sample", "--every", str(ci["every"]),
                   "--jobs", str(jobs), "--min-score", str(min_score)]  # fmt: skip
        return subprocess.call(command, cwd=copy)


def load_equivalents(path: Path = EQUIVALENTS) -> tuple[list[Equivalent], list[Pattern]]:
    """The committed equivalent mutants, one by one and by class."""
    data = tomllib.loads(path.read_text()) if path.exists() else {}
    ones = [Equivalent(e["id"], e["mutated"], e["reason"]) for e in data.get("equivalent", [])]
    classes = [Pattern(p["removed"], p.get("added", ""), p.get("functions", "*"), p["reason"]) for p in data.get("pattern", [])]
    return ones, classes


def results(globs: list[str]) -> dict[str, str]:
    """Each targeted mutant's status, from the `.meta` files mutmut leaves under mutants/."""
    from mutmut.stats import status_by_exit_code

    out = {}
    for meta in sorted((ROOT / "mutants").rglob("*.py.meta")):
        try:
            codes = json.loads(meta.read_text())["exit_code_by_key"]
        except json.JSONDecodeError:  # being rewritten by a run in progress: read it again
            time.sleep(1)
            codes = json.loads(meta.read_text())["exit_code_by_key"]
        for name, code in codes.items():
            if any(fnmatch.fnmatchcase(name, g) for g in globs):
                out[name] = status_by_exit_code[code]
    return out


def diff_of(name: str) -> str:
    """The mutant's unified diff against the original function."""
    from mutmut.mutation.diff_apply import get_diff_for_mutant

    return get_diff_for_mutant(name, path=module_of(name).replace(".", "/") + ".py")


def changed_lines(diff: str, sign: str = "+") -> list[str]:
    """The mutated ("+") or original ("-") lines of a diff, stripped."""
    return [line[1:].strip() for line in diff.splitlines() if line.startswith(sign) and not line.startswith(sign * 3)]


def record_equivalent(name: str, reason: str, path: Path = EQUIVALENTS) -> None:
    """Append an [[equivalent]] entry for `name`, its mutated line taken from its diff in mutants/."""
    mutated = changed_lines(diff_of(name))[0]
    fields = {"id": json.dumps(name, ensure_ascii=False), "mutated": json.dumps(mutated), "reason": json.dumps(reason)}
    with path.open("a") as out:  # JSON strings are TOML basic strings
        out.write("\n[[equivalent]]\n" + "".join(f"{key} = {value}\n" for key, value in fields.items()))


def module_of(name: str) -> str:
    """`pipeline.measures.roc` of `pipeline.measures.roc.x_roc__mutmut_3`."""
    from mutmut.utils.format_utils import get_module_from_key

    return get_module_from_key(name)


def score_table(status: dict[str, str], excluded: set[str]) -> tuple[list[tuple[str, int, int, int, int]], float]:
    """Per module (killed, survived, excluded, total) and the overall score in percent."""
    rows: dict[str, Counter] = {}
    for name, state in status.items():
        c = rows.setdefault(module_of(name), Counter())
        c["total"] += 1
        if name in excluded:
            c["excluded"] += 1
        elif state in KILLED:
            c["killed"] += 1
        else:
            c["survived"] += 1
    table = [(m, c["killed"], c["survived"], c["excluded"], c["total"]) for m, c in sorted(rows.items())]
    killed = sum(r[1] for r in table)
    scored = sum(r[4] - r[3] for r in table)
    return table, 100.0 * killed / scored if scored else 100.0


def mutmut_run(mutmut: Path, jobs: int, names: list[str]) -> int:
    """`mutmut run` of these mutant names or globs, its output kept in a log file only if it fails."""
    with tempfile.NamedTemporaryFile("w", suffix=".log", prefix="mutmut-run-", delete=False) as out:
        code = subprocess.call([str(mutmut), "run", "--max-children", str(jobs), *names], stdout=out, stderr=out)
    if code != 0:
        print(f"mutmut run failed (exit {code}); its output is in {out.name}", file=sys.stderr)
        return code
    os.remove(out.name)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the mutants, print the table, the survivors and the score; nonzero below the minimum."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sample", action="store_true", help="only the modules marked sample = true")
    parser.add_argument("--keep", action="store_true", help="reuse mutants/: rerun only the mutants not killed there")
    parser.add_argument("--report-only", action="store_true", help="no run: score what mutants/ holds")
    parser.add_argument("--ci", action="store_true", help="CI's check: a fixed part of the sample, in a scratch copy")
    parser.add_argument("--every", type=int, default=1, help="only each function's mutants 1, 1 + EVERY, 1 + 2 EVERY, ...")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--min-score", type=float, default=90.0)
    parser.add_argument("--equivalent", nargs=2, metavar=("ID", "REASON"), help="record a surviving mutant as equivalent")
    parser.add_argument("only", nargs="*", help="mutant-name globs: run only these (with --keep: only these of the not killed)")
    args = parser.parse_args(argv)
    os.chdir(ROOT)
    sys.path.insert(0, str(ROOT))  # mutmut reads pyproject.toml from the working directory
    if args.equivalent:
        record_equivalent(*args.equivalent)
        return 0
    targets = tomllib.loads(TARGETS.read_text())
    if args.ci:
        return run_ci(targets, args.jobs, args.min_score)
    globs = mutant_globs(targets, args.sample)
    run_globs = args.only or globs
    started = time.monotonic()
    if args.every > 1:
        globs = run_globs = every_nth(globs, args.every)
    if args.keep and (ROOT / "mutants").is_dir():  # rerun only what was not killed (and what is new), of `only` if given
        wanted = [name for name, state in results(globs).items() if state not in KILLED or state == "timeout"]
        run_globs = [name for name in wanted if not args.only or any(fnmatch.fnmatchcase(name, g) for g in args.only)]
    elif not args.keep and not args.report_only:
        shutil.rmtree(ROOT / "mutants", ignore_errors=True)
    if not args.report_only and run_globs:
        code = mutmut_run(Path(sys.executable).parent / "mutmut", args.jobs, run_globs)
        if code != 0:
            return code
    status = results(globs)
    ones, classes = load_equivalents()
    excluded, stale = set(), []
    for eq in ones:
        if eq.id not in status:
            continue
        if status[eq.id] not in KILLED and eq.mutated.strip() in changed_lines(diff_of(eq.id)):
            excluded.add(eq.id)
        else:
            stale.append(f"{eq.id} ({'killed now' if status[eq.id] in KILLED else 'its line changed'})")
    by_class = Counter()
    for name in sorted(n for n, s in status.items() if s not in KILLED | {"not checked"} and n not in excluded):
        diff = diff_of(name)
        for pattern in classes:
            if pattern.matches(name, diff):
                excluded.add(name)
                by_class[pattern.reason] += 1
                break
    table, score = score_table(status, excluded)
    print(f"{'module':42} {'killed':>7} {'survived':>9} {'excluded':>9} {'total':>6}")
    for module, killed, survived, n_excluded, total in table:
        print(f"{module:42} {killed:7} {survived:9} {n_excluded:9} {total:6}")
    survivors = sorted(n for n, s in status.items() if s not in KILLED and n not in excluded)
    for name in survivors:
        if status[name] != "not checked":
            print(f"\n--- survived ({status[name]}): {name}")
            print(diff_of(name))
    unchecked = sum(status[name] == "not checked" for name in survivors)
    if unchecked:
        run_only = {n: s for n, s in status.items() if s != "not checked"}
        _, run_score = score_table(run_only, excluded & set(run_only))
        print(f"\n{unchecked} mutants not run yet (counted as survived): make mutate MUTATE_ARGS=--keep runs them; "
              f"the score of the {len(run_only)} run is {run_score:.1f}%")
    for reason, count in by_class.most_common():
        print(f"excluded by class ({count}): {reason}")
    for entry in stale:
        print(f"stale entry in mutation/equivalents.toml, not excluded: {entry}")
    minutes = (time.monotonic() - started) / 60
    print(f"\nmutation score: {score:.1f}% ({len(survivors)} survived, {len(excluded)} equivalent excluded, "
          f"{len(status)} mutants; {minutes:.1f} min)")
    return 0 if score >= args.min_score else 1


if __name__ == "__main__":
    sys.exit(main())
