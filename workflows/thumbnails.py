"""Draws the templates' thumbnails: what each workflow does, what it needs and roughly how long it takes.

    python workflows/thumbnails.py      # writes workflows/<template name>.jpg for every template

ComfyUI frontend 1.35.9 shows an extension's template with the thumbnail `<name>.jpg` served next to
`<name>.json` (`mediaType: 'image', mediaSubtype: 'jpg'` in workflowTemplatesStore.ts), in a square card
(`aspect-square`) whose picture is at most 256 CSS pixels high (`max-h-64 object-contain`). So the
thumbnails are square JPEGs of 512 x 512 (sharp on 2x screens), with text large enough at half size. The
frontend reads no description for extension templates (it repeats the name), so the picture carries it.

There are no real weights to show an edit with, so each picture is a drawing of the workflow's instruction
("What will the ice cube look like after an hour in the sun?"): an ice cube before, a puddle after. The CPU
times come from workflows/build.py (measured on a 2-core CPU, scaled by FLOPs); "GPU: minutes" is the
whole edit's compute (a few seconds to tens of seconds) plus loading some 30 GB of weights.
Needs Pillow >= 10.1 (its built-in scalable font).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

ROOT = Path(__file__).resolve().parent
SIZE = 512  # square: the frontend's card is square and shows at most 256 CSS px
BACKGROUND, PANEL, TEXT, MUTED = (27, 29, 35), (38, 41, 50), (236, 238, 243), (168, 174, 188)
SKY, TABLE, SUN = (196, 226, 250), (201, 160, 112), (255, 206, 84)
ICE, ICE_EDGE, WATER = (214, 244, 255), (102, 186, 224), (120, 196, 240)
GOLD = (247, 200, 70)


def font(size: int) -> ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError as error:  # Pillow < 10.1 has no scalable default font
        raise SystemExit("workflows/thumbnails.py needs Pillow >= 10.1") from error


# --- scene pieces ------------------------------------------------------------------------------------

def scene(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], melted: float) -> None:
    """A video frame of the instruction: sky, sun, table and an ice cube `melted` (0: whole, 1: a puddle)."""
    x0, y0, x1, y1 = box
    width, height = x1 - x0, y1 - y0
    draw.rounded_rectangle(box, radius=8, fill=SKY)
    table = y0 + int(height * 0.68)
    draw.rectangle((x0, table, x1, y1 - 1), fill=TABLE)
    draw.rounded_rectangle(box, radius=8, outline=(90, 96, 110), width=2)
    sun = (x1 - width * 0.22, y0 + height * 0.22)
    r = height * 0.12
    draw.ellipse((sun[0] - r, sun[1] - r, sun[0] + r, sun[1] + r), fill=SUN)
    centre = x0 + width * 0.42
    side = height * 0.34 * (1 - melted) + 2
    puddle = width * (0.18 + 0.3 * melted)
    if melted > 0:
        depth = height * 0.05
        draw.ellipse((centre - puddle, table + depth * 0.2, centre + puddle, table + depth * 2.2), fill=WATER)
    if side > 6:
        draw.rounded_rectangle((centre - side / 2, table - side + 4, centre + side / 2, table + 4), radius=side * 0.18,
                               fill=ICE, outline=ICE_EDGE, width=3)
        draw.line((centre - side * 0.28, table - side * 0.7, centre - side * 0.28, table - side * 0.3),
                  fill=(255, 255, 255), width=3)


def clip(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], melted: float) -> None:
    """A short video: three frames stacked, the front one showing the scene."""
    x0, y0, x1, y1 = box
    for offset in (16, 8):
        draw.rounded_rectangle((x0 + offset, y0 - offset, x1 + offset, y1 - offset), radius=8, fill=PANEL,
                               outline=(90, 96, 110), width=2)
    scene(draw, box, melted)


def arrow(draw: ImageDraw.ImageDraw, start: tuple[int, int], end: tuple[int, int], colour, width: int = 8) -> None:
    (x0, y0), (x1, y1) = start, end
    length = max(1.0, ((x1 - x0) ** 2 + (y1 - y0) ** 2) ** 0.5)
    ux, uy = (x1 - x0) / length, (y1 - y0) / length
    head = 22
    base = (x1 - ux * head, y1 - uy * head)
    draw.line((x0, y0, *base), fill=colour, width=width)
    draw.polygon([(x1, y1), (base[0] - uy * head * 0.6, base[1] + ux * head * 0.6),
                  (base[0] + uy * head * 0.6, base[1] - ux * head * 0.6)], fill=colour)


def chip(draw: ImageDraw.ImageDraw, centre: tuple[int, int], text: str, colour, size: int = 22) -> None:
    """A label in a rounded box, centred on `centre`."""
    face = font(size)
    left, top, right, bottom = draw.textbbox((0, 0), text, font=face)
    w, h = right - left, bottom - top
    cx, cy = centre
    draw.rounded_rectangle((cx - w / 2 - 12, cy - h / 2 - 9, cx + w / 2 + 12, cy + h / 2 + 9), radius=10,
                           fill=colour)
    draw.text((cx - w / 2 - left, cy - h / 2 - top), text, font=face, fill=BACKGROUND)


def tick(draw: ImageDraw.ImageDraw, centre: tuple[int, int], size: int, colour) -> None:
    cx, cy = centre
    draw.line((cx - size, cy, cx - size * 0.3, cy + size * 0.7, cx + size, cy - size * 0.8), fill=colour,
              width=max(3, size // 3), joint="curve")


def bars(draw: ImageDraw.ImageDraw, x: int, y: int, values: list[float], colour, width: int = 120) -> None:
    """Horizontal score bars, one per value in 0..1."""
    for index, value in enumerate(values):
        top = y + index * 20
        draw.rounded_rectangle((x, top, x + width, top + 11), radius=5, fill=PANEL)
        draw.rounded_rectangle((x, top, x + max(12, int(width * value)), top + 11), radius=5, fill=colour)


def comfy_node(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], title: str, colour) -> None:
    """A ComfyUI node as the graph shows it: a title bar over a body with a few widget rows."""
    x0, y0, x1, y1 = box
    draw.rounded_rectangle(box, radius=10, fill=(53, 57, 68), outline=colour, width=3)
    draw.rounded_rectangle((x0, y0, x1, y0 + 34), radius=10, fill=colour)
    draw.rectangle((x0, y0 + 20, x1, y0 + 34), fill=colour)
    face = font(21)
    draw.text((x0 + 12, y0 + 6), title, font=face, fill=BACKGROUND)
    for row in range(3):
        top = y0 + 46 + row * 22
        if top + 14 < y1:
            draw.rounded_rectangle((x0 + 10, top, x1 - 10, top + 14), radius=7, fill=(74, 79, 93))


# --- one picture per template ------------------------------------------------------------------------

def instruction(draw, lines: tuple[str, ...] = ("\u201cWhat will the ice cube look like", "after an hour in the sun?\u201d")) -> None:
    """The workflows' instruction, centred over the picture."""
    face = font(21)
    for index, line in enumerate(lines):
        left, _, right, _ = draw.textbbox((0, 0), line, font=face)
        draw.text(((SIZE - (right - left)) / 2 - left, 20 + index * 28), line, font=face, fill=MUTED)


