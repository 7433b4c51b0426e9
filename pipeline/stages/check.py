"""Stage `check`: validate the whole params.yaml before anything runs on it.

It depends on every param, so any change of params.yaml reruns it (in well under a second): an
unknown key anywhere (a typo'd section such as `trian:`, which no other stage reads), a missing
key or a bad value stops `dvc repro` and `dvc exp run -S ...` with one line that names the key.
It writes nothing, imports neither PyTorch nor MLflow, and no stage depends on it: `dvc repro` runs it
first because it comes first in dvc.yaml, while `dvc repro <stage>` runs only that stage's upstream
(add `check` to the targets, or run `python -m pipeline.stages.check`, to validate there too).
"""
from __future__ import annotations

import argparse
import sys

from pipeline.params import ParamsError, load_params


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    try:
        load_params(args.params)
    except ParamsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{args.params}: every key known, every value valid")
    return 0


if __name__ == "__main__":
    sys.exit(main())
