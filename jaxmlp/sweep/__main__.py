"""`python -m jaxmlp.sweep SWEEP.yaml`: train every variant of a sweep and log it to MLflow."""
import os
import sys

from jaxmlp.sweep.signals import Interrupts

interrupts = Interrupts()
interrupts.install()  # Ctrl-C and SIGTERM count from here on, before JAX and MLflow are imported
try:
    from jaxmlp.runtime import use_one_cpu_device_per_core

    use_one_cpu_device_per_core()  # before anything imports JAX
    from jaxmlp.commands.sweep import main
    interrupts.check()
except KeyboardInterrupt:
    print("interrupted before the sweep started: nothing was trained or logged", file=sys.stderr, flush=True)
    os._exit(interrupts.exit_code)  # nothing to tear down yet; and Python would not re-raise the signal

raise SystemExit(main(interrupts=interrupts))
