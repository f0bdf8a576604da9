"""``evomp worker``: take the controller's queued candidates from a shared study,
evaluate them and tell the results (any number of workers, on any node, one per GPU)."""

from __future__ import annotations

import argparse
import os
import socket
from pathlib import Path

__all__ = ["register"]



def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "worker",
        help="evaluate the queued candidates of a shared study (any number, any machines)",
        description="A worker fetches the run's spec and float weights from the study's "
        "artifact store (published by 'evomp run'), then takes waiting trials, evaluates "
        "them (short or final QAT) and tells the results, until the controller says the "
        "study is done. It never pretrains.",
    )
    p.add_argument("spec", nargs="?", help="run specification (TOML); gives the study's name")
    p.add_argument("--storage", help="the shared study's database URL (PostgreSQL), or a "
                   "journal file's path; default: $EVOMP_STORAGE")
    p.add_argument("--run-dir", help="a local run directory whose study to join (the "
                   "journal file in it, or the database its controller uses)")
    p.add_argument("--study", help="study name (default: the spec's name, or the only one)")
    p.add_argument("--out", help="this worker's directory (default: <run dir>/workers/"
                   "<host>-<pid>, or runs/worker-<host>-<pid>)")
    p.add_argument("--artifacts", help="the artifact store's path on this node (default: "
                   "the path the controller recorded in the study)")
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: the GPU named by "
                   "LOCAL_RANK, or the first one; the CPU when there is none)")
    p.add_argument("--float", dest="float_path", help="float weights to use instead of "
                   "fetching the study's (refused when they differ)")
    p.add_argument("--threads", type=int, help="torch threads of this worker")
    p.add_argument("--max-trials", type=int, help="stop after this many evaluations")
    p.add_argument("--idle-exit", type=float, help="stop after this many seconds with "
                   "nothing to take (default: wait until the controller says done)")
    p.add_argument("--wait", type=float, default=600.0, help="seconds to wait for the "
                   "controller to create the study and publish its artifacts (default 600)")
    p.add_argument("--quiet", action="store_true", help="no line per trial")
    p.set_defaults(func=run)


def _storage(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from evomp._errors import EvompError
    from evomp.run import RunDir, check_storage_url
    from evomp.search import open_queue_storage

    url = args.storage or os.environ.get("EVOMP_STORAGE")
    if url is None and args.run_dir:
        note_url, _ = RunDir(args.run_dir).read_storage_note()
        if note_url:
            if "***" in note_url:
                raise EvompError(f"{args.run_dir}'s study is in a database whose password is "
                                 "masked in storage.txt; pass --storage URL (or set "
                                 "EVOMP_STORAGE)")
            url = note_url
        else:
            # never repaired here: the controller repaired it before it started workers, and
            # a live journal's last line may be an append in flight
            return _journal(RunDir(args.run_dir).journal)
    if url is None:
        raise EvompError("evomp worker needs the shared study: pass --storage URL, --run-dir "
                         "DIR or set EVOMP_STORAGE")
    if "://" not in url:
        path = Path(url)
        if not path.is_file():
            raise EvompError(f"--storage {url!r} is neither a database URL nor a journal file")
        return _journal(path)
    return open_queue_storage(check_storage_url(url))


def _journal(path: Path):  # type: ignore[no-untyped-def]
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    return JournalStorage(JournalFileBackend(str(path)))


def _wait_for_controller(storage, name: str, wait: float, quiet: bool):  # type: ignore[no-untyped-def]
    """The study, once the controller has created it and published the float weights."""
    import time

    import optuna

    from evomp._errors import EvompError

    end = time.time() + wait
    said = False
    while True:
        try:
            study = optuna.load_study(study_name=name, storage=storage)
            if "artifact:float" in study.user_attrs:
                return study
        except KeyError:
            pass
        if time.time() >= end:
            raise EvompError(f"no study {name!r} with published artifacts after {wait:g}s: "
                             "start the controller ('evomp run SPEC --storage ...'), or "
                             "raise --wait")
        if not said and not quiet:
            print(f"waiting for the controller to create study {name!r}...", flush=True)
            said = True
        time.sleep(1.0)


def run(args: argparse.Namespace) -> int:
    import optuna

    from evomp._errors import EvompError
    from evomp.objectives import Objectives
    from evomp.run import load_spec
    from evomp.search import Queue, Store, run_worker, states_dir, worker_context, worker_device
    from evomp.tasks import set_threads

    storage = _storage(args)
    name = args.study or (load_spec(args.spec).name if args.spec else None)
    if name is None:
        names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
        if len(names) != 1:
            raise EvompError(f"the storage holds {len(names)} studies {names}; name one "
                             "with --study or give the spec")
        name = names[0]
    study = _wait_for_controller(storage, name, args.wait, args.quiet)
    me = f"{socket.gethostname()}-{os.getpid()}"
    out = Path(args.out) if args.out else (Path(args.run_dir) / "workers" / me if args.run_dir
                                            else Path("runs") / f"worker-{me}")
    if args.threads is not None and args.threads < 0:
        raise EvompError(f"--threads must be >= 0 (0 = one thread per worker), got "
                         f"{args.threads}")
    set_threads(args.threads if args.threads else 1)
    device = worker_device(args.device)
    ctx, sha = worker_context(study, out, device,
                              Path(args.float_path) if args.float_path else None,
                              args.artifacts)
    s = ctx.spec.search
    objectives = Objectives(ctx.space.table, s.objectives, s.constraints, s.hardware,
                            ctx.spec.hw)
    queue = Queue(Store(storage, name, objectives), storage)
    store_path = args.artifacts or study.user_attrs.get("artifact_store")
    if store_path:  # the controller's short-QAT states, which final QATs continue
        ctx.evaluator.states_dir = states_dir(store_path)
    counts = run_worker(queue, ctx, objectives, float_sha=sha, upload_to=store_path,
                        max_trials=args.max_trials, idle_exit_s=args.idle_exit,
                        say=None if args.quiet else print)
    if not args.quiet:
        print(f"worker done: {counts.evaluated} evaluated, {counts.failed} failed "
              f"(busy {counts.busy_s:.0f}s, idle {counts.idle_s:.0f}s)")
    return 0
