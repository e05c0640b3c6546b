"""The typed settings reader (utils/env.py): which forms each kind accepts, what each means, and the one
line a value that cannot be used becomes."""

from __future__ import annotations

import pytest

import scheduler
from config.settings import SettingError as SettingErrorFromSettings
from config.settings import Settings
from utils.env import EnvReader, SettingError
from utils.errors import ConfigError


def reader(**env: str) -> EnvReader:
    return EnvReader(env)


def refusal(read: object) -> str:
    assert callable(read)
    with pytest.raises(SettingError) as raised:
        read()
    assert isinstance(raised.value, ConfigError) and isinstance(raised.value, ValueError)
    return str(raised.value)


def test_the_settings_module_and_the_reader_raise_the_same_error_class() -> None:
    assert SettingErrorFromSettings is SettingError


@pytest.mark.parametrize(("raw", "expected"), [("42", 42), (" 42 ", 42), ("+42", 42), ("-3", -3), ("1_000", 1000),
                                               ("0", 0)])
def test_a_whole_number_reads_what_int_reads(raw: str, expected: int) -> None:
    assert reader(N=raw).whole("N", 7, what="a whole number of items") == expected


@pytest.mark.parametrize("raw", ["1.5", "1e3", "abc", "12abc", "0x10"])
def test_a_whole_number_refuses_fractions_and_words(raw: str) -> None:
    assert refusal(lambda: reader(N=raw).whole("N", 7, what="a whole number of items")) == (
        f"N must be a whole number of items, not {raw!r}")


@pytest.mark.parametrize(("raw", "expected"), [("0.5", 0.5), (".5", 0.5), ("120", 120.0), ("1e3", 1000.0),
                                               (" 90 ", 90.0)])
def test_a_number_reads_what_float_reads(raw: str, expected: float) -> None:
    assert reader(X=raw).number("X", 1.0, what="a number of MB") == expected


@pytest.mark.parametrize("raw", ["nan", "inf", "-inf", "NaN", "five"])
def test_a_number_refuses_nan_inf_and_words(raw: str) -> None:
    message = refusal(lambda: reader(X=raw).number("X", 1.0, what="a number of MB"))
    assert message == f"X must be a number of MB, not {raw!r}"


@pytest.mark.parametrize(("value", "message"), [
    ("-1", "X must be at least 0, not '-1'"),
    ("0", "X must be more than 0, not '0'"),
    ("11", "X must be at most 10, not '11'"),
])
def test_bounds_name_the_bound_and_the_value(value: str, message: str) -> None:
    read = reader(X=value)
    bounds = {"-1": {"minimum": 0}, "0": {"above": 0}, "11": {"maximum": 10}}[value]
    assert refusal(lambda: read.number("X", 1.0, what="a number", **bounds)) == message


@pytest.mark.parametrize("env", [{}, {"X": ""}, {"X": "   "}])
def test_unset_empty_or_blank_takes_the_default_unchecked(env: dict[str, str]) -> None:
    assert EnvReader(env).whole("X", -5, what="a whole number", minimum=0) == -5
    assert EnvReader(env).duration("X", 2.5, unit="seconds", above=3) == 2.5
    assert EnvReader(env).flag("X", True) is True


def test_a_duration_is_a_plain_number_in_its_unit_and_says_the_unit() -> None:
    assert reader(LOCK_TTL_SECONDS="120").duration("LOCK_TTL_SECONDS", 5, unit="seconds") == 120.0
    assert reader(EMAIL_SYNC_MINUTES="5").duration("EMAIL_SYNC_MINUTES", 1, unit="minutes", whole=True) == 5
    assert refusal(lambda: reader(EMAIL_SYNC_MINUTES="5m").duration("EMAIL_SYNC_MINUTES", 1, unit="minutes",
                                                                     whole=True)) == (
        "EMAIL_SYNC_MINUTES must be a whole number of minutes, not '5m'")
    assert refusal(lambda: reader(RETENTION_SPOOL_DAYS="1d").duration("RETENTION_SPOOL_DAYS", 1, unit="days")) == (
        "RETENTION_SPOOL_DAYS must be a number of days, not '1d'")
    with pytest.raises(ValueError, match="unit"):
        reader().duration("X", 1, unit="fortnights")


