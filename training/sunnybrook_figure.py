"""A figure of the shipped segmentation on the held-out real patient: docs/figures/segmentation_sunnybrook.png.

    python -m training.sunnybrook_figure [--model inference/models/segmentation.onnx]

Each tile is one slice of the held-out Sunnybrook patient with an expert myocardium (cine SSFP, end-diastole and
end-systole), cropped around the heart and enlarged: the experts' borders in yellow, the model's (run as the node
runs it) endocardium in red and epicardium in green, with the slice's myocardium Dice. The borders are drawn where a
mask's pixels meet the outside, so what is shown is exactly what was scored.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

from inference.metrics import dice
from inference.runtime import Device, load_model, shipped_model_path
from inference.segmentation import segment_maps
from training import sunnybrook

FIGURE_PATH = Path("docs/figures/segmentation_sunnybrook.png")
SUNNYBROOK_ROOT = sunnybrook.SUNNYBROOK_ROOT
EXPERT = (255, 220, 0)
ENDO = (255, 60, 60)
EPI = (60, 220, 60)
CROP_MM = 110.0  # side of the square shown around the experts' LV
SCALE = 3  # display pixels per image pixel
COLUMNS = 5


def _border(mask: np.ndarray) -> np.ndarray:
    mask = np.asarray(mask, dtype=bool)
    return mask & ~ndimage.binary_erosion(mask)


def _filled(myocardium: np.ndarray, cavity: np.ndarray) -> np.ndarray:
    return ndimage.binary_fill_holes(np.asarray(myocardium, bool) | np.asarray(cavity, bool))


def tile(item: sunnybrook.SunnybrookSlice, cavity: np.ndarray, myocardium: np.ndarray) -> Image.Image:
    """One slice with the experts' and the model's borders, cropped around the heart."""
    assert item.myocardium_mask is not None
    rows, columns = np.nonzero(item.myocardium_mask)
    centre = (rows.mean(), columns.mean())
    half = (CROP_MM / 2.0 / item.pixel_spacing_mm[0], CROP_MM / 2.0 / item.pixel_spacing_mm[1])
    top, left = max(int(centre[0] - half[0]), 0), max(int(centre[1] - half[1]), 0)
    window = (slice(top, int(centre[0] + half[0])), slice(left, int(centre[1] + half[1])))
    image = item.image[window].astype(np.float32)
    low, high = np.percentile(image, [1, 99.5])
    grey = (np.clip((image - low) / max(high - low, 1e-6), 0, 1) * 255).astype(np.uint8)
    rgb = np.repeat(grey[:, :, None], 3, axis=2)
    layers = [
        (_border(_filled(item.myocardium_mask, item.cavity_mask)) | _border(item.cavity_mask), EXPERT),
        (_border(_filled(myocardium, cavity)), EPI),
        (_border(_filled(myocardium, cavity) & ~myocardium), ENDO),
    ]
    big = np.kron(rgb, np.ones((SCALE, SCALE, 1), dtype=np.uint8))
    for mask, colour in layers:
        shown = np.kron(mask[window].astype(np.uint8), np.ones((SCALE, SCALE), dtype=np.uint8)).astype(bool)
        big[shown] = colour
    picture = Image.fromarray(big)
    draw = ImageDraw.Draw(picture)
    text = f"instance {item.instance}: Dice {dice(myocardium, item.myocardium_mask):.2f}"
    draw.rectangle((0, 0, picture.width, 22), fill=(0, 0, 0))
    draw.text((4, 3), text, fill=(255, 255, 255), font=ImageFont.load_default(size=15))
    return picture


def figure(slices: list[sunnybrook.SunnybrookSlice], model_path: Path) -> Image.Image:
    model = load_model(model_path, device=Device.CPU)
    shown = [item for item in slices if item.myocardium_mask is not None]
    found = segment_maps([item.image for item in shown], [item.pixel_spacing_mm for item in shown], model)
    tiles = [tile(item, seg.cavity_mask, seg.myocardium_mask) for item, seg in zip(shown, found, strict=True)]
    side = max(max(t.width, t.height) for t in tiles)
    n_rows = -(-len(tiles) // COLUMNS)
    legend_px = 30
    sheet = Image.new("RGB", (COLUMNS * side, n_rows * side + legend_px), (0, 0, 0))
    for index, picture in enumerate(tiles):
        sheet.paste(picture, ((index % COLUMNS) * side, (index // COLUMNS) * side))
    draw = ImageDraw.Draw(sheet)
    y = n_rows * side + 6
    x = 6
    for label, colour in (
        (f"experts ({shown[0].patient}, held out)", EXPERT),
        (f"{model.card.name} {model.card.version} endocardium", ENDO),
        ("epicardium", EPI),
    ):
        draw.rectangle((x, y + 4, x + 14, y + 16), fill=colour)
        draw.text((x + 20, y), label, fill=(255, 255, 255), font=ImageFont.load_default(size=16))
        x += 30 + int(draw.textlength(label, font=ImageFont.load_default(size=16)))
    return sheet


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=shipped_model_path("segmentation.onnx"))
    parser.add_argument("--sunnybrook", type=Path, default=SUNNYBROOK_ROOT)
    parser.add_argument("--out", type=Path, default=FIGURE_PATH)
    args = parser.parse_args(argv)
    folders = [
        pair for pair in sunnybrook.linked_folders(args.sunnybrook) if pair[1].name == sunnybrook.HELD_OUT_PATIENT
    ]
    sheet = figure(sunnybrook.load_patient(*folders[0]), args.model)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.out, optimize=True)
    print(f"wrote {args.out} ({sheet.width} x {sheet.height})")


if __name__ == "__main__":
    main()
