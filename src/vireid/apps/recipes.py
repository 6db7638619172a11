"""The paper's tables and the training budgets of ``vireid reproduce``, as data.

A **recipe** (:class:`Recipe`, one per table, in :data:`RECIPES`) names its variants, each a
list of dotted config overrides; its rows (a variant scored in one mode, with the paper's
numbers per data set); the reference row each variant is compared with seed by seed; and
whatever else the table asks of the workflow (a protocol of its own, the data sets it is
defined on, parameter or kernel counts per row, timing instead of accuracy). The workflow
(:mod:`vireid.apps.reproduce`) reads these fields and knows no table by name.

A **budget** (:class:`Budget`, in :data:`BUDGETS`) is the base config a variant's overrides
apply to:

=============  =========================================================================
``paper``      ``configs/paper-sysu.yaml`` (or ``paper-regdb.yaml``): the paper's setting
``cpu``        ``configs/cpu-synthetic.yaml``: quarter-width ResNet-18 at 128×64, 2-core CPU
``cpu-short``  the cpu preset with a quarter of its iterations (6 epochs × 50, lr step after
               epoch 5; :data:`CPU_SHORT_OVERRIDES`): same network, input and kernels, so
               that every table runs on a shared 2-core CPU within the hour
``cpu-pretrained``  the CPU regime of issue 15: ``configs/cpu-pretrained.yaml`` (DSCSN + CCN
               fine-tuned from the project's pretrained ``synthetic-r18w025``, lr and λ chosen on
               validation ids) for the kinds that train the CCN, and
               ``configs/cpu-pretrained-idl.yaml`` (the ID-loss baseline's own validation-chosen
               lr and warm-up) for every other loss kind but RKL, which has its own
               (``configs/cpu-pretrained-rkl.yaml``, issue 24)
``smoke``      the cpu preset shrunk to seconds (1 epoch of 2 iterations, 64×32 input, width
               0.125, 2×2 kernels so they fit the 4×2 map, one evaluation trial): tests only
=============  =========================================================================

Both are registries: a plugin (:mod:`vireid.utils.plugins`) may register a table or a budget
of its own, and ``vireid reproduce`` offers it. Paper numbers are percent, typed in from the
paper's text (tests check each against it).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

from vireid.utils.registry import Registry


# --------------------------------------------------------------------------- budgets
@dataclass(frozen=True)
class Budget:
    """A base config for every variant of a table.

    ``preset`` is a preset name, ``{dataset}`` replaced by the data set; kinds whose loss
    trains no CCN start from ``other_kinds_preset`` instead, where one is given (their own
    validation-chosen values), and a kind listed in ``kind_presets`` from its own preset.
    ``overrides`` apply on top of the preset; ``synthetic_ids``
    and ``synthetic_options`` size the data set ``--synthetic`` generates
    (:func:`vireid.data.synthetic.generate`); ``first_trial_only``: without ``--trials``,
    evaluate the protocol's first trial only.
    """

    name: str
    preset: str
    synthetic_ids: int
    overrides: tuple[str, ...] = ()
    other_kinds_preset: Optional[str] = None
    kind_presets: Mapping[str, str] = field(default_factory=dict)
    synthetic_options: Mapping[str, Any] = field(default_factory=dict)
    first_trial_only: bool = False

    def preset_name(self, dataset: str, trains_ccn: bool = True,
                    kind: Optional[str] = None) -> str:
        """The preset a variant of this data set and loss kind starts from."""
        if kind in self.kind_presets:
            return self.kind_presets[kind]
        if self.other_kinds_preset is not None and not trains_ccn:
            return self.other_kinds_preset
        return self.preset.format(dataset=dataset)

    def describe(self, dataset: str) -> str:
        """The preset file(s), for the provenance of a table."""
        main = f"configs/{self.preset.format(dataset=dataset)}.yaml"
        if self.other_kinds_preset is None:
            return main
        own = "".join(f", configs/{p}.yaml ({k})" for k, p in self.kind_presets.items())
        return (f"{main} (kinds that train the CCN){own}, "
                f"configs/{self.other_kinds_preset}.yaml (other kinds)")

    def own_presets(self) -> bool:
        """Whether some loss kinds start from another preset than :attr:`preset`."""
        return self.other_kinds_preset is not None or bool(self.kind_presets)


#: Overrides of the smoke budget on top of the cpu preset.
SMOKE_OVERRIDES = ("train.epochs=1", "train.iters_per_epoch=2", "train.lr_milestones=[1]",
                   "train.warmup_epochs=0", "data.height=64", "data.width=32", "data.pad=2",
                   "model.width=0.125", "data.ids_per_batch=4", "data.neg_ratio=2",
                   "ccn.kernel_size=[2,2]", "eval.batch_size=64", "train.checkpoint_every=1")
#: Overrides of the cpu-short budget on top of the cpu preset: 300 instead of 1200
#: iterations (the cpu preset's own schedule shape: one warm-up epoch, ×0.1 for the last
#: quarter). Everything else (network, input, batch, kernels) is the cpu preset's.
CPU_SHORT_OVERRIDES = ("train.epochs=6", "train.iters_per_epoch=50", "train.lr_milestones=[5]",
                       "train.warmup_epochs=1")

BUDGETS: Registry[Budget] = Registry("budget", "--budget")
for _b in (
    Budget("smoke", "cpu-synthetic", 30, SMOKE_OVERRIDES, first_trial_only=True,
           synthetic_options={"images_per_camera": (1, 2), "rgb_size": (64, 32), "ir_size": (64, 32)}),
    Budget("cpu-short", "cpu-synthetic", 120, CPU_SHORT_OVERRIDES),
    Budget("cpu", "cpu-synthetic", 120),
    Budget("cpu-pretrained", "cpu-pretrained", 515, other_kinds_preset="cpu-pretrained-idl",
           kind_presets={"rkl": "cpu-pretrained-rkl"}),
    Budget("paper", "paper-{dataset}", 491),
):
    BUDGETS.register(_b.name, _b)


# --------------------------------------------------------------------------- recipes
def paper_numbers(sysu: Optional[Sequence[float]] = None, regdb: Optional[Sequence[float]] = None,
                  keys: Sequence[str] = ("rank1", "mAP")) -> dict[str, dict[str, float]]:
    """{data set: {metric: value}} of a row of the paper (cmc-1 / mAP unless ``keys``)."""
    out: dict[str, dict[str, float]] = {}
    if sysu is not None:
        out["sysu"] = dict(zip(keys, sysu))
    if regdb is not None:
        out["regdb"] = dict(zip(keys, regdb))
    return out


_p = paper_numbers


@dataclass(frozen=True)
class Row:
    """One line of a table: the run ``variant`` scored with ``scoring``; ``paper`` holds the
    paper's numbers per data set (percent). ``label`` may name loss fields in braces
    (``{lambda_id}``), filled from the run's config."""

    label: str
    variant: str
    scoring: str = "simplified"
    paper: dict[str, dict[str, float]] = field(default_factory=dict)


