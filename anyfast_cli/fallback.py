"""Which failures send a request on to the next model (`--fallback`), as a pure rule.

Both transport shells (client.py, batch/runner.py) ask it once a model's request has failed
for good (its retries spent) and before any of its answer was shown. A fallback is for a model
that cannot answer now: one the gateway does not serve, or whose upstream stays down or
overloaded. Whatever is wrong with the request itself (400), the key (401, 403), the base URL
(a redirect, TLS) or the answer (unreadable) would be just as wrong for the next model.
"""

from __future__ import annotations

from anyfast_cli.errors import ApiError, NetworkError
from anyfast_cli.exchange import MODEL_NOT_FOUND

FALLBACK_NETWORK_CODES = ("network_error", "timeout")  # not tls_error: the host is the same for every model


def fallback_reason(error: BaseException, model: str | None) -> str | None:
    """Why a request that failed with `error` goes on to the next model, or None when it must not.
    The reason is short and stable, for --events (`fallback.reason`) and the usage log's readers."""
    if isinstance(error, ApiError):
        status = error.status
        if error.code == MODEL_NOT_FOUND:
            return "model_not_found"
        if status == 404 and model and model in error.message:  # a plain OpenAI-style gateway's unknown model
            return "model_not_found"
        if status == 429:
            return "rate_limited"
        if status is not None and 500 <= status < 600:
            return f"http_{status}"
        return None
    if isinstance(error, NetworkError) and error.code in FALLBACK_NETWORK_CODES:
        return "timeout" if error.code == "timeout" else "network"
    return None


def model_chain(model: str, fallbacks) -> tuple[str, ...]:
    """The models to try in order: the model, then each fallback once (a repeat would only
    fail again the same way)."""
    return tuple(dict.fromkeys([model, *(fallbacks or ())]))
