"""Typed, validated configuration.

Every option of vireid lives here, in one tree of dataclasses. A config is built from
defaults, then a YAML preset (``configs/*.yaml``), then dotted command-line overrides
(``train.lr=0.05``), and validated once by :func:`validate`. Unknown keys and values of the
wrong type or outside their allowed set raise :class:`~vireid.errors.ConfigError` naming
the key, the value found and what is allowed.

Options that deviate from the paper, or settle what the paper leaves open, are marked
"(not in the paper)" in their comments and listed in ``docs/configuration.md``.
"""
from __future__ import annotations

import copy
import dataclasses
import importlib.resources
import math
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import yaml

from .errors import ConfigError
from .utils.atomic import atomic_write_text
from .utils.identity import identity_digest
from .utils.messages import echo, echo_typed
from .utils.yamlfile import load_yaml


def _package_folder(name: str) -> Path:
    """A data folder shipped inside the vireid package (``vireid/NAME``), wherever vireid is
    installed: a checkout, an editable install or a wheel (package data, pyproject.toml)."""
    folder = importlib.resources.files(__package__ or "vireid") / name
    # A wheel installs as files, so the traversable is a real Path; callers (load_config,
    # torch.load, digest checks) need one. A zipped import would not give one: say so.
    if not isinstance(folder, Path):
        raise ConfigError(f"vireid's package data {name}/ must be files on disk; found {folder!r} "
                          f"(install vireid with pip, not as a zip archive)")
    return folder


#: Pretrained weights packaged with vireid (``model.pretrained: NAME`` = ``ASSET_DIR/NAME.pth``;
#: :mod:`vireid.models.assets` checks each file's digest and the model it fits).
ASSET_DIR = _package_folder("assets")
#: The shipped presets (``vireid/configs/*.yaml``, package data; the repository's top-level
#: ``configs`` is a link to this folder).
PRESET_DIR = _package_folder("configs")
# Names of registered things (model.arch, data.dataset, loss.kind, eval.scoring) are not
# listed here: the config checks that they are non-empty strings, and each is resolved
# against its registry (vireid.utils.registry) when something is built, so a plugin's
# entries are valid values too.
SHARED_STAGES = ("none", "4", "3-4", "2-4", "1-4", "all")
POOLS = ("avg", "gem")
SHARED_BNS = ("joint", "per_modality")
CHANNEL_AUGS = ("none", "exchange", "adap_gray")
KERNEL_SOURCES = ("sample", "generator")
SELECTIONS = ("last", "val")
DEVICES = ("auto", "cpu", "cuda")
AMPS = ("off", "bf16", "fp16")
#: train.freeze: "none" trains every parameter; "embedding" trains only the CCN (W_D) on a
#: finished embedding (model.init_from), everything else frozen and in eval mode.
FREEZES = ("none", "embedding")
#: loss.pbce_negatives (vireid.losses.pairs.PBCE_NEGATIVES holds what each does).
PBCE_NEGATIVE_CHOICES = ("random", "hard")
#: Seeds are below 2**32: numpy's legacy generator takes 0..2**32-1, torch's
#: ``manual_seed`` -2**63..2**64-1, so every seed in 0..SEED_LIMIT-1 means the same to all.
SEED_LIMIT = 2**32
#: Most torch threads per process: far above any machine's cores, far below the count at
#: which OpenMP fails to create its threads (100000 crashed the process, exit 139).
MAX_THREADS = 1024


def _choice(default: str, allowed: tuple[str, ...]) -> Any:
    """A string option whose values are ``allowed`` (checked by :func:`validate`). Declared
    here so that reading a config can map a YAML 1.1 bool back to the word it was written as
    (``amp: off`` reads as False; see :func:`_coerce`)."""
    return field(default=default, metadata={"choices": allowed})


