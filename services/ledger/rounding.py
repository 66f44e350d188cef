"""Amounts rounded for reading (pure: no I/O), shared by ``inferledger report``'s table and
its HTML report: money to the currency's minor unit, costs per unit to 6 significant digits."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

MINOR_UNITS = {
    "BIF": 0, "CLP": 0, "DJF": 0, "GNF": 0, "ISK": 0, "JPY": 0, "KMF": 0, "KRW": 0, "PYG": 0,
    "RWF": 0, "UGX": 0, "UYI": 0, "VND": 0, "VUV": 0, "XAF": 0, "XOF": 0, "XPF": 0,
    "BHD": 3, "IQD": 3, "JOD": 3, "KWD": 3, "LYD": 3, "OMR": 3, "TND": 3,
    "CLF": 4, "UYW": 4,
}  # fmt: skip
"""ISO 4217 minor units of the currencies that do not have 2 (every other code has 2)."""
UNIT_COST_DIGITS = 6
"""Significant digits of a cost per completion or per 1k tokens in the table."""


def minor_units(currency: str) -> int:
    """Decimal places of the currency's minor unit (ISO 4217): JPY 0, USD 2, KWD 3."""
    return MINOR_UNITS.get(currency.upper(), 2)


def _quantized(value: Decimal, places: int) -> str:
    shown = value.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)
    return format(shown.copy_abs() if shown.is_zero() else shown, "f")  # never "-0.00"


def round_money(value: Decimal, currency: str) -> str:
    """An amount as the table shows it: rounded half away from zero (as Postgres' round) to
    the currency's minor unit."""
    return _quantized(value, minor_units(currency))


def round_unit_cost(value: Decimal, currency: str, digits: int = UNIT_COST_DIGITS) -> str:
    """A cost per unit (completion, 1k tokens) as the table shows it: rounded half away from
    zero to ``digits`` significant digits, with at least the currency's minor unit and at most
    the ledger's 12 decimals: 0.0833977, 0.277992, 0.138610, 12.3457, 123456.79 in USD. A
    value shown exactly drops its trailing zeros down to the minor unit (0.10, not 0.100000;
    411.5 JPY): trailing zeros are left only where a value was rounded."""
    minor = minor_units(currency)
    places = minor if value.is_zero() else max(minor, digits - 1 - value.adjusted())
    shown = _quantized(value, min(places, 12))
    if "." in shown and Decimal(shown) == value:
        whole, fraction = shown.split(".")
        fraction = fraction.rstrip("0").ljust(minor, "0")
        shown = f"{whole}.{fraction}" if fraction else whole
    return shown
