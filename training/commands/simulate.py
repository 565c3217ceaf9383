"""`mtrank simulate --url URL --data DIR --requests N [--top-k K] --feedback FILE`

Plays the synthetic users of DIR (what `mtrank synth --out DIR` wrote) against a running
`mtrank serve`, with the generator's true model (`DIR/truth.npz`) standing in for the users:

1. a user, drawn in proportion to their activity (the generator's sessions per week);
2. `--candidates` distinct items (100): half the probability mass by popularity, half from the
   user's favourite categories (a category by the user's taste, then an item by popularity), as
   a retrieval stage would;
3. a context: the user's primary device 80% of the time (else any), an hour on the generator's
   daily cycle; `position` is not sent, so the model scores every candidate as if at the top
   (the schema's default, 1), the usual way to serve a position-aware ranker;
4. `POST /v1/rank` without `"model"` (the experiments file assigns the variant; `--experiment`
   names one);
5. the top `--top-k` (10) by the served `--rank-by` score are shown at positions 1..K (`auto`,
   the default: the ranking policy's fused `score` when the service's rows carry one, else
   `ctcvr`, the expected conversions per impression); clicks and conversions are drawn from the
   TRUE model at those positions (position lowers clicks, never conversions; conversions only
   follow clicks);
6. one feedback line per shown item is appended to FILE:
   `{"request_id", "item_id", "position", "click", "conversion", "user_id", "p_click",
   "p_conversion", "time"}` and, for a conversion, `"conversion_time"`: `p_click` and
   `p_conversion` are the true probabilities (P(click) at that position, P(conversion | click)),
   so that `mtrank ab-report` can say each variant's true CTCVR next to the observed one;
   `time` is the request's wall time (ISO-8601 UTC; the impression and its click), and
   `conversion_time` follows it by a delay drawn from an exponential distribution with mean
   `--conversion-delay-hours` (24; 0: at the same time), the usual model of delayed conversions
   (Chapelle, "Modeling Delayed Feedback in Display Advertising", KDD 2014), so that `mtrank logs
   to-dataset --attribution-window` has delays to cut.

Every request draws from its own random stream (`--seed` and its number), so a run is
reproducible whatever `--concurrency` (every draw, the delays included; not the wall times).
Requests go out in windows of a few hundred; feedback is appended in request order after each
window. Progress goes to stderr; the LAST stdout line is a JSON summary with the observed and
true rates per variant.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ranker.errors import MtrankError

MAX_REQUESTS = 10_000_000
WINDOW = 256  # requests in flight between two appends to the feedback file
MAX_FAILURES_IN_A_ROW = 10
RANK_BY = ("auto", "score", "ctcvr", "ctr", "cvr")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", required=True, help="the service, e.g. http://127.0.0.1:8000")
    parser.add_argument(
        "--data", required=True, type=Path, metavar="DIR", help="`mtrank synth` output directory"
    )
    parser.add_argument("--requests", required=True, type=int, metavar="N", help="ranking requests")
    parser.add_argument("--top-k", type=int, default=10, metavar="K", help="items shown (10)")
    parser.add_argument(
        "--feedback", required=True, type=Path, metavar="FILE", help="append feedback here (JSONL)"
    )
    parser.add_argument(
        "--candidates", type=int, default=100, metavar="C", help="candidates per request (100)"
    )
    parser.add_argument(
        "--rank-by",
        default="auto",
        choices=RANK_BY,
        help="served score that orders (auto: the policy's score if served, else ctcvr)",
    )
    parser.add_argument(
        "--conversion-delay-hours",
        type=float,
        default=24.0,
        metavar="H",
        help="mean delay of a conversion after its click, exponential (24; 0: none)",
    )
    parser.add_argument("--experiment", help="ask for this experiment (default: the service's)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (0)")
    parser.add_argument(
        "--concurrency", type=int, default=4, metavar="T", help="requests in flight (4)"
    )
    parser.add_argument("--timeout", type=float, default=10.0, metavar="S", help="per request (10)")


def run(args: argparse.Namespace) -> int:
    check_args(args)
    from training.synth.true_model import TrueModel

    truth = TrueModel.load(args.data)  # a one-line MtrankError when truth.npz is missing
    world = World.from_truth(truth, args.data)
    if args.candidates > world.n_items:
        raise MtrankError(f"--candidates {args.candidates}: DIR has only {world.n_items} items")

    import httpx

    args.feedback.parent.mkdir(parents=True, exist_ok=True)
    summary = Summary()
    started = time.monotonic()
    progress = Progress(args.requests, started)
    with (
        httpx.Client(base_url=args.url.rstrip("/"), timeout=args.timeout) as client,
        ThreadPoolExecutor(args.concurrency) as pool,
        args.feedback.open("a", encoding="utf-8") as out,
    ):
        try:
            client.get("/livez")
        except httpx.TransportError as err:
            raise MtrankError(
                f"--url {args.url}: cannot reach the service ({type(err).__name__})"
            ) from None
        player = Player(world, truth, client, args)
        for start in range(0, args.requests, WINDOW):
            numbers = range(start, min(args.requests, start + WINDOW))
            for played in pool.map(player.play, numbers):
                summary.add(played)
                if played.rows:
                    out.write("".join(json.dumps(row) + "\n" for row in played.rows))
            out.flush()
            progress.show(summary)
    summary.seconds = time.monotonic() - started
    print(f"simulate: {summary.line()}", file=sys.stderr)
    print(json.dumps(summary.to_dict()))
    return 0


def check_args(args: argparse.Namespace) -> None:
    if not 1 <= args.requests <= MAX_REQUESTS:
        raise MtrankError(f"--requests must be in 1..{MAX_REQUESTS}, got {args.requests}")
    if args.top_k < 1:
        raise MtrankError(f"--top-k must be >= 1, got {args.top_k}")
    if args.candidates < args.top_k:
        raise MtrankError(
            f"--candidates ({args.candidates}) must be at least --top-k ({args.top_k})"
        )
    if not 0.0 <= args.conversion_delay_hours < float("inf"):
        raise MtrankError(
            f"--conversion-delay-hours must be >= 0, got {args.conversion_delay_hours}"
        )
    if not 1 <= args.concurrency <= 64:
        raise MtrankError(f"--concurrency must be in 1..64, got {args.concurrency}")
    if not args.url.startswith(("http://", "https://")):
        raise MtrankError(f"--url {args.url}: expected http://HOST:PORT")
    for name in ("users.parquet", "items.parquet", "truth.npz"):
        if not (args.data / name).is_file():
            raise MtrankError(
                f"--data {args.data}: no {name} (write it with `mtrank synth --out {args.data}`)"
            )
    if args.feedback.is_dir():
        raise MtrankError(f"--feedback {args.feedback}: is a directory, not a file")


# ---- the world's users and items ----------------------------------------------------------------


@dataclass(frozen=True)
class World:
    """What the simulator draws from: ids, activity, taste, devices and popularity."""

    user_ids: np.ndarray  # "u<n>" by user number
    item_ids: np.ndarray  # "i<n>" by item number
    user_p: np.ndarray  # P(user) proportional to activity
    taste: np.ndarray  # (users, categories) P(category)
    device: np.ndarray  # primary device by user
    category: np.ndarray  # by item
    popularity_p: np.ndarray  # P(item) by popularity
    within_category_p: np.ndarray  # P(item | its category) by popularity
    hour_p: np.ndarray

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @classmethod
    def from_truth(cls, truth: Any, data: Path) -> World:
        import pyarrow.parquet as pq

        from training.synth.impressions import hour_probabilities

        users, items = truth.users, truth.items
        user_ids = np.asarray(pq.read_table(data / "users.parquet", columns=["user_id"])[0])
        item_ids = np.asarray(pq.read_table(data / "items.parquet", columns=["item_id"])[0])
        if len(user_ids) != len(users.age) or len(item_ids) != len(items.category):
            raise MtrankError(f"--data {data}: users/items parquet files do not match truth.npz")
        popularity = np.asarray(items.popularity, np.float64) + 1e-9  # every item can be drawn
        by_category = np.bincount(items.category, weights=popularity)
        activity = np.asarray(users.activity, np.float64)
        return cls(
            user_ids=np.array([f"u{n}" for n in range(len(users.age))]),
            item_ids=np.array([f"i{n}" for n in range(len(items.category))]),
            user_p=activity / activity.sum(),
            taste=np.asarray(users.taste, np.float64),
            device=np.asarray(users.device),
            category=np.asarray(items.category),
            popularity_p=popularity / popularity.sum(),
            within_category_p=popularity / by_category[items.category],
            hour_p=hour_probabilities(),  # the generator's daily cycle
        )

    def candidates(self, rng: np.random.Generator, user: int, count: int) -> np.ndarray:
        """`count` distinct item numbers: half popularity, half the user's categories."""
        personal = self.taste[user][self.category] * self.within_category_p
        p = 0.5 * self.popularity_p + 0.5 * personal / personal.sum()
        return rng.choice(self.n_items, size=count, replace=False, p=p)