@dataclass(frozen=True)
class Recipe:
    """One of the paper's tables (see the module docstring)."""

    name: str
    title: str
    paper_ref: str
    #: variant name -> its dotted config overrides
    variants: dict[str, tuple[str, ...]]
    rows: tuple[Row, ...]
    protocol: Optional[str] = None  # None = the dataset's default protocol
    #: the data sets the table is defined on (None: every registered one)
    datasets: Optional[tuple[str, ...]] = None
    note: str = ""
    params: bool = False  # report parameter counts (Table IV)
    #: each row records the CCN's number of kernels (Algorithm 1) of its run's geometry (Fig. 3)
    kernel_counts: bool = False
    #: time feature extraction and each scoring mode instead of scoring the rows (the
    #: inference-cost table); the paper's seconds per step
    cost: bool = False
    #: the scoring modes the cost table times, in its row order
    cost_modes: tuple[str, ...] = ()
    paper_seconds: dict[str, float] = field(default_factory=dict)
    #: variant -> the variant its rows are compared with, seed by seed (default: "ours",
    #: where the table has it)
    reference: dict[str, str] = field(default_factory=dict)
    #: variants trained only when their config differs from every other variant's (Table
    #: VII's preset λ row, which is one of the listed λ on the cpu budget)
    optional: tuple[str, ...] = ()
    #: (dotted config key, axis label) of a table that varies one value (Fig. 3, Table VII):
    #: each row records the value, and ``vireid figures --sweep`` draws the metrics against it
    axis: Optional[tuple[str, str]] = None

    def reference_of(self, variant: str) -> Optional[str]:
        """The variant ``variant``'s rows are compared with (None: none, or itself)."""
        ref = self.reference.get(variant, "ours" if "ours" in self.variants else None)
        return None if ref == variant else ref

    def overrides(self, variant: str, extra: Sequence[str] = ()) -> list[str]:
        """The overrides of one run: the variant's, then ``extra`` (the user's, the seed's,
        the trial's), in the order :func:`vireid.config.apply_overrides` applies them."""
        return list(self.variants[variant]) + list(extra)


