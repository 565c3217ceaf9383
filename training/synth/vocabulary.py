"""The synthetic world's categorical values: what users, items and contexts can be."""

from __future__ import annotations

AGE_BUCKETS = ("18-24", "25-34", "35-44", "45-54", "55-64", "65+")
GENDERS = ("female", "male", "unknown")
COUNTRIES = ("US", "IN", "BR", "DE", "GB", "FR", "JP", "ES", "IT", "CA")
CATEGORIES = (
    "electronics", "books", "fashion", "home", "beauty", "sports", "toys", "grocery", "garden",
    "automotive", "music", "movies", "games", "health", "pets", "baby", "office", "jewelry",
    "shoes", "tools",
)  # fmt: skip
BRANDS_PER_CATEGORY = 10
DEVICES = ("ios", "android", "web")
HOURS = 24


def brand_names() -> list[str]:
    """Brand vocabulary: each brand is nested in one category, e.g. `books_03`."""
    return [f"{c}_{k:02d}" for c in CATEGORIES for k in range(BRANDS_PER_CATEGORY)]


def vocabularies() -> dict[str, list[str]]:
    """Every categorical feature's values, by feature name (as `truth.json` lists them)."""
    return {
        "age_bucket": list(AGE_BUCKETS),
        "gender": list(GENDERS),
        "country": list(COUNTRIES),
        "category": list(CATEGORIES),
        "brand": brand_names(),
        "device": list(DEVICES),
    }
