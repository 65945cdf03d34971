"""The commands' front ends that sit above the library (`jaxmlp.api`): they parse arguments,
set up the runtime (signals, progress, stderr), call the library and print. `python -m
jaxmlp.sweep` dispatches to `jaxmlp.commands.sweep`."""
