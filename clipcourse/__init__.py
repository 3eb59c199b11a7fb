"""clipcourse: the small package behind the course "How CLIP learns".

Import the module you need (`from clipcourse import data, loss`); importing `clipcourse` itself
loads nothing heavy, and each submodule is loaded on first use.
"""

import importlib

__version__ = "0.1.0"
__all__ = ["data", "text", "encoders", "model", "loss", "temperature", "temperature_maths", "train",
           "evaluate", "experiments", "claims", "checkpoint", "siglip", "diagnostics", "distributed", "widgets", "plots", "dashboard", "exercises", "paths"]


def __getattr__(name):
    if name in __all__:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
