"""saat data prepare: dataset folders from synthetic trees laid out like the official downloads
(tests/official_layouts.py)."""

from __future__ import annotations

import json
import re
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import official_layouts as ol
from saat.data import load_dataset
from saat.data.check import check_folder
from saat.data.formats import read_folder
from saat.data.prepare import PROTOCOLS, file_sha256, list_prepared, per_class_split, prepare_dataset


def quiet(name, raw, out, **kw):
    return prepare_dataset(name, raw, out, verbose=False, **kw)


def rows_by_path(folder: Path) -> dict[str, dict[str, np.ndarray]]:
    listing = read_folder(folder)
    return {split: dict(zip(s.paths, s.labels)) for split, s in listing.splits.items()}


def check_split_structure(rows, n_kept):
    query, database, train = set(rows["query"]), set(rows["database"]), set(rows["train"])
    assert not query & database and train <= database
    assert len(query | database) == n_kept


def check_manifest(out: Path, manifest: dict):
    on_disk = json.loads((out / "manifest.json").read_text())
    assert on_disk == manifest
    assert set(manifest["files"]) == {"train.txt", "test.txt", "database.txt", "train_img.txt", "train_label.txt",
                                      "test_img.txt", "test_label.txt", "database_img.txt", "database_label.txt"}
    for name, digest in manifest["files"].items():
        assert file_sha256(out / name) == digest
    # small random query sets may miss a rare class (an honest empty-class finding); nothing else may be reported
    assert [f for f in check_folder(out) if f.kind != "empty-class"] == []


@pytest.mark.parametrize("zipped", [True, False])
def test_flickr25k_38_labels_from_the_official_zips_or_folders(tmp_path, zipped):
    truth = ol.make_flickr(tmp_path / "raw", n_images=300, zipped=zipped)
    m = quiet("flickr25k", tmp_path / "raw", tmp_path / "out", query_size=30, train_size=60)
    assert m["dataset"] == "FLICKR-25K" and m["classes"] == truth["classes38"] and len(m["classes"]) == 38
    assert m["counts"] == {"kept": 300, "dropped": {}, "train": 60, "query": 30, "database": 270}
    assert m["protocol"]["standard"] is False
    rows = rows_by_path(tmp_path / "out")
    check_split_structure(rows, 300)
    for split, items in rows.items():
        for path, label in items.items():
            number = int(re.search(r"im(\d+)\.jpg$", path).group(1))
            np.testing.assert_array_equal(label, truth["labels38"][number - 1], err_msg=path)
        assert m["class_counts"][split] == dict(zip(truth["classes38"],
                                                    np.sum(list(items.values()), axis=0).tolist()))
    if zipped:  # images extracted under OUT and listed relative to it; nothing but the images taken from the zip
        assert sorted(p.name for p in (tmp_path / "out" / "images").iterdir()) == ["mirflickr"]
        assert len(list((tmp_path / "out" / "images" / "mirflickr").iterdir())) == 300
        assert (tmp_path / "out" / "train_img.txt").read_text().startswith("images/mirflickr/im")
    else:  # listed where they are
        assert (tmp_path / "out" / "train_img.txt").read_text().startswith(str(tmp_path / "raw" / "mirflickr"))
    check_manifest(tmp_path / "out", m)


def test_flickr25k_24_labels_drops_the_images_without_a_label(tmp_path):
    truth = ol.make_flickr(tmp_path / "raw", n_images=300, zipped=False, seed=3)
    labelled = int(truth["labels24"].any(axis=1).sum())
    m = quiet("FLICKR-25K-24", tmp_path / "raw", tmp_path / "out", query_size=20, train_size=50)
    assert m["classes"] == truth["classes24"]
    assert m["counts"]["kept"] == labelled and m["counts"]["dropped"] == {"no label": 300 - labelled}
    assert m["unlabelled"] == {"train": 0, "query": 0, "database": 0}
    ds = load_dataset(dataset_dir=tmp_path / "out", verbose=False)
    assert ds.n_classes == 24 and len(ds.query) + len(ds.database) == labelled


def test_the_split_is_seeded(tmp_path):
    ol.make_flickr(tmp_path / "raw", n_images=200, zipped=False)
    kw = dict(query_size=20, train_size=40)
    a = quiet("flickr25k", tmp_path / "raw", tmp_path / "a", seed=0, **kw)["files"]
    b = quiet("flickr25k", tmp_path / "raw", tmp_path / "b", seed=0, **kw)["files"]
    c = quiet("flickr25k", tmp_path / "raw", tmp_path / "c", seed=1, **kw)["files"]
    assert a == b and a["test.txt"] != c["test.txt"]