@dataclass
class ModelConfig:
    arch: str = "resnet50"
    # Base width multiplier (64·width channels in the stem); 1.0 is torchvision's ResNet.
    # (not in the paper) Narrow widths exist for the CPU preset only.
    width: float = 1.0
    last_stride: int = 2
    # Which ResNet stages both modalities share (paper Table III; best: 3-4).
    shared_stages: str = _choice("3-4", SHARED_STAGES)
    # "imagenet" (torchvision URL / hub cache), "none" (random init) or a path to a .pth file.
    pretrained: str = "imagenet"
    # (not in the paper) a run folder or checkpoint whose weights start this run (every
    # tensor, so the network fields must match it); "" = none. model.pretrained is then not
    # read. With train.freeze=embedding this trains a CCN head on a finished embedding.
    init_from: str = ""
    # (not in the paper; AGW) global pooling of the map F into G: "avg" (the paper's GAP) or
    # "gem" (generalised mean, fixed p = 3, AGW's). The CCN always sees the map F itself.
    pool: str = _choice("avg", POOLS)
    # (not in the paper; AGW) BNNeck: a BatchNorm1d (frozen zero bias) on G; the ID classifier
    # reads the BN'd feature, triplet losses the feature before it, and evaluation (simplified
    # scoring) uses the BN'd feature, as AGW's test mode does.
    bnneck: bool = False
    # (not in the paper; AGW) non-local blocks after the last 2 blocks of layer2 and the last 3
    # of layer3 (AGW's non_layers = [0, 2, 3, 0]; capped at a stage's block count for ResNet-18).
    non_local: bool = False
    # (not in the paper) BatchNorm of the shared stages: "joint" normalises the RGB and IR
    # images of a batch together (one concatenated batch, as the paper's joint training batch
    # suggests), "per_modality" runs the shared stages on each modality's images separately.
    shared_bn: str = _choice("joint", SHARED_BNS)


@dataclass
class CCNConfig:
    kernel_size: list[int] = field(default_factory=lambda: [3, 3])  # [hK, wK]
    stride: list[int] = field(default_factory=lambda: [1, 1])  # [stride_v, stride_h]
    # (not in the paper) zero padding of the correlation; 1 keeps an 8×4 map 8×4 for 3×3 kernels.
    padding: int = 1
    # (not in the paper) scale s on the correlation output before W_D; null = 1/(C·hK·wK),
    # which keeps the initial logits in the sigmoid's linear range.
    corr_scale: Optional[float] = None
    share_fc: bool = True  # paper Table VI: one W_D for both directions
    # (not in the paper) a bias β in W_D's FC layer (Eq. 5 has none): D = σ(W_D·vec(F) + β).
    fc_bias: bool = True
    # "sample" (Algorithm 1) or "generator" (KG, Table IV)
    kernel_source: str = _choice("sample", KERNEL_SOURCES)
    # (not in the paper) hidden width r of the learned kernel generator; null = 9·C/128
    # (144 at C = 2048, which gives the paper's ~24M extra parameters).
    kg_hidden: Optional[int] = None


@dataclass
class LossConfig:
    # ccn = PBCE + λ·ID (the paper); ccn-noid = PBCE only; idl/vl/rkl/kvl = Table I baselines.
    kind: str = "ccn"
    lambda_id: float = 0.1
    # (not in the paper) margin of the RKL ranking loss (BDTR's default).
    rank_margin: float = 0.5
    # (not in the paper; AGW) margin of the batch-hard triplet loss of loss.kind=triplet.
    triplet_margin: float = 0.3
    # (not in the paper) weight of the PBCE term in loss.kind=agw+pbce (ID + WRT + w·PBCE).
    pbce_weight: float = 1.0
    # (not in the paper) the RGB-IR negatives of PBCE: "random" (the paper's r·N pairs drawn
    # at random) or "hard" (for each RGB image, the r IR images of other ids in the batch
    # whose G is most similar to it; vireid.losses.pairs).
    pbce_negatives: str = _choice("random", PBCE_NEGATIVE_CHOICES)


