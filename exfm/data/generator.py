"""Synthetic streaming recommendation logs with a hidden ground truth (the default data source).

What it simulates (every knob is a field of :class:`~exfm.config.GeneratorConfig`, documented in
docs/data.md):

- **Users and items** carry hidden interest factors (``latent_dim`` wide). Items belong to a
  category (``item_cat``) whose centroid shapes their factors; users belong to a coarse segment
  (``user_seg``, assigned at arrival from their factors, so it goes stale as interests move).
- **Domains** ``d0, d1, ...``: each user has a home domain (``home_domain_prob`` of its rows);
  each domain has its own base rate (a logit offset spread over ``domain_spread``) and its own
  reweighting of the interest factors (``domain_shift``), so one domain's data teaches another
  only in part.
- **Tasks** (``tasks``, e.g. click, like): correlated through shared terms; a later task's item
  factors have cosine ``task_correlation`` with the first task's; rates fall by
  ``task_rate_ratio`` per task. The intercepts are solved on day 1 so the first task's positive
  rate is ``base_rate`` (rare positives).
- **Stages** ``retrieval|early|late``: the stage picks the shown item from 1, 4 or 16 candidates by
  the system's noisy estimate of affinity, so later stages see better-matched items (higher rates).
- **Behaviour sequence** ``hist_item``: the user's most recent engaged items (organic engagements
  elsewhere in the app, ``organic_per_user`` a day, plus the first task's positives logged here),
  strictly earlier than the row (updated between the ``CHUNKS`` time slices of a day).
- **Ground truth** logit of task t for user u, item i in domain d:
  ``c_t + off_d + b_u + q_ti + affinity_weight * <u, s_d * v_ti> + sequence_weight *
  <mean(v_seq), v_ti> - 0.2 * price_i``; the label is a Bernoulli draw of its sigmoid.
- **Drift** between days (all x ``drift``): users leave and arrive (new ids), items leave and
  arrive, user interests random-walk (``interest_walk``), item popularity random-walks
  (``popularity_walk``). New users have no history, new items no past.
- **FM-only features** (``fm_only``): cross-service aggregates an FM may read and a VM may not:
  ``xsvc_affinity`` (a noisy estimate of the true user x item interaction, noise sd
  ``fm_feature_noise``) and ``xsvc_user_rate`` (a noisy estimate of the user's propensity).

Deterministic per ``seed`` (one ``numpy.random.Generator`` consumed in a fixed order) and
vectorized: 200k rows a day take a few seconds.

Example:
    >>> from exfm.config import GeneratorConfig
    >>> g = GeneratorConfig(days=2, rows_per_day=1000, n_users=200, n_items=100)
    >>> days = list(iter_days(g))
    >>> [d for d, _ in days]
    ['2026-01-01', '2026-01-02']
"""

from __future__ import annotations

import datetime as _dt
import math
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa

from exfm.config import GeneratorConfig
from exfm.config.kinds import STAGES
from exfm.data.schema import DatasetSchema, SequenceField, SparseField

STAGE_PROBS = (0.3, 0.3, 0.4)
STAGE_CANDIDATES = (1, 4, 16)
CHUNKS = 8  # time slices per day between behaviour-sequence updates
PRICE_WEIGHT = -0.2


def _days(g: GeneratorConfig) -> list[str]:
    start = _dt.date.fromisoformat(g.start_date)
    return [(start + _dt.timedelta(days=k)).isoformat() for k in range(g.days)]


def _arrivals(share: float, base: int, drift: float) -> int:
    return int(math.ceil(share * drift * base))


def vocab_sizes(g: GeneratorConfig) -> dict[str, int]:
    """Id space of each sparse field (initial population + every later arrival)."""
    return {
        "user_id": g.n_users + _arrivals(g.user_arrival, g.n_users, g.drift) * (g.days - 1),
        "item_id": g.n_items + _arrivals(g.item_arrival, g.n_items, g.drift) * (g.days - 1),
        "item_cat": g.n_categories,
        "user_seg": g.n_user_segments,
    }


def generator_schema(g: GeneratorConfig) -> DatasetSchema:
    """The ``schema.yaml`` of the generator's output."""
    v = vocab_sizes(g)
    return DatasetSchema(
        name="exfm-synthetic",
        timestamp="ts",
        request_id="rid",
        domain="domain",
        stage="stage",
        labels=list(g.tasks),
        sparse=[SparseField(name=n, vocab=v[n]) for n in
                ("user_id", "item_id", "item_cat", "user_seg")],
        dense=["price_norm", "item_age", "hour", "xsvc_affinity", "xsvc_user_rate"],
        sequences=[SequenceField(name="hist_item", of="item_id", max_len=g.seq_len)],
        fm_only=["xsvc_affinity", "xsvc_user_rate"],
    )


