"""Plain path leaves (`{{ ticket.actions[-1].body }}`) are read without jinja: same results."""

from __future__ import annotations

import pytest

from hookctl.errors import RenderError
from hookctl.render import WebhookTemplate, render_request

EVENT = {
    "event": "ticket.created",
    "ticket": {
        "id": 7,
        "tags": ["a", "b"],
        "actions": [{"body": "first"}, {"body": "last"}],
        "items": "a key that is also a dict method",
        "requester": None,
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
