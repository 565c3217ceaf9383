"""What `mtrank logs to-dataset` left out, counted by reason (never an exception)."""

from __future__ import annotations

REASONS: dict[str, str] = {
    "exposure_without_request_id": "exposure lines without a request_id",
    "duplicate_request_id": "exposure lines repeating an earlier request_id (the first wins)",
    "exposure_without_features": "exposure lines without features: serve with --log-features",
    "exposure_without_schema": "exposures whose model and version no schema line describes",
    "exposure_of_other_model": "exposures of a model other than --model",
    "columns_not_matching_items": "exposures whose score or feature columns do not have one "
    "value per returned item",
    "features_incomplete": "exposures whose logged features lack a feature of their schema",
    "feedback_without_ids": "feedback lines without a request_id or an item_id",
    "duplicate_feedback": "feedback lines repeating an earlier line of the same request and item",
    "feedback_unknown_request": "feedback for a request no exposure line has",
    "feedback_unknown_item": "feedback for an item its request did not return",
    "feedback_of_skipped_exposure": "feedback for a request whose exposure was skipped",
}
"""The fixed reasons; the per-label ones (`conversion_without_click`, `conversion_outside_window`,
`feedback_without_position`) are declared once the logged schema (and --from-feedback) is known."""


class Skips:
    """Counts by reason; every declared reason is reported, zeros included."""

    def __init__(self) -> None:
        self.explained = dict(REASONS)
        self.counts = dict.fromkeys(REASONS, 0)

    def declare(self, reason: str, explanation: str) -> None:
        self.explained.setdefault(reason, explanation)
        self.counts.setdefault(reason, 0)

    def count(self, reason: str, n: int = 1) -> None:
        if reason not in self.counts:
            raise KeyError(f"undeclared skip reason {reason!r}")
        self.counts[reason] += n

    def to_dict(self) -> dict[str, int]:
        return dict(self.counts)

    def lines(self) -> list[str]:
        """One line per reason that counted something: `N reason (what it means)`."""
        return [f"{n} {r} ({self.explained[r]})" for r, n in self.counts.items() if n]
