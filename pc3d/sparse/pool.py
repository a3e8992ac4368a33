"""Sparse max and average pooling (output sites as a strided conv's), D = 2, 3, 4."""
from __future__ import annotations

from pc3d.errors import ConfigError, SparseTensorError
from pc3d.sparse import backend as _backend
from pc3d.sparse.conv import SparseModule, cached_map
from pc3d.sparse.kernel_map import _tuple, strided_map
from pc3d.sparse.ops import sparse_avg_pool, sparse_max_pool
from pc3d.sparse.tensor import SparseTensor


class SparsePool(SparseModule):
    """Max or mean over the active inputs of each output site (the mean counts active inputs only).

    kernel_size, stride (default: kernel_size) and dilation are ints >= 1, padding >= 0 (ConfigError
    otherwise, see pc3d.sparse.checks)."""

    def __init__(self, ndim: int, kernel_size, stride=None, padding=0, dilation=1, mode: str = "max",
                 indice_key: str | None = None, backend: str | None = None, algo=None):
        super().__init__()
        if mode not in ("max", "avg"):
            raise ConfigError(f"pooling mode must be 'max' or 'avg', not {mode!r}")
        self.ndim, self.mode, self.indice_key, self.backend = ndim, mode, indice_key, backend
        self.kernel_size = _tuple(kernel_size, ndim, "kernel_size")
        self.stride = _tuple(self.kernel_size if stride is None else stride, ndim, "stride")
        self.padding = _tuple(padding, ndim, "padding")
        self.dilation = _tuple(dilation, ndim, "dilation")
        self.device_type = "cpu"
        self._spconv = {}

    def extra_repr(self) -> str:
        return (f"mode={self.mode}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, dilation={self.dilation}")

    def forward(self, x: SparseTensor) -> SparseTensor:
        if not isinstance(x, SparseTensor):
            raise SparseTensorError(f"{type(self).__name__} expects a SparseTensor, got {type(x).__name__}")
        if x.ndim != self.ndim:
            raise SparseTensorError(f"{type(self).__name__} is {self.ndim}-D but the tensor is {x.ndim}-D")
        self.device_type = x.device.type
        if _backend.resolve(self.backend, x.device.type) == "spconv":
            from pc3d.sparse import spconv_backend

            twin = self._spconv.get(x.device.type)
            if twin is None:
                twin = self._spconv[x.device.type] = spconv_backend.build_pool(self)
            stride = tuple(s * k for s, k in zip(x.stride, self.stride, strict=False))
            return spconv_backend.from_spconv(twin(spconv_backend.to_spconv(x)), x, stride)
        key = ("conv", self.kernel_size, self.stride, self.padding, self.dilation, None)
        kmap = cached_map(x, key, lambda: strided_map(x, self.kernel_size, self.stride, self.padding,
                                                      self.dilation))
        if self.indice_key:
            x.indice_dict[self.indice_key] = kmap
        pool = sparse_max_pool if self.mode == "max" else sparse_avg_pool
        return x.with_sites(pool(x.feats, kmap), kmap.out_coords, kmap.out_spatial_shape, kmap.out_stride)


def _alias(name: str, ndim: int, mode: str):
    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, indice_key=None, backend=None,
                 algo=None):
        SparsePool.__init__(self, ndim, kernel_size, stride, padding, dilation, mode, indice_key, backend)

    return type(name, (SparsePool,), {"__init__": __init__, "__module__": __name__,
                                      "__doc__": f"{ndim}-D {mode} pooling (see SparsePool)."})


SparseMaxPool2d = _alias("SparseMaxPool2d", 2, "max")
SparseMaxPool3d = _alias("SparseMaxPool3d", 3, "max")
SparseMaxPool4d = _alias("SparseMaxPool4d", 4, "max")
SparseAvgPool2d = _alias("SparseAvgPool2d", 2, "avg")
SparseAvgPool3d = _alias("SparseAvgPool3d", 3, "avg")
SparseAvgPool4d = _alias("SparseAvgPool4d", 4, "avg")
