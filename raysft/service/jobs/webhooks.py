"""Signed webhooks: which URLs a job may notify, what each POST carries, and the sender that drains the outbox.

Every state change of a job is one delivery per URL (the server's `--webhook` URLs and the job's
`notify_urls`), written by the store in the same transaction as the state_changed event, so a crash loses
none. `WebhookSender` claims due deliveries from the store (several servers on one store never send the same
one at once), POSTs them and retries a failing receiver with exponential backoff for an hour after the state
change. Delivery is at least once: a receiver de-duplicates on `X-Raysft-Delivery` / `delivery_id`.
Deliveries to one URL for one job go out in the order of the state changes.

A job's URLs come from a client, so they are confined to the operator's `--webhook-allow-prefix` values,
matched on the parsed URL (scheme, host, port, then path by whole segments), never redirected: a client
cannot aim the server at an internal address.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import logging
import math
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, NamedTuple, Optional
from urllib.parse import unquote, urlsplit

from raysft.config import Violation

if TYPE_CHECKING:
    from raysft.service.jobs.store import DeliveryRecord, Store

__all__ = ["WebhookPolicy", "WebhookSender", "payload", "sign", "MAX_NOTIFY_URLS", "MAX_URL_LENGTH"]

log = logging.getLogger(__name__)

MAX_NOTIFY_URLS = 5
MAX_URL_LENGTH = 2048
MAX_SUMMARY_BYTES = 32 * 1024  # a webhook body stays small; a tune campaign's summary may not
_DEFAULT_PORTS = {"http": 80, "https": 443}


# ------------------------------------------------------------------------------------------ URLs


class _Url(NamedTuple):
    scheme: str
    host: str
    port: int
    path: str


def _parse(url: str) -> _Url:
    """The parts a prefix is matched on. Raises ValueError saying what is wrong with `url`."""
    if not isinstance(url, str) or not url:
        raise ValueError("must be a non-empty URL")
    if len(url) > MAX_URL_LENGTH:
        raise ValueError(f"must be at most {MAX_URL_LENGTH} characters (got {len(url)})")
    if not url.isascii() or any(c <= " " or c in "\x7f\\" for c in url):
        raise ValueError("must be plain ASCII without spaces, control characters or backslashes (punycode a host)")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise ValueError(f"must be an http:// or https:// URL (got {scheme or 'no'} scheme)")
    if "@" in parts.netloc:
        raise ValueError("must not carry credentials (user:password@); the payload is signed instead")
    if parts.fragment:
        raise ValueError("must not have a #fragment")
    try:
        port = parts.port or _DEFAULT_PORTS[scheme]
    except ValueError:
        raise ValueError("has an invalid port") from None
    if not parts.hostname:
        raise ValueError("has no host")
    path = parts.path or "/"
    # A receiver resolves dot segments (/hooks/../admin is /admin): they would step out of a prefix.
    if any(seg.split(";")[0] in (".", "..") for seg in unquote(path).split("/")) or "\\" in unquote(path):
        raise ValueError("must not contain . or .. path segments")
    return _Url(scheme, parts.hostname, port, path)


def _under(url: _Url, prefix: _Url) -> bool:
    if url[:3] != prefix[:3]:
        return False
    base = prefix.path if prefix.path.endswith("/") else prefix.path + "/"
    return url.path == prefix.path or url.path.startswith(base)


class WebhookPolicy:
    """The operator's webhook settings: server-wide URLs, the prefixes job URLs must lie under, the secret.

    Args:
        urls: `--webhook` URLs: notified of every job's state changes.
        allow_prefixes: `--webhook-allow-prefix` values; a job's notify_urls must each lie under one.
        secret: the HMAC key (`--webhook-secret-file`); required as soon as either list is non-empty.

    Raises:
        ValueError: a bad URL or prefix, or URLs without a secret.
    """

    def __init__(self, urls: tuple[str, ...] = (), allow_prefixes: tuple[str, ...] = (), secret: Optional[bytes] = None):
        for flag, values in (("--webhook", urls), ("--webhook-allow-prefix", allow_prefixes)):
            for value in values:
                try:
                    _parse(value)
                except ValueError as exc:
                    raise ValueError(f"{flag} {value!r}: {exc}") from None
        if any("?" in p for p in allow_prefixes):
            raise ValueError("--webhook-allow-prefix takes scheme://host[:port][/path], without a ?query")
        if (urls or allow_prefixes) and not secret:
            raise ValueError("webhooks are signed: pass --webhook-secret-file with a long random string in it")
        self.urls = tuple(dict.fromkeys(urls))
        self.secret = secret
        self._prefixes = [_parse(p) for p in allow_prefixes]

    @property
    def enabled(self) -> bool:
        return bool(self.secret)

    def problems(self, notify_urls: list[str], field: str = "notify_urls") -> list[Violation]:
        """What is wrong with a job's notify_urls, each named `notify_urls[i]`."""
        if not notify_urls:
            return []
        if not self._prefixes:
            return [Violation(field, "this server sends no webhooks to URLs a job names; leave it empty, or ask the "
                                     "operator for `raysft serve --webhook-allow-prefix`")]
        if len(notify_urls) > MAX_NOTIFY_URLS:
            return [Violation(field, f"at most {MAX_NOTIFY_URLS} URLs per job (got {len(notify_urls)})")]
        out = []
        for i, url in enumerate(notify_urls):
            try:
                parsed = _parse(url)
            except ValueError as exc:
                out.append(Violation(f"{field}[{i}]", str(exc)))
                continue
            if notify_urls.index(url) < i:
                out.append(Violation(f"{field}[{i}]", f"repeats {field}[{notify_urls.index(url)}]"))
            elif not any(_under(parsed, p) for p in self._prefixes):
                out.append(Violation(f"{field}[{i}]", "is not under a URL prefix this server allows; ask the operator "
                                                      "which (`raysft serve --webhook-allow-prefix`)"))
        return out


