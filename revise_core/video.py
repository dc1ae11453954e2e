"""Video files <-> float frames, and the frame-count / size policy the models need (PyAV, torch).

Frames travel as ComfyUI does it: a float tensor [T, H, W, 3] in 0..1. Wan needs 4k+1 frames and
sides that are multiples of 16 (VAE x8, patch x2); the connector's visual adapter needs multiples of 32
(its 4x4 latent patch). `conform` makes a clip fit explicitly, with the policy named by the caller:
nothing is stretched unless `resize="stretch"` is asked for.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)

FRAME_POLICIES = ("trim", "pad")
RESIZE_POLICIES = ("crop", "pad", "stretch", "official")
# Upper bounds of a clip (the nodes' widgets and every command line): 4096 px a side is beyond any Wan
# checkpoint's training size, and 1025 frames (64 s at 16 fps) beyond what one clip's attention holds; a typo
# such as 100000 is refused in one line instead of trying to allocate a terabyte.
MAX_SIDE = 4096
# Sides of an edited clip are multiples of this (the connector's 4x4 patch over the VAE's x8 latents).
SIZE_MULTIPLE = 32
MAX_FRAMES = 1025
# Edited in temporal windows, a clip's length is bounded by the host's memory for its latents only: 16,385 frames
# (17 min at 16 fps) still refuses a typo.
MAX_WINDOWED_FRAMES = 16385


def frame_limit(windowed: bool) -> int:
    """The most frames one edit may ask for: MAX_FRAMES in one pass, MAX_WINDOWED_FRAMES in temporal windows."""
    return MAX_WINDOWED_FRAMES if windowed else MAX_FRAMES

DEFAULT_FPS = Fraction(16)
# The two ways frames are preprocessed where a release fixes the arithmetic (the "official" resize here, SigLIP's
# pixels in vlm/vila.py). "exact": the release's own, PIL on 8-bit frames, bit for bit; "differentiable": the same
# geometry in torch on floats, for frames that carry a gradient (PIL cannot). `preprocessing_for` picks one.
PREPROCESSING = ("exact", "differentiable")
# How float frames become 8-bit pixels when written: "round" (nearest, the default) or "truncate" (the ReViSE
# release's `(x * 255).type(torch.uint8)` in wan/utils/utils.py cache_video).
QUANTIZATIONS = ("round", "truncate")


class VideoError(ValueError):
    """A video that cannot be used: unreadable, empty, too short or of the wrong shape."""


@dataclass
class VideoClip:
    """Frames [T, H, W, 3] float32 in 0..1 and their frame rate."""

    frames: torch.Tensor
    fps: Fraction = DEFAULT_FPS

    def __post_init__(self) -> None:
        check_frames(self.frames, what="video clip")

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def size(self) -> tuple[int, int]:
        """(height, width)."""
        return int(self.frames.shape[1]), int(self.frames.shape[2])


def check_frames(frames: torch.Tensor, *, what: str = "frames", min_frames: int = 1) -> None:
    """Raise VideoError unless `frames` is [T, H, W, 3] with at least `min_frames` frames."""
    if not isinstance(frames, torch.Tensor):
        raise VideoError(f"{what}: expected a tensor [T, H, W, 3], got {type(frames).__name__}")
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise VideoError(f"{what}: expected frames [T, H, W, 3] (RGB), got shape {tuple(frames.shape)}")
    if frames.shape[0] < min_frames:
        raise VideoError(f"{what}: has {frames.shape[0]} frames, at least {min_frames} are needed")


def read_video(path: str | os.PathLike, *, max_frames: int | None = None, stride: int = 1,
               size: tuple[int, int] | None = None, resize: str = "crop",
               indices: list[int] | None = None) -> VideoClip:
    """Decode a video file (any container PyAV/FFmpeg reads) into float frames [T, H, W, 3] in 0..1.

    Only what is asked for is kept, while decoding: every `stride`-th frame, at most `max_frames` (decoding
    stops there), each frame fitted to `size` = (height, width) by the `resize` policy as soon as it is
    decoded. Peak memory is the kept frames at their final size plus one decoded frame, not the whole clip
    in float (a 300-frame 720p clip is 3.3 GB as float). Frames are turned upright by the rotation in the
    stream's display matrix (phone videos). A variable frame rate is reported with a warning: frames are
    used in decode order, at the average rate. `indices`: keep exactly these frames (decode order; repeats
    allowed), instead of a stride; the clip's fps is then the file's. `FrameStream` yields the same frames one
    at a time, for clips too long to hold.
    """
    stream = FrameStream(path, max_frames=max_frames, stride=stride, size=size, resize=resize, indices=indices)
    frames = list(stream)
    if not frames:
        raise VideoError(f"{path}: the video stream has no decodable frames")
    if indices is not None and len(frames) != len(indices):
        raise VideoError(f"{path}: frames {sorted(set(indices))} asked for, the video has fewer")
    return VideoClip(torch.stack(frames), stream.fps)


class FrameStream:
    """The frames of a video file that an edit keeps, decoded and fitted one at a time ([H, W, 3] float32 in 0..1):
    after the first `skip`, every `stride`-th (or exactly `indices`), at most `max_frames`, each fitted to `size`
    by `resize`. `fps` (the kept frames' rate) is set once iteration starts. Memory: one decoded frame."""

    def __init__(self, path: str | os.PathLike, *, max_frames: int | None = None, stride: int = 1,
                 size: tuple[int, int] | None = None, resize: str = "crop", indices: list[int] | None = None,
                 skip: int = 0) -> None:
        if stride < 1:
            raise VideoError(f"stride must be >= 1, got {stride}")
        if max_frames is not None and max_frames < 1:
            raise VideoError(f"max_frames must be >= 1, got {max_frames}")
        if size is not None and resize not in RESIZE_POLICIES:
            raise ValueError(f"resize policy must be one of {RESIZE_POLICIES}, got '{resize}'")
        if indices is not None and (stride != 1 or skip):
            raise ValueError("FrameStream takes either indices or a skip / stride")
        self.path, self.max_frames, self.stride, self.size, self.resize = path, max_frames, stride, size, resize
        self.indices, self.skip = indices, skip
        self.fps = DEFAULT_FPS

    def __iter__(self) -> Iterator[torch.Tensor]:
        wanted = None if self.indices is None else {index: self.indices.count(index) for index in self.indices}
        kept = 0
        with _decoder(self.path) as decoded:
            self.fps = Fraction(decoded.fps) if wanted is not None else Fraction(decoded.fps) / self.stride
            for index, frame in enumerate(decoded):
                if wanted is not None:
                    if index not in wanted:
                        if index > max(wanted):
                            break
                        continue
                elif index < self.skip or (index - self.skip) % self.stride:
                    continue
                pixels = torch.from_numpy(_upright(frame)).float().div_(255.0)
                if self.size is not None:
                    pixels = resize_frames(pixels[None], self.size[0], self.size[1], self.resize)[0]
                for _ in range(wanted[index] if wanted is not None else 1):
                    yield pixels
                    kept += 1
                if self.max_frames is not None and kept >= self.max_frames:
                    break


def count_frames(path: str | os.PathLike) -> int:
    """How many frames really decode (every frame is decoded, none converted); VideoError for a damaged or
    truncated file. Used to validate manifests before training."""
    count = 0
    with _decoder(path) as decoded:
        for _ in decoded:
            count += 1
    if not count:
        raise VideoError(f"{path}: the video stream has no decodable frames")
    return count


class _decoder:
    """Iterate the decoded frames of a file's first video stream, with one clear sentence for every way a
    file can be unusable (missing, a folder, no video stream, unreadable, truncated)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        if self.path.is_dir():
            raise VideoError(f"{self.path} is a folder, not a video file")
        if not self.path.is_file():
            raise VideoError(f"video file not found: {self.path}")
        self.fps = DEFAULT_FPS
        self.count = 0
        self.complete = False

    def __enter__(self):
        import av

        try:
            self.container = av.open(str(self.path))
        except av.error.FFmpegError as error:
            raise VideoError(f"{self.path}: unreadable video, not a file FFmpeg can open ({_ffmpeg_reason(error)})") from error
        if not self.container.streams.video:
            kinds = sorted({stream.type for stream in self.container.streams})
            self.container.close()
            raise VideoError(f"{self.path}: the file has no video stream (it holds {', '.join(kinds) or 'nothing'})")
        self.stream = self.container.streams.video[0]
        self.fps = self.stream.average_rate or self.stream.guessed_rate or DEFAULT_FPS
        return self

    def __iter__(self):
        import av

        deltas: list[int] = []
        previous = None
        try:
            for frame in self.container.decode(self.stream):
                if frame.pts is not None and previous is not None:
                    deltas.append(frame.pts - previous)
                previous = frame.pts
                self.count += 1
                yield frame
        except av.error.FFmpegError as error:
            if self.count:
                raise VideoError(f"{self.path}: truncated or damaged, decoding stopped after {self.count} frames "
                                 f"({_ffmpeg_reason(error)})") from error
            raise VideoError(f"{self.path}: unreadable video ({_ffmpeg_reason(error)})") from error
        self.complete = True
        expected = int(self.stream.frames or 0)
        if expected and self.count < expected:
            raise VideoError(f"{self.path}: truncated, its header lists {expected} frames but only {self.count} "
                             "decode")
        steps = [delta for delta in deltas if delta > 0]  # encoders may repeat the last timestamp
        if len(steps) > 2 and max(steps) > 1.5 * min(steps):
            logger.warning("%s: variable frame rate (frame intervals from %s to %s); frames are used in decode "
                           "order at the average rate of %.3g fps", self.path, min(steps), max(steps),
                           float(self.fps))

    def __exit__(self, *exc: object) -> None:
        self.container.close()


def _upright(frame) -> np.ndarray:
    """RGB array of a decoded frame, rotated as its display matrix says (counter-clockwise degrees)."""
    pixels = frame.to_ndarray(format="rgb24")
    quarter_turns = round(float(getattr(frame, "rotation", 0) or 0) / 90) % 4
    return np.ascontiguousarray(np.rot90(pixels, quarter_turns)) if quarter_turns else pixels


def _ffmpeg_reason(error: Exception) -> str:
    return getattr(error, "strerror", None) or str(error).splitlines()[0]


def write_video(path: str | os.PathLike, frames: torch.Tensor, fps: Fraction | float = DEFAULT_FPS, *, crf: int = 19,
                quantization: str = "round") -> Path:
    """Write frames [T, H, W, 3] in 0..1 as an H.264 mp4 (yuv420p, so sides are made even); `quantization`
    (QUANTIZATIONS) says how floats become 8-bit pixels. Atomic, as `VideoWriter`."""
    with VideoWriter(path, fps, crf=crf, quantization=quantization) as writer:
        writer.write(frames)
    return Path(path)


class VideoWriter:
    """An H.264 mp4 written a chunk of frames [n, H, W, 3] in 0..1 at a time (`write`), for clips too long to hold.

    Atomic: the video is written under a temporary name in the same folder and renamed over `path` only when the
    block ends without an error, so an interrupted or failed write (a full disk) never leaves a truncated file
    under the final name, nor destroys a file that was there. The temporary name keeps the suffix: PyAV picks
    the muxer from it. Sides are made even (yuv420p)."""

    def __init__(self, path: str | os.PathLike, fps: Fraction | float = DEFAULT_FPS, *, crf: int = 19,
                 quantization: str = "round") -> None:
        if quantization not in QUANTIZATIONS:
            raise ValueError(f"quantization must be one of {QUANTIZATIONS}, got '{quantization}'")
        self.path, self.crf, self.quantization = Path(path), crf, quantization
        self.rate = Fraction(fps).limit_denominator(1001)
        self.temporary = self.path.with_name(f".{self.path.stem}.{os.getpid()}.partial{self.path.suffix}")
        self.frames_written = 0
        self.container = self.stream = None

    def __enter__(self) -> VideoWriter:
        import av

        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.container = av.open(str(self.temporary), mode="w")
        return self

    def write(self, frames: torch.Tensor) -> None:
        import av

        check_frames(frames, what="frames to write")
        pixels = quantize(frames, self.quantization).cpu().numpy()
        height, width = pixels.shape[1] // 2 * 2, pixels.shape[2] // 2 * 2  # yuv420p: even sides
        if self.stream is None:
            self.stream = self.container.add_stream("libx264" if "libx264" in av.codecs_available else "h264",
                                                    rate=self.rate)
            self.stream.width, self.stream.height, self.stream.pix_fmt = width, height, "yuv420p"
            self.stream.options = {"crf": str(self.crf)}
        if (height, width) != (self.stream.height, self.stream.width):
            raise VideoError(f"{self.path}: frames of {pixels.shape[1]}x{pixels.shape[2]} written to a video of "
                             f"{self.stream.height}x{self.stream.width}")
        for array in pixels:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(array[:height, :width]), format="rgb24")
            self.container.mux(self.stream.encode(frame))
        self.frames_written += pixels.shape[0]

    def __exit__(self, exc_type, *exc: object) -> None:
        try:
            if exc_type is None:
                if self.stream is None:
                    raise VideoError(f"{self.path}: no frames were written")
                self.container.mux(self.stream.encode())
            self.container.close()
            if exc_type is None:
                os.replace(self.temporary, self.path)
        finally:
            self.temporary.unlink(missing_ok=True)


def quantize(frames: torch.Tensor, quantization: str = "round") -> torch.Tensor:
    """Float frames in 0..1 -> uint8 by the named rule (QUANTIZATIONS); values outside 0..1 are clamped first."""
    if quantization not in QUANTIZATIONS:
        raise ValueError(f"quantization must be one of {QUANTIZATIONS}, got '{quantization}'")
    scaled = frames.detach().float().clamp(0, 1) * 255
    return (scaled.round() if quantization == "round" else scaled).to(torch.uint8)


def preprocessing_for(*frames: torch.Tensor) -> str:
    """The one rule for PREPROCESSING: "differentiable" when any of `frames` carries a gradient (only the
    critic's view of a one-step estimate in training does), "exact" for everything else, which is data."""
    grad = torch.is_grad_enabled() and any(isinstance(f, torch.Tensor) and f.requires_grad for f in frames)
    return "differentiable" if grad else "exact"


def check_preprocessing(preprocessing: str, *frames: torch.Tensor) -> str:
    """`preprocessing` validated against the frames it is used on ("exact" cannot carry a gradient)."""
    if preprocessing not in PREPROCESSING:
        raise ValueError(f"preprocessing must be one of {PREPROCESSING}, got '{preprocessing}'")
    if preprocessing == "exact" and preprocessing_for(*frames) == "differentiable":
        raise ValueError("exact preprocessing works on 8-bit pixels (PIL) and cannot carry the gradient these frames "
                         "need; use preprocessing 'differentiable'")
    return preprocessing


def to_pil_images(images: torch.Tensor) -> list:
    """Images [N, 3, H, W] in 0..1 -> 8-bit PIL images, rounded to the nearest level: exact for frames decoded
    from 8-bit video (k / 255 in float32 rounds back to k), the release's own input."""
    from PIL import Image

    pixels = quantize(images.permute(0, 2, 3, 1)).cpu().numpy()
    return [Image.fromarray(np.ascontiguousarray(array)) for array in pixels]


def from_pil_images(images: list) -> torch.Tensor:
    """8-bit PIL images -> [N, 3, H, W] float32 in 0..1 (torchvision's ToTensor: uint8 / 255 in float32)."""
    arrays = np.stack([np.asarray(image, dtype=np.uint8) for image in images])
    return torch.from_numpy(arrays).permute(0, 3, 1, 2).float().div(255)


def valid_frame_count(num_frames: int, policy: str = "trim") -> int:
    """The 4k+1 frame count Wan uses: the largest one <= num_frames ("trim") or smallest >= ("pad")."""
    if policy not in FRAME_POLICIES:
        raise ValueError(f"frame policy must be one of {FRAME_POLICIES}, got '{policy}'")
    if num_frames < 1:
        raise VideoError(f"need at least 1 frame, got {num_frames}")
    if policy == "trim":
        return (num_frames - 1) // 4 * 4 + 1
    return math.ceil((num_frames - 1) / 4) * 4 + 1


def latent_frames(num_frames: int) -> int:
    """Latent frames of the causal Wan VAE for 4k+1 pixel frames (the one place this arithmetic lives)."""
    if (num_frames - 1) % 4:
        raise VideoError(f"Wan needs 4k+1 frames, got {num_frames}")
    return (num_frames - 1) // 4 + 1


def check_clip_shape(num_frames: int | None, height: int | None, width: int | None, *,
                     multiple: int = SIZE_MULTIPLE, max_frames: int = MAX_FRAMES) -> None:
    """A requested clip shape (None = from the source): 4k+1 frames up to `max_frames` (MAX_FRAMES, or
    MAX_WINDOWED_FRAMES for an edit in temporal windows), sides multiples of `multiple` up to MAX_SIDE. Raises
    VideoError naming the value."""
    if num_frames is not None and (not isinstance(num_frames, int) or num_frames < 1 or (num_frames - 1) % 4
                                   or num_frames > max_frames):
        raise VideoError(f"num_frames must be 4k+1 between 1 and {max_frames} (e.g. 17, 33, 81), got {num_frames}")
    for name, side in (("height", height), ("width", width)):
        if side is not None and (not isinstance(side, int) or side < multiple or side % multiple or side > MAX_SIDE):
            raise VideoError(f"{name} must be one of the multiples of {multiple} from {multiple} to {MAX_SIDE}, "
                             f"got {side}")


def skip_leading(frames: torch.Tensor, count: int) -> torch.Tensor:
    """The frames after the first `count` (a preset's skipped frames); VideoError when none would be left."""
    if count >= frames.shape[0]:
        raise VideoError(f"the video has {frames.shape[0]} frames, all skipped by skip_frames={count}")
    return frames[count:]


def target_frame_count(count: int, num_frames: int | None, frame_policy: str = "trim", *, min_frames: int = 5) -> int:
    """How many frames `conform` makes of `count` source frames: `num_frames` (4k+1; a shorter source is padded
    only with frame_policy "pad"), else `count` made 4k+1. VideoError naming the counts when it cannot."""
    if num_frames is None:
        target_count = valid_frame_count(count, frame_policy)
    else:
        if (num_frames - 1) % 4 or num_frames < 1:
            raise VideoError(f"num_frames must be 4k+1 (e.g. 17, 33, 81), got {num_frames}")
        target_count = num_frames
        if count < num_frames and frame_policy != "pad":
            raise VideoError(
                f"source video has {count} frames but {num_frames} were asked for; use a longer clip, fewer "
                "frames, or frame_policy='pad' to repeat the last frame"
            )
    if target_count < min_frames:
        raise VideoError(f"source video has {count} frames; at least {min_frames} are needed")
    return target_count


def conform(
    frames: torch.Tensor,
    *,
    num_frames: int | None = None,
    min_frames: int = 5,
    frame_policy: str = "trim",
    height: int | None = None,
    width: int | None = None,
    multiple: int = SIZE_MULTIPLE,
    resize: str = "crop",
) -> torch.Tensor:
    """Fit frames [T, H, W, 3] to a valid Wan clip.

    - Frames: `num_frames` if given (must be 4k+1; longer clips are cut, shorter ones padded by
      repeating the last frame only when frame_policy="pad"), else the clip's own count made 4k+1.
    - Size: target (height, width) default to the clip's size rounded down to `multiple`. "crop" scales
      to cover and crops the centre (no distortion), "pad" scales to fit and pads with black, "stretch"
      resizes to the target ignoring the aspect ratio, "official" crops the centre to the target aspect
      then resizes (bilinear), as the ReViSE release does.
    """
    check_frames(frames, what="source video", min_frames=min_frames)
    if resize not in RESIZE_POLICIES:
        raise ValueError(f"resize policy must be one of {RESIZE_POLICIES}, got '{resize}'")
    check_clip_shape(num_frames, height, width, multiple=multiple)
    count = frames.shape[0]
    target_count = target_frame_count(count, num_frames, frame_policy, min_frames=min_frames)
    if target_count <= count:
        frames = frames[:target_count]
    else:
        frames = torch.cat([frames, frames[-1:].expand(target_count - count, -1, -1, -1)])

    src_h, src_w = frames.shape[1], frames.shape[2]
    target_h = height if height is not None else src_h // multiple * multiple
    target_w = width if width is not None else src_w // multiple * multiple
    if target_h < multiple or target_w < multiple or target_h % multiple or target_w % multiple:
        raise VideoError(
            f"target size {target_h}x{target_w} (HxW) must be positive multiples of {multiple}; the source is "
            f"{src_h}x{src_w}"
        )
    return resize_frames(frames, target_h, target_w, resize)


def resize_frames(frames: torch.Tensor, height: int, width: int, policy: str = "crop", *,
                  preprocessing: str | None = None) -> torch.Tensor:
    """Frames [T, H, W, 3] to (height, width) by the named policy (crop | pad | stretch | official).

    "official" is the ReViSE release's arithmetic, in the `preprocessing` mode (PREPROCESSING; default:
    `preprocessing_for(frames)`, exact for data). crop / pad / stretch are this project's own fits, in torch."""
    if policy not in RESIZE_POLICIES:
        raise ValueError(f"resize policy must be one of {RESIZE_POLICIES}, got '{policy}'")
    chw = frames.permute(0, 3, 1, 2)
    if policy == "official":  # exact even at the target size: the release's frames are 8-bit pixels
        mode = check_preprocessing(preprocessing or preprocessing_for(frames), frames)
        return _official_resize(chw, height, width, mode).permute(0, 2, 3, 1).contiguous()
    if (frames.shape[1], frames.shape[2]) == (height, width):
        return frames.contiguous()
    src_h, src_w = chw.shape[-2:]
    if policy == "stretch":
        out = _interpolate(chw, height, width)
    else:
        scale = max(height / src_h, width / src_w) if policy == "crop" else min(height / src_h, width / src_w)
        scaled_h, scaled_w = max(1, round(src_h * scale)), max(1, round(src_w * scale))
        scaled = _interpolate(chw, scaled_h, scaled_w)
        if policy == "crop":
            top, left = (scaled_h - height) // 2, (scaled_w - width) // 2
            out = scaled[..., top:top + height, left:left + width]
        else:
            out = chw.new_zeros(chw.shape[0], 3, height, width)
            top, left = (height - scaled_h) // 2, (width - scaled_w) // 2
            out[..., top:top + scaled_h, left:left + scaled_w] = scaled
    return out.permute(0, 2, 3, 1).clamp(0, 1).contiguous()


def official_crop_box(src_h: int, src_w: int, height: int, width: int) -> tuple[int, int, int, int]:
    """(top, left, crop_h, crop_w) of the ReViSE release's centre crop to the target aspect
    (`generative.py: transform_image_to_tensor`, then torchvision's CenterCrop rounding)."""
    ratio = float(width) / float(height)
    crop_h, crop_w = (int(float(src_w) / ratio), src_w) if src_w < src_h * ratio else (src_h, int(float(src_h) * ratio))
    top, left = int(round((src_h - crop_h) / 2.0)), int(round((src_w - crop_w) / 2.0))
    return top, left, crop_h, crop_w


def _official_resize(chw: torch.Tensor, height: int, width: int, preprocessing: str) -> torch.Tensor:
    """The ReViSE release's frame preprocessing (`generative.py: transform_image_to_tensor`): the centre crop of
    `official_crop_box`, then torchvision's Resize of a PIL image, i.e. PIL's bilinear (antialiased when
    shrinking) on 8-bit frames, then ToTensor (uint8 / 255).

    exact: that, through PIL, bit for bit. differentiable: the same crop, then torch's antialiased bilinear on
    floats, which follows PIL's filter without its 8-bit fixed-point arithmetic (docs/models.md gives the
    measured difference)."""
    top, left, crop_h, crop_w = official_crop_box(chw.shape[-2], chw.shape[-1], height, width)
    if preprocessing == "exact":
        from PIL import Image

        images = [image.crop((left, top, left + crop_w, top + crop_h)) for image in to_pil_images(chw)]
        if (crop_h, crop_w) != (height, width):
            images = [image.resize((width, height), Image.BILINEAR) for image in images]
        return from_pil_images(images).to(chw.device)
    cropped = chw[..., top:top + crop_h, left:left + crop_w]
    if (crop_h, crop_w) == (height, width):
        return cropped
    out = F.interpolate(cropped, size=(height, width), mode="bilinear", align_corners=False, antialias=True)
    return out.clamp(0, 1)


def _interpolate(chw: torch.Tensor, height: int, width: int) -> torch.Tensor:
    # Antialiased bicubic: what torchvision's resize does on float tensors, without needing torchvision.
    return F.interpolate(chw, size=(height, width), mode="bicubic", align_corners=False, antialias=True)


def to_model_space(frames: torch.Tensor) -> torch.Tensor:
    """[T, H, W, 3] in 0..1 -> [1, 3, T, H, W] in -1..1 (the VAE's input)."""
    return (frames.permute(3, 0, 1, 2).unsqueeze(0) * 2.0 - 1.0).contiguous()


def from_model_space(video: torch.Tensor) -> torch.Tensor:
    """[1, 3, T, H, W] in -1..1 -> [T, H, W, 3] in 0..1 (clamped)."""
    if video.ndim != 5 or video.shape[0] != 1:
        raise ValueError(f"expected a video [1, 3, T, H, W], got shape {tuple(video.shape)}")
    return ((video[0].permute(1, 2, 3, 0) + 1.0) / 2.0).clamp(0, 1)


def synthetic_clip(num_frames: int = 9, height: int = 64, width: int = 64, seed: int = 0) -> VideoClip:
    """A moving coloured square on a gradient: a deterministic source video for demos and tests."""
    generator = torch.Generator().manual_seed(seed)
    ys = torch.linspace(0, 1, height).view(height, 1).expand(height, width)
    xs = torch.linspace(0, 1, width).view(1, width).expand(height, width)
    background = torch.stack([0.2 + 0.3 * xs, 0.3 + 0.2 * ys, 0.5 - 0.2 * xs], dim=-1)
    color = torch.rand(3, generator=generator) * 0.6 + 0.4
    side = max(4, height // 4)
    frames = []
    for t in range(num_frames):
        frame = background.clone()
        top = (height - side) // 2
        left = int((width - side) * t / max(1, num_frames - 1))
        frame[top:top + side, left:left + side] = color
        frames.append(frame)
    return VideoClip(torch.stack(frames), DEFAULT_FPS)
