"""Render a LiDAR sequence (with ground truth and / or predictions) to numbered PNGs, or open the viewer.

    python tools/visualize.py SOURCE [--pred DIR] [--out DIR] [--mode auto|3d|bev] [--max-frames N] [--video]
    python tools/visualize.py SOURCE --pred DIR --viewer        # Open3D window: N / P next / previous frame

SOURCE: as tools/infer.py (point file, folder, KITTI root + --split, SemanticKITTI sequence, Waymo v2 segment,
ScanNet scene; pc3d.infer.sources).
--pred: the folder tools/infer.py wrote (its --out), whatever the model's task: boxes, points coloured by
predicted class (segmentation) or static / moving (MOS), flow arrows (pc3d.infer.results); or, as before, a
json/ folder of its detection files. Ground truth boxes are drawn when SOURCE has them (a KITTI root with
label_2, a Waymo segment with lidar_box, a ScanNet scene with its instances);
--labels truth / errors colours a segmentation's points by the ground truth of a SemanticKITTI sequence or a
ScanNet scene (truth needs no --pred), or grey where the prediction is right and red where it is wrong.
--colour: the points' colours where no class colours them: a ScanNet scene's own (auto), height, intensity, or
rgb for a file of x, y, z, r, g, b rows (colours in 0..1 or 0..255, as mmdetection3d's ScanNet .bin keeps them;
auto finds such .bin files by their values, pc3d.infer.point_files.bin_width);
--view: the 3D camera, behind the sensor or fitted to the points from above (auto: the latter indoors).
Output: <out>/000000.png, 000001.png, ... numbered consecutively over the frames drawn (a skipped frame leaves no
gap, so ffmpeg's image sequence reads them all), <out>/frames.txt (one line per PNG: its name, a tab, the frame's id)
and <out>/video.mp4 with --video when ffmpeg is installed.
3D rendering uses Open3D's OffscreenRenderer; 'auto' falls back to the numpy BEV image when no renderer is
available. Any cloud renders (missing feature columns are 0);
a frame that cannot be read, or whose --pred file is malformed, is skipped with one line and counted. A pc3d
error otherwise prints one line and exits 2 (PC3D_DEBUG=1: the traceback).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("source")
    p.add_argument("--pred", type=Path, default=None,
                   help="tools/infer.py's output folder (--out), or a json/ folder of its detection files")
    p.add_argument("--out", type=Path, default=Path("outputs/render"))
    p.add_argument("--split", default="val")
    p.add_argument("--mode", default="auto", choices=("auto", "3d", "bev"))
    p.add_argument("--max-frames", type=int, default=0)
    p.add_argument("--threshold", type=float, default=0.3, help="min score of drawn predictions")
    p.add_argument("--labels", default="pred", choices=("pred", "truth", "errors"),
                   help="segmentation / MOS --pred: colour points by the predicted classes, the ground truth (a "
                        "SemanticKITTI sequence's labels/), or right (grey) / wrong (red) against it")
    p.add_argument("--area", type=float, nargs=6, default=(0.0, -40.0, -3.0, 70.4, 40.0, 1.0),
                   help="BEV area x_min y_min z_min x_max y_max z_max")
    p.add_argument("--colour", default="auto", choices=("auto", "height", "intensity", "rgb"),
                   help="point colours without class labels: auto (a ScanNet scene's or an x, y, z, r, g, b .bin "
                        "file's own colours, else height), height, intensity (column 3) or rgb (columns 3-5, in "
                        "0..1 or 0..255: a ScanNet .bin)")
    p.add_argument("--view", default="auto", choices=("auto", "driving", "overview"),
                   help="3D camera: behind the sensor (driving) or fitted to the points from above one corner "
                        "(overview); auto: overview for indoor runs, ScanNet scenes and --colour rgb")
    p.add_argument("--video", action="store_true", help="also encode <out>/video.mp4 (needs ffmpeg)")
    p.add_argument("--viewer", action="store_true", help="open the interactive Open3D viewer instead")
    args = p.parse_args(argv)

    from pc3d.errors import Pc3dError
    from pc3d.utils.cli import user_error

    if args.max_frames < 0:
        p.error(f"--max-frames must be >= 0, got {args.max_frames}")
    if args.labels == "errors" and args.pred is None:
        p.error("--labels errors needs --pred: the predictions to compare with the ground truth")
    if args.pred is not None and not args.pred.is_dir():
        p.error(f"--pred {args.pred}: not a folder (the folder tools/infer.py wrote, or its json/ folder)")
    if args.out.exists() and not args.out.is_dir():
        p.error(f"--out {args.out}: exists and is not a folder")
    try:
        return render(args)
    except Pc3dError as error:
        return user_error("visualize", error)


def _rgb_rows(source) -> bool:
    """Whether a source of headerless .bin files holds x, y, z, r, g, b rows (its first file's values repeat
    every 6: pc3d.infer.point_files.bin_width)."""
    import numpy as np

    from pc3d.infer.point_files import bin_width

    first = source.items[0] if source.kind in ("file", "folder") and source.items else None
    return first is not None and first.suffix.lower() == ".bin" and bin_width(np.fromfile(first, "<f4")) == 6


def render(args: argparse.Namespace) -> int:
    from pc3d.errors import ConfigError, DataFormatError
    from pc3d.infer.results import InferResults
    from pc3d.infer.sources import open_source
    from pc3d.utils.progress import track
    from pc3d.viz import OffscreenRenderer, Scene, Viewer, render_scene_png, write_video

    source = open_source(args.source, ("intensity",), args.split, pad=True)
    rgb_rows = source.kind == "scannet" or _rgb_rows(source)
    colours = args.colour if args.colour != "auto" else "rgb" if rgb_rows else "height"
    if colours == "rgb" or rgb_rows:  # an RGB-D scene or a file of x, y, z, r, g, b rows: read as such
        source = open_source(args.source, ("r", "g", "b"), args.split, pad=True)
    if source.note:
        print(source.note, flush=True)
    items = source.items[: args.max_frames or None]
    results = None if args.pred is None else InferResults(args.pred)
    if results is None and args.labels == "truth":  # no run: the dataset's own label space reads its labels
        datasets = {"semantickitti": "SemanticKittiDataset", "scannet": "ScanNetDataset"}
        if source.kind not in datasets:
            raise ConfigError(f"--labels truth without --pred: a SemanticKITTI sequence or a ScanNet scene, not a "
                              f"{source.kind} source")
        results = InferResults.ground_truth({"_target_": f"pc3d.data.{datasets[source.kind]}"})

    view = args.view
    if view == "auto":  # a run's own camera, else the room's for an RGB-D scene
        view = results.view if results is not None else "overview" if colours == "rgb" else "driving"

    def load_scene(frame):
        truth = source.ground_truth_boxes(frame)
        scene = Scene(frame.points, truth, name=frame.frame_id) if results is None else results.scene(
            frame, args.threshold, truth, args.labels)
        scene.view = view
        return scene

    if args.viewer:
        classes = results is not None and results.space is not None
        Viewer(lambda i: load_scene(source.read(items[i])), len(items), "class" if classes else colours).run()
        return 0
    renderer, mode = None, args.mode
    if mode != "bev":
        try:
            renderer = OffscreenRenderer(color_mode=colours)
        except Exception as exc:  # noqa: BLE001 - fall back to BEV images
            if mode == "3d":
                raise
            print(f"3D renderer unavailable ({exc}); writing BEV images", flush=True)
            mode = "bev"
    written, frame_ids, skipped, used = [], [], 0, mode
    for item in track(items, desc="render", unit="frame"):
        try:
            frame = source.read(item)
            scene = load_scene(frame)
        except DataFormatError as error:
            if len(items) == 1:
                raise
            skipped += 1
            print(f"skipping a bad frame: {error}", file=sys.stderr, flush=True)
            continue
        # numbered by PNG, not by item: ffmpeg's image2 input stops at the first missing number
        path, used = render_scene_png(scene, args.out / f"{len(written):06d}.png", renderer, mode, args.area, 0.1,
                                      colours)
        written.append(path)
        frame_ids.append(frame.frame_id)
    if not written:
        raise DataFormatError(source.path, f"all {len(items)} frames are bad (listed above)")
    (args.out / "frames.txt").write_text("".join(f"{path.name}\t{frame_id}\n"
                                                 for path, frame_id in zip(written, frame_ids, strict=True)))
    print(f"{len(written)} PNGs ({used}) in {args.out}, frames.txt names their frames"
          + (f"; {skipped} bad frame(s) skipped (listed above)" if skipped else ""), flush=True)
    if args.video:
        video = write_video(written, args.out / "video.mp4")
        print(f"video: {video}" if video else "no video: ffmpeg not found", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
