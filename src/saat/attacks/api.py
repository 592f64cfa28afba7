"""The tensor-level attack API (docs/attacks.md#your-own-model): any PyTorch hashing model, plain tensors in and out
(torchattacks' call shape).

    from saat.attacks import create_attack
    atk = create_attack("mainstay", model, eps=8/255, steps=100, train_codes=U, train_labels=Y)
    adv = atk(images, labels)                          # untargeted; images (B, 3, H, W) float in [0, 1]
    adv = atk(images, labels, target_labels=T)         # targeted, for the methods that support it

``model`` is any ``nn.Module`` or callable mapping images in [0, 1] to continuous codes (B, K); ``alpha=`` (the
tanh continuation) is passed only to forwards that accept it. What a method needs beyond the model is passed by
name (``train_codes``/``train_labels``: mainstay, CgAT, THA, targeted SDHA, ProS-GAN; ``db_codes``/``db_labels``:
DHTA and P2P anchors, THA's and ProS-GAN's target-label pool; ``train_images``: the images ProS-GAN trains its
generator on, a float tensor (N, 3, H, W) in [0, 1] or a saat split); each method declares its needs
(``ATTACKS.get(name).needs_untargeted`` / ``needs_targeted``), and a missing one raises an error naming it.
Labels are multi-hot (B, C) or class indices (B,) with ``num_classes``. Device and dtype come from the images; the
model's train/eval mode and its parameters' ``requires_grad`` are restored afterwards.
"""

from __future__ import annotations

import inspect
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ..config import check_settings
from ..runs import AttackRecord
from ..utils.device import precision_tag, with_amp
from ..utils.validation import check_codes, check_eps, check_images, check_labels, check_outputs, codes_tensor
from .base import frozen_eval
from .methods import ATTACKS, AttackContext


