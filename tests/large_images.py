"""Large synthetic images for the large-image tests and bench/bench_large.py: red discs on a smooth
background, and a detector that finds exactly them (so tiled detection has a known answer)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

RED = (220, 30, 30)


class RedBlobDetector:
    """Boxes (x0, y0, x1, y1 exclusive) of the red 8-connected components of each image it is shown,
    class 0, score 0.9: what a perfect detector would find in :func:`disc_image`'s pictures."""

    def detect(self, images, ontology):  # noqa: ANN001 (the detector protocol)
        import cv2
        import supervision as sv

        out = []
        for img in images:
            a = np.asarray(img)
            red = ((a[..., 0] > 180) & (a[..., 1] < 90) & (a[..., 2] < 90)).astype(np.uint8)
            n, _, stats, _ = cv2.connectedComponentsWithStats(red, connectivity=8)
            st = stats[1:]
            xyxy = np.stack([st[:, 0], st[:, 1], st[:, 0] + st[:, 2], st[:, 1] + st[:, 3]], 1).astype(np.float32)
            k = n - 1
            out.append(sv.Detections(xyxy=xyxy.reshape(-1, 4), confidence=np.full(k, 0.9, np.float32),
                                     class_id=np.zeros(k, int), data={"class_name": np.array(["disc"] * k)}))
        return out


def disc_image(side: int, objects: int, seed: int = 0, radii: tuple[int, int] = (12, 40),
               gap: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """A (side, side, 3) uint8 image with ``objects`` red discs at least ``gap`` px apart, and their
    (objects, 4) xyxy boxes (exclusive ends), in the order drawn."""
    import cv2

    rng = np.random.default_rng(seed)
    ramp = np.linspace(90, 160, side, dtype=np.float32).astype(np.uint8)
    img = np.empty((side, side, 3), np.uint8)
    img[..., 0] = ramp[None, :]
    img[..., 1] = ramp[:, None]
    img[..., 2] = 120
    boxes: list[np.ndarray] = []
    while len(boxes) < objects:
        r = int(rng.integers(radii[0], radii[1] + 1))
        cx, cy = (int(v) for v in rng.integers(r + 2, side - r - 2, 2))
        box = np.array([cx - r, cy - r, cx + r + 1, cy + r + 1])
        if boxes and (np.abs(np.array(boxes)[:, :2] - box[:2]).max(1) < gap).any():
            continue  # keep discs apart (a disc is at most 2 * 40 + 1 px wide)
        cv2.circle(img, (cx, cy), r, RED, -1)
        boxes.append(box)
    return img, np.array(boxes)


def save_disc_image(path: Path, side: int, objects: int, seed: int = 0) -> np.ndarray:
    """Write :func:`disc_image` to ``path`` (PNG, fast compression; TIFF / BMP by extension); its boxes."""
    from PIL import Image

    img, boxes = disc_image(side, objects, seed)
    Image.fromarray(img).save(path, **({"compress_level": 1} if Path(path).suffix.lower() == ".png" else {}))
    return boxes
