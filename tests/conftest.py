import functools
import shutil
import subprocess
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from torch import nn


def make_retrieval_data(seed, n_query, n_db, n_bits, n_classes, label_p=0.2, code_p=0.5):
    rng = np.random.default_rng(seed)
    q = np.where(rng.random((n_query, n_bits)) < code_p, 1, -1).astype(np.int8)
    db = np.where(rng.random((n_db, n_bits)) < code_p, 1, -1).astype(np.int8)
    ql = (rng.random((n_query, n_classes)) < label_p).astype(np.uint8)
    dl = (rng.random((n_db, n_classes)) < label_p).astype(np.uint8)
    return q, db, ql, dl


@pytest.fixture
def retrieval_data():
    return make_retrieval_data


# ------------------------------------------------------------------------------ tiny in-memory unit-test fixtures


class TinyHashModel(nn.Module):
    """``h = tanh(alpha * linear(flatten(x)))`` on small images in [0, 1]: a hashing model with the interface the
    attacks use (``forward(x, alpha)``, ``bits``, ``encode``) whose forward pass costs microseconds.

    The bias centres each bit at the mid-grey image (``linear(0.5) = 0``), so every bit of every image sits within
    reach of a moderate L-infinity perturbation."""

    def __init__(self, shape=(3, 8, 8), bits=16, seed=0):
        super().__init__()
        dim = int(np.prod(shape))
        self.shape, self.bits = tuple(shape), bits
        self.linear = nn.Linear(dim, bits)
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            self.linear.weight.copy_(torch.randn(bits, dim, generator=g))
            self.linear.bias.copy_(-0.5 * self.linear.weight.sum(1))

    def forward(self, x, alpha=1.0):
        return torch.tanh(alpha * self.linear(x.flatten(1)))

    @torch.no_grad()
    def encode(self, x):
        return torch.where(self(x) >= 0, 1, -1).to(torch.int8)


@pytest.fixture
def tiny_hash_model():
    """A fresh :class:`TinyHashModel` (3 x 8 x 8 images, 16 bits), float32, eval mode."""
    return TinyHashModel().eval()


@dataclass
class PlantedRetrieval:
    """A retrieval problem planted in a :class:`TinyHashModel`: ``n_classes`` one-hot classes, each a prototype
    image plus a little noise. Training and database codes are the model's own codes of their images, so benign
    retrieval is near perfect; ``targets`` gives each query another class (for targeted attacks)."""

    model: TinyHashModel
    x: torch.Tensor  # (Q, 3, 8, 8) query images in [0, 1]; pixels 0 and 1 of channel 0 sit on the box edges
    y: torch.Tensor  # (Q, C) one-hot query labels
    targets: torch.Tensor  # (Q, C) one-hot target labels, never the query's class
    train_codes: torch.Tensor  # (N, K) +-1 float
    train_labels: torch.Tensor  # (N, C)
    db_codes: torch.Tensor  # (M, K) +-1 float
    db_labels: torch.Tensor  # (M, C)
    train_images: torch.Tensor  # (N, 3, 8, 8): the images train_codes encode (ProS-GAN trains on them)

    def codes(self, images: torch.Tensor) -> np.ndarray:
        """+-1 int8 codes of images, as the retrieval metrics take them."""
        return self.model.encode(images).numpy()


def make_planted_retrieval(model: TinyHashModel, n_classes=4, per_class=(8, 12, 4), spread=0.15, noise=0.01,
                           seed=0) -> PlantedRetrieval:
    g = torch.Generator().manual_seed(seed)
    prototypes = 0.5 + spread * (2 * torch.rand((n_classes, *model.shape), generator=g) - 1)

    def split(n):
        labels = torch.arange(n_classes).repeat_interleave(n)
        images = prototypes[labels] + noise * (2 * torch.rand((len(labels), *model.shape), generator=g) - 1)
        images[:, 0, 0, 0], images[:, 0, 0, 1] = 0.0, 1.0  # on the box edges: attacks must keep them in [0, 1]
        return images.clamp(0, 1), labels

    (train_x, train_c), (db_x, db_c), (x, c) = (split(n) for n in per_class)
    eye = torch.eye(n_classes)
    codes = [model.encode(images).float() for images in (train_x, db_x)]
    return PlantedRetrieval(model, x, eye[c], eye[(c + 1 + c % (n_classes - 1)) % n_classes], codes[0],
                            eye[train_c], codes[1], eye[db_c], train_x)


