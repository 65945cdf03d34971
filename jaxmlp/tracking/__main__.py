"""`python -m jaxmlp.tracking model RUN_ID [--register NAME]`: make any child run's saved
parameters an MLflow pyfunc model (optionally registered)."""
from __future__ import annotations

import argparse

from jaxmlp.tracking.store import Tracker
from jaxmlp.tracking.uri import TRACKING_URI_HELP


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m jaxmlp.tracking",
                                description="Log a sweep child's saved parameters as an MLflow pyfunc model.")
    sub = p.add_subparsers(dest="command", required=True)
    model = sub.add_parser("model", help="log the run's checkpoint artifact as a model")
    model.add_argument("run_id")
    model.add_argument("--tracking-uri", help=TRACKING_URI_HELP)
    model.add_argument("--register", metavar="NAME", help="also register it in the Model Registry")
    args = p.parse_args(argv)
    tracker = Tracker(args.tracking_uri)
    uri = tracker.log_model_from_run(args.run_id)
    print(f"logged {uri} on run {args.run_id}")
    if args.register:
        version = tracker.register_model(uri, args.register)
        print(f"registered as {args.register} version {version.version}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
