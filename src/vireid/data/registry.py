"""The one registry of data sets: each entry carries everything the rest of vireid asks.

A data set is one module that calls :func:`register_dataset` once with a
:class:`DatasetSpec`: how to load a folder, its training split and test images, the
sub-folder that marks the layout, its evaluation protocols (:class:`Protocol`: query and
gallery lists per trial, their modalities and the metric rule), which training split
``data.trial`` picks (:class:`TrialRule`), its counts for ``vireid data summary`` and,
optionally, how ``vireid synth`` writes a synthetic copy (:class:`SyntheticLayout`) and how
``vireid data check`` finds every problem of a folder at once (``check``, returning
:class:`DataProblem` s that :func:`describe_problems` counts by kind in one line).
Nothing else in vireid names a data set or a protocol: training, evaluation, summaries,
recipes, figures and the command line read these entries.

The built-in data sets register themselves in :mod:`vireid.data.sysu`,
:mod:`vireid.data.regdb`, :mod:`vireid.data.llcm` and :mod:`vireid.data.listfile` (your own
data as plain-text lists); the package :mod:`vireid.data` imports them (in that order), so
they are registered whenever anything under
``vireid.data`` is imported. A plugin module registers its own the same way (see
``docs/architecture.md``, "How to add a data set").

Protocols are plain data here (layer 3): a protocol names its metric by a rule
(``"sysu"``, ``"regdb"``, ``"llcm"``, ``"open"``) that :mod:`vireid.evaluation.metrics`
resolves, or carries the metric function itself. A protocol whose folder defines some of its
fields (the list data set's trials and metric rule) carries ``from_folder``; code that holds a
loaded folder asks :meth:`Protocol.on` for the protocol as that folder defines it.
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional, Union

from vireid.data.records import IR, MIXED, RGB, EvalSplit, ImageRecord, TrainSplit
from vireid.errors import ConfigError
from vireid.utils.registry import Registry

PathLike = Union[str, os.PathLike]
#: A metric function: ``fn(distmat (Q, G), q_pids (Q,), g_pids (G,), q_camids (Q,),
#: g_camids (G,)) -> (cmc (float32 curve of fractions), mAP, mINP)``; lower distance = closer.
MetricFn = Callable[..., tuple[Any, float, float]]
#: What a protocol's query or gallery holds: one modality, or both (open set).
PROTOCOL_MODALITIES = (RGB, IR, MIXED)
SHOTS = ("single", "multi")
#: The fields of a :class:`Protocol` that a folder may set (:attr:`Protocol.from_folder`).
FOLDER_FIELDS = ("trials", "metric", "query_modality", "gallery_modality", "description")


@dataclass(frozen=True, kw_only=True)
class Protocol:
    """One evaluation protocol of a data set.

    Attributes:
        name: unique over all data sets (``"sysu-all"``); the name ``vireid eval --protocol``
            and ``vireid data split --protocol`` take.
        build: ``build(ds, trial=t, **options) -> EvalSplit``: the query and gallery lists of
            trial ``t`` on a loaded data set ``ds`` (the object ``DatasetSpec.load`` returns),
            in the order features are extracted and ranked in.
        trials: the trial numbers (``tuple(range(10))``); each is one ``build``.
        metric: the metric rule, resolved by :func:`vireid.evaluation.metrics.metric_rule`:
            ``"sysu"`` (SYSU-MM01's: a cam3 query ignores cam2, identity-collapsed CMC),
            ``"regdb"`` (nothing removed, textbook CMC), ``"llcm"`` (same id and camera
            removed, identity-collapsed CMC), ``"open"`` (same id and camera removed,
            textbook CMC), another name registered there, or a :data:`MetricFn`.
        query_modality, gallery_modality: ``"rgb"``, ``"ir"`` or ``"mixed"``: what the lists
            ``build`` returns with its default options hold.
        description: one line for ``vireid data summary``.
        aliases: short names accepted where the data set is known (``"all"`` for
            ``"sysu-all"`` of SYSU-MM01).
        shot: ``"single"`` or ``"multi"`` (a multi-shot gallery).
        multi_shot: the name of this protocol's multi-shot variant (``--shot multi``), if any.
        dataset: the data set's name; :func:`register_dataset` fills it in.
        from_folder: for a data set whose folders define their own protocol (the list data
            set, :mod:`vireid.data.listfile`): ``from_folder(ds) -> {field: value}``, the
            fields among :data:`FOLDER_FIELDS` that the loaded folder ``ds`` sets;
            :meth:`on` applies them. None: the fields above hold for every folder.
    """

    name: str
    build: Callable[..., EvalSplit] = field(compare=False)
    trials: tuple[int, ...]
    metric: Union[str, MetricFn] = field(compare=False)
    query_modality: str
    gallery_modality: str
    description: str = ""
    aliases: tuple[str, ...] = ()
    shot: str = "single"
    multi_shot: Optional[str] = None
    dataset: str = ""
    from_folder: Optional[Callable[[Any], Mapping[str, Any]]] = field(default=None,
                                                                      compare=False)

    def __post_init__(self) -> None:
        where = f"protocol {self.name!r}"
        if not isinstance(self.name, str) or not self.name or self.name != self.name.strip():
            raise ConfigError(f"protocol name: expected a non-empty string without surrounding "
                              f"spaces, found {self.name!r}")
        if not callable(self.build):
            raise ConfigError(f"{where}: build: expected a function (ds, trial, **options) -> "
                              f"EvalSplit, found {self.build!r}")
        trials = tuple(self.trials)
        if not trials or not all(isinstance(t, int) and not isinstance(t, bool) for t in trials) \
                or len(set(trials)) != len(trials):
            raise ConfigError(f"{where}: trials: expected distinct integers (at least one), "
                              f"found {self.trials!r}")
        object.__setattr__(self, "trials", trials)
        if not (isinstance(self.metric, str) and self.metric) and not callable(self.metric):
            raise ConfigError(f"{where}: metric: expected a metric rule name or a function, "
                              f"found {self.metric!r}")
        for key in ("query_modality", "gallery_modality"):
            if getattr(self, key) not in PROTOCOL_MODALITIES:
                raise ConfigError(f"{where}: {key}: expected one of "
                                  f"{', '.join(PROTOCOL_MODALITIES)}, found {getattr(self, key)!r}")
        if self.shot not in SHOTS:
            raise ConfigError(f"{where}: shot: expected one of {', '.join(SHOTS)}, "
                              f"found {self.shot!r}")
        object.__setattr__(self, "aliases", tuple(self.aliases))

    @property
    def metric_name(self) -> str:
        """The metric rule's name (a function's ``__name__``), as summaries report it."""
        return self.metric if isinstance(self.metric, str) else getattr(
            self.metric, "__name__", type(self.metric).__name__)

    def on(self, ds: Any) -> "Protocol":
        """This protocol as the loaded folder ``ds`` defines it: itself, or (with
        :attr:`from_folder`) a copy with the fields the folder sets (its trials, metric rule,
        modalities, description), checked as at registration. Callers that hold a loaded
        folder (building a split, evaluating, summaries) use this one."""
        if self.from_folder is None:
            return self
        fields = dict(self.from_folder(ds))
        unknown = sorted(set(fields) - set(FOLDER_FIELDS))
        if unknown:
            raise ConfigError(f"protocol {self.name!r}: from_folder may set "
                              f"{', '.join(FOLDER_FIELDS)}; found {', '.join(unknown)}")
        return dataclasses.replace(self, **fields, from_folder=None)

    def check_trial(self, trial: int) -> int:
        """``trial`` when it is one of :attr:`trials`; ConfigError naming them otherwise."""
        if trial not in self.trials:
            raise ConfigError(f"protocol {self.name} has trials {_span(self.trials)}, "
                              f"got {trial!r}")
        return trial


@dataclass(frozen=True, kw_only=True)
class TrialRule:
    """``data.trial`` of a data set whose trials each have their own training ids (RegDB's
    ten splits): a model belongs to one trial and is evaluated on that trial only.

    Attributes:
        trials: the allowed values of ``data.trial``, checked when the config's names are
            resolved (:func:`vireid.engine.resolve.resolve_names`).
        available: ``available(ds) -> trial numbers`` present in a loaded folder (None: all);
            summaries list only those.
    """

    trials: tuple[int, ...]
    available: Optional[Callable[[Any], Sequence[int]]] = None

    def __post_init__(self) -> None:
        trials = tuple(self.trials)
        if not trials or not all(isinstance(t, int) and not isinstance(t, bool) for t in trials):
            raise ConfigError(f"trial rule: expected integer trials (at least one), "
                              f"found {self.trials!r}")
        object.__setattr__(self, "trials", trials)


@dataclass(frozen=True, kw_only=True)
class SyntheticLayout:
    """How ``vireid synth --layout NAME`` writes a synthetic data set in this layout.

    Attributes:
        write: ``write(request) -> plan``, with ``request`` a
            :class:`vireid.data.synthetic.SynthRequest` (output folder, seed, ids, images per
            camera, sizes, knobs) and ``plan`` a :class:`vireid.data.synthetic.SynthPlan`
            (the cameras, one job per identity, counts for the summary). It writes the
            layout's split/index files itself; :func:`vireid.data.synthetic.generate` renders
            and writes the images of the jobs.
        min_ids: the fewest identities the layout can split.
    """

    write: Callable[[Any], Any]
    min_ids: int = 2


@dataclass(frozen=True)
class DataProblem:
    """One problem a data set's checker found in a folder (:attr:`DatasetSpec.check`).

    Attributes:
        kind: what is wrong, the same words for every problem of its kind (messages count
            problems by kind): ``"missing image"``, ``"duplicate line"``, ...
        where: where it is, e.g. ``"train.txt:12"`` or ``"id 7"``.
        detail: what was found there, e.g. ``"cam1/0001/0001.jpg"``.
    """

    kind: str
    where: str
    detail: str = ""

    def __str__(self) -> str:
        # one line, whatever the detail holds (a YAML parser's message spans several)
        return " ".join(f"{self.where} {self.detail}".split())


def describe_problems(problems: Sequence[DataProblem], what: str, examples: int = 3) -> str:
    """One line for a list of problems: ``what`` and the total, then each kind in order of
    first appearance with its count and the first ``examples`` of its kind::

        /data/x is not a usable list data set: 3 problems: missing image: 2 (train.txt:4
        a.jpg; query.txt:1 b.jpg); duplicate line: 1 (gallery.txt:3 c.jpg)
    """
    kinds: dict[str, list[DataProblem]] = {}
    for p in problems:
        kinds.setdefault(p.kind, []).append(p)
    parts = []
    for kind, found in kinds.items():
        shown = "; ".join(str(p) for p in found[:examples])
        more = ", …" if len(found) > examples else ""
        parts.append(f"{kind}: {len(found)} ({shown}{more})")
    n = len(problems)
    return f"{what}: {n} problem{'s' if n != 1 else ''}: " + "; ".join(parts)


#: ``check(root) -> problems``: every problem of a folder at once (empty: none).
CheckFn = Callable[[PathLike], list[DataProblem]]
#: ``summary(ds) -> dict`` (JSON-serialisable counts of a loaded folder).
SummaryFn = Callable[[Any], dict]
#: ``summary_lines(splits) -> lines`` (the text table of ``vireid data summary``).
SummaryLinesFn = Callable[[dict], list[str]]


@dataclass(frozen=True, kw_only=True)
class DatasetSpec:
    """Everything vireid asks about one data set.

    Attributes:
        name: the ``data.dataset`` value (``"sysu"``).
        title: the data set's own name (``"SYSU-MM01"``).
        load: ``load(root) -> ds``: reads a folder, raising :class:`~vireid.errors.DataError`
            that says what was expected where and what was found.
        train_of: ``train_of(ds, trial) -> TrainSplit`` (``trial`` is ``data.trial`` where a
            :attr:`trial_rule` is set, else None).
        test_of: ``test_of(ds, trial) -> (rgb records, ir records)``: every test image.
        marker: the sub-folder (or file) that marks the layout on disk (a folder holding it
            is taken to hold this data set, e.g. by ``vireid reproduce --synthetic``).
        protocols: the evaluation protocols, the default first unless
            :attr:`default_protocol` names another.
        default_protocol: the protocol an evaluation uses when none is named.
        trial_rule: set where each trial has its own training ids (``data.trial`` picks
            one); None: ``data.trial`` does not apply.
        summary, summary_lines: the ``splits`` part of ``vireid data summary`` and its text
            rendering; None: counts of ids and images per modality and camera of the
            training and test records (per trial where a :attr:`trial_rule` is set).
        synthetic: how ``vireid synth`` writes this layout; None: it cannot.
        train_classes: training identities of the standard split (``vireid info``'s default
            ``--num-classes``); None: none is standard.
        check: ``check(root) -> [DataProblem, ...]``: every problem of a folder at once,
            counted by kind by ``vireid data check`` (:func:`describe_problems`); None: the
            loader's own checks are all there is.
    """

    name: str
    title: str
    load: Callable[[PathLike], Any]
    train_of: Callable[[Any, Optional[int]], TrainSplit]
    test_of: Callable[[Any, Optional[int]], tuple[list[ImageRecord], list[ImageRecord]]]
    marker: str
    protocols: tuple[Protocol, ...]
    default_protocol: Optional[str] = None
    trial_rule: Optional[TrialRule] = None
    summary: Optional[SummaryFn] = None
    summary_lines: Optional[SummaryLinesFn] = None
    synthetic: Optional[SyntheticLayout] = None
    train_classes: Optional[int] = None
    check: Optional[CheckFn] = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name or self.name != self.name.strip():
            raise ConfigError(f"data set name: expected a non-empty string without surrounding "
                              f"spaces, found {self.name!r}")
        where = f"data set {self.name!r}"
        if self.check is not None and not callable(self.check):
            raise ConfigError(f"{where}: check: expected a function (root) -> problems, found "
                              f"{self.check!r}")
        for key in ("load", "train_of", "test_of"):
            if not callable(getattr(self, key)):
                raise ConfigError(f"{where}: {key}: expected a function, found "
                                  f"{getattr(self, key)!r}")
        protos = tuple(self.protocols)
        if not protos or not all(isinstance(p, Protocol) for p in protos):
            raise ConfigError(f"{where}: protocols: expected at least one Protocol, found "
                              f"{self.protocols!r}")
        # Each protocol knows its data set (evaluation refuses a protocol of another one).
        protos = tuple(p if p.dataset == self.name else dataclasses.replace(p, dataset=self.name)
                       for p in protos)
        object.__setattr__(self, "protocols", protos)
        names = [p.name for p in protos]
        short = [a for p in protos for a in p.aliases]
        clash = sorted({n for n in names + short if (names + short).count(n) > 1})
        if clash:
            raise ConfigError(f"{where}: protocol names and aliases must be distinct, found "
                              f"{', '.join(clash)} more than once")
        for p in protos:
            if p.multi_shot is not None and p.multi_shot not in names:
                raise ConfigError(f"{where}: protocol {p.name}: multi_shot: expected one of "
                                  f"its protocols, found {p.multi_shot!r}")
        default = self.default_protocol or names[0]
        if default not in names:
            raise ConfigError(f"{where}: default_protocol: expected one of {', '.join(names)}, "
                              f"found {default!r}")
        object.__setattr__(self, "default_protocol", default)
        if (self.summary is None) != (self.summary_lines is None):
            raise ConfigError(f"{where}: give summary and summary_lines together (or neither)")

    # ------------------------------------------------------------------ data
    @property
    def per_trial(self) -> bool:
        """Whether a model belongs to one trial (``data.trial`` applies)."""
        return self.trial_rule is not None

    def check_trial(self, trial: Any) -> Optional[int]:
        """``data.trial`` checked against :attr:`trial_rule` (ConfigError naming the allowed
        trials); returns it, or None where it does not apply."""
        if self.trial_rule is None:
            return None
        if isinstance(trial, bool) or not isinstance(trial, int) \
                or trial not in self.trial_rule.trials:
            raise ConfigError(f"data.trial: expected an integer in {_span(self.trial_rule.trials)}"
                              f" (a trial of {self.title}), found {trial!r}")
        return trial

    def train_split(self, root: PathLike, trial: Optional[int] = None) -> TrainSplit:
        """The training split at ``root`` (of ``trial`` where the data set has a trial rule)."""
        return self.train_of(self.load(root), self.check_trial(trial))

    def test_images(self, root: PathLike, trial: Optional[int] = None
                    ) -> tuple[list[ImageRecord], list[ImageRecord]]:
        """Every (RGB, IR) image of the test identities at ``root`` (of ``trial``)."""
        return self.test_of(self.load(root), self.check_trial(trial))

    # ------------------------------------------------------------------ protocols
    def protocol(self, name: Optional[str] = None, shot: Optional[str] = None) -> Protocol:
        """The protocol ``name`` (its full name or an alias; None: the default), switched to
        its multi-shot variant by ``shot="multi"``. ConfigError naming the data set's
        protocols when there is none such."""
        wanted = self.default_protocol if name is None else name
        found = next((p for p in self.protocols if wanted == p.name or wanted in p.aliases),
                     None)
        if found is None:
            raise ConfigError(f"protocol: expected one of {self.title}'s "
                              f"({', '.join(self.protocol_choices())}), found {wanted!r}")
        if shot not in (None, *SHOTS):
            raise ConfigError(f"shot: expected 'single' or 'multi', found {shot!r}")
        if shot == "multi" and found.shot != "multi":
            if found.multi_shot is None:
                raise ConfigError(f"protocol {found.name} has no multi-shot variant")
            found = self.protocol(found.multi_shot)
        elif shot == "single" and found.shot == "multi":
            raise ConfigError(f"protocol {found.name} is multi-shot but --shot single was given")
        return found

    def protocol_choices(self) -> list[str]:
        """Every protocol name and alias, for messages and help."""
        return [n for p in self.protocols for n in (p.name, *p.aliases)]

    def protocol_trials(self, protocol: Protocol, ds: Any) -> list[int]:
        """The trials of ``protocol`` that a loaded folder ``ds`` holds (all of them, as the
        folder defines the protocol (:meth:`Protocol.on`), unless the trial rule says which
        are present)."""
        trials = protocol.on(ds).trials
        rule = self.trial_rule
        if rule is None or rule.available is None:
            return list(trials)
        have = set(rule.available(ds))
        return [t for t in trials if t in have]

    # ------------------------------------------------------------------ summary
    def summarize(self, ds: Any) -> dict:
        """The ``splits`` part of ``vireid data summary`` for a loaded folder."""
        if self.summary is not None:
            return self.summary(ds)
        if self.trial_rule is None:
            return _record_counts(self.train_of(ds, None), self.test_of(ds, None))
        trials = self.trial_rule.available(ds) if self.trial_rule.available else \
            self.trial_rule.trials
        return {str(t): _record_counts(self.train_of(ds, t), self.test_of(ds, t)) for t in trials}

    def summary_text(self, splits: dict) -> list[str]:
        """Text lines of :meth:`summarize`'s result."""
        if self.summary_lines is not None:
            return self.summary_lines(splits)
        if self.trial_rule is None:
            return _record_count_lines(splits)
        lines = []
        for t, counts in splits.items():
            lines.append(f"trial {t}")
            lines.extend("  " + ln for ln in _record_count_lines(counts))
        return lines


