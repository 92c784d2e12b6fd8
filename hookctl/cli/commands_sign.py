"""`sign-secret`: a new Standard Webhooks signing secret for `webhook.sign`."""

import typer

from hookctl.cli.app import app


@app.command("sign-secret")
def sign_secret() -> None:
    """Print a new random signing secret (whsec_...) for a rule's `webhook.sign`.

    Give the same secret to the receiver, which verifies each request with it. Keep it in the environment, never in the rule file: export WEBHOOK_SECRET="$(hookctl sign-secret)"

    Example: hookctl sign-secret
    """
    from hookctl.render.signing import generate_secret

    typer.echo(generate_secret())