class HashingModel(nn.Module):
    """Wraps any model or callable images -> (B, K) continuous codes into the ``forward(x, alpha)`` the attacks
    call. ``alpha`` reaches the wrapped forward only if it has such a parameter (saat's HashModel does); otherwise
    the model runs as it is, and the continuation schedule has no effect on it."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.takes_alpha = _accepts_alpha(model)
        self.checked = False  # the outputs' values are checked on the first call only (no sync per attack step)

    def forward(self, x: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
        h = self.model(x, alpha=alpha) if self.takes_alpha else self.model(x)
        h = check_outputs(h, x.shape[0], values=not self.checked)
        self.checked = True
        return h


def _accepts_alpha(model) -> bool:
    fn = model.forward if isinstance(model, nn.Module) else model
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return "alpha" in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


class TensorAttack:
    """An attack method bound to a model and the attacker's knowledge; call it on a batch."""

    def __init__(self, name: str, model, *, eps: float, steps: int | None, knowledge: dict[str, Any],
                 num_classes: int | None, seed: int, progress: bool, settings: dict, cache_dir=None,
                 cache_key: str | None = None, amp: bool = False):
        self.name = ATTACKS.get(name).name
        self.amp = bool(amp)
        if cache_dir is not None and cache_key is None:
            if not isinstance(model, nn.Module):
                raise ValueError("cache_dir= needs cache_key= for a model that is not an nn.Module (the key names "
                                 "the attacked weights)")
            cache_key = state_hash(model)
        self.cache_dir, self.cache_key = cache_dir, cache_key or ""
        self.model = model
        self.wrapped = HashingModel(model)
        self.knowledge = knowledge
        self.num_classes = num_classes
        self.seed, self.progress = int(seed), bool(progress)
        self.settings = dict(settings)
        if eps is not None:
            self.settings["eps"] = check_eps(eps)
        if steps is not None:
            self.settings["steps"] = int(steps)
        check_settings(self.settings, ATTACKS.get(self.name).defaults, f"attack {self.name!r}")
        self._methods: dict[bool, Any] = {}

    def _needs(self, targeted: bool) -> None:
        cls = ATTACKS.get(self.name)
        needs = cls.needs_targeted if targeted else cls.needs_untargeted
        missing = sorted(k for k in needs if self.knowledge.get(k) is None)
        if missing:
            kind = "targeted" if targeted else "untargeted"
            raise ValueError(f"the {kind} {self.name} attack needs {', '.join(missing)}: pass "
                             f"{', '.join(f'{m}=...' for m in missing)} to create_attack")

    def _method(self, targeted: bool, like: torch.Tensor):
        cls = ATTACKS.get(self.name)
        if targeted and not cls.targeted:
            raise ValueError(f"the {self.name} attack is untargeted only: call it without target_labels")
        if not targeted and not cls.untargeted:
            raise ValueError(f"the {self.name} attack is targeted only: pass target_labels=... (B, C) or (B,)")
        if targeted not in self._methods:
            self._needs(targeted)
            k = self.knowledge
            dev = like.device
            with frozen_eval(self.wrapped), torch.no_grad():
                bits = self.wrapped(like[:1]).shape[1]

            def codes(name):
                c = k.get(name)
                if c is None:
                    return torch.zeros(0, bits, device=dev)
                c = codes_tensor(c, name, dev)
                if c.shape[1] != bits:
                    raise ValueError(f"{name} has {c.shape[1]} bits per code but the model outputs {bits}")
                return c

            def labels(name, width, codes_name, rows):
                y = k.get(name)
                if y is None:
                    return torch.zeros(0, width, device=dev)
                return check_labels(y, name, width, batch=rows if k.get(codes_name) is not None else None,
                                    batch_of=f"rows in {codes_name}").to(dev)

            width = self._width()
            train_codes, db_codes = codes("train_codes"), codes("db_codes")
            train_labels = labels("train_labels", width, "train_codes", len(train_codes))
            # Under amp the method's every pass through the model runs in mixed precision (its objective on the
            # float32 outputs); networks it trains against the model are cached apart from float32 ones.
            ctx = AttackContext(with_amp(self.wrapped, dev, self.amp), dev, train_codes, train_labels,
                                db_codes, labels("db_labels", width, "db_codes", len(db_codes)), seed=self.seed,
                                progress=self.progress, train_split=self._train_split(train_labels),
                                cache_dir=self.cache_dir,
                                checkpoint_hash=self.cache_key + precision_tag(dev, True) if self.amp
                                else self.cache_key)
            self._methods[targeted] = ATTACKS.get(self.name)(ctx, targeted=targeted, **self.settings)
        return self._methods[targeted]

    def _train_split(self, train_labels: torch.Tensor):
        """The training images as a split (ProS-GAN trains its generator on them), or None when not given."""
        images = self.knowledge.get("train_images")
        if images is None or hasattr(images, "__getitems__"):
            return images
        from ..data import FloatTensorSplit

        images = check_images(images)
        if images.shape[0] != train_labels.shape[0]:
            raise ValueError(f"train_images has {images.shape[0]} images but train_labels has "
                             f"{train_labels.shape[0]} rows")
        return FloatTensorSplit("train", images, train_labels.to(images.device))

    def _width(self, labels=None) -> int:
        """The number of classes: ``num_classes``, else the width of a multi-hot matrix given so far."""
        if self.num_classes is not None:
            return int(self.num_classes)
        for y in (self.knowledge.get("train_labels"), self.knowledge.get("db_labels"), labels):
            if y is not None and torch.as_tensor(y).ndim == 2:
                self.num_classes = int(torch.as_tensor(y).shape[1])
                return self.num_classes
        raise ValueError("class-index labels need num_classes= in create_attack (no multi-hot label matrix "
                         "to read the class count from)")

    def __call__(self, images: torch.Tensor, labels, target_labels=None, *, start=None) -> torch.Tensor:
        """Adversarial images for ``images`` with ``labels`` (and ``target_labels``: targeted). ``start``: images to
        start from instead of a random start (a warm start, projected onto the eps-ball; methods with
        ``warm_start``, built with ``random_start=False``)."""
        x = check_images(images)
        y = check_labels(labels, "labels", self._width(labels), batch=x.shape[0]).to(x.device)
        targeted = target_labels is not None
        t = (check_labels(target_labels, "target_labels", y.shape[1], batch=x.shape[0]).to(x.device)
             if targeted else None)
        method = self._method(targeted, x)
        if start is not None and not method.warm_start:
            raise ValueError(f"the {self.name} attack cannot start from given images (start=); it has no warm start")
        with frozen_eval(self.wrapped):  # mode and requires_grad restored, whatever the method does inside
            adv = method.attack(x, y, t) if start is None else method.attack(x, y, t, start=check_images(start))
        return adv.detach()

    def method(self, targeted: bool, images: torch.Tensor | None = None):
        """The underlying :class:`~saat.attacks.methods.AttackMethod` (built, and its networks trained, on first use,
        which needs a batch of ``images``): its ``settings_record()`` and, for THA and ProS-GAN,
        ``training_seconds``."""
        if targeted in self._methods:
            return self._methods[targeted]
        if images is None:
            raise ValueError(f"the {'targeted' if targeted else 'untargeted'} {self.name} attack has not run yet: "
                             "pass images to build it")
        return self._method(targeted, check_images(images))

    def replay(self, images: torch.Tensor, labels, target_labels=None) -> None:
        """Advance the attack's random streams as calling it on this batch would, without attacking (the batches
        before a process's own share of a sharded attack); raises NotImplementedError for a method that cannot
        (``method(targeted).replayable``)."""
        x = check_images(images)
        targeted = target_labels is not None
        y = check_labels(labels, "labels", self._width(labels), batch=x.shape[0]).to(x.device)
        t = (check_labels(target_labels, "target_labels", y.shape[1], batch=x.shape[0]).to(x.device)
             if targeted else None)
        self._method(targeted, x).replay(x, y, t)

    def theory_codes(self, images: torch.Tensor, labels, target_labels=None) -> torch.Tensor | None:
        """The codes the attack aims at (None where a method has none): -mainstay, +mainstay, anchors, prototypes."""
        x = check_images(images)
        targeted = target_labels is not None
        given = target_labels if targeted else labels
        y = check_labels(given, "labels", self._width(given), batch=x.shape[0]).to(x.device)
        return self._method(targeted, x).theory_codes(x, y)

    def __repr__(self) -> str:
        return f"TensorAttack({self.name!r}, settings={self.settings})"


