"""Procedural fish photos in the Kaggle layout, for demos and tests without a download.

Every species has a fixed look (palette, body shape, pattern, tail, fins) so that a small CNN
can tell them apart, while each image varies in size, placement, scale, rotation, mirroring,
background, lighting, noise and blur so that it cannot do so by memorising pixels. Output is
deterministic: each image draws from its own RNG seeded by ``(seed, species, index)``, so the
same seed gives byte-identical files and one image does not depend on how many others exist.
The images are drawings, not fish: a README written next to them says so.
"""

from __future__ import annotations

import io
import math
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

RGB = tuple[int, int, int]
SUPERSAMPLE = 2  # fish are drawn at twice the size and reduced, which anti-aliases their edges
DEFAULT_SIZE_RANGE = (96, 320)  # widths when no fixed size is asked for
README_TEXT = """\
SYNTHETIC DATA - NOT REAL FISH

Every image under this folder was drawn procedurally by fish_platform.data.synthetic
(generate_dataset, seed={seed}). They are cartoons with per-species colours, shapes and
patterns, made for demos and tests of the fish-platform pipeline. They are not photographs,
carry no biological information, and a model trained on them knows nothing about real fish.

Layout: one folder per species, like Kaggle's "A Large Scale Fish Dataset".
Species: {species}
Good images per species: {per_species}
Deliberately broken files (should be quarantined): {corrupt}
Exact byte duplicates of other images (should be deduplicated): {duplicates}
"""


@dataclass(frozen=True)
class SpeciesStyle:
    """What makes a species recognisable. Proportions are relative to the body length."""

    name: str
    back: RGB  # dorsal colour; the body shades from back through body to belly
    body: RGB
    belly: RGB
    fin: RGB
    pattern: tuple[str, ...] = ()  # any of: hstripes, vbands, spots, lateral, headband, segments
    pattern_color: RGB = (0, 0, 0)
    accent: RGB | None = None  # colour of the lateral band when it differs from the pattern colour
    height: float = 0.32  # body height / body length
    peak: float = 0.55  # where along the body (0 tail .. 1 snout) it is highest
    bluntness: float = 0.8  # exponent of the outline: lower is blunter
    tail: str = "forked"  # forked, lunate, rounded, truncate, fan (shrimp)
    tail_color: RGB | None = None
    dorsal: float = 0.12  # dorsal fin height / body length
    shape: str = "fish"  # fish or shrimp