def _span(trials: Sequence[int]) -> str:
    """``0..9`` for a run of consecutive integers, else the list."""
    t = list(trials)
    if t == list(range(t[0], t[0] + len(t))) and len(t) > 1:
        return f"{t[0]}..{t[-1]}"
    return ", ".join(map(str, t))


def _modality_counts(records: Sequence[ImageRecord]) -> dict:
    cams = sorted({r.camid for r in records})
    return {"ids": len({r.pid for r in records}), "images": len(records),
            "cameras": {str(c): {"ids": len({r.pid for r in records if r.camid == c}),
                                 "images": sum(1 for r in records if r.camid == c)}
                        for c in cams}}


def _record_counts(train: TrainSplit, test: tuple[list[ImageRecord], list[ImageRecord]]) -> dict:
    """Ids and images per modality and camera of the training and test records."""
    rgb, ir = test
    return {"train": {"ids": train.num_classes, RGB: _modality_counts(train.rgb),
                      IR: _modality_counts(train.ir)},
            "test": {"ids": len({r.pid for r in rgb} | {r.pid for r in ir}),
                     RGB: _modality_counts(rgb), IR: _modality_counts(ir)}}


def _record_count_lines(counts: dict) -> list[str]:
    lines = ["split  modality   ids  images   (per camera: ids/images)"]
    for split in ("train", "test"):
        lines.append(f"{split:<6} {'both':<8} {counts[split]['ids']:>5}")
        for mod in (RGB, IR):
            c = counts[split][mod]
            cams = "  ".join(f"cam{k}:{v['ids']}/{v['images']}" for k, v in c["cameras"].items())
            lines.append(f"{'':<6} {mod:<8} {c['ids']:>5} {c['images']:>7}   {cams}")
    return lines


