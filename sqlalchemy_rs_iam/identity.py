"""Which AWS identity would sign a request *now*: a secret-free key, computed without boto3 or network.

Every cache key of this package (credentials, endpoints, AWS clients) starts with this key, so a credential
issued to one AWS identity is never handed to another. It is derived from the credential source botocore's
default chain would use at this moment, read the way botocore reads it:

* ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` in the environment (unless the URL names a profile,
  which makes botocore skip them): the access key id;
* else the profile in effect (``aws_profile``, ``AWS_DEFAULT_PROFILE``, ``AWS_PROFILE`` or ``default``), the
  config and credentials files it comes from (``AWS_CONFIG_FILE``, ``AWS_SHARED_CREDENTIALS_FILE``), and the
  profile's settings as they are in those files now, following ``source_profile`` (access key id, role ARN,
  web identity token file, SSO account / role / start URL, ``credential_source``; the external id and
  ``credential_process`` only as hashes; secret keys and tokens never);
* the web-identity variables (``AWS_ROLE_ARN``, ``AWS_WEB_IDENTITY_TOKEN_FILE``) and the container
  credential variables; with none of those, the instance role, which is one per host.
* a ``role_arn`` in the URL adds the role ARN, the session name and a hash of the external id.
* a caller's own ``boto3.Session`` is its own identity (a serial number that is never reused).

Where this is not exact: a ``credential_process`` or an SSO login may hand out another principal's keys
without any visible setting changing; an instance or container role is identified by the host, not by
name. Rotating a secret key under the same access key id does not change the identity (AWS never reuses an
access key id for another principal).

Example::

    >>> resolver = IdentityResolver()
    >>> who = resolver.identify(AwsOptions(region="us-east-1"), environ={"AWS_ACCESS_KEY_ID": "AKIAEXAMPLE",
    ...                                                       "AWS_SECRET_ACCESS_KEY": "..."})
    >>> who.key, who.label
    ('env:AKIAEXAMPLE', 'AWS keys from the environment (AKIAEXAMPLE)')

Reading the files is memoised on their (inode, size, mtime) and the relevant variables, so recomputing the
identity costs a few microseconds when nothing changed.
"""

from __future__ import annotations

import configparser
import hashlib
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass

from .config import AwsOptions
from .errors import ConfigurationError

__all__ = ["Identity", "IdentityResolver"]

# What botocore reads from the environment to choose credentials and region (values are ids and paths).
_SELECTORS = (
    "AWS_ACCESS_KEY_ID",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_ROLE_ARN",
    "AWS_ROLE_SESSION_NAME",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_EC2_METADATA_DISABLED",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "HOME",
    # where calls go: another endpoint (a proxy, an emulator) issues other credentials
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_REDSHIFT",
    "AWS_ENDPOINT_URL_REDSHIFT_SERVERLESS",
    "AWS_ENDPOINT_URL_STS",
    "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS",
)
_ENDPOINT_SELECTORS = tuple(name for name in _SELECTORS if "ENDPOINT_URL" in name)
_SELECTORS_RAW = tuple(os.fsencode(name) for name in _SELECTORS)
# Profile settings that are secrets: never read into an identity, not even hashed.
_SECRET_SETTINGS = frozenset({"aws_secret_access_key", "aws_session_token", "aws_security_token"})
# Settings that may carry a secret (a shared external id, a command line with a token): hashed.
_HASHED_SETTINGS = frozenset({"external_id", "credential_process"})
# Settings that do not change who signs.
_IRRELEVANT_SETTINGS = frozenset({"output", "cli_pager", "cli_history", "max_attempts", "retry_mode"})


@dataclass(frozen=True)
class Identity:
    """The AWS identity that would sign, as a secret-free ``key`` and a human ``label``.

    ``region`` is the region calls go to; ``profile`` is what to hand to ``boto3.Session(profile_name=...)``
    (the URL's ``aws_profile``; otherwise botocore finds the same profile by itself); ``access_key_id`` is
    set where the source is a static key, so the AWS layer can check that the session it builds really
    signs with it.
    """

    key: str
    label: str
    region: str
    profile: str | None = None
    access_key_id: str | None = None


