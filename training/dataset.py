"""The garment data format: reading and checking it, and generating a dataset in it.

The format, as the marketplace ships it:

- an images folder of ``<uuid>.jpg`` files;
- ``data.parquet``: ``uuid``, ``cc3`` (the category), ``color1`` (one of 28 colour names),
  ``polka dot``, ``floral``, ``checker`` (0 or 1 each; note the space in ``polka dot``);
- ``test.parquet``: ``uuid`` only;
- ``predictions.parquet`` (what the batch job writes): ``uuid``, ``category1``, ``category2``
  and the three tags as 0/1, rows in the order of ``test.parquet``.

Every reader here checks its file completely before any training or prediction starts, and
says what is wrong in one message.
"""

import io
import json
import math
import re
import uuid as uuid_lib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageDraw, ImageFilter

from training.exceptions import DatasetError

CATEGORIES = ["BLOUSES", "CASUAL_DRESSES", "MINI_DRESSES", "SHIRTS", "TANK_TOPS"]
TAGS = ["polka dot", "floral", "checker"]
COLOURS = {
    "BLACK": (25, 25, 28),
    "WHITE": (245, 245, 242),
    "GREY": (128, 128, 128),
    "LIGHT-GREY": (190, 190, 190),
    "DARK-GREY": (70, 70, 72),
    "NAVY": (25, 35, 90),
    "BLUE": (40, 80, 200),
    "LIGHT-BLUE": (140, 185, 235),
    "TURQUOISE": (50, 190, 190),
    "GREEN": (50, 150, 60),
    "DARK-GREEN": (25, 80, 40),
    "OLIVE": (110, 115, 40),
    "KHAKI": (185, 170, 120),
    "YELLOW": (240, 220, 60),
    "MUSTARD": (205, 160, 40),
    "ORANGE": (240, 130, 40),
    "RED": (205, 35, 40),
    "DARK-RED": (130, 20, 25),
    "BURGUNDY": (110, 25, 55),
    "PINK": (235, 130, 170),
    "LIGHT-PINK": (245, 195, 210),
    "FUCHSIA": (210, 40, 150),
    "PURPLE": (110, 50, 150),
    "LILAC": (190, 160, 215),
    "BEIGE": (220, 200, 170),
    "BROWN": (110, 70, 40),
    "CREAM": (245, 235, 210),
    "VARIOUS": (0, 0, 0),  # several colours: drawn as stripes of random colours
}
DATA_COLUMNS = ["uuid", "cc3", "color1", *TAGS]
PREDICTION_COLUMNS = ["uuid", "category1", "category2", *TAGS]
PREDICTION_SCHEMA = pa.schema(
    [
        ("uuid", pa.string()),
        ("category1", pa.string()),
        ("category2", pa.string()),
        *[(tag, pa.int8()) for tag in TAGS],
    ]
)

# A uuid names a file in the images folder: nothing that could leave it.
_SAFE_UUID = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]*$")
_LISTED = 20  # offending values named in an error message; the rest are counted


@dataclass(frozen=True)
class GarmentLabels:
    """The rows of a checked ``data.parquet``, in file order."""

    uuids: list[str]
    categories: np.ndarray  # (N,) int64 indices into CATEGORIES
    tags: np.ndarray  # (N, len(TAGS)) float32, 0 or 1
    colours: list[str]
    # Each row's image, once checked against an images folder (rows of several data sets come
    # from several folders); None for labels read without their images.
    image_paths: list[Path] | None = None

    def __len__(self) -> int:
        return len(self.uuids)

    def image(self, row: int, *, images_dir: Path | None = None) -> Path:
        """Row ``row``'s image: the one checked, else ``<uuid>.jpg`` in ``images_dir``."""
        if self.image_paths is not None:
            return self.image_paths[row]
        if images_dir is None:
            raise ValueError("These labels were read without their images: name the folder.")
        return image_path(images_dir=images_dir, uuid=self.uuids[row])


def _listed(values: list[str]) -> str:
    shown = ", ".join(values[:_LISTED])
    more = len(values) - _LISTED
    return f"{shown} (and {more} more)" if more > 0 else shown