@dataclass
class DataConfig:
    dataset: str = "sysu"
    root: str = ""
    trial: int = 1  # RegDB split 1..10 used for training (ignored for SYSU)
    height: int = 256
    width: int = 128
    pad: int = 10  # zero padding before the random crop
    flip: bool = True
    ids_per_batch: int = 32  # N
    neg_ratio: int = 3  # r: r·N negative pairs per batch
    workers: int = 0
    cache: bool = True
    cache_dir: str = ""  # "" = <root>/.vireid-cache when writable, else ~/.cache/vireid
    skip_corrupt: bool = False
    # (not in the paper) number of training ids held out for model selection; 0 = none.
    val_ids: int = 0
    # Open-set training (paper appendix): add RGB-RGB and IR-IR pairs, 1:1:1 with RGB-IR pairs.
    same_modality_pairs: bool = False
    # (not in the paper; CAJ, ICCV 2021) channel augmentation of the visible training images:
    # "none", "exchange" (all channels := one random channel) or "adap_gray" (one random
    # channel or greyscale); applied to each RGB image with probability channel_aug_p.
    channel_aug: str = _choice("none", CHANNEL_AUGS)
    # (not in CAJ, which doubles the visible batch with an augmented copy of every image)
    # probability that a visible image is replaced by its channel-augmented version.
    channel_aug_p: float = 0.5
    # (not in the paper; CAJ) CAJ's infrared treatment: ChannelAdapGray(0.5) on IR images.
    channel_aug_ir: bool = False
    # (not in the paper; CAJ: 0.5) probability of CAJ's random erasing, every training image.
    random_erasing: float = 0.0


@dataclass
class TrainConfig:
    epochs: int = 60
    # (not in the paper) iterations per epoch; null = ceil(max(#RGB, #IR train images) / N),
    # i.e. every image of the larger modality is drawn about once per epoch.
    iters_per_epoch: Optional[int] = None
    lr: float = 0.1
    lr_milestones: list[int] = field(default_factory=lambda: [30])
    lr_gamma: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    # (not in the paper) linear warm-up epochs; 0 = none.
    warmup_epochs: int = 0
    seed: int = 0
    device: str = _choice("auto", DEVICES)
    # torch threads per process; null = torch's default. A bit-identical resume needs the
    # same value as the original run (reductions split differently across threads).
    threads: Optional[int] = None
    checkpoint_every: int = 1  # epochs
    log_every: int = 10  # iterations
    # "last" epoch, or best rank-1 on the held-out "val" ids
    selection: str = _choice("last", SELECTIONS)
    sync_bn: bool = False  # SyncBatchNorm under DDP
    # (not in the paper) learning rate of the backbone (DSCSN) as a multiple of train.lr;
    # the heads (W_D, the classifier, BNNeck, baseline heads) always use train.lr. 1.0 = one
    # learning rate for everything; AGW uses 0.1.
    backbone_lr_mult: float = 1.0
    # (not in the paper) learning rate of the CCN's W_D as a multiple of train.lr (1.0 = the
    # heads' rate; issue 24 chooses it on validation ids for loss.kind=agw+pbce).
    ccn_lr_mult: float = 1.0
    # (not in the paper) "none" trains everything; "embedding" trains only the CCN (W_D):
    # the backbone, BNNeck and classifier are frozen, their BatchNorms in eval mode, so the
    # global feature G (simplified scoring) stays that of model.init_from exactly.
    freeze: str = _choice("none", FREEZES)
    # (not in the paper) mixed precision of the training step: "off", "bf16" (autocast to
    # bfloat16, CPU or GPU) or "fp16" (CUDA only, with a gradient scaler).
    amp: str = _choice("off", AMPS)
    # (not in the paper) every K iterations, log the gradient norm that each loss part sends
    # into the backbone (grad_<part> in metrics.jsonl); 0 = never. Costs one extra backward
    # pass per loss part on those iterations.
    diag_every: int = 50


@dataclass
class EvalConfig:
    scoring: str = "simplified"
    topk: int = 20  # rerank: full mode on each query's simplified top-K
    # (not in the paper) fused: D = (1 - w)(1 - S)/2 + w D_RI, w in [0, 1] (scoring/fusion.py)
    fusion_weight: float = 0.5
    flip: bool = False  # (not in the paper) average features of the image and its mirror
    chunk_size: int = 256  # queries per full-mode chunk (bounds memory)
    batch_size: int = 128  # images per forward pass during feature extraction
    trials: Optional[list[int]] = None  # null = all trials of the protocol


