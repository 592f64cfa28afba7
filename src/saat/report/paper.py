"""The paper's published numbers (docs/paper-results.md#the-papers-results: Tables I and II of Yuan et al., TIFS 2023),
as data.

Values are MAP in percent (t-MAP for the targeted rows), one tuple per dataset in the order of ``BITS``. They are
context for our measurements, never mixed with them: the report labels every one of them as the paper's.
"""

from __future__ import annotations

BITS = (16, 32, 48, 64)
DATASETS = ("FLICKR-25K", "NUS-WIDE", "MS-COCO")
SOURCE = "Yuan et al., Semantic-Aware Adversarial Training for Reliable Deep Hashing Retrieval, IEEE TIFS 2023"

# Table I, untargeted rows: "clean" is the undefended model on benign queries; the others are MAP under attack.
TABLE1_UNTARGETED: dict[str, dict[str, tuple[float, ...]]] = {
    "clean": {"FLICKR-25K": (81.33, 82.28, 82.47, 81.85), "NUS-WIDE": (76.70, 77.47, 77.74, 78.11),
              "MS-COCO": (56.26, 57.41, 56.70, 56.64)},
    "hag": {"FLICKR-25K": (22.53, 21.68, 21.96, 22.56), "NUS-WIDE": (13.62, 13.32, 13.67, 13.55),
            "MS-COCO": (12.57, 13.97, 13.90, 13.88)},
    "sdha": {"FLICKR-25K": (21.82, 19.37, 19.39, 19.20), "NUS-WIDE": (13.85, 12.98, 14.49, 14.56),
             "MS-COCO": (11.61, 12.38, 12.63, 13.08)},
    "mainstay": {"FLICKR-25K": (14.92, 14.53, 14.59, 14.82), "NUS-WIDE": (11.93, 11.89, 11.85, 12.02),
                 "MS-COCO": (9.96, 11.21, 10.96, 10.87)},
}

# Table I, targeted rows (t-MAP). The paper gives no benign t-MAP.
TABLE1_TARGETED: dict[str, dict[str, tuple[float, ...]]] = {
    "p2p": {"FLICKR-25K": (81.45, 81.83, 82.49, 82.98), "NUS-WIDE": (66.94, 69.19, 69.20, 69.12),
            "MS-COCO": (51.96, 52.74, 52.62, 51.73)},
    "dhta": {"FLICKR-25K": (82.98, 83.51, 83.67, 83.94), "NUS-WIDE": (69.10, 70.92, 71.03, 70.93),
             "MS-COCO": (52.57, 53.38, 53.23, 52.34)},
    "prosgan": {"FLICKR-25K": (73.06, 66.44, 62.34, 87.15), "NUS-WIDE": (72.33, 74.29, 73.96, 72.30),
                "MS-COCO": (33.02, 33.30, 31.63, 31.28)},
    "tha": {"FLICKR-25K": (86.80, 87.84, 86.94, 86.73), "NUS-WIDE": (69.78, 72.98, 73.90, 70.29),
            "MS-COCO": (53.18, 52.88, 47.80, 37.63)},
    "mainstay": {"FLICKR-25K": (88.62, 88.90, 89.07, 89.00), "NUS-WIDE": (70.68, 73.99, 74.00, 74.33),
                 "MS-COCO": (55.75, 58.00, 56.97, 56.58)},
}

# Table II: MAP of adversarially trained models, clean and under each untargeted attack.
TABLE2: dict[str, dict[str, dict[str, tuple[float, ...]]]] = {
    "atrdh": {
        "clean": {"FLICKR-25K": (71.35, 72.16, 72.29, 72.08), "NUS-WIDE": (64.58, 64.57, 67.20, 67.90),
                  "MS-COCO": (49.41, 50.89, 50.38, 51.57)},
        "hag": {"FLICKR-25K": (41.92, 42.36, 43.80, 44.08), "NUS-WIDE": (41.59, 41.93, 42.31, 42.29),
                "MS-COCO": (27.19, 26.78, 26.20, 26.75)},
        "sdha": {"FLICKR-25K": (39.09, 37.77, 38.39, 38.60), "NUS-WIDE": (41.61, 40.36, 40.78, 40.59),
                 "MS-COCO": (28.09, 27.17, 27.55, 27.75)},
        "mainstay": {"FLICKR-25K": (32.68, 32.40, 33.39, 33.32), "NUS-WIDE": (38.53, 38.16, 38.95, 38.99),
                     "MS-COCO": (23.93, 23.24, 23.14, 22.82)},
    },
    "saat": {
        "clean": {"FLICKR-25K": (74.19, 73.49, 73.41, 70.07), "NUS-WIDE": (61.05, 60.51, 61.06, 60.57),
                  "MS-COCO": (46.91, 49.41, 50.14, 52.01)},
        "hag": {"FLICKR-25K": (38.05, 43.76, 48.22, 60.89), "NUS-WIDE": (53.07, 52.72, 52.56, 52.90),
                "MS-COCO": (33.83, 34.01, 35.77, 36.69)},
        "sdha": {"FLICKR-25K": (35.26, 40.52, 45.78, 59.62), "NUS-WIDE": (53.22, 52.15, 52.57, 52.83),
                 "MS-COCO": (35.99, 35.07, 37.23, 36.91)},
        "mainstay": {"FLICKR-25K": (30.55, 34.77, 39.35, 53.76), "NUS-WIDE": (50.35, 50.33, 50.20, 50.16),
                     "MS-COCO": (30.98, 30.87, 32.63, 33.43)},
    },
}

# The defenses whose rows Table II reports; the undefended row of Table II is Table I's.
TABLE2_DEFENSES = ("atrdh", "saat")


def paper_dataset(name: str | None) -> str | None:
    """The paper's spelling of a dataset name ("flickr25k", "MS-COCO", "nus_wide" ...), or None if not a paper
    dataset."""
    if not name:
        return None
    key = "".join(ch for ch in name.lower() if ch.isalnum())
    aliases = {"flickr25k": "FLICKR-25K", "mirflickr25k": "FLICKR-25K", "flickr": "FLICKR-25K",
               "nuswide": "NUS-WIDE", "nuswide21": "NUS-WIDE", "mscoco": "MS-COCO", "coco": "MS-COCO"}
    return aliases.get(key)


def paper_value(table: dict[str, dict[str, tuple[float, ...]]], row: str, dataset: str, bits: int) -> float | None:
    """One number of a paper table (percent), or None when the paper has no such row, dataset or bit length."""
    if bits not in BITS or row not in table or dataset not in table[row]:
        return None
    return table[row][dataset][BITS.index(bits)]
