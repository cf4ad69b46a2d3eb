"""Schemathesis hooks for wxcm's document (loaded through SCHEMATHESIS_HOOKS by
tests/tests/api_contract.rs).

Formats the document names whose rule JSON Schema cannot state get a
generator here, so the fuzzer's valid values are valid for the server too.
"""

import schemathesis
from hypothesis import strategies as st


def _luhn_check_digit(body: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch)
        if i % 2 == 0:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return str((10 - total % 10) % 10)


# `card-number`: 10 digits, the last a Luhn check digit over the first nine.
schemathesis.openapi.format(
    "card-number",
    st.from_regex(r"\A[0-9]{9}\Z").map(lambda body: body + _luhn_check_digit(body)),
)


# Rules between fields, which JSON Schema cannot state: each is written in the
# operation's description in the document, and here the fuzzer's valid
# requests are made to follow it. Only positive cases are touched: a negative
# one must stay as invalid as the fuzzer made it.
import datetime as _dt


def _positive(case) -> bool:
    meta = getattr(case, "meta", None)
    return meta is None or meta.generation.mode.is_positive


def _date(text):
    try:
        return _dt.date.fromisoformat(text)
    except (TypeError, ValueError):
        return None


def _instant(text):
    try:
        return _dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except (AttributeError, TypeError, ValueError):
        return None


def _ordered_instants(values: dict, low: str, high: str, strict: bool) -> None:
    """`values[low]` before `values[high]` (or equal when not `strict`)."""
    a, b = _instant(values.get(low)), _instant(values.get(high))
    if values.get(low) is None or values.get(high) is None:
        return
    if a is None or b is None:
        # A spelling Python cannot read (a leap second, year 0): one instant, spelled twice.
        values[high] = values[low]
        if not strict:
            return
        b = a = _instant(values[low])
        if a is None:
            values[low], values[high] = "2000-01-01T00:00:00Z", "2000-01-02T00:00:00Z"
            return
    if a > b:
        values[low], values[high] = values[high], values[low]
        a, b = b, a
    if strict and a == b:
        try:
            values[high] = (a + _dt.timedelta(seconds=1)).isoformat()
        except OverflowError:
            values[low] = (a - _dt.timedelta(seconds=1)).isoformat()