def _table_read(path: Path, *, name: str) -> pa.Table:
    if not path.is_file():
        raise DatasetError(f"{name} {path} does not exist.")
    try:
        return pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise DatasetError(f"{name} {path} is not a readable Parquet file: {exc}") from exc


def _columns_check(table: pa.Table, *, required: list[str], path: Path) -> None:
    missing = [column for column in required if column not in table.column_names]
    if missing:
        hint = ""
        if "polka dot" in missing and "polka_dot" in table.column_names:
            hint = " (the column is called 'polka dot', with a space)"
        raise DatasetError(
            f"{path} lacks the column(s) {', '.join(repr(c) for c in missing)}{hint}; "
            f"it has {', '.join(repr(c) for c in table.column_names)}."
        )


def _uuids_check(values: list, *, path: Path) -> list[str]:
    nulls = sum(1 for value in values if value is None or value == "")
    if nulls:
        raise DatasetError(f"{path} has {nulls} row(s) without a uuid.")
    uuids = [str(value) for value in values]
    unsafe = [value for value in uuids if not _SAFE_UUID.match(value) or ".." in value]
    if unsafe:
        raise DatasetError(f"{path} has uuids that cannot name an image file: {_listed(unsafe)}.")
    counts: dict[str, int] = {}
    for value in uuids:
        counts[value] = counts.get(value, 0) + 1
    duplicates = sorted(value for value, count in counts.items() if count > 1)
    if duplicates:
        raise DatasetError(f"{path} repeats the uuids {_listed(duplicates)}.")
    return uuids


def labels_read(*, path: Path) -> GarmentLabels:
    """Read and check ``data.parquet``: every column present, known categories, 0/1 tags,
    unique uuids. Raises DatasetError naming what is wrong (and which values)."""
    path = Path(path)
    table = _table_read(path, name="The labels file")
    _columns_check(table, required=DATA_COLUMNS, path=path)
    if table.num_rows == 0:
        raise DatasetError(f"{path} has no rows.")
    uuids = _uuids_check(table.column("uuid").to_pylist(), path=path)

    categories = table.column("cc3").to_pylist()
    unknown = sorted({str(value) for value in categories if value not in CATEGORIES})
    if unknown:
        raise DatasetError(
            f"{path} has unknown categories in 'cc3': {_listed(unknown)}; "
            f"the categories are {', '.join(CATEGORIES)}."
        )
    tags = np.zeros((table.num_rows, len(TAGS)), dtype=np.float32)
    for column, tag in enumerate(TAGS):
        values = table.column(tag).to_pylist()
        bad = [
            uuids[row]
            for row, value in enumerate(values)
            if isinstance(value, bool) or value not in (0, 1)
        ]
        if bad:
            raise DatasetError(f"{path}: {tag!r} must be 0 or 1; it is not for {_listed(bad)}.")
        tags[:, column] = values
    colours = [str(value) if value is not None else "" for value in table.column("color1")]
    return GarmentLabels(
        uuids=uuids,
        categories=np.array([CATEGORIES.index(value) for value in categories], dtype=np.int64),
        tags=tags,
        colours=colours,
    )


def uuids_read(*, path: Path) -> list[str]:
    """The uuids of ``test.parquet`` (a ``uuid`` column; others are ignored), checked."""
    path = Path(path)
    table = _table_read(path, name="The input file")
    _columns_check(table, required=["uuid"], path=path)
    return _uuids_check(table.column("uuid").to_pylist(), path=path)


def image_path(*, images_dir: Path, uuid: str) -> Path:
    return Path(images_dir) / f"{uuid}.jpg"


def images_missing(*, images_dir: Path, uuids: list[str]) -> list[str]:
    """The uuids whose ``<uuid>.jpg`` is not in ``images_dir``, in the given order."""
    return [uuid for uuid in uuids if not image_path(images_dir=images_dir, uuid=uuid).is_file()]


