"""The registry: bounded maps, caller sessions held weakly, reset, the one fork hook, no import cycles."""

from __future__ import annotations

import ast
import gc
import os
import signal
import threading
import time
from pathlib import Path

import pytest

import sqlalchemy_rs_iam
from sqlalchemy_rs_iam import counters
from sqlalchemy_rs_iam.config import parse_config
from sqlalchemy_rs_iam.credentials import DbCredentials
from sqlalchemy_rs_iam.registry import REGISTRY, Registry

PACKAGE = Path(sqlalchemy_rs_iam.__file__).parent


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in [n for n in os.environ if n.startswith("AWS_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAUNITTEST")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "unit-test-secret")
    monkeypatch.setenv("AWS_REGION", "us-east-1")


def config(i: int = 0, **params: str):  # type: ignore[no-untyped-def]
    return parse_config({"workgroup": "analytics", **params}, database=f"db{i}")


class Session:
    """Stands in for a boto3.Session: weak-referenceable, has a region."""

    region_name = "us-east-1"


def test_connect_connectors_are_bounded_lru(aws_env: None) -> None:
    registry = Registry()
    first = registry.connector(config(0))
    assert registry.connector(config(0)) is first
    for i in range(1, Registry.MAX_CONNECTORS + 50):
        registry.connector(config(i))
    assert registry.sizes()["connectors"] == Registry.MAX_CONNECTORS
    assert registry.connector(config(0)) is not first  # evicted, least recently used first


def test_aws_clients_are_bounded_per_identity_and_options(aws_env: None) -> None:
    registry = Registry()
    for i in range(100):
        c = config(role_arn=f"arn:aws:iam::123456789012:role/r{i}")
        connector = registry.new_connector(c)
        connector.aws()  # made on demand, no AWS call
    assert registry.sizes()["clients"] == Registry.MAX_CLIENTS


def test_caller_sessions_get_serials_never_reused_and_are_held_weakly(aws_env: None) -> None:
    registry = Registry()
    seen_keys, addresses = set(), set()
    refs = []
    for _ in range(60):
        session = Session()
        addresses.add(id(session))
        connector = registry.connector(config(role_arn="arn:aws:iam::123456789012:role/tenant"), session)
        seen_keys.add(connector.identity.key)
        refs.append(__import__("weakref").ref(session))
        del session, connector  # freed at once (reference counting): the next session may get its address
    gc.collect()
    assert len(addresses) < 60  # CPython did reuse addresses: id() would have confused tenants
    assert len(seen_keys) == 60  # 60 sessions, 60 identities
    assert all(r() is None for r in refs)  # nothing of ours kept a caller's session alive
    assert len(registry._sessions) == 0


def test_an_engine_connector_keeps_its_session_alive(aws_env: None) -> None:
    registry = Registry()
    session = Session()
    ref = __import__("weakref").ref(session)
    connector = registry.new_connector(config(), session)
    del session
    gc.collect()
    assert ref() is not None and connector.identity.key.startswith("session#")


def test_reset_forgets_everything_and_engines_keep_working(aws_env: None) -> None:
    registry = Registry()
    connector = registry.new_connector(config())
    registry.credentials.get(
        connector.credential_key, lambda: DbCredentials("u", "p", time.time() + 900, None, time.time())
    )
    registry.connector(config(1))
    connector.aws()
    assert registry.sizes()["credentials"] == 1
    registry.reset()
    sizes = registry.sizes()
    assert sizes["credentials"] == sizes["clients"] == sizes["connectors"] == 0


def test_public_reset_is_exported() -> None:
    assert sqlalchemy_rs_iam.reset.__module__ == "sqlalchemy_rs_iam.registry"
    assert "reset" in sqlalchemy_rs_iam.__all__


