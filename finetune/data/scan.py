"""Pre-scan of image files: check each once, in parallel, and remember the result.

Three depths (``LEVELS``), chosen by ``data.scan`` through ``resolve_level``:

- ``full``: every file is read and fully decoded (two or more threads; PIL releases the GIL
  while decoding): about 1 ms per 500x375 JPEG on one core of the 2-core machine this was
  written on (15 ns per pixel; 10 ms for a 1600x1200 photo);
- ``header``: every file is read (its content digest finds duplicates across splits) and its
  header parsed, nothing decoded. A run uses it instead of ``full`` when the decoded-image cache
  decodes every image anyway before the first step: the first run decodes each image once, not
  twice, and a file that fails there is replaced at load time and reported (``loaders.py``);
- ``quick``: the header only (PIL ``Image.open`` without ``load()``; 0.02 ms per image here),
  no digest: size, mode, format, pixel limit, not-an-image; decode errors surface at load time;
- ``off``: only that each file is a regular file (a pipe named ``x.png`` must never be opened).

``auto`` is ``full`` up to ``AUTO_FULL_LIMIT`` images and ``quick`` above: at the measured cost
a full scan of 20,000 ordinary photos takes 10-20 s on 2 cores, while one of a million would
take 10-30 minutes before the first step, against about 20 s for the quick one.

What is learnt - size, mode, format, a content digest, or why the file is bad - is cached per
folder and depth in ``~/.cache/finetune/scans/`` keyed by file size, modification time, inode
and change time (``stat_key``), so a second run over an unchanged folder reads nothing.

Bad files (skipped with a warning, or an error with ``strict``): missing files, anything that is
not a regular file (a pipe or device named ``x.png`` is never opened), empty files, files that are
no image, truncated or otherwise undecodable images, and images over the pixel limit (decompression
bombs). A file whose content does not match its extension (PNG data in ``.jpg``) still loads and
is only reported, unless ``strict``.

Example:
    >>> results = check_files(["a.png", "b.jpg"], max_pixels=89_478_485)  # doctest: +SKIP
    >>> results["b.jpg"].problem  # doctest: +SKIP
    'truncated: image file is truncated (3 bytes not processed)'
    >>> with scan_settings("quick"):  # what scan_folder / scan_csv below it check
    ...     info = scan_folder("photos")  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import io
import json
import os
import stat
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

from PIL import Image, ImageFile, UnidentifiedImageError

from .._io import atomic_path, cache_dir
from ..events import track
from .depth import pil_stated_bits, scaling_note, stated_bits
from .threads import thread_map

__all__ = [
    "AUTO_FULL_LIMIT",
    "LEVELS",
    "FileCheck",
    "ScanSettings",
    "check_files",
    "resolve_level",
    "scan_settings",
    "check_file",
    "regular_file_problem",
    "stat_key",
    "tiff_bands",
    "DEFAULT_MAX_PIXELS",
]

DEFAULT_MAX_PIXELS = 89_478_485  # PIL's own decompression-bomb threshold (0.25 GiB RGB)
LEVELS = ("full", "header", "quick", "off")
AUTO_FULL_LIMIT = 20_000  # images; above it data.scan=auto scans quick (module docstring)
CACHE_VERSION = 3  # 2: FileCheck.bits; "not a regular file"; 3: JSON lines
EXTENSION_FORMATS = {
    ".png": "PNG",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".bmp": "BMP",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".webp": "WEBP",
}


@dataclass(frozen=True, slots=True)  # slots: ~60 bytes less per file
class FileCheck:
    """What the scan learnt of one file: its problem or warning, size, mode, format, digest."""

    problem: Optional[str] = None  # why the file cannot be used; None = usable
    warning: Optional[str] = None  # usable, but worth a look (wrong extension)
    width: int = 0
    height: int = 0
    mode: str = ""
    format: str = ""
    digest: str = ""  # blake2b of the bytes, for duplicate detection
    bits: int = 0  # significant bits the file states for its integer samples; 0: the type's

    @property
    def scaling(self) -> str:
        """How its pixels are scaled to [0, 1] (``16-bit -> /65535``); empty for 8-bit data."""
        return "" if self.problem else scaling_note(self.mode, self.bits)


def regular_file_problem(path: str | os.PathLike) -> Optional[str]:
    """Why ``path`` must not be opened as an image, or None for a regular file. Never opens it:
    opening a pipe named ``x.png`` blocks until something writes to it, a device never ends."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "file not found" + (" (a broken link)" if os.path.islink(path) else "")
    except OSError as e:
        return f"unreadable: {e.strerror or e}"
    return None if stat.S_ISREG(mode) else "not a regular file"


