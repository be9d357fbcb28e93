"""Image folders ``<root>/<artist>/<image>`` -> an in-memory :class:`ArtworkSet`.

Decoding problems never reach torch: an unreadable, corrupt, empty or oversized (decompression
bomb, see :func:`decode_image`) image is skipped with a logged warning and counted in
:attr:`LoadReport.skipped`; a folder that is missing, holds no
artist folders, or leaves fewer than two usable artists raises :class:`DataError`.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import struct
from collections.abc import Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, BinaryIO

import numpy as np

from fedstyle_secure.errors import DataError
from fedstyle_secure.files import open_regular_file

log = logging.getLogger(__name__)

IMAGE_SUFFIXES: frozenset[str] = frozenset({".jpg", ".jpeg", ".png", ".webp"})
DECODED_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "WEBP")  # PIL format names of IMAGE_SUFFIXES
DEFAULT_MAX_PIXELS = 89_478_485  # PIL's own Image.MAX_IMAGE_PIXELS default (~ 0.25 GiB as RGB)
MAX_ASPECT_RATIO = 100
#: Fewest pixels on an image's shorter side: below it the resize to the model's size (224) is a blur
#: of a few pixels, holding no brushwork to read a style from (an icon, a 1x1 tracking pixel).
MIN_IMAGE_SIDE = 16
MAX_JPEG_SCANS = 64
"""The most scans (SOS markers) a JPEG may have: baseline files have 1-3, progressive encoders
write about 10 (mozjpeg up to ~20).  libjpeg walks every block of the image once per scan, so a
small file repeating one tiny scan thousands of times (pixels within :data:`DEFAULT_MAX_PIXELS`)
held a core for seconds per 100 KB (red-team review, 2026-11-30: 4.4 s for 132 KB; ~140 s for a
4 MiB query)."""
MAX_JPEG_HEADER_SEGMENTS = 256
"""The most marker segments a JPEG may have before its first scan: ordinary files have 5-20 (APPn,
DQT, SOF, DHT, DRI, COM; a large ICC profile or extended XMP adds one per 64 KB)."""
MAX_JPEG_FILL_BYTES = 1024
"""The most bytes before a JPEG's first scan that are neither marker segments nor their payloads:
``FF`` fill bytes, stuffed ``FF 00`` pairs, stray bytes where a marker belongs.  Encoders write none.
Pillow's header parser walks them one at a time in Python, so a 4 MiB query of them held a core for
1.0-1.8 s before any other check ran (red-team reviews, 2026-11-30 and 2026-12-01)."""
JPEG_START = b"\xff\xd8"
_JPEG_STANDALONE_MARKERS: frozenset[int] = frozenset({0x01, *range(0xD0, 0xD8)})  # TEM, RST0-7: no length
_JPEG_HEADER_END_MARKERS: frozenset[int] = frozenset({0xDA, 0xD9})  # SOS, EOI
_JPEG_MARKERS: frozenset[int] = frozenset({0x01, *range(0xC0, 0xFF)})  # every byte that may follow FF as a marker
PNG_START = b"\x89PNG\r\n\x1a\n"
MAX_PNG_ANCILLARY_CHUNKS = 256
"""The most PNG chunks other than image data (IDAT, APNG's fdAT) a decoded PNG may have; ordinary
files have under 20.  Pillow reads every chunk in Python, and inflates each iCCP (up to 1 MiB), so a
4 MiB query of 4,000 iCCP chunks inflated 4 GB in 3.3 s of a core, and 350,000 empty chunks cost
1.1 s (red-team review, 2026-12-01).  At most one iCCP, as the PNG specification says."""
PNG_DATA_CHUNK_BYTES = 1024
"""Image-data chunks beyond 64 must average at least this many bytes (encoders write 8-64 KB
chunks): 350,000 empty IDAT chunks cost 0.9 s of a core in Pillow."""
_PNG_DATA_CHUNKS: frozenset[bytes] = frozenset({b"IDAT", b"fdAT"})
PILLOW_DECODE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    ValueError,
    SyntaxError,
    IndexError,
    KeyError,
    TypeError,
    EOFError,
    struct.error,
    RecursionError,
    MemoryError,
)
"""What Pillow's decoders raise on a malformed file besides its own errors: an empty iCCP chunk after
the image data raised IndexError from ``load()``, a traceback instead of a refusal (red-team review,
2026-12-01).  Every one is a :class:`DataError` naming the file."""
DEFAULT_IMAGE_SIZE = 224
MIN_IMAGES_PER_ARTIST = 2


@dataclass(frozen=True)
class ArtworkSet:
    """Decoded artworks of several artists.

    ``images``: ``(N, S, S, 3)`` uint8 RGB; ``labels``: ``(N,)`` artist index into ``artists``;
    ``keys``: a content hash per image (stable cache key); ``sources``: file path or a synthetic id.
    """

    images: np.ndarray
    labels: np.ndarray
    artists: tuple[str, ...]
    keys: tuple[str, ...]
    sources: tuple[str, ...]

    def __post_init__(self) -> None:
        n = len(self.images)
        if not (len(self.labels) == len(self.keys) == len(self.sources) == n):
            raise ValueError("images, labels, keys and sources must have one entry per artwork")

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, indices: Sequence[int] | np.ndarray) -> ArtworkSet:
        idx = np.asarray(indices, dtype=np.int64)
        return ArtworkSet(
            images=self.images[idx],
            labels=self.labels[idx],
            artists=self.artists,
            keys=tuple(self.keys[i] for i in idx),
            sources=tuple(self.sources[i] for i in idx),
        )

    def first_per_artist(self, n: int) -> ArtworkSet:
        """The first ``n`` artworks of every artist in load order (file-name order for a folder);
        an artist with fewer keeps all of them.  For measuring smaller portfolios of the same artists."""
        if n < 1:
            raise ValueError(f"artworks per artist must be >= 1, got {n}")
        seen: dict[int, int] = {}
        keep = []
        for i, label in enumerate(self.labels.tolist()):
            seen[label] = seen.get(label, 0) + 1
            if seen[label] <= n:
                keep.append(i)
        return self.subset(keep)


@dataclass
class LoadReport:
    """What :func:`load_image_folder` read and what it skipped (path, reason)."""

    loaded: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    skipped_artists: list[tuple[str, str]] = field(default_factory=list)


def content_key(pixels: np.ndarray) -> str:
    """A stable hex key for decoded pixels (sha256 of shape and bytes, 16 bytes shown)."""
    digest = hashlib.sha256(str(pixels.shape).encode() + np.ascontiguousarray(pixels).tobytes())
    return digest.hexdigest()[:32]


def check_jpeg_structure(stream: IO[bytes], what: str) -> None:
    """Raise :class:`DataError` if the JPEG (or MPO) in ``stream`` would cost more to parse or decode
    than any ordinary one: more than :data:`MAX_JPEG_HEADER_SEGMENTS` marker segments or
    :data:`MAX_JPEG_FILL_BYTES` fill bytes before its first scan, or more than :data:`MAX_JPEG_SCANS`
    scans.  Reads the stream (from its start) and restores its position; a file that is corrupt in
    another way is left for the decoder to name."""
    position = stream.tell()
    try:
        _check_jpeg_header(stream, what)
        _check_jpeg_scans(stream, what)
    finally:
        stream.seek(position)


def _check_jpeg_header(stream: IO[bytes], what: str) -> None:
    """Walk the marker segments after SOI up to the first scan, jumping over each segment's payload;
    count every other byte on the way (fill, stuffing, stray: :data:`MAX_JPEG_FILL_BYTES`)."""
    stream.seek(len(JPEG_START))
    stray = segments = 0

    def one_more_stray() -> None:
        nonlocal stray
        stray += 1
        if stray > MAX_JPEG_FILL_BYTES:
            raise DataError(
                f"cannot decode image {what}: a JPEG of more than {MAX_JPEG_FILL_BYTES} fill or stray bytes "
                "before its first scan is refused"
            )

    while byte := stream.read(1):
        if byte != b"\xff":
            one_more_stray()  # a byte where a marker belongs
            continue
        marker = stream.read(1)
        while marker == b"\xff":  # fill bytes before a marker
            one_more_stray()
            marker = stream.read(1)
        if not marker or marker[0] in _JPEG_HEADER_END_MARKERS:
            return  # the end of the file (corrupt: the decoder's to name) or the first scan
        if marker[0] not in _JPEG_MARKERS:  # FF 00 stuffing or a reserved byte: no marker
            one_more_stray()
            continue
        segments += 1
        if segments > MAX_JPEG_HEADER_SEGMENTS:
            raise DataError(
                f"cannot decode image {what}: a JPEG of more than {MAX_JPEG_HEADER_SEGMENTS} marker segments "
                "before its first scan is refused"
            )
        if marker[0] in _JPEG_STANDALONE_MARKERS:
            continue
        length = stream.read(2)
        if len(length) < 2 or int.from_bytes(length, "big") < 2:
            return
        stream.seek(int.from_bytes(length, "big") - 2, io.SEEK_CUR)


def check_png_structure(stream: IO[bytes], what: str) -> None:
    """Raise :class:`DataError` if the PNG in ``stream`` has more than :data:`MAX_PNG_ANCILLARY_CHUNKS`
    chunks besides image data, more than one iCCP, or image-data chunks averaging under
    :data:`PNG_DATA_CHUNK_BYTES` beyond the first 64.  Walks the chunks by their lengths (no payload
    is read) and restores the stream's position; a truncated or corrupt file is the decoder's to name."""
    position = stream.tell()
    try:
        stream.seek(len(PNG_START))
        ancillary = profiles = data_chunks = data_bytes = 0
        while len(header := stream.read(8)) == 8:
            length, kind = int.from_bytes(header[:4], "big"), header[4:]
            if kind == b"IEND":
                return
            if kind in _PNG_DATA_CHUNKS:
                data_chunks, data_bytes = data_chunks + 1, data_bytes + length
                if data_chunks > 64 and data_bytes < PNG_DATA_CHUNK_BYTES * data_chunks:
                    raise DataError(
                        f"cannot decode image {what}: a PNG whose image data comes in more than 64 chunks of "
                        f"under {PNG_DATA_CHUNK_BYTES} bytes on average is refused"
                    )
            else:
                ancillary, profiles = ancillary + 1, profiles + (kind == b"iCCP")
                if ancillary > MAX_PNG_ANCILLARY_CHUNKS or profiles > 1:
                    raise DataError(
                        f"cannot decode image {what}: a PNG of more than {MAX_PNG_ANCILLARY_CHUNKS} chunks besides "
                        "its image data, or of more than one ICC profile, is refused"
                    )
            stream.seek(length + 4, io.SEEK_CUR)  # the payload and its CRC
    finally:
        stream.seek(position)


def _check_jpeg_scans(stream: IO[bytes], what: str) -> None:
    """Count start-of-scan markers (``FF DA``: entropy-coded data stuffs every ``FF`` byte, so the
    pair appears only as a marker), reading the stream in blocks."""
    stream.seek(0)
    scans, tail = 0, b""
    while block := stream.read(1 << 20):
        scans += (tail + block).count(b"\xff\xda")
        tail = block[-1:]
        if scans > MAX_JPEG_SCANS:
            raise DataError(f"cannot decode image {what}: a JPEG of more than {MAX_JPEG_SCANS} scans is refused")


def decode_image(
    path: Path | BinaryIO,
    size: int = DEFAULT_IMAGE_SIZE,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    name: str | None = None,
) -> np.ndarray:
    """Decode ``path`` (a file, or an open binary stream) to ``(size, size, 3)`` uint8 RGB: shorter
    side resized to ``size``, centre crop.  ``name`` names it in errors (default: the path).

    Decompression bombs are refused from the header, before any pixel is decoded: more than
    ``max_pixels`` pixels, or an aspect ratio over :data:`MAX_ASPECT_RATIO` (its resize to
    ``size`` on the short side would be as large), or a JPEG of more than :data:`MAX_JPEG_SCANS`
    scans (decoding time grows with pixels x scans), checked before Pillow parses the header
    (:func:`check_jpeg_structure`), or a PNG of thousands of chunks (:func:`check_png_structure`).
    Only JPEG, PNG and WebP are decoded.
    Raises :class:`DataError` naming the file when it cannot be decoded, is empty or too large.
    """
    from PIL import Image, UnidentifiedImageError  # here, not at import: an artist process never decodes (2 MB)

    what = name or str(path)
    try:
        with _opened(path, what) as stream, Image.open(stream, formats=DECODED_FORMATS) as img:
            check_image_size(img.size, max_pixels, what)  # header only: nothing decoded yet
            img.load()
            rgb = img.convert("RGB")
    except (UnidentifiedImageError, Image.DecompressionBombError) as exc:
        raise DataError(f"cannot decode image {what}: {exc!s:.200}") from exc
    except PILLOW_DECODE_ERRORS as exc:
        raise DataError(f"cannot decode image {what}: {exc!s:.200}") from exc
    width, height = rgb.size
    scale = size / min(width, height)
    resized = rgb.resize((max(size, round(width * scale)), max(size, round(height * scale))), Image.Resampling.BICUBIC)
    left = (resized.width - size) // 2
    top = (resized.height - size) // 2
    return np.asarray(resized.crop((left, top, left + size, top + size)), dtype=np.uint8)


def _open_image_file(path: Path, what: str) -> BinaryIO:
    """``path`` opened if it is a regular file (:func:`~fedstyle_secure.files.open_regular_file`: a FIFO
    would block the reader forever); :class:`DataError` naming it otherwise."""
    try:
        return open_regular_file(path)
    except (OSError, ValueError) as exc:  # an OSError's text names the descriptor ("Is a directory: 3"), not the file
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise DataError(f"cannot read image {what}: {reason}") from exc


@contextmanager
def _opened(path: Path | BinaryIO, what: str) -> Iterator[BinaryIO]:
    """``path`` as a binary stream whose JPEG (or MPO: both start with SOI) or PNG structure has been
    checked; a file is opened here and closed after."""
    with ExitStack() as stack:
        stream = path if not isinstance(path, Path) else stack.enter_context(_open_image_file(path, what))
        position = stream.tell()
        if not stream.read(1):
            raise DataError(f"cannot decode image {what}: the file is empty")
        stream.seek(position)
        start = stream.read(len(PNG_START))
        stream.seek(position)
        if start.startswith(JPEG_START):
            check_jpeg_structure(stream, what)
        elif start == PNG_START:
            check_png_structure(stream, what)
        yield stream


def check_image_size(dimensions: tuple[int, int], max_pixels: int, what: str) -> None:
    """Refuse an image of ``(width, height)`` pixels that is empty or under :data:`MIN_IMAGE_SIDE` on its
    shorter side, has more than ``max_pixels`` pixels, or is more than :data:`MAX_ASPECT_RATIO` times
    longer than wide (:class:`DataError`)."""
    width, height = dimensions
    if width < 1 or height < 1:
        raise DataError(f"image {what} is empty ({width}x{height} pixels)")
    if min(width, height) < MIN_IMAGE_SIDE:
        raise DataError(
            f"image {what} is {width}x{height} pixels; at least {MIN_IMAGE_SIDE} on the shorter side are "
            "needed to read a style from it"
        )
    if width * height > max_pixels:
        raise DataError(
            f"image {what} is {width}x{height} = {width * height} pixels; at most {max_pixels} pixels are "
            "decoded (decompression-bomb guard)"
        )
    if max(width, height) > MAX_ASPECT_RATIO * min(width, height):
        raise DataError(
            f"image {what} is {width}x{height} pixels, an aspect ratio over {MAX_ASPECT_RATIO}:1 "
            "(decompression-bomb guard: its resize would be as large)"
        )


def artist_folders(root: Path) -> list[Path]:
    """The artist sub-folders of a data folder ``<root>/<artist>/<image>`` (hidden ones skipped), listed,
    nothing decoded; :class:`DataError` naming ``root`` when it is missing, not a folder or has none."""
    if not root.exists():
        raise DataError(f"data folder {root} does not exist")
    if not root.is_dir():
        raise DataError(f"data folder {root} is not a directory (expected <root>/<artist>/<image>)")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    for folder in folders:
        try:
            folder.name.encode("utf-8")
        except UnicodeEncodeError:
            raise DataError(f"artist folder name {folder.name!r} in {root} is not valid UTF-8; rename it") from None
    if not folders:
        raise DataError(f"data folder {root} has no artist sub-folders (expected <root>/<artist>/<image>)")
    return folders


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def data_folder_fingerprint(root: Path) -> str:
    """SHA-256 (hex) over every artist folder's name and every image file's name and bytes under
    ``root``: what a cached result computed from the folder depends on (an artist or artwork added,
    removed, renamed or changed gives another fingerprint).  Reads every file once, decodes none."""
    digest = hashlib.sha256()
    for folder in artist_folders(root):
        for path in _image_files(folder):
            digest.update(os.fsencode(folder.name) + b"/" + os.fsencode(path.name) + b"\0")  # any name the OS allows
            content = hashlib.sha256()
            with _open_image_file(path, str(path)) as stream:  # streamed: a huge file is never held in memory
                for chunk in iter(lambda: stream.read(1 << 20), b""):
                    content.update(chunk)
            digest.update(content.digest())
    return digest.hexdigest()


def load_image_folder(
    root: Path | str, size: int = DEFAULT_IMAGE_SIZE, min_artists: int = 2
) -> tuple[ArtworkSet, LoadReport]:
    """Load every decodable image of ``<root>/<artist>/*.{jpg,jpeg,png,webp}``.

    Artists with fewer than :data:`MIN_IMAGES_PER_ARTIST` usable images are skipped (they
    cannot be split into training and query images); each skip is logged and reported.
    """
    root = Path(root)
    report = LoadReport()
    images: list[np.ndarray] = []
    labels: list[int] = []
    sources: list[str] = []
    artists: list[str] = []
    for folder in artist_folders(root):
        decoded: list[tuple[np.ndarray, str]] = []
        for path in _image_files(folder):
            try:
                decoded.append((decode_image(path, size), str(path)))
            except DataError as exc:
                log.warning("skipping %s", exc)
                report.skipped.append((str(path), str(exc)))
        if len(decoded) < MIN_IMAGES_PER_ARTIST:
            reason = f"only {len(decoded)} usable image(s); need at least {MIN_IMAGES_PER_ARTIST}"
            log.warning("skipping artist folder %s: %s", folder, reason)
            report.skipped_artists.append((str(folder), reason))
            continue
        for pixels, source in decoded:
            images.append(pixels)
            labels.append(len(artists))
            sources.append(source)
        artists.append(folder.name)
    if report.skipped:
        log.warning("skipped %d unreadable image(s) under %s", len(report.skipped), root)
    if len(artists) < min_artists:
        raise DataError(
            f"data folder {root} has {len(artists)} usable artist folder(s); need at least {min_artists}"
            + (
                f" (skipped: {'; '.join(f'{p}: {r}' for p, r in report.skipped_artists)})"
                if report.skipped_artists
                else ""
            )
        )
    report.loaded = len(images)
    stacked = np.stack(images)
    return (
        ArtworkSet(
            images=stacked,
            labels=np.asarray(labels, dtype=np.int64),
            artists=tuple(artists),
            keys=tuple(content_key(img) for img in stacked),
            sources=tuple(sources),
        ),
        report,
    )


def artwork_set_from_arrays(
    images: np.ndarray, labels: Iterable[int], artists: Sequence[str], source_prefix: str
) -> ArtworkSet:
    """Wrap in-memory images (e.g. procedurally generated ones) as an :class:`ArtworkSet`."""
    labels_arr = np.asarray(list(labels), dtype=np.int64)
    return ArtworkSet(
        images=images,
        labels=labels_arr,
        artists=tuple(artists),
        keys=tuple(content_key(img) for img in images),
        sources=tuple(f"{source_prefix}:{i}" for i in range(len(images))),
    )


def artwork_keys(root: Path) -> frozenset[str]:
    """The content keys (:func:`content_key` of the decoded pixels) of every artwork
    :func:`load_image_folder` reads from ``root``: which artworks a portfolio holds, for the lifetime
    ledger (a losslessly re-saved copy is the same artwork).  :class:`DataError` as that function."""
    artworks, _ = load_image_folder(root, min_artists=1)
    return frozenset(artworks.keys)


def load_public_folder(root: Path | str, size: int = DEFAULT_IMAGE_SIZE, limit: int | None = None) -> np.ndarray:
    """Load a flat or nested folder of public alignment images as ``(M, size, size, 3)`` uint8: the
    first ``limit`` usable ones in path order (``None``: all)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"public alignment folder {root} does not exist or is not a directory")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    decoded: list[np.ndarray] = []
    for path in files:
        if limit is not None and len(decoded) >= limit:
            break
        try:
            decoded.append(decode_image(path, size))
        except DataError as exc:
            log.warning("skipping public image: %s", exc)
    if len(decoded) < 2:
        raise DataError(f"public alignment folder {root} has {len(decoded)} usable image(s); need at least 2")
    return np.stack(decoded)