def dataset_load(*, data_path: Path, images_dir: Path) -> GarmentLabels:
    """The checked labels of ``data_path``, every one with its image in ``images_dir``.

    Raises DatasetError before any training: a bad labels file, or the uuids whose images
    are missing.
    """
    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        raise DatasetError(f"The images folder {images_dir} does not exist.")
    labels = labels_read(path=data_path)
    missing = images_missing(images_dir=images_dir, uuids=labels.uuids)
    if missing:
        raise DatasetError(
            f"{len(missing)} of {len(labels)} images are missing from {images_dir}; "
            f"uuids: {_listed(missing)}."
        )
    return replace(
        labels, image_paths=[image_path(images_dir=images_dir, uuid=u) for u in labels.uuids]
    )


# --- Several data sets as one (the original data and exported corrections, say) ------------

# A data set may declare its label set beside its data.parquet (an export of feedback does):
# {"categories": [...], "tags": [...]}. Without one, it has the format's.
LABELS_FILE = "labels.json"


@dataclass(frozen=True)
class DataSource:
    """One data set: its labels file and its images folder."""

    data_path: Path
    images_dir: Path


def data_source(*, data: Path, images: Path | None = None) -> DataSource:
    """A data set as the commands name it: a folder holding ``data.parquet`` and ``images/``,
    or a ``data.parquet`` file (its images in ``images`` if given, else in ``images/``
    beside it)."""
    data = Path(data)
    data_path = data / "data.parquet" if data.is_dir() else data
    images_dir = Path(images) if images is not None else data_path.parent / "images"
    return DataSource(data_path=data_path, images_dir=images_dir)


def data_sources(*, data: list[Path], images: list[Path] | None = None) -> list[DataSource]:
    """The data sets of the commands' repeatable ``--data`` and ``--images``: ``images`` given
    once per data set, in the same order, or not at all. Raises DatasetError otherwise."""
    images = images or []
    if images and len(images) != len(data):
        raise DatasetError(
            f"{len(data)} --data but {len(images)} --images: give --images once per --data, "
            "in the same order, or not at all (images/ beside each data.parquet)."
        )
    return [
        data_source(data=path, images=images[index] if images else None)
        for index, path in enumerate(data)
    ]


