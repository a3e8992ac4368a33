"""pc3d.geometry calibration and box conversions: hand-computed cases and round trips."""
# ruff: noqa: E501 -- the calib fixture below is verbatim KITTI text, one long line per matrix
from __future__ import annotations

import numpy as np
import pytest
import torch

from pc3d.errors import DataFormatError
from pc3d.geometry import (
    KittiCalib,
    alpha_from_rotation_y,
    boxes_camera_to_lidar,
    boxes_lidar_to_camera,
    boxes_to_corners,
    boxes_to_image_2d,
    enlarge_boxes,
    rotate_points_z,
    wrap_angle,
)

# training/calib/000000.txt of KITTI 3D object
CALIB_TEXT = """P0: 7.070493000000e+02 0.000000000000e+00 6.040814000000e+02 0.000000000000e+00 0.000000000000e+00 7.070493000000e+02 1.805066000000e+02 0.000000000000e+00 0.000000000000e+00 0.000000000000e+00 1.000000000000e+00 0.000000000000e+00
P1: 7.070493000000e+02 0.000000000000e+00 6.040814000000e+02 -3.797842000000e+02 0.000000000000e+00 7.070493000000e+02 1.805066000000e+02 0.000000000000e+00 0.000000000000e+00 0.000000000000e+00 1.000000000000e+00 0.000000000000e+00
P2: 7.070493000000e+02 0.000000000000e+00 6.040814000000e+02 4.575831000000e+01 0.000000000000e+00 7.070493000000e+02 1.805066000000e+02 -3.454157000000e-01 0.000000000000e+00 0.000000000000e+00 1.000000000000e+00 4.981016000000e-03
P3: 7.070493000000e+02 0.000000000000e+00 6.040814000000e+02 -3.341081000000e+02 0.000000000000e+00 7.070493000000e+02 1.805066000000e+02 2.330660000000e+00 0.000000000000e+00 0.000000000000e+00 1.000000000000e+00 3.201153000000e-03
R0_rect: 9.999128000000e-01 1.009263000000e-02 -8.511932000000e-03 -1.012729000000e-02 9.999406000000e-01 -4.037671000000e-03 8.470675000000e-03 4.123522000000e-03 9.999556000000e-01
Tr_velo_to_cam: 6.927964000000e-03 -9.999722000000e-01 -2.757829000000e-03 -2.457729000000e-02 -1.162982000000e-03 2.749836000000e-03 -9.999955000000e-01 -6.127237000000e-02 9.999753000000e-01 6.931141000000e-03 -1.143899000000e-03 -3.321029000000e-01
Tr_imu_to_velo: 9.999976000000e-01 7.553071000000e-04 -2.035826000000e-03 -8.086759000000e-01 -7.854027000000e-04 9.998898000000e-01 -1.482298000000e-02 3.195559000000e-01 2.024406000000e-03 1.482454000000e-02 9.998881000000e-01 -7.997231000000e-01

"""


@pytest.fixture
def calib(tmp_path) -> KittiCalib:
    path = tmp_path / "000000.txt"
    path.write_text(CALIB_TEXT)
    return KittiCalib.from_file(path)


def test_calib_text_round_trip(calib, tmp_path):
    path = tmp_path / "again.txt"
    path.write_text(calib.to_text())
    again = KittiCalib.from_file(path)
    for name in ("P0", "P1", "P2", "P3", "R0_rect", "Tr_velo_to_cam", "Tr_imu_to_velo"):
        np.testing.assert_array_equal(getattr(again, name), getattr(calib, name))
    assert calib.to_text().splitlines() == [line for line in CALIB_TEXT.splitlines() if line]


def test_calib_devkit_spellings(tmp_path):
    text = CALIB_TEXT.replace("R0_rect:", "R_rect:").replace("Tr_velo_to_cam:", "Tr_velo_cam:")
    path = tmp_path / "raw.txt"
    path.write_text(text)
    assert KittiCalib.from_file(path).R0_rect.shape == (3, 3)


def test_calib_errors(tmp_path):
    with pytest.raises(DataFormatError, match="does not exist"):
        KittiCalib.from_file(tmp_path / "missing.txt")
    path = tmp_path / "bad.txt"
    path.write_text("\n".join(line for line in CALIB_TEXT.splitlines() if not line.startswith("P3")))
    with pytest.raises(DataFormatError, match="P3") as err:
        KittiCalib.from_file(path)
    assert str(path) in str(err.value)
    path.write_text(CALIB_TEXT.replace("R0_rect: 9.999128000000e-01 ", "R0_rect: "))
    with pytest.raises(DataFormatError, match="expected 9 values, got 8"):
        KittiCalib.from_file(path)


def test_lidar_rect_image(calib, rng):
    pts = rng.uniform([5, -20, -2], [60, 20, 2], (100, 3))
    rect = calib.lidar_to_rect(pts)
    # the camera looks along LiDAR +x, with x right (LiDAR -y) and y down (LiDAR -z)
    assert np.all(rect[:, 2] > 4) and np.corrcoef(rect[:, 0], -pts[:, 1])[0, 1] > 0.99
    np.testing.assert_allclose(calib.rect_to_lidar(rect), pts, atol=1e-9)
    uv, depth = calib.lidar_to_image(pts)
    hom = np.c_[rect, np.ones(100)] @ calib.P2.T
    np.testing.assert_allclose(uv, hom[:, :2] / hom[:, 2:], rtol=1e-12)
    np.testing.assert_allclose(depth, rect[:, 2], atol=1e-12)
    t_uv, t_depth = calib.lidar_to_image(torch.from_numpy(pts.astype(np.float32)))
    assert isinstance(t_uv, torch.Tensor) and t_uv.dtype == torch.float32
    np.testing.assert_allclose(t_uv.numpy(), uv, rtol=1e-5)