# ---- one request --------------------------------------------------------------------------------


@dataclass
class Played:
    """One request's outcome: its feedback rows and what the service answered."""

    variant: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    failed: str | None = None


class Player:
    """Draws a request, asks the service, shows the top K and draws the true responses."""

    def __init__(self, world: World, truth: Any, client: Any, args: argparse.Namespace) -> None:
        self.world = world
        self.truth = truth
        self.client = client
        self.args = args
        self.failures_in_a_row = 0

    def play(self, number: int) -> Played:
        from training.synth.vocabulary import DEVICES

        world, args = self.world, self.args
        rng = np.random.default_rng([args.seed, number])
        user = int(rng.choice(len(world.user_p), p=world.user_p))
        device = (
            int(world.device[user]) if rng.random() < 0.8 else int(rng.integers(0, len(DEVICES)))
        )
        hour = int(rng.choice(len(world.hour_p), p=world.hour_p))
        items = world.candidates(rng, user, args.candidates)
        body: dict[str, Any] = {
            "user_id": str(world.user_ids[user]),
            "item_ids": world.item_ids[items].tolist(),
            "context": {"device": DEVICES[device], "hour": str(hour)},
        }
        if args.experiment:
            body["experiment"] = args.experiment
        requested_at = time.time()
        answer = self._post(body)
        if answer is None:
            return Played(variant="", failed="request failed")
        scores = answer["scores"]
        rank_by = args.rank_by
        if rank_by == "auto":
            rank_by = "score" if "score" in scores[0] else "ctcvr"
        if rank_by not in scores[0]:
            raise MtrankError(
                f"the service returns no {rank_by!r} score (has {sorted(scores[0])}); "
                "pass --rank-by"
            )
        served = np.array([row[rank_by] for row in scores], np.float64)
        top = np.argsort(-served, kind="stable")[: args.top_k]
        shown = world.item_ids[items[top]]
        k = len(shown)
        positions = np.arange(1, k + 1)
        users = np.full(k, body["user_id"])
        p_click = self.truth.p_click(
            users, shown, np.full(k, DEVICES[device]), [hour] * k, positions
        )
        p_conversion = self.truth.p_conversion(users, shown, np.full(k, DEVICES[device]))
        click = rng.random(k) < p_click
        conversion = click & (rng.random(k) < p_conversion)
        delays = conversion_delays(rng, k, args.conversion_delay_hours)
        experiment, variant = answer.get("experiment"), answer.get("variant")
        rows = [
            {
                "request_id": answer["request_id"],
                "item_id": str(shown[j]),
                "position": j + 1,
                "click": int(click[j]),
                "conversion": int(conversion[j]),
                "user_id": body["user_id"],
                "p_click": round(float(p_click[j]), 6),
                "p_conversion": round(float(p_conversion[j]), 6),
                **event_times(requested_at, bool(conversion[j]), float(delays[j])),
            }
            for j in range(k)
        ]
        label = f"{experiment}/{variant}" if variant is not None else f"model:{answer['model']}"
        return Played(variant=label, rows=rows)

    def _post(self, body: dict[str, Any]) -> dict[str, Any] | None:
        """The service's answer; None after a 5xx or a transport error (counted); 4xx raise."""
        import httpx

        url = self.args.url
        try:
            response = self.client.post("/v1/rank", json=body)
        except httpx.TransportError as err:
            self._failed(f"--url {url}: cannot reach the service ({type(err).__name__})")
            return None
        if response.status_code >= 500:
            self._failed(f"--url {url}: the service answered {response.status_code}")
            return None
        if response.status_code != 200:
            detail = response.text.replace("\n", " ")[:300]
            raise MtrankError(f"--url {url}: /v1/rank answered {response.status_code}: {detail}")
        self.failures_in_a_row = 0
        answer: dict[str, Any] = response.json()
        return answer

    def _failed(self, message: str) -> None:
        self.failures_in_a_row += 1
        if self.failures_in_a_row >= MAX_FAILURES_IN_A_ROW:
            raise MtrankError(f"{message}; {self.failures_in_a_row} requests failed in a row")


