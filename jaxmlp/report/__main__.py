"""`python -m jaxmlp.report SWEEP`: the report of a tracked sweep (see `jaxmlp.report.cli`)."""
from jaxmlp.report.cli import main

raise SystemExit(main())