class _World:
    """The hidden state of the simulation (everything a model never sees directly)."""

    def __init__(self, g: GeneratorConfig, rng: np.random.Generator):
        self.g, self.rng = g, rng
        v = vocab_sizes(g)
        K, T, D = g.latent_dim, len(g.tasks), g.n_domains
        nu, ni = v["user_id"], v["item_id"]
        scale = K ** -0.25  # <u, v> has sd ~1
        # users
        self.u = rng.normal(0, scale, (nu, K))
        self.b_user = rng.normal(0, 0.5, nu)
        self.activity = rng.lognormal(0, 0.8, nu)
        self.home = rng.integers(0, D, nu)
        seg_centroids = rng.normal(0, 1, (g.n_user_segments, K))
        self.user_seg = np.argmax(self.u @ seg_centroids.T, axis=1).astype(np.int64)
        # items
        cat_centroids = rng.normal(0, scale, (g.n_categories, K))
        self.item_cat = rng.integers(0, g.n_categories, ni).astype(np.int64)
        base_v = 0.7 * cat_centroids[self.item_cat] + 0.7 * rng.normal(0, scale, (ni, K))
        rho = g.task_correlation
        self.v = np.empty((T, ni, K))
        self.v[0] = base_v
        for t in range(1, T):
            self.v[t] = rho * base_v + math.sqrt(1 - rho ** 2) * rng.normal(0, scale, (ni, K))
        self.q_item = rng.normal(0, 0.5, (T, ni))
        self.log_pop = rng.normal(0, 1.0, ni)
        self.price = rng.normal(0, 1, ni)
        self.born_item = np.zeros(ni)
        # domains: base-rate offsets and a per-domain reweighting of the factors
        self.dom_off = (np.linspace(-g.domain_spread / 2, g.domain_spread / 2, D)
                        if D > 1 else np.zeros(1))
        self.dom_scale = 1.0 + g.domain_shift * rng.normal(0, 1, (D, K))
        self.intercept = np.zeros(T)
        # populations (ids are handed out in order: the first n_* are day 1's)
        self.user_active = np.zeros(nu, bool)
        self.user_active[: g.n_users] = True
        self.next_user = g.n_users
        self.item_active = np.zeros(ni, bool)
        self.item_active[: g.n_items] = True
        self.next_item = g.n_items
        # behaviour history, most recent last, -1 = empty
        self.hist = np.full((nu, g.seq_len), -1, np.int64)
        self.hist_len = np.zeros(nu, np.int64)
        # warm-up: the day-1 users arrive with some past behaviour
        self.organic(np.flatnonzero(self.user_active), mean=g.seq_len / 2)

    # -- behaviour -----------------------------------------------------------------------------
    def append(self, users: np.ndarray, items: np.ndarray) -> None:
        """Append items to users' histories in the given order (a user may repeat)."""
        if len(users) == 0:
            return
        order = np.argsort(users, kind="stable")
        us, its = users[order], items[order]
        first = np.r_[0, np.flatnonzero(np.diff(us)) + 1]
        rank = np.arange(len(us)) - np.repeat(first, np.diff(np.r_[first, len(us)]))
        for r in range(int(rank.max()) + 1):
            m = rank == r
            uu = us[m]
            self.hist[uu, :-1] = self.hist[uu, 1:]
            self.hist[uu, -1] = its[m]
            self.hist_len[uu] = np.minimum(self.hist_len[uu] + 1, self.g.seq_len)

    def organic(self, users: np.ndarray, mean: float) -> None:
        """Engagements elsewhere in the app: best of 16 popular items by true affinity + noise."""
        if len(users) == 0 or mean <= 0:
            return
        n = self.rng.poisson(mean, len(users))
        who = np.repeat(users, n)
        if len(who) == 0:
            return
        self.rng.shuffle(who)
        cand = self.sample_items((len(who), 16))
        score = np.einsum("nk,nck->nc", self.u[who], self.v[0][cand])
        score += self.rng.gumbel(0, 1, score.shape)
        self.append(who, cand[np.arange(len(who)), np.argmax(score, axis=1)])

    def sample_items(self, shape) -> np.ndarray:
        act = np.flatnonzero(self.item_active)
        p = np.exp(self.log_pop[act] - self.log_pop[act].max())
        return act[self.rng.choice(len(act), size=shape, p=p / p.sum())]

    # -- drift -----------------------------------------------------------------------------------
    def drift_one_day(self, day_index: int) -> None:
        g, rng, dr = self.g, self.rng, self.g.drift
        # leaving and arriving users
        act = np.flatnonzero(self.user_active)
        leave = rng.random(len(act)) < min(1.0, g.user_departure * dr)
        self.user_active[act[leave]] = False
        n_new = _arrivals(g.user_arrival, g.n_users, dr)
        new = np.arange(self.next_user, self.next_user + n_new)
        self.user_active[new] = True
        self.next_user += n_new
        # items
        act = np.flatnonzero(self.item_active)
        leave = rng.random(len(act)) < min(1.0, g.item_departure * dr)
        if leave.all():
            leave[0] = False
        self.item_active[act[leave]] = False
        n_new = _arrivals(g.item_arrival, g.n_items, dr)
        new_items = np.arange(self.next_item, self.next_item + n_new)
        self.item_active[new_items] = True
        self.born_item[new_items] = day_index
        self.next_item += n_new
        # interests random-walk (variance-preserving), popularity random-walks
        w = min(1.0, g.interest_walk * dr)
        K = g.latent_dim
        self.u = math.sqrt(1 - w ** 2) * self.u + w * rng.normal(0, K ** -0.25, self.u.shape)
        self.log_pop += g.popularity_walk * dr * rng.normal(0, 1, self.log_pop.shape)

    # -- truth --------------------------------------------------------------------------------
    def logits(self, users, items, doms, seq) -> np.ndarray:
        """(T, n) true logits without the task intercepts; ``seq`` (n, L) with -1 padding."""
        g = self.g
        T = len(g.tasks)
        mask = seq >= 0
        cnt = mask.sum(1, keepdims=True)
        out = np.empty((T, len(users)))
        uu = self.u[users] * self.dom_scale[doms]
        for t in range(T):
            vt = self.v[t][items]
            seq_mean = (self.v[t][np.where(mask, seq, 0)] * mask[..., None]).sum(1) \
                / np.maximum(cnt, 1)
            out[t] = (self.dom_off[doms] + self.b_user[users] + self.q_item[t, items]
                      + g.affinity_weight * np.einsum("nk,nk->n", uu, vt)
                      + g.sequence_weight * np.einsum("nk,nk->n", seq_mean, vt) * math.sqrt(g.latent_dim) / 2
                      + PRICE_WEIGHT * self.price[items])
        return out


