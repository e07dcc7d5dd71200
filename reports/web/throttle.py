"""Login throttling: exponential backoff per user name and per client address.

Every login attempt (the form or HTTP Basic credentials that are not already known good) is counted as a
failure when it starts, so that fifty guesses sent at once are counted before any of them is checked, and a
success takes its own count back. After ``free_failures`` failures of a user, or ``free_failures_per_address``
of an address, the next attempt must wait ``base_delay_s * 2**k`` (k = failures beyond the free ones), at most
``max_delay_s``; an attempt sent earlier is refused at once with the time left, without hashing anything.
Records are forgotten ``forget_after_s`` after their last failure, and at most ``max_records`` are kept (the
oldest go first), so a flood of made-up names cannot fill the memory.

A guesser elsewhere must not lock a user out: an address the user logged in from within ``known_address_s`` is
exempt from the user's count (its own per-address count still applies), so the user's usual workstation gets in
while the guesses from other addresses wait.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field

#: Failures allowed without a wait: per user name (typos) and per address (several users behind one proxy).
FREE_FAILURES_PER_USER = 3
FREE_FAILURES_PER_ADDRESS = 10
BASE_DELAY_S = 1.0
MAX_DELAY_S = 900.0
FORGET_AFTER_S = 3600.0
KNOWN_ADDRESS_S = 30 * 24 * 3600.0
MAX_RECORDS = 10_000


@dataclass
class _Record:
    failures: int = 0
    blocked_until: float = 0.0
    last_failure: float = 0.0
    refusal_logged: bool = False


@dataclass(frozen=True)
class Admission:
    """Whether an attempt may go on: ``retry_after_s`` is 0 when it may; ``first_refusal`` is true for the first
    refusal of a wait (the one worth a log line)."""

    retry_after_s: float
    first_refusal: bool = False

    @property
    def admitted(self) -> bool:
        return self.retry_after_s <= 0


@dataclass
class LoginThrottle:
    """Failure counts and waits per user name and per client address (thread-safe; one per web app)."""

    free_failures_per_user: int = FREE_FAILURES_PER_USER
    free_failures_per_address: int = FREE_FAILURES_PER_ADDRESS
    base_delay_s: float = BASE_DELAY_S
    max_delay_s: float = MAX_DELAY_S
    forget_after_s: float = FORGET_AFTER_S
    known_address_s: float = KNOWN_ADDRESS_S
    max_records: int = MAX_RECORDS
    _records: OrderedDict[str, _Record] = field(default_factory=OrderedDict, repr=False)
    _known: OrderedDict[str, float] = field(default_factory=OrderedDict, repr=False)  # user\0address -> until
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def _keys(self, username: str, address: str) -> tuple[tuple[str, int], ...]:
        return (f"user\0{username.casefold()}", self.free_failures_per_user), (
            f"address\0{address}", self.free_failures_per_address)

    def _record(self, key: str, now: float) -> _Record:
        record = self._records.get(key)
        if record is None or now - record.last_failure > self.forget_after_s:
            record = _Record()
        self._records[key] = record
        self._records.move_to_end(key)
        while len(self._records) > self.max_records:
            self._records.popitem(last=False)
        return record

    def admit(self, username: str, address: str, *, now: float | None = None) -> Admission:
        """May an attempt of ``username`` from ``address`` go on now? If so it is counted as a failure until
        :meth:`succeeded` takes it back."""
        now = time.monotonic() if now is None else now
        with self._lock:
            keys = self._keys(username, address)
            if self._known.get(f"{username.casefold()}\0{address}", 0.0) > now:
                keys = keys[1:]  # the user's own workstation: only the address's count applies
            records = [(self._record(key, now), free) for key, free in keys]
            wait_s = max(record.blocked_until - now for record, _ in records)
            if wait_s > 0:
                first = not all(record.refusal_logged for record, _ in records if record.blocked_until > now)
                for record, _ in records:
                    if record.blocked_until > now:
                        record.refusal_logged = True
                return Admission(wait_s, first)
            for record, free in records:
                record.failures += 1
                record.last_failure = now
                record.refusal_logged = False
                beyond = record.failures - free
                if beyond > 0:
                    record.blocked_until = now + min(self.max_delay_s, self.base_delay_s * 2.0 ** (beyond - 1))
            return Admission(0.0)

    def succeeded(self, username: str, address: str, *, now: float | None = None) -> None:
        """The admitted attempt was right: the user's failures are forgotten, the address's count loses the one
        this attempt added, and the address becomes one the user is known to log in from."""
        now = time.monotonic() if now is None else now
        (user_key, _), (address_key, _) = self._keys(username, address)
        with self._lock:
            known_key = f"{username.casefold()}\0{address}"
            self._known[known_key] = now + self.known_address_s
            self._known.move_to_end(known_key)
            while len(self._known) > self.max_records:
                self._known.popitem(last=False)
            self._records.pop(user_key, None)
            record = self._records.get(address_key)
            if record is not None:
                record.failures = max(0, record.failures - 1)
                if record.failures <= self.free_failures_per_address:
                    record.blocked_until = 0.0
