"""Value objects: immutable where it is checked (mypy), cheap to build at run time."""

from __future__ import annotations

import dataclasses
import textwrap
from decimal import Decimal

import pytest
from mypy import api

from app.values import value


@value
class Price:
    symbol: str
    amount: Decimal
    note: str | None = None


def test_equal_values_are_equal_and_hash_alike() -> None:
    first, second = Price("BTC/USDT", Decimal("65000.00")), Price("BTC/USDT", Decimal("65000.00"))
    assert first == second
    assert hash(first) == hash(second)
    assert len({first, second, Price("ETH/USDT", Decimal(1))}) == 2


def test_replace_makes_a_changed_copy() -> None:
    price = Price("BTC/USDT", Decimal(1))
    changed = dataclasses.replace(price, note="stale")
    assert changed == Price("BTC/USDT", Decimal(1), "stale")
    assert price.note is None


def test_a_value_has_only_its_fields() -> None:
    price = Price("BTC/USDT", Decimal(1))
    assert not hasattr(price, "__dict__")
    with pytest.raises(AttributeError):
        price.other = 1  # type: ignore[attr-defined]


def test_the_type_checker_refuses_an_assignment_to_a_field() -> None:
    program = textwrap.dedent(
        """
        from decimal import Decimal
        from app.values import value

        @value
        class Price:
            amount: Decimal

        price = Price(Decimal(1))
        price.amount = Decimal(2)
        """
    )
    out, _err, status = api.run(["--strict", "--no-incremental", "-c", program])
    assert status == 1
    assert 'Property "amount" defined in "Price" is read-only' in out
