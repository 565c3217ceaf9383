"""`POST /v1/rank`: score a user's candidates with features from the online store."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from serving.deps import RankerDep
from serving.schemas import RankRequest, RankResponse
from serving.score_json import scores_json, with_scores

router = APIRouter(tags=["ranking"])


@router.post("/v1/rank", response_model=RankResponse)
async def rank(body: RankRequest, request: Request, ranker: RankerDep) -> Response:
    """Scores for every `item_ids` entry, in order; unknown users/items are scored with defaults.

    Without `model`, the experiment (the one named, else the default) picks the variant by the
    user's bucket. With a ranking policy (`policy`, the variant's, or the default) each row
    also carries `score`, the policy's fused value; with `top_k` only the k best rows come back,
    best first. The exposure (and any shadow scoring) is handed off without waiting
    (`serving.ranking.Ranker.rank` runs the request)."""
    result = await ranker.rank(body, request.state)
    rows = scores_json(result.columns, result.returned_scores(), result.returned_ids())
    return Response(with_scores(result.head(), "scores", rows), media_type="application/json")