# ---------------------------------------------------------------------------------------------
# the registry
# ---------------------------------------------------------------------------------------------
#: ``data.dataset`` -> :class:`DatasetSpec`.
DATASETS: Registry[DatasetSpec] = Registry("dataset", "data.dataset")


def register_dataset(spec: Optional[DatasetSpec] = None, *, replace: bool = False, **fields: Any
                     ) -> DatasetSpec:
    """Register a data set; the one call a data-set module makes.

    Signature::

        register_dataset(spec: DatasetSpec, *, replace: bool = False) -> DatasetSpec
        register_dataset(*, replace: bool = False, name=..., title=..., load=...,
                         train_of=..., test_of=..., marker=..., protocols=(...), ...)
            -> DatasetSpec

    Either a ready :class:`DatasetSpec`, or its fields as keywords (the same names and
    meanings: ``name``, ``title``, ``load``, ``train_of``, ``test_of``, ``marker``,
    ``protocols``; optional ``default_protocol``, ``trial_rule``, ``summary`` with
    ``summary_lines``, ``synthetic``, ``train_classes``, ``check``).

    Returns the registered spec (its protocols carry the data set's name).

    Raises:
        ConfigError: a malformed entry (the message names the field), a data-set name that
            is already registered (unless ``replace=True``), or a protocol name or alias
            that another registered data set already uses.
    """
    if spec is None:
        spec = DatasetSpec(**fields)
    elif fields:
        raise ConfigError(f"register_dataset: give a DatasetSpec or its fields, not both "
                          f"(found also {', '.join(sorted(fields))})")
    if not isinstance(spec, DatasetSpec):
        raise ConfigError(f"register_dataset: expected a DatasetSpec, found {spec!r}")
    # Protocol names are global (``vireid eval --protocol sysu-all`` names no data set), so
    # no two data sets may share one.
    mine = {p.name for p in spec.protocols}
    # The entries as they are now, without importing plugins: a built-in registers while
    # vireid.data is being imported, when a plugin must not be imported yet.
    for other_name, other in DATASETS._entries.items():
        if other_name == spec.name:
            continue
        taken = mine & {p.name for p in other.protocols}
        if taken:
            raise ConfigError(f"data set {spec.name!r}: protocol name(s) {', '.join(sorted(taken))}"
                              f" already belong to data set {other_name!r}")
    return DATASETS.register(spec.name, spec, replace=replace)