def state_hash(model: nn.Module, length: int = 16) -> str:
    """A content hash of a module's state_dict (names, shapes, dtypes, values): what a cache of networks trained
    against the model is keyed by."""
    import hashlib

    h = hashlib.sha256()
    for key, value in model.state_dict().items():
        h.update(f"{key}{tuple(value.shape)}{value.dtype}".encode())
        h.update(value.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:length]


def create_attack(name: str, model, *, eps: float | None = 8 / 255, steps: int | None = None,
                  train_codes=None, train_labels=None, db_codes=None, db_labels=None, train_images=None,
                  num_classes: int | None = None, seed: int = 0, progress: bool = False, cache_dir=None,
                  cache_key: str | None = None, amp: bool = False, **settings) -> TensorAttack:
    """Build an attack by name (``list_attacks()``) on any hashing model (module docstring). ``eps`` defaults to
    8/255, the paper's; other settings (``step``, ``lr``, ``generator``, ``proto_steps``, ``gan_epochs``, ...)
    default to the method's paper values, as listed in ``saat.attacks.ATTACKS.get(name).defaults``. Networks an
    attack trains for itself (THA's and ProS-GAN's) are trained on its first call and kept by the returned object;
    with ``cache_dir`` they are also saved there (resumable), keyed by ``cache_key`` (default: a hash of the model's
    weights) and the settings, and loaded by later calls. ``amp=True`` runs the model's passes in mixed precision
    (bfloat16 where the device has it, else float16; the objective stays float32: docs/scaling.md#precision)."""
    if train_labels is None and train_images is not None and hasattr(train_images, "labels"):
        train_labels = train_images.labels  # a saat split carries its labels
    knowledge = {"train_codes": train_codes, "train_labels": train_labels, "db_codes": db_codes, "db_labels": db_labels,
                 "train_images": train_images}
    return TensorAttack(name, model, eps=eps, steps=steps, knowledge=knowledge, num_classes=num_classes, seed=seed,
                        progress=progress, settings=settings, cache_dir=cache_dir, cache_key=cache_key, amp=amp)


@dataclass
class AttackRun:
    """What attacking a set of queries produced: adversarial and ideal codes, perceptibility, time, examples."""

    adv_codes: np.ndarray  # (Q, K) int8
    theory_codes: np.ndarray | None  # (Q, K) int8, None when the method has no ideal codes
    perceptibility: dict
    seconds: float
    shown: list  # up to `examples` (benign, adversarial) image pairs, on the CPU


