"""ScanNet v2 layout:

    scans/sceneXXXX_00/sceneXXXX_00_vh_clean_2.ply              binary ply: vertex x y z (float) red green blue
                                                                alpha (uchar); face vertex_indices (uchar, int)
    scans/sceneXXXX_00/sceneXXXX_00_vh_clean_2.labels.ply       the same plus vertex `label` (ushort, NYU40 id)
    scans/sceneXXXX_00/sceneXXXX_00_vh_clean_2.0.010000.segs.json   {"params", "sceneId", "segIndices"}
    scans/sceneXXXX_00/sceneXXXX_00.aggregation.json            {"sceneId", "appId", "segGroups", "segmentsFile"}
    scans/sceneXXXX_00/sceneXXXX_00.txt                         "axisAlignment = <16 values>" and scan metadata
    scannetv2_{train,val,test}.txt, scannetv2-labels.combined.tsv

Meshes are stored in the raw scan frame; axisAlignment (row-major 4x4) maps them to the aligned
frame the room was built in. Aggregation labels are raw category names (ScanNet's: "refrigerator", "couch")
that the tsv maps to NYU40, as ScanNet's own tsv does.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..indoor import make_room
from ..labels import NYU40_ID
from .settings import WriterSettings

TSV_COLUMNS = ("id", "raw_category", "category", "count", "nyu40id", "eigen13id", "nyuClass", "nyu40class",
               "eigen13class", "ModelNet40", "ModelNet10", "ShapeNetCore55", "synsetoffset", "wnsynsetid",
               "wnsynsetkey", "mpcat40", "mpcat40index")
# the raw category an annotator wrote for each NYU40 class the rooms hold, and ScanNet's id of that category
# (the tsv's `id`, which ScanNet200 maps from): real names, so that tools with ScanNet's own tsv (mmdet3d,
# Pointcept) map the simulated aggregations too; NYU40 spells one class "refridgerator", no annotator did
RAW_CATEGORIES: dict[str, tuple[str, int]] = {
    "wall": ("wall", 1), "floor": ("floor", 3), "door": ("door", 5), "window": ("window", 16),
    "cabinet": ("cabinet", 7), "bed": ("bed", 11), "chair": ("chair", 2), "sofa": ("couch", 6), "table": ("table", 4),
    "bookshelf": ("bookshelf", 18), "picture": ("picture", 15), "counter": ("counter", 35), "desk": ("desk", 9),
    "curtain": ("curtain", 21), "dresser": ("dresser", 36), "pillow": ("pillow", 13), "mirror": ("mirror", 71),
    "refridgerator": ("refrigerator", 27), "whiteboard": ("whiteboard", 52), "shower curtain": ("shower curtain", 55),
    "toilet": ("toilet", 17), "sink": ("sink", 14), "bathtub": ("bathtub", 42), "otherfurniture": ("furniture", 213)}
SEGS_PARAMS = {"kThresh": "0.0001", "segMinVerts": "20", "minPoints": "750", "maxPoints": "5000",
               "thinThresh": "0.05", "flatThresh": "0.001", "minLength": "0.02", "maxLength": "1"}


_PLY_TYPES = {"<f4": "float", "u1": "uchar", "<u2": "ushort"}


def _write_ply(path: Path, vertices, colors, faces, labels=None, comment="VCGLIB generated") -> None:
    """Binary little-endian PLY as ScanNet ships it, written with numpy (plyfile packs faces row by row in
    Python: a second per scene). Byte-identical to plyfile's output (`test_scannet_ply_matches_plyfile`)."""
    fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1"),
              ("alpha", "u1")]
    if labels is not None:
        fields.append(("label", "<u2"))
    vert = np.empty(len(vertices), dtype=fields)
    vert["x"], vert["y"], vert["z"] = vertices[:, 0], vertices[:, 1], vertices[:, 2]
    vert["red"], vert["green"], vert["blue"] = colors[:, 0], colors[:, 1], colors[:, 2]
    vert["alpha"] = 255
    if labels is not None:
        vert["label"] = labels
    face = np.empty(len(faces), dtype=[("count", "u1"), ("vertex_indices", "<i4", (3,))])  # packed: 13 bytes
    face["count"] = 3
    face["vertex_indices"] = faces
    header = ["ply", "format binary_little_endian 1.0", f"comment {comment}", f"element vertex {len(vert)}",
              *(f"property {_PLY_TYPES[t]} {n}" for n, t in fields), f"element face {len(face)}",
              "property list uchar int vertex_indices", "end_header"]
    with open(path, "wb") as out:
        out.write(("\n".join(header) + "\n").encode("ascii"))
        out.write(vert.tobytes())
        out.write(face.tobytes())


