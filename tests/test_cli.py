"""The command line's own surface: help texts, ``serve --host`` and ``hash-key``'s stdin."""

from __future__ import annotations

import argparse
import hashlib
import io
from collections.abc import Iterator

import pytest

from banditroute import cli
from banditroute.config import Settings


def _commands(
    parser: argparse.ArgumentParser, name: str = "banditroute"
) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """Every (sub)command's parser, depth first, with its full name."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                yield f"{name} {sub_name}", sub
                yield from _commands(sub, f"{name} {sub_name}")


def _options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [
        a
        for a in parser._actions
        if not isinstance(a, argparse._HelpAction | argparse._SubParsersAction)
    ]


def test_every_subcommand_has_a_description_and_every_argument_a_help_text() -> None:
    """`banditroute CMD --help` explains the command and each of its arguments (`serve`, `audit`
    and `hash-key` had no description, `simulate --seeds` and `report --bucket` no help)."""
    missing = [
        name for name, sub in _commands(cli.build_parser()) if not (sub.description or "").strip()
    ]
    missing += [
        f"{name} {action.option_strings or action.dest}"
        for name, sub in _commands(cli.build_parser())
        for action in _options(sub)
        if not (action.help or "").strip()
    ]
    assert missing == []


def test_serve_help_shows_every_default(capsys: pytest.CaptureFixture[str]) -> None:
    """Each `serve` option's help says what it defaults to, with the embedded default value
    (a user deciding whether to pass --host must not have to read default_config.toml)."""
    serve = dict(_commands(cli.build_parser()))["banditroute serve"]
    for action in _options(serve):
        assert "(default: " in (action.help or ""), action.option_strings
    with pytest.raises(SystemExit):
        cli.main(["serve", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for shown in ("server.host, 127.0.0.1", "server.port, 50051", "var/banditroute.duckdb"):
        assert shown in text


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> list[Settings]:
    """The settings `banditroute serve` would start a server with (nothing is started)."""
    calls: list[Settings] = []

    def fake_serve(settings: Settings) -> int:
        calls.append(settings)
        return 0

    monkeypatch.setattr("banditroute.server.app.serve", fake_serve)
    monkeypatch.delenv("BANDITROUTE_CONFIG", raising=False)
    return calls


@pytest.mark.parametrize(
    ("given", "bound"),
    [("0.0.0.0", "0.0.0.0"), ("::", "[::]"), ("[::1]", "[::1]"), ("localhost", "localhost")],
)
def test_serve_host_sets_the_bind_address(served: list[Settings], given: str, bound: str) -> None:
    """`serve --host ADDRESS` binds there (IPv6 literals bracketed as gRPC wants), and keeps it
    across a config reload like --port; without it the config's server.host holds."""
    assert cli.main(["serve", "--host", given, "--port", "0"]) == 0
    assert served[-1].server.host == bound
    assert served[-1].overrides["host"] == bound
    assert cli.main(["serve"]) == 0
    assert served[-1].server.host == "127.0.0.1"


@pytest.mark.parametrize("given", ["", "two words", "a..b", "[example.com]", "x" * 300])
def test_serve_host_rejects_what_is_no_address(
    served: list[Settings], capsys: pytest.CaptureFixture[str], given: str
) -> None:
    """A --host that is neither an IP address nor a host name is a usage error naming --host,
    and no server is started."""
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["serve", "--host", given])
    assert exit_info.value.code == 2
    assert "--host:" in capsys.readouterr().err
    assert served == []


def test_metrics_stay_on_loopback_unless_metrics_host_says_otherwise(
    served: list[Settings], capsys: pytest.CaptureFixture[str]
) -> None:
    """`serve --host 0.0.0.0 --metrics-port P` keeps the unauthenticated metrics endpoint on
    loopback; `--metrics-host ADDRESS` moves it there; a --metrics-host that is no address is a
    usage error naming --metrics-host."""
    assert cli.main(["serve", "--host", "0.0.0.0", "--metrics-port", "9464"]) == 0
    assert served[-1].server.metrics_address == "127.0.0.1"
    assert cli.main(["serve", "--metrics-port", "9464", "--metrics-host", "::"]) == 0
    assert served[-1].server.metrics_address == "[::]"
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["serve", "--metrics-host", "two words"])
    assert exit_info.value.code == 2
    assert "--metrics-host:" in capsys.readouterr().err
    assert len(served) == 2


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


@pytest.mark.parametrize("argv", [["hash-key"], ["hash-key", "-"]])
def test_hash_key_reads_the_key_from_stdin(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    """`hash-key` without a key (or with `-`) reads one line from stdin, so the key never
    lands in the shell history; the newline is not part of the key."""
    monkeypatch.setattr("sys.stdin", io.StringIO("s3cret-key\n"))
    assert cli.main(argv) == 0
    assert capsys.readouterr().out.strip() == _digest("s3cret-key")


def test_hash_key_argument_still_works_and_empty_input_is_refused(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A key on argv is hashed as before; an empty stdin is an error naming `key`."""
    assert cli.main(["hash-key", "abc"]) == 0
    assert capsys.readouterr().out.strip() == _digest("abc")
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    assert cli.main(["hash-key"]) == 2
    assert "hash-key: error: key: must not be empty" in capsys.readouterr().err