def digest(text: str) -> str:
    """A short, stable hash for values that must not appear in clear (external ids, commands)."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def with_role(base: Identity, options: AwsOptions) -> Identity:
    """``base`` with the URL's ``role_arn`` assumed on top of it (a role session is another identity)."""
    if options.role_arn is None:
        return base
    key = f"{base.key}|role={options.role_arn}|session={options.role_session_name}"
    if options.external_id is not None:
        key += f"|ext={digest(options.external_id)}"
    return Identity(key, f"role {options.role_arn} (from {base.label})", base.region, base.profile)


def _selector_values(env: Mapping[str, str]) -> tuple[str | None, ...]:
    raw = getattr(env, "_data", None) if env is os.environ else None
    if isinstance(raw, dict):  # CPython's os.environ: skip its per-lookup encode/decode (a few us each)
        return tuple(None if v is None else os.fsdecode(v) for v in map(raw.get, _SELECTORS_RAW))
    return tuple(env.get(name) for name in _SELECTORS)


def _stat(path: str) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


def _read_sections(path: str, *, config_file: bool) -> dict[str, dict[str, str]]:
    """Profiles of one AWS file: ``[profile x]``/``[default]`` in the config file, ``[x]`` in credentials."""
    parser = configparser.RawConfigParser(strict=False, interpolation=None)
    try:
        parser.read(path, encoding="utf-8")
    except (configparser.Error, UnicodeDecodeError, OSError):
        return {}  # botocore will fail on it with its own error when it signs; the key stays distinct
    profiles: dict[str, dict[str, str]] = {}
    for section in parser.sections():
        name = section.strip()
        if config_file:
            if name.startswith("profile "):
                name = name[len("profile ") :].strip()
            elif name.startswith("sso-session "):
                name = "sso-session:" + name[len("sso-session ") :].strip()
            elif name != "default":
                continue
        profiles[name] = {k.strip().lower(): v.strip() for k, v in parser.items(section)}
    return profiles