def _solve_intercepts(raw: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Per task, the constant c with mean(sigmoid(raw + c)) = target (bisection)."""
    out = np.zeros(len(targets))
    for t, target in enumerate(targets):
        lo, hi = -30.0, 30.0
        for _ in range(60):
            mid = (lo + hi) / 2
            if np.mean(1 / (1 + np.exp(-(raw[t] + mid)))) > target:
                hi = mid
            else:
                lo = mid
        out[t] = (lo + hi) / 2
    return out


def _list_array(seq: np.ndarray) -> pa.Array:
    """(n, L) right-aligned histories with -1 padding -> list<int64>, oldest first."""
    mask = seq >= 0
    lengths = mask.sum(1)
    offsets = np.r_[0, np.cumsum(lengths)].astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()),
                                    pa.array(seq[mask], pa.int64()))


def iter_days(g: GeneratorConfig) -> Iterator[tuple[str, pa.Table]]:
    """Yield ``(day, table)`` for every day of the stream, in order (deterministic per seed)."""
    rng = np.random.default_rng(g.seed)
    world = _World(g, rng)
    T = len(g.tasks)
    day_names = _days(g)
    rid_base = 0
    for k, day in enumerate(day_names):
        if k > 0:
            world.drift_one_day(k)
        R = g.rows_per_day
        start = int(_dt.datetime.fromisoformat(day).replace(tzinfo=_dt.timezone.utc).timestamp())
        ts = start + np.sort(rng.integers(0, 86400, R))
        act = np.flatnonzero(world.user_active)
        pa_ = world.activity[act] / world.activity[act].sum()
        users = act[rng.choice(len(act), size=R, p=pa_)]
        home = world.home[users]
        other = rng.integers(0, max(g.n_domains - 1, 1), R)
        other = np.where(other >= home, other + 1, other) % g.n_domains
        doms = np.where(rng.random(R) < g.home_domain_prob, home, other)
        stage = rng.choice(len(STAGES), size=R, p=STAGE_PROBS)
        cand = world.sample_items((R, max(STAGE_CANDIDATES)))
        est = np.einsum("nk,nck->nc", world.u[users], world.v[0][cand])
        est += rng.normal(0, 1.0, est.shape)
        ncand = np.asarray(STAGE_CANDIDATES)[stage]
        est[np.arange(max(STAGE_CANDIDATES))[None, :] >= ncand[:, None]] = -np.inf
        items = cand[np.arange(R), np.argmax(est, axis=1)]

        seqs = np.empty((R, g.seq_len), np.int64)
        logits = np.empty((T, R))
        labels = np.empty((T, R), np.int64)
        bounds = np.linspace(0, R, CHUNKS + 1).astype(int)
        for c in range(CHUNKS):
            a, b = bounds[c], bounds[c + 1]
            seqs[a:b] = world.hist[users[a:b]]
            raw = world.logits(users[a:b], items[a:b], doms[a:b], seqs[a:b])
            if k == 0 and c == 0:
                targets = g.base_rate * g.task_rate_ratio ** np.arange(T)
                world.intercept = _solve_intercepts(raw, targets)
            logits[:, a:b] = raw + world.intercept[:, None]
            labels[:, a:b] = rng.random((T, b - a)) < 1 / (1 + np.exp(-logits[:, a:b]))
            pos = np.flatnonzero(labels[0, a:b]) + a
            world.append(users[pos], items[pos])
            world.organic(np.flatnonzero(world.user_active), mean=g.organic_per_user / CHUNKS)

        true_aff = np.einsum("nk,nk->n", world.u[users] * world.dom_scale[doms],
                             world.v[0][items])
        cols: dict[str, pa.Array] = {
            "ts": pa.array(ts.astype(np.int64)),
            "rid": pa.array(np.arange(rid_base, rid_base + R, dtype=np.int64)),
            "domain": pa.array([f"d{d}" for d in range(g.n_domains)]).take(pa.array(doms)),
            "stage": pa.array(list(STAGES)).take(pa.array(stage)),
        }
        for t, task in enumerate(g.tasks):
            cols[task] = pa.array(labels[t])
        cols.update({
            "user_id": pa.array(users.astype(np.int64)),
            "item_id": pa.array(items.astype(np.int64)),
            "item_cat": pa.array(world.item_cat[items]),
            "user_seg": pa.array(world.user_seg[users]),
            "price_norm": pa.array(world.price[items].astype(np.float32)),
            "item_age": pa.array(np.minimum((k - world.born_item[items]) / 7.0, 4.0)
                                 .astype(np.float32)),
            "hour": pa.array(((ts - start) / 86400.0).astype(np.float32)),
            "xsvc_affinity": pa.array((true_aff + g.fm_feature_noise * rng.normal(0, 1, R))
                                      .astype(np.float32)),
            "xsvc_user_rate": pa.array((world.b_user[users] / 0.5
                                        + g.fm_feature_noise * rng.normal(0, 1, R))
                                       .astype(np.float32)),
            "hist_item": _list_array(seqs),
        })
        if g.truth_columns:
            for t, task in enumerate(g.tasks):
                cols[f"truth_{task}"] = pa.array((1 / (1 + np.exp(-logits[t]))).astype(np.float32))
        rid_base += R
        yield day, pa.table(cols)


def replaced_stream(g: GeneratorConfig, out: str | Path) -> str | None:
    """Why writing ``g``'s stream into ``out`` would replace another stream already there, or
    None: ``out`` holds no day yet, or the same stream (its first day is the one ``g``
    generates; rewriting it only puts altered days back). The id space is sized by ``g.days``
    and every draw follows from it, so another ``days``, ``rows_per_day`` or ``seed`` changes
    every day, the first included."""
    from exfm.data.io import read_day
    from exfm.data.schema import list_days

    out = Path(out)
    have = list_days(out) if out.is_dir() else []
    if not have:
        return None
    first, table = next(iter_days(g))
    if first != have[0]:
        return f"its first day is {have[0]}, this stream's is {first}"
    old = read_day(out, first)
    if old.column_names != table.column_names or old.num_rows != table.num_rows:
        return (f"day {first} has {old.num_rows} rows of {len(old.column_names)} columns, this "
                f"stream's {table.num_rows} rows of {len(table.column_names)}")
    differ = [c for c in table.column_names
              if not old[c].cast(table[c].type).equals(table[c])]
    if differ:
        more = f" and {len(differ) - 4} more" if len(differ) > 4 else ""
        return f"day {first} differs in {', '.join(differ[:4])}{more}"
    return None


def generate(g: GeneratorConfig, out: str | Path, rows_per_part: int | None = None,
             progress: Callable[[str, int], None] | None = None) -> DatasetSchema:
    """Write the whole stream to ``out`` (schema.yaml + one folder per day); returns the schema."""
    from exfm.data.io import DEFAULT_ROWS_PER_PART, write_day

    out = Path(out)
    schema = generator_schema(g)
    schema.write(out)
    for day, table in iter_days(g):
        write_day(out, day, table, rows_per_part=rows_per_part or DEFAULT_ROWS_PER_PART)
        if progress is not None:
            progress(day, table.num_rows)
    return schema
