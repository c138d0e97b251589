"""Templates that would hang, exhaust memory or crash a renderer without the sandbox's limits
(services/sandbox.py): each with the code it is refused with when saved. When sent, every one
fails its message with TEMPLATE_RENDER."""

from __future__ import annotations

import pytest

# A render that needs longer than the sandbox's time limit while staying inside its other
# limits: 9,000 word counts of an 800,000-character text.
SLOW = (
    '{% set s = "ab " * 266666 %}'
    "{% for i in range(1000) %}{% for j in range(9) %}{{ s|wordcount }}{% endfor %}{% endfor %}"
)

# Refused with TEMPLATE_RENDER when saved: each runs into a limit of the sandbox.
RENDERED = {
    "chained selects testing item by item": (
        '{{ ("a" * 999000)' + '|select("string")' * 10 + "|max }}"
    ),
    "chained maps looking items up one by one": (
        '{{ ("a" * 999000)' + "|map(attribute=0)" * 4 + "|max }}"
    ),
    "huge power": "{{ 9**(10**7) }}",
    "large power": "{{ 9**(10**5) }}",
    "nested ranges": "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
    "nested loops within the range cap": "{% for i in range(1000) %}{% for j in range(1000) %}x{% endfor %}{% endfor %}",
    "range list": "{{ range(999999999)|list }}",
    "range of a power": "{{ range(10**9) }}",
    "division by zero": "{{ 1/0 }}",
    "recursion": "{% macro m(n) %}{{ m(n+1) }}{% endmacro %}{{ m(0) }}",
    "doubling with ~": ('{% set a = "xxxxxxxxxx" %}' + "{% set a = a ~ a %}" * 40 + "{{ a }}"),
    "doubling in set blocks": (
        "{% set a %}xxxxxxxxxx{% endset %}" + "{% set a %}{{ a }}{{ a }}{% endset %}" * 40
    ),
    "text printed in a loop": ("{% for i in range(1000) %}" + "x" * 2000 + "{% endfor %}"),
    "string repetition": '{{ "x" * 10**9 }}',
    "list repetition": '{{ ["x"] * 10**9 }}',
    "ljust method": '{{ "x".ljust(999999999) }}',
    "str.format": '{{ "{:>999999999}".format(1) }}',
    "% width": '{{ "%0999999999d" % 1 }}',
    "format filter width": '{{ "%0999999999d"|format(1) }}',
    "% inside a test": '{{ "%0999999d" is odd }}',
    "replace method growth": '{{ "ab".replace("", "y" * 900000) }}',
    "replace through attr": '{{ ("ab"|attr("replace"))("", "y" * 900000) }}',
    "replace filter": '{{ ("x" * 1000)|replace("", "y" * 2000) }}',
    "round precision": "{{ 5|round(-999999999) }}",
    "sum of lists": "{{ ([[1] * 100] * 10000)|sum(start=[]) }}",
    "int method": '{{ (1).to_bytes(10**9, "big") }}',
    "sum of huge numbers": '{{ ([("f" * 400000)|int(base=16)] * 500000)|sum }}',
    "a list of one long text many times": '{% set big = "x" * 500000 %}{{ [big] * 400000 }}',
    "a list doubled in a loop": (
        "{% set ns = namespace(a=[1]) %}"
        "{% for i in range(40) %}{% set ns.a = [ns.a, ns.a] %}{% endfor %}{{ ns.a }}"
    ),
    "comparing doubled lists": (
        "{% set ns = namespace(a=[1], b=[1]) %}{% for i in range(40) %}"
        "{% set ns.a = [ns.a, ns.a] %}{% set ns.b = [ns.b, ns.b] %}{% endfor %}{{ ns.a == ns.b }}"
    ),
    "hashing a doubled tuple": (
        "{% set ns = namespace(a=(1,)) %}"
        "{% for i in range(40) %}{% set ns.a = (ns.a, ns.a) %}{% endfor %}{{ {ns.a: 1} }}"
    ),
    "varargs doubled in a loop": (
        "{% macro m() %}{% set ns.v = varargs %}{% endmacro %}{% set ns = namespace(v=[1]) %}"
        "{% for i in range(40) %}{{ m(ns.v, ns.v) }}{% endfor %}{{ ns.v }}"
    ),
    # hash() has no recursion guard: a crash
    "hashing a million-deep tuple": (
        "{% set ns = namespace(a=(1,)) %}{% for i in range(100) %}{% for j in range(100) %}"
        + "{% set ns.a = (ns.a,) %}" * 100
        + "{% endfor %}{% endfor %}{{ {ns.a: 1} }}"
    ),
    # every end character looked for in b
    "strip of a long text by a long text": '{% set a = "a" * 300000 %}{% set b = "b" * 299999 ~ "a" %}{{ a.strip(b) }}',
    "trim of a long text by a long text": '{% set a = "a" * 300000 %}{% set b = "b" * 299999 ~ "a" %}{{ a|trim(b) }}',
    "loop over a long text": '{% set s = "x" * 100000 %}{% for c in s %}{% endfor %}',
    # Jinja would run them while compiling, over and over
    "filters on a long constant": ('{{ "' + "<" * 100_000 + '"' + "|urlencode" * 50 + " }}"),
    "slow": SLOW,
    "slow without loops": ('{% set s = "ab " * 266666 %}' + "{% set n = s|wordcount %}" * 500),
}
# Refused before they render: (id, source, code).
UNCOMPILED = [
    ("lipsum", "{{ lipsum(9999999) }}", "TEMPLATE_UNDEFINED_VARIABLE"),
    ("center filter", '{{ "x"|center(999999999) }}', "TEMPLATE_SYNTAX"),
    ("too many tokens", ("{{ x }}" * 20000), "TEMPLATE_TOO_LARGE"),
    ("too long", ("x" * 600_000), "TEMPLATE_TOO_LARGE"),
    ("deep nesting", ("{{" + "(" * 2000 + "1" + ")" * 2000 + "}}"), "TEMPLATE_SYNTAX"),
    (
        "deeply nested loops",
        ("{% for i in range(2) %}" * 30 + "x" + "{% endfor %}" * 30),
        "TEMPLATE_SYNTAX",
    ),
]
BOMBS = [
    *(pytest.param(source, "TEMPLATE_RENDER", id=name) for name, source in RENDERED.items()),
    *(pytest.param(source, code, id=name) for name, source, code in UNCOMPILED),
]
