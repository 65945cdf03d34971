"""jaxmlp: a functional JAX toolkit for multilayer perceptrons with experiment tracking."""

__version__ = "0.1.0"