# ------------------------------------------------------------------------------------- payload


def payload(delivery_id: str, job_id: str, sequence: int, state: str, previous_state: str, reason: str, when: float,
            output: dict) -> str:
    """The JSON body of one delivery (signed as these exact bytes, so it is built once and stored).

    Built inside the state change's transaction, so it never raises: `output.summary` comes from the job's own
    summary.json, and one that is not plain JSON or over MAX_SUMMARY_BYTES is left out (GetJob still has it).
    """
    body = {"delivery_id": delivery_id, "job_id": job_id, "sequence": sequence, "state": state,
            "previous_state": previous_state or None, "reason": str(reason)[:1000],
            "time": dt.datetime.fromtimestamp(when, dt.timezone.utc).isoformat().replace("+00:00", "Z"),
            "output": {k: v for k, v in output.items() if k != "summary"}}
    if output.get("summary") is not None:
        try:
            summary = json.dumps(_finite(output["summary"]), allow_nan=False, separators=(",", ":"))
            if len(summary) <= MAX_SUMMARY_BYTES:
                body["output"]["summary"] = json.loads(summary)
        except (TypeError, ValueError, RecursionError):
            pass
    return json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False, default=str)


def _finite(value):
    """JSON-able `value` with NaN and infinities as null (a diverged run's eval_loss is NaN; JSON has none)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def sign(secret: bytes, body: bytes) -> str:
    """The X-Raysft-Signature header value: `sha256=` and the hex HMAC-SHA256 of the body."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


# -------------------------------------------------------------------------------------- sending


def _shown(url: str) -> str:
    """The URL as logged: without its query, where receivers often keep a token."""
    return url.split("?", 1)[0]


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):  # a redirect could point anywhere, past the allowed prefixes
        return None


