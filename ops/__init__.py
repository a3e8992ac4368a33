"""pc3d_ops: low-level numba kernels (hashing, kernel maps, voxelization, ray casting, box ops).

Installed under the import name ``pc3d_ops`` (the source folder is ``ops/``); never import it as
the bare ``ops``. Kernels here take and return numpy arrays only; the torch-facing wrappers live
in the ``pc3d`` sub-packages that use them. Importing this package compiles nothing: each kernel
module is compiled by numba on first call and cached on disk.
"""
