"""``saat data check DIR``: every problem of a dataset folder at once (docs/data.md#checking-a-dataset-folder).

The loader stops at the first error; this reads the whole folder (either format) and lists one finding per line,
with the file and line: missing and unreadable images, label rows of the wrong width or with values other than 0/1,
duplicate paths within a split, query images that also sit in the database, classes with no training or no
query item, and, in a folder written by ``saat data prepare``, lists whose sha256 no longer matches manifest.json.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from .formats import LIST_FILES, PAIRED_FILES, SPLITS, _read_lines, detect_format
from .prepare import manifest_problems
from .splits import image_problem


@dataclass(frozen=True)
class Finding:
    kind: str  # missing-image, unreadable-image, label-width, label-value, label-count, duplicate, overlap,
    # empty-class, manifest
    where: str  # file and line, or the split
    detail: str

    def __str__(self) -> str:
        return f"{self.where}: {self.kind}: {self.detail}"


def _lines(path: Path, split: str) -> list[tuple[int, str]]:
    """(line number, stripped line) of the non-blank lines, as the loader reads them."""
    return list(zip(*_read_lines(path, split)))


def check_folder(folder: str | os.PathLike, image_root: str | os.PathLike | None = None,
                 verify_images: bool = True) -> list[Finding]:
    """Every finding of the dataset folder (an empty list: nothing wrong). ``verify_images``: open and verify each
    image file (else only its existence is checked)."""
    folder = Path(folder)
    fmt = detect_format(folder)
    base = Path(image_root) if image_root is not None else folder
    findings = [Finding("manifest", name, problem) for name, problem in manifest_problems(folder)]
    width: int | None = None
    entries: dict[str, list[tuple[str, int, str, list[int] | None]]] = {}  # split -> (path, line, file, labels)
    for split in SPLITS:
        rows = []
        if fmt == "paired":
            img_name, label_name = PAIRED_FILES[split]
            paths, labels = _lines(folder / img_name, split), _lines(folder / label_name, split)
            if len(paths) != len(labels):
                findings.append(Finding("label-count", label_name, f"{len(labels)} label rows for {len(paths)} image "
                                        f"lines in {img_name}"))
            for (n, path), (m, label_line) in zip(paths, labels):
                rows.append((path, n, img_name, label_line.split(), m, label_name))
        else:
            list_name = LIST_FILES[split]
            for n, line in _lines(folder / list_name, split):
                tokens = line.split()
                rows.append((tokens[0], n, list_name, tokens[1:], n, list_name))
        parsed = []
        for path, n, img_file, tokens, m, label_file in rows:
            if width is None:
                width = len(tokens)
            values = None
            if len(tokens) != width:
                findings.append(Finding("label-width", f"{label_file}:{m}", f"{len(tokens)} label values, expected "
                                        f"{width} (the first label row)"))
            elif any(t not in ("0", "1") for t in tokens):
                bad = next(t for t in tokens if t not in ("0", "1"))
                findings.append(Finding("label-value", f"{label_file}:{m}", f"{bad!r} is not 0 or 1"))
            else:
                values = [int(t) for t in tokens]
            parsed.append((path, n, img_file, values))
        entries[split] = parsed

    seen_images: set[str] = set()  # each file is checked once, even when several splits list it
    for split, parsed in entries.items():
        counts = Counter(path for path, *_ in parsed)
        first_line = {}
        for path, n, img_file, _ in parsed:
            if path in first_line:
                findings.append(Finding("duplicate", f"{img_file}:{n}", f"{path} is listed {counts[path]} times in the "
                                        f"{split} split (first on line {first_line[path]})"))
                continue
            first_line[path] = n
            resolved = path if os.path.isabs(path) else os.path.join(str(base), path)
            if resolved in seen_images:
                continue
            seen_images.add(resolved)
            if not os.path.isfile(resolved):
                findings.append(Finding("missing-image", f"{img_file}:{n}", f"{resolved} is a directory, not an image "
                                        "file" if os.path.isdir(resolved) else f"{resolved} does not exist"))
            elif verify_images and (problem := image_problem(resolved)) is not None:
                findings.append(Finding("unreadable-image", f"{img_file}:{n}", f"{resolved}: {problem}"))
    database = {path for path, *_ in entries["database"]}
    overlap = [(path, n, img_file) for path, n, img_file, _ in entries["query"] if path in database]
    if overlap:
        path, n, img_file = overlap[0]
        findings.append(Finding("overlap", f"{img_file}:{n}", f"{len(overlap)} query images also sit in the "
                                "database (first: " + path + "); they retrieve themselves"))
    if width:
        for split in ("train", "query"):
            present = [0] * width
            for *_, values in entries[split]:
                for c, v in enumerate(values or ()):
                    present[c] += v
            empty = [c for c, k in enumerate(present) if k == 0]
            if empty:
                findings.append(Finding("empty-class", split, f"classes {empty} have no {split} item"))
    return findings