# One species per entry: the table reads better than one argument per line.
# fmt: off
SPECIES_STYLES: tuple[SpeciesStyle, ...] = (
    SpeciesStyle("Red Mullet", back=(170, 40, 45), body=(215, 85, 80), belly=(245, 190, 170),
                 fin=(235, 170, 60), height=0.30, peak=0.6, bluntness=0.6, tail="forked"),
    SpeciesStyle("Sea Bass", back=(45, 60, 95), body=(145, 160, 190), belly=(230, 232, 240),
                 fin=(110, 115, 125), pattern=("spots",), pattern_color=(40, 45, 55), height=0.26,
                 peak=0.55, bluntness=0.9, tail="truncate", dorsal=0.16),
    SpeciesStyle("Trout", back=(75, 95, 40), body=(145, 150, 80), belly=(225, 215, 170),
                 fin=(120, 110, 60), pattern=("lateral", "spots"), pattern_color=(25, 25, 20),
                 accent=(225, 110, 150),
                 height=0.24, peak=0.5, bluntness=0.75, tail="truncate", dorsal=0.10),
    SpeciesStyle("Shrimp", back=(225, 110, 70), body=(245, 150, 110), belly=(250, 200, 170),
                 fin=(235, 120, 80), pattern=("segments",), pattern_color=(170, 60, 40),
                 tail="fan", shape="shrimp"),
    SpeciesStyle("Gilt-Head Bream", back=(135, 125, 85), body=(215, 200, 125), belly=(245, 238, 200),
                 fin=(150, 140, 100), pattern=("headband",), pattern_color=(240, 190, 30),
                 height=0.50, peak=0.6, bluntness=0.7, tail="lunate", dorsal=0.14),
    SpeciesStyle("Horse Mackerel", back=(30, 110, 120), body=(110, 170, 170), belly=(225, 235, 230),
                 fin=(90, 140, 140), pattern=("lateral",), pattern_color=(235, 215, 80),
                 height=0.22, peak=0.55, bluntness=0.9, tail="lunate", dorsal=0.08),
    SpeciesStyle("Striped Red Mullet", back=(190, 50, 50), body=(220, 100, 90), belly=(245, 215, 200),
                 fin=(225, 95, 80), pattern=("hstripes",), pattern_color=(250, 220, 60),
                 height=0.30, peak=0.6, bluntness=0.6, tail="forked"),
    SpeciesStyle("Black Sea Sprat", back=(20, 35, 70), body=(90, 110, 140), belly=(240, 240, 245),
                 fin=(60, 70, 90), height=0.19, peak=0.5, bluntness=1.0, tail="forked", dorsal=0.06),
    SpeciesStyle("Red Sea Bream", back=(200, 80, 110), body=(235, 140, 150), belly=(250, 210, 210),
                 fin=(225, 120, 130), pattern=("spots",), pattern_color=(60, 140, 230),
                 height=0.46, peak=0.62, bluntness=0.7, tail="forked", dorsal=0.15),
    SpeciesStyle("Clown Loach", back=(230, 120, 20), body=(245, 150, 40), belly=(250, 200, 120),
                 fin=(220, 40, 30), pattern=("vbands",), pattern_color=(15, 15, 15),
                 height=0.30, peak=0.5, bluntness=0.7, tail="forked"),
    SpeciesStyle("Blue Tang", back=(20, 50, 170), body=(40, 90, 210), belly=(90, 140, 230),
                 fin=(20, 30, 60), height=0.55, peak=0.55, bluntness=0.6, tail="truncate",
                 tail_color=(250, 210, 30), dorsal=0.10),
    SpeciesStyle("Emerald Wrasse", back=(20, 120, 60), body=(60, 180, 100), belly=(180, 230, 190),
                 fin=(200, 60, 150), pattern=("hstripes",), pattern_color=(210, 70, 170),
                 height=0.27, peak=0.5, bluntness=0.8, tail="rounded"),
)
# fmt: on
PATTERNS = ("hstripes", "vbands", "spots", "lateral", "headband")
TAILS = ("forked", "lunate", "rounded", "truncate")

WATER = ((40, 110, 160), (30, 130, 140), (50, 90, 130), (60, 140, 120), (25, 70, 110), (80, 150, 170))
TABLE = ((225, 225, 225), (210, 205, 195), (235, 232, 225), (190, 195, 200))


@dataclass
class SyntheticSummary:
    out_dir: Path
    species: list[str]
    counts: dict[str, int]  # good images written per species
    corrupt: list[Path] = field(default_factory=list)
    duplicates: list[tuple[Path, Path]] = field(default_factory=list)  # (copy, original)
    total_files: int = 0


def species_styles(count: int) -> list[SpeciesStyle]:
    """The first ``count`` species: the named ones, then generated extras with fixed looks."""
    if count < 1:
        raise ValueError(f"species must be at least 1, got {count}")
    styles = list(SPECIES_STYLES[:count])
    for number in range(len(styles) + 1, count + 1):
        styles.append(_extra_style(number))
    return styles


def _extra_style(number: int) -> SpeciesStyle:
    # Seeded by the species number alone, so an extra looks the same whatever the dataset seed.
    rng = np.random.default_rng([0x5EED, number])
    hue = (number * 0.618034) % 1.0  # golden-ratio steps spread hues evenly
    body = _hsv(hue, 0.7, 0.85)
    return SpeciesStyle(
        name=f"Synthetic Species {number:02d}",
        back=_hsv(hue, 0.85, 0.45),
        body=body,
        belly=_hsv(hue, 0.25, 0.95),
        fin=_hsv((hue + 0.5) % 1.0, 0.7, 0.7),
        pattern=(PATTERNS[number % len(PATTERNS)],),
        pattern_color=_hsv((hue + 0.33) % 1.0, 0.8, 0.9),
        height=float(rng.uniform(0.2, 0.5)),
        peak=float(rng.uniform(0.45, 0.65)),
        bluntness=float(rng.uniform(0.6, 1.0)),
        tail=TAILS[number % len(TAILS)],
        dorsal=float(rng.uniform(0.06, 0.16)),
    )


