"""Which engine runs a sparse layer: pc3d's native one or spconv.

'auto' (the default) uses spconv for CUDA tensors when spconv imports, and the native engine
everywhere else. `set_backend` changes the default; every sparse module also takes `backend=`.
spconv is imported lazily, the first time it is needed.
"""
from __future__ import annotations

import functools
import importlib
import warnings

from pc3d.errors import BackendUnavailableError, ConfigError

BACKENDS = ("auto", "native", "spconv")
_default = "auto"


def set_backend(name: str) -> None:
    """Default backend of every sparse module that does not set its own."""
    global _default
    if name not in BACKENDS:
        raise ConfigError(f"sparse backend must be one of {BACKENDS}, not {name!r}")
    if name == "spconv":
        spconv_module()
    _default = name


def get_backend() -> str:
    return _default


@functools.cache
def _spconv_or_error():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # spconv 2.3.6 warns about torch.cuda.amp on import
        try:
            return importlib.import_module("spconv.pytorch"), None
        except Exception as exc:  # a missing or broken install, reported when it is asked for
            return None, f"{type(exc).__name__}: {exc}"


def spconv_module():
    """`spconv.pytorch`, or BackendUnavailableError saying why not."""
    module, why = _spconv_or_error()
    if module is None:
        raise BackendUnavailableError(f"the spconv backend is unavailable ({why}); install spconv-cu120")
    return module


def resolve(requested: str | None, device_type: str, grouped: bool = False) -> str:
    """'native' or 'spconv' for a layer with `requested` backend on a device. 'auto' leaves grouped and
    depthwise convs (`grouped`), which spconv 2.3 does not have, to the native engine, so a separable network
    runs on CUDA with spconv for its other layers; asking for spconv by name for one is refused when it runs."""
    name = requested or _default
    if name not in BACKENDS:
        raise ConfigError(f"sparse backend must be one of {BACKENDS}, not {name!r}")
    if name == "auto":
        usable = device_type == "cuda" and not grouped and _spconv_or_error()[0] is not None
        return "spconv" if usable else "native"
    return name


def available_backends() -> dict[str, list[str]]:
    """Backends that can run on each device type here."""
    import torch

    has_spconv = _spconv_or_error()[0] is not None
    out = {"cpu": ["native"] + (["spconv (ConvAlgo.Native, for cross-checks)"] if has_spconv else [])}
    if torch.cuda.is_available():
        out["cuda"] = (["spconv (default)"] if has_spconv else []) + ["native"]
    return out
