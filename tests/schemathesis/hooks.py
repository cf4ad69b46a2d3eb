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