class IdentityResolver:
    """Computes :class:`Identity` for AWS options; one per process (the registry's), thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._memo: dict[tuple[object, ...], Identity] = {}
        self._path_memo: dict[tuple[str | None, ...], tuple[str, str]] = {}

    def identify(self, options: AwsOptions, environ: Mapping[str, str] | None = None) -> Identity:
        """The identity that would sign for ``options`` now (default chain, or the URL's profile).

        Raises :class:`ConfigurationError` for a named profile that exists in neither file, and when no
        region can be found.
        """
        env = os.environ if environ is None else environ
        values = _selector_values(env)
        has_env_keys = bool(values[0]) and "AWS_SECRET_ACCESS_KEY" in env
        paths = self._path_memo.get(values)
        if paths is None:
            paths = self._path_memo[values] = self._paths(values)
        config_path, credentials_path = paths
        fingerprint = (options.profile, options.region, values, has_env_keys, _stat(config_path),
                       _stat(credentials_path))  # fmt: skip
        found = self._memo.get(fingerprint)
        if found is None:
            found = self._compute(options, env, has_env_keys, config_path, credentials_path)
            with self._lock:
                if len(self._memo) >= 64:  # the environment changes rarely; never let this grow
                    self._memo.clear()
                    self._path_memo.clear()
                self._memo[fingerprint] = found
        return with_role(found, options)

    def for_session(self, options: AwsOptions, serial: int, region: str | None) -> Identity:
        """A caller's own boto3 session: its own identity, named by a serial number never reused."""
        chosen = options.region or region
        if not chosen:
            raise _no_region()
        return with_role(
            Identity(f"session#{serial}", f"the boto3 session #{serial} passed in", chosen), options
        )

    def clear(self) -> None:
        with self._lock:
            self._memo.clear()
            self._path_memo.clear()

    def after_fork(self) -> None:
        self._lock = threading.Lock()

    # --- internals ---------------------------------------------------------------------------------------

    @staticmethod
    def _paths(values: tuple[str | None, ...]) -> tuple[str, str]:
        env = dict(zip(_SELECTORS, values, strict=True))
        home = env["HOME"] or os.path.expanduser("~")
        config = os.path.expanduser(env["AWS_CONFIG_FILE"] or os.path.join(home, ".aws", "config"))
        credentials = os.path.expanduser(
            env["AWS_SHARED_CREDENTIALS_FILE"] or os.path.join(home, ".aws", "credentials")
        )
        return os.path.abspath(config), os.path.abspath(credentials)

    def _compute(
        self,
        options: AwsOptions,
        env: Mapping[str, str],
        has_env_keys: bool,
        config_path: str,
        credentials_path: str,
    ) -> Identity:
        config = _read_sections(config_path, config_file=True)
        credentials = _read_sections(credentials_path, config_file=False)
        profile = options.profile or env.get("AWS_DEFAULT_PROFILE") or env.get("AWS_PROFILE") or "default"
        named = options.profile is not None or "AWS_DEFAULT_PROFILE" in env or "AWS_PROFILE" in env
        uses_profile = not (has_env_keys and options.profile is None)
        if uses_profile and named and profile not in config and profile not in credentials:
            source = "the URL" if options.profile is not None else "AWS_PROFILE / AWS_DEFAULT_PROFILE"
            raise ConfigurationError(
                "aws_profile",
                f"profile {profile!r} (from {source}) is not in the AWS config file ({config_path}) "
                f"or credentials file ({credentials_path})",
            )

        region = (
            options.region
            or env.get("AWS_REGION")
            or env.get("AWS_DEFAULT_REGION")
            or config.get(profile, {}).get("region")
        )
        if not region:
            raise _no_region()

        endpoints = "".join(f"|{name}={env[name]}" for name in _ENDPOINT_SELECTORS if env.get(name))
        if has_env_keys and options.profile is None:  # botocore's first provider; a URL profile disables it
            key_id = env["AWS_ACCESS_KEY_ID"]
            key = f"env:{key_id}" + (f"#{digest(endpoints)}" if endpoints else "")
            return Identity(key, f"AWS keys from the environment ({key_id})", region, None, key_id)

        material: list[str] = [f"files={config_path}|{credentials_path}{endpoints}"]
        file_key_id = self._profile_material(profile, config, credentials, material, set())
        for name in ("AWS_ROLE_ARN", "AWS_ROLE_SESSION_NAME", "AWS_WEB_IDENTITY_TOKEN_FILE",
                     "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                     "AWS_EC2_METADATA_DISABLED"):  # fmt: skip
            if env.get(name):
                material.append(f"env:{name}={env[name]}")
        label = f"profile {profile}" + (f" ({file_key_id})" if file_key_id else "")
        key = f"profile:{profile}:{file_key_id or '-'}#{digest(chr(10).join(material))}"
        return Identity(key, label, region, options.profile, file_key_id)

    def _profile_material(
        self,
        profile: str,
        config: dict[str, dict[str, str]],
        credentials: dict[str, dict[str, str]],
        material: list[str],
        seen: set[str],
    ) -> str | None:
        """Append the secret-free settings of ``profile`` (and of its source profiles) to ``material``;
        return the static access key id that would sign, if the source is one."""
        if profile in seen:  # a source_profile loop: botocore refuses it; keep the key distinct anyway
            material.append(f"loop:{profile}")
            return None
        seen.add(profile)
        settings = dict(config.get(profile, {}))
        settings.update(credentials.get(profile, {}))  # the credentials file wins, as in botocore
        for name in sorted(settings):
            if name in _SECRET_SETTINGS or name in _IRRELEVANT_SETTINGS:
                continue
            value = settings[name]
            shown = digest(value) if name in _HASHED_SETTINGS else value
            material.append(f"{profile}.{name}={shown}")
        sso_session = settings.get("sso_session")
        if sso_session:
            for name, value in sorted(config.get(f"sso-session:{sso_session}", {}).items()):
                material.append(f"sso-session.{name}={value}")
        source = settings.get("source_profile")
        if settings.get("role_arn"):
            if source:
                self._profile_material(source, config, credentials, material, seen)
            return None  # the role signs, not the source's key
        key_id = settings.get("aws_access_key_id")
        return key_id or None


def _no_region() -> ConfigurationError:
    return ConfigurationError(
        "region",
        "no AWS region: add region=<name> to the URL, use a Redshift endpoint host, or configure one "
        "(AWS_REGION / AWS_DEFAULT_REGION or the profile's region)",
    )
