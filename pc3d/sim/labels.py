"""Label vocabularies the simulator writes: SemanticKITTI raw ids, KITTI / Waymo object types, NYU40.

SemanticKITTI ids and colours follow the devkit's ``config/semantic-kitti.yaml``; moving objects
carry the 252..259 ids of their static class. NYU40 names and the ScanNet-20 benchmark ids follow
ScanNet's ``scannetv2-labels.combined.tsv`` and its benchmark scripts.
"""
from __future__ import annotations

# SemanticKITTI raw ids (semantic-kitti.yaml `labels`)
SEMANTIC_KITTI_LABELS: dict[int, str] = {
    0: "unlabeled", 1: "outlier", 10: "car", 11: "bicycle", 13: "bus", 15: "motorcycle", 16: "on-rails",
    18: "truck", 20: "other-vehicle", 30: "person", 31: "bicyclist", 32: "motorcyclist", 40: "road",
    44: "parking", 48: "sidewalk", 49: "other-ground", 50: "building", 51: "fence", 52: "other-structure",
    60: "lane-marking", 70: "vegetation", 71: "trunk", 72: "terrain", 80: "pole", 81: "traffic-sign",
    99: "other-object", 252: "moving-car", 253: "moving-bicyclist", 254: "moving-person",
    255: "moving-motorcyclist", 256: "moving-on-rails", 257: "moving-bus", 258: "moving-truck",
    259: "moving-other-vehicle",
}
# static raw id -> moving raw id (semantic-kitti.yaml; moving classes 252..259)
MOVING_ID: dict[int, int] = {10: 252, 31: 253, 30: 254, 32: 255, 16: 256, 13: 257, 18: 258, 20: 259}

UNLABELED, CAR, BICYCLE, TRUCK, OTHER_VEHICLE, PERSON, BICYCLIST = 0, 10, 11, 18, 20, 30, 31
ROAD, PARKING, SIDEWALK, OTHER_GROUND, BUILDING, FENCE, OTHER_STRUCTURE = 40, 44, 48, 49, 50, 51, 52
LANE_MARKING, VEGETATION, TRUNK, TERRAIN, POLE, TRAFFIC_SIGN, OTHER_OBJECT = 60, 70, 71, 72, 80, 81, 99

# the simulator's object kinds: KITTI type, SemanticKITTI raw id, Waymo box type (1 vehicle, 2 pedestrian, 4 cyclist)
OBJECT_KINDS: tuple[str, ...] = ("car", "van", "truck", "pedestrian", "cyclist")
KITTI_TYPE: dict[str, str] = {"car": "Car", "van": "Van", "truck": "Truck", "pedestrian": "Pedestrian",
                              "cyclist": "Cyclist"}
SEMANTIC_ID: dict[str, int] = {"car": CAR, "van": CAR, "truck": TRUCK, "pedestrian": PERSON, "cyclist": BICYCLIST}
WAYMO_TYPE: dict[str, int] = {"car": 1, "van": 1, "truck": 1, "pedestrian": 2, "cyclist": 4}
KITTI_TYPES: tuple[str, ...] = ("Car", "Van", "Truck", "Pedestrian", "Person_sitting", "Cyclist", "Tram", "Misc",
                                "DontCare")

# SemanticKITTI raw id -> Waymo segmentation class id (segmentation.proto Segmentation.Type 0..22, names in
# pc3d.data.waymo_seg.WAYMO_SEG_CLASSES; moving ids take their static class's). Waymo has no fence
# or other-structure class: both are building (the man-made, permanent structure class); terrain is walkable.
WAYMO_SEG_OF_RAW: dict[int, int] = {
    0: 0, 1: 0, 10: 1, 11: 12, 13: 3, 15: 13, 16: 4, 18: 2, 20: 4, 30: 7, 31: 6, 32: 5, 40: 18, 44: 18, 48: 22,
    49: 20, 50: 14, 51: 14, 52: 14, 60: 19, 70: 15, 71: 16, 72: 21, 80: 10, 81: 8, 99: 0,
    252: 1, 253: 6, 254: 7, 255: 5, 256: 4, 257: 3, 258: 2, 259: 4,
}

# NYU40 class names, ids 1..40 (ScanNet's nyu40class column)
NYU40_NAMES: tuple[str, ...] = (
    "wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window", "bookshelf", "picture",
    "counter", "blinds", "desk", "shelves", "curtain", "dresser", "pillow", "mirror", "floor mat", "clothes",
    "ceiling", "books", "refridgerator", "television", "paper", "towel", "shower curtain", "box", "whiteboard",
    "person", "night stand", "toilet", "sink", "lamp", "bathtub", "bag", "otherstructure", "otherfurniture",
    "otherprop",
)
NYU40_ID: dict[str, int] = {name: i + 1 for i, name in enumerate(NYU40_NAMES)}
# the 20 ScanNet benchmark classes as NYU40 ids (wall ... otherfurniture)
SCANNET20_IDS: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 14, 16, 24, 28, 33, 34, 36, 39)


def moving_id(raw_id: int, moving: bool) -> int:
    """The SemanticKITTI raw id of a (possibly moving) object of static class raw_id."""
    return MOVING_ID.get(raw_id, raw_id) if moving else raw_id
