"""How the sample files were made (run by hand; the package only reads the files it wrote).

``python -m grounded_sam.assets.make_samples path/to/chelsea.png`` with ``chelsea.png`` taken from
the scikit-image wheel (``skimage/data/chelsea.png``: "Chelsea the cat", CC0 by Stéfan van der
Walt; see NOTICE). It writes ``chelsea.jpg`` (the image, JPEG quality 90) and ``chelsea_pan.mp4``:
a 2-second H.264 clip that pans and zooms over the same photo, so that a tracker has motion to
follow. Deterministic: the same input gives the same frames.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image

from grounded_sam.export.annotate import VideoWriter

HERE = Path(__file__).resolve().parent
FRAMES, FPS, OUT_W, OUT_H = 16, 8, 320, 224


def pan_zoom_frames(image: np.ndarray, frames: int = FRAMES, size: tuple[int, int] = (OUT_W, OUT_H)) -> list[np.ndarray]:
    """``frames`` RGB crops that slide left to right while zooming in from 100% to ~80% of the height."""
    h, w = image.shape[:2]
    pil = Image.fromarray(image)
    out = []
    for t in np.linspace(0.0, 1.0, frames):
        ch = h * (1.0 - 0.2 * t)  # crop height
        cw = min(w, ch * size[0] / size[1])
        x0, y0 = (w - cw) * t, (h - ch) * 0.5 * t
        crop = pil.resize(size, Image.Resampling.BILINEAR, box=(x0, y0, x0 + cw, y0 + ch))
        out.append(np.asarray(crop))
    return out


def main(source: str) -> None:
    image = np.asarray(Image.open(source).convert("RGB"))
    Image.fromarray(image).save(HERE / "chelsea.jpg", quality=90)
    with VideoWriter(HERE / "chelsea_pan.mp4", fps=FPS, crf=30, preset="veryslow") as writer:
        for frame in pan_zoom_frames(image):
            writer.write(frame)


if __name__ == "__main__":
    main(sys.argv[1])