def test_wrap_angle():
    a = np.array([np.pi, -np.pi, 3 * np.pi, -3 * np.pi - 1e-3, 0.5, 2 * np.pi])
    w = wrap_angle(a)
    np.testing.assert_allclose(w, [-np.pi, -np.pi, -np.pi, np.pi - 1e-3, 0.5, 0.0], atol=1e-12)
    w32 = wrap_angle(np.linspace(-20, 20, 10001).astype(np.float32))
    assert w32.dtype == np.float32 and w32.min() >= np.float32(-np.pi) and w32.max() < np.float32(np.pi)
    assert wrap_angle(torch.tensor([np.pi]))[0].item() == pytest.approx(-np.pi)
    assert wrap_angle(np.pi / 2, offset=0, period=np.pi) == pytest.approx(np.pi / 2)


def test_corners_hand_computed():
    box = np.array([[1.0, 2.0, 3.0, 4.0, 2.0, 1.5, np.pi / 2]])
    # heading +90 deg: the length runs along +y
    expected = np.array([[0, 4, 2.25], [0, 0, 2.25], [2, 0, 2.25], [2, 4, 2.25],
                         [0, 4, 3.75], [0, 0, 3.75], [2, 0, 3.75], [2, 4, 3.75]])
    np.testing.assert_allclose(boxes_to_corners(box)[0], expected, atol=1e-12)
    t = torch.tensor(box, requires_grad=True)
    boxes_to_corners(t).sum().backward()
    assert t.grad is not None
    with pytest.raises(DataFormatError):
        boxes_to_corners(np.zeros((3, 6)))


def test_boxes_camera_round_trip(calib, rng):
    m = 50
    boxes = np.c_[rng.uniform([5, -20, -2], [60, 20, 0], (m, 3)), rng.uniform([3, 1.5, 1.4], [5, 2, 1.8], (m, 3)),
                  rng.uniform(-np.pi, np.pi, m)].astype(np.float32)
    cam = boxes_lidar_to_camera(boxes, calib)
    assert cam.shape == (m, 7) and cam.dtype == np.float32
    np.testing.assert_allclose(cam[:, 3:6], boxes[:, [5, 4, 3]])
    np.testing.assert_allclose(cam[:, 6], wrap_angle(-boxes[:, 6] - np.pi / 2), atol=1e-6)
    # the bottom centre is below the LiDAR centre, i.e. larger camera y
    rect_centre = calib.lidar_to_rect(boxes[:, :3].astype(np.float64))
    np.testing.assert_allclose(cam[:, 1] - rect_centre[:, 1], boxes[:, 5] / 2, atol=1e-2)
    back = boxes_camera_to_lidar(cam, calib)
    np.testing.assert_allclose(back[:, :6], boxes[:, :6], atol=1e-4)
    assert np.abs(wrap_angle(back[:, 6] - boxes[:, 6])).max() < 1e-5
    assert back[:, 6].min() >= -np.pi and back[:, 6].max() < np.pi
    t = boxes_lidar_to_camera(torch.from_numpy(boxes), calib)
    assert isinstance(t, torch.Tensor)


def test_alpha_and_image_boxes(calib):
    # a car 20 m straight ahead, seen from its side: alpha = rotation_y there
    assert alpha_from_rotation_y(np.float64(0.3), 0.0, 20.0) == pytest.approx(0.3)
    assert alpha_from_rotation_y(np.float64(0.0), 20.0, 0.0) == pytest.approx(-np.pi / 2)
    boxes = np.array([[20.0, 0.0, -1.0, 4.0, 1.8, 1.5, 0.0], [10.0, -30.0, -1.0, 4.0, 1.8, 1.5, 0.3]])
    box2d = boxes_to_image_2d(boxes, calib)
    uv, _ = calib.lidar_to_image(boxes_to_corners(boxes)[0])
    np.testing.assert_allclose(box2d[0], [*uv.min(0), *uv.max(0)], rtol=1e-9)
    clipped = boxes_to_image_2d(boxes, calib, image_shape=(375, 1242))
    assert (clipped[:, 0::2] >= 0).all() and (clipped[:, 0::2] <= 1241).all()
    assert (clipped[:, 1::2] >= 0).all() and (clipped[:, 1::2] <= 374).all()
    assert clipped[1, 0] == 1241  # the second box is to the right of the image


def test_rotate_and_enlarge():
    pts = np.array([[1.0, 0.0, 5.0, 7.0]])
    np.testing.assert_allclose(rotate_points_z(pts, np.pi / 2), [[0.0, 1.0, 5.0, 7.0]], atol=1e-12)
    batch = torch.ones(2, 3, 3)
    out = rotate_points_z(batch, torch.tensor([0.0, np.pi]))
    np.testing.assert_allclose(out[1, :, :2].numpy(), -np.ones((3, 2)), atol=1e-6)
    boxes = np.array([[0, 0, 0, 1, 2, 3, 0.5]], np.float32)
    np.testing.assert_allclose(enlarge_boxes(boxes, [0.2, 0.2, 0.4])[0], [0, 0, 0, 1.2, 2.2, 3.4, 0.5], rtol=1e-6)
    assert boxes[0, 3] == 1  # the input is untouched