@pytest.mark.parametrize(("raw", "expected"), [("1", True), ("true", True), ("YES", True), (" On ", True),
                                               ("0", False), ("false", False), ("No", False), ("OFF", False)])
def test_a_flag_accepts_the_documented_words_in_any_case(raw: str, expected: bool) -> None:
    assert reader(F=raw).flag("F", not expected) is expected


@pytest.mark.parametrize("raw", ["maybe", "2", "y", "enabled"])
def test_a_flag_refuses_any_other_word_instead_of_reading_it_as_false(raw: str) -> None:
    assert refusal(lambda: reader(HUB_OUTBOX_FSYNC=raw).flag("HUB_OUTBOX_FSYNC", True)) == (
        f"HUB_OUTBOX_FSYNC must be one of 1/true/yes/on or 0/false/no/off, not {raw!r}")


def test_a_list_is_comma_separated_stripped_and_without_empty_items() -> None:
    assert reader(L=" a, b,,c , ").items("L") == ["a", "b", "c"]
    assert reader().items("L", "INBOX") == ["INBOX"]
    assert reader(L="").items("L") == []


def test_a_choice_is_one_of_its_words_in_any_case() -> None:
    assert reader(LOG_FORMAT="JSON").choice("LOG_FORMAT", "console", ("console", "json")) == "json"
    assert refusal(lambda: reader(LOG_FORMAT="xml").choice("LOG_FORMAT", "console", ("console", "json"))) == (
        "LOG_FORMAT must be one of console, json, not 'xml'")


def test_a_time_of_day_is_hh_mm_on_a_24_hour_clock() -> None:
    assert reader(CLEANUP_AT="20:30").time_of_day("CLEANUP_AT", "02:00") == (20, 30)
    assert reader().time_of_day("CLEANUP_AT", "02:00") == (2, 0)
    for raw in ("24:00", "2pm", "12:60", "1230"):
        assert refusal(lambda raw=raw: reader(CLEANUP_AT=raw).time_of_day("CLEANUP_AT", "02:00")) == (
            f"CLEANUP_AT must be a time of day as HH:MM, not {raw!r}")


@pytest.mark.parametrize("name", ["HUB_API_TOKEN", "MAXIMO_PASSWORD", "WHATSAPP_APP_SECRET", "MAXIMO_API_KEY"])
def test_the_value_of_a_secrets_variable_is_never_quoted(name: str) -> None:
    secret = "s3cr3t-value-0123456789"
    message = refusal(lambda: reader(**{name: secret}).whole(name, 1, what="a whole number"))
    assert secret not in message and message == f"{name} must be a whole number, not '***'"


def test_a_very_long_value_is_cut_in_the_message() -> None:
    message = refusal(lambda: reader(X="x" * 5000).whole("X", 1, what="a whole number"))
    assert len(message) < 200 and message.endswith("...'")


def test_log_level_and_format_are_checked_with_the_settings() -> None:
    assert Settings.from_env({"LOG_LEVEL": "debug", "LOG_FORMAT": "json"}).log_level == "DEBUG"
    with pytest.raises(SettingError, match=r"^LOG_LEVEL must be one of debug, .*, not 'loud'$"):
        Settings.from_env({"LOG_LEVEL": "loud"})
    with pytest.raises(SettingError, match=r"^LOG_FORMAT must be one of console, json, not 'pretty'$"):
        Settings.from_env({"LOG_FORMAT": "pretty"})


def test_component_settings_are_read_through_the_same_reader() -> None:
    settings = Settings.from_env({"SCOPE_CACHE_SECONDS": "1.5", "KMRL_ENV_FILE": ""})
    assert refusal(lambda: scheduler.scope_cache_seconds(settings)) == (
        "SCOPE_CACHE_SECONDS must be a whole number of seconds, not '1.5'")
