"""Rules: the model, YAML loading, the webhook spec, trust checks, conditions, fields, operators."""
