"""Declarative extraction (``extract``): selectors, regex, lists, nested objects, item
blocks, missing fields and the JSON Schema, as ``analyse`` runs them on one page."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from core.output import ExtractSpec
from engine_container.analysis import Job, OutputPlan, analyse

PAGE = b"""<html><head><title>Catalogue</title></head><body>
<h1 class="title">  Spring   catalogue </h1>
<p class="updated">Updated on 2030-04-01 by staff</p>
<div class="card" data-sku="A1"><h2>Widget</h2><span class="price">EUR 10.50</span>
  <ul class="tags"><li>new</li><li>blue</li></ul>
  <div class="offer"><b>shop one</b><i>9.99</i></div><div class="offer"><b>shop two</b><i>11</i></div>
</div>
<div class="card" data-sku="B2"><h2>Gadget</h2><span class="price">call us</span></div>
</body></html>"""


def run(
    extract: dict[str, Any], url: str = "https://shop.test/catalogue"
) -> tuple[list[dict[str, Any]], list[str], list[str]]:
    spec = ExtractSpec.model_validate(extract)
    job = Job(
        url=url,
        status=200,
        body=PAGE,
        content_type=None,
        media_type=None,
        plan=OutputPlan(extract=spec.model_dump_json()),
    )
    analysis = analyse(job)
    items = [json.loads(line) for line in analysis.items.splitlines()]
    assert analysis.item_count == len(items)
    return items, list(analysis.missing), list(analysis.errors)


def test_one_item_per_page_from_css_xpath_and_regex() -> None:
    items, missing, errors = run(
        {
            "fields": {
                "title": {"css": "h1.title"},  # elements: their text, whitespace collapsed
                "updated": {"xpath": "//p[@class='updated']/text()", "regex": r"(\d{4}-\d\d-\d\d)"},
                "skus": {"css": ".card::attr(data-sku)", "many": True},
                "first_name": {"css": ".card h2::text"},
            }
        }
    )
    assert items == [
        {
            "_url": "https://shop.test/catalogue",
            "title": "Spring catalogue",
            "updated": "2030-04-01",
            "skus": ["A1", "B2"],
            "first_name": "Widget",
        }
    ]
    assert missing == []
    assert errors == []


def test_item_blocks_with_nested_lists_and_missing_fields_reported() -> None:
    items, missing, _ = run(
        {
            "items": ".card",
            "fields": {
                "name": {"css": "h2::text"},
                "price": {"css": ".price::text", "regex": r"([\d.]+)"},
                "tags": {"css": ".tags li::text", "many": True},
                "offers": {
                    "css": ".offer",
                    "many": True,
                    "fields": {"shop": {"css": "b::text"}, "price": {"css": "i::text"}},
                },
                "note": {"css": ".note::text", "optional": True},
            },
        }
    )
    assert [i["name"] for i in items] == ["Widget", "Gadget"]
    assert items[0]["price"] == "10.50"
    assert items[0]["tags"] == ["new", "blue"]
    assert items[0]["offers"] == [
        {"shop": "shop one", "price": "9.99"},
        {"shop": "shop two", "price": "11"},
    ]
    assert items[1] == {
        "_url": "https://shop.test/catalogue",
        "name": "Gadget",
        "price": None,  # "call us" does not match the regex
        "tags": [],
        "offers": [],
        "note": None,
    }
    assert missing == ["price", "tags", "offers"]  # of the second card; note is optional


def test_a_page_where_nothing_matches_gives_no_item_and_says_so() -> None:
    items, missing, _ = run(
        {"fields": {"sku": {"css": ".sku::text"}, "ean": {"xpath": "//ean/text()"}}}
    )
    assert items == []
    assert missing == ["sku", "ean"]
    items, missing, _ = run({"items": ".product", "fields": {"name": {"css": "h2::text"}}})
    assert (items, missing) == ([], ["(items)"])


def test_items_failing_the_json_schema_are_reported_not_stored() -> None:
    schema = {
        "type": "object",
        "required": ["name", "price"],
        "properties": {"price": {"type": "string", "pattern": r"^\d+\.\d+$"}},
    }
    items, _, errors = run(
        {
            "items": ".card",
            "fields": {
                "name": {"css": "h2::text"},
                "price": {"css": ".price::text", "regex": r"([\d.]+)"},
            },
            "json_schema": schema,
        }
    )
    assert [i["name"] for i in items] == ["Widget"]
    assert errors == ["item 1: $.price: None is not of type 'string'"]


def test_urls_limits_extraction_to_matching_pages() -> None:
    rules = {"urls": r"/product/", "fields": {"title": {"css": "h1::text"}}}
    assert run(rules)[0] == []
    assert run(rules, url="https://shop.test/product/1")[0][0]["title"] == "Spring   catalogue"


@pytest.mark.parametrize(
    ("rules", "says"),
    [
        ({"fields": {"a": {"css": "p::text(", "many": True}}}, "CSS selector"),
        ({"fields": {"a": {"css": "p", "xpath": "//p"}}}, "exactly one of css or xpath"),
        ({"fields": {"a": {"css": "p", "regex": "(?=x)"}}}, "RE2"),
        (
            {
                "fields": {
                    "a": {
                        "css": "p",
                        "fields": {
                            "b": {
                                "css": "i",
                                "fields": {"c": {"css": "u", "fields": {"d": {"css": "s"}}}},
                            }
                        },
                    }
                }
            },
            "nest deeper",
        ),
        ({"items": "div[", "fields": {"a": {"css": "p"}}}, "CSS selector"),
        ({"fields": {"a": {"css": "p"}}, "json_schema": {"type": 12}}, "JSON Schema"),
    ],
)
def test_rules_that_cannot_run_are_refused_up_front(rules: dict[str, Any], says: str) -> None:
    with pytest.raises(ValidationError, match=says):
        ExtractSpec.model_validate(rules)