@dataclass
class Config:
    name: str = "vireid"
    model: ModelConfig = field(default_factory=ModelConfig)
    ccn: CCNConfig = field(default_factory=CCNConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def digest(self) -> str:
        """Short hash of the fields that define the model
        (:data:`vireid.utils.identity.MODEL_IDENTITY`)."""
        return identity_digest(self)


def _is_optional(tp: Any) -> tuple[bool, Any]:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return True, args[0]
    return False, tp


#: The words YAML 1.1 (PyYAML) reads as booleans, lower-cased.
YAML_BOOL_WORDS = {True: ("true", "yes", "on"), False: ("false", "no", "off")}


def _coerce(key: str, value: Any, tp: Any, choices: tuple[str, ...] = ()) -> Any:
    """Check ``value`` against the annotation ``tp``; ints are accepted for floats.

    choices: the allowed values of a string option. YAML 1.1 reads the unquoted words
    on/off/yes/no/true/false as booleans, so ``amp: off`` arrives as False: a bool given
    to a string option becomes the one allowed value that YAML reads as that bool (any
    case), and is refused with a hint to quote it otherwise.
    """
    optional, inner = _is_optional(tp)
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{key}: expected {_type_name(tp)}, found null")
    tp = inner
    origin = typing.get_origin(tp)
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list of {_type_name(item_tp)}, found "
                              f"{echo(value)}")
        return [_coerce(f"{key}[{i}]", v, item_tp) for i, v in enumerate(value)]
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                number = float(value)
            except OverflowError:  # an int too large for a float
                number = math.inf
        # YAML 1.1 reads `1e-4` (no dot) as a string; accept what Python reads as a number.
        elif isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                pass
        if number is not None:
            # No option of vireid means anything at inf or nan (`lr: .inf` would train to NaN).
            if not math.isfinite(number):
                raise ConfigError(f"{key}: expected a finite number, found {echo(value)}")
            return number
    elif tp is str:
        if isinstance(value, str):
            return value
        # YAML reads `shared_stages: 4` as an int; the option's values are strings.
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        if isinstance(value, bool):
            words = [c for c in choices if c.lower() in YAML_BOOL_WORDS[value]]
            if len(words) == 1:
                return words[0]
            allowed = f" (allowed: {', '.join(choices)})" if choices else ""
            raise ConfigError(f"{key}: expected str{allowed}, found {value} (bool): YAML 1.1 "
                              f"reads the unquoted words on/off/yes/no/true/false as booleans; "
                              f"quote the word to keep it a string")
    raise ConfigError(f"{key}: expected {_type_name(tp)}, found {echo_typed(value)}")


def _type_name(tp: Any) -> str:
    optional, inner = _is_optional(tp)
    if optional:
        return f"{_type_name(inner)} or null"
    if typing.get_origin(tp) is list:
        return f"list of {_type_name(typing.get_args(tp)[0])}"
    return getattr(tp, "__name__", str(tp))


def _merge(obj: Any, data: dict[str, Any], prefix: str = "") -> None:
    """Write ``data`` into the dataclass ``obj`` in place, type-checking every leaf."""
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, found "
                          f"{echo(data)}")
    hints = typing.get_type_hints(type(obj))
    fields = {f.name: f for f in dataclasses.fields(obj)}
    for key, value in data.items():
        path = f"{prefix}{key}"
        if key not in fields:
            raise ConfigError(f"unknown config key {echo(path)}; allowed here: "
                              f"{', '.join(fields)}")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            _merge(current, value, path + ".")
        else:
            choices = tuple(fields[key].metadata.get("choices", ()))
            setattr(obj, key, _coerce(path, value, hints[key], choices))


def _parse_scalar(text: str, where: str) -> Any:
    """Parse an override's right-hand side as YAML (so 0.1, true, [3, 3], null work)."""
    try:
        return load_yaml(text, where) if text != "" else ""
    # YAML constructors raise plain ValueError/OverflowError on e.g. a date 2024-13-45;
    # such a value is then taken as text, and the type check names it.
    except (yaml.YAMLError, ValueError, OverflowError, RecursionError):
        return text


