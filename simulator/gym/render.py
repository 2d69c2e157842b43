"""``render_mode="rgb_array"``: the round's key curves drawn into a NumPy image (PIL only, for ``RecordVideo``).

The picture shows, per round so far (the current one included), the clicks per request the
policy earned (observable, blue) and the mean true relevance of the slates it exposed (truth,
orange), on a shared 0..max axis, with a header naming the round and the serving models.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

WIDTH, HEIGHT, MARGIN = 480, 320, 36
COLOURS = {"clicks": (31, 119, 180), "true_slate_relevance": (255, 127, 14)}


def draw_curves(curves: list[dict[str, float]], header: str) -> np.ndarray:
    """``[HEIGHT, WIDTH, 3] uint8``: one polyline per key of :data:`COLOURS` over ``curves`` (one dict per round)."""
    img = Image.new("RGB", (WIDTH, HEIGHT), "white")
    pen = ImageDraw.Draw(img)
    x0, y0, x1, y1 = MARGIN, MARGIN, WIDTH - MARGIN // 2, HEIGHT - MARGIN
    pen.rectangle((x0, y0, x1, y1), outline=(160, 160, 160))
    pen.text((x0, 8), header, fill="black")
    top = max([c.get(k, 0.0) for c in curves for k in COLOURS] + [1e-6])
    pen.text((4, y0 - 6), f"{top:.2f}", fill="black")
    pen.text((4, y1 - 6), "0", fill="black")
    span = max(len(curves) - 1, 1)
    for i, (key, colour) in enumerate(COLOURS.items()):
        pts = [(x0 + (x1 - x0) * j / span, y1 - (y1 - y0) * c.get(key, 0.0) / top) for j, c in enumerate(curves)]
        if len(pts) == 1:
            pen.ellipse((pts[0][0] - 2, pts[0][1] - 2, pts[0][0] + 2, pts[0][1] + 2), fill=colour)
        elif pts:
            pen.line(pts, fill=colour, width=2)
        pen.text((x0 + 8 + 190 * i, y1 + 8), key.replace("_", " ") + " / request", fill=colour)
    return np.asarray(img, dtype=np.uint8)