def _hsv(h: float, s: float, v: float) -> RGB:
    import colorsys

    r, g, b = colorsys.hsv_to_rgb(h, s, v)
    return (int(r * 255), int(g * 255), int(b * 255))


def _jitter(color: RGB, rng: np.random.Generator, amount: float = 12.0) -> RGB:
    shifted = np.clip(np.asarray(color, dtype=np.float64) + rng.normal(0.0, amount, 3), 0, 255)
    return tuple(int(c) for c in shifted)  # type: ignore[return-value]


def _vertical_gradient(width: int, height: int, stops: Sequence[tuple[float, RGB]]) -> Image.Image:
    """An RGB image shading from top to bottom through ``stops`` (position 0..1, colour)."""
    positions = np.array([p for p, _ in stops])
    colors = np.array([c for _, c in stops], dtype=np.float32)
    t = np.linspace(0.0, 1.0, height)
    column = np.stack([np.interp(t, positions, colors[:, k]) for k in range(3)], axis=1)
    strip = Image.fromarray(column.astype(np.uint8).reshape(height, 1, 3), "RGB")
    return strip.resize((width, height), Image.Resampling.NEAREST)


# --- fish drawing -------------------------------------------------------------------------


def _body_outline(style: SpeciesStyle, x0: float, length: float, cy: float, height: float, belly: float):
    """Upper and lower outline points of a body from the tail (x0) to the snout."""
    k = math.log(0.5) / math.log(style.peak)  # maps the peak position to the sine's maximum
    peduncle = 0.22
    top, bottom = [], []
    for i in range(25):
        u = i / 24
        width = math.sin(math.pi * u**k) ** style.bluntness if 0 < u < 1 else 0.0
        taper = peduncle * (1 - u) ** 3
        half = height / 2 * (taper + (1 - taper) * width)
        x = x0 + u * length
        top.append((x, cy - half))
        bottom.append((x, cy + half * belly))
    return top, bottom


def _tail_polygon(kind: str, x0: float, cy: float, length: float, height: float, ped: float):
    tl, th = length, height / 2
    if kind == "forked":
        return [(x0, cy - ped), (x0 - tl, cy - th), (x0 - tl * 0.55, cy), (x0 - tl, cy + th), (x0, cy + ped)]
    if kind == "lunate":
        return [
            (x0, cy - ped),
            (x0 - tl * 1.1, cy - th * 1.1),
            (x0 - tl * 0.45, cy - th * 0.2),
            (x0 - tl * 0.3, cy),
            (x0 - tl * 0.45, cy + th * 0.2),
            (x0 - tl * 1.1, cy + th * 1.1),
            (x0, cy + ped),
        ]
    if kind == "rounded":
        fan = [
            (x0 - tl * 0.3 - tl * 0.7 * math.cos(a), cy + th * 0.9 * math.sin(a))
            for a in np.linspace(-math.pi / 2, math.pi / 2, 9)
        ]
        return [(x0, cy - ped), *fan, (x0, cy + ped)]
    # truncate: a straight-edged fan
    return [
        (x0, cy - ped),
        (x0 - tl, cy - th * 0.85),
        (x0 - tl * 0.95, cy),
        (x0 - tl, cy + th * 0.85),
        (x0, cy + ped),
    ]


def _draw_pattern(
    draw: ImageDraw.ImageDraw,
    style: SpeciesStyle,
    rng: np.random.Generator,
    box: tuple[float, float, float, float],
    color: RGB,
) -> None:
    left, top, right, bottom = box
    length, height = right - left, bottom - top
    cy = (top + bottom) / 2
    for pattern in style.pattern:
        if pattern == "hstripes":
            for k in range(3):
                y = top + height * (0.3 + 0.17 * k)
                draw.line([(left, y), (right, y)], fill=color, width=max(2, int(height * 0.06)))
        elif pattern == "vbands":
            for k in range(3):
                x = left + length * (0.3 + 0.23 * k)
                draw.line(
                    [(x, top), (x + length * 0.04, bottom)], fill=color, width=max(2, int(length * 0.07))
                )
        elif pattern == "spots":
            for _ in range(int(rng.integers(18, 34))):
                x = left + length * rng.uniform(0.1, 0.85)
                y = top + height * rng.uniform(0.1, 0.75)
                r = height * rng.uniform(0.025, 0.05)
                draw.ellipse([x - r, y - r, x + r, y + r], fill=color)
        elif pattern == "lateral":
            band = _jitter(style.accent, rng, 8.0) if style.accent else color
            draw.line(
                [(left, cy), (right - length * 0.12, cy - height * 0.06)],
                fill=band,
                width=max(2, int(height * 0.11)),
            )
        elif pattern == "headband":
            x = left + length * 0.8
            draw.line([(x, top), (x - length * 0.02, cy)], fill=color, width=max(2, int(length * 0.045)))


