"""`python -m jaxmlp.tracking model RUN_ID [--register NAME]`: make any child run's saved
parameters an MLflow pyfunc model (optionally registered).
`python -m jaxmlp.tracking replay FOLDER [--tracking-uri URI]`: log what a sweep could not
log (its spool folder, `jaxmlp.tracking.spool`) into a store."""
from __future__ import annotations

import argparse
import sys

from jaxmlp.tracking.logs import quiet_mlflow_logging
from jaxmlp.tracking.process import bound_http_requests, store_failure
from jaxmlp.tracking.store import Tracker
from jaxmlp.tracking.uri import TRACKING_URI_HELP, resolve_tracking_uri, store_fix, unsupported_scheme


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m jaxmlp.tracking",
                                description="Log a sweep child's saved parameters as an MLflow pyfunc model, or replay a "
                                            "sweep's spool folder into a store.")
    sub = p.add_subparsers(dest="command", required=True)
    model = sub.add_parser("model", help="log the run's checkpoint artifact as a model")
    model.add_argument("run_id")
    model.add_argument("--tracking-uri", help=TRACKING_URI_HELP)
    model.add_argument("--register", metavar="NAME", help="also register it in the Model Registry")
    replay = sub.add_parser("replay", help="log a sweep's spool folder (what it could not log) into a store")
    replay.add_argument("folder")
    replay.add_argument("--tracking-uri", help="the store to log into (default: the sweep's own)")
    args = p.parse_args(argv)
    quiet_mlflow_logging()
    bound_http_requests()
    unsupported = args.tracking_uri and unsupported_scheme(args.tracking_uri)
    if unsupported:
        p.error(f"--tracking-uri {args.tracking_uri}: {unsupported}")
    try:
        return _command(args)
    except Exception as err:  # noqa: BLE001 - the store's failure as one line; anything else raises
        reason = store_failure(err)
        if reason is None:
            raise
        fix = f" Fix: {store_fix(resolve_tracking_uri(args.tracking_uri))}." if args.tracking_uri else ""
        print(f"error: the tracking store failed: {reason}.{fix}", file=sys.stderr)
        return 2


def _command(args: argparse.Namespace) -> int:
    if args.command == "replay":
        from jaxmlp.tracking.replay import SpoolError, replay

        try:
            replay(args.folder, args.tracking_uri)
        except (FileNotFoundError, SpoolError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        return 0
    tracker = Tracker(args.tracking_uri)
    try:
        uri = tracker.log_model_from_run(args.run_id)
    except LookupError as err:  # RunNotFound included
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"logged {uri} on run {args.run_id}")
    if args.register:
        version = tracker.register_model(uri, args.register)
        print(f"registered as {args.register} version {version.version}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
