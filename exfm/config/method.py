"""The method: the data stream, the model zoo and trainer, distillation, the VM fan-out.

Sections ``data`` (+ ``data.generator``), ``models``, ``distillation`` and ``vms`` of
``params.yaml``; the allowed kinds and modes are the ``Literal`` s of :mod:`exfm.config.kinds`.
"""

from __future__ import annotations

import datetime as _dt

from pydantic import Field, field_validator

from exfm.config.base import StrictModel
from exfm.config.kinds import (DataSource, DistillMode, EmbeddingOptimizer, FmKind, Stage,
                               TuneMetric, VmKind)


class GeneratorConfig(StrictModel):
    """Knobs of the synthetic stream (see exfm/data/generator.py for what each one does)."""

    days: int = Field(8, ge=1)
    rows_per_day: int = Field(20000, ge=10)
    seed: int = 0
    start_date: str = Field("2026-01-01", pattern=r"^\d{4}-\d{2}-\d{2}$")
    n_domains: int = Field(3, ge=1)
    tasks: list[str] = Field(default_factory=lambda: ["click", "like"], min_length=1)
    n_users: int = Field(5000, ge=10)
    n_items: int = Field(2000, ge=10)
    drift: float = Field(1.0, ge=0, description="0 = stationary; 1 = default drift strength")
    base_rate: float = Field(0.03, gt=0, lt=0.5, description="mean positive rate of the first task")
    task_rate_ratio: float = Field(
        0.35, gt=0, le=1, description="each later task's day-1 positive rate = the previous one's x this")
    task_correlation: float = Field(
        0.6, ge=0, le=1, description="cosine between the first task's item factors and a later task's")
    latent_dim: int = Field(16, ge=2, description="width of the hidden user/item interest factors")
    n_categories: int = Field(50, ge=2, description="item categories (sparse item_cat)")
    n_user_segments: int = Field(20, ge=2, description="coarse user segments (sparse user_seg)")
    seq_len: int = Field(20, ge=1, description="max_len of the behaviour sequence hist_item")
    organic_per_user: float = Field(
        4.0, ge=0, description="mean organic engagements per active user per day (feed hist_item)")
    affinity_weight: float = Field(0.8, ge=0, description="weight of user x item factors in the truth")
    sequence_weight: float = Field(0.4, ge=0, description="weight of sequence x item similarity")
    domain_spread: float = Field(0.6, ge=0, description="logit gap between the lowest and highest domain")
    domain_shift: float = Field(
        0.5, ge=0, description="how far each domain's user x item interaction departs from the shared one")
    home_domain_prob: float = Field(0.8, ge=0, le=1, description="share of a user's rows in its home domain")
    fm_feature_noise: float = Field(
        1.5, ge=0, description="noise sd of the fm_only cross-service features (signal sd ~1)")
    user_arrival: float = Field(0.08, ge=0, description="new users per day, share of day-1 users (x drift)")
    user_departure: float = Field(0.04, ge=0, le=1, description="share of active users leaving per day (x drift)")
    item_arrival: float = Field(0.12, ge=0, description="new items per day, share of day-1 items (x drift)")
    item_departure: float = Field(0.08, ge=0, le=1, description="share of active items leaving per day (x drift)")
    interest_walk: float = Field(
        0.25, ge=0, le=1, description="per-day random-walk step of user interests (x drift, capped at 1)")
    popularity_walk: float = Field(0.3, ge=0, description="per-day sd of item log-popularity steps (x drift)")
    truth_columns: bool = Field(
        False, description="also write truth_<task> (the hidden true probability) for analysis; "
        "not in the schema, so no model reads it")

    @field_validator("start_date", mode="before")
    @classmethod
    def _date_as_text(cls, v: object) -> object:
        # YAML reads an unquoted 2026-03-01 (file or --set) as a date, not a string
        return v.isoformat() if isinstance(v, _dt.date) else v

    @field_validator("start_date")
    @classmethod
    def _real_date(cls, v: str) -> str:
        try:
            _dt.date.fromisoformat(v)
        except ValueError as e:
            raise ValueError(f"not a calendar date YYYY-MM-DD ({e})") from None
        return v


class DataConfig(StrictModel):
    """The source of days: a folder in the bring-your-own format, or the generator's output."""

    dir: str = "data/synthetic"
    source: DataSource = "generate"
    generator: GeneratorConfig = Field(default_factory=GeneratorConfig)
    label_window_days: int = Field(1, ge=0, description="late labels older than this are dropped")


