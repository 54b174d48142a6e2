"""What the AWS emulator has issued, shared with the Redshift front that enforces it.

The emulator adds an :class:`IssuedCredential` for every GetCredentials / GetClusterCredentials(+WithIAM)
answer; the front authenticates a client login against the live credentials of that login user, then logs in
to PostgreSQL as ``credential.role`` with the stand-in's internal password for that role. Several credentials
for one user may be live at once, each with its own expiry, as on Redshift.

Example::

    store = CredentialStore()
    store.add(IssuedCredential(login_user="IAM:alice", password="pw", role="alice",
                               expires_at=time.time() + 900, issued_at=time.time(), caller="AKIA..."))
    store.find_live("IAM:alice", lambda pw: pw == "pw")   # -> the credential
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class IssuedCredential:
    """One temporary credential the emulator handed out."""

    login_user: str  # what the client sends as user, e.g. "IAM:alice", "IAMA:bob", "IAMR:etl-role"
    password: str = field(repr=False)
    role: str  # PostgreSQL role the front logs in as upstream, e.g. "alice" or "IAMR:etl-role"
    expires_at: float  # epoch seconds
    issued_at: float
    caller: str  # principal the request was signed as
    groups: tuple[str, ...] = ()
    # A reason the login must fail although the password is right (e.g. 'group "x" does not exist'),
    # mirroring Redshift, where GetClusterCredentials succeeds and the login fails.
    login_error: str | None = None


class RoleAdmin(Protocol):
    """What the emulator needs from the database to make issued credentials real."""

    def role_exists(self, role: str) -> bool: ...

    def ensure_login_role(self, role: str, password: str) -> None:
        """Create the LOGIN role if missing, and set its password (the stand-in's internal one)."""

    def group_exists(self, group: str) -> bool: ...

    def grant_group(self, group: str, role: str) -> None: ...


class CredentialStore:
    """Thread-safe registry of issued credentials; also derives the internal upstream passwords."""

    def __init__(self, secret: bytes | None = None, clock: Callable[[], float] = time.time) -> None:
        self._secret = secret if secret is not None else secrets.token_bytes(32)
        self._clock = clock
        self._lock = threading.Lock()
        self._by_user: dict[str, list[IssuedCredential]] = {}

    def role_password(self, role: str) -> str:
        """The internal password of a PostgreSQL role the stand-in manages (never given to clients)."""
        return hmac.new(self._secret, role.encode(), hashlib.sha256).hexdigest()

    def add(self, credential: IssuedCredential) -> None:
        with self._lock:
            now = self._clock()
            live = [c for c in self._by_user.get(credential.login_user, ()) if c.expires_at > now]
            live.append(credential)
            self._by_user[credential.login_user] = live

    def is_managed(self, login_user: str) -> bool:
        """True if the emulator ever issued credentials for this login user (so the front owns its auth)."""
        with self._lock:
            return login_user in self._by_user

    def find_live(self, login_user: str, matches: Callable[[str], bool]) -> IssuedCredential | None:
        """The unexpired credential of ``login_user`` whose password satisfies ``matches``, if any."""
        with self._lock:
            candidates = list(self._by_user.get(login_user, ()))
        now = self._clock()
        for cred in candidates:
            if cred.expires_at > now and matches(cred.password):
                return cred
        return None

    def revoke(self, login_user: str | None = None) -> int:
        """Revoke every credential (of one login user, or of all); returns how many were live."""
        with self._lock:
            now = self._clock()
            users = [login_user] if login_user is not None else list(self._by_user)
            count = 0
            for user in users:
                count += sum(1 for c in self._by_user.get(user, ()) if c.expires_at > now)
                if user in self._by_user:
                    self._by_user[user] = []
            return count

    def login_users(self) -> list[str]:
        """Every login user credentials were ever issued for (the users the front manages)."""
        with self._lock:
            return list(self._by_user)

    def live(self, login_user: str) -> list[IssuedCredential]:
        with self._lock:
            now = self._clock()
            return [c for c in self._by_user.get(login_user, ()) if c.expires_at > now]
