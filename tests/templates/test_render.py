from __future__ import annotations

import pytest

from server.templates import render

ADA = {
    "name": "Ada",
    "email": "ada@example.test",
    "phone": None,
    "attributes": {"plan": "pro"},
    "tags": ["vip"],
}


def test_contact_fields_win_over_variables_and_are_also_under_contact() -> None:
    ctx = render.context_for(ADA, {"name": "Mallory", "code": 7})
    subject, body = render.render(
        "{{ name }}", "{{ contact.email }} {{ code }} {{ phone }}|{{ tags|join(',') }}", ctx
    )
    assert subject == "Ada"
    assert body == "ada@example.test 7 |vip"


def test_subject_is_one_line_and_body_keeps_its_newlines_without_escaping() -> None:
    ctx = render.context_for({**ADA, "name": "Ada\r\nBcc: evil@example.test"}, {})
    subject, body = render.render("Hi {{ name }}\n", "<b>{{ name }}</b>\n\n", ctx)
    assert subject == "Hi Ada Bcc: evil@example.test"
    assert body == "<b>Ada\r\nBcc: evil@example.test</b>\n\n"


def test_missing_variable_is_a_render_error_with_a_reason() -> None:
    with pytest.raises(render.RenderError) as exc:
        render.render("ok", "{{ attributes.missing.deeper }}", render.context_for(ADA, {}))
    assert exc.value.field == "body"
    assert exc.value.reason == "template error in body: 'dict object' has no attribute 'missing'"


def test_data_dependent_errors_pass_the_save_check_and_fail_per_message() -> None:
    render.check("", "{{ count + 1 }}")  # fine when count is a number
    with pytest.raises(render.RenderError, match="TypeError: can only concatenate str"):
        render.render("", "{{ count + 1 }}", {"count": "seven"})


def test_work_budget_applies_to_data_too() -> None:
    render.check("", "{{ '-' * n }}")
    assert render.render("", "{{ '-' * n }}", {"n": 3}) == ("", "---")
    with pytest.raises(render.RenderError, match="too much work"):
        render.render("", "{{ '-' * n }}", {"n": 10**9})


def test_defaults_and_filters_still_work() -> None:
    assert render.render(
        "", "{{ when | default('soon') }} {{ name|upper }}", render.context_for(ADA, {})
    ) == (
        "",
        "soon ADA",
    )
