"""The FOCUS column list ``inferledger export focus`` writes and validates against (pure data).

Source: the FinOps Open Cost and Usage Specification (FOCUS), Cost and Usage dataset, as read
in the FOCUS_Spec repository (github.com/FinOps-Open-Cost-and-Usage-Spec/FOCUS_Spec):

- ``specification/datasets/cost_and_usage/columns/columns.mdpp`` (the column index of the 1.3
  line, commit 02645d23d2d4dceb005c685080037febee890dea), which lists every column below except
  ``ProviderName`` and ``PublisherName``;
- ``ProviderName`` and ``PublisherName`` (FOCUS 1.0 to 1.2, deprecated in 1.3 in favour of
  ``ServiceProviderName`` and ``HostProviderName``; ``columns/providername.md`` and
  ``columns/publishername.md``), kept because FOCUS 1.0 readers, and the FinOps sample this
  project ingests (``tests/data/focus-1.0-sample-1000.csv``), use them;
- the split cost allocation columns ``AllocatedMethodId``, ``AllocatedMethodDetails``,
  ``AllocatedResourceId``, ``AllocatedResourceName`` and ``AllocatedTags``, introduced in 1.3
  (``columns/allocatedmethodid.md``, ``allocatedmethoddetails.md``, ``allocatedresourceid.md``,
  ``allocatedresourcename.md``, ``allocatedtags.md``), and the attribute
  ``specification/attributes/data_generator_calculated_split_cost_allocation_handling.md``
  (commit 0942b25c67922d7a762c37cdc2a54cb73c9efa42): summable metrics of the allocated charges
  sum to the origin charge's, dimensions and non-summable metrics match it.

FOCUS names custom columns with the prefix ``x_``; every other header of the export must be
in :data:`FOCUS_COLUMNS`.
"""

from __future__ import annotations

FOCUS_VERSION = "1.3"
"""The FOCUS version whose column list this is (with two 1.0-1.2 columns, see above)."""

FOCUS_COLUMNS: frozenset[str] = frozenset(
    {
        "AllocatedMethodDetails",
        "AllocatedMethodId",
        "AllocatedResourceId",
        "AllocatedResourceName",
        "AllocatedTags",
        "AvailabilityZone",
        "BilledCost",
        "BillingAccountId",
        "BillingAccountName",
        "BillingAccountType",
        "BillingCurrency",
        "BillingPeriodEnd",
        "BillingPeriodStart",
        "CapacityReservationId",
        "CapacityReservationStatus",
        "ChargeCategory",
        "ChargeClass",
        "ChargeDescription",
        "ChargeFrequency",
        "ChargePeriodEnd",
        "ChargePeriodStart",
        "CommitmentDiscountCategory",
        "CommitmentDiscountId",
        "CommitmentDiscountName",
        "CommitmentDiscountQuantity",
        "CommitmentDiscountStatus",
        "CommitmentDiscountType",
        "CommitmentDiscountUnit",
        "ConsumedQuantity",
        "ConsumedUnit",
        "ContractApplied",
        "ContractedCost",
        "ContractedUnitPrice",
        "EffectiveCost",
        "HostProviderName",
        "InvoiceId",
        "InvoiceIssuerName",
        "ListCost",
        "ListUnitPrice",
        "PricingCategory",
        "PricingCurrency",
        "PricingCurrencyContractedUnitPrice",
        "PricingCurrencyEffectiveCost",
        "PricingCurrencyListUnitPrice",
        "PricingQuantity",
        "PricingUnit",
        "ProviderName",
        "PublisherName",
        "RegionId",
        "RegionName",
        "ResourceId",
        "ResourceName",
        "ResourceType",
        "ServiceCategory",
        "ServiceName",
        "ServiceProviderName",
        "ServiceSubcategory",
        "SkuId",
        "SkuMeter",
        "SkuPriceDetails",
        "SkuPriceId",
        "SubAccountId",
        "SubAccountName",
        "SubAccountType",
        "TagDetails",
        "Tags",
    }
)

REQUIRED_NOT_NULL: tuple[str, ...] = (
    "BilledCost",
    "EffectiveCost",
    "BillingCurrency",
    "BillingPeriodStart",
    "BillingPeriodEnd",
    "ChargePeriodStart",
    "ChargePeriodEnd",
    "ChargeCategory",
    "ChargeDescription",
    "ProviderName",
    "PublisherName",
    "InvoiceIssuerName",
    "ServiceProviderName",
    "ServiceName",
    "ServiceCategory",
    "ResourceId",
    "AllocatedMethodId",
    "AllocatedMethodDetails",
    "AllocatedTags",
)
"""Columns the export always fills: FOCUS's mandatory non-null columns that the ledger knows,
and, since every row is an allocated charge, ``AllocatedMethodId`` (MUST NOT be null then) and
``AllocatedMethodDetails`` (SHOULD NOT). ``BillingAccountId``, ``ListCost`` and
``ContractedCost`` are in the header but empty: ``billing_lines`` does not store them."""

CUSTOM_PREFIX = "x_"


def is_valid_column(name: str) -> bool:
    """A FOCUS column of :data:`FOCUS_COLUMNS`, or a custom column (``x_`` prefix)."""
    return name in FOCUS_COLUMNS or (name.startswith(CUSTOM_PREFIX) and len(name) > 2)