def edit_picture(draw, colour, middle: Callable | None = None) -> None:
    """The instruction, then before -> after, with an optional drawing at the arrow."""
    instruction(draw)
    clip(draw, (28, 150, 208, 270), 0.0)
    clip(draw, (292, 150, 472, 270), 1.0)
    arrow(draw, (214, 210), (286, 210), colour)
    if middle is not None:
        middle(draw, colour)


def release_middle(draw, colour) -> None:
    chip(draw, (250, 320), "release settings", colour, size=21)


def ksampler_middle(draw, colour) -> None:
    comfy_node(draw, (160, 286, 340, 352), "KSampler", colour)


def reasoning_middle(draw, colour) -> None:
    draw.rounded_rectangle((130, 86, 380, 124), radius=14, fill=(245, 245, 250), outline=colour, width=3)
    draw.text((146, 93), "VLM: it melts to a puddle", font=font(20), fill=BACKGROUND)
    for cx, cy, r in ((250, 136, 6), (252, 150, 4)):
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=(245, 245, 250), outline=colour, width=2)


def critic_middle(draw, colour) -> None:
    draw.rounded_rectangle((150, 282, 362, 352), radius=12, fill=PANEL, outline=colour, width=3)
    tick(draw, (186, 318), 18, colour)
    draw.text((216, 288), "P(Yes) 0.87", font=font(21), fill=TEXT)
    bars(draw, 218, 316, [0.9, 0.8], colour, width=126)