@pytest.mark.parametrize("windows_prefix", [True, False])
def test_nuswide_21_most_frequent_concepts_per_class_protocol(tmp_path, windows_prefix):
    truth = ol.make_nuswide(tmp_path / "raw", n_images=2000, missing=5, windows_prefix=windows_prefix)
    m = quiet("nus-wide", tmp_path / "raw", tmp_path / "out", query_size=5, train_size=10)
    assert m["classes"] == [f"concept{i:02d}" for i in range(21)]  # frequencies fall with the index
    kept = np.ones(2000, dtype=bool)
    kept[truth["absent"]] = False
    kept &= truth["labels"][:, :21].any(axis=1)
    assert m["counts"]["kept"] == int(kept.sum())
    assert m["counts"]["dropped"]["image not on disk"] == 5
    assert m["counts"]["query"] == 21 * 5 and m["counts"]["train"] == 21 * 10
    rows = rows_by_path(tmp_path / "out")
    check_split_structure(rows, int(kept.sum()))
    for split, per_class in (("query", 5), ("train", 10)):
        assert min(m["class_counts"][split].values()) >= per_class
    index = {f"{tmp_path / 'raw' / 'Flickr'}/{p}": i for i, p in enumerate(truth["paths"])}
    for items in rows.values():
        for path, label in items.items():
            np.testing.assert_array_equal(label, truth["labels"][index[path], :21])
    assert not {truth["paths"][i] for i in truth["absent"]} & {p.split("Flickr/")[1] for p in index}.intersection(
        p.split("Flickr/")[1] for items in rows.values() for p in items)
    check_manifest(tmp_path / "out", m)


def test_nuswide_81_concepts(tmp_path):
    truth = ol.make_nuswide(tmp_path / "raw", n_images=1500, missing=0)
    m = quiet("NUS-WIDE-81", tmp_path / "raw", tmp_path / "out", query_size=100, train_size=300)
    assert m["classes"] == list(ol.NUS_CONCEPTS)
    assert m["counts"]["kept"] == int(truth["labels"].any(axis=1).sum())
    assert (m["counts"]["query"], m["counts"]["train"]) == (100, 300)


def nus_columns(truth: dict, n_classes: int) -> list[int]:
    """The planted concepts the protocol keeps: the ``n_classes`` most frequent over the image list (ties by name),
    in Concepts81 order."""
    counts = truth["labels"].sum(axis=0)
    return sorted(sorted(range(81), key=lambda c: (-int(counts[c]), ol.NUS_CONCEPTS[c]))[:n_classes])


def check_nus_rows(raw: Path, out: Path, truth: dict, manifest: dict, n_classes: int):
    """The columns are the planted top concepts (``n_classes``, not the 243 Labels_* files of Groundtruth) and every
    listed row equals the planted AllLabels row of its image."""
    columns = nus_columns(truth, n_classes)
    assert manifest["classes"] == [ol.NUS_CONCEPTS[c] for c in columns]
    index = {f"{raw / 'Flickr'}/{p}": i for i, p in enumerate(truth["paths"])}
    for items in rows_by_path(out).values():
        for path, label in items.items():
            np.testing.assert_array_equal(label, truth["labels"][index[path]][columns], err_msg=path)


@pytest.mark.parametrize("zip_prefix", ["Groundtruth/", ""])
@pytest.mark.parametrize("name, n_classes", [("NUS-WIDE", 21), ("NUS-WIDE-81", 81)])
def test_nuswide_groundtruth_zip_reads_alllabels_not_traintestlabels(tmp_path, zip_prefix, name, n_classes):
    raw, out = tmp_path / "raw", tmp_path / "out"
    truth = ol.make_nuswide(raw, n_images=400, missing=0, layout="groundtruth-zip", zip_prefix=zip_prefix)
    with zipfile.ZipFile(raw / "Groundtruth.zip") as zf:  # as the official zip: 81 + 162 Labels_*.txt files
        members = zf.namelist()
    assert sum(m.startswith(f"{zip_prefix}AllLabels/Labels_") for m in members) == 81
    assert sum(m.startswith(f"{zip_prefix}TrainTestLabels/Labels_") for m in members) == 162
    assert 0 < truth["train"].sum() < 400  # so the Train/Test files' row counts differ from the image list's
    assert not (raw / "Groundtruth").exists()
    sizes = dict(query_size=3, train_size=6) if name == "NUS-WIDE" else dict(query_size=40, train_size=80)
    m = quiet(name, raw, out, **sizes)
    assert len(m["classes"]) == n_classes  # not 243
    assert m["sources"][1] == f"{raw / 'Groundtruth.zip'}:{zip_prefix}AllLabels"
    assert m["counts"]["kept"] == int(truth["labels"][:, nus_columns(truth, n_classes)].any(axis=1).sum())
    check_nus_rows(raw, out, truth, m, n_classes)
    check_manifest(out, m)