@pytest.fixture
def planted_retrieval(tiny_hash_model):
    """:class:`PlantedRetrieval` on ``tiny_hash_model``: 4 classes; 32 training, 48 database, 16 query images."""
    return make_planted_retrieval(tiny_hash_model)


def write_prototype_dataset(root, sizes: dict, side: int, classes: int, seed: int = 0) -> None:
    """A dataset folder in the paired list format (``{split}_img.txt`` / ``{split}_label.txt`` + PNG files): per
    class a random prototype image, each image its class's prototype plus noise, one-hot labels. ``sizes`` maps the
    splits (train, test, database) to their image counts."""
    from pathlib import Path

    from PIL import Image

    root = Path(root)
    rng = np.random.default_rng(seed)
    prototypes = rng.integers(40, 216, size=(classes, side, side, 3))
    (root / "img").mkdir(parents=True)
    for split, n in sizes.items():
        paths, labels = [], []
        for i, c in enumerate(rng.integers(0, classes, size=n)):
            image = np.clip(prototypes[c] + rng.integers(-40, 41, size=(side, side, 3)), 0, 255).astype(np.uint8)
            paths.append(f"img/{split}-{i}.png")
            Image.fromarray(image).save(root / paths[-1])
            labels.append(" ".join("1" if k == c else "0" for k in range(classes)))
        (root / f"{split}_img.txt").write_text("\n".join(paths) + "\n")
        (root / f"{split}_label.txt").write_text("\n".join(labels) + "\n")


# ------------------------------------------------------------------------ fresh processes without the import cost

@functools.cache
def _fork_server():
    """The multiprocessing context whose fork server has imported saat, torch and torch._dynamo (started once)."""
    import multiprocessing

    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["saat", "saat.cli", "torch._dynamo", "conftest"])
    return context


def _fresh_target(fn, args, kwargs, env, cwd, out, err):
    """What a fresh process runs: the given environment and working folder, stdout and stderr into files, the
    thread count a new interpreter would take from OMP_NUM_THREADS and its default start method (multiprocessing set
    the fork server's for this child: the data loaders' workers would start through it, slowly), then ``fn``; an int
    it returns is the exit status."""
    import multiprocessing
    import os
    import sys

    multiprocessing.set_start_method(None, force=True)
    os.environ.clear()
    os.environ.update(env)
    if cwd is not None:
        os.chdir(cwd)
    for fd, path in ((1, out), (2, err)):
        handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(handle, fd)
        os.close(handle)
    if env.get("OMP_NUM_THREADS"):
        torch.set_num_threads(int(env["OMP_NUM_THREADS"]))
    result = fn(*args, **kwargs)
    sys.exit(result if isinstance(result, int) else 0)


class FreshProcess:
    """``fn(*args, **kwargs)`` started in a new process, like ``python -c`` would run it (its own memory, its own
    exit status, killable), but forked from a server process that has imported saat, torch and torch._dynamo
    already: a start costs a fork instead of the ~6 s of those imports (the kill-and-resume tests start dozens)."""

    def __init__(self, fn, *args, env: dict, cwd=None, **kwargs):
        import tempfile

        self.name = getattr(fn, "__name__", "fn")
        self._tmp = tempfile.TemporaryDirectory()
        self._out, self._err = f"{self._tmp.name}/stdout", f"{self._tmp.name}/stderr"
        self.process = _fork_server().Process(target=_fresh_target,
                                              args=(fn, args, kwargs, dict(env), cwd, self._out, self._err))
        self.process.start()

    def kill(self) -> None:
        self.process.kill()

    def wait(self, timeout: float | None = None) -> subprocess.CompletedProcess:
        """The exit status (negative: killed by that signal) and the captured output; past ``timeout`` seconds the
        process is killed and TimeoutError raised."""
        self.process.join(timeout)
        if self.process.is_alive():
            self.kill()
            self.process.join()
            raise TimeoutError(f"{self.name} still ran after {timeout} s: killed")
        with open(self._out) as out, open(self._err) as err:
            done = subprocess.CompletedProcess(self.name, self.process.exitcode, out.read(), err.read())
        self._tmp.cleanup()
        return done