OURS = ("loss.kind=ccn",)
NOID = ("loss.kind=ccn-noid",)
_OURS_S = Row("Ours-S", "ours", "simplified", _p([33.4, 37.2], [53.1, 53.5]))
_OURS_F = Row("Ours-F", "ours", "full", _p([35.1, 37.4], [60.8, 60.0]))

_T1 = Recipe(
    "table1", "Comparison with baseline methods", "paper Table I (SYSU-MM01 and RegDB, cmc-1 / mAP)",
    {"vl": ("loss.kind=vl",), "rkl": ("loss.kind=rkl",), "kvl": ("loss.kind=kvl",),
     "idl": ("loss.kind=idl",), "ours-noid": NOID, "ours": OURS},
    (Row("VL", "vl", "simplified", _p([23.2, 27.1], [24.0, 27.3])),
     Row("RKL", "rkl", "simplified", _p([27.2, 29.4], [32.1, 33.4])),
     Row("KVL", "kvl", "simplified", _p([26.3, 29.3], [34.6, 35.7])),
     Row("IDL", "idl", "simplified", _p([28.4, 31.8], [27.2, 31.2])),
     Row("Ours(w/o ID)-S", "ours-noid", "simplified", _p([33.3, 35.9], [50.5, 51.1])),
     Row("Ours(w/o ID)-F", "ours-noid", "full", _p([34.0, 36.3], [59.0, 57.5])),
     _OURS_S, _OURS_F),
    note="Baselines are scored in simplified mode (cosine of G); they train no CCN.")

#: Table III: (model.shared_stages, label, paper's Ours(w/o ID), paper's ID loss) on SYSU
_T3_STAGES = (("none", "None", [25.9, 29.3], [20.6, 24.8]), ("4", "Stage 4", [29.3, 33.6], [27.9, 31.1]),
              ("3-4", "Stage 3-4", [33.3, 35.9], [28.4, 31.8]), ("2-4", "Stage 2-4", [32.1, 34.8], [27.6, 30.8]),
              ("1-4", "Stage 1-4", [32.9, 35.6], [27.1, 30.0]), ("all", "All", [32.7, 34.7], [26.3, 30.1]))
_T3 = Recipe(
    "table3", "Effect of the shared stages (feature embedding)", "paper Table III (SYSU-MM01, cmc-1 / mAP)",
    {**{f"noid-{s}": NOID + (f"model.shared_stages={s}",) for s, *_ in _T3_STAGES},
     **{f"idl-{s}": ("loss.kind=idl", f"model.shared_stages={s}") for s, *_ in _T3_STAGES}},
    tuple(Row(f"Ours(w/o ID) {lab}", f"noid-{s}", "simplified", _p(a)) for s, lab, a, _ in _T3_STAGES)
    + tuple(Row(f"ID loss {lab}", f"idl-{s}", "simplified", _p(b)) for s, lab, _, b in _T3_STAGES),
    note="The paper gives Table III for SYSU-MM01 only.",
    reference={f"{k}-{s}": f"{k}-3-4" for k in ("noid", "idl") for s, *_ in _T3_STAGES})

_T4 = Recipe(
    "table4", "Kernel sampling vs the learned kernel generator (KG)",
    "paper Table IV (SYSU-MM01 and RegDB, cmc-1 / mAP; parameters 49M vs 25M)",
    {"kg": OURS + ("ccn.kernel_source=generator",), "ours": OURS},
    (Row("KG-S", "kg", "simplified", _p([28.9, 32.0], [28.2, 31.5])), _OURS_S,
     Row("KG-F", "kg", "full", _p([31.9, 33.9], [34.1, 37.4])), _OURS_F),
    params=True)

_T6 = Recipe(
    "table6", "Shared vs unshared W_D in the CCN", "paper Table VI (SYSU-MM01 and RegDB, cmc-1 / mAP)",
    {"unshared": OURS + ("ccn.share_fc=false",), "ours": OURS},
    (Row("Unshared FC (S)", "unshared", "simplified", _p([31.6, 34.9], [45.2, 44.6])),
     Row("Unshared FC (F)", "unshared", "full", _p([33.4, 35.4], [45.6, 46.4])), _OURS_S, _OURS_F))