def test_nuswide_groundtruth_zip_with_two_alllabels_folders_is_refused(tmp_path):
    raw = tmp_path / "raw"
    ol.make_nuswide(raw, n_images=100, missing=0, layout="groundtruth-zip")
    with zipfile.ZipFile(raw / "Groundtruth.zip", "a") as zf:
        zf.writestr("AllLabels/Labels_concept00.txt", "1\n" * 100)
    with pytest.raises(ValueError, match=r"Groundtruth.zip: AllLabels/ occurs more than once \(AllLabels/ and "
                                         r"Groundtruth/AllLabels/\); keep one copy"):
        quiet("NUS-WIDE", raw, tmp_path / "out", query_size=1, train_size=1)


@pytest.mark.parametrize("zip_prefix, image_list", [("NUS-WIDE/", True), ("", "zip")])
def test_nuswide_single_re_release_zip(tmp_path, zip_prefix, image_list):
    """The current re-release: one NUS-WIDE.zip with Groundtruth/ (AllLabels/ and TrainTestLabels/) and
    ConceptsList/; the image list comes from the original release (unpacked or ImageList.zip)."""
    raw, out = tmp_path / "raw", tmp_path / "out"
    truth = ol.make_nuswide(raw, n_images=400, missing=3, layout="nus-wide-zip", zip_prefix=zip_prefix,
                            image_list=image_list)
    assert sorted(p.name for p in raw.iterdir()) == sorted(["Flickr", "NUS-WIDE.zip"] + (
        ["ImageList"] if image_list is True else ["ImageList.zip"]))
    m = quiet("NUS-WIDE", raw, out, query_size=3, train_size=6)
    nus_zip = raw / "NUS-WIDE.zip"
    assert len(m["classes"]) == 21
    assert m["sources"][1:3] == [f"{nus_zip}:{zip_prefix}Groundtruth/AllLabels",
                                 f"{nus_zip}:{zip_prefix}ConceptsList/Concepts81.txt"]
    assert m["counts"]["dropped"]["image not on disk"] == 3
    check_nus_rows(raw, out, truth, m, 21)
    check_manifest(out, m)


def test_nuswide_single_zip_without_an_image_list_says_what_to_add(tmp_path):
    raw = tmp_path / "raw"
    ol.make_nuswide(raw, n_images=50, missing=0, layout="nus-wide-zip", image_list=False)
    with pytest.raises(FileNotFoundError) as err:
        quiet("NUS-WIDE", raw, tmp_path / "out", query_size=1, train_size=1)
    message = str(err.value)
    assert "\n" not in message and message.startswith("the NUS-WIDE image list ImageList/Imagelist.txt not found")
    assert message.endswith("NUS-WIDE.zip holds the ground truth but no image list (the images in ground-truth row "
                            f"order); put the official ImageList.zip (or its ImageList/Imagelist.txt) in {raw} as "
                            "well")


def test_manifest_protocol_kept_gives_the_number_kept(tmp_path):
    """A partial download with --query-size/--train-size: the number kept, and the official one beside it."""
    ol.make_flickr(tmp_path / "flickr", n_images=120, zipped=False)
    m = quiet("flickr25k", tmp_path / "flickr", tmp_path / "o1", query_size=10, train_size=20)
    assert m["protocol"]["kept"] == ("all 120 images (25,000 in the official download), with the 24 potential and 14 "
                                     "relevant labels (38); rows without any label are kept")
    ol.make_cifar10(tmp_path / "cifar", per_class=3)
    m = quiet("cifar10", tmp_path / "cifar", tmp_path / "o2", query_size=1, train_size=1)
    assert m["protocol"]["kept"] == ("all 30 images (60,000 in the official download) of the five training batches "
                                     "and the test batch, pooled in that order")
    truth = ol.make_nuswide(tmp_path / "nus", n_images=300, missing=4)
    m = quiet("NUS-WIDE", tmp_path / "nus", tmp_path / "o3", query_size=2, train_size=3)
    kept = np.ones(300, dtype=bool)
    kept[truth["absent"]] = False
    kept &= truth["labels"][:, nus_columns(truth, 21)].any(axis=1)
    assert m["counts"]["kept"] == int(kept.sum())
    assert m["protocol"]["kept"] == (f"the {int(kept.sum()):,} listed images on disk (195,834 in the official "
                                     "download) with at least one of the 21 most frequent concepts")
    # the complete download: its number alone
    assert PROTOCOLS["FLICKR-25K"].describe(25_000)["kept"].startswith("all 25,000 images, with the 24 potential")
    assert PROTOCOLS["NUS-WIDE"].describe(195_834, 100, 500) == {
        **PROTOCOLS["NUS-WIDE"].describe(195_834), "kept": "the 195,834 listed images on disk with at least one of "
                                                           "the 21 most frequent concepts"}
    assert PROTOCOLS["NUS-WIDE-81"].describe(1_234)["kept"] == ("the 1,234 listed images on disk with at least one of "
                                                                "the 81 concepts")