def declared_labels(*, source: DataSource) -> tuple[list[str], list[str]] | None:
    """The (categories, tags) a data set declares in its labels.json; None without one.
    Raises DatasetError when the file cannot be read as such."""
    path = Path(source.data_path).parent / LABELS_FILE
    if not path.is_file():
        return None
    try:
        declared: Any = json.loads(path.read_text(encoding="utf-8"))
        categories, tags = declared["categories"], declared["tags"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DatasetError(
            f"{path} is not a label set ({{'categories': [...], 'tags': [...]}}): {exc}"
        ) from exc
    if not (isinstance(categories, list) and isinstance(tags, list)):
        raise DatasetError(f"{path}: 'categories' and 'tags' must be lists of names.")
    return [str(c) for c in categories], [str(t) for t in tags]


def datasets_load(*, sources: list[DataSource]) -> GarmentLabels:
    """Several data sets as one training set: each checked as ``dataset_load`` checks one, its
    rows after those of the sets before it.

    Raises DatasetError before any training, naming the set at fault: one whose declared label
    set (labels.json) is not the garment model's categories and tags, a bad set, or uuids that
    two sets share (a uuid names one image and one split row).
    """
    if not sources:
        raise DatasetError("No data set was given.")
    for source in sources:
        declared = declared_labels(source=source)
        if declared is not None and (set(declared[0]), set(declared[1])) != (
            set(CATEGORIES),
            set(TAGS),
        ):
            raise DatasetError(
                f"The data set {source.data_path} has other labels than the garment model "
                f"trains on: categories {', '.join(declared[0])} and tags "
                f"{', '.join(declared[1]) or '(none)'} in its {LABELS_FILE}, against "
                f"categories {', '.join(CATEGORIES)} and tags {', '.join(TAGS)}. Data sets "
                "of different label sets cannot be trained on together."
            )
    parts = [dataset_load(data_path=s.data_path, images_dir=s.images_dir) for s in sources]
    if len(parts) == 1:
        return parts[0]
    seen: set[str] = set()
    shared: list[str] = []
    for part in parts:
        shared.extend(uuid for uuid in part.uuids if uuid in seen)
        seen.update(part.uuids)
    if shared:
        raise DatasetError(
            f"{len(shared)} uuid(s) appear in more than one data set: {_listed(shared)}; "
            "a uuid must name one image."
        )
    return GarmentLabels(
        uuids=[uuid for part in parts for uuid in part.uuids],
        categories=np.concatenate([part.categories for part in parts]),
        tags=np.concatenate([part.tags for part in parts]),
        colours=[colour for part in parts for colour in part.colours],
        image_paths=[path for part in parts for path in part.image_paths or []],
    )


# --- The generator: a dataset in exactly this format, with what makes real data hard ---------

# A marketplace is imbalanced: many blouses, few tank tops; floral common, checker rare.
CATEGORY_SHARES = [0.32, 0.26, 0.18, 0.14, 0.10]
# Tag rates per category (rows: CATEGORIES; columns: TAGS): tags go with garments.
TAG_RATES = np.array(
    [
        [0.22, 0.35, 0.08],  # BLOUSES
        [0.18, 0.45, 0.06],  # CASUAL_DRESSES
        [0.25, 0.30, 0.08],  # MINI_DRESSES
        [0.10, 0.08, 0.40],  # SHIRTS
        [0.15, 0.15, 0.10],  # TANK_TOPS
    ]
)

# Silhouettes in unit coordinates (x right, y down), one polygon per category.
_SILHOUETTES = {
    "BLOUSES": [
        (0.38, 0.15),
        (0.50, 0.30),
        (0.62, 0.15),
        (0.80, 0.22),
        (0.92, 0.48),
        (0.76, 0.53),
        (0.71, 0.38),
        (0.80, 0.74),
        (0.20, 0.74),
        (0.29, 0.38),
        (0.24, 0.53),
        (0.08, 0.48),
        (0.20, 0.22),
    ],
    "CASUAL_DRESSES": [
        (0.39, 0.06),
        (0.50, 0.12),
        (0.61, 0.06),
        (0.75, 0.12),
        (0.82, 0.27),
        (0.70, 0.30),
        (0.65, 0.42),
        (0.82, 0.96),
        (0.18, 0.96),
        (0.35, 0.42),
        (0.30, 0.30),
        (0.18, 0.27),
        (0.25, 0.12),
    ],
    "MINI_DRESSES": [
        (0.37, 0.10),
        (0.43, 0.10),
        (0.44, 0.26),
        (0.56, 0.26),
        (0.57, 0.10),
        (0.63, 0.10),
        (0.65, 0.40),
        (0.84, 0.68),
        (0.16, 0.68),
        (0.35, 0.40),
    ],
    "SHIRTS": [
        (0.36, 0.14),
        (0.45, 0.20),
        (0.55, 0.20),
        (0.64, 0.14),
        (0.84, 0.26),
        (0.94, 0.78),
        (0.83, 0.80),
        (0.75, 0.42),
        (0.75, 0.84),
        (0.25, 0.84),
        (0.25, 0.42),
        (0.17, 0.80),
        (0.06, 0.78),
        (0.16, 0.26),
    ],
    "TANK_TOPS": [
        (0.34, 0.14),
        (0.40, 0.14),
        (0.43, 0.30),
        (0.57, 0.30),
        (0.60, 0.14),
        (0.66, 0.14),
        (0.69, 0.40),
        (0.70, 0.74),
        (0.30, 0.74),
        (0.31, 0.40),
    ],
}


@dataclass(frozen=True)
class GeneratedDataset:
    root: Path
    images_dir: Path
    data_path: Path
    test_path: Path
    test_labels_path: Path  # the generator knows the test truth; real data does not ship it


def _contrast(colour: tuple[int, int, int], rng: np.random.Generator) -> tuple[int, int, int]:
    luma = 0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2]
    if rng.random() < 0.3:  # sometimes a bright colour of its own
        return tuple(int(v) for v in rng.integers(0, 256, 3))  # type: ignore[return-value]
    return (250, 250, 248) if luma < 140 else (20, 20, 24)