class ModelsConfig(StrictModel):
    """Model zoo choices and the one-pass trainer's defaults (shared by FM and VMs)."""

    fm: FmKind = "dcnv2"
    embed_dim: int = Field(16, ge=2, description="VM embedding width")
    fm_embed_dim: int = Field(
        64, ge=2, description="FM embedding width; with fm_hidden it sizes the FM at >= 15x a "
        "default VM on the generator's default vocabularies (the paper: 15x-600x)")
    batch_size: int = Field(512, ge=1)
    lr: float = Field(1e-3, gt=0, description="Adam lr of the dense parameters")
    embedding_lr: float = Field(
        1e-2, gt=0, description="lr of the embedding tables (10x lr: in one pass most rows "
        "are seen a few times). 3e-3/3e-2 was noisier and worse on the synthetic stream")
    weight_decay: float = Field(0.0, ge=0)
    torch_threads: int | None = Field(None, ge=1, description="None = cores available")
    seed: int = 0
    min_steps_per_day: int = Field(
        200, ge=0, description="one pass over a small day at batch_size is too few optimizer "
        "steps to learn anything: the batch shrinks (not below min_batch_size) so that a day "
        "gives at least this many steps; 0 = always batch_size")
    min_batch_size: int = Field(64, ge=1, description="floor of the shrunk batch")
    stream_chunk_rows: int = Field(
        262_144, ge=1, description="VM days and the promotion gate read a day from the object "
        "store this many rows at a time (rounded down to a multiple of the batch, so the "
        "batches are those of one call on the whole day): memory holds about one chunk, not "
        "the day")
    fm_hidden: list[int] = Field(default_factory=lambda: [1024, 1024, 1024, 512],
                                 description="FM deep tower widths (dcn, dcnv2, dmin, mtl bottom)")
    fm_cross_layers: int = Field(3, ge=1, description="cross layers of dcn/dcnv2/mtl")
    fm_cross_rank: int | None = Field(
        None, ge=1, description="dcnv2: None = full-rank W; r = mixture of low-rank experts")
    fm_cross_experts: int = Field(4, ge=1, description="dcnv2 low rank: experts under the gate")
    fm_interests: int = Field(4, ge=1, description="dmin: interests (attention heads)")
    fm_tower_hidden: list[int] = Field(default_factory=lambda: [256, 128],
                                       description="mtl: widths of each task's tower")
    vm_hidden: list[int] = Field(default_factory=lambda: [128, 64],
                                 description="VM deep part (deepfam DNN, dlrm top, towers)")
    head_hidden: list[int] = Field(
        default_factory=lambda: [16], description="VM heads (serving, AH, SA): hidden widths of "
        "each head's MLP (METHOD.md eqs. 1, 3: MLP_s, MLP_d); [] = linear heads started at the "
        "textbook sum. Linear heads on a shared h cannot keep the teacher out of the served "
        "prediction (Theorem 3.1): the AH's pull moves the shared linear term both read")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout after hidden layers")
    embedding_optimizer: EmbeddingOptimizer = Field(
        "sparse_adam", description="optimizer of the embedding tables (at embedding_lr): "
        "sparse_adam = sparse gradients, only looked-up rows move (CPU, gloo DDP); adam = dense "
        "gradients (NCCL DDP cannot all-reduce sparse ones)")
    sparse_min_elements: int = Field(
        4_194_304, ge=0, description="with sparse_adam, a table below this many elements (rows x "
        "width) trains with dense fused Adam instead: coalescing its sparse gradient each step "
        "costs more than updating the whole small table (e.g. a first-order table of width 1); "
        "0 = every table sparse")
    amp: bool = Field(
        True, description="on a CUDA device: bf16 autocast for FM training and DAS inference, and "
        "pinned, non-blocking host-to-device copies; no effect on CPU")
    cpu_amp: bool = Field(
        True, description="FM training and inference (DAS, evaluation) on a CPU that computes "
        "bf16 natively (AVX512-BF16, AMX): bf16 autocast, weights and optimizer state stay fp32 "
        "(default FM training: 2.9x rows per CPU-second, next-day AUC within 0.002 of fp32; DAS "
        "inference: 1.2-1.6x rows/s, predictions within 0.006 of fp32, AUC equal to 4 digits). "
        "The FM's snapshot keeps the setting it trained with, and its inference follows it (the "
        "DAS: its own config). No effect on other CPUs or on VMs (models.vm_cpu_amp)")
    vm_cpu_amp: bool = Field(
        False, description="VM training on a CPU that computes bf16 natively: bf16 autocast of "
        "the VM's whole forward (losses, weights and optimizer state stay fp32); no effect on "
        "other CPUs or on inference, which follows models.vm_bf16_min_work")
    vm_bf16_min_work: int = Field(
        10_000_000, ge=0, description="VMs on a CPU that computes bf16 natively, in training "
        "(without models.vm_cpu_amp) and inference: each MLP layer with at least this many "
        "multiply-adds per forward (rows x in x out: the training batch, or the inference batch "
        "of 8192) computes in bf16, the smaller ones in fp32, where casting costs more than it "
        "saves (bench/bf16.py measures where it pays, forward+backward and forward alone); 0 = "
        "every VM layer fp32. The VM's snapshot keeps the value it last trained with. No effect "
        "on other CPUs or on GPUs")
    log_every: int = Field(50, ge=1, description="trainer: report every this many steps")