def _axis_alignment(rng: np.random.Generator) -> np.ndarray:
    """A random raw -> aligned map: a turn about z and a shift, as ScanNet's axisAlignment."""
    yaw = rng.uniform(-np.pi, np.pi)
    m = np.eye(4)
    m[:2, :2] = [[np.cos(yaw), -np.sin(yaw)], [np.sin(yaw), np.cos(yaw)]]
    m[:3, 3] = (rng.uniform(-5, 5), rng.uniform(-5, 5), rng.uniform(-0.1, 0.1))
    return m


def write_scene(root: Path, name: str, rng: np.random.Generator, spacing: float = 0.05) -> dict:
    """Write one scan folder; returns {"vertices": V, "instances": I, "room": type}."""
    mesh, room_type = make_room(rng, spacing)
    vertices, colors, faces, labels, instances, segments = mesh.arrays()
    align = _axis_alignment(rng)
    inv = np.linalg.inv(align)
    raw = (vertices.astype(np.float64) @ inv[:3, :3].T + inv[:3, 3]).astype(np.float32)
    folder = root / "scans" / name
    folder.mkdir(parents=True, exist_ok=True)
    _write_ply(folder / f"{name}_vh_clean_2.ply", raw, colors, faces)
    _write_ply(folder / f"{name}_vh_clean_2.labels.ply", raw, colors, faces, labels, comment="MLIB generated")
    segs_file = f"{name}_vh_clean_2.0.010000.segs.json"
    (folder / segs_file).write_text(json.dumps({"params": SEGS_PARAMS, "sceneId": name,
                                                "segIndices": segments.tolist()}))
    groups = []
    for object_id, inst in enumerate(sorted(mesh.instance_names)):
        segs = np.unique(segments[instances == inst])
        if len(segs):
            groups.append({"id": object_id, "objectId": object_id, "segments": segs.tolist(),
                           "label": RAW_CATEGORIES[mesh.instance_names[inst]][0]})
    (folder / f"{name}.aggregation.json").write_text(json.dumps({
        "sceneId": f"scannet.{name}", "appId": "Aggregator.v2", "segGroups": groups,
        "segmentsFile": f"scannet.{segs_file}"}))
    meta = {"axisAlignment": " ".join(f"{v:f}" for v in align.ravel()), "colorHeight": "968", "colorWidth": "1296",
            "depthHeight": "480", "depthWidth": "640", "fx_color": "1170.187988", "fx_depth": "571.623718",
            "fy_color": "1170.187988", "fy_depth": "571.623718", "mx_color": "647.750000", "mx_depth": "319.500000",
            "my_color": "483.750000", "my_depth": "239.500000", "numColorFrames": "0", "numDepthFrames": "0",
            "numIMUmeasurements": "0", "sceneType": room_type.title()}
    (folder / f"{name}.txt").write_text("".join(f"{k} = {v}\n" for k, v in meta.items()))
    return {"vertices": len(vertices), "instances": len(groups), "room": room_type}


def labels_tsv() -> str:
    """scannetv2-labels.combined.tsv (ScanNet's 17 columns) with the rows of the raw categories the simulator
    writes: id, raw category, NYU40 id and class filled, the other taxonomies left empty."""
    lines = ["\t".join(TSV_COLUMNS)]
    for name, (raw, category_id) in RAW_CATEGORIES.items():
        row = {"id": str(category_id), "raw_category": raw, "category": raw, "count": "1",
               "nyu40id": str(NYU40_ID[name]), "nyuClass": name, "nyu40class": name}
        lines.append("\t".join(row.get(c, "") for c in TSV_COLUMNS))
    return "\n".join(lines) + "\n"


def write_scannet(settings: WriterSettings) -> None:
    """settings.frames scenes under settings.out/scans, the split lists and the label tsv."""
    root, scenes = Path(settings.out), settings.frames
    names = [f"scene{i:04d}_00" for i in range(scenes)]
    for i, name in enumerate(names):
        write_scene(root, name, np.random.default_rng([int(settings.seed), i, 11]))
        settings.tick(i + 1)
    # ScanNet's benchmark split is about 1201 / 312 / 100; here 80 % train, the rest val, no test scans
    n_train = min(scenes - 1, max(1, round(0.8 * scenes))) if scenes > 1 else scenes
    (root / "scannetv2_train.txt").write_text("".join(f"{n}\n" for n in names[:n_train]))
    (root / "scannetv2_val.txt").write_text("".join(f"{n}\n" for n in names[n_train:]))
    (root / "scannetv2_test.txt").write_text("")
    (root / "scannetv2-labels.combined.tsv").write_text(labels_tsv())
