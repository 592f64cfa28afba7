"""Reading dataset folders in the two on-disk formats of docs/data.md#on-disk-formats, with errors that name file and
line.

* ``paired``: ``{train,test,database}_img.txt`` (one image path per line) next to
  ``{train,test,database}_label.txt`` (one row of whitespace-separated 0/1 integers per image).
* ``list``: ``{train,test,database}.txt``, each line ``relative/path.jpg 0 1 0 ... 1`` (the path is the first
  whitespace-separated token, so it cannot contain spaces).

"test" is the query split. Blank lines are ignored (line numbers in messages still count them). Relative
image paths are resolved against the image root (default: the dataset folder); absolute paths are used as
they are. Every listed image must exist; decoding is checked lazily when an image is read.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from itertools import chain
from pathlib import Path

import numpy as np

SPLITS = ("train", "query", "database")
PAIRED_FILES = {
    "train": ("train_img.txt", "train_label.txt"),
    "query": ("test_img.txt", "test_label.txt"),
    "database": ("database_img.txt", "database_label.txt"),
}
LIST_FILES = {"train": "train.txt", "query": "test.txt", "database": "database.txt"}
FORMAT_HELP = (
    "a dataset folder needs either the paired files "
    + ", ".join(f for pair in PAIRED_FILES.values() for f in pair)
    + " (one image path per *_img.txt line, one row of 0/1 labels per *_label.txt line; test = query) "
    + "or the list files " + ", ".join(LIST_FILES.values())
    + " (lines 'relative/path.jpg 0 1 0 ... 1'; test = query)"
)


@dataclass
class SplitListing:
    """The images and labels of one split as listed on disk."""

    paths: list[str]  # resolved image paths
    labels: np.ndarray  # uint8 (n, C) of 0/1
    list_file: str  # the file that lists the images
    lines: np.ndarray  # int32 (n,): 1-based line of each image in ``list_file``


@dataclass
class FolderListing:
    """A parsed dataset folder."""

    format: str  # "paired" or "list"
    root: Path
    image_root: Path
    n_classes: int
    splits: dict[str, SplitListing]
    files: dict[str, list[str]]  # split -> the list/label file names it was read from


def detect_format(folder: str | os.PathLike) -> str:
    """``"paired"`` or ``"list"``; a ``FileNotFoundError`` says which files are missing otherwise."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"dataset folder not found: {folder} ({FORMAT_HELP})")
    paired = [f for pair in PAIRED_FILES.values() for f in pair]
    listed = list(LIST_FILES.values())
    have_paired = [f for f in paired if (folder / f).is_file()]
    have_listed = [f for f in listed if (folder / f).is_file()]
    if len(have_paired) == len(paired):
        return "paired"
    if len(have_listed) == len(listed):
        return "list"
    if have_paired:
        missing = [f for f in paired if f not in have_paired]
        raise FileNotFoundError(f"dataset folder {folder} has paired-format files but is missing "
                                f"{', '.join(missing)}; {FORMAT_HELP}")
    if have_listed:
        missing = [f for f in listed if f not in have_listed]
        raise FileNotFoundError(f"dataset folder {folder} has list-format files but is missing "
                                f"{', '.join(missing)}; {FORMAT_HELP}")
    raise FileNotFoundError(f"no dataset list files in {folder}: {FORMAT_HELP}")