class DistillationConfig(StrictModel):
    """Equations 1-7 of METHOD.md. gs = alpha, ls = beta, lw = w."""

    mode: DistillMode = "ah_sa"
    gs: float = Field(2.0, ge=0, description="GS alpha: how hard the AH (and SA) pull the "
                      "backbone; 0 = not at all (the heads still learn, the served head trains "
                      "as without distillation)")
    ls: float = Field(1.0, ge=1)
    lw: float = Field(1.0, ge=0)
    sa_weight: float = Field(1.0, ge=0)
    sa_hidden: int = Field(16, ge=1)
    sa_lr: float = Field(1e-2, gt=0)
    sa_columns: list[str] = Field(
        default_factory=lambda: ["item_age"], description="dense columns the Student Adapter "
        "also sees when the VM reads them (item age, where declared), next to the freshness gap "
        "(sa_freshness_gap) and the row's domain and stage; [] = none")
    sa_freshness_gap: bool = Field(
        True, description="the Student Adapter also sees the FM's freshness gap in days "
        "(fm_age_days); false = not (docs/models.md, 'Staleness', has what each measured)")
    sa_trust_ah: bool = Field(
        True, description="the Student Adapter learns a per-row trust t(c) in (0, 2) of the "
        "FM's logit from its context (freshness gap, domain, stage, sa_columns), and the AH's "
        "distillation term of each row is weighted by min(t(c), 1): rows where the fresh labels "
        "say the FM knows little (a stale FM, a new item) pull less (ah_sa only; docs/models.md, "
        "'Trust'); false = every row pulls in full, as eq. 7")
    tune: bool = Field(
        True, description="AH and AH+SA VMs pick (gs, ls, lw) themselves on an earlier day, never "
        "the scored one: one fresh VM per candidate of tune_gs x tune_ls x tune_lw trains one "
        "pass on an earlier day with the FM's predictions and is scored on the day after it; "
        "the best by tune_metric wins (ties keep the earlier candidate; gs/ls/lw above come "
        "first). False = use gs/ls/lw as set")
    tune_gs: list[float] = Field(default_factory=lambda: [1.0, 2.0, 4.0],
                                 description="GS (alpha) candidates")
    tune_ls: list[float] = Field(default_factory=lambda: [1.0, 2.0],
                                 description="LS (beta) candidates")
    tune_lw: list[float] = Field(default_factory=lambda: [1.0, 3.0],
                                 description="LW (w) candidates")
    tune_step_back: list[float] = Field(
        default_factory=lambda: [0.5, 0.0], description="GS candidates tried after the grid (at "
        "the configured ls, lw): a weak pull and none. When the earlier day says the teacher has "
        "little to teach this student (a small FM - student margin), one of them wins and the "
        "AH steps back from the backbone; [] = the grid only")
    tune_metric: TuneMetric = Field(
        "auc", description="what the tuning day ranks candidates by (auc: higher, ne: lower)")
    tune_every_days: int = Field(
        7, ge=1, description="daily pipeline: a VM re-tunes when its last choice is this many "
        "days old (in between it keeps the triple its previous version recorded)")
    tune_max_rows: int | None = Field(
        100_000, ge=1, description="thin each tuning day to at most this many rows (every k-th "
        "row, order kept); None = every row")

    @field_validator("tune_gs", "tune_ls", "tune_lw")
    @classmethod
    def _candidates(cls, v: list[float], info) -> list[float]:
        if not v:
            raise ValueError("needs at least one candidate")
        low, strict = {"tune_gs": (0.0, True), "tune_ls": (1.0, False),
                       "tune_lw": (0.0, False)}[info.field_name]
        bad = [x for x in v if x < low or (strict and x == low)]
        if bad:
            raise ValueError(f"candidates {bad} out of range (must be {'>' if strict else '>='} "
                             f"{low:g})")
        return v


class VMConfig(StrictModel):
    """One serving model of the fan-out: its slice of the shared data and its objective."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")
    model: VmKind = "deepfam"
    task: str = "click"
    domain: str | None = Field(
        None, description="the value of the schema's domain column this VM serves (None = every "
        "row); an integer domain column's value may be written as a number (`domain: 0`)")
    stage: Stage | None = None
    mode: DistillMode | None = Field(
        None, description="None = distillation.mode"
    )
    control: bool = Field(True, description="also train the same VM without FM beside it")

    @field_validator("domain", mode="before")
    @classmethod
    def _domain_value(cls, v):
        """The data format allows an integer domain column, and slices compare as text."""
        if isinstance(v, int) and not isinstance(v, bool):
            return str(v)
        return v


def default_vms() -> list[VMConfig]:
    return [
        VMConfig(name="d0-click", model="deepfam", task="click", domain="d0"),
        VMConfig(name="d1-click", model="fam", task="click", domain="d1"),
    ]