def attack_queries(batches, attack, theory, encode, *, examples: int = 0, bar=None) -> AttackRun:
    """The one attack loop behind :func:`evaluate_attack` and ``saat attack``: for each batch ``(x, y, t)`` (t the
    target labels or None) craft ``attack(x, y, t)``, encode it with ``encode`` (the evaluated system: -> int8 +-1
    codes), take the ideal codes ``theory(x, t or y)``, and accumulate perceptibility."""
    from .perceptibility import Perceptibility

    adv_parts, theory_parts = [], []
    percept, shown = Perceptibility(), []
    t0 = time.perf_counter()
    for x, y, t in batches:
        x_adv = attack(x, y, t)
        adv_parts.append(encode(x_adv))
        ideal = theory(x, t if t is not None else y)
        theory_parts.append(None if ideal is None else ideal.cpu().numpy().astype(np.int8))
        percept.update(x, x_adv)
        if len(shown) < examples:
            shown.extend((x[i].cpu(), x_adv[i].cpu()) for i in range(min(x.shape[0], examples - len(shown))))
        if bar is not None:
            bar.update(x.shape[0])
    seconds = time.perf_counter() - t0
    has_theory = bool(theory_parts) and all(part is not None for part in theory_parts)
    adv = np.concatenate(adv_parts) if adv_parts else np.zeros((0, 0), np.int8)  # no batch: a process's empty share
    return AttackRun(adv, np.concatenate(theory_parts) if has_theory else None, percept.result(), seconds, shown)


def attack_record(result: AttackRun, *, benign_codes, db_codes, labels, db_labels, target_labels, topk,
                  **fields) -> AttackRecord:
    """The :class:`~saat.runs.AttackRecord` of an :class:`AttackRun` (``result``): benign and adversarial mAP (or
    t-MAP with the target labels as relevance), theory MAP, random-ranking mAP, curves; ``fields`` fill the rest."""
    from ..retrieval import evaluate_retrieval, mean_average_precision

    targeted = target_labels is not None
    relevance = target_labels if targeted else labels
    adv_eval = evaluate_retrieval(result.adv_codes, db_codes, relevance, db_labels, topk=topk)
    curves = adv_eval.to_dict()
    return AttackRecord(
        targeted=targeted, topk=topk, queries=len(result.adv_codes),
        benign_map=mean_average_precision(benign_codes, db_codes, labels, db_labels, topk=topk),
        adversarial=adv_eval.map,
        theory=(None if result.theory_codes is None
                else mean_average_precision(result.theory_codes, db_codes, relevance, db_labels, topk=topk)),
        benign_tmap=(mean_average_precision(benign_codes, db_codes, target_labels, db_labels, topk=topk)
                     if targeted else None),
        random_ranking_map=adv_eval.extra["random_ranking_mAP"], perceptibility=result.perceptibility,
        seconds=result.seconds, images_per_s=len(result.adv_codes) / max(result.seconds, 1e-9),
        pr_curve=curves["pr_curve"], precision_at_n=curves["precision_at_n"], **fields)


def evaluate_attack(model, atk: TensorAttack, images, labels, db_codes, db_labels, *, topk: int | None = 5000,
                    target_labels=None, batch_size: int = 64, benign_codes=None, progress: bool = False) -> dict:
    """Attack ``images`` with ``atk`` and measure retrieval against the database codes: the dictionary an attack's
    ``metrics.json`` holds (:class:`saat.runs.AttackRecord` as JSON: benign and adversarial mAP — or t-MAP and the
    benign t-MAP for a targeted attack —, theory MAP, perceptibility, seconds). Writes nothing.

    ``model`` is the evaluated system (usually the attacked model itself; a purified model for input-purification
    defenses); its ``encode`` gives the codes if it has one, else ``sign(model(x))``. ``images``: a float tensor
    (Q, 3, H, W) in [0, 1], or a saat split (batches fetched as needed). ``benign_codes``: the queries' codes when
    already known (else encoded here).

    Example::

        m = evaluate_attack(model, create_attack("mainstay", model, train_codes=U, train_labels=Y),
                            images, labels, db_codes, db_labels, topk=1000)
        m["benign_mAP"], m["adversarial_mAP"]
    """
    record, _ = attack_evaluation(model, atk, images, labels, db_codes, db_labels, topk=topk,
                                  target_labels=target_labels, batch_size=batch_size, benign_codes=benign_codes,
                                  progress=progress)
    return record.to_json()