def test_per_class_split_takes_each_class_in_turn():
    labels = np.zeros((40, 3), dtype=np.uint8)
    labels[:20, 0] = 1
    labels[10:30, 1] = 1
    labels[25:, 2] = 1
    rows = per_class_split(labels, 3, 4, np.random.default_rng(0), ["a", "b", "c"])
    assert len(rows["query"]) == 9 and len(rows["train"]) == 12
    assert (labels[rows["query"]].sum(axis=0) >= 3).all() and (labels[rows["train"]].sum(axis=0) >= 4).all()
    assert not set(rows["query"]) & set(rows["database"]) and set(rows["train"]) <= set(rows["database"])
    with pytest.raises(ValueError, match="class 'b' has 10 images left for its 20 queries per class"):
        per_class_split(labels, 20, 1, np.random.default_rng(0), ["a", "b", "c"])


@pytest.mark.parametrize("zipped", [True, False])
def test_coco_2014_labels_from_the_instances_and_unlabelled_images_dropped(tmp_path, zipped):
    truth = ol.make_coco(tmp_path / "raw", n_train=120, n_val=80, unlabelled=(7, 5), zipped=zipped)
    m = quiet("coco", tmp_path / "raw", tmp_path / "out", query_size=20, train_size=50)
    assert m["classes"] == [f"category{i}" for i in truth["cat_ids"]] and len(m["classes"]) == 80
    assert m["counts"]["kept"] == 188 and m["counts"]["dropped"] == {"no label": 12}
    assert m["protocol"]["kept"] == ("the 188 train2014 + val2014 images on disk (122,218 in the official download) "
                                     "with at least one of the 80 categories")
    rows = rows_by_path(tmp_path / "out")
    check_split_structure(rows, 188)
    for items in rows.values():
        for path, label in items.items():
            key = "/".join(Path(path).parts[-2:])
            expected = np.zeros(80, dtype=np.uint8)
            expected[[truth["cat_ids"].index(c) for c in truth["truth"][key]]] = 1
            np.testing.assert_array_equal(label, expected, err_msg=key)
    check_manifest(tmp_path / "out", m)


def test_cifar10_png_files_and_the_same_split_as_the_pickles(tmp_path):
    from saat.data.cifar import cifar10_split

    truth = ol.make_cifar10(tmp_path / "raw", per_class=12)
    m = quiet("cifar10", tmp_path / "raw", tmp_path / "out", seed=4, query_size=2, train_size=5)
    assert m["counts"] == {"kept": 120, "dropped": {}, "train": 50, "query": 20, "database": 100}
    expected = cifar10_split(truth["labels"], 4, query_per_class=2, train_per_class=5)
    listing = read_folder(tmp_path / "out")
    for split, s in listing.splits.items():
        pool_rows = [int(Path(p).stem) for p in s.paths]
        assert pool_rows == expected[split].tolist()
        np.testing.assert_array_equal(s.labels.argmax(axis=1), truth["labels"][pool_rows])
    first = listing.splits["query"].paths[0]
    pixels = np.asarray(Image.open(first)).transpose(2, 0, 1)
    np.testing.assert_array_equal(pixels, truth["images"][int(Path(first).stem)])
    check_manifest(tmp_path / "out", m)