def apply_overrides(cfg: Config, overrides: list[str]) -> Config:
    """Apply ``key.sub=value`` strings to a copy of ``cfg`` (not validated: call :func:`validate`).
    A key given twice takes the last value (callers layer their own overrides this way)."""
    cfg = copy.deepcopy(cfg)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {echo(item)}: expected KEY=VALUE, e.g. train.lr=0.05")
        key, text = item.split("=", 1)
        parts = key.strip().split(".")
        nested: dict[str, Any] = {parts[-1]: _parse_scalar(text, f"override {echo(item)}")}
        for part in reversed(parts[:-1]):
            nested = {part: nested}
        _merge(cfg, nested)
    return cfg


def _check_choice(key: str, value: Any, allowed: tuple) -> None:
    if value not in allowed:
        raise ConfigError(f"{key}: found {echo(value)}; allowed values: "
                          f"{', '.join(map(str, allowed))}")


def _check_name(key: str, value: str) -> None:
    # The name itself is resolved against its registry when things are built
    # (vireid.engine.resolve.resolve_names); here only its form is checked.
    if not value or value != value.strip():
        raise ConfigError(f"{key}: expected a registered name, found {echo(value)}")


def _check(key: str, ok: bool, expected: str, value: Any) -> None:
    if not ok:
        raise ConfigError(f"{key}: expected {expected}, found {echo(value)}")


