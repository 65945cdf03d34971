"""`python -m jaxmlp.bench`: see `jaxmlp.bench`."""
from jaxmlp.bench.cli import main

raise SystemExit(main())