def test_refuses_to_overwrite_and_bad_input_gets_one_line(tmp_path):
    ol.make_flickr(tmp_path / "raw", n_images=120, zipped=False)
    quiet("flickr25k", tmp_path / "raw", tmp_path / "out", query_size=10, train_size=20)
    before = (tmp_path / "out" / "test.txt").read_text()
    with pytest.raises(FileExistsError, match="already holds manifest.json and 9 more dataset files; pass --overwrite"):
        quiet("flickr25k", tmp_path / "raw", tmp_path / "out", query_size=10, train_size=20, seed=1)
    assert (tmp_path / "out" / "test.txt").read_text() == before
    m = quiet("flickr25k", tmp_path / "raw", tmp_path / "out", query_size=10, train_size=20, seed=1, overwrite=True)
    assert (tmp_path / "out" / "test.txt").read_text() != before and m["seed"] == 1
    with pytest.raises(ValueError, match="the protocol needs 1,700 queries .* only 120 images"):
        quiet("flickr25k", tmp_path / "raw", tmp_path / "big")
    (tmp_path / "empty-raw").mkdir()
    with pytest.raises(FileNotFoundError, match="MIRFLICKR-25K annotation files .* not found"):
        quiet("flickr25k", tmp_path / "empty-raw", tmp_path / "o2")
    with pytest.raises(FileNotFoundError, match="--raw folder not found"):
        quiet("coco", tmp_path / "nowhere", tmp_path / "o3")
    with pytest.raises(ValueError, match="ImageNet-100 is not one of them"):
        quiet("imagenet100", tmp_path / "raw", tmp_path / "o4")
    with pytest.raises(ValueError, match="--seed must be a non-negative integer"):
        quiet("flickr25k", tmp_path / "raw", tmp_path / "o5", seed=-1)
    (tmp_path / "raw" / "mirflickr25k_annotations_v080" / "dog.txt").write_text("1\n99999\n")
    with pytest.raises(ValueError, match=r"dog.txt, line 2: expected the number of an image \(1..120\), got '99999'"):
        quiet("flickr25k", tmp_path / "raw", tmp_path / "o6", query_size=10, train_size=20)


def test_data_check_reports_lists_changed_after_prepare(tmp_path, capsys):
    from saat.cli import main

    ol.make_flickr(tmp_path / "raw", n_images=600, zipped=True)  # 200 queries: every class has one
    assert main(["data", "prepare", "mirflickr", "--raw", str(tmp_path / "raw"), "--out", str(tmp_path / "out"),
                 "--query-size", "200", "--train-size", "250"]) == 0
    out = capsys.readouterr().out
    assert "FLICKR-25K: 38 classes, kept 600 images (dropped: none); train 250 / query 200 / database 400" in out
    assert main(["data", "check", str(tmp_path / "out")]) == 0
    capsys.readouterr()
    lines = (tmp_path / "out" / "train_label.txt").read_text().splitlines()
    lines[0] = lines[0].replace("0", "1", 1)  # still a valid row: only the manifest can tell
    (tmp_path / "out" / "train_label.txt").write_text("\n".join(lines) + "\n")
    (tmp_path / "out" / "database.txt").unlink()
    assert main(["data", "check", str(tmp_path / "out")]) == 1
    out = capsys.readouterr().out
    assert "train_label.txt: manifest: sha256 differs from manifest.json" in out
    assert "database.txt: manifest: listed in manifest.json but missing" in out
    assert "2 findings" in out


def test_cli_lists_every_prepared_entry(capsys):
    from saat.cli import main
    from saat.cli.data_cmd import PREPARED

    assert list(PREPARED) == list_prepared()
    assert main(["list", "datasets"]) == 0
    lines = capsys.readouterr().out.splitlines()
    for name in list_prepared():
        assert any(line.strip().startswith(name + ":") and line.endswith(f"saat data prepare {name}") for line in lines)
    assert not any("ImageNet-100:" in line and "prepare" in line for line in lines)


@pytest.mark.slow
def test_flickr25k_at_full_size_gives_the_catalog_protocol(tmp_path):
    """25,000 placeholder images and the default protocol: the catalog's split sizes, no size warning on load."""
    ol.make_flickr(tmp_path / "raw", n_images=25_000, zipped=False, image_bytes=b"", unlabelled=4_985 / 25_000)
    m = quiet("FLICKR-25K", tmp_path / "raw", tmp_path / "out")
    assert m["counts"] == {"kept": 25_000, "dropped": {}, "train": 5_000, "query": 1_700, "database": 23_300}
    assert m["protocol"]["standard"] is True
    assert m["protocol"]["kept"].startswith("all 25,000 images, with the 24 potential")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the catalog warns when split sizes differ from the protocol's
        ds = load_dataset("FLICKR-25K", dataset_dir=tmp_path / "out", verbose=False)
    assert (len(ds.train), len(ds.query), len(ds.database), ds.n_classes) == (5_000, 1_700, 23_300, 38)
