"""`python -m jaxmlp.sweep SWEEP.yaml`: train every variant of a sweep and log it to MLflow."""
import os

if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    # One XLA CPU device per core, so small variants can be sharded across cores; it only
    # affects the CPU platform and must be set before JAX starts.
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               f" --xla_force_host_platform_device_count={os.cpu_count() or 1}").strip()

from jaxmlp.sweep.cli import main  # noqa: E402

raise SystemExit(main())