def conversion_delays(rng: np.random.Generator, k: int, mean_hours: float) -> np.ndarray:
    """Seconds from click to conversion for k shown items, exponential with mean `mean_hours`
    (all 0 for 0); always k draws, so the stream after them does not depend on the mean."""
    return rng.exponential(1.0, size=k) * (mean_hours * 3600.0)


def event_times(requested_at: float, converted: bool, delay_s: float) -> dict[str, str]:
    """A feedback line's `time` (the request's, unix seconds in) and, for a conversion,
    `conversion_time` (`delay_s` later), as ISO-8601 UTC strings."""
    from training.ab import iso_time

    times = {"time": iso_time(requested_at)}
    if converted:
        times["conversion_time"] = iso_time(requested_at + delay_s)
    return times


# ---- totals and progress ------------------------------------------------------------------------


@dataclass
class Tally:
    requests: int = 0
    impressions: int = 0
    clicks: int = 0
    conversions: int = 0
    true_ctcvr_sum: float = 0.0

    def add(self, rows: list[dict[str, Any]]) -> None:
        self.requests += 1
        self.impressions += len(rows)
        self.clicks += sum(row["click"] for row in rows)
        self.conversions += sum(row["conversion"] for row in rows)
        self.true_ctcvr_sum += sum(row["p_click"] * row["p_conversion"] for row in rows)

    def to_dict(self) -> dict[str, Any]:
        n = max(self.impressions, 1)
        return {
            "requests": self.requests,
            "impressions": self.impressions,
            "clicks": self.clicks,
            "conversions": self.conversions,
            "ctr": round(self.clicks / n, 6),
            "ctcvr": round(self.conversions / n, 6),
            "true_ctcvr": round(self.true_ctcvr_sum / n, 6),
        }