def _draw_fish(style: SpeciesStyle, rng: np.random.Generator, length: float) -> Image.Image:
    """One fish facing right on a transparent canvas, ``length`` pixels from tail fork to snout."""
    ss = SUPERSAMPLE
    tail_len = length * rng.uniform(0.18, 0.24) * ss
    body_len = length * ss - tail_len
    height = body_len * style.height * rng.uniform(0.9, 1.1)
    belly = rng.uniform(0.9, 1.1)
    fin_h = body_len * style.dorsal * rng.uniform(0.85, 1.15)
    pad = 4 * ss
    width_px = int(body_len + tail_len + 2 * pad)
    height_px = int(height * max(1.0, belly) + 2 * fin_h + 2 * pad)
    cy = pad + fin_h + height / 2
    x0 = pad + tail_len
    canvas = Image.new("RGBA", (width_px, height_px), (0, 0, 0, 0))
    draw = ImageDraw.Draw(canvas)

    fin = _jitter(style.fin, rng)
    top, bottom = _body_outline(style, x0, body_len, cy, height, belly)
    ped = cy - top[0][1]
    tail_color = _jitter(style.tail_color, rng) if style.tail_color else fin
    draw.polygon(_tail_polygon(style.tail, x0 + 2 * ss, cy, tail_len, height * 0.9, ped), fill=tail_color)
    # dorsal and anal fins sit behind the body
    d0, d1 = int(24 * 0.35), int(24 * 0.68)
    draw.polygon(
        [
            top[d0],
            (top[(d0 + d1) // 2][0] - body_len * 0.05, top[(d0 + d1) // 2][1] - fin_h),
            (top[d1][0], top[d1][1] - fin_h * 0.3),
            top[d1],
        ],
        fill=fin,
    )
    a0, a1 = 4, 9
    draw.polygon(
        [bottom[a0], (bottom[a0][0] + body_len * 0.03, bottom[a0][1] + fin_h * 0.6), bottom[a1]], fill=fin
    )

    body_top, body_bottom = cy - height / 2, cy + height / 2 * belly
    shade = _vertical_gradient(
        width_px,
        height_px,
        [
            (body_top / height_px, _jitter(style.back, rng)),
            (cy / height_px, _jitter(style.body, rng)),
            (body_bottom / height_px, _jitter(style.belly, rng)),
        ],
    )
    _draw_pattern(
        ImageDraw.Draw(shade),
        style,
        rng,
        (x0, body_top, x0 + body_len, body_bottom),
        _jitter(style.pattern_color, rng, 8.0),
    )
    mask = Image.new("L", canvas.size, 0)
    ImageDraw.Draw(mask).polygon(top + bottom[::-1], fill=255)
    canvas.paste(shade, (0, 0), mask)

    # gill line, pectoral fin and eye on top of the body
    gx = x0 + body_len * 0.78
    draw.arc(
        [gx - height * 0.25, cy - height * 0.3, gx, cy + height * 0.3],
        -70,
        70,
        fill=_jitter(style.back, rng),
        width=max(1, ss),
    )
    px, py = x0 + body_len * 0.7, cy + height * 0.12
    pectoral = [
        (px, py),
        (px - body_len * 0.12, py + height * 0.05),
        (px - body_len * 0.1, py + height * 0.18),
    ]
    draw.polygon(pectoral, fill=fin)
    ex, ey, er = x0 + body_len * 0.88, cy - height * 0.1, max(height * 0.07, 1.5 * ss)
    draw.ellipse([ex - er, ey - er, ex + er, ey + er], fill=(240, 240, 235))
    draw.ellipse([ex - er * 0.55, ey - er * 0.55, ex + er * 0.55, ey + er * 0.55], fill=(10, 10, 10))
    return canvas.reduce(ss)


def _draw_shrimp(style: SpeciesStyle, rng: np.random.Generator, length: float) -> Image.Image:
    """A shrimp arched like a bow, head on the right, on a transparent canvas."""
    ss = SUPERSAMPLE
    size = length * ss
    width_px, height_px = int(size * 1.25), int(size * 0.85)
    canvas = Image.new("RGBA", (width_px, height_px), (0, 0, 0, 0))
    draw = ImageDraw.Draw(canvas)
    cx, cy = width_px * 0.48, height_px * 0.62
    radius = size * 0.4 * rng.uniform(0.9, 1.1)
    body, outline = _jitter(style.body, rng), _jitter(style.pattern_color, rng, 8.0)
    fin = _jitter(style.fin, rng)
    segments = 8
    angles = np.linspace(math.radians(15), math.radians(200), segments)  # head first
    points = [(cx + radius * math.cos(a), cy - radius * 0.75 * math.sin(a)) for a in angles]
    r0 = size * 0.13
    # antennae and legs first, so the body covers their roots
    hx, hy = points[0]
    for dy in (-0.05, 0.02):
        draw.line([(hx, hy), (width_px - 2 * ss, hy + size * dy - size * 0.25)], fill=outline, width=ss)
    for k in range(1, 5):
        x, y = points[k]
        draw.line([(x, y), (x + size * 0.03, y + r0 * 1.4)], fill=fin, width=2 * ss)
    tx, ty = points[-1]
    draw.polygon(
        [(tx, ty - r0 * 0.2), (tx - size * 0.05, ty + r0 * 1.6), (tx + size * 0.12, ty + r0 * 1.5)], fill=fin
    )
    for k in reversed(range(segments)):
        x, y = points[k]
        r = r0 * (1 - 0.55 * k / segments)
        box = [x - r * 1.15, y - r, x + r * 1.15, y + r]
        draw.ellipse(box, fill=body if k else _jitter(style.back, rng), outline=outline, width=ss * 2)
    er = max(r0 * 0.18, 1.5 * ss)
    ex, ey = hx + r0 * 0.4, hy - r0 * 0.5
    draw.ellipse([ex - er, ey - er, ex + er, ey + er], fill=(15, 15, 15))
    return canvas.reduce(ss)


# --- whole images ---------------------------------------------------------------------------


def _background(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    if rng.random() < 0.3:  # a pale tabletop, as in the Kaggle photos
        base = _jitter(TABLE[int(rng.integers(len(TABLE)))], rng, 8.0)
        darker = tuple(int(c * rng.uniform(0.8, 0.95)) for c in base)
        return _vertical_gradient(width, height, [(0.0, base), (1.0, darker)])
    water = _jitter(WATER[int(rng.integers(len(WATER)))], rng, 15.0)
    light = tuple(min(255, int(c * rng.uniform(1.2, 1.5))) for c in water)
    deep = tuple(int(c * rng.uniform(0.45, 0.75)) for c in water)
    image = _vertical_gradient(width, height, [(0.0, light), (rng.uniform(0.3, 0.6), water), (1.0, deep)])
    draw = ImageDraw.Draw(image)
    if rng.random() < 0.5:  # a sandy bottom
        sand = _jitter((190, 170, 120), rng, 15.0)
        level = height * rng.uniform(0.78, 0.92)
        xs = np.linspace(0, width, 7)
        ys = level + rng.normal(0, height * 0.03, xs.size)
        draw.polygon([(0, height), *zip(xs.tolist(), ys.tolist(), strict=True), (width, height)], fill=sand)
    for _ in range(int(rng.integers(0, 6))):  # bubbles
        x, y = rng.uniform(0, width), rng.uniform(0, height)
        r = rng.uniform(1.5, max(2.0, width * 0.02))
        draw.ellipse([x - r, y - r, x + r, y + r], outline=(220, 235, 245), width=1)
    return image


def render_image(style: SpeciesStyle, rng: np.random.Generator, size: tuple[int, int] | None) -> Image.Image:
    """One synthetic photo of ``style``; all randomness comes from ``rng``."""
    return render_image_with_mask(style, rng, size)[0]


def render_image_with_mask(
    style: SpeciesStyle, rng: np.random.Generator, size: tuple[int, int] | None
) -> tuple[Image.Image, np.ndarray]:
    """:func:`render_image` and where the animal is: a ``(height, width)`` bool mask of its outline.

    The same ``rng`` draws give the same photo as :func:`render_image` (the mask costs no draws), so
    a test can check where a model looks (class activation maps) on the generator's own images.
    """
    if size is None:
        width = int(rng.integers(DEFAULT_SIZE_RANGE[0], DEFAULT_SIZE_RANGE[1] + 1))
        height = max(48, int(width * rng.uniform(0.6, 1.1)))
    else:
        width, height = size
    image = _background(rng, width, height)

    length = min(width, height * 1.6) * rng.uniform(0.6, 0.9)
    draw_one = _draw_shrimp if style.shape == "shrimp" else _draw_fish
    fish = draw_one(style, rng, length)
    if rng.random() < 0.5:
        fish = fish.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    fish = fish.rotate(float(rng.uniform(-20, 20)), resample=Image.Resampling.BILINEAR, expand=True)
    fit = min(1.0, 0.95 * width / fish.width, 0.95 * height / fish.height)
    if fit < 1.0:
        fish = fish.resize(
            (max(1, int(fish.width * fit)), max(1, int(fish.height * fit))), Image.Resampling.BILINEAR
        )
    x = int(rng.integers(0, width - fish.width + 1))
    y = int(rng.integers(0, height - fish.height + 1))
    image.paste(fish, (x, y), fish)
    mask = np.zeros((height, width), dtype=bool)
    mask[y : y + fish.height, x : x + fish.width] = np.asarray(fish.getchannel("A")) >= 128

    # lighting: (pixels - mean) * contrast + mean * gain, done in place for speed
    pixels = np.asarray(image, dtype=np.float32)
    gain = rng.uniform(0.75, 1.2)
    contrast = rng.uniform(0.85, 1.15)
    mean = float(pixels.mean())
    pixels *= contrast
    pixels += mean * (gain - contrast)
    sigma = rng.uniform(0.0, 8.0)
    if sigma > 1.0:
        noise = rng.standard_normal(pixels.shape, dtype=np.float32)
        noise *= sigma
        pixels += noise
    np.clip(pixels, 0, 255, out=pixels)
    image = Image.fromarray(pixels.astype(np.uint8), "RGB")
    if rng.random() < 0.4:
        image = image.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.3, 1.2))))
    return image, mask