def get_dataset(name: str) -> DatasetSpec:
    """The registered data set ``name``; ConfigError naming the registered ones otherwise."""
    return DATASETS.get(name)


def load_dataset(name: str, root: PathLike) -> Any:
    """Load data set ``name`` from ``root`` with its loader."""
    return get_dataset(name).load(root)


class _ProtocolIndex(Mapping[str, Protocol]):
    """Every registered protocol by name, over all data sets (a live view: a data set
    registered later is in it)."""

    def _all(self) -> dict[str, Protocol]:
        out: dict[str, Protocol] = {}
        for _, spec in DATASETS.items():
            for p in spec.protocols:
                if p.name in out:  # only an entry put in without register_dataset gets here
                    raise ConfigError(f"protocol {p.name!r} belongs to two data sets: "
                                      f"{out[p.name].dataset!r} and {spec.name!r}")
                out[p.name] = p
        return out

    def __getitem__(self, name: str) -> Protocol:
        return self._all()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._all())

    def __len__(self) -> int:
        return len(self._all())

    def __repr__(self) -> str:
        return f"PROTOCOLS({', '.join(self._all())})"


#: protocol name -> :class:`Protocol`, over every registered data set.
PROTOCOLS: Mapping[str, Protocol] = _ProtocolIndex()


def get_protocol(name: Union[str, Protocol]) -> Protocol:
    """The registered protocol ``name`` (a full name); ConfigError listing them otherwise."""
    if isinstance(name, Protocol):
        return name
    try:
        return PROTOCOLS[name]
    except KeyError:
        raise ConfigError(f"unknown protocol {name!r}; expected one of "
                          f"{', '.join(PROTOCOLS)}") from None


class _SyntheticLayouts:
    """The names of the registered data sets that ``vireid synth`` can write (``names()``, as
    :class:`vireid.commands._checks.RegistryChoices` asks)."""

    def names(self) -> list[str]:
        return [n for n, spec in DATASETS.items() if spec.synthetic is not None]


#: Data sets with a synthetic writer (``vireid synth --layout`` choices).
SYNTHETIC_LAYOUTS = _SyntheticLayouts()
