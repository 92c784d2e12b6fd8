"""Plain paths (`{{ ticket.actions[-1].body }}`) are read without jinja: same results.

That holds for a leaf that is one path, and for text made of literal parts and plain paths.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jinja2 import TemplateSyntaxError

from hookctl.errors import RenderError
from hookctl.render.webhook import WebhookTemplate, render_request

EVENT = {
    "event": "ticket.created",
    "ticket": {
        "id": 7,
        "tags": ["a", "b"],
        "actions": [{"body": "first"}, {"body": "last"}],
        "items": "a key that is also a dict method",
        "requester": None,
        "score": 1.5,
        "open": True,
        "subject": "Printer {on} fire %}",
    },
}

PATHS = [
    "event",
    "ticket",
    "ticket.id",
    "ticket.tags",
    "ticket.tags[0]",
    "ticket.actions[-1].body",
    "ticket.items",  # a key that is also a dict method: the key wins
    "ticket.requester",
    "ticket.missing",
    "ticket.tags[5]",
    "ticket.id.real",
    "nothing",
    "env.HOOKCTL_PATH_TEST",
    "env.HOOKCTL_UNSET",
    "env._environ",
    "ticket.score",
    "ticket.open",
    "ticket.subject",
]


def _render(leaf: str) -> str | None:
    webhook = WebhookTemplate(method="POST", url="http://127.0.0.1/hook", body={"v": leaf})
    try:
        request = render_request(webhook, EVENT, environ={"HOOKCTL_PATH_TEST": "x"})
    except RenderError as exc:
        return f"error: {exc}"
    return (request.body or "").replace(request.nonce, "NONCE") if request.nonce else request.body


@pytest.mark.parametrize("path", PATHS)
def test_a_plain_path_renders_as_the_same_expression_in_parentheses(path: str) -> None:
    # The parentheses keep the leaf off the fast path, so jinja evaluates it.
    assert _render("{{ " + path + " }}") == _render("{{ (" + path + ") }}")


def test_a_plain_path_keeps_the_json_type_of_what_it_reads() -> None:
    assert _render("{{ ticket.actions[-1].body }}") == '{"v":"last"}'
    assert _render("{{ ticket.tags }}") == '{"v":["a","b"]}'
    assert _render("{{ ticket.id }}") == '{"v":7}'


def test_a_key_named_like_a_dict_method_is_the_key() -> None:
    assert _render("{{ ticket.items }}") == '{"v":"a key that is also a dict method"}'
    assert _render("Items: {{ ticket.items }}") == '{"v":"Items: a key that is also a dict method"}'


def test_a_method_where_data_is_expected_is_a_render_error() -> None:
    assert _render("{{ ticket.keys }}").startswith("error: webhook.body:")


def _render_text(template: str) -> str:
    """`template` as a URL's path, as a header and as a text body, each rendered on its own."""
    webhooks = [
        WebhookTemplate(method="POST", url="http://127.0.0.1/" + template),
        WebhookTemplate(method="GET", url="http://127.0.0.1/", headers=(("X-Text", template),)),
        WebhookTemplate(method="POST", url="http://127.0.0.1/", body=template),
    ]
    results = []
    for webhook in webhooks:
        try:
            request = render_request(webhook, EVENT, environ={"HOOKCTL_PATH_TEST": "x"})
        except RenderError as exc:
            results.append(f"error: {exc}")
        except TemplateSyntaxError:
            results.append("not a template")  # rules.py refuses these before any rendering
        else:
            results.append(f"{request.url} {request.headers} {request.body!r}")
    return re.sub(r"__hookctl_[0-9a-f]+_", "__hookctl_NONCE_", "\n".join(results))


@pytest.mark.parametrize("path", PATHS)
def test_text_with_plain_paths_renders_as_jinja_renders_it(path: str) -> None:
    # A parenthesised path keeps the whole text off the fast path, so jinja renders it.
    fast = f"a {{{{ {path} }}}} b {{{{ticket.id}}}}"
    slow = f"a {{{{ ({path}) }}}} b {{{{ticket.id}}}}"
    assert _render_text(fast) == _render_text(slow)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.sampled_from(PATHS).map(lambda p: ("path", p)),
            st.text(alphabet="ab {}%#-\r\n\\'\"", max_size=6).map(lambda t: ("text", t)),
        ),
        max_size=5,
    )
)
def test_any_text_with_paths_renders_as_jinja_renders_it(parts: list[tuple[str, str]]) -> None:
    fast = "".join(p if kind == "text" else "{{ " + p + " }}" for kind, p in parts)
    slow = "".join(p if kind == "text" else "{{ (" + p + ") }}" for kind, p in parts)
    assert _render_text(fast) == _render_text(slow)


@pytest.mark.parametrize(
    "text",
    ["line\r\nend ", "cr\ronly ", "{# note #}", "100% }} ", "{ {", "a}b{c", "#}", "'\"\\ ", "\n"],
)
def test_literal_text_around_paths_renders_as_jinja_renders_it(text: str) -> None:
    fast = f"{text}{{{{ ticket.id }}}}{text}{{{{ ticket.subject }}}}"
    slow = f"{text}{{{{ (ticket.id) }}}}{text}{{{{ (ticket.subject) }}}}"
    assert _render_text(fast) == _render_text(slow)
