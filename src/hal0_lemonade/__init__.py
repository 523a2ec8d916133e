"""hal0-lemonade: install Lemonade Server (lemond) as the hardened systemd service hal0-lemonade."""

__version__ = "0.1.0"