def check_file(path: str, max_pixels: int = DEFAULT_MAX_PIXELS, level: str = "full") -> FileCheck:
    """Check one file at ``level`` (``LEVELS``; see the module docstring); never raises for a
    bad file.

    Example:
        >>> check_file("cat.png", level="quick").width  # doctest: +SKIP
        40
    """
    problem = regular_file_problem(path)
    if problem is not None or level == "off":
        return FileCheck(problem=problem)
    digest = ""
    if level == "quick":  # the header only: PIL reads the first few kB of the file
        try:
            empty = os.path.getsize(path) == 0
        except OSError as e:
            return FileCheck(problem=f"unreadable: {e.strerror or e}")
        if empty:
            return FileCheck(problem="empty file")
        source: str | io.BytesIO = path
    else:
        try:
            data = Path(path).read_bytes()
        except OSError as e:
            return FileCheck(problem=f"unreadable: {e.strerror or e}")
        if not data:
            return FileCheck(problem="empty file")
        digest = hashlib.blake2b(data, digest_size=16).hexdigest()
        source = io.BytesIO(data)
    if Path(path).suffix.lower() in (".tif", ".tiff"):
        # PIL opens a 13-band TIFF as its first band without complaint: ask tifffile first
        multiband = _check_tiff(path, digest, max_pixels, decode=level == "full")
        if multiband is not None:
            return multiband
    check = check_image(source, max_pixels, decode=level == "full", digest=digest)
    if check.problem:
        return check
    expected = EXTENSION_FORMATS.get(Path(path).suffix.lower())
    if expected and check.format and check.format != expected:
        warning = f"wrong extension: {check.format} data in a {Path(path).suffix} file"
        return FileCheck(None, warning, *astuple_tail(check))
    return check


def astuple_tail(check: FileCheck) -> tuple:
    """A check's fields after ``problem`` and ``warning``, for a copy with a new warning."""
    return (check.width, check.height, check.mode, check.format, check.digest, check.bits)


def check_image(source, max_pixels: int = DEFAULT_MAX_PIXELS, *, decode: bool = True,
                digest: str = "") -> FileCheck:  # fmt: skip
    """Open an image (a path or a file object: a tar member's bytes), check its size against
    ``max_pixels`` and, with ``decode``, decode it; never raises for a bad image.

    Example:
        >>> check_image(io.BytesIO(jpeg_bytes), decode=False).format  # doctest: +SKIP
        'JPEG'
    """
    try:
        with Image.open(source) as img:
            width, height = img.size
            if width * height > max_pixels:
                return FileCheck(
                    problem=f"over the pixel limit ({width}x{height} > "
                    f"{max_pixels:,} px; raise data.max_pixels if it is "
                    "genuine)",
                    width=width,
                    height=height,
                    digest=digest,
                )
            if decode:
                img.load()
            mode, fmt, bits = img.mode, img.format or "", pil_stated_bits(img)
    except UnidentifiedImageError:
        return FileCheck(problem="not an image", digest=digest)
    except Image.DecompressionBombError as e:
        return FileCheck(problem=f"over the pixel limit ({e})", digest=digest)
    except OSError as e:
        text = str(e).splitlines()[0] if str(e) else type(e).__name__
        kind = "truncated" if "truncated" in text or "broken data" in text else "undecodable"
        return FileCheck(problem=f"{kind}: {text}"[:200], digest=digest)
    except Exception as e:  # decoders raise many types (SyntaxError, ValueError, ...)
        return FileCheck(problem=f"undecodable: {type(e).__name__}: {e}"[:200], digest=digest)
    if fmt == "MPO":  # multi-picture JPEGs from phones and cameras are JPEGs
        fmt = "JPEG"
    return FileCheck(None, None, width, height, mode, fmt, digest, bits)