@dataclass
class Summary:
    total: Tally = field(default_factory=Tally)
    variants: dict[str, Tally] = field(default_factory=dict)
    failed: int = 0
    seconds: float = 0.0

    def add(self, played: Played) -> None:
        if played.failed is not None:
            self.failed += 1
            return
        self.total.add(played.rows)
        self.variants.setdefault(played.variant, Tally()).add(played.rows)

    def line(self) -> str:
        t = self.total
        return (
            f"{t.requests} requests ({self.failed} failed), {t.impressions} impressions, "
            f"{t.clicks} clicks, {t.conversions} conversions"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.total.to_dict(),
            "failed": self.failed,
            "seconds": round(self.seconds, 2),
            "variants": {name: tally.to_dict() for name, tally in sorted(self.variants.items())},
        }


class Progress:
    """A stderr line at most every 5 s (and at the end) for runs longer than a few seconds."""

    def __init__(
        self, total: int, started: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.total, self.started, self.clock = total, started, clock
        self.last = started

    def show(self, summary: Summary) -> None:
        now = self.clock()
        done = summary.total.requests + summary.failed
        if now - self.last < 5.0 and done < self.total:
            return
        if done == self.total and now - self.started < 5.0:
            return
        self.last = now
        rate = done / max(now - self.started, 1e-9)
        print(f"simulate: {done}/{self.total} requests, {rate:.0f}/s", file=sys.stderr)
