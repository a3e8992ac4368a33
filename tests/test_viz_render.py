"""pc3d.viz: BEV images, the PNG writer, box line sets and the headless Open3D render."""
from __future__ import annotations

import warnings
import zlib

import numpy as np
import pytest

from pc3d.viz import Scene, box_lines, encode_png, render_bev, render_scene_png
from pc3d.viz.colors import point_colors
from pc3d.viz.png import read_png_size


def scene() -> Scene:
    rng = np.random.default_rng(0)
    pts = np.c_[rng.uniform(0, 40, (5000, 2)) - [0, 20], rng.uniform(-1.7, 0, 5000), rng.uniform(0, 1, 5000)]
    boxes = np.array([[10.0, 2.0, -0.9, 4.0, 1.8, 1.5, 0.4]], np.float32)
    return Scene(pts.astype(np.float32), boxes, boxes + [0.3, 0, 0, 0, 0, 0, 0], np.array([0.9]), np.array([1]))


def decode_png(data: bytes) -> np.ndarray:
    """Minimal decoder of encode_png's output (filter 0 rows only)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    w, h = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    i, idat = 8, b""
    while i < len(data):
        n = int.from_bytes(data[i:i + 4], "big")
        if data[i + 4:i + 8] == b"IDAT":
            idat += data[i + 8:i + 8 + n]
        i += 12 + n
    raw = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(h, 1 + 3 * w)
    assert (raw[:, 0] == 0).all()
    return raw[:, 1:].reshape(h, w, 3)


def test_png_round_trip():
    img = np.random.default_rng(1).integers(0, 255, (7, 5, 3), dtype=np.uint8)
    assert np.array_equal(decode_png(encode_png(img)), img)


def test_bev_draws_points_and_boxes():
    s = scene()
    area = (0.0, -20.0, -3.0, 40.0, 20.0, 1.0)
    img = render_bev(s.points, s.gt_boxes, s.pred_boxes, s.pred_labels, area, 0.1)
    assert img.shape == (400, 400, 3)
    assert (img.sum(-1) > 48).mean() > 0.02  # points drawn
    # the gt outline (green) passes through the box's front edge centre: x = 10 + 2 cos(.4), y = 2 + 2 sin(.4)
    x, y = 10 + 2 * np.cos(0.4), 2 + 2 * np.sin(0.4)
    row, col = int(round(399 - x / 0.1)), int(round((20 - y) / 0.1))
    patch = img[row - 2:row + 3, col - 2:col + 3].reshape(-1, 3)
    assert ((patch[:, 1] > 200) & (patch[:, 0] < 60)).any()
    assert ((img[..., 0] > 200) & (img[..., 1] < 90)).any()  # a red (Car) prediction


def test_bev_takes_empty_box_arrays_and_non_finite_points():
    s = scene()
    area = (0.0, -20.0, -3.0, 40.0, 20.0, 1.0)
    want = render_bev(s.points, None, None, None, area, 0.1)
    bad = np.concatenate([s.points, np.full((3, s.points.shape[1]), np.nan, np.float32)])
    bad[-1, :3] = [np.inf, 1.0, np.nan]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = render_bev(bad, np.zeros(0), np.zeros((0,)), np.zeros(0, np.int64), area, 0.1)
    assert np.array_equal(got, want)
    assert np.isfinite(point_colors(bad)).all()  # the 3D view colours every row


def test_box_lines_layout():
    verts, lines = box_lines(np.array([[0, 0, 0, 4, 2, 1, 0], [5, 5, 0, 1, 1, 1, 1]], np.float64))
    assert verts.shape == (20, 3) and lines.shape == (26, 2) and lines.max() == 19
    assert np.allclose(verts[9], [2, 0, 0])  # heading tick ends at the front face centre


def test_bev_fallback_png(tmp_path):
    path, mode = render_scene_png(scene(), tmp_path / "bev.png", mode="bev", bev_area=(0, -20, -3, 40, 20, 1))
    assert mode == "bev" and read_png_size(path) == (400, 400)


def test_headless_open3d_render_is_not_blank(tmp_path):
    pytest.importorskip("open3d")
    from pc3d.viz import OffscreenRenderer

    try:
        renderer = OffscreenRenderer(320, 240)
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"no offscreen renderer here: {exc}")
    path, mode = render_scene_png(scene(), tmp_path / "scene.png", renderer, mode="3d")
    img = decode_png(path.read_bytes())
    assert mode == "3d" and img.shape == (240, 320, 3)
    lit = img.sum(-1) > 60
    assert lit.mean() > 0.01 and len(np.unique(img.reshape(-1, 3), axis=0)) > 20


def test_class_palettes():
    from pc3d.data.semantickitti import LEARNING_MAPS, load_learning_map
    from pc3d.viz.colors import SCANNET20_COLORS, generated_palette, point_colors, semantickitti_palette

    config = load_learning_map(str(LEARNING_MAPS / "semantic-kitti.yaml"))
    palette = semantickitti_palette(config["learning_map_inv"], config["color_map"])
    assert palette.shape == (20, 3)
    np.testing.assert_allclose(palette[1] * 255, [100, 150, 245])  # car: BGR (245, 150, 100) in the devkit
    generated = generated_palette(30)
    assert generated.shape == (30, 3) and len(np.unique(generated.round(3), axis=0)) == 30
    colors = point_colors(np.zeros((3, 3), np.float32), "class", np.array([0, 19, -1]), palette=SCANNET20_COLORS)
    np.testing.assert_allclose(colors[:2], SCANNET20_COLORS[[0, 19]])
    assert (colors[2] == 0.35).all()  # unlabelled points are grey
    rgb = np.array([[0, 0, 0, 0.2, 0.5, 1.0], [0, 0, 1, 1.0, -0.1, 0.3]], np.float32)  # an RGB-D scene's colours
    np.testing.assert_allclose(point_colors(rgb, "rgb"), [[0.2, 0.5, 1.0], [1.0, 0.0, 0.3]])
    rgb[:, 3:] = [[51, 0, 255], [255, 102, 0]]  # 8-bit colours, as a ScanNet .bin keeps them
    np.testing.assert_allclose(point_colors(rgb, "rgb"), [[0.2, 0.0, 1.0], [1.0, 0.4, 0.0]], rtol=1e-6)
    np.testing.assert_allclose(point_colors(rgb[:, :3], "rgb"), point_colors(rgb[:, :3], "height"))  # no colours


def test_visualize_colours_a_file_of_rgb_rows(tmp_path):
    """tools/visualize.py draws an x, y, z, r, g, b file (8-bit colours, as mmdetection3d's ScanNet .bin keeps
    them) in its own colours (--colour rgb, and auto, which finds the width from the values) or by height; the
    rows are read 6 wide whatever the colours (4 wide they are not points)."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
    import visualize

    rng = np.random.default_rng(0)
    xyz = np.c_[rng.uniform(5, 30, (4000, 2)) - [0, 12], rng.uniform(-1.5, 0.5, 4000)]
    red = np.c_[xyz, np.tile([200.0, 30.0, 10.0], (4000, 1))].astype(np.float32)
    red.tofile(tmp_path / "scene.bin")
    pixels = {}
    for colour in ("rgb", "height", "auto"):
        out = tmp_path / colour
        assert visualize.main([str(tmp_path / "scene.bin"), "--colour", colour, "--mode", "bev", "--out",
                               str(out)]) == 0
        image = decode_png((out / "000000.png").read_bytes()).reshape(-1, 3)
        pixels[colour] = {tuple(p) for p in image[image.any(1)].tolist()}
    assert (200, 30, 10) in pixels["rgb"] and (200, 30, 10) not in pixels["height"]
    assert pixels["auto"] == pixels["rgb"]  # the file's values repeat every 6: its own colours
