"""Subscription models: matching, template validation at save, diffs, overlaps, run ids."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from airflow_provider_lclstream.config.consumers import ConsumerTemplates
from airflow_provider_lclstream.config.subscriptions import (
    Subscription,
    SubscriptionBook,
    SubscriptionMatch,
    check_template,
    diff,
    manage_refusal,
    overlaps,
    run_id_for,
)

TEMPLATES = ConsumerTemplates.parse(
    '{"crystfel": {"command": ["indexamajig", "-i", "$LCLSTREAM_URL", "-g", "{geometry}"],'
    ' "params": {"geometry": {"type": "path", "required": true}}}}',
    "test",
)
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def event(exp: str, run: int = 7, **extra: Any) -> dict[str, Any]:
    return {"kind": "run_start", "experiment": exp, "run": run, "run_type": "DATA", **extra}


def sub(sid: str, match: dict[str, Any], owner: str = "alice", **template: Any) -> Subscription:
    return Subscription(
        id=sid,
        owner=owner,
        match=SubscriptionMatch.model_validate(match),
        template=template or {"detector_name": "jungfrau4M"},
        created=T0,
        created_by=owner,
        updated=T0,
        updated_by=owner,
    )


def test_experiment_match() -> None:
    match = SubscriptionMatch(experiment="mfxl1023")
    assert match.matches(event("mfxl1023"))
    assert not match.matches(event("mfxl1024"))


def test_instrument_pattern_and_run_parameters() -> None:
    match = SubscriptionMatch(
        instrument="mfx", pattern="mfxl10[0-9]+", run_types=["DATA"], params={"sample": "lyso"}
    )
    assert match.matches(event("mfxl1023", params={"sample": "lyso", "other": 1}))
    assert not match.matches(event("mfxl1023", params={"sample": "thaum"}))
    assert not match.matches(event("mfxl1023"))  # the parameter is missing
    assert not match.matches({**event("mfxl1023", params={"sample": "lyso"}), "run_type": "DARK"})
    assert not match.matches(event("mfxp0001", params={"sample": "lyso"}))  # not the pattern
    assert not match.matches(event("xppl1023", params={"sample": "lyso"}))  # not the instrument
    assert SubscriptionMatch(instrument="xpp").matches(event("xpptut15"))


@pytest.mark.parametrize(
    ("match", "message"),
    [
        ({}, "give experiment, or instrument"),
        ({"experiment": "mfxl1023", "instrument": "mfx"}, "give experiment, or instrument"),
        ({"experiment": "mfxl1023", "pattern": "mfx.*"}, "pattern needs instrument"),
        ({"experiment": "MFX 1"}, "is not an experiment name"),
        ({"instrument": "mfxl"}, "is not an instrument"),
        ({"instrument": "mfx", "pattern": "mfx(("}, "not a regular expression"),
        ({"experiment": "mfxl1023", "colour": "red"}, "Extra inputs are not permitted"),
    ],
)
def test_bad_matches_are_refused_with_the_reason(match: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        SubscriptionMatch.model_validate(match)


def test_template_is_validated_as_a_request_and_errors_name_the_field() -> None:
    match = SubscriptionMatch(experiment="mfxl1023")
    assert check_template({"detector_name": "jungfrau4M", "mode": "calib"}, match, TEMPLATES) == []
    problems = dict(check_template({"mode": "cooked", "ranks": 0}, match, TEMPLATES))
    assert set(problems) == {"template.mode", "template.ranks"}
    problems = dict(check_template({"exp": "xpptut15", "run": 3}, match, TEMPLATES))
    assert "comes from the run-start event" in problems["template.exp"]
    assert "template.run" in problems
    problems = dict(check_template({"consumer_command": "rm -rf /"}, match, TEMPLATES))
    assert "choose a consumer_template" in problems["template.consumer_command"]
    problems = dict(check_template({"detectorname": "x"}, match, TEMPLATES))
    assert "template.detectorname" in problems


def test_consumer_template_and_its_parameters_are_checked_at_save() -> None:
    match = SubscriptionMatch(experiment="mfxl1023")
    ok = {"consumer_template": "crystfel", "consumer_params": {"geometry": "/g/j4m.geom"}}
    assert check_template(ok, match, TEMPLATES) == []
    unknown = dict(check_template({"consumer_template": "nope"}, match, TEMPLATES))
    assert "no consumer template 'nope' (known: crystfel)" in unknown["template.consumer_template"]
    missing = dict(check_template({"consumer_template": "crystfel"}, match, TEMPLATES))
    assert "missing required parameters ['geometry']" in missing["template.consumer_template"]
    bad = {"consumer_template": "crystfel", "consumer_params": {"geometry": "; rm -rf /"}}
    assert (
        "not a plain path"
        in dict(check_template(bad, match, TEMPLATES))["template.consumer_template"]
    )


def test_template_is_checked_with_the_instrument_of_the_match() -> None:
    """psana1 instruments have no live mode: the example experiment carries the instrument."""
    problems = check_template(
        {"access_mode": "live"}, SubscriptionMatch(instrument="mfx"), TEMPLATES
    )
    assert problems and "live" in problems[0][1]
    assert (
        check_template({"access_mode": "live"}, SubscriptionMatch(instrument="tmo"), TEMPLATES)
        == []
    )


def test_book_matching_and_request() -> None:
    a = sub("sub1", {"experiment": "mfxl1023"}, detector_name="jungfrau4M")
    b = sub("sub2", {"instrument": "mfx"}, owner="bob", detector_name="epix10k2M")
    c = sub("sub3", {"experiment": "mfxl1023"}).model_copy(update={"enabled": False})
    book = SubscriptionBook(next_id=4, subscriptions=[a, b, c])
    assert [s.id for s in book.matching(event("mfxl1023"))] == ["sub1", "sub2"]
    assert [s.id for s in book.matching(event("mfxp0001"))] == ["sub2"]
    assert book.matching(event("xpptut15")) == []
    request = a.request_for(event("mfxl1023", 9), xtc_dir="/xtc")
    assert request == {
        "detector_name": "jungfrau4M",
        "exp": "mfxl1023",
        "run": 9,
        "xtc_dir": "/xtc",
    }
    assert SubscriptionBook.parse(book.model_dump_json()) == book
    assert SubscriptionBook.parse(None) == SubscriptionBook()
    with pytest.raises(ValueError, match="is not a subscription book"):
        SubscriptionBook.parse('{"subscriptions": 3}')


def test_diff_names_changed_leaves() -> None:
    old = {"enabled": True, "template": {"detector_name": "a", "mode": "raw"}}
    new = {"enabled": False, "template": {"detector_name": "b", "mode": "raw"}}
    assert diff(old, new) == {"enabled": [True, False], "template.detector_name": ["a", "b"]}
    assert diff(None, {"match": {"experiment": "x"}}) == {"match.experiment": [None, "x"]}
    assert diff({"match": {"experiment": "x"}}, None) == {"match.experiment": ["x", None]}


def test_overlaps_same_owner_detector_and_consumer() -> None:
    a = sub("sub1", {"experiment": "mfxl1023"})
    wide = sub("sub2", {"instrument": "mfx", "pattern": "mfxl.*"})
    other_detector = sub("sub3", {"experiment": "mfxl1023"}, detector_name="epix10k2M")
    other_owner = sub("sub4", {"experiment": "mfxl1023"}, owner="bob")
    other_exp = sub("sub5", {"experiment": "mfxl1024"})
    disjoint_types = sub("sub6", {"experiment": "mfxl1023", "run_types": ["DARK"]})
    book = SubscriptionBook(
        subscriptions=[wide, other_detector, other_owner, other_exp, disjoint_types]
    )
    a = a.model_copy(update={"match": SubscriptionMatch(experiment="mfxl1023", run_types=["DATA"])})
    warnings = overlaps(a, book)
    assert len(warnings) == 1 and warnings[0].startswith("overlaps sub2")
    assert overlaps(sub("sub9", {"instrument": "xpp"}), book) == []
    # two patterns of one instrument: counted as overlapping (regexes are not compared)
    assert len(overlaps(sub("sub9", {"instrument": "mfx", "pattern": "mfxp.*"}), book)) == 1


def test_who_may_manage() -> None:
    managers = {"alice": "mfxl10[0-9]+"}
    assert manage_refusal("root", True, SubscriptionMatch(instrument="mfx"), managers) is None
    assert (
        manage_refusal("alice", False, SubscriptionMatch(experiment="mfxl1023"), managers) is None
    )
    refusal = manage_refusal("alice", False, SubscriptionMatch(experiment="xpptut15"), managers)
    assert refusal and "may not manage experiment xpptut15" in refusal
    assert manage_refusal("bob", False, SubscriptionMatch(experiment="mfxl1023"), managers)
    refusal = manage_refusal("alice", False, SubscriptionMatch(instrument="mfx"), managers)
    assert refusal and "for admins" in refusal


def test_run_ids_are_stable_per_message_and_subscription() -> None:
    message = event("mfxl1023", 7, topic="runs", partition=0, offset=42, time="t")
    first = run_id_for(message, "sub1")
    assert first == run_id_for(dict(message), "sub1")  # a replay: the same id
    assert first.startswith("sub1__mfxl1023-r0007__")
    assert run_id_for(message, "sub2") != first
    assert run_id_for({**message, "offset": 43}, "sub1") != first  # a new message of the run
    assert run_id_for(message, None).startswith("elog__mfxl1023-r0007__")
