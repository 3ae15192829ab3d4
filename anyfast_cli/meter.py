"""What a command spends: each finished request's result goes to the usage log and the run's
totals, and a budget is checked before each request starts (§3 "Usage log, prices and budgets").

The budget's scope is this run plus everything in the usage log, when there is one: the log
then holds this run's own lines too, so it alone is counted (re-read before every request,
only what was appended since), and processes sharing one log share one cap.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from anyfast_cli.errors import BudgetError, UsageError
from anyfast_cli.prices import PriceTable, render_cost
from anyfast_cli.result import RequestContext, RequestResult
from anyfast_cli.settings import BudgetLimits


@dataclass(slots=True)
class RunTotals:
    """This run's requests added up (batch's summary, `--usage`)."""

    tokens: int = 0
    cost: dict = field(default_factory=dict)  # currency ("" when none is said) -> amount

    def add(self, result: RequestResult) -> None:
        self.tokens += result.usage.tokens
        if result.cost is not None:
            currency = result.currency or ""
            self.cost[currency] = self.cost.get(currency, 0.0) + result.cost

    @property
    def money(self) -> float:
        return sum(self.cost.values())

    def describe_spend(self) -> str | None:
        """ "0.012345 USD" (per currency), or None when nothing had a price."""
        if not self.cost:
            return None
        return ", ".join(
            render_cost(amount) + (f" {currency}" if currency else "") for currency, amount in self.cost.items()
        )


class Meter:
    """Built once per command, before anything is sent: opens the log (a path that cannot be
    one is exit 2 now) and checks that a money budget can price every model."""

    def __init__(
        self,
        context: RequestContext,
        *,
        log_path: str | None = None,
        limits: BudgetLimits = BudgetLimits(),
        warn: Callable[[str], None] = lambda message: None,
    ) -> None:
        self.context = context
        self.limits = limits
        self.totals = RunTotals()
        self._warn = warn
        self._log = self._tally = None
        if log_path:  # usagelog.py loads only with a log
            from anyfast_cli.usagelog import LogTally, UsageLog

            self._log = UsageLog(log_path)
            self._tally = LogTally(log_path, context.prices.currency) if limits else None
        self._skipped_told = 0
        self._defer = None  # batch's scheduler for appending a turn's lines at once (defer_writes)
        self._pending: list = []  # log lines waiting for that
        self._foreign_told = 0

    @property
    def prices(self) -> PriceTable:
        return self.context.prices

    def check_models(self, models: Iterable[str]) -> None:
        """Before sending: a money budget needs a price for every model the command may use;
        a glob that prices none of them is only worth a warning."""
        models = list(dict.fromkeys(models))
        if self.limits.money is not None:
            unpriced = [model for model in models if self.prices.price_for(model) is None]
            if unpriced:
                raise UsageError(
                    f"--budget {self.limits.money:g} needs a price for every model used; none for "
                    + ", ".join(unpriced),
                    hint="add them to prices: in the config, or to --prices FILE",
                )
        if self.prices and models:
            for pattern in self.prices.unused_globs(models):
                self._warn(f"{self.prices.source}: the price for '{pattern}' matches no model this command uses")

    def spent(self) -> tuple[float, int]:
        """(money, tokens) that count against the budget now."""
        if self._tally is None:
            return self.totals.money, self.totals.tokens
        self._tally.refresh()
        if self._tally.skipped.count > self._skipped_told:
            self._skipped_told = self._tally.skipped.count
            self._warn(
                f"usage log {self._tally.path}: {self._tally.skipped.count} line(s) could not be read "
                f"(first: line {self._tally.skipped.first}); the budget counts them as 0"
            )
        if self.limits.money is not None and self._tally.foreign > self._foreign_told:
            self._foreign_told = self._tally.foreign
            self._warn(
                f"usage log {self._tally.path}: {self._tally.foreign} cost(s) in a currency other than "
                f"{self.prices.currency} are not counted against --budget"
            )
        return self._tally.cost, self._tally.tokens

    def before_request(self) -> None:
        """Raises BudgetError (exit 9) when the cap is reached: nothing more is sent."""
        if not self.limits:
            return
        self.flush()  # this process's own lines count too
        money, tokens = self.spent()
        if self.limits.money is not None and money >= self.limits.money:
            currency = f" {self.prices.currency}" if self.prices.currency else ""
            raise BudgetError(
                f"budget reached: spent {render_cost(money)}{currency} of --budget {self.limits.money:g}{self._scope()}; "
                "nothing more was sent"
            )
        if self.limits.tokens is not None and tokens >= self.limits.tokens:
            raise BudgetError(
                f"budget reached: {tokens:,} tokens of --budget-tokens {self.limits.tokens:,}{self._scope()}; "
                "nothing more was sent"
            )

    def _scope(self) -> str:
        return f" (this run and the usage log {self._log.path})" if self._log is not None else ""

    def record(self, result: RequestResult) -> None:
        self.totals.add(result)
        if self._log is None:
            return
        if self._defer is None:
            self._log.append(result.log_line())
            return
        if not self._pending:
            self._defer(self.flush)
        self._pending.append(result.log_line())

    def defer_writes(self, schedule: Callable[[Callable[[], None]], None] | None) -> None:
        """batch: lines finished in one turn of the event loop are appended together, in one
        write under one lock, when `schedule` runs `flush` (loop.call_soon); before each request
        and at the end they are written too, so a budget always reads them."""
        self.flush()
        self._defer = schedule

    def flush(self) -> None:
        if self._pending:
            lines, self._pending = self._pending, []
            self._log.append_all(lines)

    def close(self) -> None:
        if self._log is not None:
            self.flush()
            self._log.close()
