"""The retrieval-example figure (the paper's Fig. 5): a query, its top-10 database items for the benign query and for
its adversarial version; relevant items (sharing a label with the query) framed green, irrelevant ones red.

Inputs, all written by ``saat attack`` / ``saat evaluate``: the attack's ``examples.npz`` (benign and adversarial
query images), ``adv_codes.npy`` + ``query_indices.npy``, the run's cached query and database codes
(``cache/codes-{query,database}-<checkpoint hash>.npy``), and the database images and labels from the dataset.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..runs import RunDir
from ..utils.io import load_npy, load_npz
from .collect import ATTACK_NAMES, AttackResult, Run
from .figures import save_figure

TOP = 10
MAX_QUERIES = 3
RELEVANT, IRRELEVANT, QUERY = "#1a9e2f", "#d62728", "#1f4e99"


class ExampleUnavailable(Exception):
    """An input of the figure is missing; the message says which, for the report."""


def open_run_dataset(run_dir: Path):
    """The run's dataset, opened the way ``saat evaluate`` opens it (a seam the tests replace)."""
    from ..pipelines.common import load_run, open_dataset

    run = load_run(run_dir)
    return open_dataset(run.config, run.image_size)


@dataclass
class ExampleInputs:
    query_indices: np.ndarray  # (n,) rows of the query split
    benign_images: np.ndarray  # (n, 3, H, W) uint8
    adversarial_images: np.ndarray
    benign_codes: np.ndarray  # (n, K)
    adversarial_codes: np.ndarray
    db_codes: np.ndarray  # (M, K)


def _load_npy(path: Path, what: str) -> np.ndarray:
    if not path.is_file():
        raise ExampleUnavailable(f"{what} missing ({path.name})")
    try:
        return load_npy(path)
    except (OSError, ValueError) as exc:
        raise ExampleUnavailable(f"{what} unreadable ({exc})") from None


def load_inputs(run: Run, attack: AttackResult, max_queries: int = MAX_QUERIES) -> ExampleInputs:
    if attack.purifier:
        raise ExampleUnavailable("attack evaluated through an input purifier (its codes are not the model's)")
    npz = attack.files.examples_npz
    if not npz.is_file():
        raise ExampleUnavailable("examples.npz missing (attack run by an older saat)")
    try:
        ex = load_npz(npz)
        ex_idx, benign, adversarial = ex["query_indices"], ex["benign"], ex["adversarial"]
    except (OSError, ValueError) as exc:
        raise ExampleUnavailable(f"examples.npz unreadable ({exc})") from None
    except KeyError as exc:
        raise ExampleUnavailable(f"examples.npz lacks the array {exc}") from None
    adv_codes = _load_npy(attack.files.adv_codes, "adversarial codes")
    attacked = _load_npy(attack.files.query_indices, "attacked query indices")
    digest = attack.record.checkpoint or run.checkpoint_hash
    if not digest:
        raise ExampleUnavailable("checkpoint hash unknown (needed to find the cached codes)")
    query_codes = _load_npy(RunDir(run.path).codes_cache(f"codes-query-{digest}"), "cached query codes")
    db_codes = _load_npy(RunDir(run.path).codes_cache(f"codes-database-{digest}"), "cached database codes")
    position = {int(q): i for i, q in enumerate(np.asarray(attacked).reshape(-1))}
    keep = [i for i, q in enumerate(np.asarray(ex_idx).reshape(-1)) if int(q) in position
            and 0 <= int(q) < len(query_codes)][:max_queries]
    if not keep or len(adv_codes) != len(position):
        raise ExampleUnavailable("examples.npz, adv_codes.npy and query_indices.npy do not match")
    rows = np.asarray(ex_idx).reshape(-1)[keep].astype(np.int64)
    return ExampleInputs(rows, np.asarray(benign)[keep], np.asarray(adversarial)[keep], query_codes[rows],
                         adv_codes[[position[int(q)] for q in rows]], db_codes)


def _hwc(img: np.ndarray) -> tuple[np.ndarray, str | None]:
    """(H, W) with a grey colormap when the 3 channels are identical (grayscale demo data), else (H, W, 3)."""
    img = np.asarray(img)
    if img.ndim == 3 and img.shape[0] in (1, 3):
        img = np.moveaxis(img, 0, -1)
    if img.ndim == 3 and (img.shape[-1] == 1 or (np.array_equal(img[..., 0], img[..., 1])
                                                 and np.array_equal(img[..., 0], img[..., 2]))):
        return img[..., 0], "gray"
    return img, None


def _to_u8(x) -> np.ndarray:
    """Images as uint8: splits deliver uint8 (0-255) or float (0-1) batches."""
    arr = x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)
    if arr.dtype == np.uint8:
        return arr
    return (np.clip(arr.astype(np.float32), 0, 1) * 255).round().astype(np.uint8)


