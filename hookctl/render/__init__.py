"""Rendering: the sandbox, templates, body encodings and signing turn a rule and an event into a request."""
