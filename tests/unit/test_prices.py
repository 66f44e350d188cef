"""The price book's inputs: the Price contract, its decoder, the JSONL/CSV/LiteLLM readers of
`inferledger ingest prices`, the stored row's id, and the ledger writer's handling of the
`prices` topic (issue 18 part 1)."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from pydantic import ValidationError

from services.contracts import DecodeError, EndOfInput, Price, Tombstone, decode_price, dumps
from services.ingest.files import _price_records, litellm_prices
from services.ledger.db import price_row
from services.ledger.writer import LedgerDecoder
from services.runtime.config import PRICES, Settings

PRICE: dict[str, Any] = {
    "model": "llama-70b",
    "currency": "USD",
    "prompt_per_million": "0.60",
    "cached_prompt_per_million": "0.06",
    "completion_per_million": "2.40",
    "effective_from": "2024-01-01T01:00:00+01:00",
}
T0 = datetime(2024, 1, 1, tzinfo=UTC)


def test_a_price_is_decimal_strings_and_utc():
    p = Price.model_validate(PRICE)
    assert p.tenant_id is None and p.per_request is None and p.source == "list"
    assert p.prompt_per_million == Decimal("0.60") and p.effective_from == T0
    wire = json.loads(dumps(p))
    assert wire["type"] == "inferledger.price.v1" and wire["completion_per_million"] == "2.40"
    assert decode_price(dumps(p)) == p


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"prompt_per_million": 0.6}, "not a JSON number"),
        ({"completion_per_million": "-1"}, "completion_per_million is negative"),
        ({"per_request": "-0.01"}, "per_request is negative"),
        ({"prompt_per_million": "abc"}, "not a decimal string"),
        ({"prompt_per_million": "1e30"}, "less than"),
        ({"currency": "usd"}, "pattern"),
        ({"effective_from": "2024-01-01T00:00:00"}, "naive"),
        ({"effective_to": "2024-01-01T00:00:00Z"}, "effective_to is not after effective_from"),
        ({"tenant_id": ""}, "at least 1"),
        ({"model": "a\x00b"}, "pattern"),
        ({"unknown": 1}, "Extra inputs"),
    ],
)
def test_bad_prices_are_refused_with_a_clear_message(change, message):
    with pytest.raises(ValidationError, match=message):
        Price.model_validate({**PRICE, **change})
    with pytest.raises(DecodeError) as err:
        decode_price(json.dumps({**PRICE, **change}))
    assert err.value.reason == "invalid_price"


def test_decode_price_reasons():
    for raw, reason in (
        (b"{", "invalid_json"),
        (b"[1]", "invalid_message"),
        (json.dumps({**PRICE, "type": "inferledger.gpu_rate.v1"}), "unknown_type"),
        (b"\xff", "invalid_utf8"),
    ):
        with pytest.raises(DecodeError) as err:
            decode_price(raw)
        assert err.value.reason == reason, raw
    with pytest.raises(Tombstone):
        decode_price(None)
    marker = {"type": "inferledger.control.end_of_input.v1", "run_id": "r"}
    assert isinstance(decode_price(json.dumps(marker)), EndOfInput)


def _records(text: str, fmt: str, at: datetime | None = None) -> list[tuple[str, Any]]:
    return [(where, obj) for where, _, obj in _price_records(io.BytesIO(text.encode()), fmt, at)]


def test_jsonl_and_csv_rows():
    jsonl = json.dumps(PRICE) + "\n\n{not json\n" + json.dumps({**PRICE, "currency": 1}) + "\n"
    rows = _records(jsonl, "auto")
    assert [w for w, _ in rows] == ["line 1", "line 3", "line 4"]
    assert Price.model_validate(rows[0][1]).model == "llama-70b"
    assert isinstance(rows[1][1], DecodeError) and rows[1][1].reason == "invalid_json"
    with pytest.raises(ValidationError):
        Price.model_validate(rows[2][1])

    csv = (
        "tenant_id,model,currency,prompt_per_million,cached_prompt_per_million,"
        "completion_per_million,per_request,effective_from\n"
        ",m,EUR,1,0.1,4,,2024-01-01T00:00:00Z\n"
        "acme,m,EUR,2,0.2,8,0.001,\n"
    )
    rows = _records(csv, "auto", T0)
    first, second = (Price.model_validate(obj) for _, obj in rows)
    assert [w for w, _ in rows] == ["line 2", "line 3"]
    assert first.tenant_id is None and first.per_request is None and first.currency == "EUR"
    assert second.tenant_id == "acme" and second.per_request == Decimal("0.001")
    assert second.effective_from == T0  # --effective-from fills what a row leaves empty


def test_litellm_map_per_million_exactly():
    doc = (
        '{"sample_spec": {"input_cost_per_token": 0},'
        ' "a/cached": {"input_cost_per_token": 1e-06, "output_cost_per_token": 3e-06,'
        '   "cache_read_input_token_cost": 1e-07, "litellm_provider": "x"},'
        ' "b/uncached": {"input_cost_per_token": 5.9e-07, "output_cost_per_token": 7.9e-07},'
        ' "c/free": {"input_cost_per_token": 0, "output_cost_per_token": 0},'
        ' "d/image-only": {"output_cost_per_token": 1e-05},'
        ' "e/text": {"input_cost_per_token": "cheap", "output_cost_per_token": 1e-06},'
        ' "f/odd": [1]}'
    )
    out = {where: obj for where, _, obj in litellm_prices(doc.encode(), T0)}
    assert "model 'sample_spec'" not in out
    a = Price.model_validate(out["model 'a/cached'"])
    assert (a.prompt_per_million, a.cached_prompt_per_million, a.completion_per_million) == (
        Decimal("1"), Decimal("0.1"), Decimal("3"),
    )  # fmt: skip
    assert (a.model, a.currency, a.source, a.tenant_id, a.effective_from) == (
        "a/cached", "USD", "litellm", None, T0,
    )  # fmt: skip
    b = Price.model_validate(out["model 'b/uncached'"])
    assert b.prompt_per_million == b.cached_prompt_per_million == Decimal("0.59")
    assert b.completion_per_million == Decimal("0.79")
    assert Price.model_validate(out["model 'c/free'"]).prompt_per_million == 0
    for name, reason, text in (
        ("d/image-only", "invalid_price", "input_cost_per_token is missing"),
        ("e/text", "invalid_price", "not a number"),
        ("f/odd", "invalid_price", "not an object"),
    ):
        err = out[f"model {name!r}"]
        assert isinstance(err, DecodeError) and err.reason == reason and text in err.detail
    (bad,) = litellm_prices(b"[]", T0)
    assert isinstance(bad[2], DecodeError) and bad[2].reason == "invalid_message"
    (bad,) = litellm_prices(b"{", T0)
    assert isinstance(bad[2], DecodeError) and bad[2].reason == "invalid_json"


def test_the_litellm_price_map_reads_exactly():
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "data/litellm-model-prices-chat.json"
    out = {where: obj for where, _, obj in litellm_prices(path.read_bytes(), T0)}
    good = [Price.model_validate(o) for o in out.values() if isinstance(o, dict)]
    assert len(good) > 3000
    p = next(g for g in good if g.model == "deepinfra/meta-llama/Meta-Llama-3.1-70B-Instruct")
    assert p.prompt_per_million == p.completion_per_million == Decimal("0.4")


def test_price_id_is_a_hash_of_the_content():
    p = Price.model_validate(PRICE)
    same = Price.model_validate({**PRICE, "prompt_per_million": "0.6000"})
    assert price_row(p)["price_id"] == price_row(same)["price_id"]
    ids = {
        price_row(Price.model_validate({**PRICE, **change}))["price_id"]
        for change in (
            {},
            {"tenant_id": "None"},
            {"tenant_id": "acme"},
            {"per_request": "0"},
            {"effective_to": "2024-02-01T00:00:00Z"},
            {"source": "contract"},
        )
    }
    assert len(ids) == 6
    row = price_row(p)
    assert row["tenant_id"] is None and "type" not in row and len(row["price_id"]) == 32


def test_the_ledger_writer_keeps_prices_and_dead_letters_bad_ones():
    settings = Settings()
    decoder = LedgerDecoder(settings)
    topic = settings.topic(PRICES)
    good = dumps(Price.model_validate(PRICE))
    batch = decoder.decode(
        [(topic, 0, 5, good), (topic, 0, 6, b'{"model": 1}'), (topic, 1, 2, None)]
    )
    assert batch.prices == [Price.model_validate(PRICE)]
    assert batch.offsets == {(topic, 0): 7, (topic, 1): 3}
    ((dlq, letter),) = batch.dead_letters
    assert dlq == f"{topic}.dlq" and b"invalid_price" in letter
