"""pc3d: 3D point-cloud perception (detection, segmentation, MOS, scene flow) on CPU and GPU.

Importing pc3d is cheap: it imports neither torch, numba, open3d, spconv nor pyarrow. It has three
side effects, all process policies:
- the thread policy's environment defaults (`pc3d_ops.threads.apply_env_defaults`): imported before
  torch, it bounds GNU OpenMP's spin-wait (GOMP_SPINCOUNT) and maps PC3D_THREADS to OMP_NUM_THREADS,
  never overriding a variable the user set; imported after torch, it changes no environment variable,
  and no thread setting unless PC3D_THREADS asks for one; numpy's OpenBLAS runs one thread
  (`limit_blas_threads`: its idle threads spin on the cores torch needs) unless OPENBLAS_NUM_THREADS is set;
- the heap policy (`pc3d_ops.heap.keep_freed_memory`): glibc keeps large freed blocks for reuse
  instead of unmapping them, unless the user set glibc's MALLOC_* variables or PC3D_MALLOC=system;
- oneDNN's primitive cache bounded (`pc3d_ops.heap.bound_primitive_cache`, 128 entries unless the user set
  ONEDNN_PRIMITIVE_CACHE_CAPACITY): torch's bf16 matmuls over a varying number of rows otherwise keep
  gigabytes of per-shape primitives.

``pc3d.Predictor`` (pc3d.infer.predictor, imported on first use) runs a trained run on point clouds in memory.
"""
from pc3d_ops.heap import bound_primitive_cache as _bound_primitive_cache
from pc3d_ops.heap import keep_freed_memory as _keep_freed_memory
from pc3d_ops.threads import apply_env_defaults as _apply_env_defaults
from pc3d_ops.threads import limit_blas_threads as _limit_blas_threads

_apply_env_defaults()
_limit_blas_threads()
_keep_freed_memory()
_bound_primitive_cache()

__version__ = "0.1.0"


def __getattr__(name: str):
    if name == "Predictor":  # imported on first use: it brings torch and hydra
        from pc3d.infer.predictor import Predictor

        return Predictor
    raise AttributeError(f"module 'pc3d' has no attribute {name!r}")