def validate(cfg: Config) -> Config:
    """Check every value's range and consistency; returns ``cfg`` for chaining."""
    m, c, l, d, t, e = cfg.model, cfg.ccn, cfg.loss, cfg.data, cfg.train, cfg.eval
    _check_name("model.arch", m.arch)
    _check("model.width", 0 < m.width <= 4, "a number in (0, 4]", m.width)
    _check_choice("model.last_stride", m.last_stride, (1, 2))
    _check_choice("model.shared_stages", m.shared_stages, SHARED_STAGES)
    _check_choice("model.pool", m.pool, POOLS)
    _check_choice("model.shared_bn", m.shared_bn, SHARED_BNS)
    packaged = sorted(p.stem for p in ASSET_DIR.glob("*.pth"))
    if (m.pretrained not in ("imagenet", "none", *packaged)
            and not m.pretrained.endswith((".pth", ".pt"))):
        raise ConfigError(f"model.pretrained: expected 'imagenet', 'none', the name of packaged "
                          f"weights ({', '.join(packaged) or 'none installed'}) or a path to a "
                          f".pth/.pt file, found {echo(m.pretrained)}")
    if m.pretrained == "imagenet" and m.width != 1.0:
        raise ConfigError(f"model.pretrained: ImageNet weights exist only for model.width=1.0, "
                          f"found width={m.width}; set model.pretrained=none")
    _check("ccn.kernel_size", len(c.kernel_size) == 2 and min(c.kernel_size) >= 1,
           "[hK, wK] with both ≥ 1", c.kernel_size)
    _check("ccn.stride", len(c.stride) == 2 and min(c.stride) >= 1,
           "[stride_v, stride_h] with both ≥ 1", c.stride)
    _check("ccn.padding", c.padding >= 0, "an integer ≥ 0", c.padding)
    _check("ccn.corr_scale", c.corr_scale is None or c.corr_scale > 0, "null or a number > 0",
           c.corr_scale)
    _check_choice("ccn.kernel_source", c.kernel_source, KERNEL_SOURCES)
    _check("ccn.kg_hidden", c.kg_hidden is None or c.kg_hidden >= 1, "null or an integer ≥ 1",
           c.kg_hidden)
    _check_name("loss.kind", l.kind)
    _check("loss.lambda_id", l.lambda_id >= 0, "a number ≥ 0", l.lambda_id)
    _check("loss.rank_margin", l.rank_margin >= 0, "a number ≥ 0", l.rank_margin)
    _check("loss.triplet_margin", l.triplet_margin >= 0, "a number ≥ 0", l.triplet_margin)
    _check("loss.pbce_weight", l.pbce_weight >= 0, "a number ≥ 0", l.pbce_weight)
    _check_choice("loss.pbce_negatives", l.pbce_negatives, PBCE_NEGATIVE_CHOICES)
    _check_name("data.dataset", d.dataset)
    _check("data.trial", d.trial >= 1, "an integer ≥ 1 (the data set's trial rule bounds it)", d.trial)
    # The upper bound only keeps a typo (height: 25600) from allocating gigabytes.
    _check("data.height", 16 <= d.height <= 4096 and d.height % 8 == 0,
           "a multiple of 8 in 16..4096", d.height)
    _check("data.width", 16 <= d.width <= 4096 and d.width % 8 == 0,
           "a multiple of 8 in 16..4096", d.width)
    _check("data.pad", d.pad >= 0, "an integer ≥ 0", d.pad)
    _check("data.ids_per_batch", d.ids_per_batch >= 2, "an integer ≥ 2", d.ids_per_batch)
    _check("data.neg_ratio", 0 <= d.neg_ratio < d.ids_per_batch,
           f"an integer in 0..{d.ids_per_batch - 1} (negatives per positive, < data.ids_per_batch)",
           d.neg_ratio)
    _check("data.workers", d.workers >= 0, "an integer ≥ 0", d.workers)
    _check("data.val_ids", d.val_ids >= 0, "an integer ≥ 0", d.val_ids)
    _check_choice("data.channel_aug", d.channel_aug, CHANNEL_AUGS)
    _check("data.channel_aug_p", 0 <= d.channel_aug_p <= 1, "a number in [0, 1]",
           d.channel_aug_p)
    _check("data.random_erasing", 0 <= d.random_erasing <= 1, "a number in [0, 1]",
           d.random_erasing)
    _check("train.epochs", t.epochs >= 1, "an integer ≥ 1", t.epochs)
    _check("train.iters_per_epoch", t.iters_per_epoch is None or t.iters_per_epoch >= 1,
           "null or an integer ≥ 1", t.iters_per_epoch)
    _check("train.lr", t.lr > 0, "a number > 0", t.lr)
    _check("train.lr_milestones", all(0 < x <= t.epochs for x in t.lr_milestones)
           and t.lr_milestones == sorted(t.lr_milestones),
           f"increasing epochs in 1..{t.epochs}", t.lr_milestones)
    _check("train.lr_gamma", 0 < t.lr_gamma <= 1, "a number in (0, 1]", t.lr_gamma)
    _check("train.momentum", 0 <= t.momentum < 1, "a number in [0, 1)", t.momentum)
    _check("train.weight_decay", t.weight_decay >= 0, "a number ≥ 0", t.weight_decay)
    _check("train.warmup_epochs", 0 <= t.warmup_epochs < t.epochs,
           f"an integer in 0..{t.epochs - 1}", t.warmup_epochs)
    _check_choice("train.device", t.device, DEVICES)
    _check("train.seed", 0 <= t.seed < SEED_LIMIT, f"an integer in 0..{SEED_LIMIT - 1}", t.seed)
    _check("train.threads", t.threads is None or 1 <= t.threads <= MAX_THREADS,
           f"null or an integer in 1..{MAX_THREADS}", t.threads)
    _check("train.checkpoint_every", t.checkpoint_every >= 1, "an integer ≥ 1", t.checkpoint_every)
    _check("train.log_every", t.log_every >= 1, "an integer ≥ 1", t.log_every)
    _check_choice("train.selection", t.selection, SELECTIONS)
    _check("train.backbone_lr_mult", 0 < t.backbone_lr_mult <= 100, "a number in (0, 100]",
           t.backbone_lr_mult)
    _check("train.ccn_lr_mult", 0 < t.ccn_lr_mult <= 1000, "a number in (0, 1000]",
           t.ccn_lr_mult)
    _check_choice("train.freeze", t.freeze, FREEZES)
    _check_choice("train.amp", t.amp, AMPS)
    _check("train.diag_every", t.diag_every >= 0, "an integer ≥ 0", t.diag_every)
    if t.selection == "val" and d.val_ids < 2:
        raise ConfigError(f"train.selection=val needs data.val_ids ≥ 2 held-out ids, found "
                          f"data.val_ids={d.val_ids}")
    _check_name("eval.scoring", e.scoring)
    _check("eval.topk", e.topk >= 1, "an integer ≥ 1", e.topk)
    _check("eval.fusion_weight", not isinstance(e.fusion_weight, bool)
           and isinstance(e.fusion_weight, (int, float)) and 0.0 <= e.fusion_weight <= 1.0,
           "a number in [0, 1]", e.fusion_weight)
    _check("eval.chunk_size", e.chunk_size >= 1, "an integer ≥ 1", e.chunk_size)
    _check("eval.batch_size", e.batch_size >= 1, "an integer ≥ 1", e.batch_size)
    return cfg