def fresh_process(fn, *args, env: dict, cwd=None, timeout: float | None = None,
                  **kwargs) -> subprocess.CompletedProcess:
    """:class:`FreshProcess` run to its end (killed past ``timeout`` seconds)."""
    return FreshProcess(fn, *args, env=env, cwd=cwd, **kwargs).wait(timeout)


def script_main(path, argv: list[str]) -> int:
    """``python PATH ARGV`` (for :class:`FreshProcess`): the script as ``__main__``, its folder first on the path."""
    import os
    import runpy
    import sys

    sys.argv = [str(path), *argv]
    sys.path.insert(0, os.path.dirname(os.path.abspath(path)))
    runpy.run_path(str(path), run_name="__main__")
    return 0


def cli_main(argv: list[str]) -> int:
    """``saat ARGV`` as the console script runs it (for :func:`fresh_process`)."""
    from saat.cli import main

    return main(argv)


# ------------------------------------------------------------------------------------ end-to-end (slow) fixtures


@pytest.fixture(scope="session")
def quick_demo(tmp_path_factory):
    """`saat demo --quick` run once per session: a CSQ model on fashion-mosaic, every attack, SAAT and ATRDH
    models, a report. End-to-end tests read its outputs; attack tests reuse its trained model.

    Shared by the whole session: tests that write anything (attack results, targets, caches, a purifier, a
    rebuilt report) use :func:`quick_demo_copy` or :func:`mosaic_run_copy` instead, so that no result depends on
    the order the tests run in."""
    from saat.reproduce.demo import run_demo

    out = tmp_path_factory.mktemp("demo")
    result = run_demo(out, quick=True, device="cpu", progress=False)
    return out, result


@pytest.fixture(scope="session")
def mosaic_run(quick_demo):
    """The demo's CSQ small_cnn model (3 epochs on the shipped fashion-mosaic data). Read-only: see
    :func:`mosaic_run_copy`."""
    return quick_demo[0] / "csq"


def _without_attack_networks(directory, names):
    """copytree filter: leave out the attack networks cached in a run's ``cache/`` (THA's and ProS-GAN's, ~55 MB
    per run); a test that runs those attacks with its own settings trains its own networks anyway. The cached
    codes (``cache/*.npy``) are kept, so a copy never re-encodes a split."""
    from pathlib import Path

    return {n for n in names if n.endswith(".pt")} if Path(directory).name == "cache" else set()


@pytest.fixture
def mosaic_run_copy(mosaic_run, tmp_path):
    """A private copy of the demo's CSQ run directory (model, cached codes, attack results and targets: ~8 MB),
    for tests that write into a run directory."""
    return shutil.copytree(mosaic_run, tmp_path / "csq", ignore=_without_attack_networks)


@pytest.fixture(scope="module")
def mosaic_run_module_copy(mosaic_run, tmp_path_factory):
    """Like :func:`mosaic_run_copy`, one copy shared by the tests of a module (for a module-scoped result computed
    from it, e.g. an uninterrupted run the tests compare against)."""
    return shutil.copytree(mosaic_run, tmp_path_factory.mktemp("mosaic") / "csq", ignore=_without_attack_networks)


@pytest.fixture
def quick_demo_copy(quick_demo, tmp_path):
    """A private copy of the whole demo directory (``(out, result)`` like :func:`quick_demo`), for tests that run
    the demo again on it."""
    out, result = quick_demo
    return shutil.copytree(out, tmp_path / "demo", ignore=_without_attack_networks), result


def _snapshot(root):
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")
            if p.is_file()}


@pytest.fixture(autouse=True)
def _shared_demo_stays_unchanged(request):
    """Fails a test that changed anything in the session's shared demo directory (results would then depend on
    the order tests run in): tests that write take ``mosaic_run_copy`` or ``quick_demo_copy``."""
    if "quick_demo" not in request.fixturenames:
        yield
        return
    root = request.getfixturevalue("quick_demo")[0]
    before = _snapshot(root)
    yield
    after = _snapshot(root)
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    if changed:
        pytest.fail(f"the test changed the shared demo directory ({', '.join(changed[:5])}"
                    f"{', ...' if len(changed) > 5 else ''}); a test that writes takes mosaic_run_copy or "
                    "quick_demo_copy", pytrace=False)
