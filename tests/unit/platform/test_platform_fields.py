"""Admin request fields refuse what storage cannot hold, as validation errors (pure)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import BaseModel, ValidationError

from aiforge.platform.api.fields import MAX_LIMIT, AwareTimestamp, UtcTimestamp
from aiforge.platform.api.schemas import ApiKeyCreate, LimitsUpdate, OrganizationCreate


class _Times(BaseModel):
    aware: AwareTimestamp | None = None
    utc: UtcTimestamp | None = None


@pytest.mark.parametrize("edge", ["9999-12-31T23:59:59-12:00", "0001-01-01T00:00:00+14:00"])
@pytest.mark.parametrize("field", ["aware", "utc"])
def test_times_leaving_the_calendar_in_utc_are_refused(field: str, edge: str) -> None:
    with pytest.raises(ValidationError, match="outside the supported range"):
        _Times.model_validate({field: edge})


def test_times_are_stored_in_utc_and_the_calendar_edges_themselves_are_fine() -> None:
    times = _Times.model_validate(
        {"aware": "2030-01-01T02:00:00+02:00", "utc": "9999-12-31T23:59:59"}
    )
    assert times.aware == datetime(2030, 1, 1, tzinfo=UTC)
    assert times.aware is not None
    assert times.aware.tzinfo is UTC
    assert times.utc == datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)
    assert _Times.model_validate({"aware": "0001-01-01T00:00:00Z"}).aware is not None
    with pytest.raises(ValidationError, match="timezone"):
        _Times.model_validate({"aware": "2030-01-01T00:00:00"})


@pytest.mark.parametrize("value", [2**63, 2**31, -1, MAX_LIMIT + 1])
def test_limits_beyond_the_range_are_refused(value: int) -> None:
    if value == 2**31:
        assert LimitsUpdate(tokens_per_month=value).tokens_per_month == value  # 64-bit column
        return
    with pytest.raises(ValidationError):
        LimitsUpdate(requests_per_minute=value)


def test_request_names_are_normalized_and_refuse_invisible_characters() -> None:
    assert OrganizationCreate(name=" ＡＣＭＥ ").name == "ACME"
    with pytest.raises(ValidationError, match="invisible"):
        OrganizationCreate(name="ac\u200bme")
    with pytest.raises(ValidationError, match="invisible"):
        ApiKeyCreate(name="k", allowed_models=["demo\x00"])
