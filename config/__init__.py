"""Configuration: one Settings object read from the environment (and `.env`)."""

from config.settings import Settings, SettingsError, get_settings, reset_settings

__all__ = ["Settings", "SettingsError", "get_settings", "reset_settings"]