def best_of_picture(draw, colour) -> None:
    clip(draw, (24, 146, 144, 226), 0.0)
    arrow(draw, (162, 186), (212, 186), colour)
    scores = [0.55, 0.92, 0.4, 0.7]
    for index, (score, melted) in enumerate(zip(scores, (0.6, 1.0, 0.35, 0.8), strict=True)):
        x = 228 + (index % 2) * 138
        y = 40 + (index // 2) * 150
        best = score == max(scores)
        scene(draw, (x, y, x + 124, y + 84), melted)
        if best:
            draw.rounded_rectangle((x - 6, y - 6, x + 130, y + 90), radius=12, outline=GOLD, width=5)
        bars(draw, x, y + 98, [score], GOLD if best else colour, width=124)
    chip(draw, (436, 332), "best", GOLD, size=20)


def finetune_picture(draw, colour) -> None:
    for row in range(3):  # training triplets: source -> target, with an instruction
        y = 32 + row * 96
        scene(draw, (24, y, 104, y + 56), 0.0)
        arrow(draw, (110, y + 28), (142, y + 28), MUTED, width=4)
        scene(draw, (148, y, 228, y + 56), 1.0)
    draw.rounded_rectangle((252, 32, 488, 244), radius=12, fill=PANEL)
    draw.line((270, 50, 270, 226, 472, 226), fill=MUTED, width=2)
    points = [(270 + i * 10, 60 + 150 * (1 - 0.88 ** i) + (6 if i % 3 == 1 else 0)) for i in range(21)]
    draw.line(points, fill=colour, width=4, joint="curve")
    draw.text((300, 48), "loss + reason", font=font(20), fill=TEXT)
    chip(draw, (370, 290), "DiT + connector", colour, size=21)


def long_clip_middle(draw, colour) -> None:
    for index in range(4):  # overlapping windows along the clip
        left = 40 + index * 104
        draw.rounded_rectangle((left, 290 + (index % 2) * 22, left + 130, 310 + (index % 2) * 22), radius=8,
                               outline=colour, width=3)
    chip(draw, (250, 346), "windows of 5 latent frames", colour, size=19)


def few_step_middle(draw, colour) -> None:
    for index in range(4):  # four steps instead of forty
        left = 150 + index * 52
        draw.rounded_rectangle((left, 280, left + 40, 306), radius=8, fill=colour)
    chip(draw, (250, 346), "4 steps + LoRA", colour, size=19)


def caption(draw, lines: tuple[str, str, str], colour) -> None:
    """What it does (white), what it needs and how long it takes (grey), under the picture."""
    draw.rectangle((0, 362, SIZE, SIZE), fill=PANEL)
    draw.rectangle((0, 362, SIZE, 366), fill=colour)
    draw.text((24, 380), lines[0], font=font(28), fill=TEXT, stroke_width=1, stroke_fill=TEXT)
    draw.text((24, 424), lines[1], font=font(23), fill=MUTED)
    draw.text((24, 460), lines[2], font=font(23), fill=MUTED)


def times(frames: int, candidates: int = 1) -> str:
    """'GPU: minutes · CPU: ~14 h' from build.py's measured-and-scaled CPU figure (40 steps, 640x352)."""
    from build import cpu_seconds, hours

    gpu = "minutes" if candidates == 1 else f"{candidates}x one edit"
    return f"GPU: {gpu} · CPU: ~{hours(candidates * cpu_seconds(frames, 640, 352, 40))}"


def few_step_hours() -> str:
    from build import cpu_seconds, hours

    return hours(cpu_seconds(17, 640, 352, 4, passes=1))  # 4 steps, guidance off: one DiT call each


FIVE_MODELS = "Needs: Wan 1.3B, umT5, a VLM, connector"
# template file name -> (accent colour, drawing, caption lines)
PICTURES: dict[str, tuple] = {
    "ReViSE release edit": ((122, 162, 247), lambda d, c: edit_picture(d, c, release_middle),
                            ("The ReViSE release's own edit", "Needs: models/revise/revise_ckpt", times(17))),
    "ReViSE edit via KSampler": ((158, 206, 106), lambda d, c: edit_picture(d, c, ksampler_middle),
                                 ("Same edit, ComfyUI's KSampler", "Needs: revise_ckpt + converted DiT",
                                  times(17))),
    "ReViSE reasoning edit": ((187, 154, 247), lambda d, c: edit_picture(d, c, reasoning_middle),
                              ("The VLM reasons, the DiT edits", FIVE_MODELS, times(33))),
    "ReViSE edit and SelfCritic": ((224, 175, 104), lambda d, c: edit_picture(d, c, critic_middle),
                                   ("Edit, then its own VLM scores it", FIVE_MODELS, times(33))),
    "ReViSE best-of-N edit": ((247, 118, 142), best_of_picture,
                              ("4 edits, the critic keeps the best", FIVE_MODELS, times(33, candidates=4))),
    "ReViSE long clip edit": ((236, 120, 96), lambda d, c: edit_picture(d, c, long_clip_middle),
                              ("A long clip in temporal windows", "Needs: models/revise/revise_ckpt", times(81))),
    "ReViSE 4-step LoRA edit": ((115, 218, 202), lambda d, c: edit_picture(d, c, few_step_middle),
                                ("4 steps with a step-distilled LoRA", "Needs: revise_ckpt + a Wan 1.3B LoRA",
                                 f"GPU: seconds · CPU: ~{few_step_hours()}")),
    "ReViSE USO fine-tune": ((42, 195, 222), finetune_picture,
                             ("Fine-tune on your own triplets", "Needs: a manifest of video triplets",
                              "GPU: hours · CPU: not practical")),
}


def draw(name: str) -> Image.Image:
    colour, picture, lines = PICTURES[name]
    image = Image.new("RGB", (SIZE, SIZE), BACKGROUND)
    canvas = ImageDraw.Draw(image)
    picture(canvas, colour)
    caption(canvas, lines, colour)
    return image


def main() -> int:
    for name in PICTURES:
        path = ROOT / f"{name}.jpg"
        draw(name).save(path, "JPEG", quality=90, optimize=True)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
