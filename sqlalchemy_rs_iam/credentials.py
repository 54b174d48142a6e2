"""Temporary database credentials as a frozen value whose repr never shows the password.

Example::

    >>> c = DbCredentials(user="IAMR:etl", password="s3cr3t", expiration=1900.0, fetched_at=1000.0)
    >>> c
    DbCredentials(user='IAMR:etl', password='***', expiration=1900.0, next_refresh=None, fetched_at=1000.0)
    >>> c.lifetime
    900.0
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, eq=False)
class DbCredentials:
    """A database user and temporary password issued by Redshift.

    ``expiration``, ``next_refresh`` and ``fetched_at`` are epoch seconds on the *local* clock: the AWS
    layer corrects AWS's timestamps for clock skew before building this object, so the cache can compare
    them with ``time.time()`` directly. Equality is identity: two fetches are two credentials even if AWS
    returned the same values.
    """

    user: str
    password: str = field(repr=False)
    expiration: float
    next_refresh: float | None = None
    fetched_at: float = 0.0
    #: True when read from the host cache (``cache=host``) rather than issued to this process by AWS.
    shared: bool = field(default=False, compare=False)

    @property
    def lifetime(self) -> float:
        """Seconds between fetching and expiry (local clock)."""
        return self.expiration - self.fetched_at

    def __repr__(self) -> str:
        return (
            f"DbCredentials(user={self.user!r}, password='***', expiration={self.expiration!r}, "
            f"next_refresh={self.next_refresh!r}, fetched_at={self.fetched_at!r})"
        )

    __str__ = __repr__
