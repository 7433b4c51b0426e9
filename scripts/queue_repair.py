"""Put back in the DVC queue the experiments that a stopping queue worker took and never ran.

    python scripts/queue_repair.py      # then `dvc queue start` runs them

A queue worker stops about 10 s after its queue empties (dvc-task's TemporaryWorker). An experiment
queued in those seconds can be taken by it (the filesystem broker moves the message to its processed
folder as it is read) and never run. DVC then counts it as active for good, with no info file:
`dvc queue status` shows it running with no worker, and `dvc exp show` of its commit fails with "No
such file or directory: .../.dvc/tmp/exps/run/<rev>/<rev>.run". With no queue worker running, this
finds such experiments and moves their messages back to the queue. `scripts/view2.py run` does the
same by itself.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def pid_alive(pid) -> bool:
    try:
        os.kill(int(pid), 0)
    except (TypeError, ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


def worker_alive(root: Path = ROOT) -> bool:
    """Whether a DVC queue worker of the repository `root` is running (the pids DVC keeps in
    .dvc/tmp/exps/celery/dvc-exp-worker-N.json)."""
    for info in (root / ".dvc" / "tmp" / "exps" / "celery").glob("dvc-exp-worker-*.json"):
        try:
            pid = json.loads(info.read_text()).get("pid")
        except (OSError, ValueError, AttributeError):
            continue
        if pid_alive(pid):
            return True
    return False


def requeue_lost(root: Path = ROOT, rev: str | None = None) -> list[tuple[str, str]]:
    """Move back to the queue the message of every experiment a worker took and never ran (only that of
    stash commit `rev`, if given): in the broker's processed folder, with no result, no info file, and
    its entry still in DVC's queue stash (a worker's setup drops the entry first, so one that began is
    never put back). Nothing while a worker runs: it may be about to set one up. The (stash commit,
    name) of each one put back."""
    if worker_alive(root):
        return []
    from dvc.repo import Repo

    back = []
    with Repo(str(root)) as repo:
        queue = repo.experiments.celery_queue
        queue_in = Path(queue.celery.conf.broker_transport_options["data_folder_in"])
        stashed = queue.stash.stash_revs
        for msg, entry in queue._iter_processed():  # DVC's own walk of the processed folder
            if rev not in (None, entry.stash_rev) or entry.stash_rev not in stashed:
                continue
            if queue.celery.AsyncResult(msg.headers["id"]).ready():
                continue  # it ran
            if Path(queue.get_infofile_path(entry.stash_rev)).exists():
                continue  # a worker set it up
            path = Path(queue.celery._processed_msg_path_cache[msg.delivery_tag])
            os.replace(path, queue_in / path.name)
            back.append((entry.stash_rev, entry.name or entry.stash_rev[:7]))
    return back


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(description=__doc__.split("\n\n")[0]).parse_args(argv)
    if worker_alive(ROOT):
        print("a DVC queue worker is running (it may be setting an experiment up): run this again once it has "
              "stopped (`dvc queue stop`, or docs/TROUBLESHOOTING.md for one that does not)", file=sys.stderr)
        return 1
    back = requeue_lost(ROOT)
    for rev, name in back:
        print(f"queued again: {name} ({rev[:7]})")
    print(f"{len(back)} experiments put back in the queue" + ("; `dvc queue start` runs them" if back else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
