"""Prices per million tokens, and what a request cost (§3 "Usage log, prices and budgets").

Pure: the table comes in as parsed data (from the config's `prices:` or `--prices FILE`);
the cost is a function of a price and the server's usage numbers.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase

from anyfast_cli.errors import UsageError

PER = 1_000_000  # prices are per million tokens
PRICE_FIELDS = ("input", "output", "cached_input")
GLOB_CHARACTERS = "*?["


@dataclass(frozen=True)
class Price:
    input: float
    output: float
    cached_input: float | None = None  # None: cached prompt tokens cost the input price


@dataclass(frozen=True)
class PriceTable:
    """Model names and globs to prices; `currency` as the table says (None: not said)."""

    exact: Mapping[str, Price]
    globs: tuple  # (pattern, Price), longest pattern first, then in the file's order
    currency: str | None = None
    source: str = "prices"

    def price_for(self, model: str) -> Price | None:
        """An exact name beats a glob; a longer glob beats a shorter one."""
        price = self.exact.get(model)
        if price is not None:
            return price
        for pattern, price in self.globs:
            if fnmatchcase(model, pattern):
                return price
        return None

    def unused_globs(self, models: Iterable[str]) -> list[str]:
        """Globs that match none of `models` (worth a warning: a typo prices nothing)."""
        models = list(models)
        return [pattern for pattern, _ in self.globs if not any(fnmatchcase(m, pattern) for m in models)]

    def __bool__(self) -> bool:
        return bool(self.exact or self.globs)


NO_PRICES = PriceTable({}, ())


def parse_prices(data, source: str) -> PriceTable:
    """A `prices:` mapping: model name or glob -> {input, output, cached_input?} per million
    tokens, and an optional `currency:` beside the models. Errors name the source and key."""
    if data is None:
        return NO_PRICES
    if not isinstance(data, Mapping):
        raise UsageError(f"{source}: prices must be a mapping of model names to {{input: X, output: Y}}")
    currency = data.get("currency")
    if currency is not None and (not isinstance(currency, str) or not currency.strip()):
        raise UsageError(f"{source}: prices: 'currency' must be a name such as USD, got {currency!r}")
    exact: dict[str, Price] = {}
    globs: list[tuple[str, Price]] = []
    for model, entry in data.items():
        if model == "currency":
            continue
        if not isinstance(model, str) or not model.strip():
            raise UsageError(f"{source}: prices: the key {model!r} must be a model name or glob")
        price = _price(entry, f"{source}: prices: {model}")
        if any(c in model for c in GLOB_CHARACTERS):
            globs.append((model, price))
        else:
            exact[model] = price
    globs.sort(key=lambda item: -len(item[0]))  # stable: equal lengths keep the file's order
    return PriceTable(exact, tuple(globs), currency.strip() if currency else None, source)


def _price(entry, where: str) -> Price:
    if not isinstance(entry, Mapping):
        raise UsageError(f"{where}: expected {{input: X, output: Y}} per million tokens, got {entry!r}")
    unknown = sorted(set(map(str, entry)) - set(PRICE_FIELDS))
    if unknown:
        raise UsageError(f"{where}: unknown key(s) {', '.join(unknown)} (expected input, output, cached_input)")
    values = {}
    for name in PRICE_FIELDS:
        value = entry.get(name)
        if value is None:
            if name == "cached_input":
                continue
            raise UsageError(f"{where}: '{name}' is missing (a price per million tokens)")
        values[name] = non_negative(value, f"{where}: {name}")
    return Price(**values)


def non_negative(value, where: str) -> float:
    """A finite number, 0 or more: a price or a budget (a number, not text that looks like one)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise UsageError(f"{where} must be a number, 0 or more, got {value!r}")
    return float(value)


def cost(price: Price | None, prompt: int | None, completion: int | None, cached: int | None = None) -> float | None:
    """What a request cost: (prompt - cached) x input + cached x cached_input + completion x
    output, per million tokens. None when the model has no price or the server gave no counts.
    Reasoning tokens are inside `completion`, as the server counts them. Not rounded."""
    if price is None or (prompt is None and completion is None):
        return None
    prompt, completion = prompt or 0, completion or 0
    cached = min(cached or 0, prompt)
    cached_price = price.input if price.cached_input is None else price.cached_input
    return ((prompt - cached) * price.input + cached * cached_price + completion * price.output) / PER


def render_cost(amount: float) -> str:
    """Money as people read it: up to 6 decimals, no trailing zeros (the log keeps it unrounded)."""
    return f"{amount:.6f}".rstrip("0").rstrip(".") or "0"