def tiff_bands(path: str) -> Optional[tuple[int, int, int, int]]:
    """``(bands, height, width, band axis)`` of a multi-band TIFF, read from its header (nothing
    decoded); None for ordinary grayscale/RGB/RGBA TIFFs and for files tifffile cannot read.

    The band axis comes from tifffile's axes string: samples (``S``, pixel-interleaved), else
    the leading pages/channels axis (planar, band-first). Four samples count as RGBA only when
    the file says RGB plus an alpha extra sample; an RGB+NIR tile is four bands.
    """
    try:
        import tifffile

        with tifffile.TiffFile(path) as tif:
            series, page = tif.series[0], tif.pages[0]
            shape, axes = tuple(series.shape), series.axes
            rgb = int(page.photometric) == 2
            alpha = any(int(e) in (1, 2) for e in (page.extrasamples or ()))
    except Exception:  # not tifffile's to judge: PIL's check reports what is wrong
        return None
    if "S" in axes:
        axis = axes.index("S")
    elif len(shape) == 3:
        axis = 0
    else:
        return None
    bands = shape[axis]
    if bands < 4 or (bands == 4 and rgb and alpha):
        return None
    height, width = [n for k, n in enumerate(shape) if k != axis][-2:]
    return bands, height, width, axis


def _check_tiff(path: str, digest: str, max_pixels: int, decode: bool = True
                ) -> Optional[FileCheck]:  # fmt: skip
    """A multi-band TIFF: size checked from the header first (a bomb is never decoded), then
    (``decode``) decoded once through tifffile to find truncation; None for ordinary TIFFs (PIL
    checks)."""
    layout = tiff_bands(path)
    if layout is None:
        return None
    bands, height, width, _ = layout
    if width * height > max_pixels:
        return FileCheck(
            problem=f"over the pixel limit ({width}x{height} > {max_pixels:,} px)",
            width=width,
            height=height,
            digest=digest,
        )
    try:
        import tifffile

        with tifffile.TiffFile(path) as tif:
            dtype = tif.series[0].dtype
            if decode:
                dtype = tif.asarray().dtype
            tags = {tag.code: tag.value for tag in tif.pages[0].tags}
    except Exception as e:  # tifffile raises many types for damaged data
        return FileCheck(problem=f"undecodable: {type(e).__name__}: {e}"[:200], digest=digest)
    bits = stated_bits(tags, dtype.itemsize * 8) if dtype.kind in "ui" else 0
    mode = f"{bands}-band {dtype}"
    return FileCheck(None, None, width, height, mode, "TIFF", digest, bits)


@dataclass
class ScanSettings:
    """How deep the scans inside a ``scan_settings`` block check (``mode``: a ``data.scan``
    choice; ``decoded_later``: the image cache decodes every image before the first step), and
    the depth the last of them used (``level``, filled in by ``check_files``)."""

    mode: str = "full"
    decoded_later: bool = False
    level: str = field(default="", compare=False)


_SETTINGS: contextvars.ContextVar[ScanSettings] = contextvars.ContextVar(
    "finetune_scan_settings", default=ScanSettings()
)


@contextlib.contextmanager
def scan_settings(mode: str = "full", *, decoded_later: bool = False):
    """Set the depth of the scans (``check_files``) in the block; yields the ``ScanSettings``,
    whose ``level`` then says what was done. ``scan_folder`` and ``scan_csv`` need no argument
    for it, so that one setting reaches every kind of data.

    Example:
        >>> with scan_settings("auto", decoded_later=True) as done:  # doctest: +SKIP
        ...     info = scan_folder("photos")
        >>> done.level  # doctest: +SKIP
        'header'
    """
    settings = ScanSettings(mode, decoded_later)
    token = _SETTINGS.set(settings)
    try:
        yield settings
    finally:
        _SETTINGS.reset(token)


def resolve_level(mode: str, n_images: int, decoded_later: bool = False) -> str:
    """The depth (``LEVELS``) of a ``data.scan`` choice for ``n_images`` images: ``auto`` is
    ``full`` up to ``AUTO_FULL_LIMIT`` images, else ``quick``; ``full`` is ``header`` when the
    image cache decodes every image anyway (``decoded_later``): one decode, not two.

    Example:
        >>> resolve_level("auto", 500, decoded_later=True)
        'header'
        >>> resolve_level("auto", 50_000)
        'quick'
    """
    if mode == "auto":
        mode = "full" if n_images <= AUTO_FULL_LIMIT else "quick"
    if mode == "full" and decoded_later:
        return "header"
    return mode


