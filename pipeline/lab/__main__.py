"""The lab's one entry point: `python -m pipeline.lab COMMAND` (installed: `faceverify-lab COMMAND`).

`record` and `tables` keep docs/experiments.json, docs/EXPERIMENTS.md and the README's results block;
`paired` compares the recorded runs seed by seed; `view2` runs, reports and compares LFW View 2;
`fuse` fuses two View 2 configurations' networks; `screenshot` shows two pipeline runs in the MLflow UI.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pipeline.lab import records, screenshot, view2


def _tables(args) -> int:
    """`record` and `tables`, from --json's saved `dvc exp show --json`, none (--no-live), or DVC's own
    (none where it fails: docs/experiments.json alone)."""
    shown = json.loads(args.json.read_text()) if args.json else None
    if shown is None and not getattr(args, "no_live", False):
        try:
            shown = records.show(args.num)
        except SystemExit as e:
            print(f"{e}; writing from {records.DATA.relative_to(records.ROOT)} alone", file=sys.stderr)
    records.tables(shown, record=args.command == "record")
    return 0


def _paired(args) -> int:
    change, base = (records.plain(records.parse_sets(s, o)) for s, o in ((args.change, "paired"), (args.base, "--base")))
    cols = ("val AUC", "val id rank-1", "val id 20-way", "test acc")  # a record without a column pairs none of it
    lock = records.lock_record() if args.lock else None  # the newest run of the committed params: last, so its seed wins
    recs = records.load() + ([lock] if lock else [])
    print("\n".join(records.paired(recs, records.params_file(), change, base, cols)))
    return 0


def _view2(args) -> int:
    if args.action == "paired":
        print("\n".join(view2.paired(*view2.pick(view2.load_records(), args.a, args.b, args.set, args.a_set, args.b_set))))
        return 0
    return view2.run(args) if args.action == "run" else view2.report(args)


def _fuse(args) -> int:
    from pipeline.lab import fusion  # PyTorch: only for this command
    ra, rb = view2.pick(view2.load_records(), args.a, args.b, args.set, args.a_set, args.b_set)
    return fusion.run(ra, rb, show_test=args.test, write=args.write, mlflow=not args.no_mlflow)


def _two_configurations(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("a", metavar="COMMIT_A", help="configuration A's pipeline commit, as docs/VIEW2.md names it")
    p.add_argument("b", metavar="COMMIT_B", help="configuration B's pipeline commit (may be A's)")
    p.add_argument("-S", "--set", action="append", default=[], metavar="KEY=VALUE", help="an override both ran with")
    p.add_argument("--a-set", action="append", default=[], metavar="KEY=VALUE", help="an override of A's alone")
    p.add_argument("--b-set", action="append", default=[], metavar="KEY=VALUE", help="an override of B's alone")
    return p


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="python -m pipeline.lab", description=__doc__.splitlines()[0])
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, text in (("record", "add the finished DVC experiments to docs/experiments.json, then write the tables"),
                       ("tables", "write docs/EXPERIMENTS.md and the README's results block")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--num", type=int, default=20, help="read the experiments of the last N commits")
        p.add_argument("--json", type=Path, help="read this saved `dvc exp show --json` output instead of running it")
        if name == "tables":
            p.add_argument("--no-live", action="store_true", help="do not run `dvc exp show`: docs/experiments.json alone")
        p.set_defaults(handler=_tables)
    p = sub.add_parser("paired", help="params.yaml (A) against A with a change (B), seed by seed over the recorded runs")
    p.add_argument("change", nargs="+", metavar="KEY=VALUE", help="B's change, as dvc exp run -S takes it")
    p.add_argument("--base", nargs="+", default=[], metavar="KEY=VALUE",
                   help="A is params.yaml with these (e.g. the restricted protocol's overrides)")
    p.add_argument("--lock", action="store_true",
                   help="count the run behind dvc.lock as its seed's newest run (it changes with each rerun of the lock)")
    p.set_defaults(handler=_paired)

    actions = sub.add_parser("view2", help="LFW View 2: run the folds, report them, compare two configurations")
    actions.set_defaults(handler=_view2)
    actions = actions.add_subparsers(dest="action", required=True, metavar="ACTION")
    r = actions.add_parser("run", help="run the missing folds one after the other, then report")
    r.add_argument("--folds", type=view2.parse_folds, default=list(range(1, view2.FOLDS + 1)), help="e.g. 1-10 (default), 1,4-6")
    r.add_argument("-S", "--set", action="append", default=[], metavar="KEY=VALUE", help="a params override, as dvc exp run -S")
    r.add_argument("--num", type=int, default=20, help="look for finished folds in the experiments of the last N commits")
    r.add_argument("--final", action="store_true",
                   help="the final report of a fixed recipe: refused at a seed a run that can decide used, or "
                        "for a recipe whose final ran")
    p = actions.add_parser("report", help="docs/VIEW2.md, docs/view2.json and MLflow from the finished folds")
    p.add_argument("--num", type=int, default=20, help="read the experiments of the last N commits")
    p.add_argument("--rev", default="HEAD", help="... counted back from this commit")
    p.add_argument("--no-live", action="store_true", help="do not run `dvc exp show`: docs/VIEW2.md from docs/view2.json")
    for q in (r, p):
        q.add_argument("--no-mlflow", action="store_true", help="do not record the summary in MLflow")
    _two_configurations(actions.add_parser("paired", help="compare two configurations of docs/view2.json fold by fold"))

    p = _two_configurations(sub.add_parser("fuse", help="two View 2 configurations' networks fused (no retraining)"))
    p.add_argument("--test", action="store_true", help="also print the test figures (selection reads validation alone)")
    p.add_argument("--write", action="store_true",
                   help="record it, test figures included, in docs/view2_fusion.json, docs/VIEW2.md and MLflow")
    p.add_argument("--no-mlflow", action="store_true", help="with --write: not in MLflow")
    p.set_defaults(handler=_fuse)

    p = sub.add_parser("screenshot", help="the MLflow UI comparing two pipeline runs, as a PNG")
    p.add_argument("--store", default=screenshot.STORE, help="the MLflow store (default: the repository's mlflow.db)")
    p.add_argument("--runs", nargs="*", help="pipeline run names (default: the two newest that evaluated)")
    p.add_argument("--out", type=Path, default=screenshot.OUT)
    p.add_argument("--size", default="1600,2600", help="window width,height in pixels")
    p.set_defaults(handler=lambda args: screenshot.screenshot(args.store, args.runs, args.out, args.size))
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
