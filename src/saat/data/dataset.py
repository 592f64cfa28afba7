"""``RetrievalDataset``: the three splits of a retrieval benchmark plus what an evaluation needs to know."""

from __future__ import annotations

from typing import Any

from .splits import RetrievalSplit


class RetrievalDataset:
    """Train / query / database splits sharing one label space.

    Attributes: ``name`` (canonical), ``n_classes`` (C), ``default_topk`` (mAP depth; None = whole database),
    ``image_size`` (side S of delivered images), ``multi_label``, ``class_names`` (list or None), ``info`` (a
    JSON-serialisable dict: format, root, split sizes, seeds, provenance) and the splits ``train``, ``query``,
    ``database``.
    """

    def __init__(self, name: str, *, train: RetrievalSplit, query: RetrievalSplit, database: RetrievalSplit,
                 default_topk: int | None, multi_label: bool, info: dict[str, Any],
                 class_names: list[str] | None = None) -> None:
        self.name = name
        self.train, self.query, self.database = train, query, database
        self.default_topk = default_topk
        self.multi_label = bool(multi_label)
        self.class_names = class_names
        widths = {s.n_classes for s in (train, query, database)}
        sizes = {s.image_size for s in (train, query, database)}
        if len(widths) != 1 or len(sizes) != 1:
            raise ValueError(f"{name}: splits disagree on classes {widths} or image size {sizes}")
        self.n_classes = widths.pop()
        self.image_size = sizes.pop()
        self.info = dict(info)
        self.info.setdefault("name", name)
        self.info.update(n_classes=self.n_classes, image_size=self.image_size, multi_label=self.multi_label,
                         default_topk=default_topk, sizes=self.sizes())

    @property
    def splits(self) -> dict[str, RetrievalSplit]:
        return {"train": self.train, "query": self.query, "database": self.database}

    def sizes(self) -> dict[str, int]:
        return {k: len(v) for k, v in self.splits.items()}

    def summary(self) -> str:
        """One line: ``NAME: train 5,000 · query 1,700 · database 23,300 · 38 classes``. (The pipelines add the
        random-ranking mAP, a retrieval metric, when they open a dataset.)"""
        s = self.sizes()
        return (f"{self.name}: train {s['train']:,} · query {s['query']:,} · database {s['database']:,} · "
                f"{self.n_classes} classes")

    def __repr__(self) -> str:
        return (f"RetrievalDataset({self.summary()}, image_size={self.image_size}, multi_label={self.multi_label}, "
                f"default_topk={self.default_topk})")