def _number(value):
    # Numbers may come as text (query values) or as whole floats (`595.0`).
    if isinstance(value, bool):
        return None
    try:
        number = int(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return number if number == value or isinstance(value, str) else None


def _ordered_numbers(values: dict, low: str, high: str) -> None:
    a, b = _number(values.get(low)), _number(values.get(high))
    if a is not None and b is not None and a > b:
        values[low], values[high] = values[high], values[low]


def _report_range(query: dict) -> None:
    """`GET reports/daily-ops`: `from` <= `to`, at most 366 days together."""
    a, b = _date(query.get("from")), _date(query.get("to"))
    if a is None or b is None:
        if isinstance(query.get("from"), str):
            query["to"] = query["from"]
        return
    if a > b:
        a, b = b, a
    if (b - a).days > 365:
        b = a + _dt.timedelta(days=365)
    query["from"], query["to"] = a.isoformat(), b.isoformat()


_SORT_TAGS = {"registered_at": "r", "points": "p", "balance": "b"}


def _member_list(query: dict) -> None:
    """`GET members`: the cursor is of the asked sort; ranges are min <= max."""
    after = query.get("after")
    if isinstance(after, str) and after:
        tag = _SORT_TAGS.get(query.get("sort") or "registered_at")
        if tag is not None:
            query["after"] = tag + after[1:]
    _ordered_numbers(query, "points_min", "points_max")
    _ordered_numbers(query, "balance_min", "balance_max")


def _coupon_terms(terms) -> None:
    """Coupon terms: a window ends after it starts; a minimum spend is at least the value."""
    if not isinstance(terms, dict):
        return
    validity = terms.get("validity")
    if isinstance(validity, dict) and validity.get("kind") == "window":
        _ordered_instants(validity, "from", "until", strict=True)
    benefit = terms.get("benefit")
    if isinstance(benefit, dict) and benefit.get("kind") == "cash":
        value, minimum = _number(benefit.get("value_fen")), _number(benefit.get("min_spend_fen"))
        if value is not None and minimum is not None and minimum < value:
            benefit["min_spend_fen"] = value


def _qr_code(body) -> None:
    """`POST wechat/qrcodes`: a permanent code has no `expire_seconds`, a temporary one needs it."""
    if not isinstance(body, dict):
        return
    if body.get("permanent") is True:
        body.pop("expire_seconds", None)
    elif body.get("expire_seconds") is None:
        body["expire_seconds"] = 604800


def _distribution_settings(body) -> None:
    """`PUT distribution/settings`: the level 1 and level 2 default rates sum to at most 10000."""
    rates = body.get("default_rates")
    if not isinstance(rates, dict):
        return
    first, second = _number(rates.get("first_bps")), _number(rates.get("second_bps"))
    if first is not None and second is not None and first + second > 10000 and 0 <= first <= 10000:
        rates["second_bps"] = 10000 - first


def _rates_within_full(rates, first: str, second: str) -> None:
    """Level 1 + level 2 rates sum to at most 10000 basis points."""
    if not isinstance(rates, dict):
        return
    a, b = _number(rates.get(first)), _number(rates.get(second))
    if a is not None and b is not None and a + b > 10000 and 0 <= a <= 10000:
        rates[second] = 10000 - a


def _product_commission(body) -> None:
    """`PUT mall/products/{id}/commission`: a product's own rates sum to at most 10000."""
    commission = body.get("commission")
    if isinstance(commission, dict) and commission.get("kind") == "rates":
        _rates_within_full(commission, "first_bps", "second_bps")


def _commission_settings(body) -> None:
    """`PUT distribution/commission-settings`: level codes are unique, each level's rates sum to at most 10000."""
    levels = body.get("distributor_levels")
    if not isinstance(levels, list):
        return
    seen = set()
    for i, level in enumerate(levels):
        if not isinstance(level, dict):
            continue
        _rates_within_full(level, "first_bps", "second_bps")
        code = level.get("code")
        if isinstance(code, str) and code in seen:
            level["code"] = f"l{i}"
        seen.add(level.get("code"))


def _bytes_at_most(text, limit: int, filler: str):
    """`text` cut to `limit` bytes of UTF-8 on a character boundary; `filler` if nothing visible is left."""
    if not isinstance(text, str):
        return text
    cut = text.encode("utf-8")[:limit].decode("utf-8", "ignore")
    return cut if cut.strip() else filler


# What each leaf type of a menu button needs (`resources::wechat::menus::MenuButton::validate`).
_MENU_NEEDS = {
    "view": {"url": "https://example.com/"},
    "miniprogram": {"url": "https://example.com/", "appid": "wx0123456789abcdef", "pagepath": "pages/index"},
    "media_id": {"media_id": "media"},
    "article_id": {"article_id": "article"},
    "article_view_limited": {"article_id": "article"},
}
_MENU_BYTES = {"key": 128, "url": 1024, "appid": 256, "pagepath": 256, "media_id": 256, "article_id": 256}


def _menu_button(button, top_level: bool) -> None:
    if not isinstance(button, dict):
        return
    button["name"] = _bytes_at_most(button.get("name"), 16 if top_level else 60, "m")
    for field, limit in _MENU_BYTES.items():
        if isinstance(button.get(field), str):
            button[field] = _bytes_at_most(button[field], limit, "x")
            if field == "url" and not button[field].startswith(("http://", "https://")):
                button[field] = "https://example.com/"
    subs = button.get("sub_button")
    if top_level and isinstance(subs, list) and subs:
        button.pop("type", None)
        for sub in subs:
            if isinstance(sub, dict):
                sub.pop("sub_button", None)
            _menu_button(sub, top_level=False)
        return
    button.pop("sub_button", None)
    kind = button.get("type") or "click"
    button["type"] = kind
    for field, value in _MENU_NEEDS.get(kind, {"key": "key"}).items():
        if button.get(field) is None:
            button[field] = value


def _menu(body) -> None:
    """`PUT wechat/menus/{appid}`: each leaf has what its type needs, a parent no type, byte limits."""
    for button in body.get("button") or []:
        _menu_button(button, top_level=True)


import os as _os
import zlib as _zlib

# The world's products (`id:kind`, kind `points`, `fen` or `points_and_fen`),
# set for the member run by api_contract.rs.
_PRODUCTS = [
    tuple(item.split(":", 1))
    for item in _os.environ.get("WXCM_CONTRACT_PRODUCTS", "").split(",")
    if ":" in item
]


def _campaign(body: dict) -> None:
    """Shake lottery terms: it ends after it starts, within 366 days; a prize slot has a
    stock, a thanks slot none; at least one slot is a prize."""
    _ordered_instants(body, "starts_at", "ends_at", strict=True)
    a, b = _instant(body.get("starts_at")), _instant(body.get("ends_at"))
    if a is not None and b is not None and b - a > _dt.timedelta(days=365):
        # A day under the limit: a stateful link may later replace `starts_at` with an
        # earlier instant from a response (minutes earlier), which must stay within 366 days.
        body["ends_at"] = (a + _dt.timedelta(days=365)).isoformat()
    slots = body.get("slots")
    if not isinstance(slots, list):
        return
    prizes = 0
    for slot in slots:
        if not isinstance(slot, dict) or not isinstance(slot.get("prize"), dict):
            continue
        if slot["prize"].get("kind") == "thanks":
            slot.pop("stock", None)
        else:
            prizes += 1
            if slot.get("stock") is None:
                slot["stock"] = 1
    if prizes == 0 and slots and isinstance(slots[0], dict):
        slots[0]["prize"] = {"kind": "points", "points": 1}
        slots[0]["stock"] = 1


def _periodic_campaign(body: dict) -> None:
    """Periodic lottery terms: the window as a shake lottery's; tiers are prizes, 1,000 winners at most."""
    _ordered_instants(body, "starts_at", "ends_at", strict=True)
    a, b = _instant(body.get("starts_at")), _instant(body.get("ends_at"))
    if a is not None and b is not None and b - a > _dt.timedelta(days=365):
        # A day under the limit: a stateful link may later replace `starts_at` with an
        # earlier instant from a response (minutes earlier), which must stay within 366 days.
        body["ends_at"] = (a + _dt.timedelta(days=365)).isoformat()
    tiers = body.get("tiers")
    if not isinstance(tiers, list):
        return
    used = 0
    for i, tier in enumerate(tiers):
        if not isinstance(tier, dict):
            continue
        if isinstance(tier.get("prize"), dict) and tier["prize"].get("kind") == "thanks":
            tier["prize"] = {"kind": "points", "points": 1}
        count = _number(tier.get("count"))
        if count is not None and count >= 1:
            # Leave one winner for each tier after this one.
            tier["count"] = max(1, min(count, 1000 - used - (len(tiers) - i - 1)))
            used += tier["count"]


def _snatch_campaign(body: dict) -> None:
    """1-yuan snatch terms: the window as a shake lottery's; a member holds at most the period's shares."""
    _ordered_instants(body, "starts_at", "ends_at", strict=True)
    a, b = _instant(body.get("starts_at")), _instant(body.get("ends_at"))
    if a is not None and b is not None and b - a > _dt.timedelta(days=366):
        body["ends_at"] = (a + _dt.timedelta(days=366)).isoformat()
    if isinstance(body.get("prize"), dict) and body["prize"].get("kind") == "thanks":
        body["prize"] = {"kind": "points", "points": 1}
    shares, per_member = _number(body.get("shares_per_period")), _number(body.get("shares_per_member_max"))
    if shares is not None and per_member is not None and shares >= 1 and per_member > shares:
        body["shares_per_member_max"] = shares


def _voting_campaign(body: dict) -> None:
    """Voting terms: the window as a shake lottery's; an approval reward needs members among the submitters."""
    _ordered_instants(body, "starts_at", "ends_at", strict=True)
    a, b = _instant(body.get("starts_at")), _instant(body.get("ends_at"))
    if a is not None and b is not None and b - a > _dt.timedelta(days=365):
        # A day under the limit: a stateful link may later replace `starts_at` with an
        # earlier instant from a response (minutes earlier), which must stay within 366 days.
        body["ends_at"] = (a + _dt.timedelta(days=365)).isoformat()
    if body.get("approval_reward_points") is not None and body.get("submitters") == "operators":
        body["submitters"] = "anyone"


def _product_for(seed) -> tuple:
    """One of the world's products, chosen by the generated value (so a run reproduces)."""
    return _PRODUCTS[_zlib.crc32(str(seed).encode("utf-8")) % len(_PRODUCTS)]


def _member_order(body: dict) -> None:
    """`POST /m/api/v1/mall/orders`: a real product; one priced in fen says how its cash part is paid."""
    if not _PRODUCTS:
        return
    product_id, kind = _product_for(body.get("product_id"))
    body["product_id"] = product_id
    if kind != "points" and body.get("pay_with") is None:
        body["pay_with"] = "balance"
    # The quoted unit price times the quantity stays within what one order carries
    # (100,000,000 points and fen; 422 `order_too_large` otherwise).
    price, quantity = body.get("unit_price"), _number(body.get("quantity"))
    if isinstance(price, dict) and quantity is not None and quantity >= 1:
        largest = max([_number(price.get(k)) or 0 for k in ("points", "amount_fen")] + [1])
        if largest * quantity > 100_000_000:
            body["quantity"] = max(1, 100_000_000 // largest)


def _card_levels(body: dict) -> None:
    """`PUT card-levels`: names unique, each threshold above every lower level's of its kind
    (422 `invalid_card_levels` otherwise). The revision may still be stale: that is 409."""
    levels = body.get("levels")
    if not isinstance(levels, list):
        return
    seen, highest = set(), {}
    for index, level in enumerate(levels):
        if not isinstance(level, dict):
            continue
        name = level.get("name")
        if isinstance(name, str) and name in seen:
            level["name"] = (f"{index}-{name}")[:32]
        seen.add(level.get("name"))
        threshold = level.get("threshold")
        if isinstance(threshold, dict):
            field = {"lifetime_points": "points", "total_paid": "fen"}.get(threshold.get("kind"))
            value = _number(threshold.get(field)) if field else None
            if value is not None:
                value = max(value, highest.get(field, 0) + 1)
                if value > 100_000_000:
                    level["threshold"] = None
                    continue
                threshold[field] = value
                highest[field] = value


@schemathesis.hook
def map_case(context, case):
    if not _positive(case):
        return case
    route = (case.operation.method.upper(), case.operation.path)
    query = case.query if isinstance(case.query, dict) else None
    body = case.body if isinstance(case.body, dict) else None
    if route == ("GET", "/admin/api/v1/reports/daily-ops") and query is not None:
        _report_range(query)
    elif route == ("GET", "/admin/api/v1/operation-log") and query is not None:
        _ordered_instants(query, "from", "to", strict=False)
    elif route == ("GET", "/admin/api/v1/members") and query is not None:
        _member_list(query)
    elif route == ("POST", "/admin/api/v1/coupon-templates") and body is not None:
        _coupon_terms(body.get("terms"))
    elif route == ("PUT", "/admin/api/v1/coupon-templates/{template_id}/terms") and body is not None:
        _coupon_terms(body)
    elif route == ("POST", "/admin/api/v1/wechat/qrcodes") and body is not None:
        _qr_code(body)
    elif route == ("PUT", "/admin/api/v1/wechat/menus/{appid}") and body is not None:
        _menu(body)
    elif route == ("PUT", "/admin/api/v1/distribution/settings") and body is not None:
        _distribution_settings(body)
    elif route == ("PUT", "/admin/api/v1/distribution/commission-settings") and body is not None:
        _commission_settings(body)
    elif route == ("PUT", "/admin/api/v1/mall/products/{product_id}/commission") and body is not None:
        _product_commission(body)
    elif route == ("POST", "/admin/api/v1/campaigns") and body is not None:
        _campaign(body)
    elif route == ("PUT", "/admin/api/v1/campaigns/{campaign_id}/terms") and body is not None:
        _campaign(body)
    elif route in (("POST", "/admin/api/v1/periodic-campaigns"), ("POST", "/admin/api/v1/popularity-campaigns")) \
            and body is not None:
        _periodic_campaign(body)
    elif route == ("POST", "/admin/api/v1/campaigns/{campaign_id}/periods") and body is not None:
        _ordered_instants(body, "starts_at", "ends_at", strict=True)
    elif route == ("POST", "/admin/api/v1/snatch-campaigns") and body is not None:
        _snatch_campaign(body)
    elif route == ("POST", "/admin/api/v1/voting-campaigns") and body is not None:
        _voting_campaign(body)
    elif route == ("PUT", "/admin/api/v1/campaigns/{campaign_id}/voting-terms") and body is not None:
        _voting_campaign(body)
    elif route == ("POST", "/m/api/v1/mall/orders") and body is not None:
        _member_order(body)
    elif route == ("PUT", "/admin/api/v1/card-levels") and body is not None:
        _card_levels(body)
    path = case.path_parameters if isinstance(case.path_parameters, dict) else None
    # Links inferred by name hand a mall order's id (a UUID) to the recharge route,
    # whose `order_id` is an `out_trade_no` (6..=32 characters): keep it one.
    if route == ("GET", "/m/api/v1/recharges/{order_id}") and path is not None:
        order_id = path.get("order_id")
        if isinstance(order_id, str) and len(order_id) > 32:
            path["order_id"] = order_id.replace("-", "")[:32]
    if _PRODUCTS and path is not None and "product_id" in path and case.operation.path.startswith("/m/api/v1/"):
        path["product_id"] = _product_for(path["product_id"])[0]
    return case


# Campaign windows, checked again right before the call: the stateful phase
# fills fields from earlier responses after `map_case` (e.g. a `starts_at` of
# another campaign), which can put the start after the end.
_WINDOWED_BODIES = {
    ("POST", "/admin/api/v1/campaigns"): _campaign,
    ("PUT", "/admin/api/v1/campaigns/{campaign_id}/terms"): _campaign,
    ("POST", "/admin/api/v1/periodic-campaigns"): _periodic_campaign,
    ("POST", "/admin/api/v1/popularity-campaigns"): _periodic_campaign,
    ("POST", "/admin/api/v1/snatch-campaigns"): _snatch_campaign,
    ("POST", "/admin/api/v1/voting-campaigns"): _voting_campaign,
    ("PUT", "/admin/api/v1/campaigns/{campaign_id}/voting-terms"): _voting_campaign,
}


@schemathesis.hook
def before_call(context, case, kwargs):
    if not _positive(case) or not isinstance(case.body, dict):
        return
    normalise = _WINDOWED_BODIES.get((case.operation.method.upper(), case.operation.path))
    if normalise is not None:
        normalise(case.body)
    elif (case.operation.method.upper(), case.operation.path) == ("POST", "/admin/api/v1/campaigns/{campaign_id}/periods"):
        _ordered_instants(case.body, "starts_at", "ends_at", strict=True)