def test_only_the_registry_registers_a_fork_hook() -> None:
    hooks = [p.name for p in PACKAGE.glob("*.py") if "register_at_fork" in p.read_text()]
    assert hooks == ["registry.py"]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_fork_while_every_lock_is_held_and_a_fetch_is_in_flight(aws_env: None) -> None:
    cache, ttl = REGISTRY.credentials, REGISTRY.endpoints
    now = time.time()
    warm = cache.get("unit-warm", lambda: DbCredentials("u", "p", now + 900, None, now))
    fetching, release, locked = threading.Event(), threading.Event(), threading.Event()

    def slow_fetch() -> DbCredentials:
        fetching.set()
        release.wait(30)
        return DbCredentials("u", "parent", time.time() + 900, None, time.time())

    def hold_locks() -> None:
        with cache._lock, ttl._lock, counters._lock, REGISTRY._lock, REGISTRY.budget._lock:
            locked.set()
            release.wait(30)

    threads = [
        threading.Thread(target=cache.get, args=("unit-busy", slow_fetch)),
        threading.Thread(target=hold_locks),
    ]
    threads[0].start()
    assert fetching.wait(10)
    threads[1].start()
    assert locked.wait(10)
    pid = os.fork()
    if pid == 0:  # child: only this thread exists; every lock above is "held" by a thread that is gone
        code = 1
        try:
            signal.alarm(20)  # a deadlock kills the child instead of hanging the test
            stats = counters.CacheStats()
            assert cache.get("unit-warm", slow_fetch, stats) is warm  # cached credentials survive the fork
            child = cache.get("unit-busy", lambda: DbCredentials("u", "child", time.time() + 900), stats)
            assert child.password == "child"  # the parent's in-flight fetch was forgotten
            assert ttl.get("host", lambda: ("h", 1)) == ("h", 1)
            assert REGISTRY.budget.take("k")
            assert stats.snapshot()["api_calls"] == 1 and stats.hits == 1
            code = 0
        finally:
            os._exit(code)
    try:
        _, status = os.waitpid(pid, 0)
    finally:
        release.set()
        for t in threads:
            t.join(10)
    assert os.waitstatus_to_exitcode(status) == 0
    assert cache.get("unit-busy", slow_fetch).password == "parent"
    cache.invalidate("unit-busy")
    cache.invalidate("unit-warm")
    ttl.invalidate("host")


# --- structure -------------------------------------------------------------------------------------------------


def _imports(path: Path) -> set[str]:
    """Package modules ``path`` imports, function-level imports included."""
    found: set[str] = set()
    package = "sqlalchemy_rs_iam"
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1:
                base = node.module or ""
                if base:
                    found.add(base.split(".")[0])
                else:
                    found.update(a.name for a in node.names)
            elif node.module and node.module.startswith(package + "."):
                found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith(package + "."):
                    found.add(alias.name.split(".")[1])
    return found


def test_no_import_cycles_among_core_modules() -> None:
    modules = {p.stem: p for p in PACKAGE.glob("*.py") if p.stem != "__main__"}
    graph = {
        name: {m for m in _imports(path) if m in modules and m != name} for name, path in modules.items()
    }
    graph["__init__"] = set()  # the package's lazy attribute table is not an import edge of its own

    def visit(node: str, stack: list[str], done: set[str]) -> None:
        if node in stack:
            raise AssertionError(" -> ".join([*stack[stack.index(node) :], node]))
        if node in done:
            return
        for nxt in graph.get(node, ()):
            visit(nxt, [*stack, node], done)
        done.add(node)

    done: set[str] = set()
    for name in graph:
        visit(name, [], done)


def test_pure_modules_import_neither_boto3_nor_sqlalchemy() -> None:
    for name in ("config", "policy", "identity", "cache", "counters", "credentials", "errors"):
        source = (PACKAGE / f"{name}.py").read_text()
        tree = ast.parse(source)
        names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        names |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert not any(m.split(".")[0] in ("boto3", "botocore", "sqlalchemy") for m in names), name


def test_the_cli_does_not_import_the_stand_ins_main_module() -> None:
    assert "testing.__main__" not in (PACKAGE / "cli.py").read_text()
