"""`python -m jaxmlp.sweep SWEEP.yaml`: train every variant of a sweep and log it to MLflow."""
from jaxmlp.runtime import use_one_cpu_device_per_core

use_one_cpu_device_per_core()  # before anything imports JAX

from jaxmlp.sweep.cli import main  # noqa: E402

raise SystemExit(main())