class WebhookSender:
    """Drains the store's outbox on a thread of its own: POST, then delivered, retried later, or given up.

    Args:
        backoff_base_s: wait after the first failure; it doubles after each one, up to backoff_cap_s.
        give_up_after_s: no attempt is made later than this after the state change (the last one is recorded).
        timeout_s: per connect and per read of one POST.
        workers: POSTs at once (a slow receiver holds one).
        keep_s: how long finished deliveries stay in the store (for inspection) before they are deleted.
    """

    def __init__(self, store: "Store", secret: bytes, *, backoff_base_s: float = 10.0, backoff_cap_s: float = 600.0,
                 give_up_after_s: float = 3600.0, timeout_s: float = 10.0, poll_s: float = 2.0, workers: int = 4,
                 keep_s: float = 7 * 86400.0):
        self.store, self._secret = store, secret
        self.backoff_base_s, self.backoff_cap_s, self.give_up_after_s = backoff_base_s, backoff_cap_s, give_up_after_s
        self.timeout_s, self.poll_s, self._workers, self.keep_s = timeout_s, poll_s, workers, keep_s
        self._pruned_at = 0.0
        self._opener = urllib.request.build_opener(_NoRedirect)
        self._wake, self._stopping = threading.Event(), threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._pool: Optional[ThreadPoolExecutor] = None

    def start(self) -> None:
        self._pool = ThreadPoolExecutor(self._workers, thread_name_prefix="webhook")
        self._thread = threading.Thread(target=self._run, name="webhook-sender", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """Look for due deliveries now (the store calls it after a state change)."""
        self._wake.set()

    def stop(self) -> None:
        """Finish the POSTs under way, then stop; what is left stays in the store for the next server."""
        if self._thread is None:
            return
        self._stopping.set()
        self._wake.set()
        self._thread.join()
        self._pool.shutdown(wait=True)
        self._thread = None

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._wake.clear()  # before claiming: a change committed meanwhile wakes the next wait
            try:
                busy = self._round()
            except Exception:  # the database is away: the deliveries wait in it (a claimed one is sent again later)
                log.exception("webhooks: could not work through the outbox; retrying in %.0fs", self.poll_s)
                busy = False
            if not busy:
                self._wake.wait(self.poll_s)

    def _round(self) -> bool:
        """Send what is due; True when there was some (the next deliveries in order may be due at once)."""
        if time.time() - self._pruned_at > 600:  # the outbox grows by every state change: bounded by keep_s
            self._pruned_at = time.time()
            self.store.prune_deliveries(self._pruned_at - self.keep_s)
        claimed = self.store.claim_deliveries(self._workers * 4, lease_s=3 * self.timeout_s + 5)
        list(self._pool.map(self._send, claimed))
        return bool(claimed)

    def _send(self, d: "DeliveryRecord") -> None:
        body = d.body.encode()
        headers = {"Content-Type": "application/json", "User-Agent": "raysft-webhooks/1", "X-Raysft-Delivery": d.id,
                   "X-Raysft-Signature": sign(self._secret, body)}
        try:
            status = self._post(d.url, body, headers)
            error = "" if 200 <= status < 300 else f"HTTP {status}"
        except Exception as exc:  # refused, timed out, TLS, ...: all are the receiver's to fix, and retried
            error = f"{type(exc).__name__}: {exc}"[:500]
        now = time.time()
        retry_at = now + min(self.backoff_base_s * 2 ** d.attempts, self.backoff_cap_s)
        if not error:
            self.store.finish_delivery(d.id, delivered_at=now)
        elif retry_at > d.created_at + self.give_up_after_s:
            self.store.finish_delivery(d.id, error=error)
            log.warning("webhook delivery %s of job %s to %s given up after %d attempts: %s", d.id, d.job_id,
                        _shown(d.url), d.attempts + 1, error)
        else:
            self.store.finish_delivery(d.id, error=error, retry_at=retry_at)
            log.info("webhook delivery %s to %s failed (%s); retrying in %.1fs", d.id, _shown(d.url), error,
                     retry_at - now)

    def _post(self, url: str, body: bytes, headers: dict) -> int:
        request = urllib.request.Request(url, data=body, headers=headers, method="POST")
        try:
            with self._opener.open(request, timeout=self.timeout_s) as response:
                response.read(1024)  # the answer is not ours to keep: read a little so the connection ends cleanly
                return response.status
        except urllib.error.HTTPError as exc:  # non-2xx, and 3xx since redirects are refused
            exc.close()
            return exc.code
