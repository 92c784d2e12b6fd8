"""hookctl: turn helpdesk ticket events into webhooks, reliably."""

__version__ = "0.1.0"