def read_folder(folder: str | os.PathLike, image_root: str | os.PathLike | None = None,
                expected_width: int | None = None, what: str = "", path_map=None) -> FolderListing:
    """Parse and validate a dataset folder of either format (detected automatically). ``expected_width``: the
    class count the labels must have (a catalog entry's, named by ``what``), checked on each row before its values.
    Paired label files with one class index per line (``0`` … ``9``) are read as one-hot rows, with a note.
    ``path_map``: ``["OLD=NEW", ...]`` rewrites listed path prefixes (lists with the authors' absolute paths)."""
    folder = Path(folder)
    fmt = detect_format(folder)
    base = Path(image_root) if image_root is not None else folder
    if not base.is_dir():
        raise FileNotFoundError(f"image root not found: {base}")
    width = _Width()
    width.path_map = parse_path_map(path_map)
    if expected_width is not None:
        width.n, width.origin = int(expected_width), f"{what or 'the catalog entry'} has {int(expected_width)} classes"
    if fmt == "paired":
        width.class_indices = _class_index_width(folder, width.n)
        if width.class_indices is not None:
            width.n = width.class_indices
            print(f"note: {folder}: the label files hold one class index per line; read as one-hot rows of "
                  f"{width.n} classes", file=sys.stderr, flush=True)
    splits, files = {}, {}
    for split in SPLITS:  # train first: its first label row fixes C
        if fmt == "paired":
            img_name, label_name = PAIRED_FILES[split]
            splits[split] = _read_paired(folder / img_name, folder / label_name, base, width, split)
            files[split] = [img_name, label_name]
        else:
            splits[split] = _read_list(folder / LIST_FILES[split], base, width, split)
            files[split] = [LIST_FILES[split]]
    return FolderListing(fmt, folder, base, width.n, splits, files)


class _Width:
    """The label width C, fixed by the first label row read (or by the catalog), and where it came from;
    ``class_indices``: the label files hold one class index per line (C classes)."""

    def __init__(self) -> None:
        self.n: int | None = None
        self.origin = ""
        self.class_indices: int | None = None
        self.path_map: list[tuple[str, str]] = []  # --path-map rules, applied to listed paths


def _class_index_width(folder: Path, expected: int | None) -> int | None:
    """C when every non-blank line of the three paired label files is one non-negative integer and some exceed 1
    (class indices, as some CIFAR-10 lists have); None otherwise (0/1 rows)."""
    top = -1
    for split in SPLITS:
        try:
            _, lines = _read_lines(folder / PAIRED_FILES[split][1], split)
        except (OSError, ValueError):
            return None  # reported by the regular reader
        if not all(line.isdigit() for line in lines):
            return None
        top = max(top, max(int(line) for line in lines))
    if top <= 1:
        return None
    if expected is not None and top >= expected:
        raise ValueError(f"{folder}: the label files hold class indices up to {top}, but the dataset has {expected} "
                         "classes")
    return expected if expected is not None else top + 1