def _rotated_coords(size: tuple[int, int], angle: float, rng: np.random.Generator) -> tuple:
    height, width = size[1], size[0]
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    xs += rng.uniform(0, 50)
    ys += rng.uniform(0, 50)
    cos, sin = math.cos(angle), math.sin(angle)
    return xs * cos + ys * sin, -xs * sin + ys * cos


def _polka_dots(size: tuple[int, int], colour: tuple, rng: np.random.Generator) -> Image.Image:
    spacing = rng.uniform(0.09, 0.17) * size[0]
    radius = spacing * rng.uniform(0.22, 0.34)
    u, v = _rotated_coords(size, rng.uniform(0, math.pi / 2), rng)
    # Every other row shifted by half a step, as printed dots are.
    row = np.floor(v / spacing)
    du = (u + (row % 2) * spacing / 2) % spacing - spacing / 2
    dv = v % spacing - spacing / 2
    mask = (du**2 + dv**2) <= radius**2
    return _layer(mask, colour)


def _checker(size: tuple[int, int], colour: tuple, rng: np.random.Generator) -> Image.Image:
    cell = rng.uniform(0.08, 0.15) * size[0]
    u, v = _rotated_coords(size, rng.uniform(-math.pi / 4, math.pi / 4), rng)
    mask = ((np.floor(u / cell) + np.floor(v / cell)) % 2) == 0
    return _layer(mask, colour, alpha=int(rng.integers(170, 256)))


def _layer(mask: np.ndarray, colour: tuple, alpha: int = 255) -> Image.Image:
    rgba = np.zeros((*mask.shape, 4), dtype=np.uint8)
    rgba[mask] = (*colour, alpha)
    return Image.fromarray(rgba, mode="RGBA")


def _florals(size: tuple[int, int], colour: tuple, rng: np.random.Generator) -> Image.Image:
    layer = Image.new("RGBA", size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    count = int(rng.integers(6, 18) * (size[0] / 128) ** 2)
    petal_colour = tuple(int(v) for v in rng.integers(0, 256, 3)) if rng.random() < 0.5 else colour
    for _ in range(max(count, 4)):
        cx, cy = rng.uniform(0, size[0]), rng.uniform(0, size[1])
        radius = rng.uniform(0.03, 0.07) * size[0]
        petals = int(rng.integers(5, 7))
        turn = rng.uniform(0, math.tau)
        for petal in range(petals):
            angle = turn + petal * math.tau / petals
            px, py = cx + math.cos(angle) * radius, cy + math.sin(angle) * radius
            r = radius * 0.62
            draw.ellipse((px - r, py - r, px + r, py + r), fill=(*petal_colour, 255))
        r = radius * 0.45
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=(245, 200, 40, 255))
        leaf = turn + math.pi / petals
        lx, ly = cx + math.cos(leaf) * radius * 1.9, cy + math.sin(leaf) * radius * 1.9
        draw.line((cx, cy, lx, ly), fill=(40, 120, 50, 255), width=max(1, int(radius / 3)))
    return layer


