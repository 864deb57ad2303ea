"""segkit's version: the one number the package, its checkpoints and its reports carry."""

__version__ = "0.1.0"