def _read_lines(path: Path, split: str) -> tuple[list[int], list[str]]:
    """Non-blank lines (stripped) and their 1-based line numbers; an empty split is an error."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not a UTF-8 text file ({exc})") from None
    numbers, lines = [], []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if line:
            numbers.append(number)
            lines.append(line)
    if not lines:
        raise ValueError(f"{path}: no entries; the {split} split needs at least one image")
    return numbers, lines


def _parse_labels(rows: list[list[str]], numbers: list[int], path: Path, width: _Width, offset: int) -> np.ndarray:
    """0/1 label rows -> uint8 (n, C). ``offset`` = tokens before the labels on each line (for messages)."""
    if width.n is None:
        if not rows[0]:
            raise ValueError(f"{path}, line {numbers[0]}: expected at least one 0/1 label value, got none")
        width.n, width.origin = len(rows[0]), f"the width of the first label row, {path.name} line {numbers[0]}"
    n_cols = width.n
    # Fast path: every row has C tokens, all "0" or "1". Anything else is diagnosed line by line below.
    if all(len(r) == n_cols for r in rows) and set(chain.from_iterable(rows)) <= {"0", "1"}:
        flat = np.frombuffer("".join(chain.from_iterable(rows)).encode("ascii"), dtype=np.uint8) - ord("0")
        return flat.reshape(len(rows), n_cols)
    out = np.empty((len(rows), n_cols), dtype=np.uint8)
    for i, (row, number) in enumerate(zip(rows, numbers)):
        if len(row) != n_cols:
            raise ValueError(f"{path}, line {number}: expected {n_cols} label values ({width.origin}), got "
                             f"{len(row)}")
        for j, token in enumerate(row):
            try:
                value = int(token)
            except ValueError:
                raise ValueError(f"{path}, line {number}, column {j + 1 + offset}: expected an integer 0 or 1, "
                                 f"got {token!r}") from None
            if value not in (0, 1):
                raise ValueError(f"{path}, line {number}, column {j + 1 + offset}: expected a label value 0 or 1, "
                                 f"got {token!r}")
            out[i, j] = value
    return out


def parse_path_map(rules) -> list[tuple[str, str]]:
    """``["OLD=NEW", ...]`` -> [(OLD, NEW)], longest OLD first (the most specific rule wins)."""
    pairs = []
    for rule in rules or ():
        if not isinstance(rule, str) or "=" not in rule or not rule.split("=", 1)[0]:
            raise ValueError(f"--path-map expects OLD=NEW (a path prefix in the lists and its local replacement), "
                             f"got {rule!r}")
        old, new = rule.split("=", 1)
        pairs.append((old, new))
    return sorted(pairs, key=lambda p: -len(p[0]))


def _map_path(path: str, path_map: list[tuple[str, str]]) -> str:
    for old, new in path_map:
        if path.startswith(old):
            return new + path[len(old):]
    return path


def _resolve(paths: list[str], numbers: list[int], list_file: Path, base: Path,
             path_map: list[tuple[str, str]] = ()) -> list[str]:
    base_str = str(base)
    paths = [_map_path(p, path_map) for p in paths] if path_map else paths
    resolved = [p if os.path.isabs(p) else os.path.join(base_str, p) for p in paths]
    missing = [i for i, p in enumerate(resolved) if not os.path.isfile(p)]
    if missing:
        i = missing[0]
        more = f"; {len(missing) - 1} more listed images are missing too" if len(missing) > 1 else ""
        if os.path.isdir(resolved[i]):
            raise FileNotFoundError(f"{list_file}, line {numbers[i]}: {resolved[i]} is a directory, not an image "
                                    f"file: list each image file (relative paths are resolved against {base_str})"
                                    f"{more}")
        raise FileNotFoundError(f"{list_file}, line {numbers[i]}: image not found: {resolved[i]} (relative paths "
                                f"are resolved against {base_str}){more}")
    return resolved


def _read_paired(img_file: Path, label_file: Path, base: Path, width: _Width, split: str) -> SplitListing:
    img_numbers, paths = _read_lines(img_file, split)
    label_numbers, label_lines = _read_lines(label_file, split)
    if len(paths) != len(label_lines):
        raise ValueError(f"{img_file} has {len(paths)} image lines but {label_file} has {len(label_lines)} label "
                         f"rows; the two files must pair up line by line")
    if width.class_indices is not None:
        labels = np.eye(width.class_indices, dtype=np.uint8)[[int(line) for line in label_lines]]
    else:
        labels = _parse_labels([line.split() for line in label_lines], label_numbers, label_file, width, offset=0)
    resolved = _resolve(paths, img_numbers, img_file, base, width.path_map)
    return SplitListing(resolved, labels, str(img_file), np.asarray(img_numbers, dtype=np.int32))


def _read_list(list_file: Path, base: Path, width: _Width, split: str) -> SplitListing:
    numbers, lines = _read_lines(list_file, split)
    rows = [line.split() for line in lines]
    # The label width: known from an earlier split, else the 0/1 tokens that end the first line (so that a first
    # path with spaces does not count as labels).
    n = width.n
    if n is None:
        first = rows[0]
        n = next((len(first) - 1 - i for i in range(len(first) - 1, 0, -1) if first[i] not in ("0", "1")),
                 len(first) - 1)
    paths = []
    for i, (line, row) in enumerate(zip(lines, rows)):
        if n and len(row) - 1 > n:  # a path with spaces: the last n tokens are the labels, if that file exists
            path = line.rsplit(None, n)[0]
            mapped = _map_path(path, width.path_map)
            if os.path.isfile(mapped if os.path.isabs(mapped) else os.path.join(str(base), mapped)):
                rows[i] = [path, *row[len(row) - n:]]
        paths.append(rows[i][0])
    labels = _parse_labels([r[1:] for r in rows], numbers, list_file, width, offset=1)
    resolved = _resolve(paths, numbers, list_file, base, width.path_map)
    return SplitListing(resolved, labels, str(list_file), np.asarray(numbers, dtype=np.int32))
