"""Source domain of the default task: digits 0-9 rendered from the TrueType fonts that matplotlib ships.

Every image is one glyph drawn on a large canvas with a random font, size and stroke, then rotated, translated,
downsampled, blurred and given sensor noise. Everything random comes from one `numpy.random.Generator`, so a seed
gives the same images on every machine with the same matplotlib and Pillow.

Glyphs are laid out by Pillow's Raqm engine, always: Pillow picks it silently when the system library it needs
(FriBiDi, Debian's ``libfribidi0``) is there and its basic engine otherwise, which places the glyphs differently, so
two machines with the same packages rendered different digits (a fresh container against a machine with a
browser installed). Without Raqm, `digit_fonts` refuses and says what to install.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from tada.io import MissingLibraryError

DIGIT_GLYPHS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
_SUPERSAMPLE = 4  # glyphs are drawn at 4x the output size, then box-filtered down: clean anti-aliasing


@dataclass(frozen=True)
class RenderSpec:
    """Ranges the renderer samples uniformly from, per image.

    Attributes:
        height: glyph height as a fraction of the image side, ``(low, high)``.
        stroke: extra stroke width in output pixels, ``(low, high)``; 0 is the font's own weight.
        rotation: maximum absolute rotation in degrees.
        translation: maximum absolute shift as a fraction of the image side.
        blur: maximum Gaussian blur radius in output pixels.
        noise: maximum standard deviation of additive Gaussian noise, in [0, 1] intensity units.
    """

    height: tuple[float, float] = (0.6, 0.9)
    stroke: tuple[float, float] = (0.0, 1.5)
    rotation: float = 15.0
    translation: float = 0.08
    blur: float = 1.0
    noise: float = 0.05


@functools.cache
def digit_fonts() -> tuple[Path, ...]:
    """The TrueType fonts shipped with matplotlib whose character map draws 0-9 as the ordinary digit glyphs.

    Symbol fonts (which map '0'-'9' to other symbols) and old-style figures are left out by checking glyph names.
    """
    import matplotlib
    from fontTools.ttLib import TTFont
    from PIL import features

    if not features.check("raqm"):
        raise MissingLibraryError(
            "rendering the default task's digits needs Pillow's Raqm text layout, which needs the FriBiDi library: "
            "install it (Debian/Ubuntu: apt-get install libfribidi0; Fedora: dnf install fribidi) so every machine "
            "renders the same images")

    fonts = []
    for path in sorted((Path(matplotlib.get_data_path()) / "fonts" / "ttf").glob("*.ttf")):
        cmap = TTFont(path, lazy=True).getBestCmap() or {}
        if all(cmap.get(ord(str(d))) == name for d, name in enumerate(DIGIT_GLYPHS)):
            fonts.append(path)
    if not fonts:
        raise RuntimeError("no TrueType font with digit glyphs found in matplotlib's data path")
    return tuple(fonts)


@functools.lru_cache(maxsize=1024)
def _font(path: Path, pixels: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(path), pixels, layout_engine=ImageFont.Layout.RAQM)


def render_digit(digit: int, font: Path, size: int, spec: RenderSpec, rng: np.random.Generator) -> np.ndarray:
    """Render one digit as a ``(size, size)`` uint8 image, white ink on black."""
    canvas = size * _SUPERSAMPLE
    height = rng.uniform(*spec.height) * canvas
    stroke = int(round(rng.uniform(*spec.stroke) * _SUPERSAMPLE))
    angle = rng.uniform(-spec.rotation, spec.rotation)
    shift = rng.uniform(-spec.translation, spec.translation, size=2) * canvas
    blur = rng.uniform(0.0, spec.blur)
    noise = rng.uniform(0.0, spec.noise)

    # Scale the font so the digit's ink (not the font's em box) has the sampled height.
    probe = _font(font, 100)
    left, top, right, bottom = probe.getbbox(str(digit), stroke_width=0)
    pixels = max(4, int(round(100 * (height - 2 * stroke) / max(bottom - top, 1))))
    img = Image.new("L", (canvas, canvas), 0)
    ImageDraw.Draw(img).text(
        (canvas / 2, canvas / 2), str(digit), fill=255, font=_font(font, pixels), anchor="mm",
        stroke_width=stroke, stroke_fill=255,
    )
    img = img.rotate(angle, resample=Image.Resampling.BILINEAR, translate=(shift[0], shift[1]))
    img = img.resize((size, size), Image.Resampling.BOX)
    if blur > 0:
        img = img.filter(ImageFilter.GaussianBlur(blur))
    pixels_f = np.asarray(img, dtype=np.float32) / 255.0 + rng.normal(0.0, noise, size=(size, size))
    return (np.clip(pixels_f, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def render_digits(
    per_class: int, size: int, spec: RenderSpec, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Render ``per_class`` images of each digit with random fonts.

    Returns:
        images ``(10 * per_class, size, size)`` uint8 and labels ``(10 * per_class,)`` int64, classes interleaved.
    """
    rng = np.random.default_rng(seed)
    fonts = digit_fonts()
    labels = np.tile(np.arange(10, dtype=np.int64), per_class)
    images = np.empty((labels.size, size, size), dtype=np.uint8)
    for i, digit in enumerate(labels):
        images[i] = render_digit(int(digit), fonts[rng.integers(len(fonts))], size, spec, rng)
    return images, labels