def _label_text(labels: np.ndarray, class_names) -> str:
    """The query's label names, wrapped to the width of one thumbnail."""
    import textwrap

    idx = np.flatnonzero(np.asarray(labels) > 0)
    if class_names:
        text = ", ".join(str(class_names[i]) for i in idx if i < len(class_names)) or "no label"
    else:
        text = "classes " + ",".join(str(i) for i in idx) if len(idx) else "no label"
    return textwrap.fill(text, width=20)


def rank_examples(inputs: ExampleInputs, query_labels: np.ndarray, db_labels: np.ndarray, top: int = TOP
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(database indices (2n, top), relevance (2n, top)): rows 0..n-1 for the benign queries, n..2n-1 for their
    adversarial versions; relevant = shares a label with the (benign) query."""
    from ..retrieval import hamming_ranking

    codes = np.concatenate([inputs.benign_codes, inputs.adversarial_codes]).astype(np.int8)
    ranked = hamming_ranking(codes, inputs.db_codes.astype(np.int8), topk=top)
    labels = np.concatenate([query_labels, query_labels]).astype(np.float32)
    relevant = np.einsum("qtc,qc->qt", db_labels[ranked].astype(np.float32), labels) > 0
    return ranked, relevant


def retrieval_example_figure(path: Path, run: Run, attack: AttackResult, dataset=None,
                             max_queries: int = MAX_QUERIES) -> Path:
    """Draw the figure; raises :class:`ExampleUnavailable` with a reason when an input is missing."""
    inputs = load_inputs(run, attack, max_queries)
    if dataset is None:
        try:
            dataset = open_run_dataset(run.path)
        except Exception as exc:  # noqa: BLE001 - any failure to open the data only skips this figure
            raise ExampleUnavailable(f"dataset not available ({type(exc).__name__}: {exc})") from None
    db_labels = np.asarray(dataset.database.labels)
    query_labels = np.asarray(dataset.query.labels)[inputs.query_indices]
    if len(db_labels) != len(inputs.db_codes):
        raise ExampleUnavailable(f"cached database codes ({len(inputs.db_codes)}) do not match the dataset's "
                                 f"database ({len(db_labels)} items)")
    top, relevant = rank_examples(inputs, query_labels, db_labels)
    n = len(inputs.query_indices)
    needed = sorted({int(i) for i in top.reshape(-1)})
    images = _to_u8(dataset.database.__getitems__(needed)[0])
    image_of = {d: images[j] for j, d in enumerate(needed)}
    class_names = getattr(dataset, "class_names", None)

    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    cols = top.shape[1] + 1
    fig = Figure(figsize=(1.15 * cols, 1.45 * 2 * n + 0.9), dpi=100, layout="constrained")
    axes = fig.subplots(2 * n, cols, squeeze=False)
    for q in range(n):
        relevant_q = query_labels[q]
        for version in (0, 1):
            r = 2 * q + version
            ranked, rel = top[q + version * n], relevant[q + version * n]
            query_img = (inputs.benign_images if version == 0 else inputs.adversarial_images)[q]
            kind = "benign" if version == 0 else "adversarial"
            _show(axes[r, 0], query_img, QUERY,
                  f"{kind} query\n{_label_text(relevant_q, class_names)}\n{int(rel.sum())}/{len(ranked)} relevant")
            for c, (d, ok) in enumerate(zip(ranked, rel, strict=True), start=1):
                _show(axes[r, c], image_of[int(d)], RELEVANT if ok else IRRELEVANT, f"#{c}" if r == 0 else None)
            for c in range(len(ranked) + 1, cols):
                axes[r, c].set_axis_off()
    eps = "unbounded" if attack.eps_255 is None else f"ε {attack.eps_255:g}/255"
    fig.suptitle(f"Top-{top.shape[1]} retrieval, {run.name} ({run.label}) under "
                 f"{ATTACK_NAMES.get(attack.method, attack.method)}{' (targeted)' if attack.targeted else ''}, {eps}",
                 fontsize=11)
    fig.legend(handles=[Patch(facecolor="white", edgecolor=RELEVANT, linewidth=3,
                              label="relevant (shares a label with the query)"),
                        Patch(facecolor="white", edgecolor=IRRELEVANT, linewidth=3, label="irrelevant")],
               loc="outside lower center", ncol=2, fontsize=9, frameon=False)
    return save_figure(fig, path)


def _show(ax, img, frame: str, title: str | None) -> None:
    data, cmap = _hwc(img)
    ax.imshow(data, cmap=cmap, vmin=0, vmax=255, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_edgecolor(frame)
        spine.set_linewidth(3.5)
    if title:
        ax.set_title(title, fontsize=7)
