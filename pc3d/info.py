"""Environment report: library versions, threads and the sparse backends usable on each device."""
from __future__ import annotations

import importlib
import importlib.metadata
import platform
import warnings


def _version(dist_names: tuple[str, ...]) -> str:
    for name in dist_names:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return "not installed"


def _importable(module: str) -> tuple[bool, str]:
    try:
        with warnings.catch_warnings():
            # spconv 2.3.6 decorates with torch.cuda.amp.custom_fwd / custom_bwd, deprecated since torch 2.4
            warnings.filterwarnings("ignore", category=FutureWarning, module=r"spconv\.")
            importlib.import_module(module)
        return True, ""
    except Exception as exc:  # a broken optional install is reported, not raised
        return False, f"{type(exc).__name__}: {exc}".splitlines()[0]


def environment_report() -> str:
    """Return a human-readable report; imports the optional packages to check they work."""
    import numba
    import torch

    from pc3d.sparse.backend import available_backends

    lines = [
        f"pc3d        {_version(('pc3d',))}",
        f"python      {platform.python_version()} ({platform.machine()})",
        f"torch       {torch.__version__} (threads: {torch.get_num_threads()}, "
        f"cuda: {torch.cuda.is_available()})",
        f"numba       {numba.__version__} (threads: {numba.config.NUMBA_NUM_THREADS})",
    ]
    for label, dists, module in (
        ("spconv", ("spconv-cu120", "spconv"), "spconv.pytorch"),
        ("open3d", ("open3d-cpu", "open3d"), "open3d"),
        ("pyarrow", ("pyarrow",), "pyarrow"),
    ):
        ok, why = _importable(module)
        status = "imports" if ok else f"does not import ({why})"
        lines.append(f"{label:<11} {_version(dists)} ({status})")
    from pc3d_ops.bf16 import kernel_name

    lines.append(f"sparse bf16 {kernel_name()}")
    lines.append("sparse backends:")
    for device, backends in available_backends().items():
        lines.append(f"  {device:<6} {', '.join(backends) if backends else 'none'}")
    return "\n".join(lines)