def check_files(
    paths: Sequence[str],
    *,
    root: Optional[str | os.PathLike] = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    level: Optional[str] = None,
) -> tuple[dict[str, FileCheck], int]:
    """Check every path at ``level`` (default: the one ``scan_settings`` resolves for this many
    files, ``full`` outside such a block); cached by ``stat_key`` when ``root`` names the folder.

    Returns ``(results by path, number of files answered from the cache)``.
    """
    settings = _SETTINGS.get()
    if level is None:
        level = resolve_level(settings.mode, len(paths), settings.decoded_later)
    settings.level = level
    if level == "off":  # nothing to remember: a stat per file
        return {p: check_file(p, max_pixels, "off") for p in paths}, 0
    if ImageFile.LOAD_TRUNCATED_IMAGES:  # a global some libraries set; it would hide truncation
        raise RuntimeError(
            "PIL.ImageFile.LOAD_TRUNCATED_IMAGES is True; truncated images "
            "cannot be detected. Set it to False before scanning."
        )
    cache_file = _cache_file(root, max_pixels, level) if root is not None else None
    cached = _read_cache(cache_file)
    name = (lambda p: os.path.relpath(p, root)) if root is not None else str
    results: dict[str, FileCheck] = {}
    todo = []
    for p in paths:
        key = stat_key(p)
        hit = cached.get(name(p))
        if hit is not None and key is not None and hit[0] == key:
            results[p] = hit[1]
        else:
            todo.append(p)
    hits = len(results)
    if todo:
        limit = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None  # our own limit applies, with a clearer message
        try:
            checks = thread_map(lambda p: check_file(p, max_pixels, level), todo)
            what = "Scanning images" if level == "full" else f"Scanning images ({level})"
            results.update(zip(todo, track(checks, what, total=len(todo))))
        finally:
            Image.MAX_IMAGE_PIXELS = limit
    if cache_file is not None and todo:
        _write_cache(cache_file, name, results)
    return results, hits


def stat_key(path: str) -> Optional[list[int]]:
    """What tells a changed file from an unchanged one (size, mtime, inode, ctime), for the
    scan and image caches; None when the file cannot be stat'ed."""
    # inode and ctime too: `cp -p` / `rsync -t` can keep size and mtime for new content
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns]


def _cache_file(root, max_pixels: int, level: str = "full") -> Path:
    # one cache per depth: a header-level "fine" must never answer a full scan
    depth = "" if level == "full" else f"|{level}"
    key = hashlib.sha1(f"{Path(root).resolve()}|{max_pixels}|{CACHE_VERSION}{depth}".encode())
    return cache_dir() / "scans" / f"{key.hexdigest()[:20]}.json"


def _read_cache(path: Optional[Path]) -> dict:
    """``name -> (stat key, FileCheck)`` of a scan cache, read a line at a time (never the whole
    file as one Python object: ~1 kB per image at the peak, measured)."""
    if path is None or not path.is_file():
        return {}
    entries = {}
    try:
        with open(path) as f:
            if json.loads(f.readline()).get("version") != CACHE_VERSION:
                return {}
            for line in f:
                name, key, fields = json.loads(line)
                entries[name] = (key, FileCheck(**fields))
    except (OSError, ValueError, TypeError, AttributeError):  # a damaged cache is only a miss
        return {}
    return entries


def _write_cache(path: Path, name: Callable[[str], str], results: dict[str, FileCheck]) -> None:
    """A header line, then one JSON line ``[name, stat key, check]`` per file, written as it
    goes (the whole cache as one JSON text held ~1.5 kB per image at the scan's peak)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp, open(tmp, "w") as f:
            f.write(json.dumps({"version": CACHE_VERSION, "written": time.time()}) + "\n")
            for p, check in results.items():
                f.write(json.dumps([name(p), stat_key(p), asdict(check)]) + "\n")
    except OSError:  # a read-only home must not stop training; the next scan decodes again
        pass
