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

BOMBS = [
    pytest.param(
        '{{ ("a" * 999000)' + '|select("string")' * 10 + "|max }}",
        "TEMPLATE_RENDER",
        id="chained selects testing item by item",
    ),
    pytest.param(
        '{{ ("a" * 999000)' + "|map(attribute=0)" * 4 + "|max }}",
        "TEMPLATE_RENDER",
        id="chained maps looking items up one by one",
    ),
    pytest.param("{{ 9**(10**7) }}", "TEMPLATE_RENDER", id="huge power"),
    pytest.param("{{ 9**(10**5) }}", "TEMPLATE_RENDER", id="large power"),
    pytest.param("{{ lipsum(9999999) }}", "TEMPLATE_UNDEFINED_VARIABLE", id="lipsum"),
    pytest.param(
        "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
        "TEMPLATE_RENDER",
        id="nested ranges",
    ),
    pytest.param(
        "{% for i in range(1000) %}{% for j in range(1000) %}x{% endfor %}{% endfor %}",
        "TEMPLATE_RENDER",
        id="nested loops within the range cap",
    ),
    pytest.param("{{ range(999999999)|list }}", "TEMPLATE_RENDER", id="range list"),
    pytest.param("{{ range(10**9) }}", "TEMPLATE_RENDER", id="range of a power"),
    pytest.param("{{ 1/0 }}", "TEMPLATE_RENDER", id="division by zero"),
    pytest.param(
        "{% macro m(n) %}{{ m(n+1) }}{% endmacro %}{{ m(0) }}", "TEMPLATE_RENDER", id="recursion"
    ),
    pytest.param(
        '{% set a = "xxxxxxxxxx" %}' + "{% set a = a ~ a %}" * 40 + "{{ a }}",
        "TEMPLATE_RENDER",
        id="doubling with ~",
    ),
    pytest.param(
        "{% set a %}xxxxxxxxxx{% endset %}" + "{% set a %}{{ a }}{{ a }}{% endset %}" * 40,
        "TEMPLATE_RENDER",
        id="doubling in set blocks",
    ),
    pytest.param(
        "{% for i in range(1000) %}" + "x" * 2000 + "{% endfor %}",
        "TEMPLATE_RENDER",
        id="text printed in a loop",
    ),
    pytest.param('{{ "x" * 10**9 }}', "TEMPLATE_RENDER", id="string repetition"),
    pytest.param('{{ ["x"] * 10**9 }}', "TEMPLATE_RENDER", id="list repetition"),
    pytest.param('{{ "x"|center(999999999) }}', "TEMPLATE_SYNTAX", id="center filter"),
    pytest.param('{{ "x".ljust(999999999) }}', "TEMPLATE_RENDER", id="ljust method"),
    pytest.param('{{ "{:>999999999}".format(1) }}', "TEMPLATE_RENDER", id="str.format"),
    pytest.param('{{ "%0999999999d" % 1 }}', "TEMPLATE_RENDER", id="% width"),
    pytest.param('{{ "%0999999999d"|format(1) }}', "TEMPLATE_RENDER", id="format filter width"),
    pytest.param('{{ "%0999999d" is odd }}', "TEMPLATE_RENDER", id="% inside a test"),
    pytest.param(
        '{{ "ab".replace("", "y" * 900000) }}', "TEMPLATE_RENDER", id="replace method growth"
    ),
    pytest.param(
        '{{ ("ab"|attr("replace"))("", "y" * 900000) }}',
        "TEMPLATE_RENDER",
        id="replace through attr",
    ),
    pytest.param(
        '{{ ("x" * 1000)|replace("", "y" * 2000) }}', "TEMPLATE_RENDER", id="replace filter"
    ),
    pytest.param("{{ 5|round(-999999999) }}", "TEMPLATE_RENDER", id="round precision"),
    pytest.param("{{ ([[1] * 100] * 10000)|sum(start=[]) }}", "TEMPLATE_RENDER", id="sum of lists"),
    pytest.param('{{ (1).to_bytes(10**9, "big") }}', "TEMPLATE_RENDER", id="int method"),
    pytest.param(
        '{{ ([("f" * 400000)|int(base=16)] * 500000)|sum }}',
        "TEMPLATE_RENDER",
        id="sum of huge numbers",
    ),
    pytest.param(
        '{% set big = "x" * 500000 %}{{ [big] * 400000 }}',
        "TEMPLATE_RENDER",
        id="a list of one long text many times",
    ),
    pytest.param(
        "{% set ns = namespace(a=[1]) %}"
        "{% for i in range(40) %}{% set ns.a = [ns.a, ns.a] %}{% endfor %}{{ ns.a }}",
        "TEMPLATE_RENDER",
        id="a list doubled in a loop",
    ),
    pytest.param(
        "{% set ns = namespace(a=[1], b=[1]) %}{% for i in range(40) %}"
        "{% set ns.a = [ns.a, ns.a] %}{% set ns.b = [ns.b, ns.b] %}{% endfor %}{{ ns.a == ns.b }}",
        "TEMPLATE_RENDER",
        id="comparing doubled lists",
    ),
    pytest.param(
        "{% set ns = namespace(a=(1,)) %}"
        "{% for i in range(40) %}{% set ns.a = (ns.a, ns.a) %}{% endfor %}{{ {ns.a: 1} }}",
        "TEMPLATE_RENDER",
        id="hashing a doubled tuple",
    ),
    pytest.param(
        "{% macro m() %}{% set ns.v = varargs %}{% endmacro %}{% set ns = namespace(v=[1]) %}"
        "{% for i in range(40) %}{{ m(ns.v, ns.v) }}{% endfor %}{{ ns.v }}",
        "TEMPLATE_RENDER",
        id="varargs doubled in a loop",
    ),
    pytest.param(
        "{% set ns = namespace(a=(1,)) %}{% for i in range(100) %}{% for j in range(100) %}"
        + "{% set ns.a = (ns.a,) %}" * 100
        + "{% endfor %}{% endfor %}{{ {ns.a: 1} }}",
        "TEMPLATE_RENDER",
        id="hashing a million-deep tuple",  # hash() has no recursion guard: a crash
    ),
    pytest.param(
        '{% set a = "a" * 300000 %}{% set b = "b" * 299999 ~ "a" %}{{ a.strip(b) }}',
        "TEMPLATE_RENDER",
        id="strip of a long text by a long text",  # every end character looked for in b
    ),
    pytest.param(
        '{% set a = "a" * 300000 %}{% set b = "b" * 299999 ~ "a" %}{{ a|trim(b) }}',
        "TEMPLATE_RENDER",
        id="trim of a long text by a long text",
    ),
    pytest.param(
        '{% set s = "x" * 100000 %}{% for c in s %}{% endfor %}',
        "TEMPLATE_RENDER",
        id="loop over a long text",
    ),
    pytest.param(
        '{{ "' + "<" * 100_000 + '"' + "|urlencode" * 50 + " }}",
        "TEMPLATE_RENDER",
        id="filters on a long constant",  # Jinja would run them while compiling, over and over
    ),
    pytest.param(SLOW, "TEMPLATE_RENDER", id="slow"),
    pytest.param(
        '{% set s = "ab " * 266666 %}' + "{% set n = s|wordcount %}" * 500,
        "TEMPLATE_RENDER",
        id="slow without loops",
    ),
    pytest.param("{{ x }}" * 20000, "TEMPLATE_TOO_LARGE", id="too many tokens"),
    pytest.param("x" * 600_000, "TEMPLATE_TOO_LARGE", id="too long"),
    pytest.param("{{" + "(" * 2000 + "1" + ")" * 2000 + "}}", "TEMPLATE_SYNTAX", id="deep nesting"),
    pytest.param(
        "{% for i in range(2) %}" * 30 + "x" + "{% endfor %}" * 30,
        "TEMPLATE_SYNTAX",
        id="deeply nested loops",
    ),
]