def from_dict(data: dict[str, Any]) -> Config:
    """Build and validate a config from a nested mapping (missing keys keep their defaults)."""
    cfg = Config()
    _merge(cfg, data or {})
    return validate(cfg)


def load_config(path: Union[str, Path, None] = None, overrides: Optional[list[str]] = None) -> Config:
    """Defaults ← YAML file ← dotted overrides, validated once."""
    cfg = Config()
    if path is not None:
        data = read_config_file(path)
        try:
            _merge(cfg, data)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from exc
    cfg = apply_overrides(cfg, overrides or [])
    return validate(cfg)


def read_config_file(path: Union[str, Path]) -> dict[str, Any]:
    """The mapping of a YAML config file (not validated).

    Raises:
        ConfigError: the file is missing, not readable, not UTF-8, not YAML, empty (an empty
            file would silently mean the ResNet-50 / ImageNet defaults) or not a mapping.
    """
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file not found: {path} does not exist; expected a YAML "
                          f"file there")
    if not path.is_file():
        raise ConfigError(f"config file {path}: expected a YAML file, found a folder or "
                          f"special file")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path}: expected UTF-8 text, found byte "
                          f"0x{raw[exc.start]:02x} at offset {exc.start}") from None
    try:
        data = load_yaml(text, str(path))
    except yaml.YAMLError as exc:
        detail = " ".join(str(exc).split())[:200]
        raise ConfigError(f"{path}: expected valid YAML, found an error: {detail}") from None
    except (ValueError, OverflowError, RecursionError) as exc:  # e.g. a date 2024-13-45
        raise ConfigError(f"{path}: expected valid YAML values, found {type(exc).__name__}: "
                          f"{str(exc)[:120]}") from None
    if data is None:
        raise ConfigError(f"config file {path} is empty: expected a YAML mapping such as "
                          f"'train: {{epochs: 5}}' (a preset name, e.g. cpu-synthetic, gives "
                          f"a complete config)")
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: expected a YAML mapping of sections (model:, "
                          f"data:, train:, …), found a {type(data).__name__}")
    return data


def save_config(cfg: Config, path: Union[str, Path]) -> None:
    """Write the resolved config as YAML, atomically."""

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def preset_path(name: str) -> Path:
    """Path of a preset shipped with vireid (:data:`PRESET_DIR`) by name or file name."""
    candidate = PRESET_DIR / (name if name.endswith(".yaml") else f"{name}.yaml")
    if not candidate.is_file():
        raise ConfigError(f"no preset named {echo(name)} in {PRESET_DIR}; "
                          f"found: {', '.join(preset_names()) or 'none'}")
    return candidate


def preset_or_path(name: str) -> Path:
    """A YAML path as given, or the shipped preset of that name (:func:`preset_path`)."""
    path = Path(name)
    if path.exists():
        return path  # read_config_file names what is wrong with it, if anything
    if path.suffix in (".yaml", ".yml") or os.sep in name or "/" in name:
        raise ConfigError(f"config file not found: {path} does not exist; expected a YAML "
                          f"file there (or a preset name: {', '.join(preset_names()) or 'none'})")
    try:
        return preset_path(name)
    except ConfigError:
        raise ConfigError(f"no preset named {echo(name)} and no file {echo(name)}: expected a "
                          f"YAML file or a preset name ({', '.join(preset_names()) or 'none'})"
                          ) from None


def preset_names() -> list[str]:
    """Names of the presets shipped with vireid (:data:`PRESET_DIR`), sorted."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml")) if PRESET_DIR.is_dir() else []