def _garment_image(
    *, category: str, colour: str, tags: np.ndarray, size: tuple[int, int], rng: np.random.Generator
) -> Image.Image:
    width, height = size
    background = tuple(int(v) for v in rng.integers(200, 246, 3))
    image = Image.new("RGB", size, background)
    # The garment's polygon, scaled, shifted and turned a little as a photo would be.
    scale = rng.uniform(0.82, 1.0)
    angle = rng.uniform(-0.14, 0.14)
    shift = rng.uniform(-0.06, 0.06, size=2)
    cos, sin = math.cos(angle), math.sin(angle)
    points = []
    for x, y in _SILHOUETTES[category]:
        x, y = (x - 0.5) * scale, (y - 0.5) * scale
        x, y = x * cos - y * sin, x * sin + y * cos
        points.append(((x + 0.5 + shift[0]) * width, (y + 0.5 + shift[1]) * height))
    mask = Image.new("L", size, 0)
    ImageDraw.Draw(mask).polygon(points, fill=255)

    fabric = Image.new("RGB", size, COLOURS[colour])
    if colour == "VARIOUS":
        stripes = ImageDraw.Draw(fabric)
        step = int(rng.integers(6, 14))
        for top in range(0, height, step):
            stripe = tuple(int(v) for v in rng.integers(0, 256, 3))
            stripes.rectangle((0, top, width, top + step), fill=stripe)
    base = COLOURS[colour] if colour != "VARIOUS" else (128, 128, 128)
    painters = {"checker": _checker, "polka dot": _polka_dots, "floral": _florals}
    for tag in ("checker", "polka dot", "floral"):  # a checker under dots under flowers
        if tags[TAGS.index(tag)]:
            layer = painters[tag](size, _contrast(base, rng), rng)
            fabric.paste(layer, (0, 0), layer)
    # Folds: a soft light-to-dark shading across the garment.
    shade = np.linspace(rng.uniform(0.8, 0.95), rng.uniform(1.0, 1.1), width, dtype=np.float32)
    pixels = np.asarray(fabric, dtype=np.float32) * shade[np.newaxis, :, np.newaxis]
    fabric = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    image.paste(fabric, (0, 0), mask)
    outline = ImageDraw.Draw(image)
    outline.line([*points, points[0]], fill=(60, 60, 60), width=1)
    if rng.random() < 0.3:
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 0.9)))
    return image


def dataset_generate(
    *,
    output_dir: Path,
    count: int,
    test_count: int = 0,
    image_size: int = 128,
    seed: int = 0,
) -> GeneratedDataset:
    """Write a garment dataset in the marketplace's format into ``output_dir``.

    ``count`` labelled rows (``data.parquet``) and ``test_count`` unlabelled ones
    (``test.parquet``, with their truth in ``test_labels.parquet``), each with an image
    ``images/<uuid>.jpg`` of about ``image_size`` pixels a side (sizes vary by up to 15%). The
    same seed writes the same files. Categories and tags are imbalanced; a garment may have
    several tags or none; JPEG qualities vary from 55 to 95.
    """
    output_dir = Path(output_dir)
    images_dir = output_dir / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    colour_names = list(COLOURS)
    # Common colours first: black and white garments dominate listings.
    colour_weights = np.array([1.0 / (1 + rank * 0.25) for rank in range(len(colour_names))])
    colour_weights /= colour_weights.sum()
    rows: list[dict] = []
    for _ in range(count + test_count):
        category_index = int(rng.choice(len(CATEGORIES), p=CATEGORY_SHARES))
        tags = (rng.random(len(TAGS)) < TAG_RATES[category_index]).astype(np.int64)
        colour = str(rng.choice(colour_names, p=colour_weights))
        uuid = str(uuid_lib.UUID(bytes=rng.bytes(16), version=4))
        side = int(image_size * rng.uniform(0.9, 1.15))
        size = (side, int(side * rng.uniform(1.0, 1.3)))  # portrait photos, mostly
        image = _garment_image(
            category=CATEGORIES[category_index], colour=colour, tags=tags, size=size, rng=rng
        )
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=int(rng.integers(55, 96)))
        image_path(images_dir=images_dir, uuid=uuid).write_bytes(buffer.getvalue())
        rows.append(
            {
                "uuid": uuid,
                "cc3": CATEGORIES[category_index],
                "color1": colour,
                **{tag: int(tags[i]) for i, tag in enumerate(TAGS)},
            }
        )

    def write(path: Path, table_rows: list[dict], columns: list[str]) -> None:
        table = pa.table({column: [row[column] for row in table_rows] for column in columns})
        pq.write_table(table, path)

    dataset = GeneratedDataset(
        root=output_dir,
        images_dir=images_dir,
        data_path=output_dir / "data.parquet",
        test_path=output_dir / "test.parquet",
        test_labels_path=output_dir / "test_labels.parquet",
    )
    write(dataset.data_path, rows[:count], DATA_COLUMNS)
    write(dataset.test_path, rows[count:], ["uuid"])
    write(dataset.test_labels_path, rows[count:], DATA_COLUMNS)
    return dataset