def encode(image: Image.Image, fmt: str, rng: np.random.Generator) -> bytes:
    buffer = io.BytesIO()
    if fmt == "png":
        image.save(buffer, format="PNG", compress_level=1)
    else:
        image.save(buffer, format="JPEG", quality=int(rng.integers(70, 96)))
    return buffer.getvalue()


def _image_rng(seed: int, species_index: int, index: int, kind: int = 0) -> np.random.Generator:
    return np.random.default_rng([seed, species_index, index, kind])


def _corrupt_bytes(kind: str, style: SpeciesStyle, rng: np.random.Generator) -> bytes:
    if kind == "empty":
        return b""
    if kind == "text":
        return b"This is not an image: it is text saved with an image extension.\n" * 4
    fmt = "png" if kind == "truncated_png" else "jpg"
    whole = encode(render_image(style, rng, (160, 120)), fmt, rng)
    return whole[: len(whole) // 2]  # a valid header, then the data stops


CORRUPT_KINDS: tuple[tuple[str, str], ...] = (
    ("truncated_png", "png"),
    ("truncated_jpg", "jpg"),
    ("empty", "jpg"),
    ("text", "png"),
)


def generate_dataset(
    out_dir: Path,
    species: int = 5,
    per_species: int = 40,
    size: tuple[int, int] | None = None,
    corrupt: int = 0,
    duplicates: int = 0,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> SyntheticSummary:
    """Write ``species`` folders of ``per_species`` synthetic images each under ``out_dir``.

    ``size`` fixes every image's (width, height); by default widths vary from 96 to 320 px
    with varied aspect ratios. ``corrupt`` broken files (truncated PNG/JPEG, empty, text) and
    ``duplicates`` exact byte copies of good images are added on top, spread over the species.
    Formats alternate between PNG and JPEG. ``progress(done, total)`` is called after each file.
    """
    _check_arguments(per_species, size, corrupt, duplicates)
    out_dir = Path(out_dir)
    styles = species_styles(species)
    total = len(styles) * per_species + corrupt + duplicates
    summary = SyntheticSummary(out_dir=out_dir, species=[s.name for s in styles], counts={})
    tick = _file_counter(total, progress)
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_readme(out_dir, seed, summary.species, per_species, corrupt, duplicates)
    good = [
        _write_good_images(out_dir / style.name, style, s, per_species, size, seed, tick)
        for s, style in enumerate(styles)
    ]
    summary.counts = {style.name: per_species for style in styles}
    summary.corrupt = _write_corrupt_files(out_dir, styles, corrupt, seed, tick)
    summary.duplicates = _write_duplicates(good, duplicates, seed, tick)
    summary.total_files = total
    return summary


def _check_arguments(per_species: int, size: tuple[int, int] | None, corrupt: int, duplicates: int) -> None:
    if per_species < 0 or corrupt < 0 or duplicates < 0:
        raise ValueError("per_species, corrupt and duplicates must not be negative")
    if size is not None and (size[0] < 16 or size[1] < 16):
        raise ValueError(f"size must be at least 16x16, got {size[0]}x{size[1]}")
    if duplicates and not per_species:
        raise ValueError("duplicates need at least one good image per species to copy")


def _file_counter(total: int, progress: Callable[[int, int], None] | None) -> Callable[[], None]:
    """A function to call after each file is written; it reports ``progress(done, total)``."""
    done = 0

    def tick() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total)

    return tick


def _write_readme(
    out_dir: Path, seed: int, species: list[str], per_species: int, corrupt: int, duplicates: int
) -> None:
    """The README.txt that says these images are synthetic drawings, not fish."""
    text = README_TEXT.format(
        seed=seed,
        species=", ".join(species),
        per_species=per_species,
        corrupt=corrupt,
        duplicates=duplicates,
    )
    (out_dir / "README.txt").write_text(text)


def _write_good_images(
    folder: Path,
    style: SpeciesStyle,
    species_index: int,
    per_species: int,
    size: tuple[int, int] | None,
    seed: int,
    tick: Callable[[], None],
) -> list[Path]:
    """``per_species`` rendered images of one species, PNG and JPEG alternating; returns their paths."""
    folder.mkdir(exist_ok=True)
    paths = []
    for i in range(per_species):
        rng = _image_rng(seed, species_index, i)
        fmt = "png" if (i + species_index) % 2 == 0 else "jpg"
        path = folder / f"fish_{i:05d}.{fmt}"
        path.write_bytes(encode(render_image(style, rng, size), fmt, rng))
        paths.append(path)
        tick()
    return paths


def _write_corrupt_files(
    out_dir: Path, styles: list[SpeciesStyle], corrupt: int, seed: int, tick: Callable[[], None]
) -> list[Path]:
    """``corrupt`` broken files spread over the species folders, cycling through the kinds."""
    paths = []
    for k in range(corrupt):
        s = k % len(styles)
        kind, ext = CORRUPT_KINDS[(k + k // len(styles)) % len(CORRUPT_KINDS)]
        path = out_dir / styles[s].name / f"broken_{k:04d}.{ext}"
        path.write_bytes(_corrupt_bytes(kind, styles[s], _image_rng(seed, s, k, kind=1)))
        paths.append(path)
        tick()
    return paths


def _write_duplicates(
    good: list[list[Path]], duplicates: int, seed: int, tick: Callable[[], None]
) -> list[tuple[Path, Path]]:
    """``duplicates`` byte copies of good images, spread over the species; returns (copy, original)."""
    picker = np.random.default_rng([seed, 0xD0B])
    pairs = []
    for k in range(duplicates):
        s = k % len(good)
        original = good[s][int(picker.integers(len(good[s])))]
        copy = original.with_name(f"{original.stem}_copy{k:04d}{original.suffix}")
        shutil.copyfile(original, copy)
        pairs.append((copy, original))
        tick()
    return pairs
