"""The one template engine (template.py), shared by batch --template and prompt files: a table of
placeholders at every position, of what is refused, and of values that are never expanded."""

from __future__ import annotations

import pytest

from anyfast_cli.template import MissingValue, Placeholder, TemplateSyntaxError, parse_template

VALUES = {"a": "A", "b": "B", "first name": "Ada", "user-id": "7", "名前": "名", "x": "{b}"}


@pytest.mark.parametrize(
    "text, filled",
    [
        ("{a}", "A"),  # the whole text
        ("{a} then", "A then"),  # at the start
        ("say {a} now", "say A now"),  # in the middle
        ("at the end {a}", "at the end A"),  # at the end
        ("{a}{b}", "AB"),  # side by side
        ("{a}-{a}", "A-A"),  # repeated
        ("line 1\n{a}\nline 3", "line 1\nA\nline 3"),  # on a line of its own
        ("{first name}/{user-id}", "Ada/7"),  # inner spaces and hyphens
        ("{名前}", "名"),  # letters of any script
        ("no placeholders", "no placeholders"),
        ("", ""),
        ("{{a}}", "{a}"),  # escaped: literal braces, not a placeholder
        ("{{{a}}}", "{A}"),  # an escape on each side of one
        ("}}{{", "}{"),
        ('{{"json": {a}}}', '{"json": A}'),
        ("{x}", "{b}"),  # a value is inserted once: its braces are text
        ("{x}{x}", "{b}{b}"),
    ],
)
def test_placeholders_are_filled_wherever_they_stand(text, filled):
    assert parse_template(text).fill(VALUES) == filled


@pytest.mark.parametrize(
    "text, token, offset",
    [
        ("{}", "{}", 0),  # positional
        ("x {a.b}", "{a.b}", 2),  # attribute access
        ("{a[0]}", "{a[0]}", 0),  # indexing
        ("{a:>999999999}", "{a:>999999999}", 0),  # a format spec
        ("{a!r}", "{a!r}", 0),  # a conversion
        ("{ a}", "{ a}", 0),  # a space at an end
        ("{a }", "{a }", 0),
        ("{a  b}", "{a  b}", 0),  # two inner spaces
        ("{a\nb}", "{a\nb}", 0),
        ("x {a", "{", 2),  # a lone brace
        ("a} x", "}", 1),
        ("{{a}", "}", 3),  # an escape, then a lone }
        ("{a}}", "}", 3),  # a placeholder, then a lone }
        ("{{{a}}", "}", 5),
    ],
)
def test_anything_else_in_braces_is_refused_with_where(text, token, offset):
    with pytest.raises(TemplateSyntaxError) as caught:
        parse_template(text)
    assert (caught.value.token, caught.value.offset) == (token, offset)


def test_the_refusal_reads_as_the_caller_names_things():
    with pytest.raises(TemplateSyntaxError) as caught:
        parse_template("x {a.b}")
    assert caught.value.describe() == "{a.b} is not a placeholder"
    assert caught.value.describe("field", "at character 3") == "{a.b} at character 3 is not a field"
    with pytest.raises(TemplateSyntaxError) as caught:
        parse_template("x {")
    assert caught.value.describe() == "a lone '{'"


def test_names_are_listed_once_in_order_and_a_missing_value_is_named():
    template = parse_template("{b} {a} {b} {{c}}")
    assert template.names == ("b", "a")
    assert template.pieces == (Placeholder("b"), " ", Placeholder("a"), " ", Placeholder("b"), " {c}")
    with pytest.raises(MissingValue) as caught:
        template.fill({"b": "B"})
    assert caught.value.name == "a"
    assert template.size({"a": "xy", "b": "z"}) == len(template.fill({"a": "xy", "b": "z"}))