def system_codes(model, images: torch.Tensor, batch_size: int | None = None) -> np.ndarray:
    """int8 +-1 codes of ``images`` under the evaluated system: its own ``encode`` if it has one (saat's models, a
    purified model), else ``sign(model(x))``; eval mode and no gradient, the mode restored afterwards. With
    ``batch_size``, the images are encoded that many at a time."""
    from ..utils.codes import sign_codes

    wrapped = model if isinstance(model, HashingModel) else HashingModel(model)
    own_encode = getattr(wrapped.model, "encode", None)
    step = batch_size or max(len(images), 1)
    with frozen_eval(wrapped), torch.no_grad():
        parts = [own_encode(images[s:s + step]) if callable(own_encode) else sign_codes(wrapped(images[s:s + step]))
                 for s in range(0, len(images), step)]
        return torch.cat(parts).to(torch.int8).cpu().numpy()


def attack_evaluation(model, atk: TensorAttack, images, labels, db_codes, db_labels, *, topk: int | None,
                      target_labels=None, batch_size: int = 64, benign_codes=None, progress: bool = False,
                      examples: int = 0, channels_last: bool | None = None) -> tuple[AttackRecord, AttackRun]:
    """:func:`evaluate_attack` with what it measured: the :class:`~saat.runs.AttackRecord` and the
    :class:`AttackRun` (adversarial codes, ``examples`` image pairs). What ``saat attack`` calls before writing
    files. ``channels_last``: the memory format of the batches fetched from a split (default: the model's
    ``channels_last`` attribute, if any)."""
    from ..data import to_device_batch
    from ..utils.progress import progress_bar

    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    from_split = hasattr(images, "__getitems__") and not isinstance(images, torch.Tensor)
    if from_split:
        n = len(images)
        params = list(model.parameters()) if isinstance(model, nn.Module) else []
        device = params[0].device if params else torch.device("cpu")
        if channels_last is None:
            channels_last = bool(getattr(model, "channels_last", False))
    else:
        x = check_images(images)
        n, device = x.shape[0], x.device
    width = atk._width(labels)
    y = check_labels(labels, "labels", width, batch=n).to(device)
    db_y = check_labels(db_labels, "db_labels", width)
    db = check_codes(db_codes, "db_codes")
    db = db.cpu().numpy() if isinstance(db, torch.Tensor) else db
    targeted = target_labels is not None
    t = check_labels(target_labels, "target_labels", width, batch=n).to(device) if targeted else None
    def encode(batch: torch.Tensor) -> np.ndarray:
        return system_codes(model, batch)

    def fetch(start: int) -> torch.Tensor:
        if from_split:
            rows = list(range(start, min(start + batch_size, n)))
            return to_device_batch(images.__getitems__(rows), device, channels_last)[0]
        return x[start:start + batch_size]

    def batches():
        for start in range(0, n, batch_size):
            xb = fetch(start)
            end = start + xb.shape[0]
            yield xb, y[start:end], (t[start:end] if targeted else None)

    def theory(xb, labels_b):  # labels_b: the target labels of a targeted attack, else the query labels
        return atk.theory_codes(xb, None, target_labels=labels_b) if targeted else atk.theory_codes(xb, labels_b)

    # Under torchrun a replayable method is sharded: each process attacks its contiguous share of whole batches,
    # after replaying the random draws of the batches before it, and every process gathers the whole result.
    from ..utils import dist

    sharded = False
    if dist.is_distributed() and n:
        starts, sharded = own_batch_starts(atk, n, batch_size, fetch(0)[:1], y, t)

        def batches():  # this process's share
            for start in starts:
                xb = fetch(start)
                end = start + xb.shape[0]
                yield xb, y[start:end], (t[start:end] if targeted else None)

    bar = progress_bar(total=sum(min(batch_size, n - s) for s in starts) if sharded else n,
                       desc=f"attack {atk.name}", unit="img", disable=not progress)
    run = attack_queries(batches(), lambda xb, yb, tb: atk(xb, yb, target_labels=tb), theory, encode,
                         examples=examples, bar=bar)
    if sharded:
        run = gather_run(run, bits=db.shape[1])
    bar.close()
    if benign_codes is None:
        benign = np.concatenate([encode(fetch(s)) for s in range(0, n, batch_size)])
    else:
        benign = check_codes(benign_codes, "benign_codes")
        benign = benign.cpu().numpy() if isinstance(benign, torch.Tensor) else benign
    record = attack_record(run, benign_codes=benign, db_codes=db, labels=y.cpu().numpy(), db_labels=db_y.cpu().numpy(),
                           target_labels=t.cpu().numpy() if targeted else None, topk=topk, attack=atk.name,
                           name=atk.name, settings=atk.method(targeted).settings_record(),
                           device=str(device), world_size=dist.world_size() if sharded else 1)
    return record, run


