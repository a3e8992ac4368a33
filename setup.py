"""pc3d: 3D point-cloud perception on CPU and GPU, installed with pip alone.

The numba kernels in ``ops/`` install under the import name ``pc3d_ops`` (never the bare
``ops``), so ``import pc3d_ops`` works from an installed or an editable checkout.
"""
from setuptools import find_packages, setup

# torch: CPU machines get torch==2.13.0 from the set-up step (Makefile) before this file is read;
# a user who already has a CUDA build keeps it, because the range below accepts it.
RUNTIME = [
    "torch>=2.3",
    "numpy>=1.26",
    "numba==0.68.1",
    "hydra-core==1.3.8",
    "pyarrow==26.0.1",
    "plyfile==1.1.5",
    "tensorboard==2.21.0",
    "tqdm==4.70.1",
    "protobuf>=4.21",  # Waymo Objects files (pc3d.eval.waymo_objects); tensorboard pins the exact version
    # GPU engine; on CPU only used as the tests' cross-check (ConvAlgo.Native).
    "spconv-cu120==2.3.6; platform_system == 'Linux' and platform_machine == 'x86_64'",
    # GPU machines: install `open3d==0.19.0` (or newer) instead; both import as `open3d`.
    "open3d-cpu==0.20.0; platform_system == 'Linux' and platform_machine == 'x86_64'",
    "open3d; platform_system != 'Linux' or platform_machine != 'x86_64'",
]

setup(
    name="pc3d",
    version="0.1.0",
    description="3D point-cloud perception: sparse conv and window-attention backbones, "
    "detection, segmentation, MOS and scene flow, on CPU and GPU",
    python_requires=">=3.10",
    packages=find_packages(include=["pc3d", "pc3d.*"]) + ["pc3d_ops"],
    package_dir={"pc3d_ops": "ops"},
    # the SemanticKITTI learning maps are read at run time, so an installed pc3d must carry them
    package_data={"pc3d.data.learning_maps": ["*.yaml"]},
    install_requires=RUNTIME,
    extras_require={
        "test": ["pytest==9.2.0", "pytest-xdist==3.8.0", "hypothesis==6.170.15", "shapely==2.2.0"],
        "dev": ["ruff==0.17.6"],
    },
    entry_points={"console_scripts": ["pc3d=pc3d.__main__:main"]},
)