#: Table VII: (λ, paper's SYSU, paper's RegDB)
_T7_LAMBDAS = ((0.05, [33.0, 36.4], [51.7, 52.4]), (0.1, [33.4, 37.2], [53.1, 53.5]),
               (0.2, [33.4, 36.5], [52.4, 52.9]), (0.4, [32.3, 34.8], [51.1, 51.9]),
               (1.0, [31.6, 34.3], [49.7, 50.2]))
_T7 = Recipe(
    "table7", "Sensitivity to λ", "paper Table VII (SYSU-MM01 and RegDB, cmc-1 / mAP, simplified mode)",
    {**{f"lambda-{lam}": OURS + (f"loss.lambda_id={lam}",) for lam, _, _ in _T7_LAMBDAS}, "ours": OURS},
    tuple(Row(f"λ = {lam}", f"lambda-{lam}", "simplified", _p(a, b)) for lam, a, b in _T7_LAMBDAS)
    + (Row("λ = {lambda_id} (the budget's preset)", "ours", "simplified"),),
    note="The preset's own λ is a row of its own only where it is not one of the paper's values.",
    reference={f"lambda-{lam}": "ours" for lam, _, _ in _T7_LAMBDAS}, optional=("ours",),
    axis=("loss.lambda_id", "λ"))

_F3 = Recipe(
    "fig3", "Number of kernels through stride_v", "paper Fig. 3 (SYSU-MM01; values only drawn, not printed)",
    {("ours" if sv == 1 else f"stride-v{sv}"): OURS + (() if sv == 1 else (f"ccn.stride=[{sv},1]",))
     for sv in range(1, 6)},
    tuple(Row(f"stride_v = {sv}", "ours" if sv == 1 else f"stride-v{sv}", sc)
          for sv in range(1, 6) for sc in ("simplified", "full")),
    note="Kernel counts follow Algorithm 1 (12, 6, 4, 4, 4 on an 8×4 map), not the 12, 8, 6, 4, 2 "
         "of the paper's text; the paper prints no numbers for Fig. 3.",
    kernel_counts=True, axis=("ccn.stride", "stride_v"))

_T8_PAPER = _p([78.2, 94.8, 97.7, 99.2, 65.3], keys=("rank1", "rank5", "rank10", "rank20", "mAP"))
_T8 = Recipe(
    "table8", "Open-set SYSU-MM01", "paper Table VIII (appendix; cmc-1/5/10/20, mAP)",
    {"ours-openset": OURS + ("data.same_modality_pairs=true",), "ours": OURS},
    (Row("Ours-S (open-set training)", "ours-openset", "simplified", _T8_PAPER),
     Row("Ours-F (open-set training)", "ours-openset", "full"),
     Row("Ours-S (closed-set training)", "ours", "simplified")),
    protocol="sysu-openset", datasets=("sysu",),
    note="As in the paper's appendix, the open-set model trains with RGB-RGB, RGB-IR and IR-IR "
         "pairs 1:1:1 (data.same_modality_pairs=true; same-modality pairs use their own path's "
         "maps). The closed-set model (RGB-IR pairs only) on the same protocol is shown for "
         "comparison; the paper prints only its open-set -S row. Textbook CMC/mAP, same-camera "
         "gallery items of a query removed. Full mode scores each (query modality, gallery "
         "modality) block with the query on its contract side (RGB side a across modalities, "
         "the query first within one).")

_COST = Recipe(
    "cost", "Inference cost: feature extraction, simplified and full scoring",
    "paper Sec. IV-D (RegDB 2060×2060 on one RTX 2080Ti: 24.8 s / 0.5 s / 5280 s)",
    {"ours": OURS}, (), note="Times are wall-clock seconds on this machine, on the test split of "
                             "the data given; the extrapolation scales per-pair/per-image time to "
                             "RegDB's 2060 queries × 2060 gallery images.",
    cost=True, cost_modes=("simplified", "full", "rerank"), paper_seconds={"features": 24.8, "simplified": 0.5, "full": 5280.0})

RECIPES: Registry[Recipe] = Registry("table", "TABLE")
for _r in (_T1, _T3, _T4, _T6, _T7, _F3, _T8, _COST):
    RECIPES.register(_r.name, _r)