def attack_shard(atk: TensorAttack, n: int, batch_size: int, like: torch.Tensor | None,
                 targeted: bool) -> range | None:
    """Under torchrun, the queries this process attacks: its contiguous share of ``range(n)`` in whole batches, when
    the method can replay the batches before it (:meth:`TensorAttack.replay`); None when the attack is not sharded
    (one process, no queries, or a method that draws inside its iterations: every process then attacks all)."""
    from ..utils import dist

    if not dist.is_distributed() or not n or not atk.method(targeted, like).replayable:
        return None
    return dist.batch_shard_range(n, batch_size)


def own_batch_starts(atk: TensorAttack, n: int, batch_size: int, like: torch.Tensor, labels: torch.Tensor,
                     targets: torch.Tensor | None) -> tuple[range, bool]:
    """(the starts of the batches this process attacks, whether the attack is sharded): every batch of ``range(n)``
    in one process (or for a method that cannot replay); under torchrun the starts of this process's share
    (:func:`attack_shard`), after replaying the batches before it. ``like``: one query image (its shape and
    device); ``labels``/``targets``: every query's (replay draws DHTA's anchors from the targets)."""
    shard = attack_shard(atk, n, batch_size, like, targets is not None)
    if shard is None:
        return range(0, n, batch_size), False
    for start in range(0, shard.start, batch_size):  # only their shapes and labels are needed
        end = min(start + batch_size, n)
        atk.replay(torch.zeros((end - start, *like.shape[1:]), device=like.device), labels[start:end],
                   target_labels=targets[start:end] if targets is not None else None)
    return range(shard.start, shard.stop, batch_size), True


def gather_codes(codes: np.ndarray, bits: int) -> np.ndarray:
    """Every process's ±1 codes (its share of the queries, in order) concatenated in rank order: the codes of all
    queries in query order (``codes`` itself in one process)."""
    from ..utils import dist

    if not dist.is_distributed():
        return codes
    rows = torch.from_numpy(np.ascontiguousarray(codes)).to(torch.float32).reshape(-1, bits)
    return dist.all_gather_rows(rows).to(torch.int8).numpy()


def gather_run(run: AttackRun, bits: int) -> AttackRun:
    """Every process's :class:`AttackRun` of its share of the queries, as one run in query order, on every process
    (under torchrun; the run itself otherwise): codes concatenated in rank order, perceptibility summed (its means
    may differ from one process's in the last bits: another summation order), the longest time, rank 0's
    examples (the first queries)."""
    from ..utils import dist
    from .perceptibility import Perceptibility

    if not dist.is_distributed():
        return run

    adv = gather_codes(run.adv_codes, bits)
    # a process with no queries has no theory codes to say whether the method has any: the others decide
    has = dist.all_gather_rows(torch.tensor([[float(run.theory_codes is not None or len(run.adv_codes) == 0)]]),
                               equal=True)
    theory = gather_codes(run.theory_codes if run.theory_codes is not None else np.zeros((0, bits), np.int8),
                          bits) if bool(has.min()) else None
    p = run.perceptibility
    psnr_sum = p["psnr_mean"] * p["psnr_images"] if p["psnr_images"] else 0.0
    mine = torch.tensor([[p["images"], p["linf_mean"] * p["images"], p["l2_mean"] * p["images"],
                          p["mse_mean"] * p["images"], p["linf_max"], psnr_sum, p["psnr_images"]]],
                        dtype=torch.float64)
    rows = dist.all_gather_rows(mine, equal=True)
    merged = Perceptibility()
    merged.n = int(rows[:, 0].sum())
    merged.sums = {"linf": float(rows[:, 1].sum()), "l2": float(rows[:, 2].sum()), "mse": float(rows[:, 3].sum())}
    merged.linf_max = float(rows[:, 4].max())
    merged.psnr_sum, merged.psnr_n = float(rows[:, 5].sum()), int(rows[:, 6].sum())
    seconds = float(dist.all_gather_rows(torch.tensor([[run.seconds]], dtype=torch.float64), equal=True).max())
    return AttackRun(adv, theory, merged.result(), seconds, run.shown)
